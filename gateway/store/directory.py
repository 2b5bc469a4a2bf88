"""Directory repository: the SQL behind import, export, search and show of the national directory.

Implementation notes
- Writes are batched upserts (INSERT ... ON CONFLICT DO UPDATE, the same statement on SQLite and
  PostgreSQL) keyed by address, IdNatPS/professional key and structure key; one transaction a batch
  so a long import never holds the write lock for long, and a re-run finishes an interrupted one.
- On SQLite (3.38 or later) each table's rows of a batch go to the database as one JSON array, in one
  `INSERT ... SELECT ... FROM json_each(?)` statement (the 16-byte row digests as one BLOB beside it):
  the database does the whole batch in one call, without the GIL, so the importer parses the next
  batch meanwhile; many small statements would each wait for the GIL. The constant values (datetimes,
  booleans) go through their columns' bind processors, so the stored values are SQLAlchemy's. Other
  databases use SQLAlchemy's executemany. A SQLite connection that writes a batch is given a 32 MiB
  page cache and a WAL checkpoint every 10,000 pages, and keeps them (about 25 % of the import time).
- Export reads plain columns (no ORM objects) in partitions, in the national column order.
- A mailbox upsert never touches local state (origin, active, listeRouge): the national file describes
  a mailbox, the operator decides whether it may be used.
- Rows whose type differs from the stored mailbox's are refused by the importer before they get here
  (a mailbox's type is immutable; a trigger enforces it too).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Table, bindparam, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

from directory import national
from directory.national import Row
from gateway.store import sqlite_inline
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
_ID_NAT_PS = _PRO_COLS.index("id_nat_ps")
# Column order of the tuples a Batch holds (a mailbox's row digest comes last, out of the JSON).
_PRO_ROW = ["key", *_PRO_COLS]
_STRUCT_ROW = ["key", *_STRUCT_COLS]
_MAILBOX_ROW = [*national.PART_ATTRS["mailbox"], "professional_key", "structure_key", "ordinal", "search_text"]
_DIGEST = 16  # bytes of Mailbox.row_hash
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
_JSON_SQLITE = (3, 38, 0)  # json_each, json_extract built in; UPDATE ... FROM
# A connection that writes an import batch keeps these settings (SQLite's defaults: 2 MiB, 1000 pages).
_SQLITE_CACHE_KIB = 32 * 1024  # page cache: the indexes' pages stay in memory from a batch to the next
_SQLITE_CHECKPOINT_PAGES = 10_000  # checkpoint the WAL every ~40 MB, not at every batch's commit


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


class KnownMailboxes:
    """Every stored mailbox's type, row digest and position, by address, each packed in one int.

    An entry costs about 175 bytes instead of 260 as objects: on a re-import of the national file that
    is 45 MB less, and the importer pops entries as it meets their rows.
    Packing: digest << 36 | ordinal << 4 | kind index << 2 | has digest << 1 | has ordinal.
    """

    _KINDS: Final = national.MAILBOX_KINDS
    _KIND_INDEX: Final = {k: i for i, k in enumerate(national.MAILBOX_KINDS)}

    def __init__(self) -> None:
        self._packed: dict[str, int] = {}
        self._other: dict[str, Known] = {}  # what does not fit the packing (never seen in practice)

    def add(self, address: str, kind: str, digest: bytes | None, ordinal: int | None) -> None:
        index = self._KIND_INDEX.get(kind)
        if index is None or (digest is not None and len(digest) != _DIGEST) or not 0 <= (ordinal or 0) < 1 << 32:
            self._other[address] = Known(kind, digest, ordinal)
            return
        self._packed[address] = (
            (int.from_bytes(digest, "big") << 36 if digest is not None else 0)
            | (ordinal or 0) << 4
            | index << 2
            | (digest is not None) << 1
            | (ordinal is not None)
        )

    def _unpack(self, packed: int) -> Known:
        return Known(
            self._KINDS[packed >> 2 & 3],
            (packed >> 36).to_bytes(_DIGEST, "big") if packed & 2 else None,
            packed >> 4 & 0xFFFF_FFFF if packed & 1 else None,
        )

    def get(self, address: str) -> Known | None:
        packed = self._packed.get(address)
        return self._other.get(address) if packed is None else self._unpack(packed)

    def pop(self, address: str) -> Known | None:
        packed = self._packed.pop(address, None)
        return self._other.pop(address, None) if packed is None else self._unpack(packed)

    def __contains__(self, address: object) -> bool:
        return address in self._packed or address in self._other

    def __len__(self) -> int:
        return len(self._packed) + len(self._other)


@dataclass
class Batch:
    """Rows to write in one transaction: tuples in the column orders above, by key."""

    import_id: str
    now: datetime
    professionals: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    structures: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    mailboxes: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # a later duplicate replaces the first
    reordered: list[tuple[str, int]] = field(default_factory=list)

    def add(
        self,
        row: Row,
        ordinal: int,
        professional_key: str | None,
        professional: tuple[str, ...] | None,
        structure_key: str | None,
        structure: tuple[str, ...] | None,
    ) -> None:
        """Add a row, with its professional's and structure's keys (`Row.professional_key`, ...) and their
        descriptions (`Row.values(...)`), None when they need no writing (this import wrote them)."""
        self.describe(professional_key, professional, structure_key, structure)
        self.mailboxes[row.address] = (
            *row.values("mailbox"),
            professional_key,
            structure_key,
            ordinal,
            national.search_text(row.fields),
            row.digest,
        )

    def describe(
        self,
        professional_key: str | None,
        professional: tuple[str, ...] | None,
        structure_key: str | None,
        structure: tuple[str, ...] | None,
    ) -> None:
        """Write a professional's and a structure's descriptions (each None: nothing to write)."""
        if professional_key is not None and professional is not None:
            pro: list[Any] = [professional_key, *professional]
            pro[1 + _ID_NAT_PS] = pro[1 + _ID_NAT_PS] or None
            self.professionals[professional_key] = tuple(pro)
        if structure_key is not None and structure is not None:
            self.structures[structure_key] = (structure_key, *structure)

    def move(self, address: str, ordinal: int) -> None:
        self.reordered.append((address, ordinal))

    def __len__(self) -> int:
        return len(self.mailboxes) + len(self.reordered)


_EXPORT_PARTITION = 2_000


def _bound(table: Table, dialect: Dialect, values: dict[str, Any]) -> list[Any]:
    """Values as SQLAlchemy gives them to the driver, through their columns' bind processors."""
    out = []
    for name, value in values.items():
        process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        out.append(process(value) if process is not None else value)
    return out


