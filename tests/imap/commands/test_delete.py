"""DELETE against the real server (RFC 3501 §6.3.4; RFC 9051 §7.1 HASCHILDREN; RFC 3501 §7.1.5 BYE).

Hierarchy, following RFC 3501 §6.3.4's examples:
- DELETE of a folder with inferiors removes its messages and the folder; its name stays as a level of the
  hierarchy while inferiors exist: `LIST "" %` shows it `(\\Noselect \\HasChildren)` (second example, A86),
  `LIST "" *` shows only the inferiors (A85). SELECT / STATUS of it: `NO [NONEXISTENT]`.
- DELETE of a name that is only such a level: `NO [HASCHILDREN] Name "foo" has inferior hierarchical names`
  (the first example's A684 text, RFC 9051's code); once the inferiors are gone, the name is gone too.
- CREATE makes it a folder again (empty, new UIDVALIDITY).
- The name stays subscribed (RFC 3501 §6.3.6: "The server MUST NOT unilaterally remove an existing mailbox
  name from the subscription list even if a mailbox by that name no longer exists"): LSUB shows it
  `(\\Noselect)` until UNSUBSCRIBE, or until CREATE makes it a folder again.

Also: INBOX cannot be deleted (`NO [CANNOT]`), nor the folder this session has selected (`NO [INUSE]`, RFC 2180
§3 leaves it to the server); another session that has it selected gets `* BYE` at its next command (§7.1.5),
but leaves quietly with CLOSE or UNSELECT.
"""

from __future__ import annotations

from tests.imap.conftest import Box, Raw, message

TOP = [
    b'* LIST (\\HasNoChildren \\Archive) "/" Archive',
    b'* LIST (\\HasNoChildren \\Drafts) "/" Drafts',
    b'* LIST (\\HasNoChildren) "/" INBOX',
    b'* LIST (\\HasNoChildren \\Junk) "/" Junk',
]
BOTTOM = [
    b'* LIST (\\HasNoChildren \\Sent) "/" Sent',
    b'* LIST (\\HasNoChildren \\Trash) "/" Trash',
]


def test_delete_a_folder_and_its_messages(box: Box) -> None:
    box.put(message(1), folder="Archive")
    raw = box.raw()
    assert raw.command("a1", "DELETE Archive") == [b"a1 OK DELETE completed"]
    assert raw.command("a2", 'LIST "" A*') == [b"a2 OK LIST completed"]
    assert raw.command("a3", "STATUS Archive (MESSAGES)") == [b"a3 NO [NONEXISTENT] no folder Archive"]
    assert raw.command("a4", "DELETE Archive") == [b"a4 NO [NONEXISTENT] no folder Archive"]
    assert raw.command("a5", "CREATE Archive") == [b"a5 OK CREATE completed"]
    assert raw.command("a6", "STATUS Archive (MESSAGES UIDNEXT)") == [
        b"* STATUS Archive (MESSAGES 0 UIDNEXT 1)",
        b"a6 OK STATUS completed",
    ]
    raw.close()


def test_the_messages_deleted_with_a_folder_are_on_record(box: Box) -> None:
    first, second = message(1), message(2)
    box.put(first, folder="Archive")
    box.put(second, folder="Archive")
    raw = box.raw()
    assert raw.command("a1", "DELETE Archive") == [b"a1 OK DELETE completed"]
    raw.close()
    events = box.gw.node.cli("audit", "search", "--event", "imap.folder.deleted", "--principal", box.address, "--json")
    ids = [m.split(b"Message-ID: ")[1].split(b"\r\n")[0].decode() for m in (first, second)]
    assert [e["response"] for e in events.json()] == [  # type: ignore[index]
        {"result": "done", "folder": "Archive", "uids": [1, 2], "message_ids": ids}
    ]


def test_the_subscription_stays(box: Box) -> None:
    raw = box.raw()
    raw.command("a1", "CREATE Courrier")
    raw.command("a2", "CREATE Dossiers/2026")
    assert raw.command("a3", "DELETE Courrier") == [b"a3 OK DELETE completed"]
    assert raw.command("a4", "DELETE Dossiers") == [b"a4 OK DELETE completed"]
    assert raw.command("a5", 'LIST "" C*') == [b"a5 OK LIST completed"]
    assert raw.command("a6", 'LSUB "" C*') == [b'* LSUB (\\Noselect) "/" Courrier', b"a6 OK LSUB completed"]
    assert raw.command("a7", 'LSUB "" Do*') == [
        b'* LSUB (\\Noselect) "/" Dossiers',
        b'* LSUB () "/" Dossiers/2026',
        b"a7 OK LSUB completed",
    ]
    assert raw.command("a8", "SELECT Courrier") == [b"a8 NO [NONEXISTENT] no folder Courrier"]
    assert raw.command("a9", "CREATE Courrier") == [b"a9 OK CREATE completed"]  # selectable again
    assert raw.command("b1", 'LSUB "" C*') == [b'* LSUB () "/" Courrier', b"b1 OK LSUB completed"]
    assert raw.command("b2", "DELETE Courrier") == [b"b2 OK DELETE completed"]
    assert raw.command("b3", "UNSUBSCRIBE Courrier") == [b"b3 OK UNSUBSCRIBE completed"]
    assert raw.command("b4", 'LSUB "" C*') == [b"b4 OK LSUB completed"]
    assert raw.command("b5", "CREATE Courrier") == [b"b5 OK CREATE completed"]  # a new folder is subscribed
    assert raw.command("b6", 'LSUB "" C*') == [b'* LSUB () "/" Courrier', b"b6 OK LSUB completed"]
    raw.close()


