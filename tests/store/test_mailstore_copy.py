"""Mailstore.copy in batches: staged copies appear all at once, or not at all (RFC 3501 §6.4.7).

Failures are caused for real, by another task working on the mailbox while the copy runs between two of
its batches (an APPEND that fills the quota, a DELETE of the destination, an EXPUNGE of a source message,
a cancellation), never by replacing code of the copy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from gateway.errors import NotFound
from gateway.store.crypto import KeyEncryptionKey
from gateway.store.db import Database
from gateway.store.mailboxes import MailboxRepository
from gateway.store.mailstore import Mailstore, QuotaExceeded, _int_octets
from gateway.store.messages import MessageStore
from gateway.store.models import StoredMessage

DOMAIN = "ch-test.mssante.fr"
ALICE = f"alice.martin@{DOMAIN}"
T0 = datetime(2026, 3, 1, 8, 30, tzinfo=UTC)


def body(n: int, pad: int = 0) -> bytes:
    return f"From: {ALICE}\r\nSubject: message {n}\r\n\r\nCompte rendu {n}\r\n{'x' * pad}".encode()


@pytest.fixture
async def box(store_db: Database, kek: KeyEncryptionKey) -> Mailstore:
    repo = MailboxRepository(store_db, kek)
    await repo.create(ALICE, "PER")
    return Mailstore(MessageStore(repo))


async def fill(box: Mailstore, n: int, folder: str = "INBOX", pad: int = 0) -> None:
    for i in range(1, n + 1):
        await box.append(ALICE, folder, body(i, pad), flags=["\\Flagged"] if i % 2 else [], internal_date=T0)


async def staged(box: Mailstore) -> int:
    async with box.db.read() as s:
        q = select(func.count()).select_from(StoredMessage).where(StoredMessage.folder_id.is_(None))
        return int((await s.execute(q)).scalar_one())


async def during(box: Mailstore, copy: Awaitable[object], act: Callable[[], Awaitable[object]]) -> object:
    """Run `copy`; once it has staged its first batch, run `act` (the copy goes on meanwhile: give it enough
    batches that `act` ends before the last)."""
    task = asyncio.ensure_future(copy)
    while not await staged(box):
        assert not task.done(), "the copy ended before its first batch was seen"
        await asyncio.sleep(0)
    # Another session looking now sees nothing of the copy yet.
    assert (await box.status(ALICE, "Archive")).messages == 0
    await act()
    return await task


async def test_a_copy_in_many_batches_keeps_uid_order_flags_and_bodies(box: Mailstore) -> None:
    await fill(box, 7)
    inbox = await box.folder(ALICE, "INBOX")
    archive = await box.folder(ALICE, "Archive")
    validity, pairs = await box.copy(ALICE, inbox.id, [7, 2, 3, 5, 1, 99], "Archive", batch=2)
    assert (validity, pairs) == (archive.uidvalidity, [(1, 1), (2, 2), (3, 3), (5, 4), (7, 5)])
    copied = await box.select(ALICE, "Archive", read_write=False)
    assert [(m.uid, m.modseq, sorted(m.flags)) for m in copied.messages] == [
        (1, 2, ["\\Flagged"]),
        (2, 3, []),
        (3, 4, ["\\Flagged"]),
        (4, 5, ["\\Flagged"]),
        (5, 6, ["\\Flagged"]),
    ]
    assert [await box.body(ALICE, m.id) for m in copied.messages] == [body(n) for n in (1, 2, 3, 5, 7)]
    assert (copied.folder.uidnext, copied.folder.highestmodseq) == (6, 6)
    # By octets: each message alone is over the limit, so each goes in a batch of its own.
    _, pairs = await box.copy(ALICE, inbox.id, [1, 2, 3], "Archive", batch_bytes=10)
    assert pairs == [(1, 6), (2, 7), (3, 8)]
    assert await staged(box) == 0


async def test_other_readers_never_see_part_of_a_copy(box: Mailstore) -> None:
    await fill(box, 6)
    inbox = await box.folder(ALICE, "INBOX")
    seen: list[int] = []

    async def look() -> None:
        seen.append((await box.status(ALICE, "Archive")).messages)

    result = await during(box, box.copy(ALICE, inbox.id, range(1, 7), "Archive", batch=1), look)
    assert seen == [0]
    assert result == ((await box.folder(ALICE, "Archive")).uidvalidity, [(n, n) for n in range(1, 7)])


async def test_quota_reached_mid_way_leaves_the_destination_unchanged(box: Mailstore) -> None:
    await fill(box, 20, pad=1000)
    size = len(body(1, 1000))
    used, _ = await box.usage(ALICE)
    await box.set_quota(ALICE, used + 20 * size + size // 2)  # the copy alone fits
    inbox = await box.folder(ALICE, "INBOX")
    before = await box.folder(ALICE, "Archive")

    async def append() -> None:  # fits when it is made: the copy has staged only a few messages so far
        await box.append(ALICE, "Drafts", body(99, 2 * size))

    with pytest.raises(QuotaExceeded):
        await during(box, box.copy(ALICE, inbox.id, range(1, 21), "Archive", batch=1), append)
    assert await box.folder(ALICE, "Archive") == before
    assert await staged(box) == 0
    assert (await box.usage(ALICE))[0] == used + len(body(99, 2 * size))


async def test_the_destination_deleted_mid_way(box: Mailstore) -> None:
    await fill(box, 20)
    await box.create_folder(ALICE, "Patients")
    inbox = await box.folder(ALICE, "INBOX")
    with pytest.raises(NotFound, match="no folder Patients"):
        await during(
            box,
            box.copy(ALICE, inbox.id, range(1, 21), "Patients", batch=1),
            lambda: box.delete_folder(ALICE, "Patients"),
        )
    assert await staged(box) == 0

    async def recreate() -> None:  # a new folder of the same name is not the one the copy was for
        await box.delete_folder(ALICE, "Patients")
        await box.create_folder(ALICE, "Patients")

    await box.create_folder(ALICE, "Patients")
    with pytest.raises(NotFound, match="no folder Patients"):
        await during(box, box.copy(ALICE, inbox.id, range(1, 21), "Patients", batch=1), recreate)
    assert (await box.status(ALICE, "Patients")).messages == 0
    assert await staged(box) == 0


async def test_a_source_message_expunged_mid_way_is_not_copied(box: Mailstore) -> None:
    await fill(box, 20)
    inbox = await box.folder(ALICE, "INBOX")

    async def expunge() -> None:
        await box.store_flags(ALICE, inbox.id, [19], "add", ["\\Deleted"])
        assert await box.expunge(ALICE, inbox.id) == [19]

    _, pairs = await during(box, box.copy(ALICE, inbox.id, range(1, 21), "Archive", batch=1), expunge)  # type: ignore[misc]
    assert pairs == [(n, n) for n in range(1, 19)] + [(20, 19)]
    assert await box.uids((await box.folder(ALICE, "Archive")).id) == list(range(1, 20))


async def test_an_append_to_the_destination_mid_way_comes_first_in_uid_order(box: Mailstore) -> None:
    await fill(box, 10)
    inbox = await box.folder(ALICE, "INBOX")

    async def append() -> None:
        assert (await box.append(ALICE, "Archive", body(88)))[1] == 1

    _, pairs = await during(box, box.copy(ALICE, inbox.id, range(1, 11), "Archive", batch=1), append)  # type: ignore[misc]
    assert pairs == [(n, n + 1) for n in range(1, 11)]  # UIDs taken when the copies appear, above the append's
    archive = await box.select(ALICE, "Archive", read_write=False)
    assert [await box.body(ALICE, m.id) for m in archive.messages] == [body(88)] + [body(n) for n in range(1, 11)]
    assert [m.modseq for m in archive.messages] == list(range(2, 13))


async def test_a_cancelled_copy_leaves_nothing(box: Mailstore) -> None:
    await fill(box, 5)
    inbox = await box.folder(ALICE, "INBOX")
    task = asyncio.ensure_future(box.copy(ALICE, inbox.id, range(1, 6), "Archive", batch=1))
    while not await staged(box):
        assert not task.done()
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.05)  # the shielded clean-up finishes
    assert await staged(box) == 0
    assert (await box.status(ALICE, "Archive")).messages == 0


async def test_copies_left_staged_by_a_crash_are_swept_later(box: Mailstore) -> None:
    await fill(box, 2)
    inbox = await box.folder(ALICE, "INBOX")
    await box.copy(ALICE, inbox.id, [1], "Archive")
    async with box.db.write() as s:  # what a copy killed between two batches leaves: a staged row
        row = (await s.execute(select(StoredMessage).where(StoredMessage.folder_id == inbox.id))).scalars().first()
        assert row is not None
        s.add(
            StoredMessage(
                id="0" * 32,
                address=ALICE,
                folder_id=None,
                uid=None,
                flags="",
                size=row.size,
                body=row.body,
                created_at=datetime.now(UTC) - timedelta(hours=2),
            )
        )
    used = (await box.usage(ALICE))[0]
    await box.copy(ALICE, inbox.id, [2], "Archive")
    assert await staged(box) == 0
    assert (await box.usage(ALICE))[0] == used  # one row swept, one copied, of the same size


def test_int_octets_follow_sqlite_record_format() -> None:
    assert [_int_octets(v) for v in (0, 1, 2, 127, 128, 32767, 32768, 2**23, 2**31, 2**47, -1)] == [
        0,
        0,
        1,
        1,
        2,
        2,
        3,
        4,
        6,
        8,
        1,
    ]
