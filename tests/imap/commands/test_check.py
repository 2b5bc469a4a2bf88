"""CHECK against the real server (RFC 3501 §6.4.1).

Nothing to checkpoint (every change is committed when made): CHECK is a NOOP in the selected state, and like
it reports what other sessions changed (§6.4.1 "may" send untagged responses). Only in the selected state.
"""

from __future__ import annotations

from tests.imap.conftest import Box, Raw, message


def test_check(box: Box) -> None:
    raw = box.raw()
    raw.command("a1", "SELECT INBOX")
    assert raw.command("a2", "CHECK") == [b"a2 OK CHECK completed"]
    assert raw.command("a3", "check") == [b"a3 OK CHECK completed"]
    raw.close()


def test_refusals(box: Box) -> None:
    raw = box.raw()
    assert raw.command("a1", "CHECK") == [b"a1 BAD CHECK is not allowed in the authenticated state"]
    raw.command("a2", "SELECT INBOX")
    assert raw.command("a3", "CHECK INBOX") == [b"a3 BAD unexpected extra arguments"]
    raw.close()
    anonymous = Raw(box.gw)
    assert anonymous.command("n1", "CHECK") == [b"n1 BAD CHECK is not allowed in the not authenticated state"]
    anonymous.close()


def test_check_reports_other_sessions_changes(box: Box) -> None:
    box.put(message(1))
    first, second = box.raw(), box.raw()
    first.command("a1", "SELECT INBOX")
    second.command("b1", "SELECT INBOX")
    box.put(message(2))
    assert second.command("b2", "STORE 1 +FLAGS.SILENT (\\Flagged)") == [
        b"* 2 EXISTS",
        b"* 1 RECENT",
        b"b2 OK STORE completed",
    ]
    assert first.command("a2", "CHECK") == [
        b"* 2 EXISTS",
        b"* 1 RECENT",
        b"* 1 FETCH (FLAGS (\\Flagged \\Recent))",
        b"a2 OK CHECK completed",
    ]
    assert first.command("a3", "CHECK") == [b"a3 OK CHECK completed"]
    first.close()
    second.close()
