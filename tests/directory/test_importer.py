"""Import of the national extraction into a real SQLite database, export, search and show.

Every test imports real files (synthetic rows in the exact national format, some changed by hand) into a
fresh database in tmp_path and checks exact counts, reasons and the bytes exported back.
"""

from __future__ import annotations

import asyncio
import re
import zipfile
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

import gateway.store.directory as store_directory
from directory.importer import ImportSummary, import_extraction
from directory.national import COLUMNS, HEADER, HeaderError, format_row
from directory.synthetic import generate_rows, rpps, write_extraction
from gateway.store.crypto import KeyEncryptionKey
from gateway.store.db import Database
from gateway.store.directory import DirectoryRepository
from gateway.store.mailboxes import MailboxRepository

IDX = {c.header: i for i, c in enumerate(COLUMNS)}
N = 3000
COUNTS = ("read", "imported", "updated", "unchanged", "rejected", "duplicates", "conflicts", "pruned")


def counts(summary: ImportSummary) -> dict[str, int]:
    return {k: getattr(summary, k) for k in COUNTS}


def expect(**values: int) -> dict[str, int]:
    return {k: values.get(k, 0) for k in COUNTS}


def changed(row: tuple[str, ...], changes: dict[str, str]) -> tuple[str, ...]:
    fields = list(row)
    for header, value in changes.items():
        fields[IDX[header]] = value
    return tuple(fields)


def write_rows(path: Path, rows: Iterable[tuple[str, ...]]) -> Path:
    write_extraction(path, iter(rows))
    return path


def file_text(rows: Iterable[tuple[str, ...]]) -> str:
    return HEADER + "\n" + "".join(format_row(r) for r in rows)


async def export(db: Database, **kwargs: Any) -> list[tuple[str, ...]]:
    return [row async for row in DirectoryRepository(db).export_rows(**kwargs)]


def _write_export(path: Path, rows: list[tuple[str, ...]]) -> bytes:
    """The export written as the CLI does: header, then one line a row, UTF-8, LF."""
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write(HEADER + "\n")
        for fields in rows:
            fh.write(format_row(fields))
    return path.read_bytes()


async def export_file(db: Database, path: Path) -> bytes:
    return _write_export(path, await export(db))


async def table_rows(db: Database, sql: str) -> list[tuple[Any, ...]]:
    async with db.read() as s:
        return [tuple(r) for r in (await s.execute(text(sql))).all()]


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}") as database:
        await database.migrate()
        yield database


@pytest.fixture(scope="module")
def rows() -> list[tuple[str, ...]]:
    generated = list(generate_rows(N, seed=7))
    assert len(generated) == N
    assert len({r[1] for r in generated}) == N
    return generated


# --------------------------------------------------------------------------- round trip, idempotence


async def test_round_trip_is_byte_identical(db: Database, rows: list[tuple[str, ...]], tmp_path: Path) -> None:
    path = write_rows(tmp_path / "extraction.txt", rows)
    sizes: list[int] = []
    summary = await import_extraction(DirectoryRepository(db), path, progress=sizes.append)
    assert counts(summary) == expect(read=N, imported=N)
    assert (summary.rejections, summary.duplicate_addresses, summary.conflicting) == ([], [], [])
    assert sum(sizes) == path.stat().st_size - len(HEADER.encode()) - 1
    assert await export_file(db, tmp_path / "export.txt") == path.read_bytes()
    # One row per mailbox; professionals and structures once each.
    assert await table_rows(db, "SELECT count(*) FROM mailboxes") == [(N,)]
    people = {r[IDX["Identification nationale PP"]] or "bal:" + r[1] for r in rows if r[0] == "PER"}
    assert await table_rows(db, "SELECT count(*) FROM professionals") == [(len(people),)]
    structures = {f"{r[5]}:{r[6]}" for r in rows}
    assert await table_rows(db, "SELECT count(*) FROM structures") == [(len(structures),)]


async def test_round_trip_from_zip(db: Database, rows: list[tuple[str, ...]], tmp_path: Path) -> None:
    zipped = tmp_path / "Extraction_Correspondance_MSSante.zip"
    assert write_extraction(zipped, iter(rows), zipped=True) == N
    with zipfile.ZipFile(zipped) as zf:
        assert zf.namelist() == ["Extraction_Correspondance_MSSante.txt"]
    summary = await import_extraction(DirectoryRepository(db), zipped)
    assert counts(summary) == expect(read=N, imported=N)
    assert await export_file(db, tmp_path / "export.txt") == file_text(rows).encode()