async def _sqlite_json_upsert(
    driver: Any,
    dialect: Dialect,
    table: Table,
    columns: list[str],
    rows: Sequence[tuple[Any, ...]],
    constants: dict[str, Any],
    keys: list[str],
    update_cols: list[str],
    digest_column: str | None = None,
) -> None:
    """INSERT ... SELECT ... FROM json_each(?1) ON CONFLICT DO UPDATE on the sqlite3 `driver` connection:
    `rows` (tuples of `columns`, then the `digest_column` value when given) as one JSON array, digests as one
    BLOB, `constants` bound once."""
    if not rows:
        return
    quote = dialect.identifier_preparer.quote
    names = list(columns)
    values = [f"json_extract(j.value, '$[{i}]')" for i in range(len(columns))]
    if digest_column is None:
        params: list[Any] = [json.dumps(rows, ensure_ascii=False, check_circular=False)]
    else:
        digests = b"".join(r[-1] for r in rows)
        if len(digests) != _DIGEST * len(rows):
            raise ValueError(f"{digest_column} values must be {_DIGEST} bytes long")
        params = [json.dumps([r[:-1] for r in rows], ensure_ascii=False, check_circular=False), digests]
        names.append(digest_column)
        values.append(f"substr(?2, j.key * {_DIGEST} + 1, {_DIGEST})")
    for name, value in zip(constants, _bound(table, dialect, constants), strict=True):
        params.append(value)
        names.append(name)
        values.append(f"?{len(params)}")
    # Table and column names come from the models; every value is a bound parameter. "WHERE true": an
    # upsert's INSERT ... SELECT needs a WHERE clause (SQLite's "parsing ambiguity").
    sql = (
        f"INSERT INTO {quote(table.name)} ({', '.join(map(quote, names))}) "  # noqa: S608
        f"SELECT {', '.join(values)} FROM json_each(?1) AS j WHERE true "
        f"ON CONFLICT ({', '.join(map(quote, keys))}) DO UPDATE SET "
        + ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in update_cols)
    )
    await driver.execute(sql, params)


class DirectoryRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def known(self) -> KnownMailboxes:
        """Every mailbox's type, last imported row digest and position, by address."""
        known = KnownMailboxes()
        mb = _table(Mailbox)
        stmt = select(mb.c.address, mb.c.kind, mb.c.row_hash, mb.c.ordinal).execution_options(yield_per=10_000)
        async with self.db.read() as s:
            result = await s.stream(stmt)
            async for partition in result.partitions():
                for address, kind, digest, ordinal in partition:
                    known.add(address, kind, digest, ordinal)
        return known

    async def write(self, batch: Batch) -> None:
        now = batch.now
        mailbox_const = {
            "import_id": batch.import_id,
            "origin": "national",
            "active": True,
            "list_rouge": False,
            "created_at": now,
            "updated_at": now,
        }
        parts: list[tuple[Table, list[str], list[tuple[Any, ...]], dict[str, Any], list[str]]] = [
            (
                _table(Professional),
                _PRO_ROW,
                [*batch.professionals.values()],
                {"active": True, "updated_at": now},
                _PRO_COLS,
            ),
            (_table(Structure), _STRUCT_ROW, [*batch.structures.values()], {"updated_at": now}, _STRUCT_COLS),
        ]
        mailboxes = [*batch.mailboxes.values()]
        async with self.db.write() as s:
            conn = await s.connection()  # BEGIN IMMEDIATE
            if self.db.is_sqlite and sqlite3.sqlite_version_info >= _JSON_SQLITE:
                # Straight to the sqlite3 connection, inside the session's transaction, each bulk statement
                # on a worker thread (it would hold the loop for a batch's time).
                driver = sqlite_inline.OffLoop((await conn.get_raw_connection()).dbapi_connection)
                # A larger page cache for the batch (two statements a batch of thousands of rows).
                await driver.execute(f"PRAGMA cache_size = -{_SQLITE_CACHE_KIB}")
                await driver.execute(f"PRAGMA wal_autocheckpoint = {_SQLITE_CHECKPOINT_PAGES}")
                for table, cols, rows, const, update_cols in parts:
                    await _sqlite_json_upsert(
                        driver, conn.dialect, table, cols, rows, const, ["key"], [*update_cols, "updated_at"]
                    )
                if batch.reordered:  # before the mailbox upsert: a moved row's later duplicate keeps its place
                    await driver.execute(
                        "UPDATE mailboxes SET ordinal = json_extract(j.value, '$[1]'), import_id = ?2 "
                        "FROM json_each(?1) AS j WHERE mailboxes.address = json_extract(j.value, '$[0]')",
                        (json.dumps(batch.reordered, ensure_ascii=False), batch.import_id),
                    )
                await _sqlite_json_upsert(
                    driver,
                    conn.dialect,
                    _table(Mailbox),
                    _MAILBOX_ROW,
                    mailboxes,
                    mailbox_const,
                    ["address"],
                    _MAILBOX_UPDATE,
                    "row_hash",
                )
                return
            for table, cols, rows, const, update_cols in parts:
                dicts = [{**dict(zip(cols, r, strict=True)), **const} for r in rows]
                await upsert(s, table, dicts, ["key"], [*update_cols, "updated_at"])
            if batch.reordered:  # before the upsert, as above
                stmt = (
                    update(_table(Mailbox))
                    .where(_table(Mailbox).c.address == bindparam("b_address"))
                    .values(ordinal=bindparam("b_ordinal"), import_id=bindparam("b_import"))
                )
                moves = [{"b_address": a, "b_ordinal": o, "b_import": batch.import_id} for a, o in batch.reordered]
                await s.execute(stmt, moves)
            names = [*_MAILBOX_ROW, "row_hash"]
            dicts = [{**dict(zip(names, r, strict=True)), **mailbox_const} for r in mailboxes]
            await upsert(s, _table(Mailbox), dicts, ["address"], _MAILBOX_UPDATE)

    async def mark_seen(self, addresses: Iterable[str], import_id: str) -> None:
        """Record that unchanged rows were present in this import (for --prune)."""
        rows = [{"b_address": a} for a in addresses]
        if not rows:
            return
        async with self.db.write() as s:
            stmt = (
                update(_table(Mailbox))
                .where(_table(Mailbox).c.address == bindparam("b_address"))
                .values(import_id=import_id)
            )
            await s.execute(stmt, rows)

    async def prune(self, import_id: str, *, limit: float | None = None) -> int:
        """Delete national mailboxes absent from import `import_id` (local mailboxes are never pruned): how
        many. With `limit` (a fraction of the national mailboxes), when more would go, none does and the
        count comes back negative."""
        absent = (Mailbox.origin == "national", Mailbox.import_id != import_id)
        async with self.db.write() as s:
            if limit is not None:
                national_count = func.count().filter(Mailbox.origin == "national")
                gone_count = func.count().filter(*absent)
                total, gone = (await s.execute(select(national_count, gone_count).select_from(Mailbox))).one()
                if gone > limit * total:
                    return -int(gone)
            result = await s.execute(delete(Mailbox).where(*absent))
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def _export_stmt(self, origin: str | None, include_hidden: bool) -> Any:
        mb, pro, st = _table(Mailbox), _table(Professional), _table(Structure)
        tables = {"mailbox": mb, "professional": pro, "structure": st}
        # The 31 columns in the national order; those of an absent professional/structure read "".
        columns = [
            tables[c.part].c[c.attr] if c.part == "mailbox" else func.coalesce(tables[c.part].c[c.attr], "")
            for c in national.COLUMNS
        ]
        stmt = (
            select(*columns)
            .select_from(mb)
            .outerjoin(pro, mb.c.professional_key == pro.c.key)
            .outerjoin(st, mb.c.structure_key == st.c.key)
            .order_by(mb.c.ordinal.is_(None), mb.c.ordinal, mb.c.address)
        )
        if origin:
            stmt = stmt.where(mb.c.origin == origin)
        if not include_hidden:
            stmt = stmt.where(mb.c.list_rouge.is_(False))
        return stmt.execution_options(yield_per=_EXPORT_PARTITION)

    async def export_rows(
        self, *, origin: str | None = None, include_hidden: bool = False
    ) -> AsyncIterator[tuple[str, ...]]:
        """Rows in the national format, in the order of the last import, local mailboxes after."""
        async with self.db.read() as s:
            result = await s.stream(self._export_stmt(origin, include_hidden))
            async for partition in result.partitions():
                for row in partition:
                    yield tuple(row)

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
