"""STATUS against the real server (RFC 3501 §6.3.10; RFC 7162 §3.1.8 HIGHESTMODSEQ).

The items in the order asked; `NO [NONEXISTENT]` for a name with no folder, also a level of the hierarchy
(\\Noselect). STATUS of the selected folder works (§6.3.10 only says a client SHOULD NOT rely on it).
HIGHESTMODSEQ enables CONDSTORE for the connection (RFC 7162 §3.1).
"""

from __future__ import annotations

import re

from tests.imap.conftest import Box, Raw, message


def test_status(box: Box) -> None:
    box.put(message(1), flags=["\\Seen"])
    box.put(message(2))
    raw = box.raw()
    reply = raw.command("a1", "STATUS INBOX (MESSAGES RECENT UIDNEXT UNSEEN HIGHESTMODSEQ)")
    assert reply == [
        b"* STATUS INBOX (MESSAGES 2 RECENT 2 UIDNEXT 3 UNSEEN 1 HIGHESTMODSEQ 3)",
        b"a1 OK STATUS completed",
    ]
    assert raw.command("a2", "STATUS Nulle (MESSAGES)") == [b"a2 NO [NONEXISTENT] no folder Nulle"]
    raw.close()


def test_every_item_in_the_order_asked(box: Box) -> None:
    box.put(message(1))
    raw = box.raw()
    selected = raw.command("a1", "EXAMINE INBOX")
    validity = next(m[1] for m in (re.fullmatch(rb"\* OK \[UIDVALIDITY (\d+)\] UIDs valid", x) for x in selected) if m)
    raw.command("a2", "CLOSE")
    assert raw.command("a3", "STATUS inbox (UIDVALIDITY UNSEEN MESSAGES UIDNEXT RECENT)") == [
        b"* STATUS INBOX (UIDVALIDITY " + validity + b" UNSEEN 1 MESSAGES 1 UIDNEXT 2 RECENT 1)",
        b"a3 OK STATUS completed",
    ]
    assert raw.command("a4", "STATUS Sent (messages)") == [b"* STATUS Sent (MESSAGES 0)", b"a4 OK STATUS completed"]
    raw.close()


def test_refusals(box: Box) -> None:
    raw = box.raw()
    raw.command("a0", "CREATE Patients/Dupont")
    raw.command("a1", "DELETE Patients")
    assert raw.command("a2", "STATUS") == [b"a2 BAD missing mailbox name"]
    assert raw.command("a3", "STATUS INBOX") == [b"a3 BAD missing STATUS items"]
    assert raw.command("a4", "STATUS INBOX ()") == [b"a4 BAD missing STATUS item"]
    assert raw.command("a5", "STATUS INBOX (FOO)") == [b"a5 BAD unknown STATUS item FOO"]
    assert raw.command("a6", "STATUS INBOX MESSAGES") == [b"a6 BAD expected ( before STATUS items"]
    assert raw.command("a7", "STATUS INBOX (MESSAGES) extra") == [b"a7 BAD unexpected extra arguments"]
    assert raw.command("a8", "STATUS R&AOk (MESSAGES)") == [
        b"a8 BAD invalid mailbox name: unterminated & sequence at offset 1 in modified UTF-7"
    ]
    assert raw.command("a9", "STATUS Patients (MESSAGES)") == [b"a9 NO [NONEXISTENT] no folder Patients"]
    assert raw.command("b1", "STATUS sent (MESSAGES)") == [b"b1 NO [NONEXISTENT] no folder sent"]
    # a 7-bit response text, the name as the client sent it (this used to drop the connection)
    assert raw.command("b2", "STATUS R&AOk-sultats (MESSAGES)") == [b"b2 NO [NONEXISTENT] no folder R&AOk-sultats"]
    assert raw.command("b3", 'STATUS "Nulle part" (MESSAGES)') == [b'b3 NO [NONEXISTENT] no folder "Nulle part"']
    assert raw.command("b4", "NOOP") == [b"b4 OK NOOP completed"]
    raw.close()
    anonymous = Raw(box.gw)
    assert anonymous.command("n1", "STATUS INBOX (MESSAGES)") == [
        b"n1 BAD STATUS is not allowed in the not authenticated state"
    ]
    anonymous.close()


def test_accented_and_mixed_case_names(box: Box) -> None:
    raw = box.raw()
    raw.command("a1", "CREATE R&AOk-sultats")  # "Résultats"
    box.put(message(1), folder="Résultats")
    assert raw.command("a2", "STATUS R&AOk-sultats (MESSAGES UNSEEN)") == [
        b"* STATUS R&AOk-sultats (MESSAGES 1 UNSEEN 1)",
        b"a2 OK STATUS completed",
    ]
    assert raw.command("a3", "STATUS r&AOk-sultats (MESSAGES)") == [b"a3 NO [NONEXISTENT] no folder r&AOk-sultats"]
    raw.close()


def test_the_selected_folder_and_another_session(box: Box) -> None:
    box.put(message(1))
    first, second = box.raw(), box.raw()
    first.command("a1", "SELECT INBOX")  # takes \Recent
    assert first.command("a2", "STATUS INBOX (MESSAGES RECENT UNSEEN)") == [
        b"* STATUS INBOX (MESSAGES 1 RECENT 0 UNSEEN 1)",
        b"a2 OK STATUS completed",
    ]
    first.command("a3", "STORE 1 +FLAGS.SILENT (\\Seen)")
    box.put(message(2))
    assert second.command("b1", "STATUS INBOX (MESSAGES RECENT UNSEEN UIDNEXT)") == [
        b"* STATUS INBOX (MESSAGES 2 RECENT 1 UNSEEN 1 UIDNEXT 3)",
        b"b1 OK STATUS completed",
    ]
    first.close()
    second.close()


def test_highestmodseq_enables_condstore(box: Box) -> None:
    box.put(message(1))
    raw = box.raw()
    assert raw.command("a1", "STATUS INBOX (HIGHESTMODSEQ)") == [
        b"* STATUS INBOX (HIGHESTMODSEQ 2)",
        b"a1 OK STATUS completed",
    ]
    assert b"* OK [HIGHESTMODSEQ 2] Highest" in raw.command("a2", "SELECT INBOX")
    raw.close()
