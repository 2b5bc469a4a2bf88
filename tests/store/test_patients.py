"""PatientRepository: PAT mailboxes and their identity, enrolment codes, opposition, conversations (both backends)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, update

from gateway.audit.events import AuditEvent
from gateway.errors import Conflict, NotFound
from gateway.policy.patients import Close, Conversation, Decision, Open, PatientFacts
from gateway.policy.verdict import ACCEPT, Reject
from gateway.store.crypto import KeyEncryptionKey
from gateway.store.db import Database
from gateway.store.mailboxes import MailboxRepository
from gateway.store.models import Account, Folder, Patient, WebSession
from gateway.store.models import Conversation as ConversationRow
from gateway.store.patients import ACTIVATION_VALIDITY, Identity, PatientRepository, activation_digest
from gateway.web.sessions import WebSessions

DOMAIN = "ch-test.mssante.fr"
PAT = f"patient.{DOMAIN}"
PATIENT = f"185037512345641@{PAT}"
PATIENT2 = f"292069912345618@{PAT}"
DOCTOR = f"claire.martin@{DOMAIN}"
SECRETARIAT = f"secretariat@{DOMAIN}"
CODE = "ABCD-EFGH-IJKL-MNOP-QRST"
IDENTITY = Identity("185037512345641", "1.2.250.1.213.1.4.8", "DUPONT", "JEAN", "1985-03-14", "M")
IDENTITY2 = Identity("292069912345618", "1.2.250.1.213.1.4.8", "LEROY", "MARIE", "1992-06-30", "F")
HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
TOTP = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


@dataclass
class Facts:
    subject: str | None = None
    x_mss: dict[str, str] = field(default_factory=dict)
    reply_to: tuple[str, ...] = ()


@pytest.fixture
def repo(store_db: Database, kek: KeyEncryptionKey) -> PatientRepository:
    return PatientRepository(store_db, kek)


async def rows(db: Database) -> list[ConversationRow]:
    async with db.read() as s:
        return list(
            (await s.execute(select(ConversationRow).order_by(ConversationRow.patient, ConversationRow.correspondent)))
            .scalars()
            .all()
        )


async def apply(db: Database, *effects: Open | Close) -> None:
    async with db.write() as s:
        await PatientRepository.apply(s, effects)


# -- identity, mailbox, listing ------------------------------------------------------------------------


async def test_create_makes_a_pat_mailbox_with_the_identity(repo: PatientRepository, kek: KeyEncryptionKey) -> None:
    info = await repo.create(PATIENT.upper(), IDENTITY, CODE)
    created = datetime.fromisoformat(info["created_at"])
    expires = datetime.fromisoformat(info["activation_expires_at"])
    assert expires - created == ACTIVATION_VALIDITY == timedelta(days=14)
    assert info == {
        "address": PATIENT,
        "ins": "185037512345641",
        "ins_oid": "1.2.250.1.213.1.4.8",
        "birth_name": "DUPONT",
        "given_name": "JEAN",
        "birth_date": "1985-03-14",
        "sex": "M",
        "active": True,
        "opposed": False,
        "opposed_at": None,
        "enrolled": False,
        "enrolled_at": None,
        "activation_pending": True,
        "activation_expires_at": info["activation_expires_at"],
        "created_at": info["created_at"],
        "last_login_at": None,
    }
    mailbox = await MailboxRepository(repo.db, kek).describe(PATIENT)
    assert (mailbox["type"], mailbox["has_password"], mailbox["totp_enrolled"]) == ("PAT", False, False)
    async with repo.db.read() as s:
        folders = (await s.execute(select(Folder.name).where(Folder.address == PATIENT))).scalars().all()
        stored = (await s.execute(select(Patient.activation_digest).where(Patient.address == PATIENT))).scalar()
    assert "INBOX" in folders
    # Only the code's SHA-256 is kept (normalised: no dashes, upper case).
    assert (
        stored == hashlib.sha256(b"ABCDEFGHIJKLMNOPQRST").hexdigest() == activation_digest(" abcd-efgh-ijkl-mnop-qrst ")
    )


async def test_one_ins_one_mailbox(repo: PatientRepository) -> None:
    await repo.create(PATIENT, IDENTITY, CODE)
    with pytest.raises(Conflict) as exc:
        await repo.create(PATIENT, IDENTITY, "OTHER-CODE")
    assert str(exc.value) == f"the patient with INS 185037512345641 already has a mailbox ({PATIENT})"
    assert len(await repo.all()) == 1


async def test_an_existing_mailbox_at_the_address_is_a_conflict(repo: PatientRepository, kek: KeyEncryptionKey) -> None:
    await MailboxRepository(repo.db, kek).create(PATIENT, "ORG")
    with pytest.raises(Conflict) as exc:
        await repo.create(PATIENT, IDENTITY, CODE)
    assert str(exc.value) == f"the patient with INS 185037512345641 already has a mailbox ({PATIENT})"
    with pytest.raises(NotFound):
        await repo.describe(PATIENT)  # no patient record was left behind


async def test_describe_and_all(repo: PatientRepository, kek: KeyEncryptionKey) -> None:
    await repo.create(PATIENT2, IDENTITY2, CODE)
    await repo.create(PATIENT, IDENTITY, CODE)
    await MailboxRepository(repo.db, kek).create(DOCTOR, "ORG")
    assert [p["address"] for p in await repo.all()] == [PATIENT, PATIENT2]
    assert (await repo.describe(f"  {PATIENT2.upper()} "))["given_name"] == "MARIE"
    for address in (DOCTOR, f"nobody@{PAT}"):
        with pytest.raises(NotFound) as exc:
            await repo.describe(address)
        assert str(exc.value) == f"no patient {address}"


async def test_opposition_is_recorded_with_its_date(repo: PatientRepository) -> None:
    await repo.create(PATIENT, IDENTITY, CODE)
    assert await repo.set_opposed(PATIENT, True) is True
    info = await repo.describe(PATIENT)
    assert info["opposed"] is True
    assert info["opposed_at"] is not None
    assert await repo.set_opposed(PATIENT.upper(), True) is False
    assert (await repo.describe(PATIENT))["opposed_at"] == info["opposed_at"]  # unchanged
    assert await repo.facts([PATIENT.upper(), PATIENT2, DOCTOR]) == {PATIENT: PatientFacts(PATIENT, True)}
    assert await repo.set_opposed(PATIENT, False) is True
    info = await repo.describe(PATIENT)
    assert (info["opposed"], info["opposed_at"]) == (False, None)
    with pytest.raises(NotFound):
        await repo.set_opposed(f"nobody@{PAT}", True)
    assert await repo.facts([]) == {}


# -- enrolment -----------------------------------------------------------------------------------------


async def test_activation_matches_the_pending_code_until_it_expires(repo: PatientRepository) -> None:
    info = await repo.create(PATIENT, IDENTITY, CODE)
    expires = datetime.fromisoformat(info["activation_expires_at"])
    assert await repo.activation_matches(PATIENT, CODE)
    assert await repo.activation_matches(PATIENT.upper(), "abcdefghijklmnopqrst")  # as typed by a person
    assert not await repo.activation_matches(PATIENT, "ABCD-EFGH-IJKL-MNOP-QRSX")
    assert await repo.activation_matches(PATIENT, CODE, now=expires - timedelta(seconds=1))
    assert not await repo.activation_matches(PATIENT, CODE, now=expires)
    assert not await repo.activation_matches(f"nobody@{PAT}", CODE)


async def test_enrol_works_once(repo: PatientRepository, kek: KeyEncryptionKey) -> None:
    await repo.create(PATIENT, IDENTITY, CODE)
    assert await repo.enrol(PATIENT, "wrong", password_hash=HASH, totp_secret=TOTP) is False
    assert (await repo.describe(PATIENT))["enrolled"] is False
    assert await repo.enrol(PATIENT, CODE.lower(), password_hash=HASH, totp_secret=TOTP) is True
    info = await repo.describe(PATIENT)
    assert (info["enrolled"], info["activation_pending"], info["activation_expires_at"]) == (True, False, None)
    assert info["enrolled_at"] is not None
    mailboxes = MailboxRepository(repo.db, kek)
    assert await mailboxes.totp_secret(PATIENT) == TOTP  # sealed with the KEK, for this address
    credentials = await mailboxes.credentials(PATIENT)
    assert credentials is not None
    assert (credentials.kind, credentials.password_hash) == ("PAT", HASH)
    async with repo.db.read() as s:
        sealed = (await s.execute(select(Account.totp_secret).where(Account.address == PATIENT))).scalar()
    assert sealed is not None
    assert TOTP.encode() not in sealed
    # The code is spent: it neither enrols again nor matches.
    assert await repo.enrol(PATIENT, CODE, password_hash="$argon2id$other", totp_secret=TOTP) is False
    assert not await repo.activation_matches(PATIENT, CODE)
    assert (await mailboxes.credentials(PATIENT)).password_hash == HASH  # type: ignore[union-attr]


async def test_an_expired_code_does_not_enrol(repo: PatientRepository) -> None:
    await repo.create(PATIENT, IDENTITY, CODE)
    async with repo.db.write() as s:
        await s.execute(
            update(Patient)
            .where(Patient.address == PATIENT)
            .values(activation_expires_at=datetime.fromisoformat("2020-01-01T00:00:00+00:00"))
        )
    assert await repo.enrol(PATIENT, CODE, password_hash=HASH, totp_secret=TOTP) is False
    assert (await repo.describe(PATIENT))["enrolled"] is False


async def test_enrol_needs_the_kek(store_db: Database, repo: PatientRepository) -> None:
    await repo.create(PATIENT, IDENTITY, CODE)
    with pytest.raises(RuntimeError, match="enrolment needs the key-encryption key"):
        await PatientRepository(store_db).enrol(PATIENT, CODE, password_hash=HASH, totp_secret=TOTP)


async def test_reset_activation_forgets_password_and_authenticator(
    repo: PatientRepository, kek: KeyEncryptionKey
) -> None:
    await repo.create(PATIENT, IDENTITY, CODE)
    assert await repo.enrol(PATIENT, CODE, password_hash=HASH, totp_secret=TOTP)
    info = await repo.reset_activation(PATIENT, "NEW0-CODE-2345-6789-ABCD")
    assert (info["enrolled"], info["enrolled_at"], info["activation_pending"]) == (False, None, True)
    assert await MailboxRepository(repo.db, kek).totp_secret(PATIENT) is None
    assert (await MailboxRepository(repo.db, kek).credentials(PATIENT)).password_hash is None  # type: ignore[union-attr]
    assert not await repo.activation_matches(PATIENT, CODE)
    assert await repo.enrol(PATIENT, "NEW0-CODE-2345-6789-ABCD", password_hash=HASH, totp_secret=TOTP)
    with pytest.raises(NotFound):
        await repo.reset_activation(f"nobody@{PAT}", CODE)


async def sessions_of(db: Database) -> list[str]:
    async with db.read() as s:
        return sorted((await s.execute(select(WebSession.address))).scalars().all())


async def test_reset_activation_and_enrolment_end_the_web_sessions(repo: PatientRepository) -> None:
    """A reset is for a lost phone or a leaked password: a cookie opened with the old credentials dies with
    them, in the reset's transaction; an enrolment (again) starts from no session either."""
    await repo.create(PATIENT, IDENTITY, CODE)
    await repo.create(PATIENT2, IDENTITY2, CODE)
    assert await repo.enrol(PATIENT, CODE, password_hash=HASH, totp_secret=TOTP)
    sessions = WebSessions(repo.db, idle=600, absolute=3600)
    mine, theirs = await sessions.start(PATIENT), await sessions.start(PATIENT2)

    await repo.reset_activation(PATIENT, "NEW0-CODE-2345-6789-ABCD")

    assert await sessions_of(repo.db) == [PATIENT2]
    assert await sessions.current(mine) is None
    assert await sessions.current(theirs) is not None
    # One opened between the reset and the new enrolment (impossible through the web, not in the store).
    await sessions.start(PATIENT)
    assert await repo.enrol(PATIENT, "NEW0-CODE-2345-6789-ABCD", password_hash=HASH, totp_secret=TOTP)
    assert await sessions_of(repo.db) == [PATIENT2]


