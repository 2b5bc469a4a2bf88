"""UID FETCH, UID STORE, UID SEARCH (RFC 3501 §6.4.8) and UID EXPUNGE (RFC 4315 §2.1, UIDPLUS).

What differs from the plain commands, exact bytes of every line: the arguments are UIDs, and a UID set
is lenient (§6.4.8: UIDs that do not exist are no error; `n:*` always includes the highest UID, even when
n is above it); responses still number messages by sequence number and carry the UID (§6.4.8, §7.4.2);
UID SEARCH answers UIDs. The UIDs here are made to differ from sequence numbers by expunging first.
"""

from __future__ import annotations

from tests.imap.conftest import Box, Raw, message


def gapped(box: Box) -> Raw:
    """UIDs 2, 4, 5, 7 as messages 1 to 4 (UIDs 1, 3, 6 expunged)."""
    for n in range(1, 8):
        box.put(message(n), flags=["\\Deleted"] if n in (1, 3, 6) else [])
    raw = box.selected()
    assert raw.command("x", "EXPUNGE") == [b"* 6 EXPUNGE", b"* 3 EXPUNGE", b"* 1 EXPUNGE", b"x OK EXPUNGE completed"]
    return raw


def test_uid_fetch(box: Box) -> None:
    raw = gapped(box)
    # the UID item is always there, first (RFC 3501 §6.4.8); the number is the sequence number
    assert raw.command("a1", "UID FETCH 4 FLAGS") == [
        b"* 2 FETCH (UID 4 FLAGS (\\Recent))",
        b"a1 OK UID FETCH completed",
    ]
    assert raw.command("a2", "UID FETCH 4 (UID)") == [b"* 2 FETCH (UID 4)", b"a2 OK UID FETCH completed"]
    # UIDs that do not exist are skipped, ranges too
    assert raw.command("a3", "UID FETCH 1:4 (UID)") == [
        b"* 1 FETCH (UID 2)",
        b"* 2 FETCH (UID 4)",
        b"a3 OK UID FETCH completed",
    ]
    assert raw.command("a4", "UID FETCH 3,6 (UID)") == [b"a4 OK UID FETCH completed"]
    assert raw.command("a5", "UID FETCH 8:20 (UID)") == [b"a5 OK UID FETCH completed"]  # past the end
    assert raw.command("a6", "UID FETCH 4294967295 (UID)") == [b"a6 OK UID FETCH completed"]
    # "*" is the highest UID; n:* holds it even when n is above it (it is *:n)
    assert raw.command("a7", "UID FETCH * (UID)") == [b"* 4 FETCH (UID 7)", b"a7 OK UID FETCH completed"]
    assert raw.command("a8", "UID FETCH 100:* (UID)") == [b"* 4 FETCH (UID 7)", b"a8 OK UID FETCH completed"]
    assert raw.command("a9", "UID FETCH 5:* (UID)") == [
        b"* 3 FETCH (UID 5)",
        b"* 4 FETCH (UID 7)",
        b"a9 OK UID FETCH completed",
    ]
    assert raw.command("b1", "UID FETCH 7,2 (UID)") == [
        b"* 1 FETCH (UID 2)",
        b"* 4 FETCH (UID 7)",
        b"b1 OK UID FETCH completed",
    ]
    # content: the UID first, then the items; \Seen is reported with the FLAGS as for FETCH
    msg = message(9)  # same length as message 5's
    assert raw.command("b2", "UID FETCH 5 (RFC822.SIZE BODY[]<0.4>)") == [
        b"* 3 FETCH (UID 5 RFC822.SIZE %d BODY[]<0> {4}" % len(msg),
        b"From FLAGS (\\Seen \\Recent))",
        b"b2 OK UID FETCH completed",
    ]
    raw.close()


