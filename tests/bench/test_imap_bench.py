"""The IMAP benchmark (bench/imap.py), run as a script.

The default run checks the script at a small size: its output lines, that every login, APPEND, FETCH
and idle IDLE session succeeded against mssgw (the audit log and the store say so too), and, where
Dovecot is installed and the tests run as root, that the private Dovecot reference did the same work
and was stopped. The `slow` test runs the full default size and prints the figures; it holds both
servers to answering every operation correctly, not to a speed, and mssgw's idle sessions to answering
DONE (how many it can hold within the ramp budget is a figure, not yet a target).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "imap.py"
A = "hopital-a.mssante.test"
OPERATIONS = ("login", "APPEND", "FETCH")
FLOAT = r"[\d,]+\.\d+"
MS = r"(\d+\.\d|\d+|-)"
ROW = re.compile(
    rf" +[\d,]+ +\d+\.\d\d +{FLOAT} +(\d+\.\d\d|-) +{MS} +{MS} +(\d+\.\d|-) +(\d+\.\d\d|-)"
)  # done, seconds, op/s, x Dovecot, p50, p99, CPUs busy, server CPU ms/op
IDLE_ROW = re.compile(
    rf" +[\d,]+ +\d+\.\d +({FLOAT}|-) +({FLOAT}|-) +{MS} +{FLOAT} +[\d,]+ +{FLOAT} +-?[\d,]+ +\d+\.\d\d"
)


def run_bench(tmp_path: Path, *args: str, timeout: float, ok: bool = True) -> tuple[str, dict[str, Any]]:
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--keep", str(tmp_path / "work"), "--json", str(out), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if ok:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    else:
        assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    return proc.stdout, json.loads(out.read_text(encoding="utf-8"))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def label(server: str, operation: str) -> str:
    return f"(a) Dovecot {operation} (reference)" if server == "dovecot" else f"(b) mssgw {operation}"


def test_bench_small_run_output(tmp_path: Path) -> None:
    args = ["--clients", "2", "--messages", "20", "--logins", "6", "--idle", "10", "--idle-seconds", "1"]
    stdout, result = run_bench(tmp_path, *args, timeout=300)
    lines = stdout.splitlines()
    assert lines[0] == (
        "imap benchmark: 2 concurrent clients, 6 logins, 20 messages of 10,240 bytes (APPEND, then UID FETCH "
        "BODY.PEEK[]), 10 idle IDLE sessions; implicit TLS, LOGIN, one command at a time per connection"
    )
    assert re.fullmatch(
        r"machine: \d+ usable CPUs \(\d+ in all\), .+, Python 3\.\d+\.\d+, SQLite 3\.\d+\.\d+, OpenSSL \S+, "
        r"Dovecot (\S+|not installed), load average [\d.]+ at start, open files limit [\d,]+",
        lines[1],
    ), lines[1]
    assert lines[2].split() == [
        *("operation", "done", "seconds", "op/s", "x", "Dovecot", "p50", "ms", "p99", "ms"),
        *("CPUs", "busy", "server", "CPU", "ms/op"),
    ]
    ran = result["dovecot"]["ran"]
    servers = ["dovecot", "mssgw"] if ran else ["mssgw"]
    rows = [label(s, op) for op in OPERATIONS for s in servers]
    for line, name in zip(lines[3:], rows, strict=False):
        assert line.startswith(name), line
        assert ROW.fullmatch(line[len(name) :]), line
    rest = lines[3 + len(rows) :]
    if ran:
        for line in lines[3 : 3 + len(rows) : 2]:  # the reference is the unit of the ratios
            assert re.search(r" 1\.00 +[\d.]+ +[\d.]+ +[\d.-]+ +[\d.-]+$", line), line
    else:
        assert rest[0].startswith("Dovecot reference: "), rest[0]
        rest = rest[1:]
    assert rest[0].split() == [
        *("idle", "IDLE", "sessions", "open", "seconds", "open/s", "last", "min", "p99", "ms"),
        *("RSS", "MB", "KB/sess", "PSS", "MB", "KB/sess", "CPUs", "idle"),
    ]
    idle_rows = [("(a) Dovecot idle (reference)" if s == "dovecot" else "(b) mssgw idle") for s in servers]
    for line, name in zip(rest[1 : 1 + len(idle_rows)], idle_rows, strict=True):
        assert line.startswith(name), line
        assert IDLE_ROW.fullmatch(line[len(name) :]), line
    rest = rest[1 + len(idle_rows) :]
    for line, server in zip(rest, servers, strict=False):
        name = "(a) Dovecot" if server == "dovecot" else "(b) mssgw"
        assert re.fullmatch(
            rf"{re.escape(name)} idle: 10 of 10 sessions open \(opening [\d.]+/s in the first minute, [\d.]+/s in "
            r"the last\), 10 answered DONE; memory before: [\d,]+ process(es)?, RSS [\d,.]+ MB, PSS [\d,.]+ MB"
            + (
                r"; after: [\d,]+ processes \(10 imap, .+, \.\.\.\), RSS summed over them"
                if server == "dovecot"
                else ""
            ),
            line,
        ), line
    rest = rest[len(servers) :]
    assert rest[0].startswith("each side: (a) Dovecot: " if ran else "mssgw: one node, "), rest[0]
    assert re.fullmatch(
        r"mssgw: server process [\d.]+ s CPU over the timed phases; audit records: imap\.append 20, "
        r"imap\.fetch\.body 20, imap\.login\.succeeded 18, imap\.logout 18; load generator [\d.]+ s CPU in all",
        rest[1],
    ), rest[1]
    if ran:
        assert re.fullmatch(r"ratio mssgw/Dovecot: login \d+\.\d\d, APPEND \d+\.\d\d, FETCH \d+\.\d\d", rest[2])
    assert lines[-1] == "result: all ok"
    assert len(lines) == 3 + len(rows) + (0 if ran else 1) + 1 + 2 * len(servers) + 2 + (1 if ran else 0) + 1

    # Every operation succeeded, on each server.
    assert result["all_ok"] is True
    for p in result["phases"]:
        assert p["done"] == p["attempted"] == (6 if p["operation"] == "login" else 20), p
        assert (p["failures"], p["errors"]) == (0, []), p
        assert p["per_second"] > 0
        assert 0 < p["latency_p50_ms"] <= p["latency_p99_ms"]
    for i in result["idle_sessions"]:
        assert (i["attempted"], i["established"], i["answered_done"], i["failures"]) == (10, 10, 10, 0), i
        assert i["gave_up"] is False
        assert i["after"]["rss_kb"] > 0
    mssgw_idle = result["idle_sessions"][-1]
    assert mssgw_idle["server"] == "mssgw"
    assert mssgw_idle["before"]["processes"] == mssgw_idle["after"]["processes"] == 1

    # mssgw stored the appended messages, sealed: no stored body holds the text that was appended.
    work = tmp_path / "work"
    with sqlite3.connect(work / "trust-space" / "operator-a" / "mssgw.db") as db:
        stored = db.execute("SELECT address, count(*) FROM messages GROUP BY address").fetchall()
        leaked = db.execute("SELECT count(*) FROM messages WHERE instr(body, CAST('Compte rendu' AS BLOB)) > 0")
        assert leaked.fetchone()[0] == 0
    assert dict(stored) == {f"claire.martin@{A}": 10, f"lucas.bernard@{A}": 10}

    if ran:
        assert result["ratio"] is not None
        assert set(result["ratio"]) == set(OPERATIONS)
        assert all(v > 0 for v in result["ratio"].values())
        dovecot = result["idle_sessions"][0]
        assert dovecot["server"] == "dovecot"
        assert dovecot["after"]["by_name"]["imap"] == 10
        # The private instance did the same work (6 + 2 + 10 logins), was stopped, and its directory
        # removed; its configuration and log are kept.
        log = (work / "dovecot" / "dovecot.log").read_text(encoding="utf-8")
        assert len(re.findall(r"imap-login: Info: Login: user=<[^>]+@hopital-a\.mssante\.test>", log)) == 18, log
        assert "Warning: Killed with signal 15" in log
        conf = (work / "dovecot" / "dovecot.conf").read_text(encoding="ascii")
        base = re.search(r"^base_dir = (/\S+)/run$", conf, re.MULTILINE)
        assert base is not None, conf
        assert Path(base.group(1)).name.startswith("mssgw-bench-dovecot-")
        assert not Path(base.group(1)).exists()
        assert "listen = 127.0.0.1" in conf
        assert "ssl = required" in conf
        assert result["dovecot"]["master_pid"] > 0
        assert not alive(result["dovecot"]["master_pid"])
    else:
        assert result["ratio"] is None


def test_bench_without_dovecot(tmp_path: Path) -> None:
    args = ["--clients", "1", "--messages", "2", "--logins", "1", "--idle", "0", "--no-dovecot"]
    stdout, result = run_bench(tmp_path, *args, timeout=300)
    assert "Dovecot reference: skipped (--no-dovecot)" in stdout.splitlines()
    assert [p["label"] for p in result["phases"]] == [label("mssgw", op) for op in OPERATIONS]
    assert [p["done"] for p in result["phases"]] == [1, 2, 2]
    assert result["idle_sessions"] == []
    assert result["ratio"] is None
    assert not (tmp_path / "work" / "dovecot").exists()


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--clients", "0"], "--clients must be positive"),
        (["--messages", "0"], "--messages must be positive"),
        (["--logins", "0"], "--logins must be positive"),
        (["--idle", "-1"], "--idle must be 0 or positive"),
        (["--reference-idle", "-1"], "--reference-idle must be 0 or positive"),
        (["--idle-seconds", "0"], "--idle-seconds must be positive"),
        (["--idle-ramp", "0"], "--idle-ramp must be positive"),
        (["--size", "100"], "--size must be at least 1024"),
    ],
)
def test_bench_rejects_bad_arguments(args: list[str], error: str) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert error in proc.stderr


@pytest.mark.slow
def test_bench_full_run(tmp_path: Path) -> None:
    stdout, result = run_bench(tmp_path, timeout=3 * 3600, ok=False)
    print(stdout)
    assert (result["clients"], result["messages"], result["logins"], result["idle"]) == (8, 500, 200, 10000)
    for p in result["phases"]:
        assert p["done"] == p["attempted"], p
        assert p["failures"] == 0, p
    for i in result["idle_sessions"]:
        assert i["established"] > 0, i
        assert i["answered_done"] == i["established"], i
        if i["server"] == "dovecot":
            assert i["established"] == 10000, i
    assert result["mssgw"]["server_exited"] is None
