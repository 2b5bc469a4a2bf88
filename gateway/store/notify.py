"""Change notices for mailboxes: what wakes IMAP IDLE (and later the web inbox) when a mailbox changes.

Implementation notes
- A notice carries no content, only which mailbox changed; listeners re-read the store.
- Each listener has its own `asyncio.Event`: a burst of notices wakes it once.
- Within a node, the delivery worker, IMAP sessions and the web inbox publish after their change is
  committed, and the node's sessions listen.
- Across nodes on one PostgreSQL, `PgNoticeBridge` carries them (LISTEN/NOTIFY on channel
  `mssgw_mailbox`, on one connection per node held out of the pool): what this node publishes is sent
  to the others, what they send wakes this node's listeners. A notification from our own connection is
  skipped (its sender's backend pid is ours). Notices lost while the connection was down are made up
  by waking every listener once it is back; changes by processes without a bridge (admin commands)
  are found by the IMAP service's one look a second at every idling folder (ImapService.check_idle).
- SQLite has one host, so no bridge: other processes' changes are found by that look.
- The same connection carries the login lock-out's events (channel `mssgw_login`: a failure or a
  success, account and client address), so that a guesser spreading attempts over the nodes behind a
  balancer meets one set of counters, each node applying the others' events to its own.
- What goes out waits in one `Outbox` (per channel, lines; mailbox addresses coalesced); a line longer
  than MAX_LINE is dropped (a user name is untrusted input, and PostgreSQL refuses a payload over 8000
  bytes: one such line must not break the connection for everyone).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from gateway.audit.oplog import get_logger
from gateway.auth.lockout import LOGIN_CHANNEL
from gateway.store.db import Database

CHANNEL = "mssgw_mailbox"
MAX_LINE = 1000
"""Longest line sent (bytes): addresses are at most 320, user names that long cannot be accounts."""
MAX_PAYLOAD = 7000
"""Bytes of addresses per NOTIFY (PostgreSQL's limit is 8000); more go in further notifications."""
KEEPALIVE = 30.0
"""Seconds between checks of an otherwise quiet connection (a dead one is noticed and replaced)."""
RETRY = 2.0
"""Seconds between attempts to connect again after the connection was lost."""


class Outbox:
    """Lines waiting to be sent to the other nodes, by channel."""

    def __init__(self) -> None:
        self._lines: dict[str, list[str]] = {}
        self._ready = asyncio.Event()

    def post(self, channel: str, line: str, *, coalesce: bool = False) -> None:
        if len(line.encode()) > MAX_LINE or "\n" in line:
            return
        lines = self._lines.setdefault(channel, [])
        if not (coalesce and line in lines):
            lines.append(line)
        self._ready.set()

    def interrupt(self) -> None:
        """Wake the bridge's wait (its connection was lost)."""
        self._ready.set()

    async def take(self) -> dict[str, list[str]]:
        """What was posted since the last call, once there is something (or `interrupt()` was called)."""
        if not self._lines:
            await self._ready.wait()
        self._ready.clear()
        taken, self._lines = self._lines, {}
        return taken


class Told(Protocol):
    """What the login lock-out offers the bridge: the other nodes' events applied here."""

    outbox: Outbox | None

    def told(self, line: str) -> None: ...


class MailboxNotices:
    def __init__(self) -> None:
        self._listeners: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self.outbox: Outbox | None = None  # set when bridged: addresses for the other nodes

    def publish(self, address: str) -> None:
        """`address` changed: wake its listeners here, and on the other nodes when bridged."""
        key = address.lower()
        self.wake(key)
        if self.outbox is not None:
            self.outbox.post(CHANNEL, key, coalesce=True)

    def wake(self, address: str) -> None:
        """Wake this node's listeners of `address` only (what the other nodes tell us)."""
        for event in self._listeners.get(address.lower(), ()):
            event.set()

    def wake_all(self) -> None:
        for events in self._listeners.values():
            for event in events:
                event.set()

    @contextmanager
    def listen(self, address: str) -> Iterator[asyncio.Event]:
        """An event set whenever `address` changes, for as long as the block runs."""
        key = address.lower()
        event = asyncio.Event()
        self._listeners[key].add(event)
        try:
            yield event
        finally:
            self._listeners[key].discard(event)
            if not self._listeners[key]:
                del self._listeners[key]

    def listeners(self, address: str) -> int:
        return len(self._listeners.get(address.lower(), ()))


def payloads(lines: list[str]) -> list[str]:
    """Newline-separated lines, cut so that each payload stays under MAX_PAYLOAD bytes."""
    out: list[str] = []
    current: list[str] = []
    size = 0
    for a in lines:
        n = len(a.encode()) + 1
        if current and size + n > MAX_PAYLOAD:
            out.append("\n".join(current))
            current, size = [], 0
        current.append(a)
        size += n
    if current:
        out.append("\n".join(current))
    return out


class PgNoticeBridge:
    """Carries mailbox notices and lock-out events between the nodes sharing one PostgreSQL database."""

    def __init__(self, db: Database, notices: MailboxNotices, lockout: Told | None = None) -> None:
        assert not db.is_sqlite
        self.db = db
        self.notices = notices
        self.lockout = lockout
        self.outbox = Outbox()
        notices.outbox = self.outbox
        if lockout is not None:
            lockout.outbox = self.outbox
        self.connected = asyncio.Event()  # set while listening (tests wait on it)
        self.pid: int | None = None  # the listening connection's server process
        self.log = get_logger(component="notify")

    async def run(self) -> None:
        """Listen and send for the node's lifetime, connecting again whenever the connection is lost."""
        first = True
        while True:
            try:
                await self._session(first)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database went away: notices wait (the idle look covers them)
                self.log.warning("notice connection lost", error=type(exc).__name__)
            self.connected.clear()
            first = False
            await asyncio.sleep(RETRY)

    def _received(self, channel: str, payload: str) -> None:
        for line in payload.split("\n"):
            if channel == CHANNEL:
                self.notices.wake(line)
            elif channel == LOGIN_CHANNEL and self.lockout is not None:
                self.lockout.told(line)

    async def _session(self, first: bool) -> None:
        lost = asyncio.Event()
        async with self.db.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            pg: Any = raw.driver_connection  # the asyncpg connection itself: LISTEN needs it
            own_pid = self.pid = pg.get_server_pid()

            def received(_conn: Any, pid: int, channel: str, payload: str) -> None:
                if pid != own_pid:
                    self._received(channel, payload)

            def terminated(_conn: Any) -> None:
                lost.set()
                self.outbox.interrupt()

            pg.add_termination_listener(terminated)
            channels = [CHANNEL, *([LOGIN_CHANNEL] if self.lockout is not None else [])]
            for channel in channels:
                await pg.add_listener(channel, received)
            try:
                self.connected.set()
                if not first:
                    self.notices.wake_all()  # whatever changed while we were away
                    self.log.info("notice connection restored")
                while not lost.is_set():
                    taken: dict[str, list[str]] = {}
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(KEEPALIVE):
                            taken = await self.outbox.take()
                    if not taken and not lost.is_set():
                        await pg.execute("SELECT 1")  # a dead connection raises here
                    for channel, lines in taken.items():
                        for payload in payloads(lines):
                            await pg.execute("SELECT pg_notify($1, $2)", channel, payload)
                raise ConnectionError("the notice connection closed")
            finally:
                for channel in channels:
                    with contextlib.suppress(Exception):
                        await pg.remove_listener(channel, received)
