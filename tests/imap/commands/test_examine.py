"""EXAMINE against the real server (RFC 3501 §6.3.2; RFC 7162 §3.1.8 CONDSTORE).

EXAMINE is SELECT read-only: the same untagged responses but PERMANENTFLAGS () and [READ-ONLY], no change to
the folder (\\Recent stays for the next read-write session, RFC 3501 §2.3.2), and STORE / EXPUNGE refused.
"""

from __future__ import annotations

import re

from tests.imap.conftest import Box, Raw, message


def test_examine_is_read_only(box: Box) -> None:
    box.put(message(1))
    raw = box.raw()
    reply = raw.command("a1", "EXAMINE INBOX")
    assert reply[-2:] == [b"* OK [PERMANENTFLAGS ()] Read-only folder", b"a1 OK [READ-ONLY] EXAMINE completed"]
    assert raw.command("a2", "STORE 1 +FLAGS (\\Seen)") == [b"a2 NO [READ-ONLY] the folder is read-only (EXAMINE)"]
    assert raw.command("a3", "EXPUNGE") == [b"a3 NO [READ-ONLY] the folder is read-only (EXAMINE)"]
    raw.close()


def test_every_line_and_recent_is_left_for_a_read_write_session(box: Box) -> None:
    box.put(message(1), flags=["\\Seen", "$Label1"])
    box.put(message(2))
    raw = box.raw()
    reply = raw.command("a1", "EXAMINE INBOX")
    validity = re.fullmatch(rb"\* OK \[UIDVALIDITY (\d+)\] UIDs valid", reply[4])
    assert validity is not None
    assert reply == [
        b"* FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen $Label1)",
        b"* 2 EXISTS",
        b"* 2 RECENT",
        b"* OK [UNSEEN 2] First unseen",
        reply[4],
        b"* OK [UIDNEXT 3] Predicted next UID",
        b"* OK [PERMANENTFLAGS ()] Read-only folder",
        b"a1 OK [READ-ONLY] EXAMINE completed",
    ]
    assert raw.command("a2", "FETCH 1:2 (FLAGS)") == [
        b"* 1 FETCH (FLAGS ($Label1 \\Seen \\Recent))",
        b"* 2 FETCH (FLAGS (\\Recent))",
        b"a2 OK FETCH completed",
    ]
    again = box.raw()
    assert again.command("b1", "EXAMINE INBOX")[2] == b"* 2 RECENT"  # EXAMINE did not take them
    assert again.command("b2", "SELECT INBOX")[3] == b"* 2 RECENT"
    assert raw.command("a3", "EXAMINE INBOX")[3] == b"* 0 RECENT"  # the SELECT did
    raw.close()
    again.close()


def test_condstore(box: Box) -> None:
    box.put(message(1))
    raw = box.raw()
    reply = raw.command("a1", "EXAMINE INBOX (CONDSTORE)")
    assert reply[-3:] == [
        b"* OK [PERMANENTFLAGS ()] Read-only folder",
        b"* OK [HIGHESTMODSEQ 2] Highest",
        b"a1 OK [READ-ONLY] EXAMINE completed",
    ]
    raw.close()


def test_refusals(box: Box) -> None:
    raw = box.raw()
    assert raw.command("a1", "EXAMINE") == [b"a1 BAD missing mailbox name"]
    assert raw.command("a2", "EXAMINE INBOX Sent") == [b"a2 BAD expected ( before SELECT parameters"]
    assert raw.command("a3", "EXAMINE INBOX (FOO)") == [b"a3 BAD unknown SELECT parameter FOO"]
    assert raw.command("a4", "EXAMINE Nulle") == [b"a4 NO [NONEXISTENT] no folder Nulle"]
    assert raw.command("a5", "EXAMINE &Jjo") == [
        b"a5 BAD invalid mailbox name: unterminated & sequence at offset 0 in modified UTF-7"
    ]
    raw.close()
    anonymous = Raw(box.gw)
    assert anonymous.command("n1", "EXAMINE INBOX") == [b"n1 BAD EXAMINE is not allowed in the not authenticated state"]
    anonymous.close()


def test_accented_and_mixed_case_names(box: Box) -> None:
    raw = box.raw()
    raw.command("a1", "CREATE &AMk-chographies")  # "Échographies"
    box.put(message(1), folder="Échographies")
    reply = raw.command("a2", "EXAMINE &AMk-chographies")
    assert reply[1] == b"* 1 EXISTS"
    assert reply[-1] == b"a2 OK [READ-ONLY] EXAMINE completed"
    assert raw.command("a3", "EXAMINE &AOk-chographies") == [  # "échographies"
        b"* OK [CLOSED] Previous mailbox closed",
        b"a3 NO [NONEXISTENT] no folder &AOk-chographies",
    ]
    raw.close()
