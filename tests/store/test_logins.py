"""LoginRecords: the lock-out counters' copy in the database, on SQLite and PostgreSQL (gateway/store/logins.py)."""

from __future__ import annotations

import asyncio
import contextlib

from gateway.auth.lockout import CONFIRM_AFTER, Key, Lockout, Row
from gateway.store.db import Database
from gateway.store.logins import LoginRecords

USER = "secretariat@ch-test.mssante.fr"
WALL0 = 1_800_000_000.0


class Clock:
    """A node's monotonic clock; its wall clock runs `ahead` of it (WALL0 + 1000 at the start)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.ahead = WALL0 + 1000.0 - now

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + self.ahead


def lockout(clock: Clock) -> Lockout:
    return Lockout(threshold=3, wide_threshold=6, base_delay=10, max_delay=100, clock=clock, wall=clock.wall)


async def _rows(db: Database) -> list[tuple[object, ...]]:
    return await db.rows(
        "SELECT kind, account, ip, failures, locked_until, last_failure FROM login_failures ORDER BY kind, account, ip",
        {},
    )


async def test_a_node_started_again_reads_back_what_the_last_one_counted(store_db: Database) -> None:
    clock = Clock()
    records = LoginRecords(store_db)
    first = lockout(clock)
    first.success(USER, "192.0.2.1")
    for _ in range(4):
        first.failure(USER, "198.51.100.7")
    first.told("f\tother@ch-test.mssante.fr\t192.0.2.9")  # another node's: that node writes it
    await records.save(first.take_changes())
    wall = 1000.0 + WALL0
    assert await _rows(store_db) == [
        ("account", USER, "", 4, WALL0, wall),
        ("client", "", "198.51.100.7", 4, WALL0, wall),
        ("pair", USER, "198.51.100.7", 4, wall + 20.0, wall),
    ]
    assert await store_db.rows("SELECT account, ip, seen FROM login_known", {}) == [(USER, "192.0.2.1", wall)]

    later = Clock(now=3.0)  # the restart: another process, its monotonic clock from another origin
    later.ahead += 7.0  # 7 s later
    second = lockout(later)
    assert await records.load(second) == 3
    assert second.locked_for(USER, "198.51.100.7") == 13.0
    assert second.locked_for("other@ch-test.mssante.fr", "192.0.2.9") == 0.0
    assert second.known(USER, "192.0.2.1")
    assert second.failure(USER, "198.51.100.7") == 40.0  # the pair's 5th failure, counted on
    assert not second.take_changes().counts.keys() ^ {
        ("account", USER, ""),
        ("client", "", "198.51.100.7"),
        ("pair", USER, "198.51.100.7"),
    }


async def test_load_skips_what_memory_would_have_forgotten(store_db: Database) -> None:
    clock = Clock()
    records = LoginRecords(store_db)
    old = lockout(clock)
    old.failure(USER, "192.0.2.1")
    old.success("owner@ch-test.mssante.fr", "192.0.2.2")
    await records.save(old.take_changes())
    clock.now += 86400.0 + 1  # a day after the last failure; the known address is younger than 30 days
    fresh = lockout(clock)
    assert await records.load(fresh) == 0
    assert not fresh.take_changes()  # nothing read, nothing to write back
    assert fresh.known("owner@ch-test.mssante.fr", "192.0.2.2")
    assert await records.prune(fresh) == 3  # the three counters; the known address stays
    assert await _rows(store_db) == []
    clock.now += 30 * 86400.0
    assert await records.prune(fresh) == 1
    assert await store_db.rows("SELECT count(*) FROM login_known", {}) == [(0,)]


async def test_an_unlock_frees_a_running_node_once_its_counter_is_older_than_the_confirm_delay(
    store_db: Database,
) -> None:
    clock = Clock()
    records = LoginRecords(store_db)
    node = lockout(clock)
    node.read = records.read
    for n in range(6):
        node.failure(USER, f"203.0.113.{n}")  # the account's wide threshold: locked everywhere
    node.failure(USER, "198.51.100.7")
    await records.save(node.take_changes())
    assert await records.unlock(USER.upper(), ["203.0.113.1", "192.0.2.99"]) == [
        ("account", USER, ""),
        ("client", "", "203.0.113.1"),
        ("pair", USER, "198.51.100.7"),
        *[("pair", USER, f"203.0.113.{n}") for n in range(6)],
    ]
    clock.now += CONFIRM_AFTER - 0.5
    # The account's 7th failure locked it for 20 s; too young to be read again: memory stands.
    assert await node.wait(USER, "198.51.100.8") == 15.5
    clock.now += 0.5
    assert await node.wait(USER, "198.51.100.8") == 0.0  # read again: gone from the database
    assert node.locked_for(USER, "198.51.100.8") == 0.0
    assert await records.unlock(USER, []) == []


async def test_a_counter_changed_here_since_the_last_write_is_not_read_again(store_db: Database) -> None:
    clock = Clock()
    records = LoginRecords(store_db)
    node = lockout(clock)
    node.read = records.read
    for _ in range(3):
        node.failure(USER, "192.0.2.1")  # not written yet
    clock.now += CONFIRM_AFTER + 1
    assert await node.wait(USER, "192.0.2.1") == 10.0 - CONFIRM_AFTER - 1


async def test_a_failed_write_is_kept_for_the_next(store_db: Database) -> None:
    clock = Clock()
    records = LoginRecords(store_db)
    node = lockout(clock)
    node.failure(USER, "192.0.2.1")
    async with store_db.raw_writing() as tx:
        await tx.execute("ALTER TABLE login_failures RENAME TO login_failures_away", {})
    assert not await records._write(node)
    assert node.changed.is_set()
    async with store_db.raw_writing() as tx:
        await tx.execute("ALTER TABLE login_failures_away RENAME TO login_failures", {})
    node.failure(USER, "192.0.2.1")
    assert await records._write(node)
    assert [r[:4] for r in await _rows(store_db)] == [
        ("account", USER, "", 2),
        ("client", "", "192.0.2.1", 2),
        ("pair", USER, "192.0.2.1", 2),
    ]


async def test_names_too_long_or_with_a_nul_stay_in_memory(store_db: Database) -> None:
    clock = Clock()
    records = LoginRecords(store_db)
    node = lockout(clock)
    node.read = records.read  # never asked about them: no row is not an unlock for those
    node.failure("x" * 321, "192.0.2.1")
    node.failure("nul\0@ch-test.mssante.fr", "192.0.2.1")
    await records.save(node.take_changes())
    assert await _rows(store_db) == [("client", "", "192.0.2.1", 2, WALL0, 1000.0 + WALL0)]
    assert node.locked_for("x" * 321, "192.0.2.1") == 0.0
    for _ in range(2):
        node.failure("x" * 321, "192.0.2.1")
    assert node.locked_for("x" * 321, "192.0.2.1") == 10.0
    clock.now += CONFIRM_AFTER
    assert await node.wait("x" * 321, "192.0.2.1") == 10.0 - CONFIRM_AFTER


async def test_keep_writes_in_the_background_and_what_is_left_when_cancelled(store_db: Database) -> None:
    clock = Clock()
    records = LoginRecords(store_db)
    node = lockout(clock)
    task = asyncio.create_task(records.keep(node))
    await asyncio.sleep(0)
    # SQLite: an unlock is found by reading again; PostgreSQL tells it (test_notify.py).
    assert node.read == (records.read if store_db.is_sqlite else None)
    node.failure(USER, "192.0.2.1")
    for _ in range(200):  # written within WRITE_DELAY
        if await _rows(store_db):
            break
        await asyncio.sleep(0.02)
    assert [r[:4] for r in await _rows(store_db)] == [
        ("account", USER, "", 1),
        ("client", "", "192.0.2.1", 1),
        ("pair", USER, "192.0.2.1", 1),
    ]
    node.failure(USER, "192.0.2.1")
    task.cancel()  # the node stops before the delay is over
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert {r[3] for r in await _rows(store_db)} == {2}


async def test_keep_stops_when_cancelled_as_a_change_arrives(store_db: Database) -> None:
    """A failure counted at the moment the node cancels `keep` (its stop): written, and `keep` ends
    (Python 3.11's wait_for would have returned the event instead and waited on)."""
    clock = Clock()
    records = LoginRecords(store_db)
    node = lockout(clock)
    task = asyncio.create_task(records.keep(node))
    await asyncio.sleep(0.05)  # waiting for a change
    node.failure(USER, "192.0.2.1")
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=5)
    assert done == {task}
    assert [r[:4] for r in await _rows(store_db)] == [
        ("account", USER, "", 1),
        ("client", "", "192.0.2.1", 1),
        ("pair", USER, "192.0.2.1", 1),
    ]


