"""COPY and UID COPY against the real server: RFC 3501 §6.4.7 (all or nothing) and §6.4.8, COPYUID
(RFC 4315 §3), TRYCREATE (RFC 3501 §7.1), OVERQUOTA (RFC 9208 §4.3, RFC 5530).

Exact responses for the success paths (flags kept, COPYUID pairs, to the selected folder itself, from a
folder opened with EXAMINE), every refusal (missing folder, over quota, no message matched, bad sequence
sets, the wrong state), a second session on the destination, a copy larger than one of the store's
batches, and a copy that fails half-way because another session filled the quota meanwhile: the
destination is left as it was.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
from collections.abc import Iterator

from gateway.node import Node
from gateway.store.mailstore import COPY_BATCH_BYTES, Mailstore
from gateway.store.messages import MessageStore
from tests.imap.conftest import Box, Raw, message, run, uidvalidity


def append(raw: Raw, tag: str, body: bytes, folder: str = "INBOX") -> list[bytes]:
    raw.send(f"{tag} APPEND {folder} {{{len(body)}+}}\r\n".encode() + body + b"\r\n")
    return raw.until(tag.encode())


def staged_rows(box: Box) -> int:
    """Copies a COPY has staged and not yet shown (no folder), read from the node's database file."""
    cfg = box.gw.node.cfg()
    path = cfg.db_url(cfg.store.url).removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT count(*) FROM messages WHERE folder_id IS NULL").fetchone()[0])