def test_refusals(box: Box) -> None:
    raw = box.raw()
    assert raw.command("a1", "DELETE") == [b"a1 BAD missing mailbox name"]
    assert raw.command("a2", "DELETE Junk Trash") == [b"a2 BAD unexpected extra arguments"]
    assert raw.command("a3", "DELETE Nulle") == [b"a3 NO [NONEXISTENT] no folder Nulle"]
    assert raw.command("a4", "DELETE INBOX") == [b"a4 NO [CANNOT] INBOX cannot be deleted"]
    assert raw.command("a5", "DELETE iNbOx") == [b"a5 NO [CANNOT] INBOX cannot be deleted"]
    assert raw.command("a6", "DELETE junk") == [b"a6 NO [NONEXISTENT] no folder junk"]  # case-sensitive
    assert raw.command("a7", "DELETE R&AOk") == [
        b"a7 BAD invalid mailbox name: unterminated & sequence at offset 1 in modified UTF-7"
    ]
    assert raw.command("a8", "DELETE R&AOk-sultats") == [b"a8 NO [NONEXISTENT] no folder R&AOk-sultats"]
    raw.command("a9", "SELECT Junk")
    assert raw.command("b1", "DELETE Junk") == [b"b1 NO [INUSE] cannot delete the selected folder"]
    raw.command("b2", "RENAME Junk Spam")  # the check is by folder, not by the name given at SELECT
    assert raw.command("b3", "DELETE Spam") == [b"b3 NO [INUSE] cannot delete the selected folder"]
    assert raw.command("b4", "DELETE Trash") == [b"b4 OK DELETE completed"]  # another one: fine
    raw.close()
    anonymous = Raw(box.gw)
    assert anonymous.command("n1", "DELETE Junk") == [b"n1 BAD DELETE is not allowed in the not authenticated state"]
    anonymous.close()


def test_rfc3501_hierarchy_examples(box: Box) -> None:
    box.put(message(1), folder="INBOX")
    raw = box.raw()
    raw.command("a1", "CREATE foo/bar")
    raw.command("a2", "CREATE blurdybloop")
    box.put(message(2), folder="foo")
    assert raw.command("a3", "DELETE blurdybloop") == [b"a3 OK DELETE completed"]
    assert raw.command("a4", "DELETE foo") == [b"a4 OK DELETE completed"]
    assert raw.command("a5", 'LIST "" *') == [  # names sort by code point: "foo" after "Trash"
        *TOP,
        *BOTTOM,
        b'* LIST (\\HasNoChildren) "/" foo/bar',
        b"a5 OK LIST completed",
    ]
    assert raw.command("a6", 'LIST "" %') == [
        *TOP,
        *BOTTOM,
        b'* LIST (\\Noselect \\HasChildren) "/" foo',
        b"a6 OK LIST completed",
    ]
    assert raw.command("a7", "SELECT foo") == [b"a7 NO [NONEXISTENT] no folder foo"]
    assert raw.command("a8", "STATUS foo (MESSAGES)") == [b"a8 NO [NONEXISTENT] no folder foo"]
    assert raw.command("a9", "DELETE foo") == [b'a9 NO [HASCHILDREN] Name "foo" has inferior hierarchical names']
    assert raw.command("b1", "DELETE foo/bar") == [b"b1 OK DELETE completed"]
    assert raw.command("b2", 'LIST "" %') == [*TOP, *BOTTOM, b"b2 OK LIST completed"]
    assert raw.command("b3", "DELETE foo") == [b"b3 NO [NONEXISTENT] no folder foo"]
    raw.close()


def test_every_level_stays_reachable(box: Box) -> None:
    raw = box.raw()
    raw.command("a1", "CREATE Dossiers/2026/Mars")
    raw.command("a2", "CREATE Dossiers/2026/Avril")
    assert raw.command("a3", "DELETE Dossiers/2026") == [b"a3 OK DELETE completed"]
    assert raw.command("a4", "DELETE Dossiers") == [b"a4 OK DELETE completed"]
    assert raw.command("a5", 'LIST "" D%') == [
        b'* LIST (\\Noselect \\HasChildren) "/" Dossiers',
        b'* LIST (\\HasNoChildren \\Drafts) "/" Drafts',
        b"a5 OK LIST completed",
    ]
    assert raw.command("a6", 'LIST "Dossiers/" %') == [
        b'* LIST (\\Noselect \\HasChildren) "/" Dossiers/2026',
        b"a6 OK LIST completed",
    ]
    assert raw.command("a7", 'LIST "Dossiers/2026/" %') == [
        b'* LIST (\\HasNoChildren) "/" Dossiers/2026/Avril',
        b'* LIST (\\HasNoChildren) "/" Dossiers/2026/Mars',
        b"a7 OK LIST completed",
    ]
    assert raw.command("a8", "DELETE Dossiers/2026") == [
        b'a8 NO [HASCHILDREN] Name "Dossiers/2026" has inferior hierarchical names'
    ]
    raw.close()


