"""LIST against the real server (RFC 3501 §6.3.8; RFC 3348 CHILDREN; RFC 6154 SPECIAL-USE).

- `LIST "" ""` gives the hierarchy delimiter; `*` matches anything, `%` anything but the delimiter; the
  reference is prefixed to the pattern; INBOX matches in any case (§5.1).
- Every folder has \\HasChildren or \\HasNoChildren (RFC 3348), the special-use folders their attribute
  (RFC 6154 §2).
- Levels of the hierarchy that are not folders (a parent deleted, or never created by RENAME): a pattern
  ending in "%" returns them `(\\Noselect \\HasChildren)` (§6.3.8), so every folder is reachable level by
  level; `*` returns only the folders, as in RFC 3501 §6.3.4's second example.
- Names are sent in modified UTF-7 and patterns are read in it (§5.1.3).
- LIST-EXTENDED (RFC 5258) is not advertised; the `(SPECIAL-USE)` selection option of RFC 6154 §3 is answered.
"""

from __future__ import annotations

from tests.imap.conftest import Box, Raw

STANDARD = [
    b'* LIST (\\HasNoChildren \\Archive) "/" Archive',
    b'* LIST (\\HasNoChildren \\Drafts) "/" Drafts',
    b'* LIST (\\HasNoChildren) "/" INBOX',
    b'* LIST (\\HasNoChildren \\Junk) "/" Junk',
    b'* LIST (\\HasNoChildren \\Sent) "/" Sent',
    b'* LIST (\\HasNoChildren \\Trash) "/" Trash',
]


def test_list_shows_the_special_use_folders(box: Box) -> None:
    raw = box.raw()
    assert raw.command("a1", 'LIST "" *') == [*STANDARD, b"a1 OK LIST completed"]
    assert raw.command("a2", 'LIST "" ""') == [b'* LIST (\\Noselect) "/" ""', b"a2 OK LIST completed"]
    assert raw.command("a3", 'LIST "" inbox') == [b'* LIST (\\HasNoChildren) "/" INBOX', b"a3 OK LIST completed"]
    assert raw.command("a4", 'LIST (SPECIAL-USE) "" *')[:2] == [STANDARD[0], STANDARD[1]]
    assert raw.command("a5", "NAMESPACE") == [b'* NAMESPACE (("" "/")) NIL NIL', b"a5 OK NAMESPACE completed"]
    raw.close()


def test_special_use_selection(box: Box) -> None:
    raw = box.raw()
    assert raw.command("a1", 'LIST (SPECIAL-USE) "" *') == [
        STANDARD[0],
        STANDARD[1],
        STANDARD[3],
        STANDARD[4],
        STANDARD[5],
        b"a1 OK LIST completed",
    ]
    raw.close()


def test_refusals(box: Box) -> None:
    raw = box.raw()
    assert raw.command("a1", "LIST") == [b"a1 BAD missing mailbox reference"]
    assert raw.command("a2", 'LIST ""') == [b"a2 BAD missing mailbox pattern"]
    assert raw.command("a3", 'LIST "" * extra') == [b"a3 BAD unexpected extra arguments"]
    assert raw.command("a4", 'LIST "" R&AOk') == [
        b"a4 BAD invalid mailbox name: unterminated & sequence at offset 1 in modified UTF-7"
    ]
    assert raw.command("a5", "LIST &AOk *") == [
        b"a5 BAD invalid mailbox name: unterminated & sequence at offset 0 in modified UTF-7"
    ]
    assert raw.command("a6", 'LIST "" ' + "%" * 1025) == [b"a6 BAD LIST pattern longer than 1024 characters"]
    assert raw.command("a7", 'LIST "" Nulle') == [b"a7 OK LIST completed"]  # no match is no error
    raw.close()
    anonymous = Raw(box.gw)
    assert anonymous.command("n1", 'LIST "" *') == [b"n1 BAD LIST is not allowed in the not authenticated state"]
    anonymous.close()


def test_wildcards_reference_and_children(box: Box) -> None:
    raw = box.raw()
    raw.command("a1", "CREATE Patients/Dupont/2026")
    raw.command("a2", "CREATE Patients/Martin")
    raw.command("a3", "CREATE INBOX/Suivi")
    assert raw.command("a4", 'LIST "" %') == [
        STANDARD[0],
        STANDARD[1],
        b'* LIST (\\HasChildren) "/" INBOX',
        STANDARD[3],
        b'* LIST (\\HasChildren) "/" Patients',
        STANDARD[4],
        STANDARD[5],
        b"a4 OK LIST completed",
    ]
    assert raw.command("a5", "LIST Patients/ %") == [
        b'* LIST (\\HasChildren) "/" Patients/Dupont',
        b'* LIST (\\HasNoChildren) "/" Patients/Martin',
        b"a5 OK LIST completed",
    ]
    assert raw.command("a6", "LIST Patients/ *") == [
        b'* LIST (\\HasChildren) "/" Patients/Dupont',
        b'* LIST (\\HasNoChildren) "/" Patients/Dupont/2026',
        b'* LIST (\\HasNoChildren) "/" Patients/Martin',
        b"a6 OK LIST completed",
    ]
    assert raw.command("a7", 'LIST "" %/%/%') == [
        b'* LIST (\\HasNoChildren) "/" Patients/Dupont/2026',
        b"a7 OK LIST completed",
    ]
    assert raw.command("a8", 'LIST "" inbox/%') == [
        b'* LIST (\\HasNoChildren) "/" INBOX/Suivi',
        b"a8 OK LIST completed",
    ]
    assert raw.command("a9", 'LIST "" P*n') == [
        b'* LIST (\\HasNoChildren) "/" Patients/Martin',
        b"a9 OK LIST completed",
    ]
    raw.close()


