"""CREATE against the real server (RFC 3501 §6.3.3; names in modified UTF-7, §5.1.3).

- A trailing hierarchy delimiter is a hint and is dropped; the superior names a new name needs are created as
  folders too (§6.3.3 SHOULD).
- INBOX in any case exists already: `NO [ALREADYEXISTS]`; other names are case-sensitive (§5.1).
- CREATE of a name that is only a level of the hierarchy (\\Noselect, left by DELETE of a folder with
  inferiors) makes it a folder again.
- A name made again after DELETE gets a greater UIDVALIDITY (§2.3.1.1).
- CREATE-SPECIAL-USE (RFC 6154 §3, `CREATE name (USE (...))`) is not offered: its argument is refused as an
  extra argument.
"""

from __future__ import annotations

from tests.imap.conftest import Box, Raw, uidvalidity


def test_create_hierarchy_rename_delete_and_utf7_names(box: Box) -> None:
    raw = box.raw()
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


def test_superiors_are_created_as_folders(box: Box) -> None:
    raw = box.raw()
    assert raw.command("a1", "CREATE Dossiers/2026/Mars") == [b"a1 OK CREATE completed"]
    assert raw.command("a2", 'LIST "" Dossiers*') == [
        b'* LIST (\\HasChildren) "/" Dossiers',
        b'* LIST (\\HasChildren) "/" Dossiers/2026',
        b'* LIST (\\HasNoChildren) "/" Dossiers/2026/Mars',
        b"a2 OK LIST completed",
    ]
    assert raw.command("a3", "STATUS Dossiers/2026 (MESSAGES)") == [
        b"* STATUS Dossiers/2026 (MESSAGES 0)",
        b"a3 OK STATUS completed",
    ]
    raw.close()


def test_refusals(box: Box) -> None:
    raw = box.raw()
    assert raw.command("a1", "CREATE") == [b"a1 BAD missing mailbox name"]
    assert raw.command("a2", "CREATE Un Deux") == [b"a2 BAD unexpected extra arguments"]
    assert raw.command("a3", "CREATE Envoyes (USE (\\Sent))") == [b"a3 BAD unexpected extra arguments"]
    assert raw.command("a4", "CREATE INBOX") == [b"a4 NO [ALREADYEXISTS] folder INBOX already exists"]
    assert raw.command("a5", "CREATE inbox") == [b"a5 NO [ALREADYEXISTS] folder INBOX already exists"]
    assert raw.command("a6", 'CREATE ""') == [b"a6 NO [CANNOT] folder names are 1 to 255 octets"]
    assert raw.command("a7", "CREATE /") == [b"a7 NO [CANNOT] folder names are 1 to 255 octets"]
    assert raw.command("a8", "CREATE a//b") == [b"a8 NO [CANNOT] empty hierarchy level in 'a//b'"]
    assert raw.command("a9", "CREATE Pat*") == [b"a9 BAD invalid mailbox name"]
    assert raw.command("b1", 'CREATE "Pat%"') == [
        b"b1 NO [CANNOT] folder names cannot contain wildcards or control characters: 'Pat%'"
    ]
    assert raw.command("b2", "CREATE " + "x" * 256) == [b"b2 NO [CANNOT] folder names are 1 to 255 octets"]
    assert raw.command("b3", "CREATE &AOk") == [
        b"b3 BAD invalid mailbox name: unterminated & sequence at offset 0 in modified UTF-7"
    ]
    assert raw.command("b4", "CREATE &AGE-") == [  # "a" must stand for itself
        b"b4 BAD invalid mailbox name: printable US-ASCII encoded in & sequence at offset 0"
    ]
    raw.close()
    anonymous = Raw(box.gw)
    assert anonymous.command("n1", "CREATE Dossiers") == [
        b"n1 BAD CREATE is not allowed in the not authenticated state"
    ]
    anonymous.close()


def test_inbox_may_have_inferiors(box: Box) -> None:
    raw = box.raw()
    assert raw.command("a1", "CREATE inbox/Suivi") == [b"a1 OK CREATE completed"]
    assert raw.command("a2", 'LIST "" INBOX*') == [
        b'* LIST (\\HasChildren) "/" INBOX',
        b'* LIST (\\HasNoChildren) "/" INBOX/Suivi',
        b"a2 OK LIST completed",
    ]
    assert raw.command("a3", "CREATE INBOX/Suivi") == [b"a3 NO [ALREADYEXISTS] folder INBOX/Suivi already exists"]
    raw.close()


