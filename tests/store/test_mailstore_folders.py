"""Mailstore folders and the hierarchy (RFC 3501 §6.3.3-6): DELETE of a parent, levels that are no folder,
RENAME of such a level, SUBSCRIBE / UNSUBSCRIBE of names without a folder, UIDVALIDITY of a name made again."""

from __future__ import annotations

import time

import pytest

from gateway.errors import Conflict, NotFound, UsageError
from gateway.store.crypto import KeyEncryptionKey
from gateway.store.db import Database
from gateway.store.mailboxes import MailboxRepository
from gateway.store.mailstore import FolderLimit, HasInferiors, Mailstore
from gateway.store.messages import MessageStore

ALICE = "alice.martin@ch-test.mssante.fr"


@pytest.fixture
async def box(store_db: Database, kek: KeyEncryptionKey) -> Mailstore:
    await MailboxRepository(store_db, kek).create(ALICE, "PER")
    return Mailstore(MessageStore(MailboxRepository(store_db, kek)))


async def names(box: Mailstore) -> list[str]:
    return [f.name for f in await box.folders(ALICE)]


async def test_deleting_a_parent_keeps_its_inferiors(box: Mailstore) -> None:
    await box.create_folder(ALICE, "Patients/Dupont")
    await box.append(ALICE, "Patients", b"Subject: x\r\n\r\ny\r\n")
    await box.delete_folder(ALICE, "Patients")
    assert [n for n in await names(box) if n.startswith("Patients")] == ["Patients/Dupont"]
    with pytest.raises(NotFound):
        await box.folder(ALICE, "Patients")
    with pytest.raises(HasInferiors, match='Name "Patients" has inferior hierarchical names'):
        await box.delete_folder(ALICE, "Patients")
    made = await box.create_folder(ALICE, "Patients")  # a folder again, empty
    assert (await box.status(ALICE, "Patients")).messages == 0
    assert made.uidnext == 1
    await box.delete_folder(ALICE, "Patients")
    await box.delete_folder(ALICE, "Patients/Dupont")
    with pytest.raises(NotFound, match="no folder Patients"):  # no inferiors left: no name left
        await box.delete_folder(ALICE, "Patients")


async def test_has_inferiors_is_a_usage_error_and_inbox_stays(box: Mailstore) -> None:
    assert issubclass(HasInferiors, UsageError)
    with pytest.raises(UsageError, match="INBOX cannot be deleted"):
        await box.delete_folder(ALICE, "inbox")


async def test_renaming_a_level_renames_its_inferiors(box: Mailstore) -> None:
    await box.create_folder(ALICE, "Patients/Dupont")
    await box.create_folder(ALICE, "Patients/Martin/2026")
    await box.delete_folder(ALICE, "Patients")
    await box.rename_folder(ALICE, "Patients", "Dossiers")
    assert [n for n in await names(box) if n.startswith(("Patients", "Dossiers"))] == [
        "Dossiers/Dupont",
        "Dossiers/Martin",
        "Dossiers/Martin/2026",
    ]
    with pytest.raises(NotFound, match="no folder Patients"):
        await box.rename_folder(ALICE, "Patients", "Autre")
    await box.create_folder(ALICE, "Classement/Dupont")
    await box.delete_folder(ALICE, "Classement")
    with pytest.raises(Conflict, match="folder Classement/Dupont already exists"):
        await box.rename_folder(ALICE, "Dossiers", "Classement")


async def test_inbox_may_be_renamed_below_itself(box: Mailstore) -> None:
    await box.append(ALICE, "INBOX", b"Subject: x\r\n\r\ny\r\n")
    await box.create_folder(ALICE, "INBOX/Suivi")
    await box.rename_folder(ALICE, "INBOX", "INBOX/2025")
    assert (await box.status(ALICE, "INBOX/2025")).messages == 1
    assert (await box.status(ALICE, "INBOX")).messages == 0
    assert "INBOX/Suivi" in await names(box)
    await box.create_folder(ALICE, "Dossiers")
    with pytest.raises(UsageError, match="cannot rename Dossiers into itself"):
        await box.rename_folder(ALICE, "Dossiers", "Dossiers/Sous")


async def test_subscribe_needs_a_folder_unsubscribe_does_not(box: Mailstore) -> None:
    with pytest.raises(NotFound, match="no folder Nulle"):
        await box.subscribe(ALICE, "Nulle", True)
    await box.subscribe(ALICE, "Nulle", False)  # nothing to do, no error
    await box.create_folder(ALICE, "Patients/Dupont")
    await box.delete_folder(ALICE, "Patients")
    with pytest.raises(NotFound):
        await box.subscribe(ALICE, "Patients", True)  # a level, not a folder
    await box.subscribe(ALICE, "Patients", False)
    await box.subscribe(ALICE, "Patients/Dupont", False)
    assert not (await box.folder(ALICE, "Patients/Dupont")).subscribed
    await box.subscribe(ALICE, "Patients/Dupont", True)
    assert (await box.folder(ALICE, "Patients/Dupont")).subscribed


async def test_a_name_made_again_gets_a_greater_uidvalidity(box: Mailstore) -> None:
    for _ in range(3):
        first = await box.create_folder(ALICE, "Brouillon")
        await box.delete_folder(ALICE, "Brouillon")
        again = await box.create_folder(ALICE, "Brouillon")
        assert again.uidvalidity > first.uidvalidity
        await box.delete_folder(ALICE, "Brouillon")


async def test_deleting_an_older_folder_does_not_wait(box: Mailstore) -> None:
    await box.create_folder(ALICE, "Ancien")
    await box.create_folder(ALICE, "Recent")  # holds the highest UIDVALIDITY now
    started = time.monotonic()
    await box.delete_folder(ALICE, "Ancien")
    assert time.monotonic() - started < 0.5


async def test_a_mailbox_holds_at_most_max_folders(box: Mailstore) -> None:
    limited = Mailstore(box.store, max_folders=10)  # INBOX and the five special-use folders exist already
    await limited.create_folder(ALICE, "Dossiers/Patients")  # two new: 8
    with pytest.raises(FolderLimit, match=r"^a mailbox holds at most 10 folders$"):
        await limited.create_folder(ALICE, "A/B/C")  # three more would make 11: none is made
    assert "A" not in await names(box)
    await limited.create_folder(ALICE, "A/B")
    with pytest.raises(FolderLimit):
        await limited.create_folder(ALICE, "Encore")
    await limited.delete_folder(ALICE, "A/B")
    await limited.create_folder(ALICE, "Encore")  # room again
    assert len(await names(box)) == 10