async def test_enrol_spends_the_totp_step_that_proved_the_secret(
    repo: PatientRepository, kek: KeyEncryptionKey
) -> None:
    await repo.create(PATIENT, IDENTITY, CODE)
    assert await repo.enrol(PATIENT, CODE, password_hash=HASH, totp_secret=TOTP, totp_step=58_000_000)
    mailboxes = MailboxRepository(repo.db, kek)
    assert not await mailboxes.use_totp_step(PATIENT, 58_000_000)  # the enrolment's code: a replay at login
    assert await mailboxes.use_totp_step(PATIENT, 58_000_001)
    # Re-enrolment never moves the spent step backwards.
    await repo.reset_activation(PATIENT, "NEW0-CODE-2345-6789-ABCD")
    assert await repo.enrol(PATIENT, "NEW0-CODE-2345-6789-ABCD", password_hash=HASH, totp_secret=TOTP, totp_step=57)
    async with repo.db.read() as s:
        last = (await s.execute(select(Account.totp_last_step).where(Account.address == PATIENT))).scalar()
    assert last == 58_000_001


# -- conversations -------------------------------------------------------------------------------------


async def test_open_merges_reply_to_close_keeps_it_reopen_starts_afresh(repo: PatientRepository) -> None:
    db = repo.db
    await apply(db, Open(PATIENT, DOCTOR, frozenset({SECRETARIAT})))
    [first] = await rows(db)
    assert (first.open, first.reply_to, first.closed_at) == (True, SECRETARIAT, None)
    assert first.opened_at == first.last_message_at

    await apply(db, Open(PATIENT, DOCTOR, frozenset({f"b@{DOMAIN}", f"a@{DOMAIN}"})))
    [merged] = await rows(db)
    assert (merged.open, merged.reply_to) == (True, f"a@{DOMAIN} b@{DOMAIN} {SECRETARIAT}")
    assert merged.opened_at == first.opened_at
    assert merged.last_message_at >= first.last_message_at
    assert await repo.conversations([PATIENT.upper()]) == [
        Conversation(PATIENT, DOCTOR, frozenset({f"a@{DOMAIN}", f"b@{DOMAIN}", SECRETARIAT}), True)
    ]

    await apply(db, Close(PATIENT, DOCTOR))
    [closed] = await rows(db)
    assert (closed.open, closed.reply_to) == (False, f"a@{DOMAIN} b@{DOMAIN} {SECRETARIAT}")
    assert closed.closed_at is not None
    assert closed.opened_at == first.opened_at
    assert await repo.conversation_states(PATIENT) == {DOCTOR: False}

    await apply(db, Open(PATIENT, DOCTOR, frozenset({f"c@{DOMAIN}"})))
    [reopened] = await rows(db)
    assert (reopened.open, reopened.reply_to, reopened.closed_at) == (True, f"c@{DOMAIN}", None)
    assert reopened.opened_at > first.opened_at