async def test_second_import_changes_nothing(db: Database, rows: list[tuple[str, ...]], tmp_path: Path) -> None:
    path = write_rows(tmp_path / "extraction.txt", rows)
    repo = DirectoryRepository(db)
    await import_extraction(repo, path)
    state_sql = "SELECT address, import_id, row_hash, ordinal, updated_at FROM mailboxes ORDER BY address"
    before = await table_rows(db, state_sql)
    pros_before = await table_rows(db, "SELECT * FROM professionals ORDER BY key")
    again = await import_extraction(repo, path)
    assert counts(again) == expect(read=N, unchanged=N)
    assert await table_rows(db, state_sql) == before  # nothing written, not even the import id
    assert await table_rows(db, "SELECT * FROM professionals ORDER BY key") == pros_before
    assert await export(db) == rows


async def test_batch_size_does_not_change_the_result(rows: list[tuple[str, ...]], tmp_path: Path) -> None:
    """Batches are parsed while the previous one is written: small batches, one batch, same directory."""
    path = write_rows(tmp_path / "extraction.txt", rows[:500])
    results = []
    for batch_rows in (7, 100_000):
        async with Database(f"sqlite+aiosqlite:///{tmp_path / f'b{batch_rows}.db'}") as db:
            await db.migrate()
            summary = await import_extraction(DirectoryRepository(db), path, batch_rows=batch_rows)
            sql = "SELECT address, kind, professional_key, structure_key, ordinal, row_hash, search_text FROM mailboxes"
            results.append((counts(summary), await export(db), sorted(await table_rows(db, sql))))
    assert results[0] == results[1]
    assert results[0][0] == expect(read=500, imported=500)
    assert results[0][1] == rows[:500]


