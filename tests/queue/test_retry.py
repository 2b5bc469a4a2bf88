"""The queue's retry schedule: parsing, the delay sequence, giving up at the maximum age, jitter."""

from __future__ import annotations

import itertools
import random
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.queue.retry import (
    DEFAULT_MAX_AGE,
    DEFAULT_SCHEDULE,
    RetrySchedule,
    format_duration,
    parse_duration,
)

S = timedelta(seconds=1)
M = timedelta(minutes=1)
H = timedelta(hours=1)
D = timedelta(days=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1m,5m,15m,1h,4h", (1 * M, 5 * M, 15 * M, 1 * H, 4 * H)),
        (" 30s , 2m ,1d ", (30 * S, 2 * M, 1 * D)),
        ("5m,5m,1h", (5 * M, 5 * M, 1 * H)),
        ("1d", (1 * D,)),
        ("90m", (90 * M,)),
        ("45s,5d", (45 * S, 5 * D)),
        ("007m", (7 * M,)),
    ],
)
def test_parse_vectors(text: str, expected: tuple[timedelta, ...]) -> None:
    schedule = RetrySchedule.parse(text)
    assert schedule.intervals == expected
    assert schedule.max_age == timedelta(days=5)
    assert schedule.jitter == 0.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the retry schedule is empty"),
        ("  ", "the retry schedule is empty"),
        ("1m,,5m", "retry schedule item 2: empty interval"),
        ("1m,", "retry schedule item 2: empty interval"),
        ("0s", "retry schedule item 1: interval '0s' is zero"),
        ("1m,00h", "retry schedule item 2: interval '00h' is zero"),
        ("-5m", "retry schedule item 1: interval '-5m' has a sign: intervals are positive whole numbers with a unit"),
        ("+5m", "retry schedule item 1: interval '+5m' has a sign: intervals are positive whole numbers with a unit"),
        ("5", "retry schedule item 1: interval '5' has no unit (s, m, h or d)"),
        ("1m,5w", "retry schedule item 2: interval '5w' has an unknown unit 'w' (use s, m, h or d)"),
        ("5M", "retry schedule item 1: interval '5M' has an unknown unit 'M' (use s, m, h or d)"),
        ("5min", "retry schedule item 1: interval '5min' has an unknown unit 'min' (use s, m, h or d)"),
        (
            "1.5h",
            "retry schedule item 1: interval '1.5h' is not a whole number followed by a unit (s, m, h or d),"
            " e.g. 90m rather than 1.5h",
        ),
        (
            "1h30m",
            "retry schedule item 1: interval '1h30m' is not a whole number followed by a unit (s, m, h or d),"
            " e.g. 90m rather than 1.5h",
        ),
        (
            "5 m",
            "retry schedule item 1: interval '5 m' is not a whole number followed by a unit (s, m, h or d),"
            " e.g. 90m rather than 1.5h",
        ),
        (
            "m",
            "retry schedule item 1: interval 'm' is not a whole number followed by a unit (s, m, h or d),"
            " e.g. 90m rather than 1.5h",
        ),
        ("5m,1m", "the retry schedule decreases: interval 2 (1m) is shorter than interval 1 (5m)"),
        ("1m,1h,59m", "the retry schedule decreases: interval 3 (59m) is shorter than interval 2 (1h)"),
        ("1h,6d", "interval 2 (6d) is longer than the maximum age 5d: it could never be used"),
        ("99999999999d", "retry schedule item 1: interval '99999999999d' is too long"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=r".") as info:
        RetrySchedule.parse(text)
    assert str(info.value) == message


