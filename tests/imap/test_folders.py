"""CREATE / DELETE / RENAME / SUBSCRIBE / LIST / LSUB / NAMESPACE (RFC 3501 §6.3; RFC 6154; RFC 3348;
RFC 2342), mixed-case and non-ASCII folder names (modified UTF-7)."""

from __future__ import annotations

from tests.imap.conftest import Box, Raw, message
from tests.smtp.conftest import PASSWORD

STANDARD = [
    b'* LIST (\\HasNoChildren \\Archive) "/" Archive',
    b'* LIST (\\HasNoChildren \\Drafts) "/" Drafts',
    b'* LIST (\\HasNoChildren) "/" INBOX',
    b'* LIST (\\HasNoChildren \\Junk) "/" Junk',
    b'* LIST (\\HasNoChildren \\Sent) "/" Sent',
    b'* LIST (\\HasNoChildren \\Trash) "/" Trash',
]


def login(box: Box) -> Raw:
    raw = Raw(box.gw)
    assert raw.command("l", f'LOGIN {box.address} "{PASSWORD}"')[-1].startswith(b"l OK")
    return raw


def test_list_shows_the_special_use_folders(box: Box) -> None:
    raw = login(box)
    assert raw.command("a1", 'LIST "" *') == [*STANDARD, b"a1 OK LIST completed"]
    assert raw.command("a2", 'LIST "" ""') == [b'* LIST (\\Noselect) "/" ""', b"a2 OK LIST completed"]
    assert raw.command("a3", 'LIST "" inbox') == [b'* LIST (\\HasNoChildren) "/" INBOX', b"a3 OK LIST completed"]
    assert raw.command("a4", 'LIST (SPECIAL-USE) "" *')[:2] == [STANDARD[0], STANDARD[1]]
    assert raw.command("a5", "NAMESPACE") == [b'* NAMESPACE (("" "/")) NIL NIL', b"a5 OK NAMESPACE completed"]
    raw.close()


def test_create_hierarchy_rename_delete_and_utf7_names(box: Box) -> None:
    raw = login(box)
    assert raw.command("a1", "CREATE Patients/") == [b"a1 OK CREATE completed"]
    assert raw.command("a2", "CREATE Patients/Dupont") == [b"a2 OK CREATE completed"]
    assert raw.command("a3", "CREATE patients") == [b"a3 OK CREATE completed"]  # names are case-sensitive
    assert raw.command("a4", "CREATE Patients") == [b"a4 NO [ALREADYEXISTS] folder Patients already exists"]
    assert raw.command("a5", "CREATE R&AOk-sultats") == [b"a5 OK CREATE completed"]  # "Résultats"
    assert raw.command("a6", 'LIST "" P%') == [
        b'* LIST (\\HasChildren) "/" Patients',
        b"a6 OK LIST completed",
    ]
    assert raw.command("a7", 'LIST "Patients/" %') == [
        b'* LIST (\\HasNoChildren) "/" Patients/Dupont',
        b"a7 OK LIST completed",
    ]
    assert raw.command("a8", 'LIST "" R*') == [b'* LIST (\\HasNoChildren) "/" R&AOk-sultats', b"a8 OK LIST completed"]
    assert raw.command("a9", "CREATE R&AOk") == [
        b"a9 BAD invalid mailbox name: unterminated & sequence at offset 1 in modified UTF-7"
    ]
    raw.close()


def test_rename_and_delete(box: Box) -> None:
    box.put(message(1))
    raw = login(box)
    raw.command("a0", "CREATE Dossiers/Dupont")
    assert raw.command("a1", "RENAME Dossiers Archives-2025") == [b"a1 OK RENAME completed"]
    assert raw.command("a2", 'LIST "" Archives-2025*') == [
        b'* LIST (\\HasChildren) "/" Archives-2025',
        b'* LIST (\\HasNoChildren) "/" Archives-2025/Dupont',
        b"a2 OK LIST completed",
    ]
    assert raw.command("a3", "RENAME Nulle Autre") == [b"a3 NO [NONEXISTENT] no folder Nulle"]
    assert raw.command("a4", "RENAME Sent Trash") == [b"a4 NO [ALREADYEXISTS] folder Trash already exists"]
    assert raw.command("a5", "RENAME INBOX Ancien") == [b"a5 OK RENAME completed"]
    assert raw.command("a6", "STATUS Ancien (MESSAGES)")[0] == b"* STATUS Ancien (MESSAGES 1)"
    assert raw.command("a7", "STATUS INBOX (MESSAGES)")[0] == b"* STATUS INBOX (MESSAGES 0)"
    assert raw.command("a8", "DELETE INBOX") == [b"a8 NO [CANNOT] INBOX cannot be deleted"]
    assert raw.command("a9", "DELETE Ancien") == [b"a9 OK DELETE completed"]
    assert raw.command("b1", "DELETE Ancien") == [b"b1 NO [NONEXISTENT] no folder Ancien"]
    raw.command("b2", "SELECT Archives-2025")
    assert raw.command("b3", "DELETE Archives-2025") == [b"b3 NO [INUSE] cannot delete the selected folder"]
    raw.close()


def test_subscriptions(box: Box) -> None:
    raw = login(box)
    assert raw.command("a1", "UNSUBSCRIBE Junk") == [b"a1 OK UNSUBSCRIBE completed"]
    assert b'* LSUB () "/" Junk' not in raw.command("a2", 'LSUB "" *')
    assert raw.command("a3", 'LSUB "" Sent') == [b'* LSUB () "/" Sent', b"a3 OK LSUB completed"]
    assert raw.command("a4", "SUBSCRIBE Junk") == [b"a4 OK SUBSCRIBE completed"]
    assert raw.command("a5", 'LSUB "" J*') == [b'* LSUB () "/" Junk', b"a5 OK LSUB completed"]
    assert raw.command("a6", "SUBSCRIBE Nulle") == [b"a6 NO [NONEXISTENT] no folder Nulle"]
    raw.close()
