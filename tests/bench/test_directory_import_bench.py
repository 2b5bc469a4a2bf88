"""The directory import benchmark (bench/directory_import.py), run as a script.

The default run checks the script at a small size (its output lines and counts); the `slow` test runs it at
the national size and holds the import to its targets: at most 30 s and 500 MB peak RSS on 2 cores.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "directory_import.py"
PHASES = [
    "(a) read + split (reference)",
    "(b) parse + validate",
    "(c) import (fresh database)",
    "(d) re-import (unchanged file)",
    "(e) export",
]


def run_bench(tmp_path: Path, *args: str, timeout: float) -> tuple[str, dict[str, Any]]:
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--keep", str(tmp_path / "work"), "--json", str(out), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, json.loads(out.read_text(encoding="utf-8"))


def test_bench_small_run_output(tmp_path: Path) -> None:
    stdout, result = run_bench(tmp_path, "--rows", "2000", timeout=120)
    lines = stdout.splitlines()
    assert lines[0].startswith("directory import benchmark: 2,001 rows (2,000 addresses + 1 duplicates), ")
    assert re.fullmatch(
        r"machine: \d+ usable CPUs \(\d+ in all\), .+, Python 3\.\d+\.\d+, SQLite 3\.\d+\.\d+", lines[1]
    )
    assert lines[2].split() == ["phase", "seconds", "rows/s", "x", "reference", "peak", "RSS"]
    for line, label in zip(lines[3:8], PHASES, strict=True):
        assert line.startswith(label), line
        assert re.fullmatch(r" +\d+\.\d\d +[\d,]+ +\d+\.\d\d +\d+ MB", line[len(label) :]), line
    assert re.search(r" 1\.00 +\d+ MB$", lines[3])  # the reference is the unit of the ratios
    assert lines[8:11] == [
        "import: read 2,001, imported 2,000, updated 0, unchanged 0, rejected 0, duplicates 1, conflicts 0",
        # The first copy of the duplicated address differs from the stored (later) one: written again.
        "reimport: read 2,001, imported 0, updated 1, unchanged 1,999, rejected 0, duplicates 1, conflicts 0",
        "export: 2,000 rows",
    ]
    assert re.fullmatch(
        r"targets: import <= 30 s: ok \(\d+\.\d s\); peak RSS <= 500 MB: ok \(\d+ MB\) "
        r"\[targets are for 536,000 rows\]",
        lines[11],
    )
    assert len(lines) == 12
    assert [p["label"] for p in result["phases"]] == PHASES
    assert result["import"] == {
        "read": 2001,
        "imported": 2000,
        "updated": 0,
        "unchanged": 0,
        "rejected": 0,
        "duplicates": 1,
        "conflicts": 0,
        "pruned": 0,
    }
    assert (result["rows"], result["duplicates"], result["lines"], result["exported"]) == (2000, 1, 2001, 2000)
    assert [p["rows_per_second"] > 0 for p in result["phases"]] == [True] * 5
    assert result["phases"][0]["ratio"] == 1.0
    # The files are kept with --keep: the source, the database and the export (one line an address).
    work = tmp_path / "work"
    assert sum(1 for _ in (work / "extraction.txt").open(encoding="utf-8")) == 2002
    assert sum(1 for _ in (work / "export.txt").open(encoding="utf-8")) == 2001
    assert (work / "directory.db").stat().st_size > 0


def test_bench_rejects_bad_arguments(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--rows", "0"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 2
    assert "--rows must be positive" in proc.stderr


@pytest.mark.slow
def test_bench_national_size_meets_targets(tmp_path: Path) -> None:
    stdout, result = run_bench(tmp_path, timeout=900)
    print(stdout)
    assert result["rows"] == 536_000
    assert result["duplicates"] == 169
    assert result["import"] == {
        "read": 536_169,
        "imported": 536_000,
        "updated": 0,
        "unchanged": 0,
        "rejected": 0,
        "duplicates": 169,
        "conflicts": 0,
        "pruned": 0,
    }
    assert result["reimport"]["unchanged"] == 536_000 - 169
    assert result["reimport"]["updated"] == 169
    assert result["exported"] == 536_000
    phases = {p["label"]: p for p in result["phases"]}
    assert phases["(c) import (fresh database)"]["seconds"] <= 30.0, stdout
    assert result["targets"]["peak_rss_mb"] <= 500.0, stdout
    assert result["targets"] == {**result["targets"], "import_ok": True, "rss_ok": True}
