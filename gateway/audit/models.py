"""Tables of the audit database (kept apart from application data).

Implementation notes
- `audit_records.seq` is assigned by the writer (1, 2, 3 ...) under the lock of the single `audit_head`
  row, which also persists the Merkle frontier (RFC 9162 compact range) so appending and checkpointing
  never re-read old records.
- Every field that enters a record's leaf hash is stored as text exactly as it was hashed (timestamp as
  ISO-8601 UTC, request/response as canonical JSON), so `audit verify` recomputes identical bytes on any
  backend.
- `leaf_hash` is what the writer computed; verification recomputes it and compares, which names an
  edited record directly; a forger who also rewrites it is still caught by the signed checkpoints.
- `audit_archives` (migration a0002): one row per `mssgw audit archive`, the records it moved to a file
  and the tree's compact range after them, under a checkpoint signed at that size. The delete trigger
  lets a record go only once such a row covers it, and `audit verify` continues the tree from the last
  row's compact range.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from gateway.store.models import NAMING


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class AuditRecord(Base):
    __tablename__ = "audit_records"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    ts: Mapped[str] = mapped_column(String(40))
    node: Mapped[str] = mapped_column(String(100))
    author: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(80))
    principal: Mapped[str | None] = mapped_column(String(320), nullable=True)
    peer: Mapped[str | None] = mapped_column(String(320), nullable=True)
    cid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request: Mapped[str] = mapped_column(Text)
    response: Mapped[str] = mapped_column(Text)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))

    __table_args__ = (
        Index("ix_audit_records_ts", "ts"),
        Index("ix_audit_records_action", "action"),
        Index("ix_audit_records_principal", "principal"),
    )


class AuditHead(Base):
    """The one row (id = 1) that serialises appends and holds the current tree frontier."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)
    frontier: Mapped[bytes] = mapped_column(LargeBinary)  # concatenated 32-byte subtree hashes


class AuditCheckpoint(Base):
    """A signed statement of the tree size and root hash at a point in time."""

    __tablename__ = "audit_checkpoints"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tree_size: Mapped[int] = mapped_column(BigInteger)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    ts: Mapped[str] = mapped_column(String(40))
    node: Mapped[str] = mapped_column(String(100))
    key_id: Mapped[str] = mapped_column(String(16))
    signature: Mapped[bytes] = mapped_column(LargeBinary(64))


class AuditArchive(Base):
    """Records `first_seq`..`last_seq` moved off line to `file`: the compact range of the tree of the first
    `last_seq` records (what verification continues from) and the checkpoint signed over it."""

    __tablename__ = "audit_archives"
    first_seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    last_ts: Mapped[str] = mapped_column(String(40))  # the timestamp of record last_seq
    frontier: Mapped[bytes] = mapped_column(LargeBinary)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    ts: Mapped[str] = mapped_column(String(40))  # the checkpoint's: when the archive was made
    node: Mapped[str] = mapped_column(String(100))
    key_id: Mapped[str] = mapped_column(String(16))
    signature: Mapped[bytes] = mapped_column(LargeBinary(64))
    file: Mapped[str] = mapped_column(String(255))  # its name; where it is kept is the operator's
    sha256: Mapped[str] = mapped_column(String(64))