def test_uid_fetch_changedsince(box: Box) -> None:
    raw = gapped(box)
    raw.command("a1", "UID STORE 5 +FLAGS.SILENT (\\Answered)")
    highest = raw.command("a2", "UID FETCH 5 (MODSEQ)")[0]
    assert highest.startswith(b"* 3 FETCH (UID 5 MODSEQ (")
    modseq = int(highest.split(b"MODSEQ (")[1].split(b")")[0])
    assert raw.command("a3", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq - 1})") == [
        b"* 3 FETCH (UID 5 FLAGS (\\Answered \\Recent) MODSEQ (%d))" % modseq,
        b"a3 OK UID FETCH completed",
    ]
    raw.close()


def test_uid_store(box: Box) -> None:
    raw = gapped(box)
    # RFC 3501 §6.4.8: the untagged FETCH of UID STORE carries the UID
    assert raw.command("a1", "UID STORE 4:5 +FLAGS (\\Flagged)") == [
        b"* 2 FETCH (FLAGS (\\Flagged \\Recent) UID 4)",
        b"* 3 FETCH (FLAGS (\\Flagged \\Recent) UID 5)",
        b"a1 OK UID STORE completed",
    ]
    assert raw.command("a2", "UID STORE 3 +FLAGS (\\Seen)") == [b"a2 OK UID STORE completed"]  # expunged UID
    assert raw.command("a3", "UID STORE 10:20 +FLAGS (\\Seen)") == [b"a3 OK UID STORE completed"]
    assert raw.command("a4", "UID STORE 50:* -FLAGS (\\Flagged)") == [
        b"* 4 FETCH (FLAGS (\\Recent) UID 7)",
        b"a4 OK UID STORE completed",
    ]
    assert raw.command("a5", "UID STORE 1:* FLAGS.SILENT (\\Seen)") == [b"a5 OK UID STORE completed"]
    assert raw.command("a6", "FETCH 1:* (FLAGS)") == [
        b"* 1 FETCH (FLAGS (\\Seen \\Recent))",
        b"* 2 FETCH (FLAGS (\\Seen \\Recent))",
        b"* 3 FETCH (FLAGS (\\Seen \\Recent))",
        b"* 4 FETCH (FLAGS (\\Seen \\Recent))",
        b"a6 OK FETCH completed",
    ]
    # RFC 7162 §3.1.3: [MODIFIED] of a UID STORE lists UIDs
    assert raw.command("a7", "UID STORE 5,7 (UNCHANGEDSINCE 1) +FLAGS (\\Answered)") == [
        b"a7 OK [MODIFIED 5,7] Conditional STORE failed for some messages"
    ]
    raw.close()


def test_uid_search(box: Box) -> None:
    raw = gapped(box)
    raw.command("a0", "STORE 2 +FLAGS.SILENT (\\Seen)")  # UID 4
    # UID SEARCH answers UIDs (RFC 3501 §6.4.8); its keys still take message numbers, UID takes UIDs
    for query, expected in [
        ("ALL", b"* SEARCH 2 4 5 7"),
        ("SEEN", b"* SEARCH 4"),
        ("2:3", b"* SEARCH 4 5"),  # messages 2 and 3
        ("*", b"* SEARCH 7"),
        ("UID 4:6", b"* SEARCH 4 5"),
        ("UID 1,3,6", b"* SEARCH"),
        ("UID 8:*", b"* SEARCH 7"),
        ("NOT UID 5:*", b"* SEARCH 2 4"),
        ("OR 1 UID 7", b"* SEARCH 2 7"),
    ]:
        assert raw.command("a", f"UID SEARCH {query}") == [expected, b"a OK UID SEARCH completed"], query
    assert raw.command("b1", "SEARCH UID 4:6") == [b"* SEARCH 2 3", b"b1 OK SEARCH completed"]  # numbers
    # ESEARCH (RFC 4731 §3.1): UID in the response, and values that are UIDs
    assert raw.command("b2", "UID SEARCH RETURN (MIN MAX ALL COUNT) UNSEEN") == [
        b'* ESEARCH (TAG "b2") UID MIN 2 MAX 7 ALL 2,5,7 COUNT 3',
        b"b2 OK UID SEARCH completed",
    ]
    raw.close()


