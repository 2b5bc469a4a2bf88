"""STORE (RFC 3501 §6.4.6, responses §7.4.2) against the running server, exact bytes of every line.

FLAGS / +FLAGS / -FLAGS, .SILENT, system flags and keywords (§2.3.2: \\Recent cannot be stored), the
unsolicited FETCH FLAGS other sessions on the folder get (§7.4.1: at their next command, FETCH, STORE and
SEARCH included, since only EXPUNGE is held back), read-only folders (§6.3.2), CONDSTORE UNCHANGEDSINCE
and [MODIFIED] (RFC 7162 §3.1.3) and .SILENT with MODSEQ (§3.2). UID STORE specifics are in test_uid.py.
"""

from __future__ import annotations

import re

from tests.imap.conftest import Box, message

# -- moved from tests/imap/test_store.py ---------------------------------------------------------------


def test_store_add_remove_replace_and_silent(box: Box) -> None:
    for n in (1, 2, 3):
        box.put(message(n))
    raw = box.selected()
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
    raw = box.selected()
    raw.command("a1", "STORE 1 +FLAGS.SILENT (\\Seen)")
    reply = raw.command("a2", "STORE 1:2 (UNCHANGEDSINCE 3) +FLAGS (\\Flagged)")
    assert reply == [
        b"* 2 FETCH (FLAGS (\\Flagged \\Recent) UID 2 MODSEQ (5))",
        b"a2 OK [MODIFIED 1] Conditional STORE failed for some messages",
    ]
    raw.close()


def test_store_reports_unchanged_flags_and_silent_condstore_reports_modseq(box: Box) -> None:
    box.put(message(1), flags=["\\Seen"])
    raw = box.selected()
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


# -- success paths ------------------------------------------------------------------------------------


def test_every_settable_flag_and_keywords(box: Box) -> None:
    box.put(message(1))
    raw = box.selected()
    # RFC 3501 §2.3.2: the five settable system flags, and keywords (atoms); flags without parentheses too
    assert raw.command("a1", "STORE 1 FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)") == [
        b"* 1 FETCH (FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen \\Recent))",
        b"a1 OK STORE completed",
    ]
    assert raw.command("a2", "STORE 1 FLAGS $Forwarded NonJunk") == [
        b"* 1 FETCH (FLAGS ($Forwarded NonJunk \\Recent))",
        b"a2 OK STORE completed",
    ]
    # system flag names are case-insensitive and answered in their canonical case
    assert raw.command("a3", "STORE 1 +FLAGS (\\SEEN \\flagged)") == [
        b"* 1 FETCH (FLAGS ($Forwarded NonJunk \\Flagged \\Seen \\Recent))",
        b"a3 OK STORE completed",
    ]
    assert raw.command("a4", "STORE 1 -FLAGS (NonJunk \\Seen \\Answered)") == [
        b"* 1 FETCH (FLAGS ($Forwarded \\Flagged \\Recent))",  # removing an absent flag is no error
        b"a4 OK STORE completed",
    ]
    assert raw.command("a5", "STORE 1 FLAGS ()") == [b"* 1 FETCH (FLAGS (\\Recent))", b"a5 OK STORE completed"]
    assert raw.command("a6", "STORE 1 +FLAGS.SILENT ()") == [b"a6 OK STORE completed"]
    assert raw.command("a7", "FETCH 1 FLAGS") == [b"* 1 FETCH (FLAGS (\\Recent))", b"a7 OK FETCH completed"]
    raw.close()


def test_flags_persist_across_sessions(box: Box) -> None:
    box.put(message(1))
    one = box.selected()
    one.command("a1", "STORE 1 +FLAGS.SILENT (\\Answered $Urgent)")
    one.close()
    two = box.selected()
    # \Recent went with the first session (RFC 3501 §2.3.2); the stored flags stay
    assert two.command("b1", "FETCH 1 FLAGS") == [b"* 1 FETCH (FLAGS ($Urgent \\Answered))", b"b1 OK FETCH completed"]
    two.close()


