"""SELECT against the real server (RFC 3501 §6.3.1; RFC 4466 §2.1 select parameters; RFC 7162 §3.1.8 CONDSTORE).

Exact responses for the success path, each refusal (arguments, names, states), mixed-case and accented names
(modified UTF-7, RFC 3501 §5.1.3), a level of the hierarchy that is not a folder, and a second session.
"""

from __future__ import annotations

import re

from tests.imap.conftest import Box, Raw, message


def select_lines(reply: list[bytes]) -> tuple[int, list[bytes]]:
    """The UIDVALIDITY of a SELECT/EXAMINE reply, and the reply with that value as `V`."""
    values = [re.fullmatch(rb"\* OK \[UIDVALIDITY (\d+)\] UIDs valid", line) for line in reply]
    found = [m for m in values if m is not None]
    assert len(found) == 1, reply
    value = int(found[0][1])
    return value, [line.replace(b"UIDVALIDITY %d" % value, b"UIDVALIDITY V") for line in reply]


def test_select_reports_the_folder(box: Box) -> None:
    for n in (1, 2, 3):
        box.put(message(n), flags=["\\Seen"] if n == 1 else ["$Urgent"] if n == 2 else [])
    raw = box.raw()
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
    first, second = box.raw(), box.raw()
    assert b"* 1 RECENT" in first.command("a1", "SELECT INBOX")
    assert b"* 0 RECENT" in second.command("b1", "SELECT INBOX")
    assert b"* 0 RECENT" in second.command("b2", "EXAMINE INBOX")
    first.close()
    second.close()


def test_select_of_a_missing_folder_and_reselect(box: Box) -> None:
    raw = box.raw()
    assert raw.command("a1", "SELECT Nulle-part") == [b"a1 NO [NONEXISTENT] no folder Nulle-part"]
    raw.command("a2", "SELECT INBOX")
    reply = raw.command("a3", "EXAMINE Sent")
    assert reply[0] == b"* OK [CLOSED] Previous mailbox closed"
    assert raw.command("a4", "UNSELECT") == [b"a4 OK UNSELECT completed"]
    assert raw.command("a5", "FETCH 1 FLAGS") == [b"a5 BAD FETCH is not allowed in the authenticated state"]
    raw.close()


def test_an_empty_folder_has_no_unseen_line(box: Box) -> None:
    raw = box.raw()
    validity, reply = select_lines(raw.command("a1", "SELECT Sent"))
    assert validity > 0
    assert reply == [
        b"* FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen)",
        b"* 0 EXISTS",
        b"* 0 RECENT",
        b"* OK [UIDVALIDITY V] UIDs valid",
        b"* OK [UIDNEXT 1] Predicted next UID",
        b"* OK [PERMANENTFLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen \\*)] Flags permitted",
        b"a1 OK [READ-WRITE] SELECT completed",
    ]
    raw.close()


def test_condstore_parameter_adds_highestmodseq(box: Box) -> None:
    box.put(message(1), flags=["\\Seen"])
    raw = box.raw()
    _, reply = select_lines(raw.command("a1", "SELECT INBOX (CONDSTORE)"))
    assert reply == [
        b"* FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen)",
        b"* 1 EXISTS",
        b"* 1 RECENT",
        b"* OK [UIDVALIDITY V] UIDs valid",
        b"* OK [UIDNEXT 2] Predicted next UID",
        b"* OK [PERMANENTFLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen \\*)] Flags permitted",
        b"* OK [HIGHESTMODSEQ 2] Highest",
        b"a1 OK [READ-WRITE] SELECT completed",
    ]
    # RFC 7162 §3.1: CONDSTORE stays enabled for the connection; the next SELECT reports it unasked
    reply = raw.command("a2", "SELECT Sent")
    assert reply[0] == b"* OK [CLOSED] Previous mailbox closed"
    assert reply[-2:] == [b"* OK [HIGHESTMODSEQ 1] Highest", b"a2 OK [READ-WRITE] SELECT completed"]
    raw.close()


