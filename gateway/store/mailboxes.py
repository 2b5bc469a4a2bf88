"""Repository of this operator's own mailboxes: accounts, credentials, delegations, certificates.

Implementation notes
- Creating a local mailbox adds (or adopts) its directory entry and creates its account with a fresh
  data key wrapped by the KEK. An entry already imported from the national file is adopted only when
  its type matches (type and address are immutable).
- Deleting a local mailbox removes its account, stored messages (sealed, so nothing readable is left
  behind), delegations and certificates, and its directory entry.
- A delegation links an ORG mailbox to a local PER mailbox (the user who may act for it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from directory import national
from gateway.errors import Conflict, NotFound, UsageError
from gateway.store.crypto import DataKey, DecryptionError, KeyEncryptionKey
from gateway.store.db import Database, Statements, bound_list
from gateway.store.folders import standard_folders, standard_subscriptions
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
    utcnow,
)


@dataclass(frozen=True)
class Owner:
    """The professional a PER mailbox belongs to."""

    id_nat_ps: str
    id_type: str
    id_pp: str
    last_name: str = ""
    first_name: str = ""
    civility: str = ""
    profession_code: str = ""
    profession_label: str = ""


@dataclass(frozen=True)
class Credentials:
    address: str
    kind: str
    password_hash: str | None
    active: bool


_STATE = (
    'SELECT m.address, m.kind, m.active, p.active, a.address, d."user" FROM mailboxes m'
    " LEFT OUTER JOIN professionals p ON p.key = m.professional_key"
    " LEFT OUTER JOIN accounts a ON a.address = m.address"
    " LEFT OUTER JOIN mailbox_delegations d ON d.mailbox = m.address"
    " WHERE m.address = :address"
)
"""A mailbox's facts for `state()`, one row per delegate (Database.rows: SQL both backends read alike)."""


@dataclass(frozen=True)
class MailboxState:
    """What the directory and the store say of one address, for sender and recipient policies."""

    address: str
    kind: str
    active: bool
    owner_active: bool | None
    delegates: frozenset[str]
    local: bool


PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class SigningIdentity:
    """What the crypto pool needs to sign as an address: DER certificate, PKCS#8 key, DER chain."""

    certificate: bytes
    key: bytes = field(repr=False)
    chain: list[bytes]


def _key_aad(address: str, fingerprint: str) -> bytes:
    return b"smime-key\0" + address.lower().encode() + b"\0" + fingerprint.encode()


def _der_sequence(data: bytes) -> list[asn1_x509.Certificate]:
    """Certificates stored back to back as DER."""
    out = []
    while data:
        cert = asn1_x509.Certificate.load(data)
        size = len(cert.dump())
        out.append(cert)
        data = data[size:]
    return out


