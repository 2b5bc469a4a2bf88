"""The directory's import and export on PostgreSQL: the same code, the same results as on SQLite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from directory.importer import ImportSummary, import_extraction
from directory.national import HEADER, Row, format_row, parse_row, read_text_lines
from directory.synthetic import generate_rows, write_extraction
from gateway.store.crypto import KeyEncryptionKey
from gateway.store.db import Database
from gateway.store.directory import DirectoryRepository
from gateway.store.mailboxes import MailboxRepository
from gateway.store.models import Mailbox, Professional, Structure

N = 3000
DUPLICATES = 4


def _counts(s: ImportSummary) -> dict[str, int]:
    return {
        k: getattr(s, k)
        for k in ("read", "imported", "updated", "unchanged", "rejected", "duplicates", "conflicts", "pruned")
    }


def _expected_export(rows: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """What an export gives back: one row an address, the later duplicate kept, in file order."""
    last: dict[str, tuple[int, tuple[str, ...]]] = {}
    for line, row in enumerate(rows, start=2):
        last[row[1]] = (line, row)
    return [row for _line, row in sorted(last.values())]


async def _export(db: Database, **kwargs: Any) -> list[tuple[str, ...]]:
    return [row async for row in DirectoryRepository(db).export_rows(**kwargs)]


async def _state(db: Database) -> dict[str, Any]:
    async with db.read() as s:
        marks = dict((await s.execute(select(Mailbox.address, Mailbox.import_id))).all())
        counts = [
            (await s.execute(select(func.count()).select_from(model))).scalar_one()
            for model in (Mailbox, Professional, Structure)
        ]
    return {"import_ids": marks, "counts": counts}


async def test_import_export_round_trip(pg_url: str, tmp_path: Path) -> None:
    rows = list(generate_rows(N, seed=11))
    path = tmp_path / "extraction.txt"
    assert write_extraction(path, iter(rows)) == N
    async with Database(pg_url) as db:
        await db.migrate()
        assert not db.is_sqlite
        repo = DirectoryRepository(db)
        first = await import_extraction(repo, path, batch_rows=700)
        assert _counts(first) == {
            "read": N,
            "imported": N,
            "updated": 0,
            "unchanged": 0,
            "rejected": 0,
            "duplicates": 0,
            "conflicts": 0,
            "pruned": 0,
        }
        exported = await _export(db)
        assert exported == rows
        # The export is a valid extraction again, byte for byte the file imported.
        assert HEADER + "\n" + "".join(format_row(r) for r in exported) == path.read_text(encoding="utf-8")
        state = await _state(db)
        assert state["counts"][0] == N
        assert set(state["import_ids"].values()) == {state["import_ids"][rows[0][1]]}

        again = await import_extraction(repo, path, batch_rows=700)
        assert _counts(again) == {**_counts(first), "imported": 0, "unchanged": N}
        assert await _state(db) == state  # nothing written: every row keeps the first import's id
        assert await _export(db) == rows

        # The same file on SQLite gives the same directory, row for row, and the same search results.
        async with Database(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}") as lite:
            await lite.migrate()
            await import_extraction(DirectoryRepository(lite), path)
            assert await _export(lite) == rows
            assert (await _state(lite))["counts"] == state["counts"]
            for text in ("martin", "HÉLÈNE cardiologie", "secretariat", "75013", "zzz-none"):
                on_pg = await repo.search(text, limit=30)
                assert on_pg == await DirectoryRepository(lite).search(text, limit=30), text
            assert len(await repo.search("martin", limit=30)) == 30
            address = rows[5][1]
            assert await repo.show(address) == await DirectoryRepository(lite).show(address)


async def test_duplicates_reorder_and_prune(pg_url: str, tmp_path: Path) -> None:
    rows = list(generate_rows(N, seed=3, duplicates=DUPLICATES))
    path = tmp_path / "with-duplicates.txt"
    write_extraction(path, iter(rows))
    expected = _expected_export(rows)
    assert len(expected) == N
    async with Database(pg_url) as db:
        await db.migrate()
        repo = DirectoryRepository(db)
        first = await import_extraction(repo, path, batch_rows=N + DUPLICATES)  # duplicates in one batch
        assert _counts(first) == {
            "read": N + DUPLICATES,
            "imported": N,
            "updated": 0,
            "unchanged": 0,
            "rejected": 0,
            "duplicates": DUPLICATES,
            "conflicts": 0,
            "pruned": 0,
        }
        assert await _export(db) == expected
        # Re-import: the first copy of each duplicate differs from what is stored (the later copy), so it
        # is written again, then overwritten by the later copy: the directory ends up the same.
        again = await import_extraction(repo, path, batch_rows=N + DUPLICATES)
        assert _counts(again) == {
            **_counts(first),
            "imported": 0,
            "updated": DUPLICATES,
            "unchanged": N - DUPLICATES,
        }
        assert await _export(db) == expected

        # A local mailbox is exported after the national rows and never pruned.
        mailboxes = MailboxRepository(db, KeyEncryptionKey(b"\x01" * 32))
        await mailboxes.create("local.box@ch-test.mssante.fr", "ORG", service="Accueil")
        local_row = ("ORG", "local.box@ch-test.mssante.fr", *[""] * 5, "Accueil", *[""] * 23)
        assert (await _export(db))[-1] == local_row
        assert await _export(db, origin="local") == [local_row]

        # A shorter file, in another order, with --prune: the rest goes, the order follows the file.
        kept = list(reversed(rows[:1000]))
        short = tmp_path / "short.txt"
        write_extraction(short, iter(kept))
        refused = await import_extraction(repo, short, prune=True, prune_limit=0.5)  # most would go: none does
        assert (refused.pruned, refused.prune_refused) == (0, N - 1000)
        pruned = await import_extraction(repo, short, prune=True, prune_limit=1.0)
        expected_short = _expected_export(kept)
        assert pruned.pruned == N - len(expected_short)
        assert pruned.rejected == 0
        assert await _export(db) == [*expected_short, local_row]
        async with db.read() as s:
            origins = dict((await s.execute(select(Mailbox.origin, func.count()).group_by(Mailbox.origin))).all())
        assert origins == {"national": len(expected_short), "local": 1}


def test_synthetic_rows_parse_back() -> None:
    """The generated rows are what the tests above expect: valid, addresses already lower-case."""
    rows = list(generate_rows(300, seed=11, duplicates=2))
    text = HEADER + "\n" + "".join(format_row(r) for r in rows)
    parsed = [parse_row(n, raw) for n, raw in read_text_lines(text)]
    assert all(isinstance(p, Row) for p in parsed)
    assert [p.fields for p in parsed if isinstance(p, Row)] == rows
