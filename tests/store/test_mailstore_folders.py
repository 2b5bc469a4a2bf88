"""Mailstore folders and the hierarchy (RFC 3501 §6.3.3-6): DELETE of a parent, levels that are no folder,
RENAME of such a level, SUBSCRIBE / UNSUBSCRIBE of names without a folder, subscriptions that outlive their
folder (RFC 3501 §6.3.6) and move with RENAME, UIDVALIDITY of a name made again."""

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


STANDARD = {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"}


async def test_subscribe_needs_a_folder_unsubscribe_does_not(box: Mailstore) -> None:
    assert await box.subscriptions(ALICE) == STANDARD  # the standard folders are subscribed
    with pytest.raises(NotFound, match="no folder Nulle"):
        await box.subscribe(ALICE, "Nulle", True)
    await box.subscribe(ALICE, "Nulle", False)  # nothing to do, no error
    await box.create_folder(ALICE, "Patients/Dupont")
    assert await box.subscriptions(ALICE) == STANDARD | {"Patients", "Patients/Dupont"}  # levels made: too
    await box.delete_folder(ALICE, "Patients")
    with pytest.raises(NotFound):
        await box.subscribe(ALICE, "Patients", True)  # a level, not a folder
    await box.subscribe(ALICE, "Patients", False)  # the deleted folder's subscription goes, on demand only
    await box.subscribe(ALICE, "Patients/Dupont", False)
    await box.subscribe(ALICE, "Patients/Dupont", False)
    assert await box.subscriptions(ALICE) == STANDARD
    await box.subscribe(ALICE, "Patients/Dupont", True)
    await box.subscribe(ALICE, "Patients/Dupont", True)  # twice: one row
    await box.subscribe(ALICE, "inbox", False)  # INBOX in any case
    assert await box.subscriptions(ALICE) == STANDARD - {"INBOX"} | {"Patients/Dupont"}
    await box.subscribe(ALICE, "iNbOx", True)
    assert "INBOX" in await box.subscriptions(ALICE)


async def test_a_subscription_outlives_its_folder(box: Mailstore) -> None:
    await box.create_folder(ALICE, "Brouillon")
    await box.create_folder(ALICE, "Garde")  # holds the highest UIDVALIDITY: the deletes do not wait
    await box.subscribe(ALICE, "Archive", False)
    await box.delete_folder(ALICE, "Brouillon")
    await box.delete_folder(ALICE, "Archive")
    assert await box.subscriptions(ALICE) == STANDARD - {"Archive"} | {"Brouillon", "Garde"}  # §6.3.6
    await box.create_folder(ALICE, "Brouillon")  # made again: still subscribed, one row
    await box.create_folder(ALICE, "Archive")  # a new folder is subscribed
    assert await box.subscriptions(ALICE) == STANDARD | {"Brouillon", "Garde"}


async def test_rename_moves_the_subscriptions_of_the_name_and_its_inferiors(box: Mailstore) -> None:
    await box.create_folder(ALICE, "Patients/Dupont/2026")
    await box.create_folder(ALICE, "Patients/Martin")
    await box.create_folder(ALICE, "Patients/Ancien")
    await box.create_folder(ALICE, "Dossiers/Martin")
    await box.create_folder(ALICE, "PatientsX")  # not an inferior; the highest UIDVALIDITY: deletes do not wait
    await box.delete_folder(ALICE, "Patients/Ancien")  # subscribed, no folder: moves too
    await box.delete_folder(ALICE, "Dossiers/Martin")  # the new names are subscribed already: they stay so
    await box.delete_folder(ALICE, "Dossiers")
    await box.subscribe(ALICE, "Patients/Martin", False)
    await box.rename_folder(ALICE, "Patients", "Dossiers")
    assert await box.subscriptions(ALICE) - STANDARD == {
        "Dossiers",
        "Dossiers/Ancien",
        "Dossiers/Dupont",
        "Dossiers/Dupont/2026",
        "Dossiers/Martin",
        "PatientsX",
    }
    await box.create_folder(ALICE, "Garde")
    await box.delete_folder(ALICE, "Dossiers")  # a level now; renaming it moves its subscription as well
    await box.rename_folder(ALICE, "Dossiers", "Classement")
    assert {n for n in await box.subscriptions(ALICE) if n.startswith(("Dossiers", "Classement"))} == {
        "Classement",
        "Classement/Ancien",
        "Classement/Dupont",
        "Classement/Dupont/2026",
        "Classement/Martin",
    }


async def test_rename_inbox_subscribes_the_new_folder_and_keeps_inbox(box: Mailstore) -> None:
    await box.create_folder(ALICE, "INBOX/Suivi")
    await box.subscribe(ALICE, "INBOX/Suivi", False)
    await box.rename_folder(ALICE, "INBOX", "Ancien")
    assert await box.subscriptions(ALICE) == STANDARD | {"Ancien"}  # INBOX's inferiors stay, unsubscribed


async def test_subscriptions_are_capped(box: Mailstore) -> None:
    """A client looping on CREATE and DELETE must not grow the subscription list without end."""
    limited = Mailstore(box.store, max_folders=10)  # 20 subscriptions
    for n in range(13):
        await box.create_folder(ALICE, f"Ancien{n}")
    await box.create_folder(ALICE, "Garde")  # holds the highest UIDVALIDITY: the deletes do not wait
    for n in range(13):
        await box.delete_folder(ALICE, f"Ancien{n}")
    assert len(await box.subscriptions(ALICE)) == 20  # the six standard folders, Garde, 13 deleted ones
    with pytest.raises(FolderLimit, match=r"^a mailbox keeps at most 20 subscriptions: unsubscribe deleted folders$"):
        await limited.create_folder(ALICE, "Nouveau")
    assert "Nouveau" not in await names(box)
    await limited.create_folder(ALICE, "Ancien3")  # subscribed already: no new row
    await limited.subscribe(ALICE, "Ancien3", True)
    await limited.subscribe(ALICE, "Ancien0", False)
    await limited.create_folder(ALICE, "Nouveau")
    await limited.subscribe(ALICE, "Nouveau", False)
    await box.create_folder(ALICE, "Autre")  # 20 again
    with pytest.raises(FolderLimit, match="at most 20 subscriptions"):
        await limited.subscribe(ALICE, "Nouveau", True)
    assert len(await box.subscriptions(ALICE)) == 20


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


async def test_a_deleted_folders_id_is_never_given_to_another(box: Mailstore) -> None:
    """SQLite without AUTOINCREMENT gives a new row the highest id + 1: the newest folder's id, once it was
    deleted, went to the next folder made (migration 0010). PostgreSQL's sequence never reused one."""
    newest = await box.create_folder(ALICE, "Projets")
    await box.delete_folder(ALICE, "Projets")
    again = await box.create_folder(ALICE, "Autre")
    assert again.id > newest.id
    assert newest.id not in {f.id for f in await box.folders(ALICE)}
