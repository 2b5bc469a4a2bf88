"""The inline SQLite driver: statements on the loop's thread, commits that wrote and lock waits off it."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from gateway.store import sqlite_inline
from gateway.store.db import Database
from tests.store.conftest import LoopTicks


async def _db(tmp_path: Path) -> Database:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    async with db.write() as s:
        await s.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
    return db


async def _trace(db: Database, engine_name: str, seen: list[tuple[str, bool]]) -> None:
    """Record every statement SQLite runs on the engine's pooled connection, and whether it ran on this thread."""
    loop_thread = threading.get_ident()
    engine = db.engine if engine_name == "write" else db.read_engine
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert isinstance(raw, sqlite3.Connection)
        raw.set_trace_callback(lambda sql: seen.append((sql.split()[0], threading.get_ident() == loop_thread)))


async def test_statements_inline_and_commits_that_wrote_off_the_loop(tmp_path: Path) -> None:
    db = await _db(tmp_path)
    try:
        writes: list[tuple[str, bool]] = []
        reads: list[tuple[str, bool]] = []
        await _trace(db, "write", writes)
        await _trace(db, "read", reads)
        async with db.write() as s:
            await s.execute(text("INSERT INTO t (v) VALUES ('a')"))
        async with db.read() as s:
            assert (await s.execute(text("SELECT v FROM t"))).scalars().all() == ["a"]
        async with db.write() as s:  # a write transaction that wrote nothing commits inline
            assert (await s.execute(text("SELECT count(*) FROM t"))).scalar_one() == 1
    finally:
        await db.close()
    assert writes == [
        ("BEGIN", True),
        ("INSERT", True),
        ("COMMIT", False),
        ("BEGIN", True),
        ("SELECT", True),
        ("COMMIT", True),
    ]
    assert reads == [("BEGIN", True), ("SELECT", True), ("COMMIT", True)]


async def test_another_process_lock_is_waited_for_off_the_loop(tmp_path: Path) -> None:
    db = await _db(tmp_path)
    other = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # an admin command holding the write lock
        other.execute("INSERT INTO t (v) VALUES ('other')")

        async def write() -> float:
            async with db.write() as s:
                await s.execute(text("INSERT INTO t (v) VALUES ('node')"))
            return time.monotonic()

        async with LoopTicks() as ticks:
            writer = asyncio.create_task(write())
            await asyncio.sleep(0.5)
            assert not writer.done()
            released = time.monotonic()
            other.execute("COMMIT")
            done = await asyncio.wait_for(writer, 5)
        assert done >= released
        assert ticks.count >= 25  # the loop kept turning while the writer waited (a blocked loop ticks once)
        async with db.read() as s:
            assert (await s.execute(text("SELECT v FROM t ORDER BY id"))).scalars().all() == ["other", "node"]
    finally:
        other.close()
        await db.close()


async def test_a_lock_held_past_the_busy_timeout_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_inline, "BUSY_TIMEOUT_MS", 200)
    db = await _db(tmp_path)
    other = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(Exception, match="database is locked"):
            async with db.write() as s:
                await s.execute(text("INSERT INTO t (v) VALUES ('late')"))
        other.execute("ROLLBACK")
        async with db.write() as s:  # the connection is usable again, with busy timeout 0 inline
            await s.execute(text("INSERT INTO t (v) VALUES ('after')"))
            assert (await s.execute(text("PRAGMA busy_timeout"))).scalar_one() == 0
        async with db.read() as s:
            assert (await s.execute(text("SELECT v FROM t"))).scalars().all() == ["after"]
    finally:
        other.close()
        await db.close()


async def test_a_cancelled_commit_finishes_before_the_connection_is_reused(tmp_path: Path) -> None:
    db = await _db(tmp_path)
    try:
        slow = threading.Event()
        async with db.engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection

        def on_statement(sql: str) -> None:
            if sql == "COMMIT" and threading.current_thread() is not threading.main_thread():
                slow.set()
                time.sleep(0.3)  # a slow fsync

        raw.set_trace_callback(on_statement)

        async def write() -> None:
            async with db.write() as s:
                await s.execute(text("INSERT INTO t (v) VALUES ('cancelled')"))

        task = asyncio.create_task(write())
        assert await asyncio.to_thread(slow.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The commit ran to its end (as with any driver, a cancelled commit may have happened) and the
        # connection, back in the pool, serves the next transaction.
        async with db.write() as s:
            await s.execute(text("INSERT INTO t (v) VALUES ('next')"))
        async with db.read() as s:
            assert (await s.execute(text("SELECT v FROM t ORDER BY id"))).scalars().all() == ["cancelled", "next"]
    finally:
        await db.close()


async def test_streamed_results_are_read_batch_by_batch(tmp_path: Path) -> None:
    """stream()/yield_per read rows from SQLite as they are asked for (the directory export's 536,000)."""
    db = await _db(tmp_path)
    try:
        async with db.write() as s:
            await s.execute(
                text(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) "
                    "INSERT INTO t (v) SELECT 'row' || i FROM n"
                )
            )
        computed = 0

        def seen(value: int) -> int:
            nonlocal computed
            computed += 1
            return value

        async with db.read_engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            raw.create_function("seen", 1, seen)
            result = await conn.stream(text("SELECT seen(id) FROM t ORDER BY id"))
            sizes, at_first = [], None
            async for part in result.partitions(100):
                sizes.append(len(part))
                if at_first is None:
                    at_first = computed
        assert sizes == [100] * 10
        assert at_first is not None
        assert at_first <= 200  # not the 1,000 rows a buffered cursor reads before the first one is returned
        assert computed == 1000
    finally:
        await db.close()


async def test_a_write_cancelled_while_waiting_for_a_lock_leaves_no_lock_behind(tmp_path: Path) -> None:
    """Cancelled during the off-loop wait for another process's lock: once that wait ends (and its BEGIN
    IMMEDIATE succeeds on the worker thread), nothing is written and the write lock is free again."""
    db = await _db(tmp_path)
    other = sqlite3.connect(tmp_path / "store.db", isolation_level=None, check_same_thread=False)
    gc.disable()  # the garbage collector must not be what frees an orphaned connection
    try:
        other.execute("BEGIN IMMEDIATE")

        async def write() -> None:
            async with db.write() as s:
                await s.execute(text("INSERT INTO t (v) VALUES ('cancelled')"))

        task = asyncio.create_task(write())
        await asyncio.sleep(0.3)  # the writer waits on a worker thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        other.execute("COMMIT")  # the worker's BEGIN IMMEDIATE now succeeds, for a cancelled task
        probe = sqlite3.connect(tmp_path / "store.db", isolation_level=None, timeout=0)
        try:
            deadline = time.monotonic() + 5
            while True:
                try:
                    probe.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError:
                    assert time.monotonic() < deadline, "the cancelled writer's connection kept the write lock"
                    await asyncio.sleep(0.05)
            probe.execute("ROLLBACK")
        finally:
            probe.close()
        async with db.read() as s:
            assert (await s.execute(text("SELECT v FROM t"))).scalars().all() == []
    finally:
        gc.enable()
        other.close()
        await db.close()
