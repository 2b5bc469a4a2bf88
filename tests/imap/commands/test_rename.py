"""RENAME against the real server (RFC 3501 §6.3.5; names in modified UTF-7, §5.1.3).

- Inferiors are renamed with the folder; a name that is only a level of the hierarchy (\\Noselect, left by
  DELETE) renames its inferiors.
- The destination must not exist (`NO [ALREADYEXISTS]`, also for an inferior's new name), nor lie inside the
  source (`NO [CANNOT]`).
- RENAME INBOX moves its messages to a new folder and leaves INBOX empty; INBOX's inferiors stay where they
  are, so "INBOX/..." is a valid destination.
- The destination's superiors are not created (RFC 3501 asks it of CREATE only; RFC 9051 §6.3.6 says SHOULD):
  they show as \\Noselect levels, as after DELETE.
- The renamed folder gets a new UIDVALIDITY (the UIDs belong to the new name); a session that has it
  selected keeps it selected.
- Subscriptions move with the names (RFC 3501 says nothing; Dovecot does this): those of the name and of every
  name below it, folders or not (a deleted folder's name stays subscribed, §6.3.6). A new name subscribed
  already stays so. RENAME INBOX: INBOX stays subscribed, the new folder is subscribed.
"""

from __future__ import annotations

from tests.imap.conftest import Box, Raw, message, uidvalidity


def test_rename_and_delete(box: Box) -> None:
    box.put(message(1))
    raw = box.raw()
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


def test_refusals(box: Box) -> None:
    raw = box.raw()
    raw.command("a0", "CREATE Dossiers/Dupont")
    assert raw.command("a1", "RENAME") == [b"a1 BAD missing mailbox name"]
    assert raw.command("a2", "RENAME Junk") == [b"a2 BAD missing new mailbox name"]
    assert raw.command("a3", "RENAME Junk Spam Autre") == [b"a3 BAD unexpected extra arguments"]
    assert raw.command("a4", "RENAME Junk Junk") == [b"a4 NO [ALREADYEXISTS] folder Junk already exists"]
    assert raw.command("a5", "RENAME Junk inbox") == [b"a5 NO [ALREADYEXISTS] folder INBOX already exists"]
    assert raw.command("a6", "RENAME junk Spam") == [b"a6 NO [NONEXISTENT] no folder junk"]  # case-sensitive
    assert raw.command("a7", "RENAME Dossiers Dossiers/Dupont/Ancien") == [
        b"a7 NO [CANNOT] cannot rename Dossiers into itself"
    ]
    assert raw.command("a8", "RENAME Junk a//b") == [b"a8 NO [CANNOT] empty hierarchy level in 'a//b'"]
    assert raw.command("a9", "RENAME Junk Spam*") == [b"a9 BAD invalid new mailbox name"]
    assert raw.command("b1", "RENAME R&AOk Spam") == [
        b"b1 BAD invalid mailbox name: unterminated & sequence at offset 1 in modified UTF-7"
    ]
    assert raw.command("b2", "RENAME Junk R&AOk") == [
        b"b2 BAD invalid mailbox name: unterminated & sequence at offset 1 in modified UTF-7"
    ]
    raw.command("b3", "CREATE Classement/Dupont")
    assert raw.command("b4", "RENAME Dossiers Classement") == [
        b"b4 NO [ALREADYEXISTS] folder Classement already exists"
    ]
    raw.command("b5", "DELETE Classement")  # "Classement/Dupont" stays: an inferior's new name is taken
    assert raw.command("b6", "RENAME Dossiers Classement") == [
        b"b6 NO [ALREADYEXISTS] folder Classement/Dupont already exists"
    ]
    raw.close()
    anonymous = Raw(box.gw)
    assert anonymous.command("n1", "RENAME Junk Spam") == [
        b"n1 BAD RENAME is not allowed in the not authenticated state"
    ]
    anonymous.close()