@contextlib.contextmanager
def write_locked(box: Box) -> Iterator[None]:
    """Hold the node's database write lock (as another process would) for the block."""
    cfg = box.gw.node.cfg()
    path = cfg.db_url(cfg.store.url).removeprefix("sqlite+aiosqlite:///")
    db = sqlite3.connect(path, timeout=5, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        yield
        db.execute("ROLLBACK")
    finally:
        db.close()


def set_quota(box: Box, octets: int | None) -> None:
    async def job(n: Node) -> None:
        await Mailstore(MessageStore(n.mailboxes)).set_quota(box.address, octets)

    run(box.gw.node, job)


def test_copy_answers_copyuid_and_keeps_flags(box: Box) -> None:
    for n in (1, 2, 3):
        box.put(message(n), flags=["\\Flagged"] if n == 2 else [])
    raw = box.selected()
    archive = uidvalidity(raw, "Archive")
    assert raw.command("a1", "COPY 2:3 Archive") == [f"a1 OK [COPYUID {archive} 2:3 1:2] COPY completed".encode()]
    assert raw.command("a2", "UID COPY 1,3 Archive") == [
        f"a2 OK [COPYUID {archive} 1,3 3:4] UID COPY completed".encode()
    ]
    assert raw.command("a3", "COPY 1 Nulle") == [b"a3 NO [TRYCREATE] no folder Nulle"]
    raw.command("a4", "EXAMINE Archive")
    assert raw.command("a5", "FETCH 1:* (UID FLAGS)") == [
        b"* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent))",  # EXAMINE shows \\Recent (RFC 3501 §6.3.2)
        b"* 2 FETCH (UID 2 FLAGS (\\Recent))",
        b"* 3 FETCH (UID 3 FLAGS (\\Recent))",
        b"* 4 FETCH (UID 4 FLAGS (\\Recent))",
        b"a5 OK FETCH completed",
    ]
    raw.close()


def test_copy_to_the_selected_folder_and_from_an_examined_one(box: Box) -> None:
    box.put(message(1))
    raw = box.selected()
    inbox = uidvalidity(raw, "INBOX")
    assert raw.command("b1", "COPY 1 INBOX") == [  # the copy is a new message of this folder
        b"* 2 EXISTS",
        b"* 2 RECENT",
        f"b1 OK [COPYUID {inbox} 1 2] COPY completed".encode(),
    ]
    raw.command("b2", "EXAMINE INBOX")
    archive = uidvalidity(raw, "Archive")
    assert raw.command("b3", "COPY 1:2 Archive") == [  # COPY reads only: allowed read-only
        f"b3 OK [COPYUID {archive} 1:2 1:2] COPY completed".encode()
    ]
    raw.close()


def test_copy_refusals(box: Box) -> None:
    box.put(message(1))
    raw = box.raw()
    assert raw.command("c1", "COPY 1 Archive") == [b"c1 BAD COPY is not allowed in the authenticated state"]
    raw.command("c2", "SELECT INBOX")
    assert raw.command("c3", "UID COPY 99 Archive") == [b"c3 OK UID COPY completed"]  # no match: no COPYUID
    assert raw.command("c4", "COPY 99 Archive") == [
        b"c4 BAD invalid message sequence number: the folder has 1 messages"
    ]
    assert raw.command("c5", "COPY 0 Archive") == [b"c5 BAD invalid sequence set 0"]
    assert raw.command("c6", "COPY") == [b"c6 BAD missing sequence set"]
    assert raw.command("c7", "COPY 1") == [b"c7 BAD missing mailbox name"]
    assert raw.command("c8", "STATUS Archive (MESSAGES UIDNEXT)") == [
        b"* STATUS Archive (MESSAGES 0 UIDNEXT 1)",
        b"c8 OK STATUS completed",
    ]
    raw.close()
    unauthenticated = Raw(box.gw)
    assert unauthenticated.command("c9", "COPY 1 Archive") == [
        b"c9 BAD COPY is not allowed in the not authenticated state"
    ]
    unauthenticated.close()


def test_copy_past_the_quota_is_refused(box: Box) -> None:
    body = message(1)
    box.put(body)
    set_quota(box, len(body) + 10)
    raw = box.selected()
    assert raw.command("d1", "COPY 1 Archive") == [b"d1 NO [OVERQUOTA] the mailbox is over its quota"]
    assert raw.command("d2", "STATUS Archive (MESSAGES)")[0] == b"* STATUS Archive (MESSAGES 0)"
    raw.close()


def test_another_session_on_the_destination_sees_the_copies(box: Box) -> None:
    for n in (1, 2):
        box.put(message(n))
    watcher, copier = box.selected("Archive"), box.selected()
    assert copier.command("e1", "COPY 1:2 Archive")[-1].endswith(b"COPY completed")
    assert watcher.command("e2", "NOOP") == [b"* 2 EXISTS", b"* 2 RECENT", b"e2 OK NOOP completed"]
    assert watcher.command("e3", "FETCH 1:2 (UID RFC822.SIZE)") == [
        b"* 1 FETCH (UID 1 RFC822.SIZE %d)" % len(message(1)),
        b"* 2 FETCH (UID 2 RFC822.SIZE %d)" % len(message(2)),
        b"e3 OK FETCH completed",
    ]
    watcher.close()
    copier.close()


def big(n: int, octets: int) -> bytes:
    head = message(n)
    return head + (b"x" * 998 + b"\r\n") * ((octets - len(head)) // 1000)


def test_a_copy_larger_than_one_batch(box: Box) -> None:
    bodies = [big(n, COPY_BATCH_BYTES // 2 - 100_000) for n in (1, 2, 3)]  # batches of two, then one
    raw = box.selected()
    for n, body in enumerate(bodies, 1):
        assert append(raw, f"f{n}", body)[-1].endswith(b"APPEND completed")
    archive = uidvalidity(raw, "Archive")
    assert raw.command("f4", "COPY 1:3 Archive") == [f"f4 OK [COPYUID {archive} 1:3 1:3] COPY completed".encode()]
    raw.command("f5", "EXAMINE Archive")
    for n, body in enumerate(bodies, 1):
        reply = raw.command(f"g{n}", f"FETCH {n} BODY.PEEK[]")
        assert reply[0] == b"* %d FETCH (BODY[] {%d}" % (n, len(body))
    assert staged_rows(box) == 0
    raw.close()


def test_a_copy_failing_half_way_leaves_the_destination_as_it_was(box: Box) -> None:
    """Another session copies a large message while this one's copy is between two batches: the quota, which
    counts what a copy has staged, is reached, and the COPY is refused with nothing of it left behind.

    The test holds the database's write lock while both copies start: each reads and reseals its first
    batch, then waits for the node's writer, in arrival order, so the other copy is staged right after this
    one's first batch however slow the machine (unlocked, a loaded CI once staged all four first)."""
    size = COPY_BATCH_BYTES // 2 - 100_000  # two messages a batch: the copy of eight takes four
    copier = box.selected()
    for n in range(1, 9):
        assert append(copier, f"h{n}", big(n, size))[-1].endswith(b"APPEND completed")
    other = box.selected()
    reply = copier.command("h10", "STATUS INBOX (SIZE)")  # RFC 8438 STATUS=SIZE, if offered
    used = int(m[1]) if (m := re.match(rb"\* STATUS INBOX \(SIZE (\d+)\)", reply[0])) else 8 * size
    set_quota(box, 2 * used + size // 2)  # the copy alone fits
    before = copier.command("h11", "STATUS Archive (MESSAGES UIDNEXT HIGHESTMODSEQ)")
    with write_locked(box):
        copier.send(b"h12 COPY 1:8 Archive\r\n")
        time.sleep(0.3)
        other.send(b"i1 COPY 1 Drafts\r\n")
        time.sleep(1)  # both read and resealed; now waiting for the writer
        assert staged_rows(box) == 0
    assert other.until(b"i1")[-1].endswith(b"COPY completed")  # now over quota, together
    assert copier.until(b"h12") == [b"h12 NO [OVERQUOTA] the mailbox is over its quota"]
    assert copier.command("h13", "STATUS Archive (MESSAGES UIDNEXT HIGHESTMODSEQ)") == [
        before[0],
        b"h13 OK STATUS completed",
    ]
    assert staged_rows(box) == 0
    copier.close()
    other.close()
