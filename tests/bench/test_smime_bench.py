"""The S/MIME benchmark (bench/smime.py), run as a script.

The default run checks the script at a small size: its output lines, that every message protected in
this process and through the pool of spawned workers was opened again to the original octets with a good
signature and a trusted signer, that the openssl reference was parsed, and the JSON's keys. Not timing:
the figures only have to be positive. The `slow` test runs the full default size and prints the figures.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "smime.py"
OPENSSL = "(a) openssl speed rsa2048: private op (sign)"
LABELS = (
    "(1) protect: wrap + sign + encrypt x3",
    "(2) unprotect: decrypt + verify",
    "(3) unprotect + trust check (path + CRL)",
)
NUM = r"[\d,]+\.\d+"
ROW = re.compile(rf" +(\d+|pool \d+) +([\d,]+|-) +\d+\.\d\d +{NUM} +({NUM}|-) +(\d\.\d+|-) +\d+\.\d\d +(\d+\.\d|-)")
ROW_KEYS = {
    "operation",
    "label",
    "processes",
    "pool",
    "messages",
    "correct",
    "seconds",
    "messages_per_second",
    "cpu_ms_per_message",
    "cpu_busy_cores",
    "private_ops_per_message",
    "public_ops_per_message",
    "ceiling_per_second",
    "ceiling_with_public_ops_per_second",
    "ratio",
    "errors",
}


def run_bench(tmp_path: Path, *args: str, timeout: float) -> tuple[str, dict[str, Any]]:
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--json", str(out), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, json.loads(out.read_text(encoding="utf-8"))


def test_bench_small_run_output(tmp_path: Path) -> None:
    stdout, result = run_bench(
        tmp_path, "--messages", "9", "--workers", "1", "--openssl-seconds", "1", "--profile", timeout=180
    )
    lines = stdout.splitlines()
    assert lines[0] == (
        "smime benchmark: 9 messages of 10,240 octets, 3 recipient entries (2 recipients + the sender's copy), "
        "RSA 2048, AES-256-CBC, RSA-OAEP SHA-256; pool of 1 spawned worker(s)"
    )
    assert re.fullmatch(
        r"machine: \d+ usable CPUs \(\d+ in all\), .+, Python 3\.\d+\.\d+, cryptography \S+ \(OpenSSL \S+\), "
        r"openssl CLI (\S+|not installed), load average [\d.]+ at start",
        lines[1],
    ), lines[1]
    assert lines[2].split() == [
        *("operation", "procs", "ok", "seconds", "msg/s", "ceiling/s", "x", "ceiling"),
        *("CPU", "ms/msg", "CPUs", "busy"),
    ]
    ran = shutil.which("openssl") is not None
    assert result["openssl"]["ran"] is ran, result["openssl"]
    labels = [OPENSSL] * ran + [*LABELS, *LABELS]
    procs = ["1"] * ran + ["1"] * 3 + ["pool 1"] * 3
    for line, label, proc in zip(lines[3:], labels, procs, strict=False):
        assert line.startswith(label), line
        match = ROW.fullmatch(line[len(label) :])
        assert match is not None, line
        assert match.group(1) == proc, line
        if label != OPENSSL:
            assert match.group(2) == "9", line  # every result correct
    rest = lines[3 + len(labels) :]
    assert rest[0].startswith("openssl public op (verify): " if ran else "openssl reference: "), rest[0]
    assert re.fullmatch(
        r"private key loading \(PKCS#8 DER, once per message in the pool's functions\): [\d.]+ ms with OpenSSL's "
        r"RSA key check, [\d.]+ ms without \(unsafe_skip_rsa_key_validation\)",
        rest[1],
    ), rest[1]
    profiles = [line for line in rest if line.startswith("profile ")]
    assert [p.split(", 1 process")[0] for p in profiles] == [f"profile {label}" for label in LABELS]
    assert any("RSA private operations (sign, decrypt)" in line for line in rest)
    assert lines[-1] == "results: all correct"

    assert set(result) == {
        *("messages", "size", "workers", "recipient_entries", "machine", "openssl", "rows"),
        *("key_loading", "profile", "steps_ms", "wall_seconds", "all_correct"),
    }
    assert (result["messages"], result["size"], result["workers"], result["recipient_entries"]) == (9, 10240, 1, 3)
    assert result["all_correct"] is True
    rows = result["rows"]
    assert [(r["operation"], r["pool"]) for r in rows] == [
        (op, pooled) for pooled in (False, True) for op in ("protect", "unprotect", "trusted")
    ]
    for r in rows:
        assert set(r) == ROW_KEYS
        assert (r["messages"], r["correct"], r["errors"], r["processes"]) == (9, 9, [], 1)
        assert r["messages_per_second"] > 0
        assert r["cpu_ms_per_message"] > 0
        assert r["private_ops_per_message"] == 1
        if ran:
            assert r["ceiling_per_second"] > r["ceiling_with_public_ops_per_second"] > 0
            assert r["ratio"] > 0
    assert [r["public_ops_per_message"] for r in rows[:3]] == [3, 1, 1]
    if ran:
        (run,) = result["openssl"]["runs"]  # --workers 1: one openssl run serves both
        assert run["processes"] == 1
        assert run["sign_per_second"] > 0
        assert run["verify_per_second"] > run["sign_per_second"]
        assert rows[0]["ceiling_per_second"] == run["sign_per_second"]
    assert result["key_loading"]["checked_ms"] > 0
    assert [p["operation"] for p in result["profile"]] == ["protect", "unprotect", "trusted"]
    assert len(result["steps_ms"]) == 8
    assert all(ms > 0 for ms in result["steps_ms"].values())
    assert "steps, 1 process, no profiler (ms per message):" in lines
    for p in result["profile"]:
        assert p["messages"] == 9
        assert abs(sum(g["share"] for g in p["groups"]) - 1) < 0.01
        assert p["top"]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--messages", "0"], "--messages must be positive"),
        (["--workers", "0"], "--workers must be positive"),
        (["--openssl-seconds", "0"], "--openssl-seconds must be positive"),
    ],
)
def test_bench_rejects_bad_arguments(args: list[str], error: str) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert error in proc.stderr


@pytest.mark.slow
def test_bench_full_run(tmp_path: Path) -> None:
    stdout, result = run_bench(tmp_path, timeout=1800)
    print(stdout)
    assert result["messages"] == 500
    assert result["all_correct"] is True, stdout
