"""NOOP (RFC 3501 §6.1.2): allowed in every state, no arguments; in the selected state it is how a client
polls, so its reply carries what changed in the folder since the client last heard (§7.3.1 EXISTS, §7.3.2
RECENT, §7.4.1 EXPUNGE, §7.4.2 FETCH for flags changed by another session) before the tagged OK.
"""

from __future__ import annotations

from tests.imap.conftest import Box, Raw, message
from tests.smtp.conftest import Gateway


def test_noop_in_every_state(imap_gw: Gateway, box: Box) -> None:
    raw = Raw(imap_gw, tls=False)
    assert raw.command("a1", "NOOP") == [b"a1 OK NOOP completed"]
    raw.close()
    raw = Raw(imap_gw)
    assert raw.command("a2", "NOOP") == [b"a2 OK NOOP completed"]
    raw.close()
    raw = box.raw()
    assert raw.command("a3", "NOOP") == [b"a3 OK NOOP completed"]
    assert raw.command("s", "SELECT INBOX")[-1] == b"s OK [READ-WRITE] SELECT completed"
    assert raw.command("a4", "NOOP") == [b"a4 OK NOOP completed"]  # nothing changed: nothing to say
    assert raw.command("a5", "noop") == [b"a5 OK NOOP completed"]
    raw.close()


def test_noop_takes_no_arguments(imap_gw: Gateway) -> None:
    raw = Raw(imap_gw)
    assert raw.command("a1", "NOOP extra") == [b"a1 BAD unexpected extra arguments"]
    assert raw.command("a2", "NOOP ") == [b"a2 BAD unexpected extra arguments"]
    assert raw.command("a3", "NOOP (") == [b"a3 BAD unexpected extra arguments"]
    assert raw.command("a4", "NOOP") == [b"a4 OK NOOP completed"]
    raw.close()


def test_noop_reports_a_new_message(box: Box) -> None:
    raw = box.raw()
    assert raw.command("s", "SELECT INBOX")[-1] == b"s OK [READ-WRITE] SELECT completed"
    box.put(message(1))  # delivered from outside the session
    assert raw.command("a1", "NOOP") == [b"* 1 EXISTS", b"* 1 RECENT", b"a1 OK NOOP completed"]
    assert raw.command("a2", "NOOP") == [b"a2 OK NOOP completed"]  # told once
    box.put(message(2))
    box.put(message(3))
    assert raw.command("a3", "NOOP") == [b"* 3 EXISTS", b"* 3 RECENT", b"a3 OK NOOP completed"]
    raw.close()


def test_noop_reports_flags_and_expunges_of_another_session(box: Box) -> None:
    box.put(message(1))
    box.put(message(2))
    watcher, other = box.raw(), box.raw()
    assert watcher.command("s", "EXAMINE INBOX")[-1] == b"s OK [READ-ONLY] EXAMINE completed"
    assert other.command("s", "SELECT INBOX")[-1] == b"s OK [READ-WRITE] SELECT completed"
    assert other.command("f", "STORE 2 +FLAGS.SILENT (\\Flagged)") == [b"f OK STORE completed"]
    assert watcher.command("a1", "NOOP") == [
        b"* 2 FETCH (FLAGS (\\Flagged \\Recent))",  # \Recent: the watcher examined them before anyone selected
        b"a1 OK NOOP completed",
    ]
    assert other.command("d", "STORE 1 +FLAGS.SILENT (\\Deleted)") == [b"d OK STORE completed"]
    assert other.command("e", "EXPUNGE") == [b"* 1 EXPUNGE", b"e OK EXPUNGE completed"]
    # gone before the watcher heard of its \Deleted: only the EXPUNGE
    assert watcher.command("a2", "NOOP") == [b"* 1 EXPUNGE", b"a2 OK NOOP completed"]
    assert watcher.command("a3", "FETCH 1 FLAGS") == [
        b"* 1 FETCH (FLAGS (\\Flagged \\Recent))",
        b"a3 OK FETCH completed",
    ]
    assert watcher.command("a4", "NOOP") == [b"a4 OK NOOP completed"]
    watcher.close()
    other.close()
