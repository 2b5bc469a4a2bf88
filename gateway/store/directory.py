"""Directory repository: the SQL behind import, export, search and show of the national directory.

Implementation notes
- Writes are batched upserts (INSERT ... ON CONFLICT DO UPDATE, the same statement on SQLite and
  PostgreSQL) keyed by address, IdNatPS/professional key and structure key; one transaction a batch
  so a long import never holds the write lock for long, and a re-run finishes an interrupted one.
- A mailbox upsert never touches local state (origin, active, listeRouge): the national file describes
  a mailbox, the operator decides whether it may be used.
- Rows whose type differs from the stored mailbox's are refused by the importer before they get here
  (a mailbox's type is immutable; a trigger enforces it too).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from directory import national
from directory.national import Row
from gateway.store.db import Database
from gateway.store.models import (
    Account,
    Mailbox,
    MailboxCertificate,
    MailboxDelegation,
    Professional,
    Structure,
)

_PRO_COLS = [c.attr for c in national.COLUMNS if c.part == "professional"]
_STRUCT_COLS = [c.attr for c in national.COLUMNS if c.part == "structure"]
_MAILBOX_UPDATE = [
    "professional_key",
    "structure_key",
    "service",
    "dematerialisation",
    "ordinal",
    "row_hash",
    "import_id",
    "search_text",
    "updated_at",
]


def _table(model: type[Any]) -> Table:
    table: Table = model.__table__
    return table


async def upsert(
    session: AsyncSession,
    table: Table,
    rows: Sequence[dict[str, Any]],
    keys: list[str],
    update_cols: list[str],
) -> None:
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    ins = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(table)
    stmt = ins.on_conflict_do_update(index_elements=keys, set_={c: ins.excluded[c] for c in update_cols})
    await session.execute(stmt, list(rows))


@dataclass(slots=True)
class Known:
    kind: str
    digest: bytes | None
    ordinal: int | None


@dataclass
class Batch:
    """Rows to write in one transaction."""

    import_id: str
    now: datetime
    professionals: dict[str, dict[str, Any]] = field(default_factory=dict)
    structures: dict[str, dict[str, Any]] = field(default_factory=dict)
    mailboxes: list[dict[str, Any]] = field(default_factory=list)
    reordered: list[dict[str, Any]] = field(default_factory=list)

    def add(self, row: Row, ordinal: int) -> None:
        pkey, skey = row.professional_key, row.structure_key
        if pkey is not None:
            pro: dict[str, Any] = row.part("professional")
            pro["id_nat_ps"] = pro["id_nat_ps"] or None
            pro.update(key=pkey, updated_at=self.now)
            self.professionals[pkey] = pro
        if skey is not None:
            st: dict[str, Any] = row.part("structure")
            st.update(key=skey, updated_at=self.now)
            self.structures[skey] = st
        mb: dict[str, Any] = row.part("mailbox")
        mb.update(
            professional_key=pkey,
            structure_key=skey,
            ordinal=ordinal,
            row_hash=row.digest,
            import_id=self.import_id,
            search_text=national.search_text(row.fields),
            origin="national",
            active=True,
            list_rouge=False,
            created_at=self.now,
            updated_at=self.now,
        )
        self.mailboxes.append(mb)

    def move(self, address: str, ordinal: int) -> None:
        self.reordered.append({"b_address": address, "b_ordinal": ordinal, "b_import": self.import_id})

    def __len__(self) -> int:
        return len(self.mailboxes) + len(self.reordered)


class DirectoryRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def known(self) -> dict[str, Known]:
        """Every mailbox's type, last imported row digest and position, by address."""
        async with self.db.read() as s:
            result = await s.execute(select(Mailbox.address, Mailbox.kind, Mailbox.row_hash, Mailbox.ordinal))
            return {a: Known(k, h, o) for a, k, h, o in result}

    async def write(self, batch: Batch) -> None:
        from sqlalchemy import bindparam

        async with self.db.write() as s:
            await upsert(
                s,
                _table(Professional),
                list(batch.professionals.values()),
                ["key"],
                [*_PRO_COLS, "updated_at"],
            )
            await upsert(
                s,
                _table(Structure),
                list(batch.structures.values()),
                ["key"],
                [*_STRUCT_COLS, "updated_at"],
            )
            await upsert(s, _table(Mailbox), batch.mailboxes, ["address"], _MAILBOX_UPDATE)
            if batch.reordered:
                stmt = (
                    update(_table(Mailbox))
                    .where(_table(Mailbox).c.address == bindparam("b_address"))
                    .values(ordinal=bindparam("b_ordinal"), import_id=bindparam("b_import"))
                )
                await s.execute(stmt, batch.reordered)

    async def mark_seen(self, addresses: Iterable[str], import_id: str) -> None:
        """Record that unchanged rows were present in this import (for --prune)."""
        rows = [{"b_address": a} for a in addresses]
        if not rows:
            return
        from sqlalchemy import bindparam

        async with self.db.write() as s:
            stmt = (
                update(_table(Mailbox))
                .where(_table(Mailbox).c.address == bindparam("b_address"))
                .values(import_id=import_id)
            )
            await s.execute(stmt, rows)

    async def prune(self, import_id: str) -> int:
        """Delete national mailboxes absent from import `import_id` (local mailboxes are never pruned)."""
        async with self.db.write() as s:
            result = await s.execute(
                delete(Mailbox).where(Mailbox.origin == "national", Mailbox.import_id != import_id)
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def _export_stmt(self, origin: str | None, include_hidden: bool) -> Any:
        stmt = (
            select(Mailbox, Professional, Structure)
            .outerjoin(Professional, Mailbox.professional_key == Professional.key)
            .outerjoin(Structure, Mailbox.structure_key == Structure.key)
            .order_by(Mailbox.ordinal.is_(None), Mailbox.ordinal, Mailbox.address)
        )
        if origin:
            stmt = stmt.where(Mailbox.origin == origin)
        if not include_hidden:
            stmt = stmt.where(Mailbox.list_rouge.is_(False))
        return stmt

    async def export_rows(
        self, *, origin: str | None = None, include_hidden: bool = False
    ) -> AsyncIterator[tuple[str, ...]]:
        """Rows in the national format, in the order of the last import, local mailboxes after."""
        async with self.db.read() as s:
            result = await s.stream(self._export_stmt(origin, include_hidden))
            async for mb, pro, st in result:
                yield national.fields_from(
                    {
                        "kind": mb.kind,
                        "address": mb.address,
                        "service": mb.service,
                        "dematerialisation": mb.dematerialisation,
                    },
                    {a: getattr(pro, a) for a in _PRO_COLS} if pro else {},
                    {a: getattr(st, a) for a in _STRUCT_COLS} if st else {},
                )

    async def search(self, text: str, limit: int = 50) -> list[dict[str, Any]]:
        terms = national.fold(text).split()
        stmt = (
            select(Mailbox, Professional, Structure)
            .outerjoin(Professional, Mailbox.professional_key == Professional.key)
            .outerjoin(Structure, Mailbox.structure_key == Structure.key)
            .order_by(Mailbox.address)
            .limit(limit)
        )
        for t in terms:
            escaped = t.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            stmt = stmt.where(Mailbox.search_text.like(f"%{escaped}%", escape="\\"))
        async with self.db.read() as s:
            return [_summary(mb, pro, st) for mb, pro, st in (await s.execute(stmt)).all()]

    async def show(self, address: str) -> dict[str, Any] | None:
        async with self.db.read() as s:
            row = (
                await s.execute(
                    select(Mailbox, Professional, Structure)
                    .outerjoin(Professional, Mailbox.professional_key == Professional.key)
                    .outerjoin(Structure, Mailbox.structure_key == Structure.key)
                    .where(Mailbox.address == address.lower())
                )
            ).first()
            if row is None:
                return None
            mb, pro, st = row
            out = _summary(mb, pro, st)
            out["professional"] = (
                {"key": pro.key, **{a: getattr(pro, a) for a in _PRO_COLS}, "active": pro.active} if pro else None
            )
            out["structure"] = {"key": st.key, **{a: getattr(st, a) for a in _STRUCT_COLS}} if st else None
            out["delegates"] = list(
                (
                    await s.execute(select(MailboxDelegation.user).where(MailboxDelegation.mailbox == mb.address))
                ).scalars()
            )
            out["delegated_to_act_for"] = list(
                (
                    await s.execute(select(MailboxDelegation.mailbox).where(MailboxDelegation.user == mb.address))
                ).scalars()
            )
            certs = (
                await s.execute(select(MailboxCertificate).where(MailboxCertificate.address == mb.address))
            ).scalars()
            out["certificates"] = [
                {
                    "fingerprint": c.fingerprint,
                    "usage": c.usage,
                    "serial": c.serial,
                    "not_after": c.not_after.isoformat(),
                }
                for c in certs
            ]
            acct = await s.get(Account, mb.address)
            out["account"] = (
                {
                    "has_password": acct.password_hash is not None,
                    "totp_enrolled": acct.totp_secret is not None,
                    "created_at": acct.created_at.isoformat(),
                    "last_login_at": acct.last_login_at.isoformat() if acct.last_login_at else None,
                }
                if acct
                else None
            )
            return out


def _summary(mb: Mailbox, pro: Professional | None, st: Structure | None) -> dict[str, Any]:
    name = " ".join(p for p in (pro.civility, pro.first_name, pro.last_name) if p) if pro else ""
    return {
        "address": mb.address,
        "type": mb.kind,
        "name": name,
        "id_nat_ps": pro.id_nat_ps if pro else None,
        "profession": pro.profession_label if pro else "",
        "skill": pro.skill_label if pro else "",
        "service": mb.service,
        "structure": st.name if st else "",
        "city": st.routing_line if st else "",
        "active": mb.active,
        "list_rouge": mb.list_rouge,
        "origin": mb.origin,
    }
