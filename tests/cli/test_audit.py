"""`mssgw audit verify|export|search|checkpoint` as a subprocess, on a log that an attacker edits."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.audit.checkpoint import CheckpointSigner
from gateway.audit.events import AuditEvent
from gateway.audit.log import AUDIT_HEAD, AUDIT_MIGRATIONS, AuditLog
from gateway.store.db import Database
from tests.conftest import DOMAIN, NodeDir


def tamper(node: NodeDir, sql: str, *params: object) -> None:
    """What an attacker with the database file can do: drop the append-only triggers, then edit."""
    with sqlite3.connect(node.data / "audit.db") as conn:
        conn.execute("DROP TRIGGER IF EXISTS audit_records_no_update")
        conn.execute("DROP TRIGGER IF EXISTS audit_records_no_delete")
        conn.execute(sql, params)


def test_verify_intact_then_detect_an_edited_record(node: NodeDir) -> None:
    node.cli("trust", "add-domain", "a.mssante.fr")
    node.cli("trust", "add-domain", "b.mssante.fr")
    ok = node.cli("audit", "verify", "--json")
    assert ok.code == 0
    report = ok.json()
    assert report["ok"] is True  # type: ignore[index]
    # init wrote 3 records and 1 checkpoint; each command then adds one record and one checkpoint
    assert (report["records"], report["checkpoints"]) == (5, 3)  # type: ignore[index]
    assert report["checkpoints_verified"] == 3  # type: ignore[index]
    tamper(node, "UPDATE audit_records SET request = replace(request, 'b.mssante', 'x.mssante') WHERE seq = 5")
    bad = node.cli("audit", "verify")
    assert bad.code == 1
    assert "TAMPERED: record 5 (admin.trust.domain_added, " in bad.out
    assert "TAMPERED: checkpoint #3 (tree size 5, " in bad.out
    assert bad.out.strip().endswith("problem(s) found")
    # The failed verification is itself audited.
    last = node.cli("audit", "search", "--event", "admin.audit.verified", "--json").json()[-1]  # type: ignore[index]
    assert last["response"]["result"] == "failed"  # type: ignore[index]
    assert last["response"]["ok"] is False  # type: ignore[index]


def test_detect_deleted_and_truncated_records(node: NodeDir) -> None:
    for d in ("a", "b", "c"):
        node.cli("trust", "add-domain", f"{d}.mssante.fr")
    tamper(node, "DELETE FROM audit_records WHERE seq = 4")
    r = node.cli("audit", "verify", "--json")
    kinds = {(f["kind"], f["seq"]) for f in r.json()["findings"]}  # type: ignore[index]
    assert ("missing", 4) in kinds
    assert r.code == 1
    tamper(node, "DELETE FROM audit_records WHERE seq >= 6")
    r = node.cli("audit", "verify", "--json")
    truncated = [f for f in r.json()["findings"] if f["kind"] == "truncated"]  # type: ignore[index]
    assert truncated, r.out
    assert truncated[0]["message"].startswith("log truncated: checkpoint #")


def test_export_and_search(node: NodeDir) -> None:
    node.cli("trust", "add-domain", "a.mssante.fr")
    node.cli("mailbox", "add", f"x@{DOMAIN}", "--type", "ORG")
    today = datetime.now(UTC).date()
    rows = node.cli("audit", "export", "--since", today.isoformat(), "--json").json()
    actions = [r["action"] for r in rows]  # type: ignore[union-attr,index]
    assert actions[-2:] == ["admin.trust.domain_added", "admin.mailbox.created"]
    tomorrow = (today + timedelta(days=1)).isoformat()
    assert node.cli("audit", "export", "--since", tomorrow, "--json").json() == []
    found = node.cli(
        "audit", "search", "--principal", "operator:tester@ci", "--event", "admin.mailbox.", "--json"
    ).json()
    assert [r["action"] for r in found] == ["admin.mailbox.created"]  # type: ignore[union-attr,index]
    assert found[0]["request"]["address"] == f"x@{DOMAIN}"  # type: ignore[index]
    r = node.cli("audit", "export", "--since", "yesterday")
    assert r.code == 2
    assert r.err.strip() == (
        "mssgw: 'yesterday' is not an ISO-8601 date or date-time (e.g. 2026-11-22 or 2026-11-22T10:00)"
    )
    r = node.cli("audit", "search")
    assert (r.code, r.err.strip()) == (2, "mssgw: give --principal and/or --event")
    r = node.cli("audit", "search", "--event", "admin.", "--limit", "0")
    assert (r.code, r.err.strip()) == (2, "mssgw: --limit must be at least 1, not 0")


def test_checkpoint_on_demand(node: NodeDir) -> None:
    r = node.cli("audit", "checkpoint", "--json")
    cp = r.json()
    with sqlite3.connect(node.data / "audit.db") as conn:
        (size,) = conn.execute("SELECT size FROM audit_head").fetchone()
    # The checkpoint covers what came before; the command's own record follows it.
    assert cp["tree_size"] == size - 1  # type: ignore[index]
    assert len(cp["root_hash"]) == 64  # type: ignore[index]


def test_verify_against_a_checkpoint_kept_off_the_node(node: NodeDir, tmp_path: Path) -> None:
    """The checkpoint's JSON (as `audit checkpoint --json` prints it, or the operational log's line) kept
    elsewhere: deleting its row, which the database alone cannot show, is reported."""
    copy = tmp_path / "checkpoint.json"
    printed = node.cli("audit", "checkpoint", "--json")
    copy.write_text(printed.out)
    cp = printed.json()
    r = node.cli("audit", "verify", "--checkpoint", str(copy))
    assert (r.code, r.out.splitlines()[-1]) == (0, "audit log intact")
    tamper(node, "DELETE FROM audit_checkpoints WHERE id = ?", cp["id"])  # type: ignore[index]
    assert node.cli("audit", "verify").code == 0  # nothing left to tell on the node itself
    r = node.cli("audit", "verify", "--checkpoint", str(copy))
    assert r.code == 1
    assert (
        f"TAMPERED: checkpoint #{cp['id']} (kept outside) (tree size {cp['tree_size']}, {cp['ts']}) "  # type: ignore[index]
        "is not in the database (deleted)"
    ) in r.out
    other = tmp_path / "other.log"
    other.write_text('{"event": "node.started"}\nnot json\n')
    r = node.cli("audit", "verify", "--checkpoint", str(other))
    assert (r.code, r.err.strip()) == (
        2,
        f"mssgw: {other}: no checkpoint in it (a signed checkpoint line or `mssgw audit checkpoint --json`)",
    )


def _aged(node: NodeDir, days: int, count: int) -> None:
    """The node's audit log replaced by one that began `days` ago: `count` records then, signed with the
    node's checkpoint key (as if it had served that long)."""
    cfg = node.cfg()
    for f in node.data.glob("audit.db*"):
        f.unlink()
    signer = CheckpointSigner.load(cfg.path(cfg.audit.checkpoint_key), cfg.base_dir)
    then = datetime.now(UTC) - timedelta(days=days)

    async def build() -> None:
        db = Database(cfg.db_url(cfg.store.audit_url), AUDIT_MIGRATIONS, AUDIT_HEAD)
        await db.migrate()
        log = AuditLog(db, cfg.node.name, signer, clock=lambda: then)
        for n in range(count):
            await log.record(AuditEvent.MAILBOX_CREATED, author="operator:admin@ops", request={"n": n})
        await log.checkpoint()
        await db.close()

    asyncio.run(build())


