"""Message bodies at rest: sealed with the mailbox's data key, bound to their row, deleted with it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from gateway.errors import NotFound
from gateway.store.crypto import DecryptionError, KeyEncryptionKey
from gateway.store.db import Database
from gateway.store.mailboxes import MailboxRepository
from gateway.store.messages import MessageStore, relay_receipt
from gateway.store.models import Account, Mailbox, StoredMessage, utcnow

DOMAIN = "ch-test.mssante.fr"
ALICE = f"alice.martin@{DOMAIN}"
BOB = f"bob.durand@{DOMAIN}"
FAILED = "sealed data failed authentication (wrong key, owner or altered)"


def distinctive_body(size: int = 10 * 1024) -> bytes:
    """A body no 32-byte window of which can occur by chance: numbered lines of a report."""
    lines = [
        f"CR-OPERATOIRE-7f3a ligne {i:05d} patient DUPONT-MSSGW créatinine {i * 7 % 1000} µmol/L\n" for i in range(400)
    ]
    body = "".join(lines).encode()
    assert len(body) >= size
    return body[:size]


BODY = distinctive_body()


def _windows(data: bytes, width: int = 32) -> list[bytes]:
    return [data[i : i + width] for i in range(0, len(data) - width + 1, width)]


def _file_bytes(*paths: Path) -> bytes:
    return b"".join(p.read_bytes() for p in paths if p.exists())


def _leaks(haystack: bytes) -> list[bytes]:
    return [w for w in _windows(BODY) if w in haystack]


@pytest.fixture
async def messages(store_db: Database, kek: KeyEncryptionKey) -> MessageStore:
    repo = MailboxRepository(store_db, kek)
    await repo.create(ALICE, "PER")
    await repo.create(BOB, "PER")
    return MessageStore(repo)


async def _row_body(db: Database, message_id: str) -> bytes:
    async with db.read() as s:
        body = (await s.execute(text("SELECT body FROM messages WHERE id = :id"), {"id": message_id})).scalar_one()
    return bytes(body)


async def test_bodies_are_encrypted_at_rest_and_read_back(messages: MessageStore, db_url: str) -> None:
    db = messages.db
    mid = await messages.put(ALICE.upper(), BODY)
    assert len(mid) == 32
    int(mid, 16)
    stored = await _row_body(db, mid)
    assert len(stored) == 1 + 12 + len(BODY) + 16
    assert stored[:1] == b"\x01"
    assert _leaks(stored) == []
    async with db.read() as s:
        row = (await s.execute(select(StoredMessage.address, StoredMessage.size))).one()
    assert tuple(row) == (ALICE, len(BODY))
    assert await messages.get(ALICE, mid) == BODY
    assert await messages.get(ALICE.upper(), mid) == BODY

    if db.is_sqlite:
        path = Path(str(make_url(db_url).database))
        raw = _file_bytes(path, path.with_name(path.name + "-wal"))
        # The control proves these bytes hold the committed row: its id and address are in clear.
        assert mid.encode() in raw
        assert ALICE.encode() in raw
        assert _leaks(raw) == []
        await db.close()  # checkpoints the WAL into the main file
        raw = _file_bytes(path)
        assert mid.encode() in raw
        assert _leaks(raw) == []


async def test_a_body_moved_to_another_mailbox_does_not_open(messages: MessageStore) -> None:
    db = messages.db
    mid = await messages.put(ALICE, BODY)
    other = await messages.put(BOB, b"for bob")
    async with db.write() as s:
        await s.execute(text("UPDATE messages SET address = :bob WHERE id = :id"), {"bob": BOB, "id": mid})
    with pytest.raises(NotFound) as missing:
        await messages.get(ALICE, mid)
    assert str(missing.value) == f"no message {mid} in {ALICE}"
    with pytest.raises(DecryptionError) as exc:
        await messages.get(BOB, mid)
    assert str(exc.value) == FAILED
    assert await messages.get(BOB, other) == b"for bob"

    # A sealed body copied into another row of the same mailbox does not open either (the id is bound).
    async with db.write() as s:
        await s.execute(
            text(
                "INSERT INTO messages (id, address, size, body, created_at) "
                "SELECT :new, address, size, body, created_at FROM messages WHERE id = :id"
            ),
            {"new": "0" * 32, "id": other},
        )
    with pytest.raises(DecryptionError) as exc:
        await messages.get(BOB, "0" * 32)
    assert str(exc.value) == FAILED


async def test_unknown_mailbox_and_message(messages: MessageStore) -> None:
    with pytest.raises(NotFound) as exc:
        await messages.put(f"nobody@{DOMAIN}", b"x")
    assert str(exc.value) == f"no local mailbox nobody@{DOMAIN}"
    with pytest.raises(NotFound) as exc:
        await messages.get(ALICE, "f" * 32)
    assert str(exc.value) == f"no message {'f' * 32} in {ALICE}"


async def test_deleting_a_mailbox_deletes_its_messages(messages: MessageStore) -> None:
    db = messages.db
    for i in range(3):
        await messages.put(ALICE, BODY + str(i).encode())
    kept = await messages.put(BOB, b"bob's")
    await messages.mailboxes.delete(ALICE)

    async with db.read() as s:
        by_address = dict(
            (await s.execute(select(StoredMessage.address, func.count()).group_by(StoredMessage.address))).all()
        )
        accounts = (await s.execute(select(Account.address))).scalars().all()
        mailboxes = (await s.execute(select(Mailbox.address))).scalars().all()
    assert by_address == {BOB: 1}
    assert accounts == [BOB]
    assert mailboxes == [BOB]
    assert await messages.get(BOB, kept) == b"bob's"
    with pytest.raises(NotFound) as exc:
        await messages.put(ALICE, b"after")
    assert str(exc.value) == f"no local mailbox {ALICE}"


async def test_a_delivery_in_plain_sql_reads_back_through_the_orm(messages: MessageStore) -> None:
    """Deliveries write in plain SQL (Database.raw_writing): dates are stored as the ORM stores them (UTC,
    SQLAlchemy's text form on SQLite), so they read back equal, an offset converted; naive ones refused."""
    from datetime import UTC, datetime, timedelta, timezone

    paris = datetime(2026, 3, 29, 3, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    got = await messages.deliver(ALICE, BODY, folder="Archive", flags="\\Seen", internal_date=paris)
    async with messages.db.read() as s:
        row = (await s.execute(select(StoredMessage).where(StoredMessage.id == got.id))).scalar_one()
    assert (row.folder_id is not None, row.uid, row.modseq, row.flags) == (True, 1, 2, "\\Seen")
    assert row.internal_date == datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=UTC)
    assert row.internal_date.tzinfo == UTC
    assert abs(row.created_at - datetime.now(UTC)) < timedelta(minutes=1)
    if messages.db.is_sqlite:  # the text SQL compares (retention's cutoffs): the ORM's form, in UTC
        stored = await messages.db.rows("SELECT internal_date FROM messages WHERE id = :id", {"id": got.id})
        assert stored == [("2026-03-29 01:30:15.123456",)]
    assert (row.size, got.folder, got.uid) == (len(BODY), "Archive", 1)
    with pytest.raises(ValueError, match="naive datetimes are not stored"):
        await messages.deliver(ALICE, BODY, internal_date=datetime(2026, 1, 1))
    assert await messages.get(ALICE, got.id) == BODY


async def test_a_relay_receipt_is_taken_once_per_mailbox_and_rolls_back_with_its_delivery(
    messages: MessageStore,
) -> None:
    """The receipt is the duplicate check of relayed messages: first taker True, later ones False, per
    mailbox; a transaction that fails takes none; old receipts are pruned."""
    db = messages.db
    sender, mid = f"dr.durand@{DOMAIN}", "<r.1@ch-peer.mssante.fr>"
    digest = relay_receipt(sender, mid, BODY)
    assert digest is not None
    assert relay_receipt(sender.upper(), f" {mid}", BODY) == digest  # sender case-folded, msg-id unfolded
    assert relay_receipt(sender, mid.upper(), BODY) != digest  # the msg-id exactly
    assert relay_receipt(sender, mid, BODY + b" ") != digest  # other content: another message
    assert relay_receipt(f"x{sender}", mid, BODY) != digest
    assert relay_receipt(sender, None, BODY) is None
    assert relay_receipt(sender, "", BODY) is None

    async def failed_delivery() -> None:
        async with db.raw_writing() as tx:
            assert await messages.first_receipt(tx, ALICE, digest) is True
            raise RuntimeError("delivery failed")

    with pytest.raises(RuntimeError):  # rolled back: the receipt goes with it
        await failed_delivery()
    async with db.raw_writing() as tx:
        assert await messages.first_receipt(tx, ALICE.upper(), digest) is True
        assert await messages.first_receipt(tx, ALICE, digest) is False
    async with db.raw_writing() as tx:
        assert await messages.first_receipt(tx, ALICE, digest) is False
        assert await messages.first_receipt(tx, BOB, digest) is True

    assert await messages.prune_receipts(utcnow() - timedelta(minutes=1)) == 0
    assert await messages.prune_receipts(utcnow() + timedelta(seconds=1)) == 2
    async with db.raw_writing() as tx:
        assert await messages.first_receipt(tx, ALICE, digest) is True  # forgotten: a new message again


async def test_a_mailbox_deleted_takes_its_receipts(messages: MessageStore) -> None:
    async with messages.db.raw_writing() as tx:
        assert await messages.first_receipt(tx, BOB, "0" * 64) is True
    await messages.mailboxes.delete(BOB)
    async with messages.db.read() as s:
        assert (await s.execute(text("SELECT count(*) FROM relay_receipts"))).scalar_one() == 0
