"""SQLAlchemy models of the application database (the audit log has its own database).

Implementation notes
- The directory (professionals, structures, mailboxes) holds every mailbox of the trust space: the
  national extraction's rows (`origin = "national"`) and this operator's own (`origin = "local"`).
  Only local mailboxes have an `Account` (credentials, data key) and stored messages.
- A mailbox's address (lower-cased, the primary key) and its type never change after creation.
- `Mailbox.row_hash` is a digest of the national row last imported for that address: re-importing an
  unchanged row writes nothing. `ordinal` keeps the row's position in that file so an export gives
  the rows back in their order.
- `search_text` is the lower-cased, accent-free concatenation of the searchable fields of a mailbox
  and of its owner and structure, maintained on every write, so that search is one indexed column.
- Timestamps are timezone-aware UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite stores no offset and returns naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored: use UTC-aware values")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Professional(Base):
    """A health professional (Practitioner).

    Keyed by the national identifier IdNatPS when there is one; a person known only through one mailbox
    (a PER mailbox "not attached to a national identifier") is keyed "bal:<address>".
    """

    __tablename__ = "professionals"
    key: Mapped[str] = mapped_column(String(330), primary_key=True)
    id_nat_ps: Mapped[str | None] = mapped_column(String(32), unique=True, nullable=True)
    id_type: Mapped[str] = mapped_column(String(2), default="")  # "8" RPPS, "0" ADELI
    id_pp: Mapped[str] = mapped_column(String(32), default="")
    civility: Mapped[str] = mapped_column(String(32), default="")
    last_name: Mapped[str] = mapped_column(String(200), default="")
    first_name: Mapped[str] = mapped_column(String(200), default="")
    category_code: Mapped[str] = mapped_column(String(16), default="")
    category_label: Mapped[str] = mapped_column(String(200), default="")
    profession_code: Mapped[str] = mapped_column(String(16), default="")
    profession_label: Mapped[str] = mapped_column(String(200), default="")
    skill_code: Mapped[str] = mapped_column(String(16), default="")  # savoir-faire
    skill_label: Mapped[str] = mapped_column(String(200), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Structure(Base):
    """A structure (establishment, practice, company) a mailbox belongs to."""

    __tablename__ = "structures"
    key: Mapped[str] = mapped_column(String(80), primary_key=True)  # "<type>:<identification>" or "anon:<digest>"
    id_type: Mapped[str] = mapped_column(String(2), default="")
    identification: Mapped[str] = mapped_column(String(64), default="")
    name: Mapped[str] = mapped_column(String(300), default="")  # raison sociale
    trade_name: Mapped[str] = mapped_column(String(300), default="")  # enseigne commerciale
    location_complement: Mapped[str] = mapped_column(String(300), default="")
    distribution_complement: Mapped[str] = mapped_column(String(300), default="")
    street_number: Mapped[str] = mapped_column(String(32), default="")
    street_number_complement: Mapped[str] = mapped_column(String(32), default="")
    street_type: Mapped[str] = mapped_column(String(64), default="")
    street_name: Mapped[str] = mapped_column(String(300), default="")
    locality: Mapped[str] = mapped_column(String(300), default="")  # lieu-dit
    routing_line: Mapped[str] = mapped_column(String(300), default="")  # ligne d'acheminement
    postal_code: Mapped[str] = mapped_column(String(16), default="")
    department: Mapped[str] = mapped_column(String(64), default="")
    country: Mapped[str] = mapped_column(String(64), default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Mailbox(Base):
    """A mailbox (BAL) of the trust space as the directory knows it."""

    __tablename__ = "mailboxes"
    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    kind: Mapped[str] = mapped_column(String(3))  # PER ORG APP CAB (immutable)
    professional_key: Mapped[str | None] = mapped_column(
        ForeignKey("professionals.key", ondelete="SET NULL"), index=True, nullable=True
    )
    structure_key: Mapped[str | None] = mapped_column(
        ForeignKey("structures.key", ondelete="SET NULL"), index=True, nullable=True
    )
    service: Mapped[str] = mapped_column(String(300), default="")  # service de rattachement
    dematerialisation: Mapped[str] = mapped_column(String(16), default="")
    list_rouge: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    keep_smime: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """Store what peers send in its S/MIME form (for end-to-end clients), not only the verified inner message."""
    origin: Mapped[str] = mapped_column(String(16), default="local")  # local | national
    ordinal: Mapped[int | None] = mapped_column(Integer, nullable=True)
    row_hash: Mapped[bytes | None] = mapped_column(LargeBinary(16), nullable=True)
    import_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    search_text: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (Index("ix_mailboxes_origin_ordinal", "origin", "ordinal"),)


class MailboxDelegation(Base):
    """A user (local PER mailbox) allowed to act for an ORG mailbox."""

    __tablename__ = "mailbox_delegations"
    mailbox: Mapped[str] = mapped_column(ForeignKey("mailboxes.address", ondelete="CASCADE"), primary_key=True)
    user: Mapped[str] = mapped_column(ForeignKey("mailboxes.address", ondelete="CASCADE"), primary_key=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class MailboxCertificate(Base):
    """A certificate bound to a mailbox (S/MIME, or TLS client for APP mailboxes)."""

    __tablename__ = "mailbox_certificates"
    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 hex of the DER
    address: Mapped[str] = mapped_column(ForeignKey("mailboxes.address", ondelete="CASCADE"), index=True)
    usage: Mapped[str] = mapped_column(String(8))  # smime | tls
    serial: Mapped[str] = mapped_column(String(64))
    der: Mapped[bytes] = mapped_column(LargeBinary)
    not_before: Mapped[datetime] = mapped_column(UTCDateTime())
    not_after: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # S/MIME signing by the operator (Direct model): the PKCS#8 key sealed with the mailbox's data key
    # (AAD: address and fingerprint), and the issuing chain as concatenated DER, both None otherwise.
    sealed_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    chain: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class Account(Base):
    """Credentials and keys of a mailbox hosted by this operator."""

    __tablename__ = "accounts"
    address: Mapped[str] = mapped_column(ForeignKey("mailboxes.address", ondelete="CASCADE"), primary_key=True)
    password_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)  # argon2id; None: no login
    totp_secret: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # sealed by the KEK
    # RFC 6238 time step of the last code accepted: a code of that step or an earlier one is refused, on
    # every node (the check and the update are one statement).
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    data_key: Mapped[bytes] = mapped_column(LargeBinary)  # wrapped by the KEK
    kek_id: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # When `mssgw retention run` warned the owner that inactivity will have the mailbox deleted; a login
    # clears it (migration 0013).
    retention_warned_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    quota_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # None: the node's default
    # The sizes of the mailbox's messages, summed by triggers on messages (migration 0009): never written here.
    used_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")


class Folder(Base):
    """A folder of a local mailbox (the IMAP mailbox model: RFC 9051 §2.3.1.1 UIDs, RFC 7162 modseqs)."""

    __tablename__ = "folders"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    address: Mapped[str] = mapped_column(ForeignKey("accounts.address", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    special_use: Mapped[str | None] = mapped_column(String(16), nullable=True)  # RFC 6154: \Sent, \Trash...
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uidnext: Mapped[int] = mapped_column(BigInteger, default=1)
    highestmodseq: Mapped[int] = mapped_column(BigInteger, default=1)
    recent_uid: Mapped[int] = mapped_column(BigInteger, default=0)  # UIDs above it: \Recent for the next SELECT

    # SQLite: AUTOINCREMENT, so that a deleted folder's id is never given to another (migration 0010): an IMAP
    # session that has it selected must learn it is gone, not go on in a new folder.
    __table_args__ = (
        UniqueConstraint("address", "name", name="uq_folders_address_name"),
        {"sqlite_autoincrement": True},
    )


class Subscription(Base):
    """A name in a mailbox's IMAP subscription list (RFC 3501 §6.3.6). Not tied to a folder: the name stays
    subscribed when its folder is deleted, until UNSUBSCRIBE; RENAME moves it (as Dovecot does)."""

    __tablename__ = "subscriptions"
    address: Mapped[str] = mapped_column(ForeignKey("accounts.address", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)


class StoredMessage(Base):
    """A message held in a folder of a local mailbox, its body sealed with the mailbox's data key."""

    __tablename__ = "messages"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # random hex, part of the AAD
    address: Mapped[str] = mapped_column(ForeignKey("accounts.address", ondelete="CASCADE"), index=True)
    folder_id: Mapped[int | None] = mapped_column(ForeignKey("folders.id", ondelete="CASCADE"), nullable=True)
    uid: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    modseq: Mapped[int] = mapped_column(BigInteger, default=1)
    flags: Mapped[str] = mapped_column(Text, default="")  # space-separated system flags and keywords
    internal_date: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    header_message_id: Mapped[str | None] = mapped_column(String(998), nullable=True)  # for audit, not content
    size: Mapped[int] = mapped_column(Integer)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        UniqueConstraint("folder_id", "uid", name="uq_messages_folder_uid"),
        Index("ix_messages_folder_modseq", "folder_id", "modseq"),
    )