def test_accented_names(box: Box) -> None:
    raw = box.raw()
    raw.command("a1", "CREATE R&AOk-sultats/Biologie")  # "Résultats/Biologie"
    assert raw.command("a2", "DELETE R&AOk-sultats") == [b"a2 OK DELETE completed"]
    assert raw.command("a3", "DELETE R&AOk-sultats") == [  # response texts are 7-bit: the wire name
        b'a3 NO [HASCHILDREN] Name "R&AOk-sultats" has inferior hierarchical names'
    ]
    assert raw.command("a4", 'LIST "" R%') == [
        b'* LIST (\\Noselect \\HasChildren) "/" R&AOk-sultats',
        b"a4 OK LIST completed",
    ]
    assert raw.command("a5", "DELETE R&AOk-sultats/Biologie") == [b"a5 OK DELETE completed"]
    assert raw.command("a6", 'LIST "" R*') == [b"a6 OK LIST completed"]
    raw.close()


def test_another_session_with_the_folder_selected(box: Box) -> None:
    box.put(message(1), folder="Junk")
    first, second, third = box.raw(), box.raw(), box.raw()
    second.command("b1", "SELECT Junk")
    third.command("c1", "SELECT Junk")
    assert first.command("a1", "DELETE Junk") == [b"a1 OK DELETE completed"]
    # RFC 3501 §7.1.5: the folder it has selected is gone, the server closes the connection
    assert second.command("b2", "NOOP") == [b"* BYE The selected folder no longer exists", b""]
    # leaving it is fine: CLOSE has nothing left to expunge
    assert third.command("c2", "CLOSE") == [b"c2 OK CLOSE completed"]
    assert third.command("c3", "STATUS Junk (MESSAGES)") == [b"c3 NO [NONEXISTENT] no folder Junk"]
    first.close()
    second.close()
    third.close()


def _replaced_while_selected(box: Box, old: list[bytes], new: list[bytes]) -> tuple[Raw, Raw]:
    """The reader selects Projets (the newest folder, holding `old`); the admin deletes it, creates Autre
    and appends `new` to it. SQLite used to give Autre the deleted folder's id (migration 0010)."""
    admin, reader = box.raw(), box.raw()
    assert admin.command("a1", "CREATE Projets") == [b"a1 OK CREATE completed"]
    for i, m in enumerate(old):
        admin.command(f"p{i}", f"APPEND Projets {{{len(m)}+}}\r\n{m.decode()}")
    assert f"* {len(old)} EXISTS".encode() in reader.command("r1", "SELECT Projets")
    assert admin.command("a2", "DELETE Projets") == [b"a2 OK DELETE completed"]
    assert admin.command("a3", "CREATE Autre") == [b"a3 OK CREATE completed"]
    for i, m in enumerate(new):
        admin.command(f"n{i}", f"APPEND Autre {{{len(m)}+}}\r\n{m.decode()}")
    return admin, reader


def test_a_new_folder_made_after_the_selected_one_was_deleted_is_not_the_selected_one(box: Box) -> None:
    admin, reader = _replaced_while_selected(box, [message(1), message(2), message(3)], [message(9)])
    assert reader.command("r2", "NOOP") == [b"* BYE The selected folder no longer exists", b""]
    admin.close()
    reader.close()


def test_a_new_folder_that_has_caught_up_with_the_deleted_one_is_not_the_selected_one(box: Box) -> None:
    """Past the deleted folder's HIGHESTMODSEQ, the session's look for changes could not tell the new folder
    from it when the id was reused (it answered "* 4 EXISTS"): folder ids are never reused now."""
    admin, reader = _replaced_while_selected(box, [message(1)], [message(n) for n in (5, 6, 7, 8)])
    assert reader.command("r2", "NOOP") == [b"* BYE The selected folder no longer exists", b""]
    admin.close()
    reader.close()


def test_a_fetch_in_a_deleted_folder_returns_none_of_the_new_ones_content(box: Box) -> None:
    """The FETCH runs before the session learns its folder is gone: its messages are read by their own
    ids, never by (folder id, UID), which could name the new folder's messages."""
    admin, reader = _replaced_while_selected(box, [message(1)], [message(9, subject="autre dossier")])
    assert reader.command("r2", "FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])") == [
        b"r2 NO [EXPUNGEISSUED] Some of the requested messages no longer exist"
    ]
    reader.close()
    admin.close()
