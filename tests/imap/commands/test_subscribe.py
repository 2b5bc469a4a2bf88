"""SUBSCRIBE against the real server (RFC 3501 §6.3.6).

Chosen behaviour: SUBSCRIBE needs an existing folder, `NO [NONEXISTENT]` otherwise, also for a name that is
only a level of the hierarchy (\\Noselect). RFC 3501 §6.3.6: "A server MAY validate the mailbox argument to
SUBSCRIBE to verify that it exists"; Dovecot does the same (cmd-subscribe.c, `NO [NONEXISTENT]`). Subscriptions
live on the folders here, so a subscription to a name with no folder could not be kept anyway.
Every folder is subscribed when created. SUBSCRIBE twice is no error.
"""

from __future__ import annotations

from tests.imap.conftest import Box, Raw


def test_subscriptions(box: Box) -> None:
    raw = box.raw()
    assert raw.command("a1", "UNSUBSCRIBE Junk") == [b"a1 OK UNSUBSCRIBE completed"]
    assert b'* LSUB () "/" Junk' not in raw.command("a2", 'LSUB "" *')
    assert raw.command("a3", 'LSUB "" Sent') == [b'* LSUB () "/" Sent', b"a3 OK LSUB completed"]
    assert raw.command("a4", "SUBSCRIBE Junk") == [b"a4 OK SUBSCRIBE completed"]
    assert raw.command("a5", 'LSUB "" J*') == [b'* LSUB () "/" Junk', b"a5 OK LSUB completed"]
    assert raw.command("a6", "SUBSCRIBE Nulle") == [b"a6 NO [NONEXISTENT] no folder Nulle"]
    raw.close()


def test_refusals(box: Box) -> None:
    raw = box.raw()
    raw.command("a0", "CREATE Patients/Dupont")
    raw.command("a1", "DELETE Patients")
    assert raw.command("a2", "SUBSCRIBE") == [b"a2 BAD missing mailbox name"]
    assert raw.command("a3", "SUBSCRIBE Junk Sent") == [b"a3 BAD unexpected extra arguments"]
    assert raw.command("a4", "SUBSCRIBE junk") == [b"a4 NO [NONEXISTENT] no folder junk"]
    assert raw.command("a5", "SUBSCRIBE Patients") == [b"a5 NO [NONEXISTENT] no folder Patients"]  # \Noselect
    assert raw.command("a6", "SUBSCRIBE R&AOk") == [
        b"a6 BAD invalid mailbox name: unterminated & sequence at offset 1 in modified UTF-7"
    ]
    assert raw.command("a7", "SUBSCRIBE R&AOk-sultats") == [b"a7 NO [NONEXISTENT] no folder R&AOk-sultats"]
    raw.close()
    anonymous = Raw(box.gw)
    assert anonymous.command("n1", "SUBSCRIBE Junk") == [
        b"n1 BAD SUBSCRIBE is not allowed in the not authenticated state"
    ]
    anonymous.close()


def test_new_folders_are_subscribed_and_subscribe_twice_is_fine(box: Box) -> None:
    raw = box.raw()
    raw.command("a1", "CREATE Patients/Dupont")
    assert raw.command("a2", 'LSUB "" Patients*') == [
        b'* LSUB () "/" Patients',
        b'* LSUB () "/" Patients/Dupont',
        b"a2 OK LSUB completed",
    ]
    assert raw.command("a3", "SUBSCRIBE Patients") == [b"a3 OK SUBSCRIBE completed"]
    assert raw.command("a4", "SUBSCRIBE Patients") == [b"a4 OK SUBSCRIBE completed"]
    assert raw.command("a5", 'LSUB "" Patients') == [b'* LSUB () "/" Patients', b"a5 OK LSUB completed"]
    raw.close()


def test_accented_names_and_inbox(box: Box) -> None:
    raw = box.raw()
    raw.command("a1", "CREATE R&AOk-sultats")  # "Résultats"
    raw.command("a2", "UNSUBSCRIBE R&AOk-sultats")
    assert raw.command("a3", 'LSUB "" R*') == [b"a3 OK LSUB completed"]
    assert raw.command("a4", "SUBSCRIBE R&AOk-sultats") == [b"a4 OK SUBSCRIBE completed"]
    assert raw.command("a5", 'LSUB "" R*') == [b'* LSUB () "/" R&AOk-sultats', b"a5 OK LSUB completed"]
    raw.command("a6", "UNSUBSCRIBE INBOX")
    assert raw.command("a7", "SUBSCRIBE inbox") == [b"a7 OK SUBSCRIBE completed"]  # INBOX in any case
    assert raw.command("a8", 'LSUB "" INBOX') == [b'* LSUB () "/" INBOX', b"a8 OK LSUB completed"]
    raw.close()


def test_another_session_sees_the_subscription(box: Box) -> None:
    first, second = box.raw(), box.raw()
    second.command("b1", "SELECT INBOX")
    first.command("a1", "UNSUBSCRIBE Trash")
    assert second.command("b2", 'LSUB "" T*') == [b"b2 OK LSUB completed"]
    first.command("a2", "SUBSCRIBE Trash")
    assert second.command("b3", 'LSUB "" T*') == [b'* LSUB () "/" Trash', b"b3 OK LSUB completed"]
    first.close()
    second.close()
