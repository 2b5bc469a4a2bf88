"""IMAP response writing (RFC 3501 §7, §9): strings, lists, flags, dates, status responses. Bytes out.

Implementation notes
- A string is sent quoted only when every octet is printable US-ASCII (0x20-0x7E) and it is at most
  `MAX_QUOTED` octets; otherwise as a literal `{N}CRLF<octets>` (RFC 3501 §4.3). CR, LF, NUL and 8-bit
  octets therefore never appear in a quoted string. NUL cannot be sent at all (RFC 3501 §9 `CHAR8`
  excludes it from literals): ValueError, like every other value that cannot be represented.
- An astring is an atom when it is made of ASTRING-CHARs, is not empty and is not NIL (which a client
  reading an nstring would take for NIL); otherwise a string.
- Free text (after OK/NO/BAD/BYE, in `+` continuations) must be printable US-ASCII without a leading "[":
  the caller gets a ValueError for anything else rather than a reply that another line can be smuggled
  into (client input reaches reply texts only through `lexer.show`, which guarantees this).
- INTERNALDATE is `"dd-Mon-yyyy hh:mm:ss +zzzz"` with a space-padded day (RFC 3501 §9 `date-time`), in
  the datetime's own offset; a naive datetime is refused.
- Every response ends with CRLF.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterable
from typing import Literal

from gateway.imap.proto.command import BodySection, Partial, Section
from gateway.imap.proto.lexer import ASTRING_CHARS, ATOM_CHARS, TAG_CHARS
from gateway.imap.proto.sequence import SequenceSet

__all__ = [
    "MAX_QUOTED",
    "astring",
    "body_section_label",
    "continuation",
    "continuation_data",
    "date_time",
    "fetch_response",
    "flag_list",
    "literal",
    "mailbox",
    "nstring",
    "paren_list",
    "quoted",
    "sequence_set",
    "string",
    "tagged",
    "untagged",
    "untagged_status",
]

CRLF = b"\r\n"
MAX_QUOTED = 1024
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_QUOTABLE = frozenset(range(0x20, 0x7F))
_FLAG_ATOM = ATOM_CHARS

Status = Literal["OK", "NO", "BAD"]
UntaggedStatus = Literal["OK", "NO", "BAD", "PREAUTH", "BYE"]


def _octets(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def quoted(value: str | bytes) -> bytes:
    """RFC 3501 §9 `quoted`; ValueError when the value has an octet outside 0x20-0x7E."""
    data = _octets(value)
    if not _QUOTABLE.issuperset(data):
        raise ValueError("only printable US-ASCII can be sent as a quoted string")
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def literal(value: str | bytes) -> bytes:
    """RFC 3501 §9 `literal = "{" number "}" CRLF *CHAR8`; ValueError on NUL."""
    data = _octets(value)
    if b"\x00" in data:
        raise ValueError("NUL cannot be sent in an IMAP literal")
    return b"{%d}\r\n" % len(data) + data


def string(value: str | bytes) -> bytes:
    """RFC 3501 §9 `string`: quoted when safe and short, a literal otherwise."""
    data = _octets(value)
    if len(data) <= MAX_QUOTED and _QUOTABLE.issuperset(data):
        return quoted(data)
    return literal(data)


def nstring(value: str | bytes | None) -> bytes:
    """RFC 3501 §9 `nstring = string / nil`."""
    return b"NIL" if value is None else string(value)


def astring(value: str | bytes) -> bytes:
    """RFC 3501 §9 `astring = 1*ASTRING-CHAR / string`."""
    data = _octets(value)
    if data and ASTRING_CHARS.issuperset(data) and data.upper() != b"NIL":
        return data
    return string(data)


def mailbox(name: str) -> bytes:
    """RFC 3501 §9 `mailbox` as sent on the wire (already modified UTF-7 unless UTF8=ACCEPT)."""
    return astring(name)


def paren_list(items: Iterable[bytes]) -> bytes:
    """`(a b c)`."""
    return b"(" + b" ".join(items) + b")"


def flag_list(flags: Iterable[str]) -> bytes:
    """RFC 3501 §9 `flag-list`: `(\\Seen $Label)`; ValueError on anything that is not a flag."""
    out: list[bytes] = []
    for flag in flags:
        data = _printable(flag) or b""
        name = data[1:] if data.startswith(b"\\") else data
        if data != b"\\*" and not (name and _FLAG_ATOM.issuperset(name)):
            raise ValueError(f"not an IMAP flag: {flag!r}")
        out.append(data)
    return paren_list(out)


def sequence_set(numbers: Iterable[int]) -> str:
    """The shortest sequence set naming these numbers: 1,2,3,5 -> `1:3,5` (COPYUID, ESEARCH ALL)."""
    return str(SequenceSet.from_numbers(numbers))


def date_time(value: dt.datetime) -> bytes:
    """RFC 3501 §9 `date-time`, quoted: `" 7-Jul-1996 02:44:25 -0700"`."""
    offset = value.utcoffset()
    if offset is None:
        raise ValueError("INTERNALDATE needs a timezone-aware datetime")
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    text = (
        f"{value.day:2d}-{_MONTHS[value.month - 1]}-{value.year:04d} "
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d} {sign}{hours:02d}{mins:02d}"
    )
    return b'"' + text.encode("ascii") + b'"'


def body_section_label(item: BodySection) -> bytes:
    """The name of a BODY[...] item in a FETCH response (RFC 3501 §7.4.2): `BODY[1.HEADER.FIELDS (FROM)]<0>`
    (BODY.PEEK answers as BODY; a partial gives only its origin octet)."""
    return b"BODY[" + _section_spec(item.section) + b"]" + _origin(item.partial)


def _section_spec(section: Section) -> bytes:
    spec = ".".join(str(part) for part in section.part)
    if section.text is not None:
        spec = f"{spec}.{section.text.value}" if spec else section.text.value
    out = spec.encode("ascii")
    if section.fields:
        out += b" " + paren_list(astring(name) for name in section.fields)
    return out


def _origin(partial: Partial | None) -> bytes:
    return b"" if partial is None else b"<%d>" % partial.start


def fetch_response(number: int, items: Iterable[tuple[bytes | str, bytes]]) -> bytes:
    """`* <n> FETCH (name value ...)` (RFC 3501 §7.4.2); values are already serialised."""
    body = b" ".join(_octets(name) + b" " + value for name, value in items)
    return b"* %d FETCH (" % number + body + b")" + CRLF


# -- status responses --------------------------------------------------------------------------------


def _printable(text: str) -> bytes | None:
    """The ASCII octets of `text` when it is non-empty printable US-ASCII, else None."""
    try:
        data = text.encode("ascii")
    except UnicodeEncodeError:
        return None
    return data if data and _QUOTABLE.issuperset(data) else None


def _text(text: str) -> bytes:
    """RFC 3501 §9 `text = 1*TEXT-CHAR`, printable US-ASCII, not starting with "[" (a code would be read)."""
    data = _printable(text)
    if data is None or data.startswith(b"["):
        raise ValueError(f"not a valid response text: {text!r}")
    return data


def printable_text(text: str) -> str:
    """`text` made a valid response text: each octet outside printable US-ASCII becomes "?", a leading "["
    is dropped. For refusals that may quote what a client sent: the reply must go out, not the session."""
    out = "".join(c if " " <= c <= "~" else "?" for c in text).lstrip("[")
    return out or "?"


def _code(code: str | None) -> bytes:
    """RFC 3501 §9 `"[" resp-text-code "]" SP`."""
    if code is None:
        return b""
    data = _printable(code)
    if data is None or b"]" in data:
        raise ValueError(f"not a valid response code: {code!r}")
    return b"[" + data + b"] "


def tagged(tag: str, status: Status, text: str, code: str | None = None) -> bytes:
    """`<tag> OK|NO|BAD [code] text` (RFC 3501 §7.1)."""
    tag_octets = _printable(tag)
    if tag_octets is None or not TAG_CHARS.issuperset(tag_octets):
        raise ValueError(f"not a valid tag: {tag!r}")
    return tag_octets + b" " + status.encode() + b" " + _code(code) + _text(text) + CRLF


def untagged_status(status: UntaggedStatus, text: str, code: str | None = None) -> bytes:
    """`* OK|NO|BAD|PREAUTH|BYE [code] text` (RFC 3501 §7.1)."""
    return b"* " + status.encode() + b" " + _code(code) + _text(text) + CRLF


def untagged(data: bytes | str) -> bytes:
    """`* <data>` (RFC 3501 §7.2-7.4): data already serialised (it may hold literals, hence CRLF inside)."""
    if isinstance(data, str):
        data = data.encode("ascii")
        if b"\r" in data or b"\n" in data:
            raise ValueError("untagged data given as text cannot hold CR or LF")
    return b"* " + data + CRLF


def continuation(text: str = "Ready") -> bytes:
    """`+ text` (RFC 3501 §7.5): the answer to a synchronising literal, or an IDLE `+ idling`."""
    return b"+ " + _text(text) + CRLF


def continuation_data(data: bytes) -> bytes:
    """`+ <base64>` (RFC 3501 §6.2.2): a SASL challenge; empty data gives `+ ` (RFC 4959 §3)."""
    return b"+ " + base64.b64encode(data) + CRLF