async def test_a_fin_first_records_a_closed_conversation(repo: PatientRepository) -> None:
    await apply(repo.db, Close(PATIENT, DOCTOR))
    assert await repo.conversations([PATIENT]) == [Conversation(PATIENT, DOCTOR, frozenset(), False)]


async def test_conversations_of_the_patients_asked_each_pair_once(repo: PatientRepository) -> None:
    await apply(
        repo.db,
        Open(PATIENT2, DOCTOR, frozenset()),
        Open(PATIENT, SECRETARIAT, frozenset()),
        Open(PATIENT, DOCTOR, frozenset()),
        Close(PATIENT, DOCTOR),
    )
    assert await repo.conversations([PATIENT]) == [
        Conversation(PATIENT, DOCTOR, frozenset(), False),
        Conversation(PATIENT, SECRETARIAT, frozenset(), True),
    ]
    assert len(await repo.conversations([PATIENT, PATIENT2, DOCTOR])) == 3
    assert await repo.conversations([]) == []
    assert len(await rows(repo.db)) == 3


async def test_apply_is_in_the_callers_transaction(repo: PatientRepository) -> None:
    class Abort(Exception):
        pass

    async def queue_then_fail() -> None:
        async with repo.db.write() as s:
            await PatientRepository.apply(s, [Open(PATIENT, DOCTOR, frozenset())])
            raise Abort  # e.g. the enqueue failed: the conversation must not change either

    with pytest.raises(Abort):
        await queue_then_fail()
    assert await rows(repo.db) == []


