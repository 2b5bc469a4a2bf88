"""CLOSE against the real server (RFC 3501 §6.4.2).

Read-write: the \\Deleted messages are expunged silently (no EXPUNGE responses), then the session is in the
authenticated state; read-only (EXAMINE): nothing is expunged. Only in the selected state. A folder deleted
by another session meanwhile: CLOSE still succeeds (nothing is left to expunge).
"""

from __future__ import annotations

from tests.imap.conftest import Box, Raw, message


def test_close_expunges_deleted_and_unselect_does_not(box: Box) -> None:
    box.put(message(1), flags=["\\Deleted"])
    box.put(message(2), flags=["\\Deleted"])
    raw = box.raw()
    raw.command("a1", "EXAMINE INBOX")
    assert raw.command("a2", "CLOSE") == [b"a2 OK CLOSE completed"]  # read-only: nothing expunged
    raw.command("a3", "SELECT INBOX")
    assert raw.command("a4", "UNSELECT") == [b"a4 OK UNSELECT completed"]
    assert raw.command("a5", "STATUS INBOX (MESSAGES)")[0] == b"* STATUS INBOX (MESSAGES 2)"
    raw.command("a6", "SELECT INBOX")
    assert raw.command("a7", "CLOSE") == [b"a7 OK CLOSE completed"]  # silently: no EXPUNGE responses
    assert raw.command("a8", "STATUS INBOX (MESSAGES)")[0] == b"* STATUS INBOX (MESSAGES 0)"
    raw.close()


def test_only_deleted_messages_go_and_the_state_is_authenticated(box: Box) -> None:
    box.put(message(1))
    box.put(message(2), flags=["\\Deleted"])
    box.put(message(3))
    raw = box.raw()
    raw.command("a1", "SELECT INBOX")
    assert raw.command("a2", "CLOSE") == [b"a2 OK CLOSE completed"]
    assert raw.command("a3", "FETCH 1 (UID)") == [b"a3 BAD FETCH is not allowed in the authenticated state"]
    assert raw.command("a4", "CLOSE") == [b"a4 BAD CLOSE is not allowed in the authenticated state"]
    assert raw.command("a5", "STATUS INBOX (MESSAGES UIDNEXT)") == [
        b"* STATUS INBOX (MESSAGES 2 UIDNEXT 4)",
        b"a5 OK STATUS completed",
    ]
    raw.close()


def test_refusals(box: Box) -> None:
    raw = box.raw()
    assert raw.command("a1", "CLOSE") == [b"a1 BAD CLOSE is not allowed in the authenticated state"]
    raw.command("a2", "SELECT INBOX")
    assert raw.command("a3", "CLOSE INBOX") == [b"a3 BAD unexpected extra arguments"]
    assert raw.command("a4", "CLOSE") == [b"a4 OK CLOSE completed"]
    raw.close()
    anonymous = Raw(box.gw)
    assert anonymous.command("n1", "CLOSE") == [b"n1 BAD CLOSE is not allowed in the not authenticated state"]
    anonymous.close()


def test_another_sessions_messages_and_a_deleted_folder(box: Box) -> None:
    box.put(message(1), folder="Junk")
    first, second = box.raw(), box.raw()
    first.command("a1", "SELECT Junk")
    second.command("b1", "SELECT Junk")
    second.command("b2", "STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert first.command("a2", "CLOSE") == [b"a2 OK CLOSE completed"]  # another session's \Deleted: gone too
    assert second.command("b3", "NOOP") == [b"* 1 EXPUNGE", b"b3 OK NOOP completed"]
    first.command("a3", "SELECT Junk")
    second.command("b4", "DELETE Junk")
    assert first.command("a4", "CLOSE") == [b"a4 OK CLOSE completed"]
    assert first.command("a5", "NOOP") == [b"a5 OK NOOP completed"]
    first.close()
    second.close()