class QueuedMessage(Base):
    """A message accepted (250) and not yet delivered to every recipient; its body sealed by the KEK."""

    __tablename__ = "queue_messages"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    source: Mapped[str] = mapped_column(String(16))  # submission | relay | dsn
    sender: Mapped[str] = mapped_column(String(320))  # envelope reverse-path, "" for the null sender
    principal: Mapped[str | None] = mapped_column(String(320), nullable=True)
    peer: Mapped[str | None] = mapped_column(String(320), nullable=True)
    header_message_id: Mapped[str | None] = mapped_column(String(998), nullable=True)
    receipt: Mapped[str | None] = mapped_column(String(64), nullable=True)  # relayed in: the delivery's receipt
    # Relayed in: its sender asked for the dispatched MDN (decided from the inner message when it came, as a
    # mailbox keeping the S/MIME form is queued the outer one, which does not carry the request).
    final_notice: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    size: Mapped[int] = mapped_column(Integer)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class QueuedRecipient(Base):
    """One recipient of a queued message and its delivery state."""

    __tablename__ = "queue_recipients"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("queue_messages.id", ondelete="CASCADE"), index=True)
    recipient: Mapped[str] = mapped_column(String(320))
    domain: Mapped[str] = mapped_column(String(253))
    local: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered | relayed | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_error: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (Index("ix_queue_recipients_due", "status", "next_attempt_at"),)


