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
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gateway.audit.oplog import get_logger
from gateway.store.db import Database

CHANNEL = "mssgw_mailbox"
MAX_PAYLOAD = 7000
"""Bytes of addresses per NOTIFY (PostgreSQL's limit is 8000); more go in further notifications."""
KEEPALIVE = 30.0
"""Seconds between checks of an otherwise quiet connection (a dead one is noticed and replaced)."""
RETRY = 2.0
"""Seconds between attempts to connect again after the connection was lost."""


class MailboxNotices:
    def __init__(self) -> None:
        self._listeners: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._outbox: set[str] | None = None  # addresses for the other nodes, when bridged
        self._outgoing = asyncio.Event()

    def publish(self, address: str) -> None:
        """`address` changed: wake its listeners here, and on the other nodes when bridged."""
        key = address.lower()
        self.wake(key)
        if self._outbox is not None:
            self._outbox.add(key)
            self._outgoing.set()

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

    # -- the bridge's side ---------------------------------------------------------------------------

    def bridged(self) -> None:
        if self._outbox is None:
            self._outbox = set()

    def interrupt(self) -> None:
        """Wake the bridge's wait for outgoing notices (its connection was lost)."""
        self._outgoing.set()

    async def outgoing(self) -> list[str]:
        """The addresses published since the last call, once there is one (or `interrupt()` was called)."""
        assert self._outbox is not None
        if not self._outbox:
            await self._outgoing.wait()
        self._outgoing.clear()
        taken, self._outbox = sorted(self._outbox), set()
        return taken


def payloads(addresses: list[str]) -> list[str]:
    """Newline-separated addresses, cut so that each payload stays under MAX_PAYLOAD bytes."""
    out: list[str] = []
    current: list[str] = []
    size = 0
    for a in addresses:
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
    """Carries mailbox notices between the nodes sharing one PostgreSQL database (LISTEN/NOTIFY)."""

    def __init__(self, db: Database, notices: MailboxNotices) -> None:
        assert not db.is_sqlite
        self.db = db
        self.notices = notices
        self.connected = asyncio.Event()  # set while listening (tests wait on it)
        self.pid: int | None = None  # the listening connection's server process
        self.log = get_logger(component="notify")
        notices.bridged()

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

    async def _session(self, first: bool) -> None:
        lost = asyncio.Event()
        async with self.db.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            pg: Any = raw.driver_connection  # the asyncpg connection itself: LISTEN needs it
            own_pid = self.pid = pg.get_server_pid()

            def received(_conn: Any, pid: int, _channel: str, payload: str) -> None:
                if pid != own_pid:
                    for address in payload.split("\n"):
                        self.notices.wake(address)

            def terminated(_conn: Any) -> None:
                lost.set()
                self.notices.interrupt()

            pg.add_termination_listener(terminated)
            await pg.add_listener(CHANNEL, received)
            try:
                self.connected.set()
                if not first:
                    self.notices.wake_all()  # whatever changed while we were away
                    self.log.info("notice connection restored")
                while not lost.is_set():
                    addresses: list[str] = []
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(KEEPALIVE):
                            addresses = await self.notices.outgoing()
                    if not addresses and not lost.is_set():
                        await pg.execute("SELECT 1")  # a dead connection raises here
                    for payload in payloads(addresses):
                        await pg.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
                raise ConnectionError("the notice connection closed")
            finally:
                with contextlib.suppress(Exception):
                    await pg.remove_listener(CHANNEL, received)
