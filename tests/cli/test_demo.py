"""`mssgw demo init DIR`: what the quickstart's first command creates (a trust space on loopback)."""

from __future__ import annotations

import json
import sqlite3
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from gateway.cli import demo
from tests.conftest import NodeDir, run_cli

A, B = "hopital-a.mssante.test", "clinique-b.mssante.test"


def test_the_two_operators_never_draw_the_same_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ports come from one draw: with the candidates in order (no shuffle), two draws, one per
    operator, gave both the same six ports (seen once in a suite run, shuffled, as 11 distinct of 12)."""
    monkeypatch.setattr(demo.random.SystemRandom, "shuffle", lambda self, x: None)
    ports = demo.listener_ports()
    assert list(ports) == [op["dir"] for op in demo.OPERATORS]
    drawn = [p for each in ports.values() for p in each.values()]
    assert len(drawn) == len(set(drawn)) == 2 * len(demo.PORTS)


def test_demo_init_lays_out_two_federated_operators(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    r = run_cli("demo", "init", root)
    assert r.code == 0, r.err
    creds_file = root / "credentials.json"
    assert stat.S_IMODE(creds_file.stat().st_mode) == 0o600
    creds = json.loads(creds_file.read_text())
    a, b = creds["operators"]
    assert (a["domain"], b["domain"]) == (A, B)
    ports = [*a["ports"].values(), *b["ports"].values()]
    assert len(set(ports)) == 12  # every listener (https, 3 SMTP, 2 IMAP) of each its own free port
    for op, other in ((a, b), (b, a)):
        cfg = tomllib.loads(Path(op["config"]).read_text())
        assert cfg["listen"]["submission_port"] == op["ports"]["submission"]
        assert (cfg["listen"]["imap_port"], cfg["listen"]["imaps_port"]) == (op["ports"]["imap"], op["ports"]["imaps"])
        relay = f"127.0.0.1:{other['ports']['relay']}"
        assert cfg["queue"]["routes"] == {other["domain"]: relay, f"patient.{other['domain']}": relay}
        assert cfg["pki"]["dir"] == str(root / "pki")  # one trust-space PKI for both
        node = NodeDir(Path(op["config"]).parent, root / "secrets" / op["name"])
        trusted = [t["domain"] for t in node.cli("trust", "list", "--json").json()]  # type: ignore[union-attr]
        assert other["domain"] in trusted
        assert f"patient.{other['domain']}" in trusted  # the peer's patients
        # Printed once: every generated password is in init's output and opens its account.
        with sqlite3.connect(node.data / "mssgw.db") as conn:
            hashes = dict(conn.execute("SELECT address, password_hash FROM accounts").fetchall())
        for m in op["mailboxes"]:
            assert m["password"] in r.out
            assert PasswordHasher().verify(hashes[m["address"]], m["password"])
        assert node.cli("audit", "verify").code == 0
        # Both nodes' TLS certificates chain to the shared root.
        tls = node.data / "tls"
        ok = subprocess.run(
            [
                "openssl",
                "verify",
                "-CAfile",
                str(root / "pki" / "root" / "cert.pem"),
                "-untrusted",
                str(tls / "chain.pem"),
                str(tls / "cert.pem"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert ok.returncode == 0, ok.stderr
    org = (
        NodeDir(root / "operator-a", root / "secrets" / "operator-a")
        .cli("mailbox", "show", f"secretariat.cardiologie@{A}", "--json")
        .json()
    )
    assert org["delegates"] == [f"claire.martin@{A}"]  # type: ignore[index]
    # Operator B hosts an enrolled patient: its TOTP secret in the credentials opens the web inbox.
    (patient,) = [m for m in b["mailboxes"] if m["type"] == "PAT"]
    assert patient["address"].endswith(f"@patient.{B}")
    assert patient["web_url"] == f"https://127.0.0.1:{b['ports']['https']}/"
    assert len(patient["totp_secret"]) == 32
    assert patient["totp_secret"] in r.out
    shown = NodeDir(root / "operator-b", root / "secrets" / "operator-b").cli(
        "patient", "show", patient["address"], "--json"
    )
    assert (shown.json()["enrolled"], shown.json()["opposed"]) == (True, False)  # type: ignore[index]
    assert not [m for m in a["mailboxes"] if m["type"] == "PAT"]
    again = run_cli("demo", "init", root)
    assert again.code == 2
    assert (
        again.err.strip()
        == f"mssgw: {root} already holds a demo (see {creds_file}); remove the directory to start over"
    )