def test_parse_options_are_validated() -> None:
    with pytest.raises(ValueError, match=r".") as info:
        RetrySchedule.parse("1m", max_age=timedelta(0))
    assert str(info.value) == "max_age 0:00:00 is not positive"
    with pytest.raises(ValueError, match=r".") as info:
        RetrySchedule.parse("1m", jitter=0.6)
    assert str(info.value) == "jitter 0.6 is not between 0 and 0.5"
    with pytest.raises(ValueError, match=r".") as info:
        RetrySchedule.parse("1m", jitter=-0.1)
    assert str(info.value) == "jitter -0.1 is not between 0 and 0.5"
    with pytest.raises(ValueError, match=r".") as info:
        RetrySchedule.parse("2h", max_age=timedelta(hours=1))
    assert str(info.value) == "interval 1 (2h) is longer than the maximum age 1h: it could never be used"
    with pytest.raises(ValueError, match=r".") as info:
        RetrySchedule(())
    assert str(info.value) == "the retry schedule is empty"


def test_str_is_canonical() -> None:
    assert str(RetrySchedule.parse("60s,90s,120m,24h")) == "1m,90s,2h,1d"
    assert str(RetrySchedule.parse(DEFAULT_SCHEDULE)) == "1m,5m,15m,1h,4h"


@pytest.mark.parametrize(
    ("delta", "text"),
    [(S, "1s"), (59 * S, "59s"), (60 * S, "1m"), (90 * S, "90s"), (H, "1h"), (36 * H, "36h"), (2 * D, "2d")],
)
def test_format_duration(delta: timedelta, text: str) -> None:
    assert format_duration(delta) == text
    assert parse_duration(text) == delta


def test_format_duration_refuses_fractions_and_zero() -> None:
    with pytest.raises(ValueError, match=r"is not a positive whole number of seconds"):
        format_duration(timedelta(milliseconds=1500))
    with pytest.raises(ValueError, match=r"is not a positive whole number of seconds"):
        format_duration(timedelta(0))


def test_next_delay_sequence_repeats_the_last_interval() -> None:
    schedule = RetrySchedule.parse("1m,5m,15m,1h,4h")
    assert [schedule.next_delay(n) for n in range(1, 9)] == [1 * M, 5 * M, 15 * M, 1 * H, 4 * H, 4 * H, 4 * H, 4 * H]


def test_attempts_must_be_positive() -> None:
    schedule = RetrySchedule.parse("1m")
    with pytest.raises(ValueError, match=r".") as info:
        schedule.next_delay(0)
    assert str(info.value) == "attempts is 0: the first attempt is made on arrival, so it is at least 1"
    with pytest.raises(ValueError, match=r"age -1 day, 23:59:59 is negative"):
        schedule.next_delay(1, age=-S)


def test_nominal_ages() -> None:
    schedule = RetrySchedule.parse("1m,5m,15m,1h,4h")
    assert [schedule.nominal_age(n) for n in range(1, 8)] == [
        timedelta(0),
        1 * M,
        6 * M,
        21 * M,
        81 * M,
        81 * M + 4 * H,
        81 * M + 8 * H,
    ]


def test_gives_up_at_max_age_nominally() -> None:
    schedule = RetrySchedule.parse("1m,5m,15m,1h,4h")
    offsets = schedule.attempt_offsets()
    # 0, 1m, 6m, 21m, 81m, then every 4 h while the next attempt is at most 5 days after arrival.
    assert offsets[:5] == [timedelta(0), 1 * M, 6 * M, 21 * M, 81 * M]
    assert len(offsets) == 34
    assert offsets[-1] == 81 * M + 29 * 4 * H == timedelta(days=4, hours=21, minutes=21)
    assert schedule.next_delay(33) == 4 * H
    assert schedule.next_delay(34) is None
    assert schedule.next_delay(1000) is None


def test_gives_up_on_real_age() -> None:
    schedule = RetrySchedule.parse("1m,5m")
    # The next attempt may land exactly on max_age, not one microsecond later.
    assert schedule.next_delay(2, age=DEFAULT_MAX_AGE - 5 * M) == 5 * M
    assert schedule.next_delay(2, age=DEFAULT_MAX_AGE - 5 * M + timedelta(microseconds=1)) is None
    # A real age beyond the nominal one (queue stopped for a day) ends retries sooner.
    assert schedule.next_delay(3, age=DEFAULT_MAX_AGE) is None
    assert schedule.next_delay(3, age=timedelta(0)) == 5 * M