def test_inbox_moves_its_messages_not_its_inferiors(box: Box) -> None:
    box.put(message(1))
    box.put(message(2))
    raw = box.raw()
    raw.command("a1", "CREATE INBOX/Suivi")
    assert raw.command("a2", "RENAME inbox INBOX/2025") == [b"a2 OK RENAME completed"]
    assert raw.command("a3", 'LIST "" INBOX*') == [
        b'* LIST (\\HasChildren) "/" INBOX',
        b'* LIST (\\HasNoChildren) "/" INBOX/2025',
        b'* LIST (\\HasNoChildren) "/" INBOX/Suivi',
        b"a3 OK LIST completed",
    ]
    assert raw.command("a4", "STATUS INBOX/2025 (MESSAGES UIDNEXT)") == [
        b"* STATUS INBOX/2025 (MESSAGES 2 UIDNEXT 3)",
        b"a4 OK STATUS completed",
    ]
    assert raw.command("a5", "STATUS INBOX (MESSAGES UIDNEXT)") == [
        b"* STATUS INBOX (MESSAGES 0 UIDNEXT 3)",  # INBOX keeps its UIDs: no UID is used twice
        b"a5 OK STATUS completed",
    ]
    raw.close()


def test_a_level_of_the_hierarchy_renames_its_inferiors(box: Box) -> None:
    raw = box.raw()
    raw.command("a1", "CREATE Patients/Dupont")
    raw.command("a2", "CREATE Patients/Martin")
    raw.command("a3", "DELETE Patients")
    assert raw.command("a4", "RENAME Patients Dossiers") == [b"a4 OK RENAME completed"]
    assert raw.command("a5", 'LIST "" %/%') == [
        b'* LIST (\\HasNoChildren) "/" Dossiers/Dupont',
        b'* LIST (\\HasNoChildren) "/" Dossiers/Martin',
        b"a5 OK LIST completed",
    ]
    assert raw.command("a6", 'LIST "" D%') == [
        b'* LIST (\\Noselect \\HasChildren) "/" Dossiers',
        b'* LIST (\\HasNoChildren \\Drafts) "/" Drafts',
        b"a6 OK LIST completed",
    ]
    assert raw.command("a7", 'LIST "" P%') == [b"a7 OK LIST completed"]
    raw.close()


def test_accented_and_mixed_case_names(box: Box) -> None:
    box.put(message(1), folder="Junk")
    raw = box.raw()
    before = uidvalidity(raw, "Junk")
    assert raw.command("a1", "RENAME Junk Ind&AOk-sirables/Publicit&AOk-") == [b"a1 OK RENAME completed"]
    assert raw.command("a2", 'LIST "" Ind*') == [  # "*": the folder, its special use kept
        b'* LIST (\\HasNoChildren \\Junk) "/" Ind&AOk-sirables/Publicit&AOk-',
        b"a2 OK LIST completed",
    ]
    assert raw.command("a3", 'LIST "" Ind%') == [
        b'* LIST (\\Noselect \\HasChildren) "/" Ind&AOk-sirables',
        b"a3 OK LIST completed",
    ]
    assert uidvalidity(raw, "Ind&AOk-sirables/Publicit&AOk-") > before
    assert raw.command("a4", "RENAME ind&AOk-sirables/Publicit&AOk- Spam") == [
        b"a4 NO [NONEXISTENT] no folder ind&AOk-sirables/Publicit&AOk-"
    ]
    assert raw.command("a5", "RENAME Ind&AOk-sirables/Publicit&AOk- Archive") == [
        b"a5 NO [ALREADYEXISTS] folder Archive already exists"
    ]
    assert raw.command("a6", "RENAME Archive Ind&AOk-sirables/Publicit&AOk-") == [
        b"a6 NO [ALREADYEXISTS] folder Ind&AOk-sirables/Publicit&AOk- already exists"  # 7-bit texts
    ]
    raw.close()


def test_a_session_that_has_the_folder_selected_keeps_it(box: Box) -> None:
    box.put(message(1), folder="Junk")
    first, second = box.raw(), box.raw()
    second.command("b1", "SELECT Junk")
    assert first.command("a1", "RENAME Junk Spam") == [b"a1 OK RENAME completed"]
    assert second.command("b2", "NOOP") == [b"b2 OK NOOP completed"]
    assert second.command("b3", "UID FETCH 1 (UID)") == [b"* 1 FETCH (UID 1)", b"b3 OK UID FETCH completed"]
    assert second.command("b4", "STATUS Junk (MESSAGES)") == [b"b4 NO [NONEXISTENT] no folder Junk"]
    assert second.command("b5", "STATUS Spam (MESSAGES)") == [b"* STATUS Spam (MESSAGES 1)", b"b5 OK STATUS completed"]
    assert first.command("a2", "RENAME Spam Junk") == [b"a2 OK RENAME completed"]  # renamed back: still selected
    assert second.command("b6", "FETCH 1 (UID)") == [b"* 1 FETCH (UID 1)", b"b6 OK FETCH completed"]
    first.close()
    second.close()