async def test_a_write_cancelled_by_the_stop_is_kept_for_the_final_one(store_db: Database) -> None:
    """The node stops while a batch waits for the database (another writer holds it): the batch goes back
    to the counters' changes, and the final write takes it."""
    clock = Clock()
    records = LoginRecords(store_db)
    node = lockout(clock)
    node.failure(USER, "192.0.2.1")
    await records.save(node.take_changes())
    node.failure(USER, "192.0.2.1")
    holding, release = asyncio.Event(), asyncio.Event()

    async def other_writer() -> None:
        async with store_db.raw_writing() as tx:  # the same rows, locked until released
            await tx.execute("UPDATE login_failures SET failures = failures WHERE account = :a", {"a": USER})
            holding.set()
            await release.wait()

    other = asyncio.create_task(other_writer())
    await holding.wait()
    writing = asyncio.create_task(records._write(node))
    await asyncio.sleep(0.2)
    assert not writing.done()  # waiting for the other writer
    writing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await writing
    release.set()
    await other
    assert await records._write(node)
    assert {r[3] for r in await _rows(store_db)} == {2}


async def test_a_counter_is_read_again_once_per_confirm_delay_and_not_over_a_newer_count(
    store_db: Database,
) -> None:
    clock = Clock()
    records = LoginRecords(store_db)
    node = lockout(clock)
    reads: list[int] = []

    async def read(keys: list[Key]) -> dict[Key, Row]:
        reads.append(len(keys))
        found = await records.read(keys)
        if len(reads) == 2:
            node.told(f"f\t{USER}\t192.0.2.1")  # another node's failure while the reading is under way
        return found

    node.read = read
    for _ in range(3):
        node.failure(USER, "192.0.2.1")  # the pair locked for 10 s
    await records.save(node.take_changes())
    clock.now += CONFIRM_AFTER
    assert await node.wait(USER, "192.0.2.1") == 5.0
    assert reads == [3]  # the attempt's three counters (client address, pair, account)
    clock.now += 1
    assert await node.wait(USER, "192.0.2.1") == 4.0  # read 1 s ago: not again (a locked guesser's flood)
    assert reads == [3]
    clock.now += CONFIRM_AFTER
    await store_db.rows("SELECT 1", {})
    async with store_db.raw_writing() as tx:  # an operator's unlock meanwhile
        await tx.execute("DELETE FROM login_failures", {})
    assert await node.wait(USER, "192.0.2.1") == 20.0  # the failure told during the reading stands: 4th
    assert reads == [3, 3]