def test_uid_expunge(box: Box) -> None:
    raw = gapped(box)  # UIDs 2 4 5 7
    raw.command("a0", "UID STORE 2,5,7 +FLAGS.SILENT (\\Deleted)")
    # RFC 4315 §2.1: only \Deleted messages whose UID is in the set; UIDs that do not exist are no error
    assert raw.command("a1", "UID EXPUNGE 1:3") == [b"* 1 EXPUNGE", b"a1 OK UID EXPUNGE completed"]
    assert raw.command("a2", "UID EXPUNGE 4") == [b"a2 OK UID EXPUNGE completed"]  # not \Deleted: stays
    assert raw.command("a3", "UID EXPUNGE 100:200") == [b"a3 OK UID EXPUNGE completed"]
    assert raw.command("a4", "UID EXPUNGE 100:*") == [b"* 3 EXPUNGE", b"a4 OK UID EXPUNGE completed"]  # UID 7
    assert raw.command("a5", "UID FETCH 1:* (FLAGS)") == [
        b"* 1 FETCH (UID 4 FLAGS (\\Recent))",
        b"* 2 FETCH (UID 5 FLAGS (\\Deleted \\Recent))",
        b"a5 OK UID FETCH completed",
    ]
    events = box.gw.node.cli("audit", "search", "--event", "imap.expunge", "--principal", box.address, "--json")
    assert [e["response"]["uids"] for e in events.json()] == [[1, 3, 6], [2], [7]]  # type: ignore[index]
    raw.close()


def test_an_empty_folder(box: Box) -> None:
    raw = box.selected()
    # UID sets are lenient; message numbers are not (RFC 3501 §9 seq-number: there is no message 1)
    assert raw.command("a1", "UID FETCH 1:* (FLAGS)") == [b"a1 OK UID FETCH completed"]
    assert raw.command("a2", "UID FETCH * (FLAGS)") == [b"a2 OK UID FETCH completed"]
    assert raw.command("a3", "UID STORE 1:* +FLAGS (\\Seen)") == [b"a3 OK UID STORE completed"]
    assert raw.command("a4", "UID SEARCH ALL") == [b"* SEARCH", b"a4 OK UID SEARCH completed"]
    assert raw.command("a5", "UID EXPUNGE 1:*") == [b"a5 OK UID EXPUNGE completed"]
    assert raw.command("a6", "FETCH 1:* (FLAGS)") == [
        b"a6 BAD invalid message sequence number: the folder has 0 messages"
    ]
    assert raw.command("a7", "STORE * +FLAGS (\\Seen)") == [
        b"a7 BAD invalid message sequence number: the folder has 0 messages"
    ]
    raw.close()


def test_failures(box: Box) -> None:
    box.put(message(1))
    raw = box.selected()
    for command, reply in [
        ("UID", b"t BAD missing UID command"),
        ("UID FOO 1", b"t BAD invalid UID command FOO: expected COPY, MOVE, FETCH, SEARCH, STORE or EXPUNGE"),
        ("UID NOOP", b"t BAD invalid UID command NOOP: expected COPY, MOVE, FETCH, SEARCH, STORE or EXPUNGE"),
        ("UID FETCH 0 FLAGS", b"t BAD invalid sequence set 0"),
        ("UID FETCH 1: FLAGS", b"t BAD invalid sequence set 1:"),
        ("UID FETCH 4294967296 FLAGS", b"t BAD invalid sequence set 4294967296"),  # above nz-number
        ("UID FETCH 1 FOO", b"t BAD unknown FETCH attribute FOO"),
        ("UID STORE 0 +FLAGS (\\Seen)", b"t BAD invalid sequence set 0"),
        ("UID STORE 1 +FLAGS (\\Recent)", b"t BAD \\Recent cannot be set"),
        ("UID SEARCH UID 0", b"t BAD invalid UID sequence set 0"),
        ("UID SEARCH FOO", b"t BAD unknown search key FOO"),
        ("UID EXPUNGE", b"t BAD missing sequence set"),
        ("UID EXPUNGE *:0", b"t BAD invalid sequence set *:0"),
    ]:
        assert raw.command("t", command) == [reply], command
    raw.close()
