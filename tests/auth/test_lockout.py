"""Lockout: which counters lock what, how long, and for whom (no password checks: the counters alone)."""

from __future__ import annotations

from gateway.auth.lockout import KNOWN_PER_ACCOUNT, KNOWN_REFRESH, Changes, Lockout, key_of, key_parts

USER = "secretariat@ch-test.mssante.fr"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lockout(clock: Clock, **kw: float) -> Lockout:
    # The wall clock runs 5,000,000 s ahead of the monotonic one: the database's copy is in wall time.
    return Lockout(
        threshold=3, wide_threshold=6, base_delay=10, max_delay=100, clock=clock, wall=lambda: clock.now + 5e6, **kw
    )  # type: ignore[arg-type]


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
    # The evicted pairs, remembered to clear their rows, are bounded too; past that, successes clear blindly.
    assert len(lo._evicted) <= 1000
    lo.take_changes()
    lo.success("bystander@ch-test.mssante.fr", "192.0.2.200")  # never failed: a row may be left all the same
    assert lo.take_changes().counts == {("pair", "bystander@ch-test.mssante.fr", "192.0.2.200"): None}
    for n in range(KNOWN_PER_ACCOUNT + 5):
        lo.success(USER, f"192.0.2.{n}")
    assert not lo.known(USER, "192.0.2.0")  # the least recently used dropped
    assert lo.known(USER, f"192.0.2.{KNOWN_PER_ACCOUNT + 4}")


def test_keys_have_a_database_form_and_back() -> None:
    for key, parts in [
        ("client:192.0.2.1", ("client", "", "192.0.2.1")),
        ("pair:" + USER + "\0" + "2001:db8::1", ("pair", USER, "2001:db8::1")),
        ("account:" + USER, ("account", USER, "")),
    ]:
        assert key_parts(key) == parts
        assert key_of(*parts) == key


def test_changes_are_this_nodes_attempts_in_wall_time_and_taken_once() -> None:
    clock = Clock()
    lo = lockout(clock)
    for _ in range(3):
        lo.failure(USER, "192.0.2.1")
    lo.told("f\tother@ch-test.mssante.fr\t192.0.2.9")  # another node's event: that node writes it
    assert lo.changed.is_set()
    changes = lo.take_changes()
    wall = 1000.0 + 5e6
    assert changes.counts == {
        ("client", "", "192.0.2.1"): (3, 0.0 + 5e6, wall),
        ("pair", USER, "192.0.2.1"): (3, wall + 10.0, wall),
        ("account", USER, ""): (3, 0.0 + 5e6, wall),
    }
    assert changes.known == {}
    assert not lo.changed.is_set()
    assert not lo.take_changes()

    clock.now += 1.0
    lo.success(USER, "192.0.2.1")  # the pair's counter goes, the address becomes known
    assert lo.take_changes() == Changes({("pair", USER, "192.0.2.1"): None}, {(USER, "192.0.2.1"): wall + 1.0})
    clock.now += 1.0
    lo.success(USER, "192.0.2.1")  # known already, seen a second ago, no failure to clear: nothing to write
    assert not lo.changed.is_set()
    assert not lo.take_changes()
    clock.now += KNOWN_REFRESH
    lo.success(USER, "192.0.2.1")
    assert lo.take_changes().known == {(USER, "192.0.2.1"): wall + 2.0 + KNOWN_REFRESH}


def test_changes_put_back_are_taken_again_with_memorys_values() -> None:
    clock = Clock()
    lo = lockout(clock)
    lo.failure(USER, "192.0.2.1")
    lo.success("owner@ch-test.mssante.fr", "192.0.2.2")
    failed = lo.take_changes()
    lo.put_back(failed)  # the write failed
    assert lo.changed.is_set()
    lo.failure(USER, "192.0.2.1")
    again = lo.take_changes()
    assert again.counts[("pair", USER, "192.0.2.1")] == (2, 5e6, 1000.0 + 5e6)
    assert again.known == failed.known


def test_restored_counters_lock_as_before_the_restart() -> None:
    clock = Clock()
    before = lockout(clock)
    before.success(USER, "192.0.2.1")
    for n in range(6):
        before.failure(USER, f"203.0.113.{n}")
    for _ in range(4):
        before.failure(USER, "198.51.100.7")
    saved = before.take_changes()
    clock.now += 5.0  # the restart
    after = lockout(clock)
    after.restore(
        [(k, row) for k, row in saved.counts.items() if row is not None],
        [(a, ip, seen) for (a, ip), seen in saved.known.items()],
    )
    assert after.locked_for(USER, "198.51.100.7") == before.locked_for(USER, "198.51.100.7") == 95.0
    assert after.locked_for(USER, "192.0.2.1") == 0.0  # the owner's known address is still spared
    assert after.failure(USER, "198.51.100.7") == 100.0  # the account's 11th failure: capped, counted on


def test_an_ipv6_client_counts_as_its_64_and_its_owner_is_known_across_it() -> None:
    """One subscriber's /64 is one client: a guesser moving through it meets one budget, and an owner whose
    privacy address changed (RFC 4941) is still at a known address; an IPv4-mapped client is its IPv4."""
    clock = Clock()
    lo = lockout(clock)
    locks = [lo.failure(f"user{n}@ch-test.mssante.fr", f"2001:db8:1:2::{n + 1:x}") for n in range(7)]
    assert locks == [0.0] * 5 + [10.0, 20.0]
    assert lo.locked_for("someone@ch-test.mssante.fr", "2001:db8:1:2:ffff::9") == 20.0
    assert lo.locked_for("someone@ch-test.mssante.fr", "2001:db8:1:3::1") == 0.0
    lo.success(USER, "2001:db8:5:6::aaaa")
    assert lo.known(USER, "2001:db8:5:6:1234:5678:9abc:def0")
    assert not lo.known(USER, "2001:db8:5:7::aaaa")
    assert lo.failure("x@ch-test.mssante.fr", "::ffff:c000:207") == 0.0  # as a PROXY v2 header gives it
    assert lo.take_changes().counts[("client", "", "192.0.2.7")] is not None
