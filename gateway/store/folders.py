"""The folders every local mailbox has, and UID allocation.

Implementation notes
- Every account is created with INBOX and the RFC 6154 special-use folders (\\Sent, \\Drafts, \\Trash,
  \\Junk, \\Archive), all subscribed, so clients find them without configuration.
- UIDVALIDITY is the folder's creation time in seconds (RFC 9051 §2.3.1.1: unique per folder name over
  time); UIDs come from UIDNEXT and HIGHESTMODSEQ grows with every change (RFC 7162), both bumped in the
  same transaction that inserts the message, under the folder row's lock.
"""

from __future__ import annotations

import time

from gateway.errors import NotFound
from gateway.store.db import Statements
from gateway.store.models import Folder, Subscription

STANDARD_FOLDERS: list[tuple[str, str | None]] = [
    ("INBOX", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
]


def standard_folders(address: str) -> list[Folder]:
    uidvalidity = int(time.time())
    return [
        Folder(address=address, name=name, special_use=use, uidvalidity=uidvalidity, uidnext=1, highestmodseq=1)
        for name, use in STANDARD_FOLDERS
    ]


def standard_subscriptions(address: str) -> list[Subscription]:
    return [Subscription(address=address, name=name) for name, _ in STANDARD_FOLDERS]


_ALLOCATE = (
    "UPDATE folders SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1"
    " WHERE address = :address AND name = :name RETURNING id, uidnext - 1, highestmodseq, uidvalidity"
)


async def allocate_uid(tx: Statements, address: str, name: str) -> tuple[int, int, int, int]:
    """Take the folder's next UID and modseq under its row's lock: (folder id, uid, modseq, uidvalidity).
    One UPDATE ... RETURNING (SQLite 3.35+, PostgreSQL): it is on every delivery's path."""
    rows = await tx.execute(_ALLOCATE, {"address": address, "name": name})
    if not rows:
        raise NotFound(f"no folder {name} in {address}")
    row = rows[0]
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])
