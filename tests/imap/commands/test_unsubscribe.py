"""UNSUBSCRIBE against the real server (RFC 3501 §6.3.7).

Chosen behaviour: UNSUBSCRIBE of a name that has no folder (never had, or deleted since) succeeds: the name is
not in the subscription list, which is what was asked; a client cleaning up after a DELETE made elsewhere must
not be stuck (Dovecot does not check either). A deleted folder's name stays subscribed (RFC 3501 §6.3.6), LSUB
showing it \\Noselect, until UNSUBSCRIBE removes it.
"""

from __future__ import annotations

from tests.imap.conftest import Box, Raw


def test_unsubscribe_hides_from_lsub_not_from_list(box: Box) -> None:
    raw = box.raw()
    assert raw.command("a1", "UNSUBSCRIBE Junk") == [b"a1 OK UNSUBSCRIBE completed"]
    assert raw.command("a2", 'LSUB "" J*') == [b"a2 OK LSUB completed"]
    assert raw.command("a3", 'LIST "" J*') == [b'* LIST (\\HasNoChildren \\Junk) "/" Junk', b"a3 OK LIST completed"]
    assert raw.command("a4", "UNSUBSCRIBE Junk") == [b"a4 OK UNSUBSCRIBE completed"]  # twice: fine
    raw.close()


def test_refusals(box: Box) -> None:
    raw = box.raw()
    assert raw.command("a1", "UNSUBSCRIBE") == [b"a1 BAD missing mailbox name"]
    assert raw.command("a2", "UNSUBSCRIBE Junk Sent") == [b"a2 BAD unexpected extra arguments"]
    assert raw.command("a3", "UNSUBSCRIBE R&AOk") == [
        b"a3 BAD invalid mailbox name: unterminated & sequence at offset 1 in modified UTF-7"
    ]
    raw.close()
    anonymous = Raw(box.gw)
    assert anonymous.command("n1", "UNSUBSCRIBE Junk") == [
        b"n1 BAD UNSUBSCRIBE is not allowed in the not authenticated state"
    ]
    anonymous.close()


def test_a_name_without_folder(box: Box) -> None:
    raw = box.raw()
    assert raw.command("a1", "UNSUBSCRIBE Nulle") == [b"a1 OK UNSUBSCRIBE completed"]
    raw.command("a2", "CREATE Patients/Dupont")
    assert raw.command("a3", "DELETE Patients/Dupont") == [b"a3 OK DELETE completed"]
    assert raw.command("a4", "UNSUBSCRIBE Patients/Dupont") == [b"a4 OK UNSUBSCRIBE completed"]  # kept by DELETE
    assert raw.command("a5", 'LSUB "" Patients*') == [b'* LSUB () "/" Patients', b"a5 OK LSUB completed"]
    raw.command("a6", "DELETE Patients")
    assert raw.command("a7", "UNSUBSCRIBE Patients") == [b"a7 OK UNSUBSCRIBE completed"]
    assert raw.command("a8", 'LSUB "" Patients*') == [b"a8 OK LSUB completed"]
    raw.close()


def test_a_folder_deleted_by_another_session(box: Box) -> None:
    first, second = box.raw(), box.raw()
    first.command("a1", "CREATE R&AOk-sultats")  # "Résultats"
    assert second.command("b1", 'LSUB "" R*') == [b'* LSUB () "/" R&AOk-sultats', b"b1 OK LSUB completed"]
    first.command("a2", "DELETE R&AOk-sultats")
    assert second.command("b2", 'LSUB "" R*') == [b'* LSUB (\\Noselect) "/" R&AOk-sultats', b"b2 OK LSUB completed"]
    assert second.command("b3", "UNSUBSCRIBE R&AOk-sultats") == [b"b3 OK UNSUBSCRIBE completed"]
    assert second.command("b4", 'LSUB "" R*') == [b"b4 OK LSUB completed"]
    assert first.command("a3", 'LSUB "" R*') == [b"a3 OK LSUB completed"]
    first.close()
    second.close()


def test_inbox_in_any_case(box: Box) -> None:
    raw = box.raw()
    assert raw.command("a1", "UNSUBSCRIBE iNbOx") == [b"a1 OK UNSUBSCRIBE completed"]
    assert raw.command("a2", 'LSUB "" INBOX') == [b"a2 OK LSUB completed"]
    raw.close()
