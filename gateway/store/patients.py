"""Repository of this operator's patients: INS identity, enrolment, opposition, conversation state.

Implementation notes
- A patient is a PAT mailbox (created through `MailboxRepository.create`, in the same transaction as its
  `Patient` row) whose address is derived from the INS: one INS, one mailbox.
- Enrolment: `create` and `reset_activation` store only the SHA-256 of a one-time activation code (the
  code has 100 bits of entropy, so a fast digest is enough) with its expiry; `enrol` checks it, sets the
  password hash and the sealed TOTP secret, and clears it, in one transaction: a code works once. Both end
  the patient's web sessions in that transaction: a reset is for a lost or stolen phone or password, and
  a cookie opened with the old credentials must not outlive them.
- Conversations are kept for every patient a message of this node involves (see policy.patients);
  `apply` runs inside the caller's transaction, so the state changes exactly when the message is queued.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.errors import Conflict, NotFound
from gateway.policy import patients as rules
from gateway.policy.patients import Close, Conversation, Effect, HeaderFacts, Open, PatientFacts
from gateway.policy.verdict import ACCEPT
from gateway.store.crypto import KeyEncryptionKey
from gateway.store.db import Database
from gateway.store.mailboxes import MailboxRepository
from gateway.store.models import Account, Mailbox, Patient, WebSession, utcnow
from gateway.store.models import Conversation as ConversationRow

ACTIVATION_VALIDITY = timedelta(days=14)


def activation_digest(code: str) -> str:
    return hashlib.sha256(code.strip().upper().replace("-", "").encode()).hexdigest()


@dataclass(frozen=True)
class Identity:
    """A qualified INS and its traits (domain brief §2)."""

    ins: str
    oid: str
    birth_name: str
    given_name: str
    birth_date: str  # ISO 8601
    sex: str  # M | F


def _describe(p: Patient, mb: Mailbox, acct: Account) -> dict[str, Any]:
    return {
        "address": p.address,
        "ins": p.ins,
        "ins_oid": p.ins_oid,
        "birth_name": p.birth_name,
        "given_name": p.given_name,
        "birth_date": p.birth_date,
        "sex": p.sex,
        "active": mb.active,
        "opposed": p.opposed,
        "opposed_at": p.opposed_at.isoformat() if p.opposed_at else None,
        "enrolled": p.enrolled_at is not None,
        "enrolled_at": p.enrolled_at.isoformat() if p.enrolled_at else None,
        "activation_pending": p.activation_digest is not None,
        "activation_expires_at": p.activation_expires_at.isoformat() if p.activation_expires_at else None,
        "created_at": p.created_at.isoformat(),
        "last_login_at": acct.last_login_at.isoformat() if acct.last_login_at else None,
    }


class PatientRepository:
    def __init__(self, db: Database, kek: KeyEncryptionKey | None = None) -> None:
        self.db = db
        self.kek = kek

    async def create(self, address: str, identity: Identity, activation_code: str) -> dict[str, Any]:
        """The PAT mailbox and its patient record; Conflict if the address (hence the INS) exists."""
        now = utcnow()
        row = Patient(
            address=address.lower(),
            ins=identity.ins,
            ins_oid=identity.oid,
            birth_name=identity.birth_name,
            given_name=identity.given_name,
            birth_date=identity.birth_date,
            sex=identity.sex,
            opposed=False,
            activation_digest=activation_digest(activation_code),
            activation_expires_at=now + ACTIVATION_VALIDITY,
            created_at=now,
        )
        try:
            await MailboxRepository(self.db, self.kek).create(address, "PAT", extra=[row])
        except Conflict:
            raise Conflict(f"the patient with INS {identity.ins} already has a mailbox ({address.lower()})") from None
        return await self.describe(address)

    async def _row(self, s: AsyncSession, address: str) -> tuple[Patient, Mailbox, Account]:
        found = (
            await s.execute(
                select(Patient, Mailbox, Account)
                .join(Mailbox, Mailbox.address == Patient.address)
                .join(Account, Account.address == Patient.address)
                .where(Patient.address == address.strip().lower())
            )
        ).first()
        if found is None:
            raise NotFound(f"no patient {address.strip().lower()}")
        return found[0], found[1], found[2]

    async def describe(self, address: str) -> dict[str, Any]:
        async with self.db.read() as s:
            return _describe(*await self._row(s, address))

    async def all(self) -> list[dict[str, Any]]:
        q = (
            select(Patient, Mailbox, Account)
            .join(Mailbox, Mailbox.address == Patient.address)
            .join(Account, Account.address == Patient.address)
            .order_by(Patient.address)
        )
        async with self.db.read() as s:
            return [_describe(p, mb, acct) for p, mb, acct in (await s.execute(q)).all()]

    async def set_opposed(self, address: str, opposed: bool) -> bool:
        """Returns whether it changed."""
        async with self.db.write() as s:
            p, _, _ = await self._row(s, address)
            changed = p.opposed != opposed
            if changed:
                p.opposed = opposed
                p.opposed_at = utcnow() if opposed else None
            return changed

    async def reset_activation(self, address: str, activation_code: str) -> dict[str, Any]:
        """A new activation code: the patient enrols again (new password and TOTP) at next login."""
        async with self.db.write() as s:
            p, _, acct = await self._row(s, address)
            p.activation_digest = activation_digest(activation_code)
            p.activation_expires_at = utcnow() + ACTIVATION_VALIDITY
            p.enrolled_at = None
            acct.password_hash = None
            acct.totp_secret = None
            await s.execute(delete(WebSession).where(WebSession.address == p.address))
        return await self.describe(address)

    async def activation_matches(self, address: str, code: str, now: datetime | None = None) -> bool:
        """Whether `code` is this patient's pending, unexpired activation code (constant-time compare)."""
        async with self.db.read() as s:
            row = (await s.execute(select(Patient).where(Patient.address == address.strip().lower()))).scalar()
        if row is None or row.activation_digest is None or row.activation_expires_at is None:
            return False
        if (now or utcnow()) >= row.activation_expires_at:
            return False
        return hmac.compare_digest(row.activation_digest, activation_digest(code))

    async def enrol(
        self, address: str, code: str, *, password_hash: str, totp_secret: str, totp_step: int | None = None
    ) -> bool:
        """Set the password and TOTP secret if `code` is still the pending activation code; False otherwise.
        `totp_step`: the step of the TOTP code that proved the secret, spent like a login's (RFC 6238 §5.2)."""
        if self.kek is None:
            raise RuntimeError("enrolment needs the key-encryption key")
        async with self.db.write() as s:
            p, _, acct = await self._row(s, address)
            expires = p.activation_expires_at
            if p.activation_digest is None or expires is None or utcnow() >= expires:
                return False
            if not hmac.compare_digest(p.activation_digest, activation_digest(code)):
                return False
            acct.password_hash = password_hash
            acct.password_changed_at = utcnow()
            acct.totp_secret = self.kek.seal(totp_secret.encode(), b"totp\0" + acct.address.encode())
            if totp_step is not None:
                acct.totp_last_step = max(acct.totp_last_step or totp_step, totp_step)
            await s.execute(delete(WebSession).where(WebSession.address == p.address))
            p.activation_digest = None
            p.activation_expires_at = None
            p.enrolled_at = utcnow()
            return True

    # -- exchange rules ------------------------------------------------------------------------------

    async def facts(self, addresses: Iterable[str]) -> dict[str, PatientFacts]:
        wanted = sorted({a.lower() for a in addresses})
        if not wanted:
            return {}
        async with self.db.read() as s:
            rows = (await s.execute(select(Patient.address, Patient.opposed).where(Patient.address.in_(wanted)))).all()
        return {r.address: PatientFacts(r.address, r.opposed) for r in rows}

    async def conversations(self, patients: Iterable[str]) -> list[Conversation]:
        wanted = sorted({a.lower() for a in patients})
        if not wanted:
            return []
        async with self.db.read() as s:
            rows = (await s.execute(select(ConversationRow).where(ConversationRow.patient.in_(wanted)))).scalars().all()
        return [
            Conversation(r.patient, r.correspondent, frozenset(r.reply_to.split()), r.open)
            for r in sorted(rows, key=lambda r: (r.patient, r.correspondent))
        ]

    async def decide(self, sender: str, recipients: Sequence[str], headers: HeaderFacts, size: int) -> rules.Decision:
        """The exchange rules for one message, judged on the store's facts (the one entry point for SMTP
        submission, relay in and the web inbox)."""
        exchange = rules.exchange(sender, None, recipients, headers, size)
        involved = rules.parties(exchange)
        if not involved:  # most messages: no store read at all
            return rules.Decision(ACCEPT)
        async with self.db.read() as s:
            kind = (await s.execute(select(Mailbox.kind).where(Mailbox.address == sender.lower()))).scalar()
        exchange = replace(exchange, sender_kind=kind)
        return rules.judge(exchange, await self.facts(involved), await self.conversations(involved))

    @staticmethod
    async def apply(s: AsyncSession, effects: Sequence[Effect]) -> None:
        """Record a decision's effects in the caller's transaction (the one that queues the message)."""
        now = utcnow()
        for effect in effects:
            row = (
                await s.execute(
                    select(ConversationRow).where(
                        ConversationRow.patient == effect.patient,
                        ConversationRow.correspondent == effect.correspondent,
                    )
                )
            ).scalar()
            if row is None:
                row = ConversationRow(
                    patient=effect.patient, correspondent=effect.correspondent, reply_to="", opened_at=now
                )
                s.add(row)
            row.last_message_at = now
            if isinstance(effect, Open):
                if not row.open:
                    row.opened_at, row.closed_at, row.reply_to = now, None, ""
                row.open = True
                row.reply_to = " ".join(sorted(set(row.reply_to.split()) | effect.reply_to))
            elif isinstance(effect, Close):
                row.open = False
                row.closed_at = now
            await s.flush()

    async def conversation_states(self, patient: str) -> dict[str, bool]:
        """correspondent -> open, for one patient (the web inbox shows it)."""
        return {c.correspondent: c.open for c in await self.conversations([patient])}
