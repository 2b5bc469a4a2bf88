"""SUBSCRIBE against the real server (RFC 3501 §6.3.6).

Chosen behaviour: SUBSCRIBE needs an existing folder, `NO [NONEXISTENT]` otherwise, also for a name that is
only a level of the hierarchy (\\Noselect). RFC 3501 §6.3.6: "A server MAY validate the mailbox argument to
SUBSCRIBE to verify that it exists"; Dovecot does the same (cmd-subscribe.c, `NO [NONEXISTENT]`), also for a
name still subscribed after its folder was deleted (DELETE leaves the subscription, §6.3.6).
Every folder is subscribed when created. SUBSCRIBE twice is no error.

LIST (SUBSCRIBED) (RFC 5258 selection option) lists the subscribed names, those without a folder
`\\NonExistent` (§3.4), with `\\HasChildren` when folders lie below them; RETURN (SUBSCRIBED) marks the
subscribed names among those LIST returns anyway.
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


def test_a_deleted_folder_stays_subscribed_but_cannot_be_subscribed_again(box: Box) -> None:
    raw = box.raw()
    raw.command("a1", "CREATE Courrier")
    raw.command("a2", "DELETE Courrier")
    assert raw.command("a3", 'LSUB "" C*') == [b'* LSUB (\\Noselect) "/" Courrier', b"a3 OK LSUB completed"]
    assert raw.command("a4", "SUBSCRIBE Courrier") == [b"a4 NO [NONEXISTENT] no folder Courrier"]
    assert raw.command("a5", 'LSUB "" C*') == [b'* LSUB (\\Noselect) "/" Courrier', b"a5 OK LSUB completed"]
    raw.close()


def test_list_subscribed(box: Box) -> None:
    raw = box.raw()
    raw.command("a1", "CREATE Courrier")
    raw.command("a2", "CREATE Dossiers/2026")
    raw.command("a3", "DELETE Courrier")
    raw.command("a4", "DELETE Dossiers")
    raw.command("a5", "UNSUBSCRIBE Junk")
    assert raw.command("a6", 'LIST (SUBSCRIBED) "" *') == [  # special uses only when asked (RFC 6154 §3)
        b'* LIST (\\HasNoChildren \\Subscribed) "/" Archive',
        b'* LIST (\\NonExistent \\Subscribed) "/" Courrier',
        b'* LIST (\\NonExistent \\HasChildren \\Subscribed) "/" Dossiers',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" Dossiers/2026',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" Drafts',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" INBOX',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" Sent',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" Trash',
        b"a6 OK LIST completed",
    ]
    assert raw.command("a7", 'LIST (SUBSCRIBED SPECIAL-USE) "" *') == [  # both: no special use without a folder
        b'* LIST (\\HasNoChildren \\Archive \\Subscribed) "/" Archive',
        b'* LIST (\\HasNoChildren \\Drafts \\Subscribed) "/" Drafts',
        b'* LIST (\\HasNoChildren \\Sent \\Subscribed) "/" Sent',
        b'* LIST (\\HasNoChildren \\Trash \\Subscribed) "/" Trash',
        b"a7 OK LIST completed",
    ]
    assert raw.command("a8", 'LIST "" * RETURN (SUBSCRIBED)') == [  # the folders, subscribed or not
        b'* LIST (\\HasNoChildren \\Subscribed) "/" Archive',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" Dossiers/2026',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" Drafts',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" INBOX',
        b'* LIST (\\HasNoChildren) "/" Junk',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" Sent',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" Trash',
        b"a8 OK LIST completed",
    ]
    assert raw.command("a9", 'LIST "" D% RETURN (SUBSCRIBED)') == [  # the level left by DELETE: subscribed
        b'* LIST (\\Noselect \\HasChildren \\Subscribed) "/" Dossiers',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" Drafts',
        b"a9 OK LIST completed",
    ]
    raw.command("b1", "UNSUBSCRIBE Dossiers")
    assert raw.command("b2", 'LIST (SUBSCRIBED) "" D*') == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" Dossiers/2026',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" Drafts',
        b"b2 OK LIST completed",
    ]
    raw.close()
