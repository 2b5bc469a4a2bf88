"""`mssgw demo init`: what the quickstart's first command creates."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

from argon2 import PasswordHasher

from tests.conftest import NodeDir, run_cli


def test_demo_init_creates_a_usable_operator_and_prints_credentials_once(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    r = run_cli("demo", "init", "--data", root, "--https-port", "0")
    assert r.code == 0, r.err
    creds_file = root / "credentials.json"
    assert stat.S_IMODE(creds_file.stat().st_mode) == 0o600
    creds = json.loads(creds_file.read_text())
    (op,) = creds["operators"]
    assert op["domain"] == "hopital-a.mssante.test"
    boxes = {m["address"]: m for m in op["mailboxes"]}
    assert {m["type"] for m in boxes.values()} == {"PER", "ORG", "APP"}
    # Printed once: every generated password is in the output of init, and each one opens its account.
    with sqlite3.connect(root / "operator-a" / "mssgw.db") as conn:
        hashes = dict(conn.execute("SELECT address, password_hash FROM accounts").fetchall())
    for address, m in boxes.items():
        assert m["password"] in r.out
        assert PasswordHasher().verify(hashes[address], m["password"])
        assert Path(m["certificate"]).is_file()
    node = NodeDir(root / "operator-a", root / "secrets" / "operator-a")
    org = node.cli("mailbox", "show", "secretariat.cardiologie@hopital-a.mssante.test", "--json").json()
    assert org["delegates"] == ["claire.martin@hopital-a.mssante.test"]  # type: ignore[index]
    assert len(node.cli("directory", "search", "medecin", "--json", "--limit", "500").json()) == 500  # type: ignore[arg-type]
    assert node.cli("audit", "verify").code == 0
    again = run_cli("demo", "init", "--data", root)
    assert again.code == 2
    assert again.err.strip() == (
        f"mssgw: {root} already holds a demo (see {creds_file}); remove the directory to start over"
    )
