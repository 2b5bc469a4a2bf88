"""LSUB against the real server (RFC 3501 §6.3.9).

- The subscribed names matching the pattern, with no attributes; a subscribed name that has no folder (its
  folder deleted: DELETE leaves the subscription, §6.3.6) with `(\\Noselect)`, as Dovecot answers.
- A pattern ending in "%": a level that is not subscribed (an unsubscribed folder, or a level that is no
  folder at all) but has a subscribed name below it is returned `(\\Noselect)`, as §6.3.9 requires ("foo/bar"
  subscribed, "foo" not: `LSUB "" %` returns foo, flagged \\Noselect); `*` returns only subscribed names.
"""

from __future__ import annotations

from tests.imap.conftest import Box, Raw

STANDARD = [
    b'* LSUB () "/" Archive',
    b'* LSUB () "/" Drafts',
    b'* LSUB () "/" INBOX',
    b'* LSUB () "/" Junk',
    b'* LSUB () "/" Sent',
    b'* LSUB () "/" Trash',
]


def test_lsub_lists_the_subscribed_folders(box: Box) -> None:
    raw = box.raw()
    assert raw.command("a1", 'LSUB "" *') == [*STANDARD, b"a1 OK LSUB completed"]
    raw.command("a2", "UNSUBSCRIBE Drafts")
    assert raw.command("a3", 'LSUB "" %') == [*STANDARD[:1], *STANDARD[2:], b"a3 OK LSUB completed"]
    assert raw.command("a4", 'LSUB "" inbox') == [STANDARD[2], b"a4 OK LSUB completed"]
    assert raw.command("a5", 'LSUB "" ""') == [b"a5 OK LSUB completed"]
    raw.close()


def test_refusals(box: Box) -> None:
    raw = box.raw()
    assert raw.command("a1", "LSUB") == [b"a1 BAD missing mailbox reference"]
    assert raw.command("a2", 'LSUB ""') == [b"a2 BAD missing mailbox pattern"]
    assert raw.command("a3", 'LSUB "" * extra') == [b"a3 BAD unexpected extra arguments"]
    assert raw.command("a4", 'LSUB "" R&AOk') == [
        b"a4 BAD invalid mailbox name: unterminated & sequence at offset 1 in modified UTF-7"
    ]
    raw.close()
    anonymous = Raw(box.gw)
    assert anonymous.command("n1", 'LSUB "" *') == [b"n1 BAD LSUB is not allowed in the not authenticated state"]
    anonymous.close()


def test_an_unsubscribed_parent_is_noselect_for_percent(box: Box) -> None:
    raw = box.raw()
    raw.command("a1", "CREATE foo/bar")
    raw.command("a2", "UNSUBSCRIBE foo")
    assert raw.command("a3", 'LSUB "" %') == [*STANDARD, b'* LSUB (\\Noselect) "/" foo', b"a3 OK LSUB completed"]
    assert raw.command("a4", 'LSUB "" *') == [*STANDARD, b'* LSUB () "/" foo/bar', b"a4 OK LSUB completed"]
    assert raw.command("a5", 'LSUB "" foo') == [b"a5 OK LSUB completed"]
    raw.command("a6", "UNSUBSCRIBE foo/bar")
    assert raw.command("a7", 'LSUB "" %') == [*STANDARD, b"a7 OK LSUB completed"]
    raw.command("a8", "SUBSCRIBE foo")
    assert raw.command("a9", 'LSUB "" f%') == [b'* LSUB () "/" foo', b"a9 OK LSUB completed"]
    raw.close()


def test_a_level_that_is_no_folder(box: Box) -> None:
    raw = box.raw()
    raw.command("a1", "CREATE Patients/Dupont/2026")
    raw.command("a2", "DELETE Patients/Dupont")
    raw.command("a3", "DELETE Patients")
    raw.command("a4", "UNSUBSCRIBE Patients/Dupont")
    raw.command("a5", "UNSUBSCRIBE Patients")  # neither a folder nor subscribed now: only a level
    assert raw.command("a6", 'LSUB "" P%') == [b'* LSUB (\\Noselect) "/" Patients', b"a6 OK LSUB completed"]
    assert raw.command("a7", "LSUB Patients/ %") == [
        b'* LSUB (\\Noselect) "/" Patients/Dupont',
        b"a7 OK LSUB completed",
    ]
    assert raw.command("a8", 'LSUB "" P*') == [b'* LSUB () "/" Patients/Dupont/2026', b"a8 OK LSUB completed"]
    raw.close()


