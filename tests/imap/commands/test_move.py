"""MOVE and UID MOVE against the real server: RFC 6851 (§3.3 the untagged COPYUID, §4.3 its order before
the EXPUNGEs), COPYUID (RFC 4315 §3), TRYCREATE (RFC 3501 §7.1), and the audit record of every move.

Exact responses for the success paths, every refusal (missing folder, read-only, no message matched, bad
sequence sets, the wrong state), a move to the selected folder itself, and a second session on the source.
"""

from __future__ import annotations

from tests.imap.conftest import Box, message, uidvalidity


def test_move_expunges_from_the_source(box: Box) -> None:
    for n in (1, 2, 3):
        box.put(message(n))
    raw = box.selected()
    trash = uidvalidity(raw, "Trash")
    assert raw.command("a1", "MOVE 1,3 Trash") == [
        f"* OK [COPYUID {trash} 1,3 1:2] Moved".encode(),
        b"* 3 EXPUNGE",
        b"* 1 EXPUNGE",
        b"a1 OK MOVE completed",
    ]
    assert raw.command("a2", "UID MOVE 2 Archive")[-2:] == [b"* 1 EXPUNGE", b"a2 OK UID MOVE completed"]
    assert raw.command("a3", "STATUS Trash (MESSAGES)")[0] == b"* STATUS Trash (MESSAGES 2)"
    events = box.gw.node.cli("audit", "search", "--event", "imap.move", "--principal", box.address, "--json")
    assert [(e["response"]["to"], e["response"]["uids"]) for e in events.json()] == [  # type: ignore[index]
        ("Trash", [1, 3]),
        ("Archive", [2]),
    ]
    raw.close()


def test_uid_move_answers_the_untagged_copyuid_first(box: Box) -> None:
    for n in (1, 2):
        box.put(message(n))
    raw = box.selected()
    archive = uidvalidity(raw, "Archive")
    assert raw.command("b1", "UID MOVE 2 Archive") == [
        f"* OK [COPYUID {archive} 2 1] Moved".encode(),
        b"* 2 EXPUNGE",
        b"b1 OK UID MOVE completed",
    ]
    raw.close()


def test_move_to_the_selected_folder_renumbers_the_message(box: Box) -> None:
    box.put(message(1))
    raw = box.selected()
    inbox = uidvalidity(raw, "INBOX")
    assert raw.command("c1", "MOVE 1 INBOX") == [
        f"* OK [COPYUID {inbox} 1 2] Moved".encode(),
        b"* 1 EXPUNGE",
        b"* 1 EXISTS",
        b"* 1 RECENT",
        b"c1 OK MOVE completed",
    ]
    assert raw.command("c2", "FETCH 1 (UID)") == [b"* 1 FETCH (UID 2)", b"c2 OK FETCH completed"]
    raw.close()


def test_move_refusals(box: Box) -> None:
    box.put(message(1))
    raw = box.raw()
    assert raw.command("d1", "MOVE 1 Archive") == [b"d1 BAD MOVE is not allowed in the authenticated state"]
    raw.command("d2", "SELECT INBOX")
    assert raw.command("d3", "MOVE 1 Nulle") == [b"d3 NO [TRYCREATE] no folder Nulle"]
    assert raw.command("d4", "UID MOVE 99 Archive") == [b"d4 OK UID MOVE completed"]  # no match: nothing said
    assert raw.command("d5", "MOVE 99 Archive") == [
        b"d5 BAD invalid message sequence number: the folder has 1 messages"
    ]
    assert raw.command("d6", "MOVE 0 Archive") == [b"d6 BAD invalid sequence set 0"]
    assert raw.command("d7", "MOVE 1") == [b"d7 BAD missing mailbox name"]
    raw.command("d8", "EXAMINE INBOX")
    assert raw.command("d9", "MOVE 1 Archive") == [b"d9 NO [READ-ONLY] the folder is read-only (EXAMINE)"]
    assert raw.command("d10", "STATUS INBOX (MESSAGES)")[0] == b"* STATUS INBOX (MESSAGES 1)"
    raw.close()
    events = box.gw.node.cli("audit", "search", "--event", "imap.move", "--principal", box.address, "--json")
    assert events.json() == []


def test_another_session_on_the_source_and_the_destination(box: Box) -> None:
    for n in (1, 2, 3):
        box.put(message(n))
    mover, source, dest = box.selected(), box.selected(), box.selected("Trash")
    assert mover.command("e1", "MOVE 2 Trash")[-1] == b"e1 OK MOVE completed"
    assert source.command("e2", "NOOP") == [b"* 2 EXPUNGE", b"e2 OK NOOP completed"]
    assert source.command("e3", "FETCH 2 (UID)") == [b"* 2 FETCH (UID 3)", b"e3 OK FETCH completed"]
    assert dest.command("e4", "NOOP") == [b"* 1 EXISTS", b"* 1 RECENT", b"e4 OK NOOP completed"]
    for raw in (mover, source, dest):
        raw.close()