def test_other_sessions_get_fetch_flags_at_their_next_command(box: Box) -> None:
    for n in (1, 2):
        box.put(message(n))
    one, two = box.selected(), box.selected()
    assert one.command("a1", "STORE 1 +FLAGS (\\Flagged)") == [
        b"* 1 FETCH (FLAGS (\\Flagged \\Recent))",
        b"a1 OK STORE completed",
    ]
    # RFC 3501 §7.4.1: flag changes may be sent during any command, FETCH included (only EXPUNGE waits);
    # the other session does not have \Recent for the messages the first one saw first
    assert two.command("b1", "FETCH 2 (UID)") == [
        b"* 2 FETCH (UID 2)",
        b"* 1 FETCH (FLAGS (\\Flagged))",
        b"b1 OK FETCH completed",
    ]
    one.command("a2", "STORE 2 +FLAGS.SILENT (\\Seen)")  # .SILENT spares only the session that stores
    assert two.command("b2", "SEARCH FLAGGED") == [
        b"* SEARCH 1",
        b"* 2 FETCH (FLAGS (\\Seen))",
        b"b2 OK SEARCH completed",
    ]
    one.command("a3", "STORE 1 -FLAGS.SILENT (\\Flagged)")
    assert two.command("b3", "STORE 2 +FLAGS (\\Answered)") == [
        b"* 2 FETCH (FLAGS (\\Answered \\Seen))",
        b"* 1 FETCH (FLAGS ())",
        b"b3 OK STORE completed",
    ]
    assert two.command("b4", "NOOP") == [b"b4 OK NOOP completed"]  # each change is told once
    assert one.command("a4", "NOOP") == [b"* 2 FETCH (FLAGS (\\Answered \\Seen \\Recent))", b"a4 OK NOOP completed"]
    one.close()
    two.close()


def test_condstore_sessions_get_uid_and_modseq_in_unsolicited_fetch(box: Box) -> None:
    box.put(message(1))
    one, two = box.selected(), box.selected()
    assert two.command("b1", "ENABLE CONDSTORE") == [b"* ENABLED CONDSTORE", b"b1 OK ENABLE completed"]
    one.command("a1", "STORE 1 +FLAGS.SILENT (\\Seen)")
    # RFC 7162 §3.2: once CONDSTORE is enabled, every FETCH response carries UID and MODSEQ
    assert two.command("b2", "NOOP") == [b"* 1 FETCH (FLAGS (\\Seen) UID 1 MODSEQ (3))", b"b2 OK NOOP completed"]
    one.close()
    two.close()


def test_unchangedsince_zero_and_uid_store_modified_set(box: Box) -> None:
    for n in (1, 2, 3):
        box.put(message(n))
    raw = box.selected()
    # RFC 7162 §3.1.3: UNCHANGEDSINCE 0 fails for every message (all have a modseq above 0)
    assert raw.command("a1", "STORE 1:3 (UNCHANGEDSINCE 0) +FLAGS (\\Seen)") == [
        b"a1 OK [MODIFIED 1:3] Conditional STORE failed for some messages",
    ]
    raw.command("a2", "UID STORE 2 +FLAGS.SILENT (\\Flagged)")  # message 2: modseq 5
    # UID STORE answers [MODIFIED] with UIDs; messages passing the test are stored and reported
    assert raw.command("a3", "UID STORE 1:3 (UNCHANGEDSINCE 4) FLAGS (\\Answered)") == [
        b"* 1 FETCH (FLAGS (\\Answered \\Recent) UID 1 MODSEQ (6))",
        b"* 3 FETCH (FLAGS (\\Answered \\Recent) UID 3 MODSEQ (7))",
        b"a3 OK [MODIFIED 2] Conditional STORE failed for some messages",
    ]
    assert raw.command("a4", "FETCH 2 FLAGS") == [
        b"* 2 FETCH (FLAGS (\\Flagged \\Recent) UID 2 MODSEQ (5))",
        b"a4 OK FETCH completed",
    ]
    raw.close()


