"""The database's copy of the login lock-out counters (gateway.auth.lockout): restarts do not forgive.

Implementation notes
- The counters themselves live in each node's memory, where every attempt reads them without a query.
  `keep()` writes the ones this node's attempts changed, batched (`WRITE_DELAY`), in one transaction;
  `load()` reads the current ones back at start. A node writes only its own attempts' changes: the
  other nodes' events (PostgreSQL NOTIFY) are written by the node that saw them.
- Nodes sharing a database overwrite a counter's row with their own copy (last writer wins): their
  copies agree to within the attempts in flight while an event crosses, so no merge is needed.
- Rows past their use are pruned (`PRUNE_EVERY`): a counter `forget_after` after its last failure and
  lock, a known address `known_for` after its last success, as the memory forgets them.
- Keys are untrusted input (a login name can be anything): a key longer than its column, or holding a
  NUL (PostgreSQL text refuses it), stays in memory only (lockout.storable).
- Rows are written in key order: two PostgreSQL nodes writing the same rows then take their locks in
  the same order and cannot deadlock.
- `unlock()` is the operator's: it deletes an account's counters (and a client address's) and, on
  PostgreSQL, tells the serving nodes in the same transaction (lockout.py's notes).
- `load()` takes the locked counters first, then the most recent: a flood of one-off names before a
  restart cannot push the real locks past `max_entries`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable

from gateway.audit.oplog import get_logger
from gateway.auth.lockout import LOGIN_CHANNEL, Changes, Key, Lockout, Row, client_address, storable
from gateway.store.db import Database

WRITE_DELAY = 0.5  # seconds: changes gathered into one write
RETRY = 5.0  # seconds before writing again after a failed write
PRUNE_EVERY = 3600.0

_UPSERT = (
    "INSERT INTO login_failures (kind, account, ip, failures, locked_until, last_failure)"
    " VALUES (:kind, :account, :ip, :failures, :locked_until, :last_failure)"
    " ON CONFLICT (kind, account, ip) DO UPDATE SET failures = excluded.failures,"
    " locked_until = excluded.locked_until, last_failure = excluded.last_failure"
)
_DELETE = "DELETE FROM login_failures WHERE kind = :kind AND account = :account AND ip = :ip"
_KNOWN = (
    "INSERT INTO login_known (account, ip, seen) VALUES (:account, :ip, :seen)"
    " ON CONFLICT (account, ip) DO UPDATE SET seen = excluded.seen"
)


def _key(kind: str, account: str, ip: str) -> dict[str, str]:
    return {"kind": kind, "account": account, "ip": ip}


class LoginRecords:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.log = get_logger(component="lockout")

    async def load(self, lockout: Lockout) -> int:
        """Give `lockout` the counters and known addresses still in use; how many counters."""
        now = lockout.wall()
        counts = await self.db.rows(
            "SELECT kind, account, ip, failures, locked_until, last_failure FROM login_failures"
            " WHERE last_failure >= :since OR locked_until > :now"
            " ORDER BY CASE WHEN locked_until > :now THEN 0 ELSE 1 END, last_failure DESC LIMIT :limit",
            {"since": now - lockout.forget_after, "now": now, "limit": lockout.max_entries + 1},
        )
        left_out = len(counts) > lockout.max_entries
        counts = counts[: lockout.max_entries]
        known = await self.db.rows(
            "SELECT account, ip, seen FROM login_known WHERE seen >= :since ORDER BY seen DESC LIMIT :limit",
            {"since": now - lockout.known_for, "limit": lockout.max_entries},
        )
        lockout.restore(
            (((r[0], r[1], r[2]), (int(r[3]), float(r[4]), float(r[5]))) for r in counts),
            ((r[0], r[1], float(r[2])) for r in known),
        )
        if left_out:
            lockout.forgot_some()
        return len(counts)

    async def read(self, keys: list[Key]) -> dict[Key, Row]:
        """The rows of these counters (absent: none)."""
        where = " OR ".join(f"(kind = :k{i} AND account = :a{i} AND ip = :i{i})" for i in range(len(keys)))
        params: dict[str, str] = {}
        for i, (kind, account, ip) in enumerate(keys):
            params |= {f"k{i}": kind, f"a{i}": account, f"i{i}": ip}
        rows = await self.db.rows(
            f"SELECT kind, account, ip, failures, locked_until, last_failure FROM login_failures WHERE {where}",  # noqa: S608 (placeholders only)
            params,
        )
        return {(r[0], r[1], r[2]): (int(r[3]), float(r[4]), float(r[5])) for r in rows}

    async def save(self, changes: Changes) -> None:
        """Write one batch of changes in one transaction."""
        upserts, deletes = [], []
        for (kind, account, ip), row in sorted(changes.counts.items(), key=lambda item: item[0]):
            if not storable(account, ip):
                continue
            if row is None:
                deletes.append(_key(kind, account, ip))
            else:
                failures, locked_until, last_failure = row
                upserts.append(
                    _key(kind, account, ip)
                    | {"failures": failures, "locked_until": locked_until, "last_failure": last_failure}
                )
        known = [
            {"account": a, "ip": ip, "seen": seen} for (a, ip), seen in sorted(changes.known.items()) if storable(a, ip)
        ]
        if not (upserts or deletes or known):
            return
        async with self.db.raw_writing() as tx:
            for sql, batch in ((_UPSERT, upserts), (_DELETE, deletes), (_KNOWN, known)):
                if batch:
                    await tx.execute(sql, batch)

    async def prune(self, lockout: Lockout, now: float | None = None) -> int:
        """Delete the rows memory would have forgotten; how many."""
        now = lockout.wall() if now is None else now
        async with self.db.raw_writing() as tx:
            gone = await tx.execute(
                "DELETE FROM login_failures WHERE last_failure < :since AND locked_until <= :now RETURNING 1",
                {"since": now - lockout.forget_after, "now": now},
            )
            gone += await tx.execute(
                "DELETE FROM login_known WHERE seen < :since RETURNING 1", {"since": now - lockout.known_for}
            )
        return len(gone)

    async def keep(self, lockout: Lockout) -> None:
        """For the node's lifetime: write `lockout`'s changes as they come, prune now and then. Cancelled,
        it writes what is left first."""
        if self.db.is_sqlite:  # on PostgreSQL an unlock is told over NOTIFY (lockout.py's notes)
            lockout.read = self.read
        pruned = time.monotonic()
        try:
            while True:
                with contextlib.suppress(TimeoutError):  # not wait_for (worker.py: cancellations)
                    async with asyncio.timeout(PRUNE_EVERY):
                        await lockout.changed.wait()
                await asyncio.sleep(WRITE_DELAY)
                if not await self._write(lockout):
                    await asyncio.sleep(RETRY)
                if time.monotonic() - pruned >= PRUNE_EVERY:
                    pruned = time.monotonic()
                    try:
                        await self.prune(lockout)
                    except Exception as exc:
                        self.log.warning("lock-out prune failed", error=type(exc).__name__)
        finally:
            await asyncio.shield(self._write(lockout))

    async def _write(self, lockout: Lockout) -> bool:
        changes = lockout.take_changes()
        if not changes:
            return True
        try:
            await self.save(changes)
        except asyncio.CancelledError:  # the node stops mid-write: the final write takes them
            lockout.put_back(changes)
            raise
        except Exception as exc:  # the database away for a moment: written with the next changes
            lockout.put_back(changes)
            self.log.warning("lock-out counters not written", error=type(exc).__name__)
            return False
        return True

    async def unlock(self, account: str, clients: Iterable[str] = ()) -> list[Key]:
        """Delete `account`'s counters (over every client address) and those of `clients`, and tell the
        serving nodes; the ones that were there."""
        account = account.lower()
        clients = [client_address(ip) for ip in clients]
        async with self.db.raw_writing() as tx:
            gone = await tx.execute(
                "DELETE FROM login_failures WHERE account = :account AND kind IN ('pair', 'account')"
                " RETURNING kind, account, ip",
                {"account": account},
            )
            for ip in clients:
                gone += await tx.execute(
                    "DELETE FROM login_failures WHERE kind = 'client' AND account = '' AND ip = :ip"
                    " RETURNING kind, account, ip",
                    {"ip": ip},
                )
            if not self.db.is_sqlite:  # delivered at commit (gateway.store.notify; lockout.Lockout.told)
                told = "\n".join([f"u\t{account}\t", *(f"u\t\t{ip}" for ip in clients)])
                await tx.execute("SELECT pg_notify(:channel, :payload)", {"channel": LOGIN_CHANNEL, "payload": told})
        return sorted((str(k), str(a), str(i)) for k, a, i in gone)
