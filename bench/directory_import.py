"""Benchmark of the national directory import: the national file's size, in the exact format, into SQLite.

    python bench/directory_import.py [--rows 536000] [--keep DIR] [--seed 1] [--json FILE]

Generates `--rows` synthetic rows (default 536,000, the national extraction's size) plus duplicate
addresses in the national file's proportion (169 for 536,000), then measures, in this order and in
this one process:

  (a) reference: reading and splitting the same file in plain Python (`for line in f: line.split("|")`)
  (b) parse + validate only: `parse_row` on every line
  (c) the full import into a fresh SQLite database (WAL, the project's `Database`)
  (d) a re-import of the unchanged file
  (e) an export of the directory in the national format

and prints seconds, rows per second, the time of each phase as a multiple of the reference, and the
peak resident set size of the process so far (ru_maxrss, which only grows). Targets for the national
size: the import in at most 30 s and a peak RSS of at most 500 MB on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Benchmark this checkout, whatever the environment's installed copy points at.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from directory import national
from directory.importer import ImportSummary, import_extraction
from directory.synthetic import generate_rows, write_extraction
from gateway.store.db import Database
from gateway.store.directory import DirectoryRepository

NATIONAL_ROWS = 536_000
NATIONAL_DUPLICATES = 169
TARGET_SECONDS = 30.0
TARGET_RSS_MB = 500.0


@dataclass
class Phase:
    label: str
    seconds: float
    rows: int
    peak_rss_mb: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (ru_maxrss is in KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6


def duplicates_for(rows: int) -> int:
    return round(NATIONAL_DUPLICATES * rows / NATIONAL_ROWS)


def reference(path: Path) -> int:
    n = 0
    with path.open(encoding="utf-8") as f:
        for line in f:
            line.split("|")
            n += 1
    return n - 1  # the header


def parse_only(path: Path) -> tuple[int, int]:
    rows = rejected = 0
    stream, _size = national.open_extraction(path)
    with stream:
        for line_no, raw in national.iter_lines(stream):
            rows += 1
            if isinstance(national.parse_row(line_no, raw), national.Rejection):
                rejected += 1
    return rows, rejected


async def export(repo: DirectoryRepository, path: Path) -> int:
    n = 0
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write(national.HEADER + "\n")
        async for fields in repo.export_rows():
            fh.write(national.format_row(fields))
            n += 1
    return n


def counts(summary: ImportSummary) -> dict[str, int]:
    keys = ("read", "imported", "updated", "unchanged", "rejected", "duplicates", "conflicts", "pruned")
    return {k: getattr(summary, k) for k in keys}


async def database_phases(
    source: Path, db_path: Path, export_path: Path, timed: Callable[[str, float, int], None]
) -> dict[str, Any]:
    """(c), (d) and (e), on a fresh database."""
    async with Database(f"sqlite+aiosqlite:///{db_path}") as db:
        await db.migrate()
        repo = DirectoryRepository(db)
        started = time.perf_counter()
        first = await import_extraction(repo, source)
        timed("(c) import (fresh database)", started, first.read)
        started = time.perf_counter()
        again = await import_extraction(repo, source)
        timed("(d) re-import (unchanged file)", started, again.read)
        started = time.perf_counter()
        exported = await export(repo, export_path)
        timed("(e) export", started, exported)
    return {"import": counts(first), "reimport": counts(again), "exported": exported}


def run(rows: int, seed: int, workdir: Path) -> dict[str, Any]:
    duplicates = duplicates_for(rows)
    source = workdir / "extraction.txt"
    started = time.perf_counter()
    written = write_extraction(source, generate_rows(rows, seed=seed, duplicates=duplicates))
    generated_in = time.perf_counter() - started
    phases: list[Phase] = []

    def timed(label: str, started: float, n: int) -> None:
        phases.append(Phase(label, time.perf_counter() - started, n, peak_rss_mb()))

    started = time.perf_counter()
    n = reference(source)
    timed("(a) read + split (reference)", started, n)

    started = time.perf_counter()
    n, rejected = parse_only(source)
    timed("(b) parse + validate", started, n)
    if rejected:
        raise SystemExit(f"{rejected} generated rows were refused: the generator and the parser disagree")

    db_path = workdir / "directory.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    results = asyncio.run(database_phases(source, db_path, workdir / "export.txt", timed))

    ref = phases[0].seconds
    imported = phases[2]
    peak = peak_rss_mb()
    return {
        "rows": rows,
        "duplicates": duplicates,
        "lines": written,
        "file_mb": round(source.stat().st_size / 1e6, 1),
        "generated_seconds": round(generated_in, 2),
        "seed": seed,
        "machine": {
            "cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
        },
        "phases": [
            {
                "label": p.label,
                "seconds": round(p.seconds, 3),
                "rows_per_second": round(p.rows_per_second),
                "ratio": round(p.seconds / ref, 2) if ref else None,
                "peak_rss_mb": round(p.peak_rss_mb, 1),
            }
            for p in phases
        ],
        **results,
        "targets": {
            "import_seconds": round(imported.seconds, 3),
            "import_ok": imported.seconds <= TARGET_SECONDS,
            "peak_rss_mb": round(peak, 1),
            "rss_ok": peak <= TARGET_RSS_MB,
        },
    }


def report(result: dict[str, Any]) -> str:
    m = result["machine"]
    out = [
        f"directory import benchmark: {result['lines']:,} rows ({result['rows']:,} addresses + "
        f"{result['duplicates']:,} duplicates), {result['file_mb']} MB, seed {result['seed']}, "
        f"generated in {result['generated_seconds']:.1f} s",
        f"machine: {m['usable_cpus']} usable CPUs ({m['cpus']} in all), {m['platform']}, Python {m['python']}, "
        f"SQLite {m['sqlite']}",
        f"{'phase':<32}{'seconds':>9}{'rows/s':>11}{'x reference':>13}{'peak RSS':>12}",
    ]
    for p in result["phases"]:
        out.append(
            f"{p['label']:<32}{p['seconds']:>9.2f}{p['rows_per_second']:>11,}{p['ratio']:>13.2f}"
            f"{p['peak_rss_mb']:>9.0f} MB"
        )
    for name in ("import", "reimport"):
        c = result[name]
        out.append(
            f"{name}: read {c['read']:,}, imported {c['imported']:,}, updated {c['updated']:,}, "
            f"unchanged {c['unchanged']:,}, rejected {c['rejected']:,}, duplicates {c['duplicates']:,}, "
            f"conflicts {c['conflicts']:,}"
        )
    out.append(f"export: {result['exported']:,} rows")
    t = result["targets"]
    out.append(
        f"targets: import <= {TARGET_SECONDS:.0f} s: {'ok' if t['import_ok'] else 'MISSED'} "
        f"({t['import_seconds']:.1f} s); peak RSS <= {TARGET_RSS_MB:.0f} MB: {'ok' if t['rss_ok'] else 'MISSED'} "
        f"({t['peak_rss_mb']:.0f} MB)"
        + ("" if result["rows"] == NATIONAL_ROWS else f" [targets are for {NATIONAL_ROWS:,} rows]")
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=NATIONAL_ROWS, help="addresses to generate (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="synthetic data seed (default: %(default)s)")
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="work in DIR and keep the files (default: a temporary one)"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON to FILE")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be positive")
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = run(args.rows, args.seed, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="mssgw-bench-") as tmp:
            result = run(args.rows, args.seed, Path(tmp))
    print(report(result), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
