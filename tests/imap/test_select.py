"""SELECT / EXAMINE / STATUS / CLOSE / UNSELECT (RFC 3501 §6.3.1-2, §6.3.10, §6.4.2; RFC 3691; RFC 7162)."""

from __future__ import annotations

import re

from tests.imap.conftest import Box, Raw, message
from tests.smtp.conftest import PASSWORD


def login(box: Box) -> Raw:
    raw = Raw(box.gw)
    assert raw.command("l", f'LOGIN {box.address} "{PASSWORD}"')[-1].startswith(b"l OK")
    return raw


def test_select_reports_the_folder(box: Box) -> None:
    for n in (1, 2, 3):
        box.put(message(n), flags=["\\Seen"] if n == 1 else ["$Urgent"] if n == 2 else [])
    raw = login(box)
    reply = raw.command("a1", "SELECT inbox")
    validity = re.fullmatch(rb"\* OK \[UIDVALIDITY (\d+)\] UIDs valid", reply[4])
    assert validity is not None
    assert reply == [
        b"* FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen $Urgent)",
        b"* 3 EXISTS",
        b"* 3 RECENT",
        b"* OK [UNSEEN 2] First unseen",
        reply[4],
        b"* OK [UIDNEXT 4] Predicted next UID",
        b"* OK [PERMANENTFLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen $Urgent \\*)] Flags permitted",
        b"a1 OK [READ-WRITE] SELECT completed",
    ]
    raw.close()


def test_recent_goes_to_the_first_read_write_session_only(box: Box) -> None:
    box.put(message(1))
    first, second = login(box), login(box)
    assert b"* 1 RECENT" in first.command("a1", "SELECT INBOX")
    assert b"* 0 RECENT" in second.command("b1", "SELECT INBOX")
    assert b"* 0 RECENT" in second.command("b2", "EXAMINE INBOX")
    first.close()
    second.close()


def test_examine_is_read_only(box: Box) -> None:
    box.put(message(1))
    raw = login(box)
    reply = raw.command("a1", "EXAMINE INBOX")
    assert reply[-2:] == [b"* OK [PERMANENTFLAGS ()] Read-only folder", b"a1 OK [READ-ONLY] EXAMINE completed"]
    assert raw.command("a2", "STORE 1 +FLAGS (\\Seen)") == [b"a2 NO [READ-ONLY] the folder is read-only (EXAMINE)"]
    assert raw.command("a3", "EXPUNGE") == [b"a3 NO [READ-ONLY] the folder is read-only (EXAMINE)"]
    raw.close()


def test_select_of_a_missing_folder_and_reselect(box: Box) -> None:
    raw = login(box)
    assert raw.command("a1", "SELECT Nulle-part") == [b"a1 NO [NONEXISTENT] no folder Nulle-part"]
    raw.command("a2", "SELECT INBOX")
    reply = raw.command("a3", "EXAMINE Sent")
    assert reply[0] == b"* OK [CLOSED] Previous mailbox closed"
    assert raw.command("a4", "UNSELECT") == [b"a4 OK UNSELECT completed"]
    assert raw.command("a5", "FETCH 1 FLAGS") == [b"a5 BAD FETCH is not allowed in the authenticated state"]
    raw.close()


def test_status(box: Box) -> None:
    box.put(message(1), flags=["\\Seen"])
    box.put(message(2))
    raw = login(box)
    reply = raw.command("a1", "STATUS INBOX (MESSAGES RECENT UIDNEXT UNSEEN HIGHESTMODSEQ)")
    assert reply == [
        b"* STATUS INBOX (MESSAGES 2 RECENT 2 UIDNEXT 3 UNSEEN 1 HIGHESTMODSEQ 3)",
        b"a1 OK STATUS completed",
    ]
    assert raw.command("a2", "STATUS Nulle (MESSAGES)") == [b"a2 NO [NONEXISTENT] no folder Nulle"]
    raw.close()


def test_close_expunges_deleted_and_unselect_does_not(box: Box) -> None:
    box.put(message(1), flags=["\\Deleted"])
    box.put(message(2), flags=["\\Deleted"])
    raw = login(box)
    raw.command("a1", "EXAMINE INBOX")
    assert raw.command("a2", "CLOSE") == [b"a2 OK CLOSE completed"]  # read-only: nothing expunged
    raw.command("a3", "SELECT INBOX")
    assert raw.command("a4", "UNSELECT") == [b"a4 OK UNSELECT completed"]
    assert raw.command("a5", "STATUS INBOX (MESSAGES)")[0] == b"* STATUS INBOX (MESSAGES 2)"
    raw.command("a6", "SELECT INBOX")
    assert raw.command("a7", "CLOSE") == [b"a7 OK CLOSE completed"]  # silently: no EXPUNGE responses
    assert raw.command("a8", "STATUS INBOX (MESSAGES)")[0] == b"* STATUS INBOX (MESSAGES 0)"
    raw.close()
