"""Login lock-out: growing delays after repeated failures, without letting a stranger lock a user out.

Implementation notes
- Three counters. (account, client address): the usual guesser, locked after `threshold` failures.
  Client address alone: one address guessing many accounts, locked after `wide_threshold` (higher: a
  hospital's users share one NAT address, and their typos must not lock the whole site out). Account
  alone: a guesser spreading over many addresses, locked after `wide_threshold` — but that lock does
  not apply to an address the account logged in from successfully within `known_for`, so a stranger
  who knows an address cannot lock its owner out of their usual places (OWASP "account lockout" DoS).
  A client address is an IPv4 address or an IPv6 /64 (`client_address`): one subscriber's share.
- A lock is checked before any password check, so a locked-out guesser gets no signal and costs no
  argon2. Past its threshold, each further failure locks the key for base × 2^(n − threshold) seconds,
  capped at `max_delay`. A counter is forgotten `forget_after` seconds after its last failure.
- A success clears the pair's counter only: an attacker with an account of their own must not reset
  their address's counter by logging in between guesses, and the owner's login must not free a
  distributed guesser from the account's lock.
- Memory is bounded: past `max_entries` counters the unlocked ones are dropped oldest first, and each
  account remembers at most `KNOWN_PER_ACCOUNT` good addresses (least recently used dropped).
- Counters live in the node's memory, and the database keeps a copy (gateway.store.logins): a node writes
  the counters its own attempts changed, in the background within about half a second, and a starting
  node reads them back, so a restart does not forgive a guesser. Nodes sharing a PostgreSQL database also
  tell each other their failures and successes at once (gateway.store.notify, channel `mssgw_login`) and
  each applies the others' to its own counters, so a guesser spread over the nodes behind a balancer meets
  one budget (give or take the attempts in flight during the few milliseconds an event takes to cross).
  A success writes nothing unless it clears a pair counter memory holds, or one memory evicted while
  its row may remain (the evicted pairs are remembered, bounded by `max_entries`): then it deletes the
  pair's row, so that a restart cannot bring back a count the login cleared. After a start that left
  rows out (or once that memory overflows), every success deletes its pair's row for `forget_after`.
- An operator's `mssgw mailbox unlock` deletes the rows. On PostgreSQL it also tells every node
  (NOTIFY `u` on `mssgw_login`), which drops those counters from memory at once. On SQLite (one node)
  the node reads the attempt's counters again before judging it, those whose last failure and last
  reading are both over `CONFIRM_AFTER` seconds old (a read per counter at most that often): a missing
  row is an unlock there, since this node writes every counter it keeps, except the ones still to be
  written (left alone) and the keys the database cannot hold (never read). A reading is kept only if
  no attempt changed the counter meanwhile.
- The clock is injectable for tests; the database holds POSIX times (`wall`), memory monotonic ones.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.store.notify import Outbox

KNOWN_PER_ACCOUNT = 16
LOGIN_CHANNEL = "mssgw_login"  # gateway.store.notify's channel for these events
CONFIRM_AFTER = 5.0  # seconds: on SQLite a counter is read again from the database at most this often
KNOWN_REFRESH = 86400.0  # a known address's last success is written again at most this often

Key = tuple[str, str, str]
"""A counter as the database keys it: (kind, account, client address); see gateway.store.models.LoginFailure."""
Row = tuple[int, float, float]
"""A counter's failures, locked-until and last failure, in POSIX seconds."""
Read = Callable[[list[Key]], Awaitable[dict[Key, Row]]]