def test_subscriptions_move_with_the_names(box: Box) -> None:
    raw = box.raw()
    raw.command("a1", "CREATE Patients/Dupont/2026")
    raw.command("a2", "CREATE Patients/Martin")
    raw.command("a3", "CREATE Patients/Ancien")
    raw.command("a4", "DELETE Patients/Ancien")  # no folder, still subscribed: moves too
    raw.command("a5", "UNSUBSCRIBE Patients/Martin")  # not subscribed: stays so
    raw.command("a6", "CREATE PatientsX")  # not an inferior: stays
    assert raw.command("a7", "RENAME Patients Dossiers") == [b"a7 OK RENAME completed"]
    assert raw.command("a8", 'LSUB "" P*') == [b'* LSUB () "/" PatientsX', b"a8 OK LSUB completed"]
    assert raw.command("a9", 'LSUB "" Do*') == [
        b'* LSUB () "/" Dossiers',
        b'* LSUB (\\Noselect) "/" Dossiers/Ancien',
        b'* LSUB () "/" Dossiers/Dupont',
        b'* LSUB () "/" Dossiers/Dupont/2026',
        b"a9 OK LSUB completed",
    ]
    assert raw.command("b1", 'LIST "" Dossiers/*') == [
        b'* LIST (\\HasChildren) "/" Dossiers/Dupont',
        b'* LIST (\\HasNoChildren) "/" Dossiers/Dupont/2026',
        b'* LIST (\\HasNoChildren) "/" Dossiers/Martin',
        b"b1 OK LIST completed",
    ]
    raw.command("b2", "DELETE Dossiers")  # a level now, still subscribed: renaming it moves that too
    assert raw.command("b3", "RENAME Dossiers Classement") == [b"b3 OK RENAME completed"]
    assert raw.command("b4", 'LSUB "" %') == [
        b'* LSUB () "/" Archive',
        b'* LSUB (\\Noselect) "/" Classement',
        b'* LSUB () "/" Drafts',
        b'* LSUB () "/" INBOX',
        b'* LSUB () "/" Junk',
        b'* LSUB () "/" PatientsX',
        b'* LSUB () "/" Sent',
        b'* LSUB () "/" Trash',
        b"b4 OK LSUB completed",
    ]
    raw.close()


def test_a_new_name_subscribed_already_stays_so(box: Box) -> None:
    raw = box.raw()
    raw.command("a1", "CREATE Courrier")
    raw.command("a2", "DELETE Courrier")  # "Courrier" stays subscribed
    raw.command("a3", "CREATE Brouillon")
    raw.command("a4", "UNSUBSCRIBE Brouillon")
    assert raw.command("a5", "RENAME Brouillon Courrier") == [b"a5 OK RENAME completed"]
    assert raw.command("a6", 'LSUB "" Courrier') == [b'* LSUB () "/" Courrier', b"a6 OK LSUB completed"]
    assert raw.command("a7", 'LSUB "" B*') == [b"a7 OK LSUB completed"]
    raw.close()


def test_rename_inbox_subscribes_the_new_folder(box: Box) -> None:
    raw = box.raw()
    raw.command("a1", "CREATE INBOX/Suivi")
    raw.command("a2", "UNSUBSCRIBE INBOX/Suivi")
    assert raw.command("a3", "RENAME INBOX Ancien") == [b"a3 OK RENAME completed"]
    assert raw.command("a4", 'LSUB "" *') == [
        b'* LSUB () "/" Ancien',
        b'* LSUB () "/" Archive',
        b'* LSUB () "/" Drafts',
        b'* LSUB () "/" INBOX',  # INBOX stays, and its inferiors stay unsubscribed
        b'* LSUB () "/" Junk',
        b'* LSUB () "/" Sent',
        b'* LSUB () "/" Trash',
        b"a4 OK LSUB completed",
    ]
    raw.close()
