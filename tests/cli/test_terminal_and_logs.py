"""Operator-facing output: progress on a terminal, JSON-lines operational log, shared PKI at init."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

from directory import synthetic
from tests.conftest import DOMAIN, NodeDir, run_cli


def test_import_shows_a_progress_bar_on_a_terminal(node: NodeDir, tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    synthetic.write_extraction(path, synthetic.generate_rows(2000, seed=1))
    master, slave = pty.openpty()
    # A real terminal has a size; a bare pty reports 0 columns and tqdm then draws nothing.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli.main", "directory", "import", str(path), "-c", str(node.config)],
        stdout=subprocess.PIPE,
        stderr=slave,
        text=True,
    )
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    out, _ = proc.communicate(timeout=60)
    os.close(master)
    assert proc.returncode == 0
    # tqdm's labelled bar in bytes of the file, then the line cleared (leave=False).
    assert seen.startswith(b"\rimport:   0%|")
    assert b"/442k [" in seen
    assert seen.endswith(b"\r" + b" " * 79 + b"\r")
    assert out.startswith(f"{path}: 2000 rows read in ")


def test_operational_log_is_json_lines_without_secrets(node: NodeDir, tmp_path: Path) -> None:
    log = tmp_path / "ops.jsonl"
    password = "a very secret passphrase 42"
    r = node.cli(
        "mailbox",
        "add",
        f"x@{DOMAIN}",
        "--type",
        "ORG",
        "--password-stdin",
        input=password + "\n",
        env={"MSSGW_AUDIT__LOG_FILE": str(log)},
    )
    assert r.code == 0, r.err
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    events = [entry["event"] for entry in lines]
    assert events == ["admin.mailbox.created", "audit.checkpoint.written"]
    created = lines[0]
    assert created["author"] == "operator:tester@ci"
    assert created["request"]["address"] == f"x@{DOMAIN}"
    assert created["request"]["password_stdin"] == "[redacted]"  # secret-named keys never logged
    assert created["level"] == "info"
    assert created["timestamp"].endswith("Z")
    assert password not in log.read_text()


def test_second_node_joins_an_existing_trust_space_pki(node: NodeDir, tmp_path: Path) -> None:
    data = tmp_path / "peer"
    r = run_cli(
        "init",
        "--domain",
        "clinique-b.mssante.fr",
        "--data",
        data,
        "--secrets",
        tmp_path / "peer-keys",
        "--pki-dir",
        node.data / "pki",
        "--json",
    )
    assert r.code == 0, r.err
    assert r.json()["pki_dir"] == str(node.data / "pki")  # type: ignore[index]
    assert (data / "pki-root.pem").read_bytes() == (node.data / "pki-root.pem").read_bytes()
    ok = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(node.data / "pki-root.pem"),
            "-untrusted",
            str(data / "tls" / "chain.pem"),
            str(data / "tls" / "cert.pem"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert not (data / "pki").exists()
    missing = run_cli(
        "init",
        "--domain",
        "x.mssante.fr",
        "--data",
        tmp_path / "x",
        "--secrets",
        tmp_path / "xk",
        "--pki-dir",
        tmp_path / "nowhere",
    )
    assert (missing.code, missing.err.strip()) == (2, f"mssgw: no PKI at {tmp_path / 'nowhere'}")