def client_address(ip: str) -> str:
    """The client a failure counts under. An IPv4 client seen through a dual-stack listener or a PROXY v2
    header (`::ffff:192.0.2.10`) counts as 192.0.2.10; an IPv6 client as its /64 (`2001:db8:1:2::/64`):
    a subscriber gets a /64 at least and may use any address of it (RFC 4941 privacy addresses), so
    counted per address a guesser would have 2^64 fresh counters. Anything else (a /64 already, as an
    unlock or another node gives it; no address) is kept as it is."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(addr), 64), strict=False))
    return ip


def storable(account: str, ip: str) -> bool:
    """Whether a counter's key fits the database (gateway.store.models.LoginFailure; PostgreSQL text
    refuses NUL): a login name can be anything, and the others stay in memory only."""
    return len(account) <= 320 and len(ip) <= 64 and "\0" not in account and "\0" not in ip


def key_parts(key: str) -> Key:
    """The database's form of a counter's key."""
    kind, _, rest = key.partition(":")
    if kind == "client":
        return kind, "", rest
    if kind == "pair":
        account, _, ip = rest.partition("\0")
        return kind, account, ip
    return kind, rest, ""


def key_of(kind: str, account: str, ip: str) -> str:
    return {"client": "client:" + ip, "pair": "pair:" + account + "\0" + ip}.get(kind, "account:" + account)


@dataclass
class Changes:
    """What this node's attempts changed since the last write: each counter's row (None: deleted) and
    each refreshed known address's last success, in POSIX seconds."""

    counts: dict[Key, Row | None] = field(default_factory=dict)
    known: dict[tuple[str, str], float] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.counts or self.known)


@dataclass
class _Count:
    failures: int = 0
    locked_until: float = 0.0
    last_failure: float = 0.0
    confirmed: float = 0.0  # when last read again from the database (wait)


