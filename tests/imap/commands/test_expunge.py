"""EXPUNGE (RFC 3501 §6.4.3, response §7.4.1) and UID EXPUNGE (RFC 4315 §2.1) against the running server.

Exact bytes of every line: the `* n EXPUNGE` responses (each number valid when sent), read-only folders
(§6.3.2), the audit record (`imap.expunge`), and what other sessions on the same folder are told:
`* n EXPUNGE` at their next command, but never during FETCH, STORE or SEARCH (§7.4.1) — during those the
expunged message keeps its number; a FETCH of its content is answered NO [EXPUNGEISSUED] (RFC 2180 §4.1.3,
RFC 5530 §3). UID EXPUNGE ranges are in test_uid.py too.
"""

from __future__ import annotations

from gateway.imap.commands.fetch import PREFETCH_COUNT
from tests.imap.conftest import Box, message

# -- moved from tests/imap/test_store.py ---------------------------------------------------------------


def test_expunge_and_uid_expunge(box: Box) -> None:
    for n in (1, 2, 3, 4):
        box.put(message(n), flags=["\\Deleted"] if n != 3 else [])
    raw = box.selected()
    assert raw.command("a1", "UID EXPUNGE 2:3") == [b"* 2 EXPUNGE", b"a1 OK UID EXPUNGE completed"]
    assert raw.command("a2", "EXPUNGE") == [b"* 3 EXPUNGE", b"* 1 EXPUNGE", b"a2 OK EXPUNGE completed"]
    assert raw.command("a3", "FETCH 1 (UID)") == [b"* 1 FETCH (UID 3)", b"a3 OK FETCH completed"]
    events = box.gw.node.cli("audit", "search", "--event", "imap.expunge", "--principal", box.address, "--json")
    assert [e["response"]["uids"] for e in events.json()] == [[2], [1, 4]]  # type: ignore[index]
    raw.close()


def test_two_sessions_see_each_others_changes(box: Box) -> None:
    box.put(message(1))
    box.put(message(2))
    one, two = box.selected(), box.selected()
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


# -- success paths ------------------------------------------------------------------------------------


def test_expunge_numbers_stay_valid_and_nothing_deleted_is_a_plain_ok(box: Box) -> None:
    for n in range(1, 7):
        box.put(message(n), flags=["\\Deleted"] if n in (2, 3, 5) else [])
    raw = box.selected()
    # RFC 3501 §7.4.1: each EXPUNGE renumbers the messages after it; highest first keeps each number right
    assert raw.command("a1", "EXPUNGE") == [
        b"* 5 EXPUNGE",
        b"* 3 EXPUNGE",
        b"* 2 EXPUNGE",
        b"a1 OK EXPUNGE completed",
    ]
    assert raw.command("a2", "FETCH 1:* (UID)") == [
        b"* 1 FETCH (UID 1)",
        b"* 2 FETCH (UID 4)",
        b"* 3 FETCH (UID 6)",
        b"a2 OK FETCH completed",
    ]
    assert raw.command("a3", "EXPUNGE") == [b"a3 OK EXPUNGE completed"]  # nothing \Deleted: nothing to say
    # a message marked and expunged in the same session
    assert raw.command("a4", "STORE 2 +FLAGS.SILENT (\\Deleted)") == [b"a4 OK STORE completed"]
    assert raw.command("a5", "EXPUNGE") == [b"* 2 EXPUNGE", b"a5 OK EXPUNGE completed"]
    assert raw.command("a6", "FETCH 2 (UID)") == [b"* 2 FETCH (UID 6)", b"a6 OK FETCH completed"]
    events = box.gw.node.cli("audit", "search", "--event", "imap.expunge", "--principal", box.address, "--json")
    assert [e["response"] for e in events.json()] == [  # type: ignore[index]
        {"folder": "INBOX", "uids": [2, 3, 5], "result": "done"},
        {"folder": "INBOX", "uids": [4], "result": "done"},
    ]
    raw.close()


