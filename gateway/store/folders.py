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

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

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


async def allocate_uid(session: AsyncSession, address: str, name: str) -> tuple[Folder, int, int]:
    """Lock the folder row and take the next UID and modseq: (folder, uid, modseq)."""
    folder = (
        await session.execute(select(Folder).where(Folder.address == address, Folder.name == name).with_for_update())
    ).scalar_one_or_none()
    if folder is None:
        raise NotFound(f"no folder {name} in {address}")
    uid, modseq = folder.uidnext, folder.highestmodseq + 1
    folder.uidnext = uid + 1
    folder.highestmodseq = modseq
    return folder, uid, modseq
