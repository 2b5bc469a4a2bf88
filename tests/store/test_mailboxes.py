"""MailboxRepository: local mailboxes, adoption of directory entries, delegations, secrets, certificates."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select, text

from gateway.errors import Conflict, NotFound, UsageError
from gateway.store.crypto import DecryptionError, KeyEncryptionKey
from gateway.store.db import Database
from gateway.store.mailboxes import MailboxRepository, Owner
from gateway.store.models import (
    Account,
    Conversation,
    LoginFailure,
    LoginKnown,
    Mailbox,
    MailboxCertificate,
    MailboxDelegation,
    Professional,
    TrackedNotice,
)
from gateway.store.trust import TrustRepository

DOMAIN = "ch-test.mssante.fr"
PER = f"camille.andre@{DOMAIN}"
PER2 = f"hugo.martin@{DOMAIN}"
ORG = f"secretariat.cardio@{DOMAIN}"
APP = f"dpi@{DOMAIN}"
OWNER = Owner(
    id_nat_ps="810000000421",
    id_type="8",
    id_pp="10000000421",
    last_name="ANDRÉ",
    first_name="Camille",
    civility="MME",
    profession_code="10",
    profession_label="Médecin",
)
T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
TOTP = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


@pytest.fixture
def repo(store_db: Database, kek: KeyEncryptionKey) -> MailboxRepository:
    return MailboxRepository(store_db, kek)


def _created(d: dict[str, Any]) -> dict[str, Any]:
    """`d` without its creation time, after checking that time is a recent UTC timestamp."""
    d = dict(d)
    created = datetime.fromisoformat(d.pop("created_at"))
    assert created.utcoffset() == timedelta(0)
    assert timedelta(0) <= datetime.now(UTC) - created < timedelta(minutes=5)
    return d


def _described(address: str, kind: str, **changes: Any) -> dict[str, Any]:
    return {
        "address": address,
        "type": kind,
        "owner": None,
        "service": "",
        "active": True,
        "keep_smime": False,
        "list_rouge": False,
        "has_password": False,
        "totp_enrolled": False,
        "delegates": [],
        "certificates": [],
        "last_login_at": None,
        **changes,
    }


def _certificate(cn: str, days: int = 365) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    start = datetime(2025, 1, 1, tzinfo=UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(0x1234ABCD)
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )


async def test_create_per_with_owner(repo: MailboxRepository) -> None:
    described = await repo.create(PER.upper(), "PER", owner=OWNER, service="Cardiologie", password_hash="$argon2id$x")
    assert _created(described) == _described(PER, "PER", owner="810000000421", service="Cardiologie", has_password=True)
    async with repo.db.read() as s:
        pro = await s.get(Professional, "810000000421")
        assert pro is not None
        assert (pro.id_nat_ps, pro.id_type, pro.id_pp, pro.civility, pro.last_name, pro.first_name) == (
            "810000000421",
            "8",
            "10000000421",
            "MME",
            "ANDRÉ",
            "Camille",
        )
        assert (pro.profession_code, pro.profession_label, pro.active) == ("10", "Médecin", True)
        mb = await s.get(Mailbox, PER)
        assert mb is not None
        assert (mb.kind, mb.origin, mb.professional_key, mb.structure_key, mb.ordinal) == (
            "PER",
            "local",
            "810000000421",
            None,
            None,
        )
        assert mb.search_text == f"{PER} 810000000421 andre camille medecin cardiologie"
        acct = await s.get(Account, PER)
        assert acct is not None
        assert acct.kek_id == repo.kek.key_id
        assert acct.password_hash == "$argon2id$x"
        assert acct.password_changed_at == acct.created_at
        assert len(acct.data_key) == 1 + 12 + 32 + 16
        wrapped = acct.data_key
    # The data key is wrapped for this address only.
    assert repr(await repo.data_key(PER)) == "DataKey(<hidden>)"
    with pytest.raises(DecryptionError):
        repo.kek.unwrap(wrapped, PER2)

    # A second mailbox of the same person reuses the professional as it is.
    await repo.create(f"camille.andre.2@{DOMAIN}", "PER", owner=Owner("810000000421", "8", "10000000421", "X"))
    async with repo.db.read() as s:
        pros = (await s.execute(select(Professional.key, Professional.last_name))).all()
    assert [tuple(p) for p in pros] == [("810000000421", "ANDRÉ")]


async def test_create_org_and_app(repo: MailboxRepository) -> None:
    org = await repo.create(ORG, "ORG", service="Secrétariat cardiologie", list_rouge=True)
    assert _created(org) == _described(ORG, "ORG", service="Secrétariat cardiologie", list_rouge=True)
    app = await repo.create(APP, "APP")
    assert _created(app) == _described(APP, "APP")
    async with repo.db.read() as s:
        rows = (await s.execute(select(Mailbox.address, Mailbox.kind, Mailbox.search_text))).all()
        pros = (await s.execute(select(Professional.key))).scalars().all()
        acct = await s.get(Account, APP)
    assert sorted(tuple(r) for r in rows) == [
        (APP, "APP", APP),
        (ORG, "ORG", f"{ORG} secretariat cardiologie"),
    ]
    assert pros == []
    assert acct is not None
    assert (acct.password_hash, acct.password_changed_at, acct.totp_secret) == (None, None, None)


async def test_duplicate_create_is_a_conflict(repo: MailboxRepository) -> None:
    await repo.create(PER, "PER", owner=OWNER)
    for address, kind in ((PER, "PER"), (PER.upper(), "PER"), (PER, "ORG")):
        with pytest.raises(Conflict) as exc:
            await repo.create(address, kind)
        assert str(exc.value) == f"mailbox {PER} already exists"
    assert [m["address"] for m in await repo.list()] == [PER]


async def _national(db: Database, address: str, kind: str, service: str = "") -> None:
    async with db.write() as s:
        s.add(
            Mailbox(
                address=address,
                kind=kind,
                origin="national",
                service=service,
                ordinal=7,
                search_text=address,
                created_at=T0,
                updated_at=T0,
            )
        )


async def test_adopting_a_national_entry_of_the_same_type(repo: MailboxRepository) -> None:
    await _national(repo.db, ORG, "ORG", service="Cardiologie")
    described = await repo.create(ORG.upper(), "ORG")
    assert _created(described) == _described(ORG, "ORG", service="Cardiologie")
    async with repo.db.read() as s:
        mb = await s.get(Mailbox, ORG)
        assert mb is not None
        assert (mb.origin, mb.ordinal, mb.created_at) == ("local", 7, T0)
        assert mb.updated_at > T0


async def test_adopting_a_national_entry_of_another_type_is_refused(repo: MailboxRepository) -> None:
    await _national(repo.db, ORG, "ORG")
    with pytest.raises(Conflict) as exc:
        await repo.create(ORG, "PER", owner=OWNER)
    assert str(exc.value) == (f"{ORG} is already in the directory as a ORG mailbox; a mailbox's type cannot change")
    async with repo.db.read() as s:
        mb = await s.get(Mailbox, ORG)
        assert mb is not None
        assert (mb.kind, mb.origin) == ("ORG", "national")
        assert await s.get(Account, ORG) is None
        assert await s.get(Professional, OWNER.id_nat_ps) is None  # the refused transaction left nothing
    with pytest.raises(NotFound) as missing:
        await repo.describe(ORG)
    assert str(missing.value) == f"no local mailbox {ORG}"


async def test_delegations(repo: MailboxRepository) -> None:
    await repo.create(ORG, "ORG")
    await repo.create(PER, "PER", owner=OWNER)
    await repo.create(PER2, "PER")
    await repo.create(APP, "APP")

    assert await repo.delegate(ORG.upper(), PER.upper()) is True
    assert await repo.delegate(ORG, PER) is False
    assert await repo.delegate(ORG, PER2) is True
    assert (await repo.describe(ORG))["delegates"] == sorted([PER, PER2])

    refusals = [
        ((PER, PER2), f"{PER} is a PER mailbox; only ORG mailboxes have delegates"),
        ((APP, PER), f"{APP} is a APP mailbox; only ORG mailboxes have delegates"),
        ((ORG, APP), f"{APP} is a APP mailbox; delegates are PER mailboxes"),
        ((ORG, ORG), f"{ORG} is a ORG mailbox; delegates are PER mailboxes"),
    ]
    for (mailbox, user), message in refusals:
        with pytest.raises(UsageError) as exc:
            await repo.delegate(mailbox, user)
        assert type(exc.value) is UsageError
        assert str(exc.value) == message
    for mailbox, user, unknown in (
        (f"nope@{DOMAIN}", PER, f"nope@{DOMAIN}"),
        (ORG, f"nobody@{DOMAIN}", f"nobody@{DOMAIN}"),
    ):
        with pytest.raises(NotFound) as missing:
            await repo.delegate(mailbox, user)
        assert str(missing.value) == f"no local mailbox {unknown}"

    assert await repo.delegate(ORG, PER, remove=True) is True
    assert await repo.delegate(ORG, PER, remove=True) is False
    assert (await repo.describe(ORG))["delegates"] == [PER2]
    # Deleting a delegate removes its delegations, not the ORG mailbox.
    await repo.delete(PER2)
    assert (await repo.describe(ORG))["delegates"] == []
    async with repo.db.read() as s:
        assert (await s.execute(select(MailboxDelegation))).scalars().all() == []


async def test_set_active(repo: MailboxRepository) -> None:
    await repo.create(PER, "PER")
    assert await repo.set_active(PER, False) is True
    assert await repo.set_active(PER.upper(), False) is False
    assert (await repo.describe(PER))["active"] is False
    assert await repo.list() == [
        {"address": PER, "type": "PER", "active": False, "has_password": False, "totp_enrolled": False}
    ]
    assert await repo.set_active(PER, True) is True
    assert (await repo.describe(PER))["active"] is True
    with pytest.raises(NotFound) as exc:
        await repo.set_active(f"nobody@{DOMAIN}", True)
    assert str(exc.value) == f"no local mailbox nobody@{DOMAIN}"


async def test_keeping_the_smime_form(repo: MailboxRepository) -> None:
    await repo.create(ORG, "ORG")
    await repo.create(PER, "PER", owner=OWNER)
    assert await repo.keeping_smime([ORG, PER]) == set()
    assert await repo.set_keep_smime(PER.upper(), True) is True
    assert await repo.set_keep_smime(PER, True) is False  # unchanged
    assert await repo.keeping_smime([ORG, PER, f"x@{DOMAIN}"]) == {PER}
    assert (await repo.describe(PER))["keep_smime"] is True
    with pytest.raises(NotFound):
        await repo.set_keep_smime(f"x@{DOMAIN}", True)


async def test_delete(repo: MailboxRepository) -> None:
    await repo.create(ORG, "ORG")
    await repo.create(PER, "PER", owner=OWNER)
    await repo.delegate(ORG, PER)
    await repo.add_certificate(ORG, _certificate("org"), "smime")
    patient = f"123456789012345@patient.{DOMAIN}"
    now = datetime.now(UTC)
    async with repo.db.write() as s:  # what is kept about each address, besides the mailbox
        for who in (ORG, PER):
            s.add(Conversation(patient=patient, correspondent=who, reply_to=""))
            s.add(LoginFailure(kind="account", account=who, ip="", failures=2, locked_until=0.0, last_failure=1.0))
            s.add(LoginKnown(account=who, ip="192.0.2.7", seen=1.0))
            s.add(
                TrackedNotice(
                    sender=who,
                    message_id=f"<{who}>",
                    recipient=f"x@peer.{DOMAIN}",
                    queue_id="q" * 32,
                    final_delivery=False,
                    state="waiting",
                    deadline=now,
                    created_at=now,
                )
            )
        s.add(Conversation(patient=ORG, correspondent=PER, reply_to=""))  # as if ORG were the patient's side
        other = f"{patient[:-1]}8"  # a conversation of PER's offering ORG (and others) as Reply-To
        s.add(Conversation(patient=other, correspondent=PER, reply_to=f"a{ORG} {ORG} z@peer.{DOMAIN}"))
    await repo.delete(ORG.upper())
    with pytest.raises(NotFound) as exc:
        await repo.describe(ORG)
    assert str(exc.value) == f"no local mailbox {ORG}"
    with pytest.raises(NotFound) as exc:
        await repo.delete(ORG)
    assert str(exc.value) == f"no local mailbox {ORG}"
    async with repo.db.read() as s:
        assert (await s.execute(select(Mailbox.address))).scalars().all() == [PER]
        assert (await s.execute(select(Account.address))).scalars().all() == [PER]
        assert (await s.execute(select(MailboxDelegation))).scalars().all() == []
        assert (await s.execute(select(MailboxCertificate))).scalars().all() == []
        # An address created again starts afresh: no conversation a patient could reply to, no counters.
        kept = select(Conversation.patient, Conversation.correspondent, Conversation.reply_to).order_by(Conversation.id)
        assert (await s.execute(kept)).all() == [(patient, PER, ""), (other, PER, f"a{ORG} z@peer.{DOMAIN}")]
        assert (await s.execute(select(LoginFailure.account))).scalars().all() == [PER]
        assert (await s.execute(select(LoginKnown.account))).scalars().all() == [PER]
        assert (await s.execute(select(TrackedNotice.sender))).scalars().all() == [PER]
        # The owner stays in the directory: other mailboxes (or the national file) may name them.
        assert (await s.execute(select(Professional.key))).scalars().all() == ["810000000421"]
    # The address can be created again, with a new data key.
    assert _created(await repo.create(ORG, "ORG")) == _described(ORG, "ORG")


async def test_totp_secret_is_sealed(repo: MailboxRepository) -> None:
    await repo.create(PER, "PER")
    await repo.create(PER2, "PER")
    assert await repo.totp_secret(PER) is None
    await repo.set_totp(PER.upper(), TOTP)
    async with repo.db.read() as s:
        stored = bytes(
            (await s.execute(text("SELECT totp_secret FROM accounts WHERE address = :a"), {"a": PER})).scalar_one()
        )
    assert len(stored) == 1 + 12 + len(TOTP) + 16
    for form in (TOTP.encode(), TOTP[:16].encode(), base64.b32decode(TOTP)):
        assert form not in stored
    assert await repo.totp_secret(PER.upper()) == TOTP
    assert (await repo.describe(PER))["totp_enrolled"] is True
    assert [m["totp_enrolled"] for m in await repo.list()] == [True, False]
    # The sealed secret is bound to its account: copied to another one it does not open.
    async with repo.db.write() as s:
        await s.execute(text("UPDATE accounts SET totp_secret = :t WHERE address = :a"), {"t": stored, "a": PER2})
    with pytest.raises(DecryptionError) as exc:
        await repo.totp_secret(PER2)
    assert str(exc.value) == "sealed data failed authentication (wrong key, owner or altered)"
    # And another node's KEK cannot open it.
    other = MailboxRepository(repo.db, KeyEncryptionKey(b"\x07" * 32))
    with pytest.raises(DecryptionError):
        await other.totp_secret(PER)


async def test_add_certificate(repo: MailboxRepository) -> None:
    await repo.create(APP, "APP")
    cert = _certificate("dpi", days=730)
    fingerprint = await repo.add_certificate(APP.upper(), cert, "tls")
    assert fingerprint == cert.fingerprint(hashes.SHA256()).hex()
    assert len(fingerprint) == 64
    assert await repo.add_certificate(APP, cert, "tls") == fingerprint  # idempotent
    described = await repo.describe(APP)
    assert described["certificates"] == [
        {"fingerprint": fingerprint, "usage": "tls", "not_after": "2027-01-01T00:00:00+00:00"}
    ]
    async with repo.db.read() as s:
        rows = (await s.execute(select(MailboxCertificate))).scalars().all()
        assert [(r.address, r.usage, r.serial, r.not_before) for r in rows] == [
            (APP, "tls", "1234abcd", datetime(2025, 1, 1, tzinfo=UTC))
        ]
        assert x509.load_der_x509_certificate(rows[0].der) == cert
    with pytest.raises(NotFound) as exc:
        await repo.add_certificate(f"nobody@{DOMAIN}", cert, "smime")
    assert str(exc.value) == f"no local mailbox nobody@{DOMAIN}"
    # The same certificate for another mailbox, or another use: refused (a key sealed under one mailbox's
    # data key would be read with the other's), the row unchanged.
    await repo.create(ORG, "ORG")
    for address, usage in ((ORG, "tls"), (APP, "smime")):
        with pytest.raises(Conflict) as conflict:
            await repo.add_certificate(address, cert, usage)
        assert str(conflict.value) == f"this certificate is already registered to {APP} (tls)"
    assert (await repo.describe(APP))["certificates"][0]["usage"] == "tls"


def _keyed(cn: str, start: datetime, days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return cert, key


async def test_the_node_keeps_a_signing_key_sealed(repo: MailboxRepository) -> None:
    await repo.create(PER, "PER", owner=OWNER)
    assert await repo.signing_identity(PER) is None
    old, old_key = _keyed("old", datetime(2024, 1, 1, tzinfo=UTC), 400)
    new, new_key = _keyed("new", datetime(2025, 1, 1, tzinfo=UTC), 800)
    ca, _ = _keyed("ca", datetime(2024, 1, 1, tzinfo=UTC), 3000)
    await repo.add_certificate(PER, old, "smime", key=old_key, chain=[ca])
    await repo.add_certificate(PER, new, "smime", key=new_key, chain=[ca, old])
    await repo.add_certificate(PER, _certificate("no key", days=3000), "smime")  # not one the node can use
    pkcs8 = new_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    der = [c.public_bytes(serialization.Encoding.DER) for c in (new, ca, old)]
    moment = datetime(2025, 6, 1, tzinfo=UTC)
    identity = await repo.signing_identity(PER.upper(), at=moment)  # both valid: the one expiring last
    assert identity is not None
    assert (identity.certificate, identity.key, identity.chain) == (der[0], pkcs8, der[1:])
    assert "key" not in repr(identity).replace("SigningIdentity", "")  # never printed
    assert await repo.signing_identity(PER, at=datetime(2030, 1, 1, tzinfo=UTC)) is None  # all expired
    # Opening what peers send: every certificate with a key, the one expiring last first, expired or not.
    old_pkcs8 = old_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    opening = await repo.decryption_identities(PER.upper())
    assert [(i.certificate, i.key, i.chain) for i in opening] == [
        (der[0], pkcs8, der[1:]),
        (der[2], old_pkcs8, der[1:2]),
    ]
    assert await repo.decryption_identities(ORG) == ()
    async with repo.db.read() as s:
        row = await s.get(MailboxCertificate, new.fingerprint(hashes.SHA256()).hex())
        assert row is not None
        assert row.sealed_key is not None
        assert pkcs8 not in row.sealed_key  # sealed, not stored in clear
        row_sealed = row.sealed_key
    with pytest.raises(DecryptionError):  # bound to its address and certificate (AAD)
        (await repo.data_key(PER)).open(row_sealed, b"smime-key\0" + PER.encode() + b"\0" + b"0" * 64)
    wrong, _ = _keyed("wrong", datetime(2025, 1, 1, tzinfo=UTC), 10)
    with pytest.raises(UsageError) as exc:
        await repo.add_certificate(PER, wrong, "smime", key=new_key)
    assert str(exc.value) == "the private key does not match the certificate"


async def test_describe_and_list(repo: MailboxRepository) -> None:
    await repo.create(ORG, "ORG", service="Cardiologie")
    await repo.create(PER, "PER", owner=OWNER, password_hash="$argon2id$h")
    await repo.create(APP, "APP")
    await repo.create("secretariat@autre-ch.mssante.fr", "ORG")
    await _national(repo.db, f"national@{DOMAIN}", "PER")
    await repo.delegate(ORG, PER)
    await repo.set_totp(PER, TOTP)

    assert _created(await repo.describe(ORG)) == _described(ORG, "ORG", service="Cardiologie", delegates=[PER])
    assert _created(await repo.describe(PER)) == _described(
        PER, "PER", owner="810000000421", has_password=True, totp_enrolled=True
    )
    with pytest.raises(NotFound) as exc:
        await repo.describe(f"national@{DOMAIN}")  # in the directory, but not hosted here
    assert str(exc.value) == f"no local mailbox national@{DOMAIN}"

    def row(address: str, kind: str, password: bool = False, totp: bool = False) -> dict[str, Any]:
        return {"address": address, "type": kind, "active": True, "has_password": password, "totp_enrolled": totp}

    assert await repo.list() == [
        row(PER, "PER", True, True),
        row(APP, "APP"),
        row(ORG, "ORG"),
        row("secretariat@autre-ch.mssante.fr", "ORG"),
    ]
    assert await repo.list(kind="ORG") == [row(ORG, "ORG"), row("secretariat@autre-ch.mssante.fr", "ORG")]
    assert await repo.list(domain=DOMAIN.upper()) == [row(PER, "PER", True, True), row(APP, "APP"), row(ORG, "ORG")]
    assert await repo.list(domain="mssante.fr") == []
    assert await repo.list(domain=DOMAIN, kind="APP") == [row(APP, "APP")]


async def test_repository_without_kek(store_db: Database) -> None:
    repo = MailboxRepository(store_db)
    with pytest.raises(RuntimeError) as exc:
        await repo.create(PER, "PER")
    assert str(exc.value) == "this repository was opened without the key-encryption key"
    async with store_db.read() as s:
        assert (await s.execute(select(Mailbox))).scalars().all() == []


async def test_deliverable_names_the_active_local_mailboxes_only(repo: MailboxRepository) -> None:
    """Delivery at acceptance asks, in its own transaction, which recipients it may store for: a disabled
    mailbox and an unknown address are not among them (the message goes to the queue instead)."""
    for name in ("a", "b", "c"):
        await repo.create(f"{name}@ch-test.mssante.fr", "PER")
    assert await repo.set_active("b@ch-test.mssante.fr", False)
    wanted = {"a@ch-test.mssante.fr", "b@ch-test.mssante.fr", "c@ch-test.mssante.fr", "z@ch-test.mssante.fr"}
    async with repo.db.write() as s:
        assert await repo.deliverable(s, wanted) == {"a@ch-test.mssante.fr", "c@ch-test.mssante.fr"}
    async with repo.db.writing() as conn:
        assert await repo.deliverable(conn, {"b@ch-test.mssante.fr"}) == set()


async def test_deliverable_of_no_address_is_empty(repo: MailboxRepository) -> None:
    async with repo.db.write() as s:  # no "IN ()", which PostgreSQL refuses
        assert await repo.deliverable(s, set()) == set()


async def test_two_nodes_creating_one_mailbox_get_a_conflict_not_an_error(
    store_db: Database, kek: KeyEncryptionKey
) -> None:
    """Two repositories on one database, as two nodes' admin commands: one creates, the other is told it
    exists (on PostgreSQL both looked before either inserted, and the second got an IntegrityError)."""
    other = Database(store_db.url)
    try:
        for i in range(5):
            address = f"course{i}@{DOMAIN}"
            results = await asyncio.gather(
                MailboxRepository(store_db, kek).create(address, "ORG"),
                MailboxRepository(other, kek).create(address, "ORG"),
                return_exceptions=True,
            )
            refused = [r for r in results if isinstance(r, BaseException)]
            assert [type(r) for r in refused] == [Conflict], results
            assert str(refused[0]) == f"mailbox {address} already exists"
            added = await asyncio.gather(
                TrustRepository(store_db).add(f"d{i}.example"), TrustRepository(other).add(f"d{i}.example")
            )
            assert sorted(added) == [False, True]
    finally:
        await other.close()
