"""Change notices for mailboxes: what wakes IMAP IDLE (and later the web inbox) when a mailbox changes.

Implementation notes
- In-process only: the delivery worker and IMAP sessions of this node publish, sessions of this node
  listen. Changes made by other processes (admin commands, other nodes) are found by the IMAP service's
  one look a second at every idling folder (ImapService.check_idle), until notices cross nodes
  (PostgreSQL LISTEN/NOTIFY, scale-out).
- A notice carries no content, only which mailbox changed; listeners re-read the store.
- Each listener has its own `asyncio.Event`: a burst of notices wakes it once.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager


class MailboxNotices:
    def __init__(self) -> None:
        self._listeners: defaultdict[str, set[asyncio.Event]] = defaultdict(set)

    def publish(self, address: str) -> None:
        for event in self._listeners.get(address.lower(), ()):
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
