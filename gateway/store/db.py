"""Database engines, transactions and migrations, the same code for SQLite and PostgreSQL.

Implementation notes
- SQLite: WAL journal, synchronous=FULL (a commit is on disk before it returns: the queue's 250 will
  rely on it), foreign keys on, a busy timeout. Write transactions start with BEGIN IMMEDIATE so two
  processes (the node and an admin command) never deadlock upgrading a read lock to a write lock; reads
  use a separate engine with deferred transactions so they never wait for the write lock.
- SQLite has one writer at a time. Writers of this process queue on an asyncio lock rather than in
  SQLite's busy handler, which sleeps (up to 100 ms a round) instead of waking when the lock frees:
  under load that sleeping, not the work, bounded the SMTP rate. The busy timeout remains for the
  other processes (admin commands). A write transaction opened inside another in the same task would
  wait for itself: it raises instead.
- PostgreSQL: one engine; `read()` and `write()` are both plain transactions.
- `rows()`: the hottest one-statement reads (IMAP's look for changes and message reads, the SMTP
  transaction's mailbox facts). On SQLite (inline driver) they run on a connection of their own in
  autocommit mode (a statement is its own snapshot in WAL), inline, without SQLAlchemy's per-transaction
  work (pool checkout, BEGIN, COMMIT, five greenlet switches: ~0.3 ms of a ~0.35 ms read); a statement
  meeting a lock (SQLITE_BUSY) goes the usual way, which waits off the loop. PostgreSQL: `reading()`.
- `raw_writing()`: the hottest write transactions (the audit append, APPEND, the queue) in plain SQL.
  On SQLite, a connection per event loop with the engine's settings, under the same writer lock: BEGIN
  IMMEDIATE and the statements inline, COMMIT (fsync) on the Database's commit thread (`_Committer`),
  which a cancelled task still waits for before the connection is touched again. PostgreSQL: `writing()`.
- Schema changes only through alembic migrations (`migrate()`), run on the engine's own connection so the
  async driver is used end to end. Two migration trees: application data and the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import sqlite3
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast

from sqlalchemy import Connection, event, text
from sqlalchemy.dialects import registry
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from gateway.errors import ConfigError
from gateway.store import sqlite_inline

registry.register(f"sqlite.{sqlite_inline.DRIVER}", "gateway.store.sqlite_inline", "dialect")

STORE_MIGRATIONS = Path(__file__).parent / "migrations"
STORE_HEAD = "0014"
"""Head revision of the application schema; tests keep it equal to alembic's head."""


def _sqlite_pragmas(busy_ms: int) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event own transaction start (pysqlite/aiosqlite recipe).
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={busy_ms}")
        cur.close()

    return on_connect


