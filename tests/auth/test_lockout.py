"""Lockout: which counters lock what, how long, and for whom (no password checks: the counters alone)."""

from __future__ import annotations

from gateway.auth.lockout import KNOWN_PER_ACCOUNT, Lockout

USER = "secretariat@ch-test.mssante.fr"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lockout(clock: Clock, **kw: float) -> Lockout:
    return Lockout(threshold=3, wide_threshold=6, base_delay=10, max_delay=100, clock=clock, **kw)  # type: ignore[arg-type]


def test_one_account_from_one_address_locks_that_pair_with_doubling_delays() -> None:
    clock = Clock()
    lo = lockout(clock)
    assert [lo.failure(USER, "192.0.2.1") for _ in range(5)] == [0.0, 0.0, 10.0, 20.0, 40.0]
    assert lo.locked_for(USER, "192.0.2.1") == 40.0
    assert lo.locked_for(USER.upper(), "192.0.2.1") == 40.0  # addresses compare without case
    assert lo.locked_for(USER, "192.0.2.2") == 0.0  # elsewhere: free
    assert [lo.failure(USER, "192.0.2.1") for _ in range(3)] == [80.0, 100.0, 100.0]  # capped at max_delay


def test_one_address_guessing_many_accounts_is_locked_at_the_wide_threshold() -> None:
    clock = Clock()
    lo = lockout(clock)
    locks = [lo.failure(f"user{n}@ch-test.mssante.fr", "192.0.2.1") for n in range(7)]
    assert locks == [0.0] * 5 + [10.0, 20.0]
    assert lo.locked_for("someone-else@ch-test.mssante.fr", "192.0.2.1") == 20.0
    assert lo.locked_for(None, "192.0.2.1") == 20.0  # certificate logins too
    assert lo.locked_for("user0@ch-test.mssante.fr", "192.0.2.9") == 0.0


def test_a_success_clears_the_pair_but_not_the_address() -> None:
    clock = Clock()
    lo = lockout(clock)
    for _ in range(2):
        lo.failure(USER, "192.0.2.1")
        lo.failure("other@ch-test.mssante.fr", "192.0.2.1")
    lo.success(USER, "192.0.2.1")  # 4 address failures stay counted
    assert lo.failure(USER, "192.0.2.1") == 0.0  # the pair starts again from 1
    assert lo.failure("third@ch-test.mssante.fr", "192.0.2.1") == 10.0  # the address's 6th


def test_the_account_wide_lock_spares_the_owners_known_addresses() -> None:
    clock = Clock()
    lo = lockout(clock)
    lo.success(USER, "192.0.2.1")
    for n in range(6):
        lo.failure(USER, f"203.0.113.{n}")
    assert lo.locked_for(USER, "198.51.100.7") == 10.0
    assert lo.locked_for(USER, "192.0.2.1") == 0.0
    assert lo.failure(USER, "192.0.2.1") == 0.0  # a typo at home: no lock for the owner there
    assert lo.known(USER.upper(), "192.0.2.1")
    clock.now += 30 * 86400.0  # a known address is known for 30 days after its last success
    assert not lo.known(USER, "192.0.2.1")


def test_counters_are_forgotten_a_day_after_their_last_failure() -> None:
    clock = Clock()
    lo = lockout(clock)
    lo.failure(USER, "192.0.2.1")
    lo.failure(USER, "192.0.2.1")
    clock.now += 86399.0
    assert lo.failure(USER, "192.0.2.1") == 10.0  # still counted: the third
    clock.now += 86400.0
    assert lo.failure(USER, "192.0.2.1") == 0.0  # forgotten: the first again


def test_memory_stays_bounded_under_spraying() -> None:
    clock = Clock()
    lo = lockout(clock, max_entries=1000)
    for n in range(5000):
        lo.failure(f"user{n}@ch-test.mssante.fr", f"10.0.{n // 256}.{n % 256}")
        clock.now += 0.001
    assert len(lo._counts) <= 1000
    for n in range(KNOWN_PER_ACCOUNT + 5):
        lo.success(USER, f"192.0.2.{n}")
    assert not lo.known(USER, "192.0.2.0")  # the least recently used dropped
    assert lo.known(USER, f"192.0.2.{KNOWN_PER_ACCOUNT + 4}")