# -- decide: the rules on the store's facts ------------------------------------------------------------


async def test_decide_reads_the_sender_kind_opposition_and_conversations(
    repo: PatientRepository, kek: KeyEncryptionKey
) -> None:
    mailboxes = MailboxRepository(repo.db, kek)
    await mailboxes.create(SECRETARIAT, "ORG")
    await repo.create(PATIENT, IDENTITY, CODE)
    await repo.create(PATIENT2, IDENTITY2, CODE)

    opened = await repo.decide(SECRETARIAT, [PATIENT], Facts(reply_to=(DOCTOR,)), 10)
    assert (opened.verdict, opened.effects) == (ACCEPT, (Open(PATIENT, SECRETARIAT, frozenset({DOCTOR})),))

    # The patient's kind (PAT) comes from the store; without a conversation it may not write.
    refused = await repo.decide(PATIENT, [SECRETARIAT], Facts(), 10)
    assert refused.rule == "patient-reply-only"
    await apply(repo.db, *opened.effects)
    assert (await repo.decide(PATIENT, [DOCTOR], Facts(), 10)).accepted  # a Reply-To address
    assert (await repo.decide(PATIENT, [PATIENT2], Facts(), 10)).rule == "patient-to-patient"

    await repo.set_opposed(PATIENT, True)
    refused = await repo.decide(SECRETARIAT, [PATIENT.upper()], Facts(), 10)
    assert isinstance(refused.verdict, Reject)
    assert (refused.verdict.smtp, refused.verdict.event) == (
        f"550 5.7.1 the patient {PATIENT} has opposed secure messaging (rule patient-opposed)",
        AuditEvent.PATIENT_REFUSED,
    )
    assert (await repo.decide(PATIENT, [DOCTOR], Facts(), 10)).rule == "patient-opposed"

    closing = await repo.decide(SECRETARIAT, [PATIENT2], Facts(subject="[FIN]"), 10)
    assert closing.effects == (Close(PATIENT2, SECRETARIAT),)


async def test_decide_without_patients_or_with_a_null_sender(repo: PatientRepository) -> None:
    await repo.create(PATIENT, IDENTITY, CODE)
    await repo.set_opposed(PATIENT, True)
    no_patient = await repo.decide(DOCTOR, [SECRETARIAT], Facts(x_mss={"X-MSS-INS": "maybe"}), 10)
    assert no_patient == Decision(ACCEPT)
    assert await repo.decide("", [PATIENT], Facts(), 10) == Decision(ACCEPT)  # a notification to an opposed patient
    # An unknown sender (a peer's professional) counts as one; the opposition is ours to enforce.
    assert (await repo.decide("dr.durand@clinique-b.mssante.fr", [PATIENT], Facts(), 10)).rule == "patient-opposed"