def test_deleted_folders_stay_subscribed(box: Box) -> None:
    raw = box.raw()
    raw.command("a1", "CREATE Patients/Dupont/2026")
    raw.command("a2", "DELETE Patients/Dupont")
    raw.command("a3", "DELETE Patients")
    assert raw.command("a4", 'LSUB "" P*') == [
        b'* LSUB (\\Noselect) "/" Patients',
        b'* LSUB (\\Noselect) "/" Patients/Dupont',
        b'* LSUB () "/" Patients/Dupont/2026',
        b"a4 OK LSUB completed",
    ]
    assert raw.command("a5", 'LSUB "" P%') == [b'* LSUB (\\Noselect) "/" Patients', b"a5 OK LSUB completed"]
    assert raw.command("a6", "DELETE Patients/Dupont/2026") == [b"a6 OK DELETE completed"]
    assert raw.command("a7", 'LIST "" P*') == [b"a7 OK LIST completed"]  # no folder left, nor level
    assert raw.command("a8", 'LSUB "" P*') == [  # the three names, until UNSUBSCRIBE
        b'* LSUB (\\Noselect) "/" Patients',
        b'* LSUB (\\Noselect) "/" Patients/Dupont',
        b'* LSUB (\\Noselect) "/" Patients/Dupont/2026',
        b"a8 OK LSUB completed",
    ]
    raw.command("a9", "UNSUBSCRIBE Patients")
    raw.command("b1", "UNSUBSCRIBE Patients/Dupont")
    assert (
        raw.command("b2", 'LSUB "" %')
        == [  # an unsubscribed level above a subscribed name: \Noselect
            *STANDARD[:4],
            b'* LSUB (\\Noselect) "/" Patients',
            *STANDARD[4:],
            b"b2 OK LSUB completed",
        ]
    )
    assert raw.command("b3", 'LSUB "" Patients/%') == [
        b'* LSUB (\\Noselect) "/" Patients/Dupont',
        b"b3 OK LSUB completed",
    ]
    assert raw.command("b4", 'LSUB "" *') == [
        *STANDARD[:4],
        b'* LSUB (\\Noselect) "/" Patients/Dupont/2026',
        *STANDARD[4:],
        b"b4 OK LSUB completed",
    ]
    raw.command("b5", "UNSUBSCRIBE Patients/Dupont/2026")
    assert raw.command("b6", 'LSUB "" *') == [*STANDARD, b"b6 OK LSUB completed"]
    raw.close()


def test_accented_names(box: Box) -> None:
    raw = box.raw()
    raw.command("a1", "CREATE &AMk-quipe/Cardiologie")  # "Équipe/Cardiologie"
    raw.command("a2", "UNSUBSCRIBE &AMk-quipe")
    assert raw.command("a3", 'LSUB "" &AMk-%') == [b'* LSUB (\\Noselect) "/" &AMk-quipe', b"a3 OK LSUB completed"]
    assert raw.command("a4", 'LSUB "" &AMk-*') == [
        b'* LSUB () "/" &AMk-quipe/Cardiologie',
        b"a4 OK LSUB completed",
    ]
    raw.close()


def test_another_session_sees_changes(box: Box) -> None:
    first, second = box.raw(), box.raw()
    first.command("a1", "CREATE Courrier")
    assert second.command("b1", 'LSUB "" C*') == [b'* LSUB () "/" Courrier', b"b1 OK LSUB completed"]
    first.command("a2", "UNSUBSCRIBE Courrier")
    assert second.command("b2", 'LSUB "" C*') == [b"b2 OK LSUB completed"]
    first.close()
    second.close()
