"""Implementation notes: the queue's retry schedule (pure, no clock, no I/O).

- Configured as a comma-separated list of intervals, e.g. "1m,5m,15m,1h,4h": each item is a whole number and
  one unit, `s`, `m`, `h` or `d` (lower case; `1M` would read as months to some people, so it is refused).
  Items may be surrounded by spaces. Refused, each with its own ValueError text: an empty schedule or item, a
  missing or unknown unit, a sign, a fraction ("1.5h": write "90m"), zero, an interval longer than the maximum
  age (it could never be used), and a decreasing schedule. Equal neighbours are allowed ("5m,5m,1h": two quick
  retries); backoff never shrinks. RFC 5321 §4.5.4.1 asks for retry intervals of at least 30 minutes in
  general but welcomes more sophisticated strategies: the short first intervals of the default suit a closed
  trust space of known peers, and the schedule is the operator's to set.
- Attempt n (n ≥ 1 attempts already made, the first one on arrival) is followed by interval n, the last
  interval repeating. The queue gives up (`next_delay` returns None) when the next attempt would come later
  than `max_age` after arrival, so no message sits in the queue longer than `max_age` (default 5 days: RFC 5321
  §4.5.4.1 wants a give-up time of at least 4-5 days, and MSSanté messages should not sit longer). The age is
  the real one when the caller passes it (queue downtime, slow attempts), else the nominal one (the sum of the
  intervals already waited).
- Jitter: an optional fraction (0.1 = ±10 %) spreads retries of many messages queued together; each delay
  is multiplied by a uniform factor in [1 - jitter, 1 + jitter] drawn from the `rng` passed in (a seeded
  `random.Random` in tests, `random.SystemRandom` otherwise), to the microsecond. The give-up test uses the
  jittered delay, so a message never outstays `max_age` either way.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import timedelta

UNITS: dict[str, timedelta] = {
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
}
DEFAULT_SCHEDULE = "1m,5m,15m,1h,4h"
DEFAULT_MAX_AGE = timedelta(days=5)
DEFAULT_JITTER = 0.10
MAX_JITTER = 0.5

_ITEM = re.compile(r"([0-9]+)([A-Za-z]*)\Z")
_SYSTEM_RANDOM = random.SystemRandom()


def parse_duration(item: str) -> timedelta:
    """One interval such as "15m" (see the module notes); ValueError with the precise reason otherwise."""
    text = item.strip()
    if not text:
        raise ValueError("empty interval")
    if text[0] in "+-":
        raise ValueError(f"interval {text!r} has a sign: intervals are positive whole numbers with a unit")
    m = _ITEM.match(text)
    if not m:
        raise ValueError(
            f"interval {text!r} is not a whole number followed by a unit (s, m, h or d), e.g. 90m rather than 1.5h"
        )
    number, unit = m.groups()
    if not unit:
        raise ValueError(f"interval {text!r} has no unit (s, m, h or d)")
    if unit not in UNITS:
        raise ValueError(f"interval {text!r} has an unknown unit {unit!r} (use s, m, h or d)")
    value = int(number)
    if value == 0:
        raise ValueError(f"interval {text!r} is zero")
    try:
        return value * UNITS[unit]
    except OverflowError:
        raise ValueError(f"interval {text!r} is too long") from None


def format_duration(delta: timedelta) -> str:
    """The largest exact unit: 90 s → "90s", 3600 s → "1h"; inverse of `parse_duration` for whole seconds."""
    seconds = delta.total_seconds()
    if seconds <= 0 or seconds != int(seconds):
        raise ValueError(f"{delta} is not a positive whole number of seconds")
    whole = int(seconds)
    for unit in ("d", "h", "m"):
        size = int(UNITS[unit].total_seconds())
        if whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    intervals: tuple[timedelta, ...]
    max_age: timedelta = DEFAULT_MAX_AGE
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if not self.intervals:
            raise ValueError("the retry schedule is empty")
        if self.max_age <= timedelta(0):
            raise ValueError(f"max_age {self.max_age} is not positive")
        if not 0.0 <= self.jitter <= MAX_JITTER:
            raise ValueError(f"jitter {self.jitter} is not between 0 and {MAX_JITTER}")
        for n, interval in enumerate(self.intervals, start=1):
            if interval <= timedelta(0):
                raise ValueError(f"interval {n} ({interval}) is not positive")
            if interval > self.max_age:
                raise ValueError(
                    f"interval {n} ({_show(interval)}) is longer than the maximum age {_show(self.max_age)}:"
                    " it could never be used"
                )
            if n > 1 and interval < self.intervals[n - 2]:
                raise ValueError(
                    f"the retry schedule decreases: interval {n} ({_show(interval)}) is shorter than"
                    f" interval {n - 1} ({_show(self.intervals[n - 2])})"
                )

    @classmethod
    def parse(cls, text: str, *, max_age: timedelta = DEFAULT_MAX_AGE, jitter: float = 0.0) -> RetrySchedule:
        """From configuration text such as "1m,5m,15m,1h,4h"."""
        if not text.strip():
            raise ValueError("the retry schedule is empty")
        intervals: list[timedelta] = []
        for n, item in enumerate(text.split(","), start=1):
            try:
                intervals.append(parse_duration(item))
            except ValueError as exc:
                raise ValueError(f"retry schedule item {n}: {exc}") from None
        return cls(tuple(intervals), max_age=max_age, jitter=jitter)

    def __str__(self) -> str:
        return ",".join(_show(i) for i in self.intervals)

    def interval(self, attempts: int) -> timedelta:
        """The un-jittered wait after `attempts` attempts (the last interval repeats)."""
        if attempts < 1:
            raise ValueError(f"attempts is {attempts}: the first attempt is made on arrival, so it is at least 1")
        return self.intervals[min(attempts, len(self.intervals)) - 1]

    def nominal_age(self, attempts: int) -> timedelta:
        """Time from arrival to attempt number `attempts` when every wait is its un-jittered interval."""
        if attempts < 1:
            raise ValueError(f"attempts is {attempts}: the first attempt is made on arrival, so it is at least 1")
        waits = attempts - 1
        listed = self.intervals[: min(waits, len(self.intervals))]
        repeats = waits - len(listed)
        return sum(listed, timedelta(0)) + repeats * self.intervals[-1]

    def next_delay(
        self, attempts: int, *, age: timedelta | None = None, rng: random.Random | None = None
    ) -> timedelta | None:
        """How long to wait after `attempts` failed attempts before the next one; None = give up (the next
        attempt would be more than `max_age` after arrival). `age`: time since arrival now, if known."""
        delay = self.interval(attempts)
        if age is None:
            age = self.nominal_age(attempts)
        elif age < timedelta(0):
            raise ValueError(f"age {age} is negative")
        if self.jitter:
            factor = (rng or _SYSTEM_RANDOM).uniform(1.0 - self.jitter, 1.0 + self.jitter)
            delay = timedelta(microseconds=round(delay / timedelta(microseconds=1) * factor))
        if age + delay > self.max_age:
            return None
        return delay

    def attempt_offsets(self) -> list[timedelta]:
        """Nominal times of every attempt after arrival, the first (0) included, without jitter."""
        plain = RetrySchedule(self.intervals, max_age=self.max_age) if self.jitter else self
        offsets = [timedelta(0)]
        while (delay := plain.next_delay(len(offsets), age=offsets[-1])) is not None:
            offsets.append(offsets[-1] + delay)
        return offsets


def _show(delta: timedelta) -> str:
    try:
        return format_duration(delta)
    except ValueError:
        return str(delta)
