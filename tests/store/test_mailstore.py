"""Mailstore: the IMAP view of a mailbox (folders, UIDs, modseqs, flags, \\Recent, expunge, copy, move, quota)."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime

import pytest
from sqlalchemy import text as sql

from gateway.errors import Conflict, NotFound, UsageError
from gateway.store import messages
from gateway.store.crypto import KeyEncryptionKey
from gateway.store.db import Database
from gateway.store.mailboxes import MailboxRepository
from gateway.store.mailstore import Mailstore, QuotaExceeded, canonical, check_name
from gateway.store.messages import MessageStore
from tests.store.commits import slow_commits, wrap_commits

DOMAIN = "ch-test.mssante.fr"
ALICE = f"alice.martin@{DOMAIN}"
BOB = f"bob.durand@{DOMAIN}"
T0 = datetime(2026, 3, 1, 8, 30, tzinfo=UTC)


def body(n: int) -> bytes:
    return f"From: {ALICE}\r\nSubject: message {n}\r\n\r\nCompte rendu {n}\r\n".encode()


@pytest.fixture
async def box(store_db: Database, kek: KeyEncryptionKey) -> Mailstore:
    repo = MailboxRepository(store_db, kek)
    await repo.create(ALICE, "PER")
    await repo.create(BOB, "PER")
    return Mailstore(MessageStore(repo))


async def fill(box: Mailstore, n: int, folder: str = "INBOX") -> list[int]:
    return [(await box.append(ALICE, folder, body(i), internal_date=T0))[1] for i in range(1, n + 1)]


def test_names() -> None:
    assert [canonical(n) for n in ("inbox", "InBoX/Sub", "Inboxes", "Archive")] == [
        "INBOX",
        "INBOX/Sub",
        "Inboxes",
        "Archive",
    ]
    assert check_name("Patients/Dupont Jean") == "Patients/Dupont Jean"
    for bad, text in [
        ("", "folder names are 1 to 255 octets"),
        ("a//b", "empty hierarchy level in 'a//b'"),
        ("x" * 256, "folder names are 1 to 255 octets"),
        ("Pat*", "folder names cannot contain wildcards or control characters: 'Pat*'"),
        ("Pat\r\n", "folder names cannot contain wildcards or control characters: 'Pat\\r\\n'"),
    ]:
        with pytest.raises(UsageError) as exc:
            check_name(bad)
        assert str(exc.value) == text


async def test_standard_folders_and_create_delete_rename(box: Mailstore) -> None:
    names = [f.name for f in await box.folders(ALICE)]
    assert names == ["Archive", "Drafts", "INBOX", "Junk", "Sent", "Trash"]
    created = await box.create_folder(ALICE, "Patients/")
    assert (created.name, created.uidnext, created.highestmodseq) == ("Patients", 1, 1)
    assert created.uidvalidity > max(f.uidvalidity for f in await box.folders(ALICE) if f.name != "Patients") - 1
    with pytest.raises(Conflict, match="folder Patients already exists"):
        await box.create_folder(ALICE, "Patients")
    await box.create_folder(ALICE, "Patients/Dupont")
    made = await box.create_folder(ALICE, "Dossiers/2026/Mars")  # RFC 3501 §6.3.3: superiors made too
    assert made.name == "Dossiers/2026/Mars"
    assert {"Dossiers", "Dossiers/2026"} <= {f.name for f in await box.folders(ALICE)}
    await box.delete_folder(ALICE, "Dossiers/2026/Mars")
    await box.delete_folder(ALICE, "Dossiers/2026")
    await box.delete_folder(ALICE, "Dossiers")
    await fill(box, 2, "Patients/Dupont")
    before = await box.folder(ALICE, "Patients/Dupont")
    await box.rename_folder(ALICE, "Patients", "Dossiers")
    assert [f.name for f in await box.folders(ALICE) if f.name.startswith("Dossiers")] == [
        "Dossiers",
        "Dossiers/Dupont",
    ]
    after = await box.folder(ALICE, "Dossiers/Dupont")
    assert after.uidvalidity > before.uidvalidity  # RFC 3501 §2.3.1.1: a new name, new UIDs for clients
    assert (await box.status(ALICE, "Dossiers/Dupont")).messages == 2
    with pytest.raises(UsageError, match="INBOX cannot be deleted"):
        await box.delete_folder(ALICE, "inbox")
    with pytest.raises(UsageError, match="cannot rename Dossiers into itself"):
        await box.rename_folder(ALICE, "Dossiers", "Dossiers/Sub")
    await box.delete_folder(ALICE, "Dossiers/Dupont")
    with pytest.raises(NotFound, match="no folder Dossiers/Dupont"):
        await box.status(ALICE, "Dossiers/Dupont")
    assert (await box.usage(ALICE))[0] == 0  # its messages went with it


async def test_renaming_inbox_moves_its_messages_and_keeps_it(box: Mailstore) -> None:
    await fill(box, 3)
    await box.rename_folder(ALICE, "INBOX", "Old")
    assert (await box.status(ALICE, "INBOX")).messages == 0
    old = await box.select(ALICE, "Old", read_write=False)
    assert [m.uid for m in old.messages] == [1, 2, 3]


async def test_recent_goes_to_one_read_write_session(box: Mailstore) -> None:
    await fill(box, 2)
    assert (await box.select(ALICE, "INBOX", read_write=False)).recent == {1, 2}  # shown, not taken
    first = await box.select(ALICE, "INBOX", read_write=True)
    assert first.recent == {1, 2}
    assert (await box.status(ALICE, "INBOX")).recent == 0
    await fill(box, 1)
    assert (await box.status(ALICE, "INBOX")).recent == 1
    second = await box.select(ALICE, "INBOX", read_write=True)
    assert (second.recent, [m.uid for m in second.messages]) == ({3}, [1, 2, 3])


async def test_claim_recent_stops_at_what_the_session_announces(box: Mailstore) -> None:
    await fill(box, 1)
    sel = await box.select(ALICE, "INBOX", read_write=True)
    await fill(box, 3)  # UIDs 2, 3, 4: the session's snapshot saw up to 3 before 4 arrived
    assert await box.claim_recent(ALICE, sel.folder.id, 3) == {2, 3}
    assert (await box.status(ALICE, "INBOX")).recent == 1  # 4 is still \\Recent for whoever announces it
    assert await box.claim_recent(ALICE, sel.folder.id, 4) == {4}
    assert await box.claim_recent(ALICE, sel.folder.id, 3) == frozenset()  # never moves back
    assert (await box.status(ALICE, "INBOX")).recent == 0


async def test_flags_modseqs_and_unchanged_since(box: Mailstore) -> None:
    await fill(box, 3)
    sel = await box.select(ALICE, "INBOX", read_write=True)
    fid, start = sel.folder.id, sel.folder.highestmodseq
    changed, refused = await box.store_flags(ALICE, fid, [1, 2], "add", ["\\Seen", "$Label1"])
    assert ([(m.uid, sorted(m.flags)) for m in changed], refused) == (
        [(1, ["$Label1", "\\Seen"]), (2, ["$Label1", "\\Seen"])],
        [],
    )
    assert [m.modseq for m in changed] == [start + 1, start + 2]
    again, _ = await box.store_flags(ALICE, fid, [1], "add", ["\\Seen"])
    assert again == []  # nothing changed: no modseq spent
    changed, refused = await box.store_flags(ALICE, fid, [1, 3], "replace", ["\\Flagged"], unchanged_since=start)
    assert ([m.uid for m in changed], refused) == ([3], [1])  # RFC 7162 §3.2: 1 changed after `start`
    folder, since = await box.changes(ALICE, fid, start + 2)
    assert (folder.highestmodseq, [m.uid for m in since]) == (start + 3, [3])
    status = await box.status(ALICE, "INBOX")
    assert (status.unseen, status.highestmodseq) == (1, start + 3)


async def test_expunge_removes_only_deleted_and_uid_expunge_only_listed(box: Mailstore) -> None:
    await fill(box, 4)
    fid = (await box.folder(ALICE, "INBOX")).id
    await box.store_flags(ALICE, fid, [1, 2, 4], "add", ["\\Deleted"])
    assert await box.expunge(ALICE, fid, [2, 3]) == [2]
    assert await box.uids(fid) == [1, 3, 4]
    assert await box.expunge(ALICE, fid) == [1, 4]
    assert await box.uids(fid) == [3]
    assert await box.expunge(ALICE, fid) == []


async def test_flags_and_expunge_over_more_uids_than_one_statement_binds(box: Mailstore) -> None:
    # STORE 1:* or UID EXPUNGE over a folder of 40,000 messages: PostgreSQL (asyncpg) binds at most
    # 32,767 parameters a statement, so one IN list of every UID was an internal error there.
    await fill(box, 3)
    fid = (await box.folder(ALICE, "INBOX")).id
    every = list(range(1, 40_001))
    changed, refused = await box.store_flags(ALICE, fid, every, "add", ["\\Deleted"])
    assert ([m.uid for m in changed], refused) == ([1, 2, 3], [])
    assert [m.modseq for m in changed] == sorted(m.modseq for m in changed)  # modseqs in UID order, as before
    assert await box.expunge(ALICE, fid, every) == [1, 2, 3]
    assert await box.uids(fid) == []


async def test_copy_reseals_and_move_keeps_the_row(box: Mailstore) -> None:
    await fill(box, 3)
    inbox = await box.folder(ALICE, "INBOX")
    archive = await box.folder(ALICE, "Archive")
    await box.store_flags(ALICE, inbox.id, [2], "add", ["\\Flagged"])
    validity, pairs = await box.copy(ALICE, inbox.id, [2, 3, 99], "Archive")
    assert (validity, pairs) == (archive.uidvalidity, [(2, 1), (3, 2)])
    copied = await box.select(ALICE, "Archive", read_write=False)
    assert [sorted(m.flags) for m in copied.messages] == [["\\Flagged"], []]
    assert [await box.body(ALICE, m.id) for m in copied.messages] == [body(2), body(3)]
    originals = {m.uid: m.id for m in (await box.select(ALICE, "INBOX", read_write=False)).messages}
    assert {m.id for m in copied.messages}.isdisjoint(originals.values())

    validity, pairs = await box.copy(ALICE, inbox.id, [1], "Trash", move=True)
    assert pairs == [(1, 1)]
    trash = await box.select(ALICE, "Trash", read_write=False)
    assert [m.id for m in trash.messages] == [originals[1]]  # the same row, the same sealed body
    assert await box.body(ALICE, originals[1]) == body(1)
    assert await box.uids(inbox.id) == [2, 3]
    with pytest.raises(NotFound, match="no folder Nowhere"):
        await box.copy(ALICE, inbox.id, [2], "Nowhere")


async def test_a_folder_of_another_mailbox_is_not_found(box: Mailstore) -> None:
    await fill(box, 1)
    alices = (await box.folder(ALICE, "INBOX")).id
    with pytest.raises(NotFound, match="the selected folder no longer exists"):
        await box.store_flags(BOB, alices, [1], "add", ["\\Seen"])
    with pytest.raises(NotFound, match="the selected folder no longer exists"):
        await box.expunge(BOB, alices)


async def test_quota_refuses_append_and_copy_past_it(box: Mailstore) -> None:
    size = len(body(1))
    await box.set_quota(ALICE, 2 * size)
    await fill(box, 2)
    assert await box.usage(ALICE) == (2 * size, 2 * size)
    with pytest.raises(QuotaExceeded, match=f"over its quota \\({3 * size} > {2 * size} octets\\)"):
        await box.append(ALICE, "INBOX", body(3))
    inbox = await box.folder(ALICE, "INBOX")
    with pytest.raises(QuotaExceeded):
        await box.copy(ALICE, inbox.id, [1], "Archive")
    await box.copy(ALICE, inbox.id, [1], "Archive", move=True)  # a move adds nothing
    assert (await box.status(ALICE, "INBOX")).messages == 1
    unlimited = Mailstore(box.store)
    await unlimited.set_quota(ALICE, None)
    assert (await unlimited.usage(ALICE))[1] is None
    assert (await Mailstore(box.store, default_quota=size).usage(ALICE))[1] == size


def _sqlite_only(db: Database) -> None:
    if not db.is_sqlite:
        pytest.skip("SQLite's writer lock and group commit")


async def test_concurrent_appends_share_a_transaction_and_each_refusal_is_its_own(
    box: Mailstore, store_db: Database
) -> None:
    """Group commit (MessageStore._flush, SQLite): APPENDs made while one commits go into one transaction,
    each under its own SAVEPOINT. The one over quota is refused alone: the others are stored, with UIDs that
    follow each other (its UID allocation was rolled back with it) and the usage counts them only."""
    small, big = body(1), body(2) + b"x" * 5000
    await box.set_quota(ALICE, 8 * len(small) + 100)
    commits: list[int] = []
    wrap_commits(store_db, lambda fn: commits.append(1) or fn)
    sent = [small] * 4 + [big] + [small] * 4
    got = await asyncio.gather(*(box.append(ALICE, "INBOX", m) for m in sent), return_exceptions=True)
    assert isinstance(got[4], QuotaExceeded)
    stored = [g for i, g in enumerate(got) if i != 4]
    uids = [uid for _, uid in stored]  # type: ignore[misc]
    assert (uids if store_db.is_sqlite else sorted(uids)) == list(range(1, 9))  # PostgreSQL: row-lock order
    assert await box.usage(ALICE) == (8 * len(small), 8 * len(small) + 100)
    assert (await box.status(ALICE, "INBOX")).uidnext == 9
    if store_db.is_sqlite:
        assert len(commits) == 1  # all nine were waiting when the transaction began


async def test_a_group_stops_at_its_size_and_the_rest_follow_in_order(
    box: Mailstore, store_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    _sqlite_only(store_db)
    monkeypatch.setattr(messages, "GROUP_BYTES", 2 * len(body(1)) + 10)  # two of them a group
    commits: list[int] = []
    wrap_commits(store_db, lambda fn: commits.append(1) or fn)
    got = await asyncio.gather(*(box.append(ALICE, "INBOX", body(i)) for i in range(1, 10)))
    assert [uid for _, uid in got] == list(range(1, 10))
    assert len(commits) == 5  # 2 + 2 + 2 + 2 + 1


async def test_a_refused_folder_in_a_group_leaves_the_others(box: Mailstore, store_db: Database) -> None:
    got = await asyncio.gather(
        box.append(ALICE, "INBOX", body(1)),
        box.append(ALICE, "Nowhere", body(2)),
        box.append(ALICE, "INBOX", body(3)),
        box.append(BOB, "INBOX", body(4)),
        return_exceptions=True,
    )
    assert isinstance(got[1], NotFound)
    alice = [g[1] for g in (got[0], got[2])]  # type: ignore[index]
    # SQLite: one group, UIDs in arrival order; PostgreSQL: each APPEND its own transaction, in row-lock order.
    assert alice == [1, 2] if store_db.is_sqlite else sorted(alice) == [1, 2]
    assert got[3][1] == 1  # type: ignore[index]
    assert (await box.status(ALICE, "INBOX")).messages == 2


async def test_an_append_cancelled_before_its_turn_stores_nothing(box: Mailstore, store_db: Database) -> None:
    _sqlite_only(store_db)  # PostgreSQL: each APPEND its own transaction, committed in row-lock order
    first = asyncio.create_task(box.append(ALICE, "INBOX", body(1)))
    second = asyncio.create_task(box.append(ALICE, "INBOX", body(2)))
    third = asyncio.create_task(box.append(ALICE, "INBOX", body(3)))
    await asyncio.sleep(0)  # all three queued; the group's transaction has not started
    second.cancel()
    assert (await first)[1] == 1
    assert (await third)[1] == 2
    with pytest.raises(asyncio.CancelledError):
        await second
    assert (await box.status(ALICE, "INBOX")).messages == 2


def _disk_error() -> None:
    raise sqlite3.OperationalError("disk I/O error")


async def test_a_failed_commit_fails_every_append_of_its_group(box: Mailstore, store_db: Database) -> None:
    if not store_db.is_sqlite:
        pytest.skip("the commit thread is SQLite's")
    undo = wrap_commits(store_db, lambda fn: _disk_error)
    got = await asyncio.gather(*(box.append(ALICE, "INBOX", body(i)) for i in range(3)), return_exceptions=True)
    assert [type(g).__name__ for g in got] == ["OperationalError"] * 3
    undo()
    assert (await box.status(ALICE, "INBOX")).messages == 0
    assert [uid for _, uid in [await box.append(ALICE, "INBOX", body(9))]] == [1]


async def test_an_append_in_a_task_holding_the_writer_lock_is_refused_at_once(
    box: Mailstore, store_db: Database
) -> None:
    """Review of b839fb5: its delivery would wait for the lock the task holds. A group's flusher already
    waiting for that lock (another task's APPEND) must not take the delivery in either."""
    _sqlite_only(store_db)
    go = asyncio.Event()

    async def later() -> tuple[int, int]:
        await go.wait()
        return await box.append(BOB, "INBOX", body(1))

    other = asyncio.create_task(later())
    async with store_db.raw_writing():
        go.set()
        await asyncio.sleep(0.01)  # the other APPEND's flusher waits for the lock held here
        with pytest.raises(RuntimeError, match="a write transaction is already open in this task"):
            await asyncio.wait_for(box.append(ALICE, "INBOX", body(2)), 2)
    assert (await other)[1] == 1


async def test_a_flusher_started_by_a_refused_caller_serves_the_others(box: Mailstore, store_db: Database) -> None:
    """The flusher runs in a context of its own, not in the one of the caller that started it."""
    _sqlite_only(store_db)

    async def inside() -> tuple[int, int]:
        async with store_db.raw_writing():
            return await box.append(ALICE, "INBOX", body(1))

    got = await asyncio.gather(inside(), box.append(BOB, "INBOX", body(2)), return_exceptions=True)
    assert isinstance(got[0], RuntimeError)
    assert got[1] == (got[1][0], 1)  # type: ignore[index]


async def test_an_append_cancelled_while_its_group_waits_for_the_lock_stores_nothing(
    box: Mailstore, store_db: Database
) -> None:
    """The group is chosen once the write lock is held (review of b839fb5): a caller cancelled while the
    lock was someone else's is not in it. PostgreSQL: the delivery waits for the folder's row."""
    release, locked = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        if store_db.is_sqlite:
            async with store_db.raw_writing():
                locked.set()
                await release.wait()
        else:
            async with store_db.writing() as conn:
                await conn.execute(
                    sql("UPDATE folders SET highestmodseq = highestmodseq WHERE address = :a AND name = 'INBOX'"),
                    {"a": ALICE},
                )
                locked.set()
                await release.wait()

    held = asyncio.create_task(holder())
    await locked.wait()
    cancelled = asyncio.create_task(box.append(ALICE, "INBOX", body(1)))
    await asyncio.sleep(0.2)  # its group (SQLite) or its own transaction (PostgreSQL) waits
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    release.set()
    await held
    assert (await box.append(ALICE, "INBOX", body(2)))[1] == 1
    assert (await box.status(ALICE, "INBOX")).messages == 1


async def test_a_flusher_cancelled_in_its_commit_tells_every_caller(box: Mailstore, store_db: Database) -> None:
    """The node stopping cancels the flusher: the callers of its group and those queued behind it are told
    DeliveryInterrupted (an error the session's boundary answers), never left waiting nor handed the
    flusher's CancelledError."""
    _sqlite_only(store_db)
    undo = slow_commits(store_db)
    first = asyncio.create_task(box.append(ALICE, "INBOX", body(1)))
    await asyncio.sleep(0.05)  # its group is in its COMMIT
    queued = asyncio.create_task(box.append(ALICE, "INBOX", body(2)))
    await asyncio.sleep(0)
    group = box.store._group
    assert group is not None
    group.flusher.cancel()
    done, _ = await asyncio.wait([first, queued], timeout=2)
    assert done == {first, queued}
    assert [type(t.exception()).__name__ for t in (first, queued)] == ["DeliveryInterrupted"] * 2
    undo()
    assert (await box.append(ALICE, "INBOX", body(3)))[1] == 2  # the first was committed; a new group serves


async def test_postgresql_appends_are_not_grouped_and_cannot_deadlock(box: Mailstore, store_db: Database) -> None:
    """Review of b839fb5: a group would lock several mailboxes' folder rows in arrival order, and a
    delivery to several recipients (SMTP, in sorted order) locking them the other way round deadlocked."""
    if store_db.is_sqlite:
        pytest.skip("PostgreSQL")
    update = sql("UPDATE folders SET highestmodseq = highestmodseq WHERE address = :a AND name = 'INBOX'")
    step = asyncio.Event()

    async def other_order() -> None:
        async with store_db.writing() as conn:
            await conn.execute(update, {"a": BOB})
            step.set()
            await asyncio.sleep(0.3)
            await conn.execute(update, {"a": ALICE})

    other = asyncio.create_task(other_order())
    await step.wait()
    got = await asyncio.gather(box.append(ALICE, "INBOX", body(1)), box.append(BOB, "INBOX", body(2)), other)
    assert [got[0][1], got[1][1]] == [1, 1]  # type: ignore[index]


async def test_usage_is_kept_by_every_change_of_the_messages(box: Mailstore, store_db: Database) -> None:
    """accounts.used_bytes (triggers, migration 0009) equals the sum of the sizes after each kind of change."""
    from sqlalchemy import text

    async def summed(address: str) -> int:
        async with store_db.read() as s:
            got = await s.execute(
                text("SELECT coalesce(sum(size), 0) FROM messages WHERE address = :a"), {"a": address}
            )
            return int(got.scalar_one())

    async def check(expected: int) -> None:
        assert (await box.usage(ALICE))[0] == expected == await summed(ALICE)
        assert (await box.usage(BOB))[0] == 0 == await summed(BOB)  # another mailbox's messages never count

    size = len(body(1))
    assert (await box.usage(ALICE))[0] == 0
    await fill(box, 3)  # APPEND
    await check(3 * size)
    await box.store.deliver(ALICE, body(4))  # local delivery
    await check(3 * size + len(body(4)))
    inbox = await box.folder(ALICE, "INBOX")
    await box.copy(ALICE, inbox.id, [1, 2], "Archive")
    await check(5 * size + len(body(4)))
    await box.copy(ALICE, inbox.id, [3], "Archive", move=True)  # a move neither adds nor removes
    await check(5 * size + len(body(4)))
    await box.store_flags(ALICE, inbox.id, [1], "add", ["\\Deleted"])
    assert await box.expunge(ALICE, inbox.id) == [1]
    await check(4 * size + len(body(4)))
    await box.delete_folder(ALICE, "Archive")  # its three messages go with it
    await check(size + len(body(4)))


async def test_a_keyword_named_twice_in_two_cases_is_stored_once(box: Mailstore) -> None:
    await box.append(ALICE, "INBOX", body(1), flags=["$label1", "\\Seen", "$Label1", "$LABEL1"])
    sel = await box.select(ALICE, "INBOX", read_write=False)
    assert [m.flags for m in sel.messages] == [frozenset({"$LABEL1", "\\Seen"})]  # the first in sort order