def test_archive_moves_records_past_keep_online_to_a_signed_file(node: NodeDir, tmp_path: Path) -> None:
    _aged(node, 300, 20)
    node.cli("trust", "add-domain", "a.mssante.fr")  # record 21, today
    out = tmp_path / "archives"
    out.mkdir()
    soon = (datetime.now(UTC) - timedelta(days=100)).date().isoformat()
    cutoff = (datetime.now(UTC) - timedelta(days=183)).date().isoformat()
    r = node.cli("audit", "archive", "--out", out, "--before", soon)
    assert (r.code, r.err.strip()) == (
        2,
        f"mssgw: records younger than [audit] keep_online (183d) stay online: --before must be {cutoff} or earlier",
    )
    assert node.cli("audit", "archive", "--out", tmp_path / "nowhere").err.strip() == (
        f"mssgw: {tmp_path / 'nowhere'}: not a directory"
    )
    r = node.cli("audit", "archive", "--out", out)
    assert r.code == 0, r.err
    name = "audit-000000000001-000000000020.jsonl.gz"
    sha = hashlib.sha256((out / name).read_bytes()).hexdigest()
    assert r.out.splitlines() == [
        f"archived records 1 to 20 (20 records, the last of {node_time(node, 20)}Z) to {out / name}",
        f"SHA-256 {sha}; the database holds them no more",
    ]
    *refused, audited = node.cli("audit", "search", "--event", "admin.audit.archived", "--json").json()  # type: ignore[misc]
    assert (
        [(a["response"]["result"], a["response"]["reason"][:30]) for a in refused]
        == [  # type: ignore[index]
            ("refused", "records younger than [audit] k"),
            ("refused", f"{tmp_path / 'nowhere'}: not a directory"[:30]),
        ]
    )
    assert audited["response"] == {  # type: ignore[index]
        "result": "done",
        "first_seq": 1,
        "last_seq": 20,
        "records": 20,
        "file": name,
        "sha256": sha,
        "reused": False,
    }
    v = node.cli("audit", "verify", "--archive", out / name)
    assert v.code == 0, v.out
    lines = v.out.splitlines()
    # 21 (today's trust add), the two refused archives, the archive, the search: online; the rest archived
    assert lines[0].startswith("5 records (20 archived in 1 file), 6 checkpoints (6 verified), root ")
    assert lines[1:] == [f"archive {name}: intact", "audit log intact"]
    # The same records compressed again: sound on its own, but not the file the log recorded.
    copy = tmp_path / "copy.jsonl.gz"
    copy.write_bytes(gzip.compress(gzip.decompress((out / name).read_bytes()), compresslevel=1))
    v = node.cli("audit", "verify", "--archive", copy)
    assert v.code == 1
    assert f"TAMPERED: copy.jsonl.gz is not the file archived as {name} (SHA-256 differs)" in v.out.splitlines()
    # The file altered: named, and verify fails.
    with gzip.open(out / name, "rt", encoding="ascii") as f:
        items = [json.loads(line) for line in f]
    items[3]["author"] = "operator:someone-else@ops"
    with gzip.open(out / name, "wt", encoding="ascii") as f:
        f.writelines(json.dumps(i, separators=(",", ":")) + "\n" for i in items)
    v = node.cli("audit", "verify", "--archive", out / name)
    assert v.code == 1
    assert f"TAMPERED: {name}: record 3 (admin.mailbox.created, {items[3]['ts']}) was altered" in v.out


def node_time(node: NodeDir, seq: int) -> str:
    with sqlite3.connect(node.data / "audit.db") as con:
        row = con.execute("SELECT last_ts FROM audit_archives WHERE last_seq = ?", (seq,)).fetchone()
    return str(row[0])[:19]


def test_a_tampered_log_is_not_archived(node: NodeDir, tmp_path: Path) -> None:
    _aged(node, 300, 5)
    tamper(node, "UPDATE audit_records SET author = 'x' WHERE seq = 2")
    r = node.cli("audit", "archive", "--out", tmp_path)
    assert r.code == 1
    assert r.out.splitlines()[-1] == "the audit log does not verify: nothing archived (mssgw audit verify says more)"
    assert "TAMPERED: record 2 (admin.mailbox.created, " in r.out
    assert not list(tmp_path.glob("audit-*"))