def test_other_sessions_get_expunge_only_where_allowed(box: Box) -> None:
    for n in (1, 2, 3):
        box.put(message(n), flags=["\\Deleted"] if n == 2 else [])
    one, two = box.selected(), box.selected()
    assert one.command("a1", "EXPUNGE") == [b"* 2 EXPUNGE", b"a1 OK EXPUNGE completed"]
    # RFC 3501 §7.4.1: not during FETCH, STORE or SEARCH; message 2 keeps its number meanwhile
    assert two.command("b1", "STORE 3 +FLAGS (\\Seen)") == [b"* 3 FETCH (FLAGS (\\Seen))", b"b1 OK STORE completed"]
    assert two.command("b2", "SEARCH ALL") == [b"* SEARCH 1 2 3", b"b2 OK SEARCH completed"]
    assert two.command("b3", "UID SEARCH SEEN") == [b"* SEARCH 3", b"b3 OK UID SEARCH completed"]
    assert two.command("b4", "FETCH 3 (UID FLAGS)") == [
        b"* 3 FETCH (UID 3 FLAGS (\\Seen))",
        b"b4 OK FETCH completed",
    ]
    assert two.command("b5", "UID FETCH 3 (FLAGS)") == [
        b"* 3 FETCH (UID 3 FLAGS (\\Seen))",
        b"b5 OK UID FETCH completed",
    ]
    # any other command in the selected state may carry it: NOOP here (CHECK, EXPUNGE, COPY... alike)
    assert two.command("b6", "NOOP") == [b"* 2 EXPUNGE", b"b6 OK NOOP completed"]
    assert two.command("b7", "FETCH 2 (UID FLAGS)") == [
        b"* 2 FETCH (UID 3 FLAGS (\\Seen))",
        b"b7 OK FETCH completed",
    ]
    assert one.command("a2", "CHECK") == [b"* 2 FETCH (FLAGS (\\Seen \\Recent))", b"a2 OK CHECK completed"]
    one.close()
    two.close()


def test_expunge_by_another_session_is_told_by_this_sessions_expunge(box: Box) -> None:
    for n in (1, 2, 3):
        box.put(message(n), flags=["\\Deleted"] if n != 2 else [])
    one, two = box.selected(), box.selected()
    assert one.command("a1", "UID EXPUNGE 3") == [b"* 3 EXPUNGE", b"a1 OK UID EXPUNGE completed"]
    # two's own EXPUNGE removes message 1, and reports both (its view still numbered 1, 2, 3)
    assert two.command("b1", "EXPUNGE") == [b"* 3 EXPUNGE", b"* 1 EXPUNGE", b"b1 OK EXPUNGE completed"]
    assert two.command("b2", "FETCH 1:* (UID)") == [b"* 1 FETCH (UID 2)", b"b2 OK FETCH completed"]
    assert one.command("a2", "NOOP") == [b"* 1 EXPUNGE", b"a2 OK NOOP completed"]
    one.close()
    two.close()


def test_content_of_a_message_another_session_expunged(box: Box) -> None:
    first, second = message(1), message(2)
    box.put(first, flags=["\\Deleted"])
    box.put(second)
    one, two = box.selected(), box.selected()
    one.command("a1", "EXPUNGE")
    # RFC 2180 §4.1.3 / RFC 5530 §3: the content is gone; what remains is returned, then NO [EXPUNGEISSUED]
    assert two.command("b1", "FETCH 1:2 (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])") == [
        b"* 2 FETCH (UID 2 BODY[HEADER.FIELDS (SUBJECT)] {22}",
        b"Subject: message 2",
        b"",
        b")",
        b"b1 NO [EXPUNGEISSUED] Some of the requested messages no longer exist",
    ]
    assert two.command("b2", "FETCH 1 (BODY[])") == [
        b"b2 NO [EXPUNGEISSUED] Some of the requested messages no longer exist"
    ]
    # metadata is still known and answered; content searches simply do not find it
    assert two.command("b3", "FETCH 1 (UID FLAGS)") == [
        b"* 1 FETCH (UID 1 FLAGS (\\Deleted))",
        b"b3 OK FETCH completed",
    ]
    assert two.command("b4", "SEARCH TEXT message") == [b"* SEARCH 2", b"b4 OK SEARCH completed"]
    assert two.command("b5", "NOOP") == [b"* 1 EXPUNGE", b"b5 OK NOOP completed"]
    events = box.gw.node.cli("audit", "search", "--event", "imap.fetch.body", "--principal", box.address, "--json")
    assert [e["response"]["uids"] for e in events.json()] == [[2], [2]]  # type: ignore[index]
    one.close()
    two.close()