class MailboxRepository:
    def __init__(self, db: Database, kek: KeyEncryptionKey | None = None) -> None:
        self.db = db
        self._kek = kek

    @property
    def kek(self) -> KeyEncryptionKey:
        if self._kek is None:
            raise RuntimeError("this repository was opened without the key-encryption key")
        return self._kek

    async def create(
        self,
        address: str,
        kind: str,
        *,
        owner: Owner | None = None,
        service: str = "",
        list_rouge: bool = False,
        password_hash: str | None = None,
        extra: Sequence[Any] = (),
    ) -> dict[str, Any]:
        """`extra`: rows written in the same transaction once the mailbox exists (a patient's record)."""
        address = address.lower()
        now = utcnow()
        try:
            async with self.db.write() as s:
                if await s.get(Account, address) is not None:
                    raise Conflict(f"mailbox {address} already exists")
                mb = await s.get(Mailbox, address)
                if mb is not None and mb.kind != kind:
                    raise Conflict(
                        f"{address} is already in the directory as a {mb.kind} mailbox; a mailbox's type cannot change"
                    )
                pro_key = None
                if owner is not None:
                    pro_key = owner.id_nat_ps
                    pro = await s.get(Professional, pro_key)
                    if pro is None:
                        pro = Professional(
                            key=pro_key,
                            id_nat_ps=owner.id_nat_ps,
                            id_type=owner.id_type,
                            id_pp=owner.id_pp,
                            civility=owner.civility,
                            last_name=owner.last_name,
                            first_name=owner.first_name,
                            profession_code=owner.profession_code,
                            profession_label=owner.profession_label,
                        )
                        s.add(pro)
                        await s.flush()  # no ORM relationship orders this insert before the mailbox's
                    name_parts = (pro.last_name, pro.first_name, pro.profession_label)
                else:
                    name_parts = ("", "", "")
                text = national.fold(" ".join(p for p in (address, pro_key or "", *name_parts, service) if p))
                if mb is None:
                    mb = Mailbox(
                        address=address,
                        kind=kind,
                        origin="local",
                        professional_key=pro_key,
                        service=service,
                        list_rouge=list_rouge,
                        active=True,
                        search_text=text,
                        created_at=now,
                        updated_at=now,
                    )
                    s.add(mb)
                else:  # adopt the national entry: it is ours
                    mb.origin = "local"
                    mb.list_rouge = list_rouge
                    mb.professional_key = pro_key or mb.professional_key
                    mb.service = service or mb.service
                    mb.updated_at = now
                await s.flush()
                s.add(
                    Account(
                        address=address,
                        password_hash=password_hash,
                        data_key=self.kek.wrap(DataKey.generate(), address),
                        kek_id=self.kek.key_id,
                        created_at=now,
                        password_changed_at=now if password_hash else None,
                    )
                )
                await s.flush()
                s.add_all([*standard_folders(address), *standard_subscriptions(address), *extra])
        except IntegrityError:
            # Another command (another node, on PostgreSQL) created it, or its owner, between the looks and
            # the inserts: said as the look would have said it.
            async with self.db.read() as s:
                if await s.get(Account, address) is not None:
                    raise Conflict(f"mailbox {address} already exists") from None
            raise Conflict(f"mailbox {address}: its directory entry changed meanwhile; try again") from None
        return await self.describe(address)

    async def _local(self, s: Any, address: str) -> tuple[Mailbox, Account]:
        address = address.lower()
        acct = await s.get(Account, address)
        mb = await s.get(Mailbox, address)
        if acct is None or mb is None:
            raise NotFound(f"no local mailbox {address}")
        return mb, acct

    async def describe(self, address: str) -> dict[str, Any]:
        async with self.db.read() as s:
            mb, acct = await self._local(s, address)
            delegates = list(
                (await s.execute(select(MailboxDelegation.user).where(MailboxDelegation.mailbox == mb.address)))
                .scalars()
                .all()
            )
            certs = (
                (await s.execute(select(MailboxCertificate).where(MailboxCertificate.address == mb.address)))
                .scalars()
                .all()
            )
            return {
                "address": mb.address,
                "type": mb.kind,
                "owner": mb.professional_key,
                "service": mb.service,
                "active": mb.active,
                "keep_smime": mb.keep_smime,
                "list_rouge": mb.list_rouge,
                "has_password": acct.password_hash is not None,
                "totp_enrolled": acct.totp_secret is not None,
                "delegates": delegates,
                "certificates": [
                    {"fingerprint": c.fingerprint, "usage": c.usage, "not_after": c.not_after.isoformat()}
                    for c in certs
                ],
                "created_at": acct.created_at.isoformat(),
                "last_login_at": acct.last_login_at.isoformat() if acct.last_login_at else None,
            }

    async def list(self, *, domain: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        stmt = select(Mailbox, Account).join(Account, Account.address == Mailbox.address).order_by(Mailbox.address)
        if kind:
            stmt = stmt.where(Mailbox.kind == kind)
        if domain:
            stmt = stmt.where(Mailbox.address.endswith("@" + domain.lower()))
        async with self.db.read() as s:
            return [
                {
                    "address": mb.address,
                    "type": mb.kind,
                    "active": mb.active,
                    "has_password": acct.password_hash is not None,
                    "totp_enrolled": acct.totp_secret is not None,
                }
                for mb, acct in (await s.execute(stmt)).all()
            ]

    async def set_active(self, address: str, active: bool) -> bool:
        """Returns whether the state changed."""
        async with self.db.write() as s:
            mb, _ = await self._local(s, address)
            changed = mb.active != active
            mb.active = active
            mb.updated_at = utcnow()
            return changed

    async def set_keep_smime(self, address: str, keep: bool) -> bool:
        """Whether `address` stores peers' messages in their S/MIME form too; returns whether it changed."""
        async with self.db.write() as s:
            mb, _ = await self._local(s, address)
            changed = mb.keep_smime != keep
            mb.keep_smime = keep
            mb.updated_at = utcnow()
            return changed

    async def keeping_smime(self, addresses: Iterable[str]) -> set[str]:
        """Those of `addresses` (lower-case) that keep the S/MIME form of what peers send them."""
        wanted, found = sorted(set(addresses)), set[str]()
        for i in range(0, len(wanted), 500):  # SQLite's bound-parameter limit; asked for every inbound message
            marks, params = bound_list("a", wanted[i : i + 500])
            params["yes"] = True
            sql = (
                "SELECT address FROM mailboxes"  # noqa: S608 (placeholders only: the addresses are bound)
                f" WHERE address IN ({marks}) AND keep_smime = :yes"
            )
            found.update(str(r[0]) for r in await self.db.rows(sql, params))
        return found

    async def rewrap_keys(self, batch: int = 200) -> tuple[int, int]:
        """Wrap every mailbox's data key, and seal every TOTP seed, under the current KEK where a previous one
        did (KEK rotation, `mssgw kek rewrap`); (data keys, seeds) changed. Each batch is read and written
        in one write transaction, so an enrolment meanwhile is not overwritten with the older seed."""
        addresses = [row[0] for row in await self.db.rows("SELECT address FROM accounts ORDER BY address", {})]
        keys = seeds = 0
        for start in range(0, len(addresses), batch):
            marks, params = bound_list("a", addresses[start : start + batch])
            async with self.db.raw_writing() as tx:
                rows = await tx.execute(
                    f"SELECT address, data_key, totp_secret FROM accounts WHERE address IN ({marks})"  # noqa: S608 (placeholders only)
                    + tx.for_update,
                    params,
                )
                changes = []
                for address, wrapped, seed in rows:
                    try:
                        new_key = self.kek.rewrap(wrapped, address)
                        new_seed = None if seed is None else self.kek.reseal(seed, b"totp\0" + address.encode())
                    except DecryptionError:
                        raise DecryptionError(
                            f"mailbox {address}: no key-encryption key given opens its keys"
                        ) from None
                    if new_key is not None or new_seed is not None:
                        keys += new_key is not None
                        seeds += new_seed is not None
                        changes.append({"address": address, "key": new_key, "seed": new_seed, "id": self.kek.key_id})
                if changes:
                    await tx.execute(
                        "UPDATE accounts SET data_key = coalesce(:key, data_key), kek_id = :id,"
                        " totp_secret = coalesce(:seed, totp_secret) WHERE address = :address",
                        changes,
                    )
        return keys, seeds

    async def unopened_keys(self) -> dict[str, int]:
        """How many data keys neither the current KEK nor a previous one opens, by the id of the KEK that
        wrapped them (`serve` refuses to start on any): one key tried per KEK id, as a key opens all or none."""
        rows = await self.db.rows(
            "SELECT a.kek_id, count(*), min(a.address) FROM accounts a GROUP BY a.kek_id ORDER BY a.kek_id", {}
        )
        unopened = {}
        for kek_id, count, address in rows:
            [(wrapped,)] = await self.db.rows("SELECT data_key FROM accounts WHERE address = :a", {"a": address})
            try:
                self.kek.unwrap(wrapped, address)
            except DecryptionError:
                unopened[str(kek_id)] = int(count)
        return unopened

    async def kek_ids(self) -> dict[str, int]:
        """How many data keys each KEK id wrapped."""
        rows = await self.db.rows("SELECT kek_id, count(*) FROM accounts GROUP BY kek_id ORDER BY kek_id", {})
        return {str(kid): int(n) for kid, n in rows}

    async def delete(self, address: str) -> None:
        async with self.db.write() as s:
            mb, _ = await self._local(s, address)
            await self._delete(s, mb)

    async def delete_inactive(self, address: str, *, idle_by: datetime, warned_by: datetime) -> bool:
        """Delete a mailbox for its inactivity (`mssgw retention run`) if, in this transaction, it still has had
        no login since `idle_by` and its owner was warned, after that last login, no later than `warned_by`:
        a login between the decision and the deletion keeps it."""
        async with self.db.write() as s:
            try:
                mb, acct = await self._local(s, address)
            except NotFound:
                return False  # deleted meanwhile (another node's run, an operator)
            since = acct.last_login_at or acct.created_at
            warned = acct.retention_warned_at
            if warned is None or warned > warned_by or warned < since or since > idle_by:
                return False
            await self._delete(s, mb)
            return True

    async def warn_inactive(self, s: AsyncSession, address: str, now: datetime, idle_by: datetime) -> bool:
        """Record that the owner is being warned, if the mailbox has had no login since `idle_by` and is not
        warned already since its last login (other nodes' runs included): False otherwise."""
        idle = or_(
            Account.last_login_at <= idle_by, and_(Account.last_login_at.is_(None), Account.created_at <= idle_by)
        )
        unwarned = or_(
            Account.retention_warned_at.is_(None),
            Account.retention_warned_at < Account.last_login_at,
            and_(Account.last_login_at.is_(None), Account.retention_warned_at < Account.created_at),
        )
        result = await s.execute(
            update(Account).where(Account.address == address, idle, unwarned).values(retention_warned_at=now)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def clear_stale_warnings(self) -> int:
        """Forget warnings a login came after (touch_login clears them, but a run may record one just after a
        login it did not see): such a warning must not count towards a deletion."""
        async with self.db.write() as s:
            result = await s.execute(
                update(Account)
                .where(Account.retention_warned_at < Account.last_login_at)
                .values(retention_warned_at=None)
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def _delete(self, s: AsyncSession, mb: Mailbox) -> None:
        """The mailbox and what is kept about it: an address created again later (another person, or the
        patient enrolled anew) starts with no conversation a patient could reply to or name it as a Reply-To,
        no lock-out counters or known client addresses, no notice awaited for it. The audit log keeps its history."""
        address = mb.address
        await s.execute(
            delete(MailboxDelegation).where(
                (MailboxDelegation.mailbox == address) | (MailboxDelegation.user == address)
            )
        )
        await s.execute(
            delete(Conversation).where((Conversation.patient == address) | (Conversation.correspondent == address))
        )
        # A Reply-To address lets the patient write to it while the conversation is open: once deleted
        # (and perhaps created again for someone else) it is no longer the correspondent's to offer.
        named = Conversation.reply_to.contains(address, autoescape=True)
        for row in (await s.execute(select(Conversation).where(named))).scalars():
            row.reply_to = " ".join(a for a in row.reply_to.split() if a != address)
        await s.execute(delete(TrackedNotice).where(TrackedNotice.sender == address))
        await s.execute(delete(LoginFailure).where(LoginFailure.account == address))
        await s.execute(delete(LoginKnown).where(LoginKnown.account == address))
        await s.delete(mb)  # cascades to the account, its messages and certificates

    async def set_password(self, address: str, password_hash: str) -> None:
        async with self.db.write() as s:
            _, acct = await self._local(s, address)
            acct.password_hash = password_hash
            acct.password_changed_at = utcnow()

    async def set_totp(self, address: str, secret: str) -> None:
        async with self.db.write() as s:
            _, acct = await self._local(s, address)
            acct.totp_secret = self.kek.seal(secret.encode(), b"totp\0" + acct.address.encode())

    async def totp_secret(self, address: str) -> str | None:
        async with self.db.read() as s:
            _, acct = await self._local(s, address)
            if acct.totp_secret is None:
                return None
            return self.kek.open(acct.totp_secret, b"totp\0" + acct.address.encode()).decode()

    async def use_totp_step(self, address: str, step: int) -> bool:
        """Record `step` as used for `address`'s TOTP; False if it or a later one already was (a replay)."""
        async with self.db.write() as s:
            done = await s.execute(
                update(Account)
                .where(
                    Account.address == address.lower(),
                    (Account.totp_last_step.is_(None)) | (Account.totp_last_step < step),
                )
                .values(totp_last_step=step)
            )
            return bool(done.rowcount)  # type: ignore[attr-defined]

    async def delegate(self, mailbox: str, user: str, *, remove: bool = False) -> bool:
        """Grant (or revoke) `user` the right to act for ORG mailbox `mailbox`; returns whether it changed."""
        async with self.db.write() as s:
            org, _ = await self._local(s, mailbox)
            person, _ = await self._local(s, user)
            if org.kind != "ORG":
                raise UsageError(f"{org.address} is a {org.kind} mailbox; only ORG mailboxes have delegates")
            if person.kind != "PER":
                raise UsageError(f"{person.address} is a {person.kind} mailbox; delegates are PER mailboxes")
            existing = await s.get(MailboxDelegation, (org.address, person.address))
            if remove:
                if existing is None:
                    return False
                await s.delete(existing)
                return True
            if existing is not None:
                return False
            s.add(MailboxDelegation(mailbox=org.address, user=person.address))
            return True

    async def add_certificate(
        self,
        address: str,
        cert: x509.Certificate,
        usage: str,
        *,
        key: PrivateKey | None = None,
        chain: Sequence[x509.Certificate] = (),
    ) -> str:
        """Register `cert` for `address`; with `key`, the node may sign as that address (S/MIME usage):
        the key is kept sealed with the mailbox's data key, never in clear."""
        der = cert.public_bytes(serialization.Encoding.DER)
        fingerprint = cert.fingerprint(hashes.SHA256()).hex()
        sealed = None
        if key is not None:
            if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
                raise UsageError("the private key does not match the certificate")
            pkcs8 = key.private_bytes(
                serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            sealed = (await self.data_key(address)).seal(pkcs8, _key_aad(address, fingerprint))
        async with self.db.write() as s:
            await self._local(s, address)
            row = await s.get(MailboxCertificate, fingerprint)
            if row is not None and (row.address != address.lower() or row.usage != usage):
                # Its key would be sealed under this mailbox's data key but read as the other's.
                raise Conflict(f"this certificate is already registered to {row.address} ({row.usage})")
            if row is None:
                row = MailboxCertificate(
                    fingerprint=fingerprint,
                    address=address.lower(),
                    usage=usage,
                    serial=format(cert.serial_number, "x"),
                    der=der,
                    not_before=cert.not_valid_before_utc.astimezone(UTC),
                    not_after=cert.not_valid_after_utc.astimezone(UTC),
                )
                s.add(row)
            if sealed is not None:
                row.sealed_key = sealed
                row.chain = b"".join(c.public_bytes(serialization.Encoding.DER) for c in chain) or None
        return fingerprint

    async def signing_identity(self, address: str, at: datetime | None = None) -> SigningIdentity | None:
        """The certificate, key (PKCS#8) and chain the node signs with for `address`: the S/MIME certificate
        with a key that is valid at `at` and expires last; None when there is none."""
        moment = at or utcnow()
        rows = await self.db.rows(  # asked for every message signed on a sender's behalf
            "SELECT der, sealed_key, chain, fingerprint FROM mailbox_certificates"
            " WHERE address = :address AND usage = 'smime' AND sealed_key IS NOT NULL",
            {"address": address.lower()},
        )
        # Validity read from each certificate (the columns copy it): no date parameters to bind alike on
        # both backends. The one expiring last; ties by fingerprint.
        valid = []
        for der, sealed, chain, fingerprint in rows:
            cert = x509.load_der_x509_certificate(der)
            if cert.not_valid_before_utc <= moment < cert.not_valid_after_utc:
                valid.append((cert.not_valid_after_utc, fingerprint, der, sealed, chain))
        if not valid:
            return None
        _, fingerprint, der, sealed, chain = max(valid)
        key = (await self.data_key(address)).open(sealed, _key_aad(address, fingerprint))
        return SigningIdentity(der, key, [c.dump() for c in _der_sequence(chain or b"")])

    async def decryption_identities(self, address: str) -> tuple[SigningIdentity, ...]:
        """Every S/MIME certificate of `address` whose key the node holds, newest first: an expired one
        still opens what was encrypted to it."""
        rows = await self.db.rows(  # asked for every inbound message
            "SELECT der, sealed_key, chain, fingerprint FROM mailbox_certificates"
            " WHERE address = :address AND usage = 'smime' AND sealed_key IS NOT NULL"
            " ORDER BY not_after DESC, fingerprint DESC",  # as signing_identity picks among equals
            {"address": address.lower()},
        )
        if not rows:
            return ()
        data_key = await self.data_key(address)
        return tuple(
            SigningIdentity(
                der,
                data_key.open(sealed, _key_aad(address, fingerprint)),
                [c.dump() for c in _der_sequence(chain or b"")],
            )
            for der, sealed, chain, fingerprint in rows
        )

    async def smime_certificates(self, address: str) -> tuple[x509.Certificate, ...]:
        """The S/MIME certificates registered to a local mailbox, oldest first; none when it has none or
        is not local (read-only: recipient certificate discovery asks this first)."""
        async with self.db.read() as s:
            ders = (
                await s.execute(
                    select(MailboxCertificate.der)
                    .where(MailboxCertificate.address == address.lower(), MailboxCertificate.usage == "smime")
                    .order_by(MailboxCertificate.not_before, MailboxCertificate.fingerprint)
                )
            ).scalars()
            return tuple(x509.load_der_x509_certificate(der) for der in ders)

    async def deliverable(self, s: AsyncSession | AsyncConnection | Statements, addresses: set[str]) -> set[str]:
        """Those of `addresses` that are active local mailboxes, read in the caller's transaction (plain
        SQL: every message delivered at acceptance asks)."""
        if not addresses:
            return set()  # "IN ()" is an error on PostgreSQL
        marks, params = bound_list("a", sorted(addresses))
        params["yes"] = True
        sql = (
            "SELECT m.address FROM mailboxes m JOIN accounts a ON a.address = m.address"  # noqa: S608 (bound)
            f" WHERE m.address IN ({marks}) AND m.active = :yes"
        )
        return {row[0] for row in await self.db.statements(s).execute(sql, params)}

    async def active_among(self, addresses: Iterable[str]) -> set[str]:
        """Those of `addresses` (lower-case) that are local mailboxes and active."""
        wanted, found = sorted(set(addresses)), set[str]()
        async with self.db.read() as s:
            for i in range(0, len(wanted), 500):  # SQLite's bound-parameter limit
                q = select(Mailbox.address).where(Mailbox.address.in_(wanted[i : i + 500]), Mailbox.active.is_(True))
                found.update((await s.execute(q)).scalars())
        return found

    async def credentials(self, address: str) -> Credentials | None:
        """A local account's login facts; None for an unknown or non-local address."""
        async with self.db.read() as s:
            row = (
                await s.execute(
                    select(Mailbox.address, Mailbox.kind, Mailbox.active, Account.password_hash)
                    .join(Account, Account.address == Mailbox.address)
                    .where(Mailbox.address == address.lower())
                )
            ).first()
        if row is None:
            return None
        return Credentials(row.address, row.kind, row.password_hash, row.active)

    async def token_holder(self, address: str | None, identifier: str) -> tuple[Credentials, str | None, bool] | None:
        """For a bearer-token login: the mailbox `address` (or, when None, the one PER or CAB mailbox owned by
        the professional `identifier`), its owner's IdNatPS and whether the owner is active."""
        query = (
            select(Mailbox.address, Mailbox.kind, Mailbox.active, Professional.id_nat_ps, Professional.active)
            .join(Professional, Professional.key == Mailbox.professional_key, isouter=True)
            .join(Account, Account.address == Mailbox.address)
        )
        if address is not None:
            query = query.where(Mailbox.address == address.lower())
        else:
            query = query.where(
                Professional.id_nat_ps == identifier, Mailbox.kind.in_(("PER", "CAB")), Mailbox.active.is_(True)
            ).limit(2)
        async with self.db.read() as s:
            rows = (await s.execute(query)).all()
        if len(rows) != 1:
            return None
        address_, kind, active, owner, owner_active = rows[0]
        return Credentials(address_, kind, None, active), owner, bool(owner_active)

    async def certificate_holder(self, fingerprint: str) -> tuple[Credentials, str] | None:
        """The local mailbox a certificate (SHA-256 of its DER, hex) is registered to, with its usage."""
        async with self.db.read() as s:
            row = (
                await s.execute(
                    select(
                        Mailbox.address, Mailbox.kind, Mailbox.active, Account.password_hash, MailboxCertificate.usage
                    )
                    .join(Account, Account.address == Mailbox.address)
                    .join(MailboxCertificate, MailboxCertificate.address == Mailbox.address)
                    .where(MailboxCertificate.fingerprint == fingerprint.lower())
                )
            ).first()
        if row is None:
            return None
        return Credentials(row.address, row.kind, row.password_hash, row.active), row.usage

    async def state(self, address: str) -> MailboxState | None:
        # One statement (a row per delegate): asked for each sender and recipient of every message.
        rows = await self.db.rows(_STATE, {"address": address.lower()})
        if not rows:
            return None
        mailbox, kind, active, owner_active, account, _ = rows[0]
        delegates = frozenset(r[5] for r in rows if r[5] is not None)
        owner = bool(owner_active) if owner_active is not None else None
        return MailboxState(mailbox, kind, bool(active), owner, delegates, account is not None)

    async def touch_login(self, address: str) -> None:
        async with self.db.write() as s:
            acct = await s.get(Account, address.lower())
            if acct is not None:
                acct.last_login_at = utcnow()
                acct.retention_warned_at = None  # back in use: a later inactivity is warned of afresh

    async def data_key(self, address: str) -> DataKey:
        address = address.lower()
        rows = await self.db.rows(  # asked for every delivery and every message read
            "SELECT a.data_key FROM accounts a JOIN mailboxes m ON m.address = a.address WHERE a.address = :address",
            {"address": address},
        )
        if not rows:
            raise NotFound(f"no local mailbox {address}")
        return self.kek.unwrap(rows[0][0], address)
