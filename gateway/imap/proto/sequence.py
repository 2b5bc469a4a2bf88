"""IMAP sequence sets (RFC 3501 §9 `sequence-set`): parsing, resolving against a mailbox, compressing.

Implementation notes
- `*` is kept as None until `resolve(largest)` replaces it with the largest number in use (the last
  message's sequence number, or the highest UID). A range is unordered: `5:2` is `2:5` (RFC 3501 §9).
- `resolve` returns sorted, merged, inclusive ranges, never the numbers themselves: `UID FETCH 1:*` on a
  mailbox with large UIDs must not enumerate four billion integers. `select` intersects a set with the
  sorted UIDs (or sequence numbers) that exist, by bisection per range.
- `n:*` with n above the largest value still includes the largest one (RFC 3501 §6.4.8, UID ranges): the
  range becomes `largest:n`. With an empty mailbox `largest` is 0 and `*` resolves to 0, which no
  message has; `select` then returns nothing for it.
- Numbers are nz-number, 1 to 4294967295 (RFC 3501 §9 `nz-number`, unsigned 32-bit). `$` (RFC 5182
  SEARCHRES) is not supported and is refused with its own message.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["MAX_NUMBER", "SequenceSet"]

MAX_NUMBER = 4294967295  # RFC 3501 §9 `nz-number`, unsigned 32-bit

# RFC 3501 §9: seq-number = nz-number / "*"; seq-range = seq-number ":" seq-number;
# sequence-set = (seq-number / seq-range) *("," sequence-set)
_SEQ_NUMBER = rb"(?:[1-9][0-9]{0,9}|\*)"
_SEQUENCE_SET = re.compile(rb"%s(?::%s)?(?:,%s(?::%s)?)*\Z" % ((_SEQ_NUMBER,) * 4))

Bound = int | None  # None is "*"


def _show(text: bytes) -> str:
    shown = "".join(chr(c) if 0x20 < c < 0x7F else "?" for c in text[:40])
    return shown + ("..." if len(text) > 40 else "")


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """A parsed sequence set: ranges as written, `None` standing for `*` (single numbers are n:n)."""

    ranges: tuple[tuple[Bound, Bound], ...]

    @classmethod
    def parse(cls, text: bytes | str) -> SequenceSet:
        """Parse `1,3:5,*`; raise ValueError("invalid sequence set ...") with the text shown."""
        raw = text.encode("ascii", "replace") if isinstance(text, str) else text
        if raw[:1] == b"$":
            raise ValueError("SEARCHRES ($) is not supported")
        if _SEQUENCE_SET.match(raw) is None:
            raise ValueError(f"invalid sequence set {_show(raw)}")
        ranges: list[tuple[Bound, Bound]] = []
        for item in raw.split(b","):
            first, _, last = item.partition(b":")
            low = None if first == b"*" else int(first)
            high = low if not last else (None if last == b"*" else int(last))
            for number in (low, high):
                if number is not None and number > MAX_NUMBER:
                    raise ValueError(f"invalid sequence set {_show(raw)}")
            ranges.append((low, high))
        return cls(tuple(ranges))

    @classmethod
    def from_numbers(cls, numbers: Iterable[int]) -> SequenceSet:
        """The shortest set of ranges holding exactly these numbers (each >= 1)."""
        ranges: list[tuple[Bound, Bound]] = []
        for number in sorted(set(numbers)):
            if number < 1:
                raise ValueError(f"not a message number or UID: {number}")
            if ranges and ranges[-1][1] == number - 1:
                ranges[-1] = (ranges[-1][0], number)
            else:
                ranges.append((number, number))
        if not ranges:
            raise ValueError("a sequence set cannot be empty")
        return cls(tuple(ranges))

    def __str__(self) -> str:
        def one(bound: Bound) -> str:
            return "*" if bound is None else str(bound)

        return ",".join(one(low) if low == high else f"{one(low)}:{one(high)}" for low, high in self.ranges)

    @property
    def has_star(self) -> bool:
        return any(bound is None for pair in self.ranges for bound in pair)

    @property
    def highest_explicit(self) -> int:
        """The largest number written (0 if only `*`): a sequence number above the mailbox size is an error."""
        return max((bound for pair in self.ranges for bound in pair if bound is not None), default=0)

    def resolve(self, largest: int) -> tuple[tuple[int, int], ...]:
        """Sorted, merged, inclusive (low, high) ranges, with `*` = `largest`."""
        ends = ((largest if low is None else low, largest if high is None else high) for low, high in self.ranges)
        pairs = sorted((min(a, b), max(a, b)) for a, b in ends)
        merged: list[tuple[int, int]] = []
        for low, high in pairs:
            if merged and low <= merged[-1][1] + 1:
                if high > merged[-1][1]:
                    merged[-1] = (merged[-1][0], high)
            else:
                merged.append((low, high))
        return tuple(merged)

    def contains(self, number: int, largest: int) -> bool:
        return any(low <= number <= high for low, high in self.resolve(largest))

    def select(self, existing: Sequence[int], largest: int | None = None) -> list[int]:
        """The members of `existing` (sorted ascending, e.g. a mailbox's UIDs) that the set names.

        `largest` defaults to the last of `existing` (0 when empty).
        """
        if largest is None:
            largest = existing[-1] if existing else 0
        out: list[int] = []
        for low, high in self.resolve(largest):
            out.extend(existing[bisect.bisect_left(existing, low) : bisect.bisect_right(existing, high)])
        return out