class Lockout:
    def __init__(
        self,
        *,
        threshold: int = 5,
        wide_threshold: int = 20,
        base_delay: float = 2.0,
        max_delay: float = 900.0,
        forget_after: float = 86400.0,
        known_for: float = 30 * 86400.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.threshold = threshold
        self.wide_threshold = max(wide_threshold, threshold)
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.known_for = known_for
        self.max_entries = max_entries
        self.clock = clock
        self.wall = wall
        self._counts: dict[str, _Count] = {}
        self._known: dict[str, OrderedDict[str, float]] = {}  # account -> client address -> last success
        self.outbox: Outbox | None = None  # set when other nodes are told (PgNoticeBridge)
        self.read: Read | None = None  # the database's copy of some counters (gateway.store.logins)
        self.changed = asyncio.Event()  # set when there are changes to write
        self._dirty: set[str] = set()  # counters changed by this node's attempts, not written yet
        self._dirty_known: set[tuple[str, str]] = set()
        # Pair counters memory dropped while the database may still hold them (evicted; until when): a
        # success deletes such a pair's row. Past the bound, or after a start that left rows out, every
        # success does so until `_partial_until`.
        self._evicted: OrderedDict[str, float] = OrderedDict()
        self._partial_until = -math.inf

    def _tell(self, kind: str, account: str | None, ip: str) -> None:
        if self.outbox is None or not storable("", ip) or "\t" in ip:
            return
        if account is not None and ("\t" in account or not storable(account, "")):
            # Not an account name (a tab would split the line; NUL fails the whole NOTIFY, with the events
            # sent alongside): a failure still counts for the client on the other nodes.
            if kind != "f":
                return
            account = None
        self.outbox.post(LOGIN_CHANNEL, f"{kind}\t{account or ''}\t{ip}")

    def told(self, line: str) -> None:
        """Apply another node's event (a line `_tell` made there, or an operator's unlock from
        gateway.store.logins); anything malformed is ignored."""
        kind, _, rest = line.partition("\t")
        account, sep, ip = rest.partition("\t")
        if not sep:
            return
        if kind == "u":
            self.forget(account or None, ip or None)
        elif not ip:
            return
        elif kind == "f":
            self._failure(account or None, ip)
        elif kind == "s" and account:
            self._success(account, ip)

    def forget(self, account: str | None, ip: str | None) -> None:
        """An operator's unlock: the account's counters (from every address) and the address's own."""
        if account is not None:
            account = account.lower()
            pairs = "pair:" + account + "\0"
            for key in [k for k in self._counts if k.startswith(pairs)]:
                del self._counts[key]
            self._counts.pop("account:" + account, None)
        if ip is not None:
            self._counts.pop("client:" + client_address(ip), None)

    @staticmethod
    def _keys(account: str | None, ip: str) -> list[tuple[str, int]]:
        """The counters a login attempt touches, each with its threshold kind ("pair" or "wide")."""
        ip = client_address(ip)
        keys = [("client:" + ip, 1)]
        if account is not None:
            keys += [("pair:" + account.lower() + "\0" + ip, 0), ("account:" + account.lower(), 1)]
        return keys

    def _threshold(self, wide: int) -> int:
        return self.wide_threshold if wide else self.threshold

    def _count(self, key: str, now: float) -> _Count | None:
        c = self._counts.get(key)
        if c is not None and c.locked_until <= now and now - c.last_failure >= self.forget_after:
            del self._counts[key]
            return None
        return c

    def known(self, account: str, ip: str) -> bool:
        known = self._known.get(account.lower())
        seen = known.get(client_address(ip)) if known is not None else None
        return seen is not None and self.clock() - seen < self.known_for

    def locked_for(self, account: str | None, ip: str) -> float:
        """Seconds until this attempt would be considered (0 when nothing applicable is locked)."""
        now = self.clock()
        wait = 0.0
        for key, _ in self._keys(account, ip):
            if key.startswith("account:") and account is not None and self.known(account, ip):
                continue  # the account's owner at one of their usual addresses
            c = self._count(key, now)
            if c is not None:
                wait = max(wait, c.locked_until - now)
        return max(wait, 0.0)

    def failure(self, account: str | None, ip: str) -> float:
        """Count a failure; returns the longest lock it starts that applies to this address (0 if none)."""
        self._tell("f", account, ip)
        longest = self._failure(account, ip)
        self._mark(key for key, _ in self._keys(account, ip))
        return longest

    def _failure(self, account: str | None, ip: str) -> float:
        now = self.clock()
        longest = 0.0
        for key, wide in self._keys(account, ip):
            c = self._count(key, now)
            if c is None:
                c = self._counts[key] = _Count()
                self._evicted.pop(key, None)  # memory holds it again: written, and cleared, as any other
            c.failures += 1
            c.last_failure = now
            threshold = self._threshold(wide)
            if c.failures >= threshold:
                delay = min(self.base_delay * 2 ** (c.failures - threshold), self.max_delay)
                c.locked_until = now + delay
                if not (key.startswith("account:") and account is not None and self.known(account, ip)):
                    longest = max(longest, delay)
        if len(self._counts) > self.max_entries:
            self._evict(now)
        return longest

    def success(self, account: str, ip: str) -> None:
        self._tell("s", account, ip)
        pair = self._keys(account.lower(), ip)[1][0]
        cleared = pair in self._counts or self._row_may_remain(pair)
        if self._success(account, ip):
            self._dirty_known.add((account.lower(), client_address(ip)))
            self.changed.set()
        if cleared:  # most logins follow no failure: nothing to write for them (an absent row: no-op)
            self._mark([pair])

    def _success(self, account: str, ip: str) -> bool:
        """Apply a success; whether the address's last success is worth writing (new, or stale)."""
        account, ip = account.lower(), client_address(ip)
        self._counts.pop(self._keys(account, ip)[1][0], None)  # the pair's
        known = self._known.setdefault(account, OrderedDict())
        now = self.clock()
        before = known.get(ip)
        known[ip] = now
        known.move_to_end(ip)
        while len(known) > KNOWN_PER_ACCOUNT:
            known.popitem(last=False)
        if len(self._known) > self.max_entries:
            # Oldest accounts first (dicts keep insertion order; re-inserted on each success).
            for stale in list(self._known)[: len(self._known) - self.max_entries]:
                del self._known[stale]
        else:
            self._known[account] = self._known.pop(account)
        return before is None or now - before >= KNOWN_REFRESH

    def _evict(self, now: float) -> None:
        free = sorted((c.last_failure, k) for k, c in self._counts.items() if c.locked_until <= now)
        for last_failure, key in free[: len(self._counts) - self.max_entries * 9 // 10]:
            del self._counts[key]
            if key.startswith("pair:"):  # its row stays until pruned, a day after its last failure
                self._evicted[key] = last_failure + self.forget_after
                self._evicted.move_to_end(key)
        while len(self._evicted) > self.max_entries:
            self._evicted.popitem(last=False)
            self.forgot_some(now)  # one forgotten: any pair's row may be left

    def _row_may_remain(self, pair: str) -> bool:
        """Whether the database may hold a row for this pair that memory has no counter for."""
        now = self.clock()
        until = self._evicted.pop(pair, None)
        return now < self._partial_until or (until is not None and now < until)

    def forgot_some(self, now: float | None = None) -> None:
        """Counters that may be in the database are not in memory, and which ones is not known: for as
        long as they may stay there (`forget_after`), every success deletes its pair's row blindly."""
        self._partial_until = (self.clock() if now is None else now) + self.forget_after

    # The database's copy (module notes).

    def _mark(self, keys: Iterable[str]) -> None:
        self._dirty.update(keys)
        self.changed.set()

    def take_changes(self) -> Changes:
        """The changes to write, forgotten here (`put_back` them if the write fails)."""
        offset = self.wall() - self.clock()
        changes = Changes()
        for key in self._dirty:
            c = self._counts.get(key)
            row = None if c is None else (c.failures, c.locked_until + offset, c.last_failure + offset)
            changes.counts[key_parts(key)] = row
        for account, ip in self._dirty_known:
            kept = self._known.get(account)
            seen = kept.get(ip) if kept is not None else None
            if seen is not None:
                changes.known[account, ip] = seen + offset
        self._dirty.clear()
        self._dirty_known.clear()
        self.changed.clear()
        return changes

    def put_back(self, changes: Changes) -> None:
        """Changes whose write failed: written with the next ones (memory's values then)."""
        self._dirty_known.update(changes.known)
        self._mark(key_of(*k) for k in changes.counts)

    def restore(self, counts: Iterable[tuple[Key, Row]], known: Iterable[tuple[str, str, float]]) -> None:
        """Counters and known addresses read from the database at start (POSIX times)."""
        offset = self.wall() - self.clock()
        for parts, row in counts:
            self._set(key_of(*parts), row, offset)
        for account, ip, seen in sorted(known, key=lambda k: k[2]):
            kept = self._known.setdefault(account, OrderedDict())
            kept[client_address(ip)] = seen - offset
            while len(kept) > KNOWN_PER_ACCOUNT:
                kept.popitem(last=False)

    def _set(self, key: str, row: Row | None, offset: float) -> None:
        if row is None:
            self._counts.pop(key, None)
        else:
            self._counts[key] = _Count(row[0], row[1] - offset, row[2] - offset)

    async def wait(self, account: str | None, ip: str) -> float:
        """`locked_for`, with the attempt's counters read again from the database first when neither their
        last failure nor their last reading is `CONFIRM_AFTER` old (an operator may have unlocked them; see
        the module notes)."""
        if self.read is not None:
            now = self.clock()
            stale: dict[str, tuple[int, float]] = {}
            for key, _ in self._keys(account, ip):
                c = self._counts.get(key)
                if (
                    c is not None
                    and key not in self._dirty
                    and now - max(c.last_failure, c.confirmed) >= CONFIRM_AFTER
                    and storable(*key_parts(key)[1:])
                ):
                    stale[key] = (c.failures, c.last_failure)
                    c.confirmed = now
            if stale:
                try:
                    found = await self.read([key_parts(key) for key in stale])
                except Exception:  # the database away for a moment: memory's counters stand
                    return self.locked_for(account, ip)
                offset = self.wall() - self.clock()
                for key, before in stale.items():
                    c = self._counts.get(key)
                    if c is not None and (c.failures, c.last_failure) == before:  # no attempt meanwhile
                        self._set(key, found.get(key_parts(key)), offset)
                        if (c := self._counts.get(key)) is not None:
                            c.confirmed = now
        return self.locked_for(account, ip)