def test_accented_mixed_case_and_ampersand_names_round_trip(box: Box) -> None:
    raw = box.raw()
    assert raw.command("a1", "CREATE &AMk-quipe/Cardiologie") == [b"a1 OK CREATE completed"]  # "Équipe/..."
    assert raw.command("a2", "CREATE &AOk-quipe") == [b"a2 OK CREATE completed"]  # "équipe": another name
    assert raw.command("a3", 'CREATE "Comptes &- Rendus"') == [b"a3 OK CREATE completed"]  # "Comptes & Rendus"
    assert raw.command("a4", "CREATE &AMk-quipe") == [
        b"a4 NO [ALREADYEXISTS] folder &AMk-quipe already exists"  # response texts are 7-bit
    ]
    assert raw.command("a5", 'LIST "" *') == [
        b'* LIST (\\HasNoChildren \\Archive) "/" Archive',
        b'* LIST (\\HasNoChildren) "/" "Comptes &- Rendus"',
        b'* LIST (\\HasNoChildren \\Drafts) "/" Drafts',
        b'* LIST (\\HasNoChildren) "/" INBOX',
        b'* LIST (\\HasNoChildren \\Junk) "/" Junk',
        b'* LIST (\\HasNoChildren \\Sent) "/" Sent',
        b'* LIST (\\HasNoChildren \\Trash) "/" Trash',
        b'* LIST (\\HasChildren) "/" &AMk-quipe',
        b'* LIST (\\HasNoChildren) "/" &AMk-quipe/Cardiologie',
        b'* LIST (\\HasNoChildren) "/" &AOk-quipe',
        b"a5 OK LIST completed",
    ]
    raw.close()


def test_create_makes_a_level_of_the_hierarchy_a_folder_again(box: Box) -> None:
    raw = box.raw()
    raw.command("a1", "CREATE Patients/Dupont")
    before = uidvalidity(raw, "Patients")
    assert raw.command("a2", "DELETE Patients") == [b"a2 OK DELETE completed"]
    assert raw.command("a3", 'LIST "" %')[4] == b'* LIST (\\Noselect \\HasChildren) "/" Patients'
    assert raw.command("a4", "CREATE Patients") == [b"a4 OK CREATE completed"]
    assert raw.command("a5", 'LIST "" %')[4] == b'* LIST (\\HasChildren) "/" Patients'
    assert raw.command("a6", "STATUS Patients (MESSAGES UIDNEXT)") == [
        b"* STATUS Patients (MESSAGES 0 UIDNEXT 1)",
        b"a6 OK STATUS completed",
    ]
    assert uidvalidity(raw, "Patients") > before  # RFC 3501 §2.3.1.1: a new folder under an old name
    raw.close()


def test_a_name_made_again_at_once_gets_a_greater_uidvalidity(box: Box) -> None:
    raw = box.raw()
    for n in range(3):
        raw.command(f"c{n}", "CREATE Brouillon")
        before = uidvalidity(raw, "Brouillon")
        assert raw.command(f"d{n}", "DELETE Brouillon") == [f"d{n} OK DELETE completed".encode()]
        raw.command(f"e{n}", "CREATE Brouillon")
        assert uidvalidity(raw, "Brouillon") > before
        raw.command(f"f{n}", "DELETE Brouillon")
    raw.close()


def test_another_session_sees_the_new_folder(box: Box) -> None:
    first, second = box.raw(), box.raw()
    second.command("b1", "SELECT INBOX")
    assert first.command("a1", "CREATE Courrier/Entrant") == [b"a1 OK CREATE completed"]
    assert second.command("b2", 'LIST "" Courrier/%') == [
        b'* LIST (\\HasNoChildren) "/" Courrier/Entrant',
        b"b2 OK LIST completed",
    ]
    assert second.command("b3", "STATUS Courrier/Entrant (MESSAGES)") == [
        b"* STATUS Courrier/Entrant (MESSAGES 0)",
        b"b3 OK STATUS completed",
    ]
    first.close()
    second.close()