def test_custom_max_age() -> None:
    schedule = RetrySchedule.parse("10m,30m", max_age=timedelta(hours=1))
    assert schedule.attempt_offsets() == [timedelta(0), 10 * M, 40 * M]
    assert schedule.next_delay(3) is None


def test_jitter_matches_a_seeded_rng_exactly() -> None:
    schedule = RetrySchedule.parse("1m,5m,15m,1h,4h", jitter=0.1)
    expected_rng = random.Random(42)
    factor = expected_rng.uniform(0.9, 1.1)
    delay = schedule.next_delay(5, rng=random.Random(42))
    assert delay == timedelta(microseconds=round(4 * 3600 * 10**6 * factor))
    assert delay != 4 * H
    # Same seed, same sequence: tests and replays are reproducible.
    a, b = random.Random(7), random.Random(7)
    assert [schedule.next_delay(n, rng=a) for n in range(1, 6)] == [schedule.next_delay(n, rng=b) for n in range(1, 6)]


def test_jitter_bounds_and_spread() -> None:
    schedule = RetrySchedule.parse("1m,4h", jitter=0.1)
    rng = random.Random(2024)
    delays = [schedule.next_delay(2, age=timedelta(0), rng=rng) for _ in range(2000)]
    values = [d for d in delays if d is not None]
    assert len(values) == 2000
    assert min(values) >= timedelta(hours=3.6)
    assert max(values) <= timedelta(hours=4.4)
    # The whole band is used, not a sliver of it.
    assert min(values) < timedelta(hours=3.62)
    assert max(values) > timedelta(hours=4.38)


class _FixedUniform(random.Random):
    """An rng whose `uniform` always returns the top (or bottom) of the band."""

    def __init__(self, top: bool) -> None:
        super().__init__(0)
        self.top = top
        self.calls = 0

    def uniform(self, a: float, b: float) -> float:
        self.calls += 1
        return b if self.top else a


def test_jitter_counts_for_giving_up() -> None:
    schedule = RetrySchedule.parse("4h", jitter=0.1)
    age = DEFAULT_MAX_AGE - 4 * H
    high, low = _FixedUniform(top=True), _FixedUniform(top=False)
    assert schedule.next_delay(10, age=age, rng=high) is None  # 4.4 h would outstay max_age
    assert schedule.next_delay(10, age=age, rng=low) == timedelta(hours=3.6)
    assert (high.calls, low.calls) == (1, 1)


def test_no_jitter_draws_nothing() -> None:
    rng = _FixedUniform(top=True)
    assert RetrySchedule.parse("4h").next_delay(1, rng=rng) == 4 * H
    assert rng.calls == 0


def test_attempt_offsets_ignore_jitter() -> None:
    plain = RetrySchedule.parse("1h,1d")
    jittered = RetrySchedule.parse("1h,1d", jitter=0.2)
    assert (
        jittered.attempt_offsets()
        == plain.attempt_offsets()
        == [timedelta(0), H, H + D, H + 2 * D, H + 3 * D, H + 4 * D]
    )


@settings(deadline=None)
@given(
    st.lists(st.integers(min_value=10, max_value=7200), min_size=1, max_size=8),
    st.integers(min_value=7200, max_value=10 * 86400),
)
def test_schedules_never_outstay_max_age(minutes: list[int], max_age_minutes: int) -> None:
    steps = sorted(minutes)
    schedule = RetrySchedule.parse(",".join(f"{m}m" for m in steps), max_age=timedelta(minutes=max_age_minutes))
    assert schedule.intervals == tuple(timedelta(minutes=m) for m in steps)
    offsets = schedule.attempt_offsets()
    assert offsets[0] == timedelta(0)
    assert offsets[-1] <= schedule.max_age
    assert all(b > a for a, b in itertools.pairwise(offsets))
    assert schedule.next_delay(len(offsets), age=offsets[-1]) is None
    assert RetrySchedule.parse(str(schedule), max_age=schedule.max_age) == schedule