async def test_load_takes_the_locked_counters_first(store_db: Database) -> None:
    clock = Clock()
    records = LoginRecords(store_db)
    node = lockout(clock)
    for _ in range(3):
        node.failure(USER, "192.0.2.1")  # locked for 10 s
    clock.now += 1
    node.failure("spray@ch-test.mssante.fr", "198.51.100.1")  # more recent, under every threshold
    await records.save(node.take_changes())
    small = Lockout(threshold=3, wide_threshold=6, base_delay=10, clock=clock, wall=clock.wall, max_entries=1)
    assert await records.load(small) == 1
    assert small.locked_for(USER, "192.0.2.1") == 9.0


async def test_a_success_deletes_its_pair_row_after_memory_evicted_it(store_db: Database) -> None:
    clock = Clock()
    records = LoginRecords(store_db)
    node = Lockout(
        threshold=3, wide_threshold=6, base_delay=10, clock=clock, wall=clock.wall, max_entries=4, forget_after=600
    )
    node.failure(USER, "192.0.2.1")
    node.success("early@ch-test.mssante.fr", "192.0.2.5")  # before any eviction: no pair row to clear
    changes = node.take_changes()
    assert changes.counts.keys() == {("pair", USER, "192.0.2.1"), ("account", USER, ""), ("client", "", "192.0.2.1")}
    await records.save(changes)
    clock.now += 1
    node.failure("other@ch-test.mssante.fr", "198.51.100.1")  # 6 counters over 4: USER's, the oldest, go
    assert node.take_changes().counts.keys() == {
        ("pair", "other@ch-test.mssante.fr", "198.51.100.1"),
        ("account", "other@ch-test.mssante.fr", ""),
        ("client", "", "198.51.100.1"),
    }
    node.success("bystander@ch-test.mssante.fr", "192.0.2.8")  # never evicted: nothing to write
    assert node.take_changes().counts == {}
    node.success(USER, "192.0.2.1")  # memory has no counter for the pair; the database has its row
    changes = node.take_changes()
    assert changes.counts == {("pair", USER, "192.0.2.1"): None}
    await records.save(changes)
    assert [r[:3] for r in await _rows(store_db)] == [("account", USER, ""), ("client", "", "192.0.2.1")]
    node.success(USER, "192.0.2.1")  # deleted once: the next success writes nothing
    assert node.take_changes().counts == {}
    clock.now += 1
    for i in range(2):  # two more evictions; other's pair goes, and stays gone past forget_after
        clock.now += 1
        node.failure(f"spray{i}@ch-test.mssante.fr", f"198.51.100.{10 + i}")
    clock.now += 600  # other's row is pruned by now: its success has nothing to clear
    node.success("other@ch-test.mssante.fr", "198.51.100.1")
    assert ("pair", "other@ch-test.mssante.fr", "198.51.100.1") not in node.take_changes().counts


async def test_a_load_that_left_rows_out_makes_successes_delete_their_pair_rows(store_db: Database) -> None:
    clock = Clock()
    records = LoginRecords(store_db)
    node = lockout(clock)
    node.failure(USER, "192.0.2.1")
    await records.save(node.take_changes())
    complete = lockout(clock)
    assert await records.load(complete) == 3
    complete.success("someone@ch-test.mssante.fr", "192.0.2.2")
    assert complete.take_changes().counts == {}  # everything was loaded: no row can be behind a success
    exact = Lockout(threshold=3, wide_threshold=6, base_delay=10, clock=clock, wall=clock.wall, max_entries=3)
    assert await records.load(exact) == 3  # every row, to the last one the limit allows
    exact.success("someone@ch-test.mssante.fr", "192.0.2.2")
    assert exact.take_changes().counts == {}
    small = Lockout(threshold=3, wide_threshold=6, base_delay=10, clock=clock, wall=clock.wall, max_entries=1)
    assert await records.load(small) == 1
    small.success("someone@ch-test.mssante.fr", "192.0.2.2")
    assert small.take_changes().counts == {("pair", "someone@ch-test.mssante.fr", "192.0.2.2"): None}
