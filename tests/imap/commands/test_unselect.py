"""UNSELECT against the real server (RFC 3691 §2).

Like CLOSE, but never expunges; advertised as UNSELECT once authenticated. Only in the selected state. A
folder deleted by another session meanwhile: UNSELECT still succeeds.
"""

from __future__ import annotations

from tests.imap.conftest import Box, Raw, message


def test_unselect_keeps_deleted_messages(box: Box) -> None:
    box.put(message(1), flags=["\\Deleted"])
    raw = box.raw()
    assert b"UNSELECT" in raw.command("a0", "CAPABILITY")[0].split()
    raw.command("a1", "SELECT INBOX")
    assert raw.command("a2", "UNSELECT") == [b"a2 OK UNSELECT completed"]
    assert raw.command("a3", "FETCH 1 (UID)") == [b"a3 BAD FETCH is not allowed in the authenticated state"]
    assert raw.command("a4", "STATUS INBOX (MESSAGES)") == [b"* STATUS INBOX (MESSAGES 1)", b"a4 OK STATUS completed"]
    raw.command("a5", "EXAMINE INBOX")
    assert raw.command("a6", "unselect") == [b"a6 OK UNSELECT completed"]
    raw.close()


def test_refusals(box: Box) -> None:
    raw = box.raw()
    assert raw.command("a1", "UNSELECT") == [b"a1 BAD UNSELECT is not allowed in the authenticated state"]
    raw.command("a2", "SELECT INBOX")
    assert raw.command("a3", "UNSELECT INBOX") == [b"a3 BAD unexpected extra arguments"]
    raw.close()
    anonymous = Raw(box.gw)
    assert anonymous.command("n1", "UNSELECT") == [b"n1 BAD UNSELECT is not allowed in the not authenticated state"]
    anonymous.close()


def test_a_folder_deleted_by_another_session(box: Box) -> None:
    first, second = box.raw(), box.raw()
    first.command("a1", "SELECT Junk")
    second.command("b1", "DELETE Junk")
    assert first.command("a2", "UNSELECT") == [b"a2 OK UNSELECT completed"]
    assert first.command("a3", "SELECT INBOX")[-1] == b"a3 OK [READ-WRITE] SELECT completed"
    first.close()
    second.close()