def _engine(url: str, *, immediate: bool) -> AsyncEngine:
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigError(f"invalid database URL: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        inline = parsed.drivername in ("sqlite+aiosqlite", f"sqlite+{sqlite_inline.DRIVER}")
        if inline:
            parsed = parsed.set(drivername=f"sqlite+{sqlite_inline.DRIVER}")
        eng = create_async_engine(parsed)
        # The inline driver waits for other processes' locks itself, off the loop (sqlite_inline.py).
        event.listen(eng.sync_engine, "connect", _sqlite_pragmas(0 if inline else sqlite_inline.BUSY_TIMEOUT_MS))
        begin_sql = "BEGIN IMMEDIATE" if immediate else "BEGIN"

        @event.listens_for(eng.sync_engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql(begin_sql)

        return eng
    if parsed.get_backend_name() == "postgresql":
        return create_async_engine(url, pool_pre_ping=True)
    raise ConfigError(f"unsupported database {parsed.get_backend_name()!r}: use SQLite or PostgreSQL")


def bound_list(prefix: str, values: Sequence[object]) -> tuple[str, dict[str, object]]:
    """An IN list for `Database.rows()`: the placeholders (":p0, :p1, ...") and their parameters. The SQL
    holds placeholders only, every value is bound."""
    return ", ".join(f":{prefix}{i}" for i in range(len(values))), {f"{prefix}{i}": v for i, v in enumerate(values)}


class Statements(Protocol):
    """The statements of a `Database.raw_writing()` transaction."""

    for_update: str
    """" FOR UPDATE" on PostgreSQL; empty on SQLite, whose write transaction already excludes others."""

    async def execute(self, sql: str, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        """Run `sql` once (a mapping) or for each mapping of a list; the rows it returns (none for a list)."""
        ...


_SQLITE_DATETIME = sqlite_dialect.DATETIME().bind_processor(sqlite_dialect.dialect())  # type: ignore[no-untyped-call]


def _sqlite_binds(params: Mapping[str, Any]) -> Mapping[str, Any]:
    """Datetimes as SQLAlchemy stores them on SQLite (UTC, models.UTCDateTime), so that rows written in
    plain SQL read back alike through the ORM; other values as they are."""
    if not any(isinstance(v, datetime) for v in params.values()):
        return params
    assert _SQLITE_DATETIME is not None
    return {k: _SQLITE_DATETIME(_utc(v)) if isinstance(v, datetime) else v for k, v in params.items()}


_SQLITE_DATETIME_RESULT = sqlite_dialect.DATETIME().result_processor(sqlite_dialect.dialect(), None)  # type: ignore[no-untyped-call]


def utc_datetime(value: datetime | str) -> datetime:
    """A datetime column read in plain SQL, as the ORM reads it (models.UTCDateTime): UTC-aware. SQLite
    returns SQLAlchemy's stored text, PostgreSQL a datetime."""
    if isinstance(value, str):
        assert _SQLITE_DATETIME_RESULT is not None
        parsed = cast(datetime, _SQLITE_DATETIME_RESULT(value))
    else:
        parsed = value
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _pg_binds(params: Mapping[str, Any]) -> dict[str, Any]:
    """Datetimes in UTC, naive ones refused, as models.UTCDateTime does."""
    return {k: _utc(v) if isinstance(v, datetime) else v for k, v in params.items()}


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("naive datetimes are not stored: use UTC-aware values")
    return value.astimezone(UTC)


class _SQLiteStatements:
    for_update = ""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        try:
            if isinstance(params, Mapping):
                return self._conn.execute(sql, _sqlite_binds(params)).fetchall()
            self._conn.executemany(sql, [_sqlite_binds(p) for p in params])
            return []
        except sqlite3.Error as exc:
            raise _dbapi_error(sql, exc) from exc


def _dbapi_error(sql: str, exc: sqlite3.Error) -> Exception:
    """SQLAlchemy's exception for a raw sqlite3 one (IntegrityError, OperationalError...), as the engine
    raises them: callers catch one family on both backends. Parameters hidden: they hold sealed bodies."""
    return DBAPIError.instance(sql, None, exc, sqlite3.Error, hide_parameters=True)


class _EngineStatements:
    def __init__(self, conn: AsyncConnection | AsyncSession, is_sqlite: bool) -> None:
        self._conn = conn
        self._is_sqlite = is_sqlite
        self.for_update = "" if is_sqlite else " FOR UPDATE"

    async def execute(self, sql: str, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        bind = _sqlite_binds if self._is_sqlite else _pg_binds
        many = not isinstance(params, Mapping)
        bound: Any = [bind(p) for p in params] if many else bind(params)  # type: ignore[arg-type]
        result: Any = await self._conn.execute(text(sql), bound)  # a CursorResult, from a session too
        return [tuple(r) for r in result] if result.returns_rows else []


def _begin_waiting(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout={sqlite_inline.BUSY_TIMEOUT_MS}")
    try:
        conn.execute("BEGIN IMMEDIATE")
    finally:
        conn.execute("PRAGMA busy_timeout=0")


async def _to_the_end(call: asyncio.Future[None]) -> None:
    """Wait for a call on a worker thread even when cancelled: the connection is not touched (rolled back,
    used by the next writer) while the thread still runs on it. The cancellation is raised afterwards."""
    cancelled = False
    while not call.done():
        try:
            await asyncio.shield(call)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    call.result()


def _raw_path(url: str) -> str | None:
    """The file of a SQLite database on the inline driver, for `rows()`; None for anything else."""
    parsed = make_url(url)
    inline = parsed.drivername in ("sqlite+aiosqlite", f"sqlite+{sqlite_inline.DRIVER}")
    if not inline or not parsed.database or parsed.database == ":memory:" or parsed.query:
        return None
    return parsed.database


class _Job:
    """A call on the commit thread as its loop sees it: `done` settled there once the call has ended,
    and `later`, the futures of a cancelled caller that still waits for that end (`_Committer.call`)."""

    __slots__ = ("done", "ended", "fn", "later", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, fn: Callable[[], object]) -> None:
        self.loop = loop
        self.fn = fn
        self.done: asyncio.Future[None] = loop.create_future()
        self.ended = False
        self.later: list[asyncio.Future[None]] = []


def _settle(job: _Job, error: BaseException | None) -> None:
    job.ended = True
    for waiter in job.later:
        if not waiter.done():
            waiter.set_result(None)
    if job.done.cancelled():
        return
    if error is None:
        job.done.set_result(None)
    else:
        job.done.set_exception(error)


_Jobs = queue.SimpleQueue[_Job | None]
"""A commit thread's work; None ends it."""


class _Committer:
    """A thread of one Database's own that runs its COMMITs (the fsync of synchronous=FULL), in order.

    Why not `run_in_executor`: its round trip (a concurrent Future chained to the loop's, the executor's
    locks and idle-thread semaphore) costs the loop's thread 47-53 µs of CPU per call on the benchmark
    machine; a queue and `call_soon_threadsafe` cost 22-23 µs (docs/benchmarks.md, eighth pass). Every
    APPEND, content FETCH, audit flush and accepted message commits at least once. The commits of one
    Database are serial anyway (one writer lock per loop, one SQLite writer per file)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._jobs: _Jobs = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[[], object]) -> _Job:
        """`fn()` on the thread; its job is settled on the calling loop."""
        job = _Job(asyncio.get_running_loop(), fn)
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                thread = threading.Thread(target=self._serve, args=(self._jobs,), name=self._name, daemon=True)
                thread.start()  # may raise (no thread to be had): then nothing is queued for nobody
                self._thread = thread
            self._jobs.put(job)
        return job

    def run(self, fn: Callable[[], object]) -> asyncio.Future[None]:
        """`fn()` on the thread; the future is settled on the calling loop."""
        return self.submit(fn).done

    async def call(self, fn: Callable[[], object]) -> None:
        """`fn()` on the thread, waited for to its end even when the caller is cancelled meanwhile (the
        connection it runs on must not be touched until then); the cancellation is raised afterwards.
        `_to_the_end` does this with `asyncio.shield`, whose extra future and loop turn cost the loop
        about 14 µs per commit (docs/benchmarks.md, ninth pass): here a cancelled caller only waits on."""
        job = self.submit(fn)
        try:
            await job.done
        except asyncio.CancelledError:
            while not job.ended:  # our cancellation cancelled `done`: the call still runs
                later = job.loop.create_future()
                job.later.append(later)
                with contextlib.suppress(asyncio.CancelledError):
                    await later
            raise

    def stop(self) -> None:
        """The thread ends once the jobs already given are done (without waiting here); a later `run`
        starts another."""
        with self._lock:
            if self._thread is not None:
                self._jobs.put(None)
                self._jobs, self._thread = queue.SimpleQueue(), None

    @staticmethod
    def _serve(
        jobs: _Jobs,
    ) -> None:
        while (job := jobs.get()) is not None:
            error: BaseException | None = None
            try:
                job.fn()
            except BaseException as exc:  # handed to the awaiting task, whatever it is
                error = exc
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
                job.loop.call_soon_threadsafe(_settle, job, error)
            del job, error  # nothing of a finished transaction kept while idle


class _RawTransaction:
    """`Database.raw_writing()` on SQLite. A class, not a generator-based context manager: every APPEND,
    audit append and queue change goes through it, and the generators (this one, the lock's, `joined`'s)
    cost the loop about 25 µs per transaction (docs/benchmarks.md, ninth pass)."""

    __slots__ = ("_changes", "_db", "_lock", "_raw", "_token")

    def __init__(self, db: Database) -> None:
        self._db = db

    async def __aenter__(self) -> Statements:
        db = self._db
        if db._writing.get():
            raise RuntimeError("a write transaction is already open in this task: pass its session instead")
        loop = asyncio.get_running_loop()
        lock = db._writers.get(loop) or db._writers.setdefault(loop, asyncio.Lock())
        await lock.acquire()
        self._lock, self._token = lock, db._writing.set(True)
        raw: sqlite3.Connection | None = None
        try:
            raw = db._raw_writer()
            try:
                raw.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if not sqlite_inline.busy(exc):
                    raise _dbapi_error("BEGIN IMMEDIATE", exc) from exc
                # Another process holds the write lock: wait for it off the loop.
                try:
                    await _to_the_end(loop.run_in_executor(None, _begin_waiting, raw))
                except sqlite3.Error as waited:
                    raise _dbapi_error("BEGIN IMMEDIATE", waited) from waited
        except BaseException:
            self._release(raw)  # a BEGIN that ended after a cancellation is rolled back
            raise
        self._raw, self._changes = raw, raw.total_changes
        return _SQLiteStatements(raw)

    async def __aexit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        raw = self._raw
        try:
            if kind is None:
                try:
                    if raw.total_changes != self._changes:  # a commit that wrote waits for fsync (synchronous=FULL)
                        await self._db._commits.call(raw.commit)
                    else:
                        raw.commit()
                except sqlite3.Error as error:
                    raise _dbapi_error("COMMIT", error) from error
        finally:
            self._release(raw)

    def _release(self, raw: sqlite3.Connection | None) -> None:
        try:
            if raw is not None and raw.in_transaction:
                raw.rollback()
        finally:
            self._db._writing.reset(self._token)
            self._lock.release()


class Database:
    """One database: a write engine, a read engine (the same one on PostgreSQL) and sessions."""

    def __init__(self, url: str, migrations: Path = STORE_MIGRATIONS, head: str = STORE_HEAD) -> None:
        self.url = url
        self.migrations = migrations
        self.head = head
        self.is_sqlite = make_url(url).get_backend_name() == "sqlite"
        self._raw_path = _raw_path(url)
        self._raw: sqlite3.Connection | None = None
        self._raw_lock = threading.Lock()  # several event loops (tests, admin commands) may share a Database
        self._raw_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, sqlite3.Connection] = (
            weakref.WeakKeyDictionary()
        )
        self.engine = _engine(url, immediate=True)
        self.read_engine = _engine(url, immediate=False) if self.is_sqlite else self.engine
        self._write = async_sessionmaker(self.engine, expire_on_commit=False)
        self._read = async_sessionmaker(self.read_engine, expire_on_commit=False)
        # One lock per event loop (tests and admin commands may run several loops in turn).
        self._writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()
        self._writing: contextvars.ContextVar[bool] = contextvars.ContextVar(f"writing:{id(self)}", default=False)
        self._commits = _Committer(f"commit:{Path(self._raw_path).name if self._raw_path else 'db'}")
        weakref.finalize(self, self._commits.stop)  # a Database dropped without close() leaves no thread

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A write transaction, committed when the block exits normally, rolled back otherwise."""
        async with self._writer(), self._write() as session, session.begin():
            yield session

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncConnection]:
        """`write()` on a Core connection, for hot paths (see `reading()`)."""
        async with self._writer(), self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def _writer(self) -> AsyncIterator[None]:
        """SQLite: this process's one writer at a time (see the module notes)."""
        if not self.is_sqlite:
            yield
            return
        if self._writing.get():
            raise RuntimeError("a write transaction is already open in this task: pass its session instead")
        lock = self._writers.setdefault(asyncio.get_running_loop(), asyncio.Lock())
        async with lock:
            token = self._writing.set(True)
            try:
                yield
            finally:
                self._writing.reset(token)

    def in_write(self) -> bool:
        """Whether this task is in one of this database's write transactions (SQLite's writer lock)."""
        return self._writing.get()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self._read() as session, session.begin():
            yield session

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        """A read transaction on a Core connection, for hot paths: no ORM session, identity map nor
        entity loading (about half the cost of `read()` for a one-statement transaction)."""
        async with self.read_engine.begin() as conn:
            yield conn

    async def rows(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """The rows of one read statement (`text()` form: `:name` parameters), as tuples (module notes)."""
        if self._raw_path is not None:
            got = self._raw_rows(sql, params)
            if got is not None:
                return got
        async with self.reading() as conn:
            return [tuple(r) for r in await conn.execute(text(sql), dict(params))]

    def _raw_rows(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]] | None:
        assert self._raw_path is not None
        with self._raw_lock:
            if self._raw is None:
                # timeout=0: a lock is waited for off the loop, by the fallback; query_only: reads only.
                conn = sqlite3.connect(self._raw_path, timeout=0, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA query_only=ON")
                self._raw = conn
            try:
                return self._raw.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                if sqlite_inline.busy(exc):
                    return None
                raise

    def raw_writing(self) -> AbstractAsyncContextManager[Statements]:
        """A write transaction of plain SQL statements (`:name` parameters), for the hottest writes (the
        audit append, APPEND, the queue). On SQLite (inline driver): a connection of this event loop's own,
        BEGIN IMMEDIATE and the statements inline, COMMIT (the fsync) on the commit thread, under `write()`'s
        lock, without SQLAlchemy's per-transaction work (`_RawTransaction`). Elsewhere: `writing()`'s
        connection."""
        if self._raw_path is None:
            return self._engine_statements()
        return _RawTransaction(self)

    @asynccontextmanager
    async def _engine_statements(self) -> AsyncIterator[Statements]:
        async with self.writing() as conn:
            yield _EngineStatements(conn, self.is_sqlite)

    def joined(
        self, session: AsyncSession | AsyncConnection | Statements | None
    ) -> AbstractAsyncContextManager[Statements]:
        """The caller's transaction when given (what runs here commits with its changes), else a
        `raw_writing()` one of its own."""
        if session is not None:
            return contextlib.nullcontext(self.statements(session))
        return self.raw_writing()

    def statements(self, session: AsyncSession | AsyncConnection | Statements) -> Statements:
        """The plain-SQL statements of `raw_writing()` in a transaction the caller already holds (an ORM
        session flushes its pending changes first, as for its own statements: autoflush); statements
        already are."""
        if isinstance(session, AsyncSession | AsyncConnection):
            return _EngineStatements(session, self.is_sqlite)
        return session

    def _raw_writer(self) -> sqlite3.Connection:
        loop = asyncio.get_running_loop()
        with self._raw_lock:
            conn = self._raw_writers.get(loop)
            if conn is None:
                assert self._raw_path is not None
                # The engine's settings (_sqlite_pragmas); busy timeout 0: a lock is waited for off the loop.
                conn = sqlite3.connect(self._raw_path, timeout=0, isolation_level=None, check_same_thread=False)
                for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "busy_timeout=0"):
                    conn.execute(f"PRAGMA {pragma}")
                self._raw_writers[loop] = conn
            return conn

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        """Whether this process holds `name` among every process of this PostgreSQL database (a session
        advisory lock, held on its own connection until the block ends); always True on SQLite."""
        if self.is_sqlite:
            yield True
            return
        async with self.engine.connect() as conn:
            key = "mssgw:" + name
            held = bool(await conn.scalar(text("SELECT pg_try_advisory_lock(hashtextextended(:k, 0))"), {"k": key}))
            await conn.commit()  # the lock is the session's: the connection stays open, outside a transaction
            try:
                yield held
            finally:
                if held:
                    with contextlib.suppress(Exception):
                        await conn.scalar(text("SELECT pg_advisory_unlock(hashtextextended(:k, 0))"), {"k": key})

    async def migrate(self) -> None:
        """Bring the schema to the head revision; a no-op (and no alembic import) when it is there."""
        current = await self.current_revision()
        if current == self.head:
            return
        if current is not None and not _known_revision(self.migrations, current):
            # A newer mssgw migrated this database: running older code on it would corrupt it.
            raise ConfigError(
                f"the database schema is at revision {current}, newer than this version of mssgw knows "
                f"(its latest is {self.head}): upgrade mssgw on this node (docs/operations.md, upgrades)"
            )
        await self.run_migration(_upgrade, self.migrations, "head")

    async def run_migration(self, fn: Any, *args: Any) -> None:
        """Run `fn(connection, *args)` (an alembic command) in one transaction. SQLite rebuilds a table to
        change it (migration 0010), and dropping the old one with foreign keys on would cascade-delete the
        rows that refer to it: SQLite's procedure is foreign keys off (only possible outside a transaction),
        rebuild, check every reference before committing, foreign keys back on."""
        async with self.engine.connect() as conn:
            if not self.is_sqlite:
                async with conn.begin():
                    await conn.run_sync(fn, *args)
                return
            sqlite = (await conn.get_raw_connection()).driver_connection
            assert sqlite is not None
            sqlite.execute("PRAGMA foreign_keys=OFF")
            try:
                async with conn.begin():
                    await conn.run_sync(fn, *args)
                    broken = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).all()
                    if broken:
                        raise ConfigError(f"the migration left rows whose references are gone: {broken[:5]}")
            finally:
                sqlite.execute("PRAGMA foreign_keys=ON")

    async def current_revision(self) -> str | None:
        try:
            async with self.read_engine.connect() as conn:
                return (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one_or_none()
        except DBAPIError:
            return None  # no schema yet

    async def close(self) -> None:
        # This loop's write transaction, if one is under way (its COMMIT may be on the commit thread),
        # ends first. Another live loop's writer connection is left to it: on its own thread it may be in
        # a BEGIN waiting off the loop or in a COMMIT, and closing a connection under a running call
        # crashes the process. It closes with that loop (weak key) or its own close().
        here = asyncio.get_running_loop()
        lock = self._writers.get(here)
        if lock is not None:
            await lock.acquire()
        try:
            with self._raw_lock:
                if self._raw is not None:
                    self._raw.close()
                    self._raw = None
                for loop, conn in list(self._raw_writers.items()):
                    if (loop is here or loop.is_closed()) and not conn.in_transaction:
                        conn.close()
                        del self._raw_writers[loop]
        finally:
            if lock is not None:
                lock.release()
        self._commits.stop()
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def alembic_head(migrations: Path) -> str | None:
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations))
    return ScriptDirectory.from_config(cfg).get_current_head()


def _known_revision(migrations: Path, revision: str) -> bool:
    """Whether `revision` is one of this code's migrations (file names start with their revision id)."""
    return any(p.name.startswith(f"{revision}_") for p in (migrations / "versions").glob("*.py"))


def _upgrade(connection: Connection, migrations: Path, revision: str) -> None:
    # alembic is imported only here: most commands find the schema current and never need it.
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


def run_migrations_env(metadata: Any) -> None:
    """The body of both alembic `env.py` files: migrate on the connection `Database.migrate()` hands over."""
    from alembic import context

    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through gateway.store.db.Database.migrate(), not the alembic CLI")
    # Batch mode lets autogenerated ALTERs work on SQLite too.
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