def test_refusals(box: Box) -> None:
    raw = box.raw()
    assert raw.command("a1", "SELECT") == [b"a1 BAD missing mailbox name"]
    assert raw.command("a2", "SELECT INBOX extra") == [b"a2 BAD expected ( before SELECT parameters"]
    assert raw.command("a3", "SELECT INBOX ()") == [b"a3 BAD missing SELECT parameter"]
    assert raw.command("a4", "SELECT INBOX (FOO)") == [b"a4 BAD unknown SELECT parameter FOO"]
    assert raw.command("a5", "SELECT INBOX (QRESYNC)") == [b"a5 BAD SELECT parameter QRESYNC is not supported"]
    assert raw.command("a6", "SELECT R&AOk") == [
        b"a6 BAD invalid mailbox name: unterminated & sequence at offset 1 in modified UTF-7"
    ]
    assert raw.command("a7", 'SELECT ""') == [b'a7 NO [NONEXISTENT] no folder ""']
    assert raw.command("a8", 'SELECT "Nulle part"') == [b'a8 NO [NONEXISTENT] no folder "Nulle part"']
    raw.close()
    anonymous = Raw(box.gw)
    assert anonymous.command("n1", "SELECT INBOX") == [b"n1 BAD SELECT is not allowed in the not authenticated state"]
    anonymous.close()


def test_a_failed_select_leaves_no_folder_selected_but_a_bad_one_changes_nothing(box: Box) -> None:
    box.put(message(1))
    raw = box.raw()
    raw.command("a1", "SELECT INBOX")
    # BAD: the command was not understood, the selection stays (as for any syntax error)
    assert raw.command("a2", "SELECT R&AOk") == [
        b"a2 BAD invalid mailbox name: unterminated & sequence at offset 1 in modified UTF-7"
    ]
    assert raw.command("a3", "FETCH 1 (FLAGS)") == [b"* 1 FETCH (FLAGS (\\Recent))", b"a3 OK FETCH completed"]
    # NO: RFC 3501 §6.3.1, "if a mailbox is selected and a SELECT command that fails is attempted, no mailbox
    # is selected"
    assert raw.command("a4", "SELECT Nulle") == [
        b"* OK [CLOSED] Previous mailbox closed",
        b"a4 NO [NONEXISTENT] no folder Nulle",
    ]
    assert raw.command("a5", "FETCH 1 (FLAGS)") == [b"a5 BAD FETCH is not allowed in the authenticated state"]
    raw.close()


def test_mixed_case_and_accented_names(box: Box) -> None:
    raw = box.raw()
    assert raw.command("a1", "CREATE R&AOk-sultats-Labo") == [b"a1 OK CREATE completed"]  # "Résultats-Labo"
    box.put(message(1), folder="Résultats-Labo")
    reply = raw.command("a2", "SELECT R&AOk-sultats-Labo")
    assert reply[1:3] == [b"* 1 EXISTS", b"* 1 RECENT"]
    assert reply[-1] == b"a2 OK [READ-WRITE] SELECT completed"
    # names are case-sensitive, but for INBOX (RFC 3501 §5.1)
    assert raw.command("a3", "SELECT r&AOk-sultats-labo") == [
        b"* OK [CLOSED] Previous mailbox closed",
        b"a3 NO [NONEXISTENT] no folder r&AOk-sultats-labo",
    ]
    assert raw.command("a4", "SELECT R&AMk-sultats-Labo") == [  # "RÉsultats-Labo"
        b"a4 NO [NONEXISTENT] no folder R&AMk-sultats-Labo"
    ]
    assert raw.command("a5", "SELECT iNbOx")[-1] == b"a5 OK [READ-WRITE] SELECT completed"
    raw.close()


def test_a_level_of_the_hierarchy_is_not_selectable(box: Box) -> None:
    raw = box.raw()
    raw.command("a1", "CREATE Patients/Dupont")
    assert raw.command("a2", "DELETE Patients") == [b"a2 OK DELETE completed"]
    assert raw.command("a3", 'LIST "" Patients%') == [
        b'* LIST (\\Noselect \\HasChildren) "/" Patients',
        b"a3 OK LIST completed",
    ]
    assert raw.command("a4", "SELECT Patients") == [b"a4 NO [NONEXISTENT] no folder Patients"]
    assert raw.command("a5", "SELECT Patients/Dupont")[-1] == b"a5 OK [READ-WRITE] SELECT completed"
    raw.close()


def test_a_second_session_sees_what_the_first_selected(box: Box) -> None:
    box.put(message(1))
    first, second = box.raw(), box.raw()
    first.command("a1", "SELECT INBOX")
    assert first.command("a2", "STORE 1 +FLAGS.SILENT (\\Seen)") == [b"a2 OK STORE completed"]
    reply = second.command("b1", "SELECT INBOX")
    assert reply[:4] == [
        b"* FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen)",
        b"* 1 EXISTS",
        b"* 0 RECENT",  # taken by the first session
        reply[3],
    ]
    assert reply[3].startswith(b"* OK [UIDVALIDITY ")  # no UNSEEN line: the message is \Seen now
    first.close()
    second.close()
