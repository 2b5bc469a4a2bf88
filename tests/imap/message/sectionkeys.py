"""Section texts as recorded in tests/imap/corpus/dovecot-expected.json, mapped onto `SectionSpec`.

The protocol parser (gateway/imap/proto) will own the real mapping; this one only needs to read
the keys written by make_expected.py: `<section>` and `<section><start.count>`.
"""

from __future__ import annotations

import re

from gateway.imap.message import SectionSpec

_KEY = re.compile(
    r"(?P<num>\d+(?:\.\d+)*)?\.?(?P<text>[A-Z.]+)?(?: \((?P<fields>[^)]*)\))?(?:<(?P<start>\d+)\.(?P<count>\d+)>)?"
)


def spec_of(key: str) -> tuple[SectionSpec, tuple[int, int] | None]:
    m = _KEY.fullmatch(key)
    assert m is not None, key
    part = tuple(int(n) for n in m["num"].split(".")) if m["num"] else ()
    fields = tuple(m["fields"].split()) if m["fields"] else ()
    partial = (int(m["start"]), int(m["count"])) if m["start"] else None
    return SectionSpec(part, m["text"], fields), partial
