"""An asyncio SQLite driver for SQLAlchemy that runs statements on the event loop's thread.

Why not aiosqlite: it sends every call (cursor, execute, fetch, close: four per statement) to the
connection's thread and back. Each crossing costs a queue hand-off, a wake-up of the loop through its
self-pipe and a GIL hand-over; profiles of the relay path put that (aiosqlite, asyncio, selectors) at a
third of the process's samples, for statements that themselves take microseconds on a WAL database.

What runs where
- Statements run inline: in WAL mode a statement only touches the page cache, and readers never wait
  for the writer. The connection's busy timeout is 0 so that a statement never sleeps on the loop: if
  SQLite answers SQLITE_BUSY (another process, such as an admin command, holds the write lock, or a
  reader meets a WAL recovery), nothing was done and the statement is retried on a worker thread with
  the configured busy timeout.
- COMMIT of a transaction that wrote runs on a worker thread: with synchronous=FULL it waits for fsync.
  A read-only transaction's COMMIT does no I/O and stays inline.
- While a connection's call is on a worker thread, the next call on that connection waits for it (a
  cancelled commit is finished before a rollback touches the connection).

- The price: a statement holds the loop for its duration. Message-path statements take microseconds;
  large ones (a folder DELETE cascading over thousands of messages, a cold read from disk) hold every
  session that long. Bulk work that would take seconds goes through `OffLoop` (the directory import).
- A connection the pool has to drop (its task was cancelled) is rolled back and closed once any call
  still on a worker thread is over (`terminate`): no orphan keeps the write lock.

One writer at a time per process is `Database.write()`'s lock; SQLite's own locks order processes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sqlite3
from typing import Any

from sqlalchemy.connectors.asyncio import (
    AsyncAdapt_dbapi_connection,
    AsyncAdapt_dbapi_cursor,
    AsyncAdapt_dbapi_ss_cursor,
)
from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_dbapi, SQLiteDialect_aiosqlite
from sqlalchemy.util.concurrency import await_

DRIVER = "mssgw"
"""The URL driver name: `sqlite+mssgw:///path` (`Database` maps `sqlite+aiosqlite` to it)."""
BUSY_TIMEOUT_MS = 10_000
"""How long a statement that met another process's lock waits for it, on a worker thread."""


async def _nothing() -> None:
    return None


def busy(error: BaseException) -> bool:
    """SQLITE_BUSY and its extended codes (recovery, timeout): nothing was done, waiting may help. Not
    SQLITE_BUSY_SNAPSHOT (517): a read transaction that must upgrade on a stale snapshot never can."""
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(error, sqlite3.OperationalError) and code is not None and code & 0xFF == 5 and code != 517


class _Cursor(AsyncAdapt_dbapi_cursor):
    __slots__ = ()
    _awaitable_cursor_close = False
    _adapt_connection: _Connection
    _cursor: Any

    def _aenter_cursor(self, cursor: Any) -> Any:
        return cursor

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        # SQLAlchemy's AsyncConnection.execute insists on one await (a greenlet switch, no loop turn).
        await_(_nothing())
        try:
            self._adapt_connection._run(self._cursor.execute, operation, () if parameters is None else parameters)
            if self._cursor.description and not self.server_side:
                self._rows = collections.deque(self._cursor.fetchall())
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        await_(_nothing())
        try:
            self._adapt_connection._run(self._cursor.executemany, operation, seq_of_parameters)
        except Exception as error:
            self._adapt_connection._handle_exception(error)


class _StreamCursor(_Cursor, AsyncAdapt_dbapi_ss_cursor):
    """The server-side cursor of `stream()` and `yield_per`: rows are read from SQLite as they are asked
    for, batch by batch, not all at once (the directory export walks 536,000 rows)."""

    __slots__ = ()
    server_side = True

    def close(self) -> None:
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchmany(self, size: int | None = None) -> Any:
        return self._cursor.fetchmany(self._cursor.arraysize if size is None else size)

    def fetchall(self) -> Any:
        return self._cursor.fetchall()

    def __iter__(self) -> Any:
        return iter(self._cursor)