async def test_sqlite_fast_path_stores_what_sqlalchemy_stores(
    rows: list[tuple[str, ...]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The JSON statements store the same values, types and timestamp format as SQLAlchemy's executemany."""
    changes = {"Type Identifiant PP": "", "Identifiant PP": "", "Identification nationale PP": ""}
    sample = [*rows[:300], changed(rows[0], {**changes, "Adresse BAL": "sans.id@ch-x.mssante.fr"})]
    path = write_rows(tmp_path / "extraction.txt", sample)
    stored = []
    for fast in (True, False):
        if not fast:
            monkeypatch.setattr(store_directory, "_JSON_SQLITE", (9999,))
        async with Database(f"sqlite+aiosqlite:///{tmp_path / f'fast-{fast}.db'}") as db:
            await db.migrate()
            await import_extraction(DirectoryRepository(db), path, batch_rows=120)
            mailboxes = await table_rows(
                db,
                "SELECT address, kind, professional_key, structure_key, service, dematerialisation, list_rouge, "
                "active, origin, ordinal, row_hash, typeof(row_hash), search_text, typeof(ordinal), "
                "typeof(list_rouge), length(import_id), typeof(created_at) FROM mailboxes ORDER BY address",
            )
            stamps = await table_rows(db, "SELECT created_at, updated_at FROM mailboxes")
            assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", s) for pair in stamps for s in pair)
            pros = await table_rows(db, "SELECT * FROM professionals ORDER BY key")
            structures = await table_rows(db, "SELECT * FROM structures ORDER BY key")
            stored.append((mailboxes, [p[:-1] for p in pros], [s[:-1] for s in structures], await export(db)))
    assert stored[0] == stored[1]
    mailboxes, pros, _structures, exported = stored[0]
    assert exported == sample
    assert mailboxes[0][6:8] == (0, 1)  # list_rouge false, active true, as integers
    assert mailboxes[0][11] == "blob"
    assert mailboxes[0][13:] == ("integer", "integer", 32, "text")
    no_id = next(p for p in pros if p[0] == "bal:sans.id@ch-x.mssante.fr")
    assert no_id[:4] == ("bal:sans.id@ch-x.mssante.fr", None, "", "")  # key, id_nat_ps NULL (not ""), ...


# --------------------------------------------------------------------------- updates and order


async def test_changed_row_is_updated(db: Database, rows: list[tuple[str, ...]], tmp_path: Path) -> None:
    repo = DirectoryRepository(db)
    await import_extraction(repo, write_rows(tmp_path / "v1.txt", rows))
    org_line = next(i for i, r in enumerate(rows) if r[0] == "ORG")
    v2 = list(rows)
    v2[org_line] = changed(rows[org_line], {"Service de rattachement": "Urgences pédiatriques"})
    path = write_rows(tmp_path / "v2.txt", v2)
    summary = await import_extraction(repo, path)
    assert counts(summary) == expect(read=N, updated=1, unchanged=N - 1)
    assert await export_file(db, tmp_path / "export.txt") == path.read_bytes()
    found = await repo.search("urgences pediatriques")
    assert [r["address"] for r in found] == [rows[org_line][1]]


async def test_changed_names_update_the_professional(db: Database, rows: list[tuple[str, ...]], tmp_path: Path) -> None:
    repo = DirectoryRepository(db)
    await import_extraction(repo, write_rows(tmp_path / "v1.txt", rows))
    # A professional with one mailbox only, so that the change contradicts no other row.
    ids = [r[IDX["Identification nationale PP"]] for r in rows]
    k = next(i for i, r in enumerate(rows) if r[0] == "PER" and r[4] and ids.count(r[4]) == 1)
    v2 = list(rows)
    v2[k] = changed(rows[k], {"Nom d'exercice": "NOUVEAU-NOM", "Prénom d'exercice": "Zoé"})
    path = write_rows(tmp_path / "v2.txt", v2)
    summary = await import_extraction(repo, path)
    assert counts(summary) == expect(read=N, updated=1, unchanged=N - 1)
    shown = await repo.show(rows[k][1])
    assert shown is not None
    assert shown["professional"] is not None
    assert (shown["professional"]["last_name"], shown["professional"]["first_name"]) == ("NOUVEAU-NOM", "Zoé")
    assert await export_file(db, tmp_path / "export.txt") == path.read_bytes()
    assert [r["address"] for r in await repo.search("nouveau-nom zoe")] == [rows[k][1]]


async def test_reordered_file_is_unchanged_but_export_follows_it(
    db: Database, rows: list[tuple[str, ...]], tmp_path: Path
) -> None:
    repo = DirectoryRepository(db)
    await import_extraction(repo, write_rows(tmp_path / "v1.txt", rows))
    reordered = rows[1500:] + rows[:1500][::-1]
    path = write_rows(tmp_path / "v2.txt", reordered)
    summary = await import_extraction(repo, path, batch_rows=400)
    assert counts(summary) == expect(read=N, unchanged=N)
    assert await export_file(db, tmp_path / "export.txt") == path.read_bytes()
    assert (await table_rows(db, "SELECT min(ordinal), max(ordinal), count(DISTINCT ordinal) FROM mailboxes")) == [
        (2, N + 1, N)
    ]


# --------------------------------------------------------------------------- refused rows


async def test_malformed_rows_are_reported_never_fatal(
    db: Database, rows: list[tuple[str, ...]], tmp_path: Path
) -> None:
    valid = rows[:40]
    base = valid[0]

    def bad_line(changes: dict[str, str]) -> bytes:
        return format_row(changed(base, {"Adresse BAL": "bad@ch-x.mssante.fr", **changes})).encode()

    bad: list[tuple[bytes, str]] = [
        (b"|".join(x.encode() for x in base[:30]) + b"\n", "expected 31 fields separated by '|', found 30"),
        (format_row(base).encode().replace(b"MARTIN", b"MART\xe9N", 1), "not valid UTF-8 (byte 92 of the line)"),
        (bad_line({"Nom d'exercice": "MAR\tTIN"}), 'column "Nom d\'exercice" holds a control character'),
        (
            bad_line({"Service de rattachement": "x" * 301}),
            "column 'Service de rattachement' is 301 characters long, more than 300",
        ),
        (bad_line({"Type de BAL": "BAL"}), "Type de BAL 'BAL' is not one of PER, ORG, APP, CAB"),
        (bad_line({"Adresse BAL": "pas-une-adresse"}), "Adresse BAL 'pas-une-adresse': the address has no '@'"),
        (
            bad_line({"Identification nationale PP": ""}),
            "Type Identifiant PP, Identifiant PP and Identification nationale PP must be given together",
        ),
        (
            bad_line({"Identifiant PP": "10000000008", "Identification nationale PP": "810000000008"}),
            "Identifiant PP: RPPS check digit is 8, expected 9 (Luhn)",
        ),
        (
            bad_line({"Identification nationale PP": "8" + rpps(1)}),
            "Identification nationale PP '810000000017' is not Type Identifiant PP + Identifiant PP ('810000000009')",
        ),
        (
            bad_line({"Type identifiant structure": "3", "Identification Structure": "312345678"}),
            "Identification Structure: structure identifier of type 3 (FINESS): "
            "FINESS must be 9 characters, got 8 characters",
        ),
    ]
    assert base[IDX["Identifiant PP"]] == rpps(0)
    assert format_row(base).encode().index(b"MARTIN") == 87  # so the byte after "MART" is byte 92
    lines = [format_row(r).encode() for r in valid]
    for k, (raw, _reason) in enumerate(bad):
        lines.insert(3 * k + 1, raw)  # spread among the valid rows: lines 3, 6, 9, ...
    path = tmp_path / "mixed.txt"
    path.write_bytes((HEADER + "\n").encode() + b"".join(lines) + b"\n")  # and a trailing blank line
    summary = await import_extraction(DirectoryRepository(db), path)
    assert counts(summary) == expect(read=50, imported=40, rejected=10)
    got = [(r["line"], r["reason"], r["address"]) for r in summary.rejections]
    assert [(line_no, reason) for line_no, reason, _ in got] == [
        (3 * k + 3, reason) for k, (_raw, reason) in enumerate(bad)
    ]
    # The address is reported when the fields could be read (not for a wrong field count or bad UTF-8).
    assert [a for _, _, a in got] == [
        "",
        "",
        *["bad@ch-x.mssante.fr"] * 3,
        "pas-une-adresse",
        *["bad@ch-x.mssante.fr"] * 4,
    ]
    assert await export(db) == valid


async def test_rejection_details_are_capped_counts_are_not(
    db: Database, rows: list[tuple[str, ...]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import directory.importer as importer

    monkeypatch.setattr(importer, "MAX_DETAILS", 3)
    path = tmp_path / "bad.txt"
    path.write_text(HEADER + "\n" + "nonsense\n" * 5 + format_row(rows[0]), encoding="utf-8")
    summary = await import_extraction(DirectoryRepository(db), path)
    assert counts(summary) == expect(read=6, imported=1, rejected=5)
    assert [r["line"] for r in summary.rejections] == [2, 3, 4]


async def test_not_an_extraction_raises_and_writes_nothing(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("email;name\nalice@x.fr;Alice\n", encoding="utf-8")
    with pytest.raises(HeaderError) as exc:
        await import_extraction(DirectoryRepository(db), path)
    assert str(exc.value) == (
        "the header line has 1 columns, expected 31 (is this an 'Extraction correspondance MSSanté' file?)"
    )
    assert await table_rows(db, "SELECT count(*) FROM mailboxes") == [(0,)]


# --------------------------------------------------------------------------- duplicates and conflicts


async def test_duplicate_address_later_row_kept(db: Database, rows: list[tuple[str, ...]], tmp_path: Path) -> None:
    org = next(r for r in rows[:50] if r[0] == "ORG")
    again = changed(org, {"Service de rattachement": "Service bis"})
    sample = [*rows[:50], again, *rows[50:60]]
    first_line, later_line = sample.index(org) + 2, 52
    summary = await import_extraction(DirectoryRepository(db), write_rows(tmp_path / "dup.txt", sample))
    assert counts(summary) == expect(read=61, imported=60, duplicates=1)
    assert summary.duplicate_addresses == [{"address": org[1], "lines": [first_line, later_line], "kept": later_line}]
    expected = [r for r in sample if r is not org]  # one row an address, in the order of the kept lines
    assert await export(db) == expected


@pytest.mark.parametrize("fast", [True, False])
async def test_duplicate_of_a_moved_unchanged_row_takes_the_kept_row_position(
    db: Database, rows: list[tuple[str, ...]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast: bool
) -> None:
    """An unchanged row that moved, then a changed duplicate in the same batch: the kept (later) row's position
    wins, as in an empty directory (the move used to be applied after the duplicate's upsert)."""
    if not fast:
        monkeypatch.setattr(store_directory, "_JSON_SQLITE", (9999,))
    repo = DirectoryRepository(db)
    await import_extraction(repo, write_rows(tmp_path / "v1.txt", rows[:10]))
    x = rows[0]
    again = changed(x, {"Service de rattachement": "Service bis"})
    v2 = [rows[1], x, rows[2], rows[3], again, *rows[4:10]]
    summary = await import_extraction(repo, write_rows(tmp_path / "v2.txt", v2))
    assert counts(summary) == expect(read=11, unchanged=10, duplicates=1)
    assert await export(db) == [r for r in v2 if r is not x]


async def test_duplicate_with_another_type_is_refused(
    db: Database, rows: list[tuple[str, ...]], tmp_path: Path
) -> None:
    org = next(r for r in rows[:50] if r[0] == "ORG")
    as_per = changed(rows[0], {"Adresse BAL": org[1]})
    sample = [*rows[:50], as_per]
    summary = await import_extraction(DirectoryRepository(db), write_rows(tmp_path / "dup.txt", sample))
    first_line = sample.index(org) + 2
    assert counts(summary) == expect(read=51, imported=50, rejected=1)
    assert summary.rejections == [
        {
            "line": 52,
            "address": org[1],
            "reason": f"Type de BAL PER differs from line {first_line}'s type ORG; a mailbox's type cannot change",
        }
    ]
    assert await export(db) == rows[:50]  # the ORG mailbox as its first row described it


async def test_conflicting_descriptions_reported_later_kept(
    db: Database, rows: list[tuple[str, ...]], tmp_path: Path
) -> None:
    a = rows[0]
    assert a[0] == "PER"
    assert a[IDX["Identification nationale PP"]] == "810000000009"
    b = changed(a, {"Adresse BAL": "c.martin@autre.mssante.fr", "Nom d'exercice": "MARTIN-DURAND"})
    repo = DirectoryRepository(db)
    summary = await import_extraction(repo, write_rows(tmp_path / "c1.txt", [a, b]))
    assert counts(summary) == expect(read=2, imported=2, conflicts=1)
    assert summary.conflicting == [
        {
            "line": 3,
            "key": "810000000009",
            "reason": "professional 810000000009 is described differently on line 2; line 3's description is kept",
        }
    ]
    shown = await repo.show(a[1])
    assert shown is not None
    assert shown["professional"]["last_name"] == "MARTIN-DURAND"
    assert [r[IDX["Nom d'exercice"]] for r in await export(db)] == ["MARTIN-DURAND", "MARTIN-DURAND"]


async def test_last_description_is_kept_even_when_it_is_the_first_one(
    db: Database, rows: list[tuple[str, ...]], tmp_path: Path
) -> None:
    """A, B, A: B is reported, and the third line's description (A's) is the one stored."""
    a = rows[0]
    b = changed(a, {"Adresse BAL": "c.martin@autre.mssante.fr", "Nom d'exercice": "MARTIN-DURAND"})
    c = changed(a, {"Adresse BAL": "c.martin2@autre.mssante.fr"})
    repo = DirectoryRepository(db)
    summary = await import_extraction(repo, write_rows(tmp_path / "c.txt", [a, b, c]), batch_rows=2)
    assert counts(summary) == expect(read=3, imported=3, conflicts=1)
    assert [c["line"] for c in summary.conflicting] == [3]
    shown = await repo.show(a[1])
    assert shown is not None
    assert shown["professional"]["last_name"] == "MARTIN"
    assert [r[IDX["Nom d'exercice"]] for r in await export(db)] == ["MARTIN"] * 3


@pytest.mark.parametrize("unchanged_first", [False, True])
async def test_incremental_import_keeps_descriptions_as_a_fresh_import_does(
    rows: list[tuple[str, ...]], tmp_path: Path, unchanged_first: bool
) -> None:
    """A professional described by an unchanged row and by a changed one: the later row's description is kept
    and the contradiction reported, exactly as when the same file is imported into an empty directory (the
    unchanged row used to be skipped without its description being looked at)."""
    a = rows[0]
    b = changed(a, {"Adresse BAL": "c.martin@autre.mssante.fr"})
    a2 = changed(a, {"Nom d'exercice": "MARTIN-DURAND"})
    v2 = [b, a2] if unchanged_first else [a2, b]
    path = write_rows(tmp_path / "v2.txt", v2)
    results = []
    for name, before in (("fresh", []), ("incremental", [a, b])):
        async with Database(f"sqlite+aiosqlite:///{tmp_path / (name + '.db')}") as database:
            await database.migrate()
            repo = DirectoryRepository(database)
            if before:
                await import_extraction(repo, write_rows(tmp_path / "v1.txt", before))
            summary = await import_extraction(repo, path)
            results.append(([c["line"] for c in summary.conflicting], await export(database)))
    fresh, incremental = results
    later = v2[1][IDX["Nom d'exercice"]]
    assert fresh == ([3], [changed(r, {"Nom d'exercice": later}) for r in v2])
    assert incremental == fresh


async def test_conflicting_structure_reported(db: Database, rows: list[tuple[str, ...]], tmp_path: Path) -> None:
    org = next(r for r in rows if r[0] == "ORG")
    key = f"{org[5]}:{org[6]}"
    other = changed(org, {"Adresse BAL": "accueil@autre.mssante.fr", "Raison Sociale structure BAL": "AUTRE NOM"})
    summary = await import_extraction(DirectoryRepository(db), write_rows(tmp_path / "s.txt", [org, other]))
    assert counts(summary) == expect(read=2, imported=2, conflicts=1)
    assert summary.conflicting == [
        {
            "line": 3,
            "key": key,
            "reason": f"structure {key} is described differently on line 2; line 3's description is kept",
        }
    ]
    assert {r[IDX["Raison Sociale structure BAL"]] for r in await export(db)} == {"AUTRE NOM"}


# --------------------------------------------------------------------------- type change, prune


async def test_type_change_is_refused_and_stored_mailbox_untouched(
    db: Database, rows: list[tuple[str, ...]], tmp_path: Path
) -> None:
    repo = DirectoryRepository(db)
    await import_extraction(repo, write_rows(tmp_path / "v1.txt", rows))
    k = 10
    assert rows[k][0] == "PER"
    before = await repo.show(rows[k][1])
    v2 = list(rows)
    v2[k] = changed(rows[k], {"Type de BAL": "ORG", "Service de rattachement": "Accueil"})
    summary = await import_extraction(repo, write_rows(tmp_path / "v2.txt", v2))
    assert counts(summary) == expect(read=N, unchanged=N - 1, rejected=1)
    assert summary.rejections == [
        {
            "line": k + 2,
            "address": rows[k][1],
            "reason": "Type de BAL ORG differs from the existing mailbox's type PER; a mailbox's type cannot change",
        }
    ]
    assert await repo.show(rows[k][1]) == before
    assert await export(db) == rows


async def test_prune_deletes_absent_national_rows_never_local_ones(
    db: Database, rows: list[tuple[str, ...]], tmp_path: Path
) -> None:
    repo = DirectoryRepository(db)
    await import_extraction(repo, write_rows(tmp_path / "v1.txt", rows))
    mailboxes = MailboxRepository(db, KeyEncryptionKey(bytes(32)))
    await mailboxes.create("local.box@ch-test.mssante.fr", "ORG", service="Accueil")
    local_row = ("ORG", "local.box@ch-test.mssante.fr", *[""] * 5, "Accueil", *[""] * 23)
    assert (await export(db))[-1] == local_row

    # Without --prune an absent row stays.
    short = rows[:2000]
    summary = await import_extraction(repo, write_rows(tmp_path / "short.txt", short))
    assert counts(summary) == expect(read=2000, unchanged=2000)
    assert len(await export(db)) == N + 1

    # With it: kept rows in place, moved rows and changed rows are all "present"; the rest goes.
    kept = [*short[:1000], changed(short[1000], {"Dématérialisation": "N"}), *short[1001:][::-1]]
    summary = await import_extraction(repo, write_rows(tmp_path / "kept.txt", kept), prune=True)
    assert counts(summary) == expect(read=2000, updated=1, unchanged=1999, pruned=N - 2000)
    assert await export(db) == [*kept, local_row]
    assert await export(db, origin="local") == [local_row]
    assert await table_rows(db, "SELECT origin, count(*) FROM mailboxes GROUP BY origin ORDER BY origin") == [
        ("local", 1),
        ("national", 2000),
    ]
    assert await repo.show(rows[2500][1]) is None
    shown = await repo.show("local.box@ch-test.mssante.fr")
    assert shown is not None
    assert shown["origin"] == "local"
    assert shown["account"] is not None


async def test_prune_limit_keeps_everything_when_too_much_would_go(
    db: Database, rows: list[tuple[str, ...]], tmp_path: Path
) -> None:
    """A cut download (here, the first third of the file) must not empty the directory: past `prune_limit`
    nothing is pruned and the summary says how much would have gone; within it, pruning happens."""
    repo = DirectoryRepository(db)
    await import_extraction(repo, write_rows(tmp_path / "v1.txt", rows))
    cut = write_rows(tmp_path / "cut.txt", rows[:1000])
    summary = await import_extraction(repo, cut, prune=True, prune_limit=0.1)
    assert counts(summary) == expect(read=1000, unchanged=1000)
    assert summary.prune_refused == N - 1000
    assert len(await export(db)) == N
    # 300 of 3,000 absent: exactly the limit, pruned
    summary = await import_extraction(repo, write_rows(tmp_path / "most.txt", rows[300:]), prune=True, prune_limit=0.1)
    assert (summary.pruned, summary.prune_refused) == (300, 0)
    assert await export(db) == rows[300:]


async def test_prune_keeps_mailboxes_whose_rows_were_refused(
    db: Database, rows: list[tuple[str, ...]], tmp_path: Path
) -> None:
    """A refused row still says its mailbox exists: --prune must not delete the stored mailbox it names."""
    repo = DirectoryRepository(db)
    await import_extraction(repo, write_rows(tmp_path / "v1.txt", rows[:50]))
    assert [rows[k][0] for k in (10, 11, 12)] == ["PER", "PER", "ORG"]
    v2 = list(rows[:49])  # rows[49] is absent: pruned
    v2[10] = changed(rows[10], {"Type de BAL": "ORG"})  # a type change, refused
    v2[11] = changed(rows[11], {"Identification nationale PP": ""})  # incomplete identifiers, refused
    v2[12] = rows[12][:30]  # a field missing: refused before its fields are read
    summary = await import_extraction(repo, write_rows(tmp_path / "v2.txt", v2), prune=True)
    assert counts(summary) == expect(read=49, unchanged=46, rejected=3, pruned=1)
    assert [r["line"] for r in summary.rejections] == [12, 13, 14]
    for k in (10, 11, 12):
        shown = await repo.show(rows[k][1])
        assert shown is not None, rows[k][1]
        assert shown["type"] == rows[k][0]
    assert await repo.show(rows[49][1]) is None
    assert await export(db) == rows[:49]  # the refused rows' mailboxes as the last valid rows described them


# --------------------------------------------------------------------------- search and show

PP = rpps(4242)
HELENE = (
    "PER",
    "helene.durand@ch-lyon.mssante.fr",
    "8",
    PP,
    "8" + PP,
    "3",
    "3690000013",
    "",
    "MME",
    "DURAND",
    "Hélène",
    "C",
    "Civil",
    "10",
    "Médecin",
    "SM04",
    "Cardiologie et maladies vasculaires",
    "O",
    "HOSPICES CIVILS DE LYON",
    "HCL",
    "",
    "",
    "5",
    "",
    "PL",
    "D'ARSONVAL",
    "",
    "69003 LYON",
    "69003",
    "69",
    "FRANCE",
)
PAUL = changed(
    HELENE,
    {
        "Adresse BAL": "paul.martin@ch-paris.mssante.fr",
        "Identifiant PP": rpps(77),
        "Identification nationale PP": "8" + rpps(77),
        "Civilité d'exercice": "M",
        "Nom d'exercice": "MARTIN",
        "Prénom d'exercice": "Paul",
        "Code Profession": "60",
        "Libellé Profession": "Infirmier",
        "Code savoir-faire": "",
        "Libellé savoir-faire": "",
        "Identification Structure": "3750000017",
        "Raison Sociale structure BAL": "HOPITAL DE PARIS",
        "Enseigne commerciale structure BAL": "",
        "Ligne Acheminement structure BAL": "75013 PARIS",
        "Code postal structure BAL": "75013",
        "Département structure BAL": "75",
    },
)
SECRETARIAT = changed(
    PAUL,
    {
        "Type de BAL": "ORG",
        "Adresse BAL": "secretariat_cardio@ch-paris.mssante.fr",
        "Type Identifiant PP": "",
        "Identifiant PP": "",
        "Identification nationale PP": "",
        "Service de rattachement": "Cardiologie 100%",
        "Civilité d'exercice": "",
        "Nom d'exercice": "",
        "Prénom d'exercice": "",
        "Catégorie profession": "",
        "Libellé de catégorie profession": "",
        "Code Profession": "",
        "Libellé Profession": "",
    },
)


@pytest.fixture
async def searchable(db: Database, tmp_path: Path) -> DirectoryRepository:
    repo = DirectoryRepository(db)
    summary = await import_extraction(repo, write_rows(tmp_path / "s.txt", [HELENE, PAUL, SECRETARIAT]))
    assert counts(summary) == expect(read=3, imported=3)
    return repo


async def _addresses(repo: DirectoryRepository, query: str) -> list[str]:
    return [r["address"] for r in await repo.search(query)]


async def test_search_by_name_accent_insensitive(searchable: DirectoryRepository) -> None:
    helene = ["helene.durand@ch-lyon.mssante.fr"]
    assert await _addresses(searchable, "helene") == helene
    assert await _addresses(searchable, "HÉLÈNE") == helene
    assert await _addresses(searchable, "Durand Hélène") == helene
    assert await _addresses(searchable, "durand paul") == []  # every term must match
    result = await searchable.search("durand")
    assert result == [
        {
            "address": "helene.durand@ch-lyon.mssante.fr",
            "type": "PER",
            "name": "MME Hélène DURAND",
            "id_nat_ps": "8" + PP,
            "profession": "Médecin",
            "skill": "Cardiologie et maladies vasculaires",
            "service": "",
            "structure": "HOSPICES CIVILS DE LYON",
            "city": "69003 LYON",
            "active": True,
            "list_rouge": False,
            "origin": "national",
        }
    ]


async def test_search_by_address_identifier_profession_city(searchable: DirectoryRepository) -> None:
    assert await _addresses(searchable, "paul.martin@") == ["paul.martin@ch-paris.mssante.fr"]
    assert await _addresses(searchable, "ch-paris") == [
        "paul.martin@ch-paris.mssante.fr",
        "secretariat_cardio@ch-paris.mssante.fr",
    ]
    assert await _addresses(searchable, "8" + PP) == ["helene.durand@ch-lyon.mssante.fr"]
    assert await _addresses(searchable, PP) == ["helene.durand@ch-lyon.mssante.fr"]  # the RPPS alone
    assert await _addresses(searchable, "infirmier") == ["paul.martin@ch-paris.mssante.fr"]
    assert await _addresses(searchable, "médecin") == ["helene.durand@ch-lyon.mssante.fr"]
    assert await _addresses(searchable, "lyon") == ["helene.durand@ch-lyon.mssante.fr"]
    assert await _addresses(searchable, "75013") == [
        "paul.martin@ch-paris.mssante.fr",
        "secretariat_cardio@ch-paris.mssante.fr",
    ]
    assert await _addresses(searchable, "hospices civils") == ["helene.durand@ch-lyon.mssante.fr"]
    assert await _addresses(searchable, "cardiologie") == [
        "helene.durand@ch-lyon.mssante.fr",  # skill label
        "secretariat_cardio@ch-paris.mssante.fr",  # service
    ]
    assert len(await searchable.search("mssante", limit=2)) == 2


async def test_search_wildcards_are_literal(searchable: DirectoryRepository) -> None:
    assert await _addresses(searchable, "100%") == ["secretariat_cardio@ch-paris.mssante.fr"]
    assert await _addresses(searchable, "secretariat_cardio") == ["secretariat_cardio@ch-paris.mssante.fr"]
    # As LIKE patterns these would match "paul.martin" and "helene.durand".
    assert await _addresses(searchable, "paul%martin") == []
    assert await _addresses(searchable, "ul_ma") == []
    assert await _addresses(searchable, "helene_durand") == []
    assert await _addresses(searchable, "%") == ["secretariat_cardio@ch-paris.mssante.fr"]  # its "100%"
    assert await _addresses(searchable, "%%") == []
    assert await _addresses(searchable, "\\") == []


async def test_show_returns_professional_and_structure(searchable: DirectoryRepository) -> None:
    shown = await searchable.show("Helene.Durand@CH-Lyon.mssante.fr")  # case-insensitive
    assert shown is not None
    assert shown["professional"] == {
        "key": "8" + PP,
        "id_type": "8",
        "id_pp": PP,
        "id_nat_ps": "8" + PP,
        "civility": "MME",
        "last_name": "DURAND",
        "first_name": "Hélène",
        "category_code": "C",
        "category_label": "Civil",
        "profession_code": "10",
        "profession_label": "Médecin",
        "skill_code": "SM04",
        "skill_label": "Cardiologie et maladies vasculaires",
        "active": True,
    }
    assert shown["structure"] == {
        "key": "3:3690000013",
        "id_type": "3",
        "identification": "3690000013",
        "name": "HOSPICES CIVILS DE LYON",
        "trade_name": "HCL",
        "location_complement": "",
        "distribution_complement": "",
        "street_number": "5",
        "street_number_complement": "",
        "street_type": "PL",
        "street_name": "D'ARSONVAL",
        "locality": "",
        "routing_line": "69003 LYON",
        "postal_code": "69003",
        "department": "69",
        "country": "FRANCE",
    }
    assert (shown["delegates"], shown["delegated_to_act_for"], shown["certificates"], shown["account"]) == (
        [],
        [],
        [],
        None,
    )
    org = await searchable.show("secretariat_cardio@ch-paris.mssante.fr")
    assert org is not None
    assert (org["type"], org["service"], org["professional"]) == ("ORG", "Cardiologie 100%", None)
    assert org["structure"]["name"] == "HOPITAL DE PARIS"
    assert await searchable.show("nobody@ch-paris.mssante.fr") is None


async def test_cancelled_import_leaves_whole_batches_and_a_rerun_finishes(
    db: Database, rows: list[tuple[str, ...]], tmp_path: Path
) -> None:
    path = write_rows(tmp_path / "extraction.txt", rows)
    repo = DirectoryRepository(db)
    loop = asyncio.get_running_loop()
    lines_seen = 0

    def progress(_size: int) -> None:  # runs in the parsing thread
        nonlocal lines_seen
        lines_seen += 1
        if lines_seen == 1000:
            loop.call_soon_threadsafe(task.cancel)

    task = asyncio.ensure_future(import_extraction(repo, path, progress=progress, batch_rows=200))
    with pytest.raises(asyncio.CancelledError):
        await task
    written = (await table_rows(db, "SELECT count(*) FROM mailboxes"))[0][0]
    assert written % 200 == 0  # whole batches only, each its own transaction
    assert written < N
    again = await import_extraction(repo, path)
    assert counts(again) == expect(read=N, imported=N - written, unchanged=written)
    assert await export(db) == rows
