"""FETCH data of one parsed message: ENVELOPE, BODY, BODYSTRUCTURE (RFC 3501 §7.4.2) and the octets
of BODY[section]<partial> (RFC 3501 §6.4.5, RFC 9051 §6.4.5).

Implementation notes
- A `ParsedMessage` is built once per message and caches its ENVELOPE and BODY/BODYSTRUCTURE.
- `SectionSpec` is the section of BODY[...] / BODY.PEEK[...] / BINARY[...] after protocol parsing:
  a part number (empty for the whole message) and an optional text specifier. It validates what the
  grammar forbids (RFC 3501 §9 `section-spec`): part numbers are positive, MIME needs a part number,
  HEADER.FIELDS(.NOT) needs at least one field name. A violation is a ValueError, a BAD for the client.
- Part numbers (RFC 3501 §6.4.5): a multipart's parts are 1, 2, ...; a non-multipart message or part
  has only part 1, itself; inside message/rfc822 the numbers continue in the encapsulated message
  (its body parts if multipart, else its part 1). Lookup is Dovecot's imap_msgpart_find.
- Results (all exact octets of the stored message):
  ""        the whole message              HEADER / TEXT   the header (with its empty line) / body
  n         the body of part n             n.MIME          the header of part n (RFC 2045 fields)
  n.HEADER / n.TEXT / n.HEADER.FIELDS...   of the message inside message/rfc822 part n
- A part that does not exist, or HEADER/TEXT/HEADER.FIELDS on a part that is not message/rfc822,
  gives the empty string (""), as Dovecot and most servers answer; RFC 3501 leaves it open and NIL
  breaks some clients. n.MIME of a message/rfc822 part is its own MIME header (Dovecot's choice).
- HEADER.FIELDS keeps the matching field lines as written (folding kept, names compared ASCII
  case-insensitively) in message order, then the header's empty line; HEADER.FIELDS.NOT the others.
  HEADER.FIELDS of the whole message ends with an empty line even when the header has none (RFC 3501
  §6.4.5: the blank line is included); otherwise an empty line is only returned when it is there.
  Inside message/rfc822 only that part's header is read (Dovecot reads on past a header that a
  boundary ends, into the following lines).
- Octets are returned as stored, NUL included. RFC 3501 §4.3 literals exclude NUL: the serialiser
  sends such data as literal8 (BINARY, RFC 3516) or maps NUL to 0x80 as Dovecot does. mssgw's SMTP
  content checks refuse NUL, so stored mail has none.
- `partial` is the <start.count> of RFC 3501 §6.4.5: a start past the end gives "".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gateway.imap.message.parser import MimePart, parse_parts
from gateway.imap.message.structure import BodyWriter, parse_envelope, write_envelope

TEXT_SPECIFIERS: Final = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"})


class ParsedMessage:
    """One message, parsed once: the raw octets and their MIME part tree."""

    __slots__ = ("_cache", "_root", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = bytes(raw)
        self._root: MimePart | None = None
        self._cache: dict[object, bytes] = {}

    @property
    def root(self) -> MimePart:
        """The part tree, parsed on first use: BODY[] and RFC822 need only the octets."""
        if self._root is None:
            self._root = parse_parts(self.raw)
        return self._root

    @property
    def size(self) -> int:
        """RFC822.SIZE (RFC 3501 §7.4.2): octets as stored."""
        return len(self.raw)

    def part(self, path: tuple[int, ...]) -> MimePart | None:
        """The part numbered `path` (RFC 3501 §6.4.5); () is the whole message."""
        part: MimePart | None = self.root
        for i, num in enumerate(path):
            if part is None:
                break
            more = i + 1 < len(path)
            if part.is_multipart():
                part = part.children[num - 1] if 1 <= num <= len(part.children) else None
            elif num != 1 or (more and not part.is_message_rfc822()):
                part = None
            if part is not None and more and part.is_message_rfc822():
                part = part.children[0]  # continue inside the encapsulated message
        return part


def parse(raw: bytes) -> ParsedMessage:
    """Parse a message; never raises, whatever the octets."""
    return ParsedMessage(raw)


def envelope(msg: ParsedMessage) -> bytes:
    """FETCH ENVELOPE (RFC 3501 §7.4.2) of the message, parenthesised."""
    key = "envelope"
    if key not in msg._cache:
        msg._cache[key] = b"(" + write_envelope(parse_envelope(msg.root.fields)) + b")"
    return msg._cache[key]


def bodystructure(msg: ParsedMessage, extensible: bool) -> bytes:
    """FETCH BODYSTRUCTURE (`extensible`, with extension data) or BODY (RFC 3501 §7.4.2), parenthesised."""
    key = ("bodystructure", extensible)
    if key not in msg._cache:
        msg._cache[key] = b"(" + BodyWriter(msg.raw, extensible).write(msg.root) + b")"
    return msg._cache[key]


@dataclass(frozen=True)
class SectionSpec:
    """A FETCH section: part number, text specifier, header field names (RFC 3501 §6.4.5)."""

    part: tuple[int, ...] = ()
    text: str | None = None  # None, "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT" or "MIME"
    fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if any(n < 1 for n in self.part):
            raise ValueError("section part numbers are positive")
        if self.text is not None and self.text not in TEXT_SPECIFIERS:
            raise ValueError(f"unknown section text {self.text!r}")
        if self.text == "MIME" and not self.part:
            raise ValueError("MIME needs a part number")
        if (self.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT")) != bool(self.fields):
            raise ValueError("field names go with HEADER.FIELDS and HEADER.FIELDS.NOT only")


def _header_lines(raw: bytes, part: MimePart, names: tuple[str, ...], exclude: bool, always_eoh: bool) -> bytes:
    wanted = {n.encode("utf-8", "surrogateescape").lower() for n in names}
    out = bytearray()
    for f in part.fields:
        if (f.name.lower() in wanted) != exclude:
            out += raw[f.raw_start : f.raw_end]
    if part.eoh is not None:
        out += raw[part.eoh[0] : part.eoh[1]]
    elif always_eoh:
        if out and out[-1] != 0x0A:
            out += b"\r\n"
        out += b"\r\n"
    return bytes(out)


def section(msg: ParsedMessage, spec: SectionSpec) -> bytes:
    """The octets of BODY[spec] (before any <partial>)."""
    raw = msg.raw
    if not spec.part:
        if spec.text is None:
            return raw
        root = msg.root
        if spec.text == "HEADER":
            return raw[: root.body_start]
        if spec.text == "TEXT":
            return raw[root.body_start :]
        exclude = spec.text == "HEADER.FIELDS.NOT"
        return _header_lines(raw, root, spec.fields, exclude, always_eoh=not exclude)
    part = msg.part(spec.part)
    if part is None:
        return b""
    if spec.text is None:
        return raw[part.body_start : part.end]
    if spec.text == "MIME":
        return raw[part.start : part.body_start]
    if not part.is_message_rfc822() or not part.children:
        return b""
    inner = part.children[0]
    if spec.text == "HEADER":
        return raw[inner.start : inner.body_start]
    if spec.text == "TEXT":
        return raw[inner.body_start : inner.end]
    return _header_lines(raw, inner, spec.fields, spec.text == "HEADER.FIELDS.NOT", always_eoh=False)


def partial(data: bytes, start: int, count: int) -> bytes:
    """<start.count> of a section (RFC 3501 §6.4.5): at most `count` octets from `start`."""
    if start < 0 or count < 0:
        raise ValueError("partial offsets are non-negative")
    return data[start : start + count]