class _Connection(AsyncAdapt_dbapi_connection):
    __slots__ = ("_changes", "_pending")
    _cursor_cls = _Cursor
    _ss_cursor_cls = _StreamCursor
    _connection: Any

    def __init__(self, dbapi: Any, connection: sqlite3.Connection) -> None:
        super().__init__(dbapi, connection)  # type: ignore[arg-type]  # a synchronous connection, by design
        self._pending: asyncio.Future[Any] | None = None
        self._changes = -1

    def _settle(self) -> None:
        # A call still running on a worker thread (its awaiter was cancelled) finishes first.
        pending, self._pending = self._pending, None
        if pending is not None and not pending.done():
            await_(asyncio.shield(pending))

    def _offload(self, fn: Any, *args: Any) -> Any:
        self._pending = asyncio.get_running_loop().run_in_executor(None, fn, *args)
        try:
            return await_(asyncio.shield(self._pending))
        finally:
            if self._pending.done():
                self._pending = None

    def _run(self, call: Any, operation: Any, parameters: Any) -> None:
        self._settle()
        if self._changes < 0 and self._connection.in_transaction is False:
            self._changes = self._connection.total_changes
        try:
            call(operation, parameters)
        except sqlite3.OperationalError as error:
            if not busy(error):
                raise
            self._offload(self._waiting, call, operation, parameters)

    def _waiting(self, call: Any, operation: Any, parameters: Any) -> None:
        conn = self._connection
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        try:
            call(operation, parameters)
        finally:
            conn.execute("PRAGMA busy_timeout=0")

    def commit(self) -> None:
        try:
            self._settle()
            conn = self._connection
            wrote = conn.total_changes != self._changes
            self._changes = -1
            if conn.in_transaction and wrote:
                self._offload(conn.commit)
            else:
                conn.commit()
        except Exception as error:
            self._handle_exception(error)

    def rollback(self) -> None:
        try:
            self._settle()
            self._changes = -1
            self._connection.rollback()
        except Exception as error:
            self._handle_exception(error)

    def close(self) -> None:
        self._settle()
        self._connection.close()

    def terminate(self) -> None:
        """The pool's hard close (the task using the connection was cancelled): once any call still on a
        worker thread is over, roll back and close, so that no orphaned connection keeps SQLite's write
        lock until the garbage collector finds it."""
        pending, self._pending = self._pending, None
        if pending is not None and not pending.done():
            pending.add_done_callback(lambda _done: self._end())
        else:
            self._end()

    def _end(self) -> None:
        with contextlib.suppress(Exception):
            self._connection.rollback()
        with contextlib.suppress(Exception):
            self._connection.close()

    async def off_loop(self, fn: Any, *args: Any) -> Any:
        """Run `fn(*args)` on a worker thread, in turn with the connection's other calls (for callers
        outside SQLAlchemy, such as the directory import's bulk statements)."""
        if self._pending is not None and not self._pending.done():
            await asyncio.shield(self._pending)
        self._pending = asyncio.get_running_loop().run_in_executor(None, fn, *args)
        return await asyncio.shield(self._pending)

    def create_function(self, *args: Any, **kw: Any) -> None:
        self._connection.create_function(*args, **kw)

    @property
    def isolation_level(self) -> str | None:
        return self._connection.isolation_level  # type: ignore[no-any-return]

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self._connection.isolation_level = value


class OffLoop:
    """A connection's statements run on a worker thread: for bulk statements (the directory import's
    batches) that would hold the loop for their whole time. `adapted`: the pool's DBAPI connection
    (`(await conn.get_raw_connection()).dbapi_connection`)."""

    def __init__(self, adapted: Any) -> None:
        if not isinstance(adapted, _Connection):
            raise TypeError("OffLoop needs a connection of the inline SQLite driver")
        self._adapted = adapted

    async def execute(self, sql: str, parameters: Any = ()) -> None:
        await self._adapted.off_loop(self._adapted._connection.execute, sql, parameters)


class _DBAPI(AsyncAdapt_aiosqlite_dbapi):
    def __init__(self) -> None:
        super().__init__(sqlite3, sqlite3)
        self.has_stop = True  # keeps the dialect's has_terminate: the pool calls _Connection.terminate

    def connect(self, *arg: Any, **kw: Any) -> _Connection:  # type: ignore[override]
        kw.pop("async_creator_fn", None)
        kw["check_same_thread"] = False  # commits and busy waits run on worker threads, one call at a time
        conn = sqlite3.connect(*arg, **kw)
        conn.execute("PRAGMA busy_timeout=0")
        return _Connection(self, conn)


class SQLiteDialect_inline(SQLiteDialect_aiosqlite):
    driver = DRIVER
    supports_statement_cache = True
    supports_server_side_cursors = True
    has_terminate = True  # _Connection.terminate: roll back and close once a worker thread's call is over

    @classmethod
    def import_dbapi(cls) -> Any:
        return _DBAPI()

    def retrieve_dbapi_version(self, dbapi: Any) -> Any:
        return None

    def get_driver_connection(self, connection: Any) -> Any:
        return connection._connection


dialect = SQLiteDialect_inline