class TrustDomain(Base):
    """A domain of the trust space this node may exchange with."""

    __tablename__ = "trust_domains"
    domain: Mapped[str] = mapped_column(String(253), primary_key=True)
    source: Mapped[str] = mapped_column(String(8))  # manual | list
    added_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Patient(Base):
    """A patient mailbox's holder: the qualified INS and its identity traits (domain brief §2, §6).

    The mailbox itself is a `Mailbox` of type PAT with an `Account` (password and TOTP for the web inbox
    only: patients have no mail client). Enrolment: the admin command stores the digest of a one-time
    activation code; the patient's first login with it sets the password and the TOTP secret.
    """

    __tablename__ = "patients"
    address: Mapped[str] = mapped_column(ForeignKey("mailboxes.address", ondelete="CASCADE"), primary_key=True)
    ins: Mapped[str] = mapped_column(String(15), unique=True)  # matricule INS (NIR or NIA), with its key
    ins_oid: Mapped[str] = mapped_column(String(32))
    birth_name: Mapped[str] = mapped_column(String(200))
    given_name: Mapped[str] = mapped_column(String(200))  # first given name (premier prénom)
    birth_date: Mapped[str] = mapped_column(String(10))  # ISO 8601 date
    sex: Mapped[str] = mapped_column(String(1))  # M | F
    opposed: Mapped[bool] = mapped_column(Boolean, default=False)
    opposed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    activation_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)  # SHA-256 hex of the code
    activation_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    enrolled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Conversation(Base):
    """The state of the exchange between a patient and one correspondent (domain brief §6).

    Opened (or reopened) by each message from the correspondent, closed by its `X-MSS-MES: FIN` or
    `[FIN]`; `reply_to` lists the Reply-To addresses its messages named (space-separated), to which
    the patient may also write while it is open. Kept for local patients and for the patients this
    node's professionals write to (so that a remote patient's reply can be checked on arrival too).
    """

    __tablename__ = "conversations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    patient: Mapped[str] = mapped_column(String(320))
    correspondent: Mapped[str] = mapped_column(String(320))
    reply_to: Mapped[str] = mapped_column(Text, default="")
    open: Mapped[bool] = mapped_column(Boolean, default=True)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_message_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (UniqueConstraint("patient", "correspondent", name="uq_conversations_patient_correspondent"),)


