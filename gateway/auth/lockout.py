"""Login lock-out: growing delays after repeated failures, without letting a stranger lock a user out.

Implementation notes
- Three counters. (account, client address): the usual guesser, locked after `threshold` failures.
  Client address alone: one address guessing many accounts, locked after `wide_threshold` (higher: a
  hospital's users share one NAT address, and their typos must not lock the whole site out). Account
  alone: a guesser spreading over many addresses, locked after `wide_threshold` — but that lock does
  not apply to an address the account logged in from successfully within `known_for`, so a stranger
  who knows an address cannot lock its owner out of their usual places (OWASP "account lockout" DoS).
- A lock is checked before any password check, so a locked-out guesser gets no signal and costs no
  argon2. Past its threshold, each further failure locks the key for base × 2^(n − threshold) seconds,
  capped at `max_delay`. A counter is forgotten `forget_after` seconds after its last failure.
- A success clears the pair's counter only: an attacker with an account of their own must not reset
  their address's counter by logging in between guesses, and the owner's login must not free a
  distributed guesser from the account's lock.
- Memory is bounded: past `max_entries` counters the unlocked ones are dropped oldest first, and each
  account remembers at most `KNOWN_PER_ACCOUNT` good addresses (least recently used dropped).
- Counters live in the node's memory: a restart forgives. Nodes sharing a PostgreSQL database tell each
  other their failures and successes (gateway.store.notify, channel `mssgw_login`) and each applies the
  others' to its own counters, so a guesser spread over the nodes behind a balancer meets one budget
  (give or take the attempts in flight during the few milliseconds an event takes to cross).
- The clock is injectable for tests.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.store.notify import Outbox

KNOWN_PER_ACCOUNT = 16
LOGIN_CHANNEL = "mssgw_login"  # gateway.store.notify's channel for these events


@dataclass
class _Count:
    failures: int = 0
    locked_until: float = 0.0
    last_failure: float = 0.0


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
    ) -> None:
        self.threshold = threshold
        self.wide_threshold = max(wide_threshold, threshold)
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.known_for = known_for
        self.max_entries = max_entries
        self.clock = clock
        self._counts: dict[str, _Count] = {}
        self._known: dict[str, OrderedDict[str, float]] = {}  # account -> client address -> last success
        self.outbox: Outbox | None = None  # set when other nodes are told (PgNoticeBridge)

    def _tell(self, kind: str, account: str | None, ip: str) -> None:
        if self.outbox is not None and "\t" not in (account or "") and "\t" not in ip:
            self.outbox.post(LOGIN_CHANNEL, f"{kind}\t{account or ''}\t{ip}")

    def told(self, line: str) -> None:
        """Apply another node's event (a line `_tell` made there); anything malformed is ignored."""
        kind, _, rest = line.partition("\t")
        account, sep, ip = rest.partition("\t")
        if not sep or not ip:
            return
        if kind == "f":
            self._failure(account or None, ip)
        elif kind == "s" and account:
            self._success(account, ip)

    @staticmethod
    def _keys(account: str | None, ip: str) -> list[tuple[str, int]]:
        """The counters a login attempt touches, each with its threshold kind ("pair" or "wide")."""
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
        seen = known.get(ip) if known is not None else None
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
        return self._failure(account, ip)

    def _failure(self, account: str | None, ip: str) -> float:
        now = self.clock()
        longest = 0.0
        for key, wide in self._keys(account, ip):
            c = self._count(key, now)
            if c is None:
                c = self._counts[key] = _Count()
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
        self._success(account, ip)

    def _success(self, account: str, ip: str) -> None:
        account = account.lower()
        self._counts.pop(self._keys(account, ip)[1][0], None)  # the pair's
        known = self._known.setdefault(account, OrderedDict())
        known[ip] = self.clock()
        known.move_to_end(ip)
        while len(known) > KNOWN_PER_ACCOUNT:
            known.popitem(last=False)
        if len(self._known) > self.max_entries:
            # Oldest accounts first (dicts keep insertion order; re-inserted on each success).
            for stale in list(self._known)[: len(self._known) - self.max_entries]:
                del self._known[stale]
        else:
            self._known[account] = self._known.pop(account)

    def _evict(self, now: float) -> None:
        free = sorted((c.last_failure, k) for k, c in self._counts.items() if c.locked_until <= now)
        for _, key in free[: len(self._counts) - self.max_entries * 9 // 10]:
            del self._counts[key]