def test_levels_that_are_not_folders(box: Box) -> None:
    raw = box.raw()
    raw.command("a1", "CREATE Patients/Dupont/2026")
    raw.command("a2", "DELETE Patients/Dupont")
    raw.command("a3", "DELETE Patients")
    raw.command("a4", "RENAME Junk Filtres/Publicite")  # superiors of a RENAME are not created
    assert raw.command("a5", 'LIST "" %') == [
        STANDARD[0],
        STANDARD[1],
        b'* LIST (\\Noselect \\HasChildren) "/" Filtres',
        STANDARD[2],
        b'* LIST (\\Noselect \\HasChildren) "/" Patients',
        STANDARD[4],
        STANDARD[5],
        b"a5 OK LIST completed",
    ]
    assert raw.command("a6", 'LIST "" *') == [
        STANDARD[0],
        STANDARD[1],
        b'* LIST (\\HasNoChildren \\Junk) "/" Filtres/Publicite',
        STANDARD[2],
        b'* LIST (\\HasNoChildren) "/" Patients/Dupont/2026',
        STANDARD[4],
        STANDARD[5],
        b"a6 OK LIST completed",
    ]
    assert raw.command("a7", 'LIST "" Patients/%') == [
        b'* LIST (\\Noselect \\HasChildren) "/" Patients/Dupont',
        b"a7 OK LIST completed",
    ]
    assert raw.command("a8", 'LIST "" Patients') == [b"a8 OK LIST completed"]  # a level answers "%" only
    assert raw.command("a9", 'LIST (SPECIAL-USE) "" %') == [
        STANDARD[0],
        STANDARD[1],
        STANDARD[4],
        STANDARD[5],
        b"a9 OK LIST completed",
    ]
    raw.close()


def test_a_folder_above_a_level_has_children(box: Box) -> None:
    raw = box.raw()
    raw.command("a1", "CREATE Dossiers/2026/Mars")
    raw.command("a2", "DELETE Dossiers/2026")
    assert raw.command("a3", 'LIST "" Dossiers*') == [
        b'* LIST (\\HasChildren) "/" Dossiers',  # through the level Dossiers/2026
        b'* LIST (\\HasNoChildren) "/" Dossiers/2026/Mars',
        b"a3 OK LIST completed",
    ]
    raw.close()


def test_mixed_case_and_accented_names(box: Box) -> None:
    raw = box.raw()
    raw.command("a1", "CREATE R&AOk-sultats/H&AOk-matologie")  # "Résultats/Hématologie"
    raw.command("a2", "CREATE r&AOk-sultats")
    assert raw.command("a3", 'LIST "" R&AOk-sultats*') == [
        b'* LIST (\\HasChildren) "/" R&AOk-sultats',
        b'* LIST (\\HasNoChildren) "/" R&AOk-sultats/H&AOk-matologie',
        b"a3 OK LIST completed",
    ]
    assert raw.command("a4", 'LIST "" r%') == [b'* LIST (\\HasNoChildren) "/" r&AOk-sultats', b"a4 OK LIST completed"]
    assert raw.command("a5", 'LIST "" *&AOk-*') == [  # "*é*"
        b'* LIST (\\HasChildren) "/" R&AOk-sultats',
        b'* LIST (\\HasNoChildren) "/" R&AOk-sultats/H&AOk-matologie',
        b'* LIST (\\HasNoChildren) "/" r&AOk-sultats',
        b"a5 OK LIST completed",
    ]
    raw.close()


def test_another_session_sees_changes(box: Box) -> None:
    first, second = box.raw(), box.raw()
    second.command("b1", "SELECT INBOX")
    first.command("a1", "CREATE Courrier")
    first.command("a2", "RENAME Sent Envoyes")
    assert second.command("b2", 'LIST "" %') == [
        STANDARD[0],
        b'* LIST (\\HasNoChildren) "/" Courrier',
        STANDARD[1],
        b'* LIST (\\HasNoChildren \\Sent) "/" Envoyes',
        STANDARD[2],
        STANDARD[3],
        STANDARD[5],
        b"b2 OK LIST completed",
    ]
    first.close()
    second.close()