def test_store_of_a_message_another_session_expunged(box: Box) -> None:
    box.put(message(1), flags=["\\Deleted"])
    box.put(message(2))
    one, two = box.selected(), box.selected()
    one.command("a1", "EXPUNGE")
    # RFC 3501 §7.4.1: no EXPUNGE during STORE, so message 1 is still there for this session; it cannot be
    # changed any more (RFC 2180 §4.2): the STORE is ignored for it and its last known flags are reported
    assert two.command("b1", "STORE 1:2 +FLAGS (\\Flagged)") == [
        b"* 1 FETCH (FLAGS (\\Deleted))",
        b"* 2 FETCH (FLAGS (\\Flagged))",
        b"b1 OK STORE completed",
    ]
    assert two.command("b2", "NOOP") == [b"* 1 EXPUNGE", b"b2 OK NOOP completed"]
    assert two.command("b3", "FETCH 1 FLAGS") == [b"* 1 FETCH (FLAGS (\\Flagged))", b"b3 OK FETCH completed"]
    one.close()
    two.close()


# -- failures ------------------------------------------------------------------------------------------

FAILURES = [
    # RFC 3501 §9 sequence-set, and message numbers past the last message (§9 seq-number)
    ("STORE 0 +FLAGS (\\Seen)", b"t BAD invalid sequence set 0"),
    ("STORE 1: +FLAGS (\\Seen)", b"t BAD invalid sequence set 1:"),
    ("STORE x +FLAGS (\\Seen)", b"t BAD invalid sequence set x"),
    ("STORE 3 +FLAGS (\\Seen)", b"t BAD invalid message sequence number: the folder has 2 messages"),
    ("STORE 2:5 +FLAGS (\\Seen)", b"t BAD invalid message sequence number: the folder has 2 messages"),
    # RFC 3501 §2.3.2: \Recent is the server's; \* only appears in PERMANENTFLAGS; no other system flags
    ("STORE 1 +FLAGS (\\Recent)", b"t BAD \\Recent cannot be set"),
    ("STORE 1 FLAGS (\\Seen \\Recent)", b"t BAD \\Recent cannot be set"),
    ("STORE 1 +FLAGS (\\*)", b"t BAD \\* is not a flag"),
    ("STORE 1 +FLAGS (\\Foo)", b"t BAD unknown system flag \\Foo"),
    # flag syntax (RFC 3501 §9 flag-list, flag-keyword = atom)
    ("STORE 1 +FLAGS (\\Seen", b"t BAD missing ) after flag list"),
    ("STORE 1 +FLAGS (a)b)", b"t BAD invalid text after ) of flag list"),
    ('STORE 1 +FLAGS ("quoted")', b"t BAD invalid flag"),
    ("STORE 1 +FLAGS", b"t BAD missing flags"),
    # the item (RFC 3501 §9 store-att-flags)
    ("STORE 1 FLAGZ (\\Seen)", b"t BAD invalid STORE item FLAGZ: expected [+|-]FLAGS[.SILENT]"),
    ("STORE 1 +FLAGS.LOUD (\\Seen)", b"t BAD invalid STORE item +FLAGS.LOUD: expected [+|-]FLAGS[.SILENT]"),
    ("STORE 1", b"t BAD missing STORE item"),
    # modifiers (RFC 4466 §2.5, RFC 7162 §3.1.3)
    ("STORE 1 (UNCHANGEDSINCE) +FLAGS (\\Seen)", b"t BAD missing UNCHANGEDSINCE value"),
    ("STORE 1 (FOO 1) +FLAGS (\\Seen)", b"t BAD unknown STORE modifier FOO"),
    ("STORE 1 () +FLAGS (\\Seen)", b"t BAD missing STORE modifier"),
]


def test_failures(box: Box) -> None:
    box.put(message(1))
    box.put(message(2))
    raw = box.selected()
    for command, reply in FAILURES:
        assert raw.command("t", command) == [reply], command
    # nothing was stored
    assert raw.command("f", "FETCH 1:2 FLAGS") == [
        b"* 1 FETCH (FLAGS (\\Recent))",
        b"* 2 FETCH (FLAGS (\\Recent))",
        b"f OK FETCH completed",
    ]
    raw.close()