def test_content_of_a_message_another_session_expunged_in_a_long_fetch(box: Box) -> None:
    # More messages than one statement reads with the presence check (PREFETCH_COUNT): presence is
    # checked first, then each body is read as it is sent; the answer is the same.
    n = PREFETCH_COUNT + 1
    for i in range(1, n + 1):
        box.put(message(i), flags=["\\Deleted"] if i == 1 else [])
    one, two = box.selected(), box.selected()
    one.command("a1", "EXPUNGE")
    got = two.command("b1", f"FETCH 1:{n} (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert got[-1] == b"b1 NO [EXPUNGEISSUED] Some of the requested messages no longer exist"
    expected: list[bytes] = []
    for i in range(2, n + 1):
        subject = f"Subject: message {i}".encode()
        expected += [
            b"* %d FETCH (UID %d BODY[HEADER.FIELDS (SUBJECT)] {%d}" % (i, i, len(subject) + 4),
            subject,
            b"",
            b")",
        ]
    assert got[:-1] == expected
    events = box.gw.node.cli("audit", "search", "--event", "imap.fetch.body", "--principal", box.address, "--json")
    assert [e["response"]["uids"] for e in events.json()] == [list(range(2, n + 1))]  # type: ignore[index]
    one.close()
    two.close()


# -- failures ------------------------------------------------------------------------------------------


def test_failures(box: Box) -> None:
    box.put(message(1), flags=["\\Deleted"])
    raw = box.raw()
    assert raw.command("a1", "EXPUNGE") == [b"a1 BAD EXPUNGE is not allowed in the authenticated state"]
    assert raw.command("a2", "UID EXPUNGE 1") == [b"a2 BAD UID EXPUNGE is not allowed in the authenticated state"]
    assert raw.command("e", "EXAMINE INBOX")[-1] == b"e OK [READ-ONLY] EXAMINE completed"
    # RFC 3501 §6.3.2: nothing is removed from a folder opened read-only (RFC 5530 §3 READ-ONLY)
    assert raw.command("a3", "EXPUNGE") == [b"a3 NO [READ-ONLY] the folder is read-only (EXAMINE)"]
    assert raw.command("a4", "UID EXPUNGE 1") == [b"a4 NO [READ-ONLY] the folder is read-only (EXAMINE)"]
    assert raw.command("s", "SELECT INBOX")[-1] == b"s OK [READ-WRITE] SELECT completed"
    # RFC 3501 §9: EXPUNGE takes no argument; RFC 4315 §2.1: UID EXPUNGE needs a sequence set
    assert raw.command("a5", "EXPUNGE 1") == [b"a5 BAD unexpected extra arguments"]
    assert raw.command("a6", "UID EXPUNGE") == [b"a6 BAD missing sequence set"]
    assert raw.command("a7", "UID EXPUNGE 0") == [b"a7 BAD invalid sequence set 0"]
    assert raw.command("a8", "UID EXPUNGE a") == [b"a8 BAD invalid sequence set a"]
    assert raw.command("a9", "UID EXPUNGE 1 2") == [b"a9 BAD unexpected extra arguments"]
    # untouched, and \Recent: EXAMINE did not take it (RFC 3501 §6.3.2), this SELECT did
    assert raw.command("f", "FETCH 1 (UID FLAGS)") == [
        b"* 1 FETCH (UID 1 FLAGS (\\Deleted \\Recent))",
        b"f OK FETCH completed",
    ]
    raw.close()
