"""`mssgw retention run`, driven as a subprocess: what it would do, what it does, and its audit trail."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

from tests.conftest import DOMAIN, NodeDir

IDLE = f"inutilisee@{DOMAIN}"


def test_retention_run_warns_an_idle_mailbox_once(node: NodeDir) -> None:
    assert node.cli("mailbox", "add", IDLE, "--type", "ORG").code == 0
    long_ago = (datetime.now(UTC) - timedelta(days=340)).strftime("%Y-%m-%d %H:%M:%S.%f")
    with sqlite3.connect(node.data / "mssgw.db") as conn:
        conn.execute("UPDATE accounts SET last_login_at = ? WHERE address = ?", (long_ago, IDLE))

    dry = node.cli("retention", "run", "--dry-run", "--json")
    assert dry.code == 0, dry.err
    planned = dry.json()
    assert [mb["address"] for mb in planned["warned"]] == [IDLE]  # type: ignore[index]
    assert (planned["dry_run"], planned["deleted"]) == (True, [])  # type: ignore[index]

    done = node.cli("retention", "run")
    assert done.code == 0, done.err
    assert done.out.splitlines()[-1] == "1 warned, 0 deleted, 0 warned and within [retention] warn_before"
    assert IDLE in done.out
    again = node.cli("retention", "run")
    assert again.out.splitlines()[-1] == "0 warned, 0 deleted, 1 warned and within [retention] warn_before"

    runs = node.cli("audit", "search", "--event", "admin.retention.run", "--json").json()
    assert [r["response"] for r in runs] == [  # type: ignore[index,union-attr]
        {"result": "done", "dry_run": True, "warned": 1, "deleted": 0, "failed": 0},
        {"result": "done", "dry_run": False, "warned": 1, "deleted": 0, "failed": 0},
        {"result": "done", "dry_run": False, "warned": 0, "deleted": 0, "failed": 0},
    ]
    warned = node.cli("audit", "search", "--event", "retention.mailbox.warned", "--json").json()
    assert [(r["principal"], r["author"]) for r in warned] == [(IDLE, "retention")]  # type: ignore[index,union-attr]
