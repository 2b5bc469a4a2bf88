"""The benchmark runner (bench/run_all.py): the markdown it writes, and a quick run of every benchmark.

The writer is checked on a recorded quick run (tests/bench/data/run_all_quick.json, what `run.json` held
after `bench/run_all.py --quick`): every section, the markers, the date and machine, numeric cells in
every table, the targets' verdicts, missing references and failed benchmarks said as such, and the
splice: the generated block replaced in place (never appended), the text around it kept byte for byte.
`test_quick_run` runs the runner itself with --quick (about 2 minutes; every script for real, with the
Postfix and Dovecot references where they are installed and the tests run as root).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
FIXTURE = Path(__file__).resolve().parent / "data" / "run_all_quick.json"
BEGIN, END = "<!-- bench:run_all begin -->", "<!-- bench:run_all end -->"
SECTIONS = [
    "### Targets",
    "### Directory import (`bench/directory_import.py`)",
    "### S/MIME operations (`bench/smime.py`)",
    "### SMTP relay with S/MIME, and submit-to-mailbox latency (`bench/smtp_relay.py`)",
    "### Submit-to-mailbox latency at half the peak rate (`bench/smtp_relay.py --latency`)",
    "### IMAP and idle IDLE sessions (`bench/imap.py`)",
]
TARGETS = [
    "directory import of",
    "directory import peak RSS ≤ 500 MB",
    "S/MIME vs openssl rsa2048 private ops",
    "SMTP relay delivered rate ≥ 1.0× Postfix",
    "submit-to-mailbox latency at half the peak rate",
    "IMAP login/s ≥ 1.0× Dovecot",
    "IMAP APPEND/s ≥ 1.0× Dovecot",
    "IMAP FETCH/s ≥ 1.0× Dovecot",
    "memory per idle IDLE connection (10,000 held)",
]
# Hand-written text after the block: odd spacing, no final newline, a marker-like comment of another name.
HAND = (
    "# Benchmarks\n\nFigures measured by hand.  Two spaces.\t A tab.\n\n## Directory import\n\n"
    "| a | b |\n|---|---:|\n| x | 1.0 |\n<!-- bench:other -->\nlast line without newline"
)
NUMBER = re.compile(r"\d[\d,]*(\.\d+)?")


@pytest.fixture(scope="module")
def run_all() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run_all", BENCH / "run_all.py")
    assert spec is not None
    assert spec.loader is not None
    path, modules = list(sys.path), set(sys.modules)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    try:
        spec.loader.exec_module(module)  # puts bench/ on sys.path for its neighbour, common
    finally:
        sys.path[:] = path  # no bench/common.py for the rest of the suite to trip on
        for name in set(sys.modules) - modules - {spec.name}:
            if str(getattr(sys.modules[name], "__file__", "")).startswith(str(BENCH)):
                del sys.modules[name]  # bench/'s own (common, imap): not importable by that name elsewhere
    return module


@pytest.fixture
def recorded() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def tables(text: str) -> list[list[list[str]]]:
    """Every markdown table of the text: its rows (header first, the alignment row left out) as cells."""
    found: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r"-+:?", c) for c in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def check_generated(text: str, *, quick: bool) -> str:
    """The generated block of a document, checked: markers, header lines, sections, tables; returned."""
    assert text.count(BEGIN) == 1
    assert text.count(END) == 1
    block = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert re.search(r"^- Date: \d{4}-\d\d-\d\d \d\d:\d\d UTC; the whole run took (\d+ min )?\d+ s\.$", block, re.M)
    machine = re.search(r"^- Machine: (.+)$", block, re.M)
    assert machine is not None
    for part in ("CPUs", "GB RAM", "Linux", "Python 3.", "SQLite 3.", "PostgreSQL", "OpenSSL", "Load average"):
        assert part in machine.group(1), part
    assert re.search(r"^- Command: `.*bench/run_all\.py.*`\.$", block, re.M)
    assert ("(quick sizes" in block) is quick
    positions = [block.find(s) for s in SECTIONS]
    assert all(p >= 0 for p in positions), [s for s, p in zip(SECTIONS, positions, strict=True) if p < 0]
    assert positions == sorted(positions)
    found = tables(block)
    assert len(found) == 7  # targets, directory, S/MIME, relay, latency, IMAP, idle sessions
    for t in found:
        width = len(t[0])
        for row in t[1:]:
            assert len(row) == width, row
            assert all(cell for cell in row), row  # no empty cell: a missing figure is a dash and says why
            assert any(NUMBER.search(cell) for cell in row[1:]), row  # each row carries figures
    targets = found[0]
    assert targets[0] == ["target", "reference", "mssgw", "ratio", "status"]
    assert len(targets) - 1 == len(TARGETS)
    for row, start in zip(targets[1:], TARGETS, strict=True):
        assert row[0].startswith(start), row
    # The numeric columns of the per-benchmark tables are numbers (with separators), a ratio or a dash.
    figure = re.compile(r"(\d[\d,]*(\.\d+)?×?|–|\d[\d,]*/\d[\d,]*|[\d.,]+ / [\d.,]+)")
    for t in found[1:]:
        for row in t[1:]:
            for cell in row[1:]:
                if not cell.startswith(("pool ", "not ", "**")):
                    assert figure.fullmatch(cell), (row, cell)
    return block


def test_render_has_every_section_and_figure(run_all: ModuleType, recorded: dict[str, Any]) -> None:
    text = run_all.splice(HAND, run_all.render(recorded))
    block = check_generated(text, quick=True)
    assert "- Date: 2026-11-22 23:19 UTC; the whole run took 1 min 28 s." in block
    assert "not judged (quick run)" in block
    assert "**met**" not in block
    assert "**not met**" not in block
    latency = tables(block)[4]
    assert latency[0] == ["interval", "p50 ms", "p99 ms", "max ms", "mean ms"]
    assert [row[0].split(" →")[0] for row in latency[1:]] == ["end of DATA"] * 3 + ["schedule"]
    assert "Poisson arrivals" in block


def test_block_goes_after_the_title_and_the_rest_is_kept(run_all: ModuleType, recorded: dict[str, Any]) -> None:
    block = run_all.render(recorded)
    assert block.startswith(BEGIN + "\n")
    assert block.endswith(END + "\n")
    text = run_all.splice(HAND, block)
    assert text == "# Benchmarks\n\n" + block + HAND[len("# Benchmarks\n") :]
    # No title: the block goes first. No document: a title and the block.
    assert run_all.splice("plain text\n", block) == block + "\nplain text\n"
    assert run_all.splice(None, block) == "# Benchmarks\n\n" + block


def test_rendering_twice_replaces_the_block(run_all: ModuleType, recorded: dict[str, Any]) -> None:
    first = run_all.splice(HAND, run_all.render(recorded))
    after = first[first.index(END) + len(END) :]
    later = copy.deepcopy(recorded)
    later["started"] = "2026-12-01T08:05:00+00:00"
    second = run_all.splice(first, run_all.render(later))
    assert second.count(BEGIN) == second.count(END) == 1
    assert "- Date: 2026-12-01 08:05 UTC" in second
    assert "2026-11-22 23:19" not in second
    assert second[second.index(END) + len(END) :] == after  # byte for byte
    assert second.startswith("# Benchmarks\n\n" + BEGIN)
    assert run_all.splice(second, run_all.render(later)) == second  # same run, same document


def test_text_before_and_after_an_existing_block_is_kept(run_all: ModuleType, recorded: dict[str, Any]) -> None:
    before, after = "# T\r\n\r\nintro  \n\n", "\n\n\ntail ✓\n<!-- bench:run_all end --x>"
    old = before + BEGIN + "\nold figures\n" + END + after
    new = run_all.splice(old, run_all.render(recorded))
    assert new.startswith(before + BEGIN)
    assert new.endswith(END + after)
    assert "old figures" not in new
    with pytest.raises(ValueError, match="without"):
        run_all.splice("# T\n" + BEGIN + "\nno end\n", run_all.render(recorded))


def test_full_run_verdicts(run_all: ModuleType, recorded: dict[str, Any]) -> None:
    run = copy.deepcopy(recorded)
    run["quick"] = False
    results = {e["name"]: e["result"] for e in run["benchmarks"]}
    directory = results["directory"]
    directory["rows"] = 536_000
    directory["targets"].update(import_seconds=19.8, import_ok=True, peak_rss_mb=612.0, rss_ok=False)
    results["smtp_relay"]["ratio"] = 0.02
    imap = results["imap"]
    for p in imap["phases"]:
        if p["server"] == "mssgw":
            p["ratio"] = {"login": 1.31, "APPEND": 0.44, "FETCH": 0.09}[p["operation"]]
    mssgw_idle = imap["idle_sessions"][-1]
    mssgw_idle.update(attempted=10_000, established=7_000, answered_done=7_000, gave_up=True)
    run["benchmarks"][0].update(seconds=60.0, load_after=[3.5, 2.0, 1.0], cpu_seconds=66.0)
    block = check_generated(run_all.render(run), quick=False)
    assert (
        "`bench/directory_import.py --rows 3000`: 1 min 00 s, load average 2.78 before it, 3.50 after; its "
        "processes used 66.0 CPU s (1.10 CPUs on average;"
    ) in block
    rows = {row[0]: row for row in tables(block)[0][1:]}
    assert rows["directory import of 536,000 rows ≤ 30 s"][4] == "**met**"
    assert rows["directory import peak RSS ≤ 500 MB (536,000 rows)"][4] == "**not met**"
    assert rows["SMTP relay delivered rate ≥ 1.0× Postfix"][3:] == ["0.02×", "**not met**"]
    assert rows["IMAP login/s ≥ 1.0× Dovecot"][4] == "**met**"
    assert rows["IMAP FETCH/s ≥ 1.0× Dovecot"][4] == "**not met**"
    idle = rows["memory per idle IDLE connection (10,000 held)"]
    assert idle[4] == "**not met**"
    assert "7,000 held" in idle[2]
    assert "7,000 of 10,000 sessions opened before the 60 s ramp budget ran out" in block
    assert "Dovecot was asked for 10 sessions, not 10,000" in block


def test_missing_references_and_failures_are_said(run_all: ModuleType, recorded: dict[str, Any]) -> None:
    run = copy.deepcopy(recorded)
    run["quick"] = False
    results = {e["name"]: e for e in run["benchmarks"]}
    relay = results["smtp_relay"]["result"]
    relay["postfix"] = {"ran": False, "reason": "starting a private Postfix instance needs root"}
    relay["phases"] = relay["phases"][1:]
    relay["phases"][0]["ratio"] = relay["ratio"] = None
    imap = results["imap"]["result"]
    imap["dovecot"] = {"ran": False, "reason": "dovecot, doveadm not installed", "master_pid": None}
    imap["phases"] = [dict(p, ratio=None) for p in imap["phases"] if p["server"] == "mssgw"]
    imap["idle_sessions"] = imap["idle_sessions"][-1:]
    results["smime"].update(result=None, exit_status=None, error="stopped after the runner's 900 s limit")
    block = run_all.render(run)
    assert "Postfix reference: not run (starting a private Postfix instance needs root)." in block
    assert "Dovecot reference: not run (dovecot, doveadm not installed)." in block
    assert "**Did not complete**: stopped after the runner's 900 s limit." in block
    rows = {row[0]: row for row in tables(block)[0][1:]}
    assert rows["SMTP relay delivered rate ≥ 1.0× Postfix"][1] == "not run"
    assert rows["SMTP relay delivered rate ≥ 1.0× Postfix"][4] == "not assessed (no Postfix reference)"
    assert rows["IMAP APPEND/s ≥ 1.0× Dovecot"][4] == "not assessed (no Dovecot reference)"
    assert not any(r.startswith("S/MIME") for r in rows)


def test_relay_says_how_its_servers_ran(run_all: ModuleType, recorded: dict[str, Any]) -> None:
    # Results from before --processes (the recorded run): both operators in `mssgw demo run`.
    block = run_all.render(recorded)
    assert "delivery into the mailbox, both operators in one process (`mssgw demo run`), on SQLite." in block
    assert "ms per message (both operators, one process); left in queues" in block
    run = copy.deepcopy(recorded)
    relay = next(e["result"] for e in run["benchmarks"] if e["name"] == "smtp_relay")
    relay["processes"] = relay["mssgw"]["processes"] = "per-operator"
    relay["mssgw"]["server_processes"] = 2
    block = check_generated(run_all.render(run), quick=True)
    assert (
        "delivery into the mailbox, each operator in its own process (`mssgw serve`, as deployed), on SQLite." in block
    )
    assert "ms per message (both operators, summed over their 2 processes); left in queues" in block
    assert "one process" not in block.split("### SMTP relay")[1].split("### IMAP")[0]


def test_rejects_unknown_benchmarks() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run_all.py"), "--only", "smtp,imap"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "--only: unknown smtp" in proc.stderr


def test_quick_run(tmp_path: Path) -> None:
    out, results = tmp_path / "benchmarks.md", tmp_path / "results"
    out.write_text(HAND, encoding="utf-8")
    script = str(BENCH / "run_all.py")
    proc = subprocess.run(
        [sys.executable, script, "--quick", "--out", str(out), "--results", str(results)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = out.read_text(encoding="utf-8")
    block = check_generated(text, quick=True)
    assert text == "# Benchmarks\n\n" + block + "\n" + HAND[len("# Benchmarks\n") :]
    run = json.loads((results / "run.json").read_text(encoding="utf-8"))
    assert [e["name"] for e in run["benchmarks"]] == ["directory", "smime", "smtp_relay", "imap"]
    for entry in run["benchmarks"]:
        assert entry["exit_status"] == 0, entry
        assert (results / f"{entry['name']}.json").exists()
    relay = next(e["result"] for e in run["benchmarks"] if e["name"] == "smtp_relay")
    assert relay["processes"] == relay["mssgw"]["processes"] == "per-operator"  # each operator its own node
    latency = relay["latency"]
    assert latency["delivered"] == latency["observed"] == latency["messages"] == 12
    for interval in ("mailbox", "store", "submit"):
        assert 0 < latency[interval]["p50_ms"] <= latency[interval]["p99_ms"] <= latency[interval]["max_ms"]
    # Each message is in the store before its recipient's IDLE session is told: so is every order statistic.
    assert latency["store"]["p50_ms"] <= latency["mailbox"]["p50_ms"]
    assert latency["store"]["max_ms"] <= latency["mailbox"]["max_ms"]

    # Written again from the same results: the block is replaced, not appended; the rest is kept.
    again = subprocess.run(
        [sys.executable, script, "--render", str(results), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert out.read_text(encoding="utf-8") == text
