"""STORE / UID STORE (RFC 3501 §6.4.6; CONDSTORE RFC 7162 §3.1.3), EXPUNGE / UID EXPUNGE (RFC 3501
§6.4.3, RFC 4315), and two sessions on one folder seeing each other's changes."""

from __future__ import annotations

from tests.imap.conftest import Box, Raw, message
from tests.smtp.conftest import PASSWORD


def login(box: Box, folder: str = "INBOX") -> Raw:
    raw = Raw(box.gw)
    assert raw.command("l", f'LOGIN {box.address} "{PASSWORD}"')[-1].startswith(b"l OK")
    assert raw.command("s", f"SELECT {folder}")[-1] == b"s OK [READ-WRITE] SELECT completed"
    return raw


def test_store_add_remove_replace_and_silent(box: Box) -> None:
    for n in (1, 2, 3):
        box.put(message(n))
    raw = login(box)
    assert raw.command("a1", "STORE 1:2 +FLAGS (\\Seen $Label1)") == [
        b"* 1 FETCH (FLAGS ($Label1 \\Seen \\Recent))",
        b"* 2 FETCH (FLAGS ($Label1 \\Seen \\Recent))",
        b"a1 OK STORE completed",
    ]
    assert raw.command("a2", "STORE 2 -FLAGS ($Label1)") == [
        b"* 2 FETCH (FLAGS (\\Seen \\Recent))",
        b"a2 OK STORE completed",
    ]
    assert raw.command("a3", "UID STORE 3 FLAGS.SILENT (\\Flagged)") == [b"a3 OK UID STORE completed"]
    assert raw.command("a4", "UID STORE 3 FLAGS (\\Answered)") == [
        b"* 3 FETCH (FLAGS (\\Answered \\Recent) UID 3)",
        b"a4 OK UID STORE completed",
    ]
    assert raw.command("a5", "STORE 9 +FLAGS (\\Seen)") == [
        b"a5 BAD invalid message sequence number: the folder has 3 messages"
    ]
    assert raw.command("a6", "UID STORE 9 +FLAGS (\\Seen)") == [b"a6 OK UID STORE completed"]  # no such UID: nothing
    assert raw.command("a7", "STORE 1 +FLAGS (\\Recent)")[0].startswith(b"a7 BAD")
    raw.close()


def test_unchangedsince_refuses_messages_changed_since(box: Box) -> None:
    box.put(message(1))
    box.put(message(2))
    raw = login(box)
    raw.command("a1", "STORE 1 +FLAGS.SILENT (\\Seen)")
    reply = raw.command("a2", "STORE 1:2 (UNCHANGEDSINCE 3) +FLAGS (\\Flagged)")
    assert reply == [
        b"* 2 FETCH (FLAGS (\\Flagged \\Recent) UID 2 MODSEQ (5))",
        b"a2 OK [MODIFIED 1] Conditional STORE failed for some messages",
    ]
    raw.close()


def test_expunge_and_uid_expunge(box: Box) -> None:
    for n in (1, 2, 3, 4):
        box.put(message(n), flags=["\\Deleted"] if n != 3 else [])
    raw = login(box)
    assert raw.command("a1", "UID EXPUNGE 2:3") == [b"* 2 EXPUNGE", b"a1 OK UID EXPUNGE completed"]
    assert raw.command("a2", "EXPUNGE") == [b"* 3 EXPUNGE", b"* 1 EXPUNGE", b"a2 OK EXPUNGE completed"]
    assert raw.command("a3", "FETCH 1 (UID)") == [b"* 1 FETCH (UID 3)", b"a3 OK FETCH completed"]
    events = box.gw.node.cli("audit", "search", "--event", "imap.expunge", "--principal", box.address, "--json")
    assert [e["response"]["uids"] for e in events.json()] == [[2], [1, 4]]  # type: ignore[index]
    raw.close()


def test_two_sessions_see_each_others_changes(box: Box) -> None:
    box.put(message(1))
    box.put(message(2))
    one, two = login(box), login(box)
    one.command("a1", "STORE 1 +FLAGS.SILENT (\\Deleted \\Seen)")
    assert two.command("b1", "NOOP") == [b"* 1 FETCH (FLAGS (\\Deleted \\Seen))", b"b1 OK NOOP completed"]
    box.put(message(3))  # delivered meanwhile
    assert one.command("a2", "EXPUNGE") == [
        b"* 1 EXPUNGE",
        b"* 2 EXISTS",
        b"* 2 RECENT",  # 2 and the new 3: the first session to learn of a message has it as \\Recent
        b"a2 OK EXPUNGE completed",
    ]
    # FETCH must not report the expunge (RFC 3501 §7.4.1) but does report the new message
    assert two.command("b2", "FETCH 1 (UID)") == [
        b"* 1 FETCH (UID 1)",
        b"* 3 EXISTS",
        b"* 0 RECENT",
        b"b2 OK FETCH completed",
    ]
    assert two.command("b3", "NOOP") == [b"* 1 EXPUNGE", b"b3 OK NOOP completed"]
    assert two.command("b4", "FETCH 1:* (UID)") == [
        b"* 1 FETCH (UID 2)",
        b"* 2 FETCH (UID 3)",
        b"b4 OK FETCH completed",
    ]
    one.close()
    two.close()


def test_store_reports_unchanged_flags_and_silent_condstore_reports_modseq(box: Box) -> None:
    box.put(message(1), flags=["\\Seen"])
    raw = login(box)
    # RFC 3501 §6.4.6: the new value of the flags, as a FETCH would give it, even when nothing changed
    assert raw.command("a1", "STORE 1 +FLAGS (\\Seen)") == [
        b"* 1 FETCH (FLAGS (\\Seen \\Recent))",
        b"a1 OK STORE completed",
    ]
    raw.command("a2", "ENABLE CONDSTORE")
    # RFC 7162 §3.2: .SILENT under CONDSTORE still reports UID and MODSEQ, not the flags
    assert raw.command("a3", "STORE 1 +FLAGS.SILENT (\\Flagged)") == [
        b"* 1 FETCH (UID 1 MODSEQ (3))",
        b"a3 OK STORE completed",
    ]
    raw.close()