class WebSession(Base):
    """A logged-in web inbox session; the cookie holds a random token, the store only its digest."""

    __tablename__ = "web_sessions"
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 hex of the cookie token
    address: Mapped[str] = mapped_column(ForeignKey("accounts.address", ondelete="CASCADE"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class RelayReceipt(Base):
    """A message relayed in from a peer operator and delivered to a mailbox: kept for `[smtp]
    duplicate_window` so that the same message sent again (the peer's retry after a lost `250`, or after
    it died before recording it) is acknowledged without a second copy. Digest of sender, Message-ID and
    content (gateway.store.messages.relay_receipt)."""

    __tablename__ = "relay_receipts"
    address: Mapped[str] = mapped_column(ForeignKey("accounts.address", ondelete="CASCADE"), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 hex (gateway.store.messages)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class TrackedNotice(Base):
    """A message relayed to a peer operator, waiting for the one final notice its sender gets (domain brief §7
    "Delivery notifications", gateway.queue.notices): `state` waiting -> (processed, when the sender asked for
    the dispatched MDN) -> done; `outcome` the notice that settled it (processed, dispatched, delivered,
    failed, timeout)."""

    __tablename__ = "notice_tracking"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sender: Mapped[str] = mapped_column(String(320))
    message_id: Mapped[str] = mapped_column(String(255))  # the original's Message-ID, "<...>"
    recipient: Mapped[str] = mapped_column(String(320))
    queue_id: Mapped[str] = mapped_column(String(32))
    final_delivery: Mapped[bool] = mapped_column(Boolean)  # the dispatched MDN was asked for
    state: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
    deadline: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        UniqueConstraint("sender", "message_id", "recipient", name="uq_notice_tracking_message"),
        Index("ix_notice_tracking_due", "state", "deadline"),
    )


class LoginFailure(Base):
    """A lock-out counter (gateway.auth.lockout), kept so that a restart does not forgive a guesser and every
    node starts from the others' counts. `kind` is "client" (one client address over all accounts: `account`
    empty), "pair" (one account from one address) or "account" (one account over all addresses: `ip`
    empty). Times are POSIX seconds: the counters' own arithmetic, not dates for people."""

    __tablename__ = "login_failures"
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    account: Mapped[str] = mapped_column(String(320), primary_key=True)
    ip: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    locked_until: Mapped[float] = mapped_column(Double)
    last_failure: Mapped[float] = mapped_column(Double, index=True)


class LoginKnown(Base):
    """A client address an account logged in from (the account's own lock spares it: lockout.py)."""

    __tablename__ = "login_known"
    account: Mapped[str] = mapped_column(String(320), primary_key=True)
    ip: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen: Mapped[float] = mapped_column(Double, index=True)