def test_store_in_a_read_only_folder_is_refused(box: Box) -> None:
    box.put(message(1))
    raw = box.raw()
    assert raw.command("e", "EXAMINE INBOX")[-1] == b"e OK [READ-ONLY] EXAMINE completed"
    # RFC 3501 §6.3.2: no change to the folder; RFC 5530 §3 READ-ONLY
    assert raw.command("a1", "STORE 1 +FLAGS (\\Seen)") == [b"a1 NO [READ-ONLY] the folder is read-only (EXAMINE)"]
    assert raw.command("a2", "UID STORE 1 +FLAGS (\\Seen)") == [b"a2 NO [READ-ONLY] the folder is read-only (EXAMINE)"]
    # EXAMINE does not take \Recent away (RFC 3501 §6.3.2): no other session has seen the message
    assert raw.command("a3", "FETCH 1 FLAGS") == [b"* 1 FETCH (FLAGS (\\Recent))", b"a3 OK FETCH completed"]
    assert raw.command("u", "UNSELECT") == [b"u OK UNSELECT completed"]
    assert raw.command("a4", "STORE 1 +FLAGS (\\Seen)") == [b"a4 BAD STORE is not allowed in the authenticated state"]
    raw.close()


def test_keywords_compare_without_regard_to_case(box: Box) -> None:
    """A keyword is one keyword in any case (as in Dovecot): adding it again in another case changes nothing
    (same spelling, same MODSEQ) and gives other messages the folder's spelling, removing or searching it
    works in any case, and a FLAGS list that names it twice keeps one."""
    box.put(message(1))
    box.put(message(2))
    raw = box.selected()
    assert raw.command("k1", "STORE 1 +FLAGS ($Label1)") == [
        b"* 1 FETCH (FLAGS ($Label1 \\Recent))",
        b"k1 OK STORE completed",
    ]
    before = raw.command("k2", "FETCH 1 (MODSEQ)")  # CONDSTORE from here: UID and MODSEQ in every FETCH
    found = re.fullmatch(rb"\* 1 FETCH \(MODSEQ \((\d+)\) UID 1\)", before[0])
    assert found is not None
    m = int(found[1])  # k1's, the folder's highest
    assert raw.command("k3", "STORE 1:2 +FLAGS ($LABEL1)") == [
        b"* 1 FETCH (FLAGS ($Label1 \\Recent) UID 1 MODSEQ (%d))" % m,
        b"* 2 FETCH (FLAGS ($Label1 \\Recent) UID 2 MODSEQ (%d))" % (m + 1),
        b"k3 OK STORE completed",
    ]
    assert raw.command("k4", "FETCH 1 (MODSEQ)") == [before[0], b"k4 OK FETCH completed"]
    assert raw.command("k5", "SEARCH KEYWORD $label1") == [b"* SEARCH 1 2", b"k5 OK SEARCH completed"]
    assert raw.command("k6", "SEARCH UNKEYWORD $LaBeL1") == [b"* SEARCH", b"k6 OK SEARCH completed"]
    assert raw.command("k7", "STORE 1 -FLAGS ($label1)") == [
        b"* 1 FETCH (FLAGS (\\Recent) UID 1 MODSEQ (%d))" % (m + 2),
        b"k7 OK STORE completed",
    ]
    assert raw.command("k8", "STORE 1 FLAGS ($label1 \\Seen $Label1)") == [
        b"* 1 FETCH (FLAGS ($Label1 \\Seen \\Recent) UID 1 MODSEQ (%d))" % (m + 3),
        b"k8 OK STORE completed",
    ]
    assert raw.command("k9", "STORE 1 FLAGS ($LABEL1 \\Seen)") == [  # the same flags: nothing changes
        b"* 1 FETCH (FLAGS ($Label1 \\Seen \\Recent) UID 1 MODSEQ (%d))" % (m + 3),
        b"k9 OK STORE completed",
    ]
    flags = [line for line in raw.command("k10", "SELECT INBOX") if line.startswith((b"* FLAGS", b"* OK [PERM"))]
    assert flags == [
        b"* FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen $Label1)",
        b"* OK [PERMANENTFLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen $Label1 \\*)] Flags permitted",
    ]
    box.put(message(3), flags=["$label1"])  # a delivery keeps its own spelling: SELECT lists every one held
    flags = [line for line in raw.command("k11", "SELECT INBOX") if line.startswith(b"* FLAGS")]
    assert flags == [b"* FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen $Label1 $label1)"]
    assert raw.command("k12", "SEARCH KEYWORD $LABEL1") == [b"* SEARCH 1 2 3", b"k12 OK SEARCH completed"]
    raw.close()
