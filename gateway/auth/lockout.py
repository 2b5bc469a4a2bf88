"""Login lock-out: growing delays after repeated failures, per account and per client address.

Implementation notes
- Two independent counters: one per account (someone guessing one user's password from many
  addresses) and one per client address (one address guessing many users). Either being locked refuses
  the attempt before any password check, so a locked-out guesser gets no signal and costs no argon2.
- After `threshold` failures, each further failure locks the key for base × 2^(n − threshold) seconds,
  capped at `max_delay`. A success clears the account's counter and the address's.
- Counters live in the node's memory: a restart forgives, which bounds the damage an attacker can do
  by locking real users out. Several nodes each count separately (documented limit).
- The clock is injectable for tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Count:
    failures: int = 0
    locked_until: float = 0.0


class Lockout:
    def __init__(
        self,
        *,
        threshold: int = 5,
        base_delay: float = 2.0,
        max_delay: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.clock = clock
        self._counts: dict[str, _Count] = {}

    @staticmethod
    def account_key(address: str) -> str:
        return "account:" + address.lower()

    @staticmethod
    def client_key(ip: str) -> str:
        return "client:" + ip

    def locked_for(self, *keys: str) -> float:
        """Seconds until every given key is free again (0 when none is locked)."""
        now = self.clock()
        return max((max(0.0, c.locked_until - now) for k in keys if (c := self._counts.get(k))), default=0.0)

    def failure(self, *keys: str) -> float:
        """Count a failure against each key; returns the longest lock it starts (0 below the threshold)."""
        now = self.clock()
        longest = 0.0
        for key in keys:
            c = self._counts.setdefault(key, _Count())
            c.failures += 1
            if c.failures >= self.threshold:
                delay = min(self.base_delay * 2 ** (c.failures - self.threshold), self.max_delay)
                c.locked_until = now + delay
                longest = max(longest, delay)
        return longest

    def success(self, *keys: str) -> None:
        for key in keys:
            self._counts.pop(key, None)
