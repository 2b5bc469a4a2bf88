"""Periodic signed checkpoints, as `mssgw serve` runs them."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from gateway.audit.checkpoint import CheckpointSigner
from gateway.audit.events import AuditEvent
from gateway.audit.log import AUDIT_HEAD, AUDIT_MIGRATIONS, AuditLog
from gateway.audit.verify import query
from gateway.store.db import Database


async def test_run_checkpoints_signs_new_records_and_only_new_records(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}", AUDIT_MIGRATIONS, AUDIT_HEAD)
    await db.migrate()
    log = AuditLog(db, "node1", CheckpointSigner.generate(tmp_path / "k.pem"))
    for _ in range(3):
        await log.record(AuditEvent.NODE_STARTED, author="node:node1")
    task = asyncio.create_task(log.run_checkpoints(0.05))
    try:
        for _ in range(100):
            cp = await log.latest_checkpoint()
            if cp is not None:
                break
            await asyncio.sleep(0.02)
        assert cp is not None
        assert cp.tree_size == 3
        await asyncio.sleep(0.2)  # several periods with nothing new: no further checkpoint
        latest = await log.latest_checkpoint()
        assert latest is not None
        assert latest.id == cp.id
        await log.record(AuditEvent.NODE_STOPPED, author="node:node1")
        for _ in range(100):
            latest = await log.latest_checkpoint()
            if latest is not None and latest.tree_size == 4:
                break
            await asyncio.sleep(0.02)
        assert latest is not None
        assert (latest.id, latest.tree_size) == (cp.id + 1, 4)
    finally:
        task.cancel()
        await db.close()


async def test_timestamps_continue_from_the_log_even_if_the_clock_went_back(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}", AUDIT_MIGRATIONS, AUDIT_HEAD)
    await db.migrate()
    first = AuditLog(db, "node1", None)
    await first.record(AuditEvent.NODE_STARTED, author="node:node1")
    future = "2999-01-01T00:00:00.000000Z"
    with sqlite3.connect(tmp_path / "audit.db") as conn:  # as if written by a node whose clock runs ahead
        conn.execute("DROP TRIGGER audit_records_no_update")
        conn.execute("UPDATE audit_records SET ts = ? WHERE seq = 1", (future,))
    second = AuditLog(db, "node2", None)  # a new process: knows nothing yet
    await second.record(AuditEvent.NODE_STARTED, author="node:node2")
    rows = await query(db)
    assert [r["ts"] for r in rows] == [future, future]
    await db.close()
