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
from typing import cast

from sqlalchemy import Table, bindparam, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from gateway.errors import NotFound
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


_FOLDERS = cast(Table, Folder.__table__)
_ALLOCATE = (
    update(_FOLDERS)
    .where(_FOLDERS.c.address == bindparam("b_address"), _FOLDERS.c.name == bindparam("b_name"))
    .values(uidnext=_FOLDERS.c.uidnext + 1, highestmodseq=_FOLDERS.c.highestmodseq + 1)
    .returning(_FOLDERS.c.id, _FOLDERS.c.uidnext - 1, _FOLDERS.c.highestmodseq, _FOLDERS.c.uidvalidity)
)
"""Built once: on every delivery's path, building and keying the statement cost more than running it."""


async def allocate_uid(session: AsyncSession | AsyncConnection, address: str, name: str) -> tuple[int, int, int, int]:
    """Take the folder's next UID and modseq under its row's lock: (folder id, uid, modseq, uidvalidity).
    One UPDATE ... RETURNING (SQLite 3.35+, PostgreSQL): it is on every delivery's path."""
    row = (await session.execute(_ALLOCATE, {"b_address": address, "b_name": name})).first()
    if row is None:
        raise NotFound(f"no folder {name} in {address}")
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])
