"""Decoded text for SEARCH (RFC 3501 §6.4.4, RFC 9051 §6.4.4): header fields, Date, body text.

Implementation notes
- Header values are unfolded (RFC 5322 §2.2.3), RFC 2047 encoded words decoded (white space between
  adjacent encoded words dropped, §6.2), other octets read as UTF-8 (RFC 6532) with U+FFFD for
  invalid sequences. Unknown charsets in encoded words fall back to UTF-8 with replacement.
- `date` is the last Date: field (as ENVELOPE) parsed with RFC 5322 §3.3 rules by the standard
  library, None when absent or unparsable; SENTBEFORE/SENTON/SENTSINCE compare `date.date()`, the
  date in the sender's own time zone ("disregarding time and timezone", RFC 3501 §6.4.4).
- Body text is every text/* leaf part, including inside message/rfc822 attachments, with its
  Content-Transfer-Encoding undone (base64 and quoted-printable, leniently: garbage is skipped) and
  its charset decoded with replacement; undeclared, us-ascii and unknown charsets are read as UTF-8
  (a superset of US-ASCII, and what 8-bit mail mislabelled as us-ascii usually is). Non-text
  parts (attachments, S/MIME blobs) are not searched. Parts are joined by "\\n".
"""

from __future__ import annotations

import binascii
import datetime as dt
import email.utils
import re
from dataclasses import dataclass

from gateway.imap.message.fetch import ParsedMessage
from gateway.imap.message.parser import MimePart
from gateway.imap.message.structure import parse_content_info

_ENCODED_WORD = re.compile(rb"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(rb"(=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=)[ \t\r\n]+(?==\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=)")
_UNSAFE_CODECS = frozenset({"idna", "punycode", "raw_unicode_escape", "unicode_escape", "undefined"})


def decode_charset(data: bytes, charset: str | None) -> str:
    """`data` in `charset` (default: UTF-8), invalid octets replaced; unknown charsets read as UTF-8."""
    name = (charset or "").strip().lower()
    if name in ("", "us-ascii", "ascii", "utf8", "utf-8"):
        name = "utf-8"
    if name not in _UNSAFE_CODECS:
        try:
            return data.decode(name, "replace")
        except (LookupError, ValueError, TypeError):
            pass
    return data.decode("utf-8", "replace")


def _b64(data: bytes) -> bytes:
    cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
    cleaned = cleaned[: len(cleaned) - len(cleaned) % 4] if len(cleaned) % 4 == 1 else cleaned
    try:
        return binascii.a2b_base64(cleaned + b"=" * (-len(cleaned) % 4))
    except binascii.Error:
        return b""


def decode_transfer_encoding(data: bytes, encoding: bytes | None) -> bytes:
    """Undo a Content-Transfer-Encoding (RFC 2045 §6); identity for 7bit/8bit/binary/unknown."""
    enc = (encoding or b"").lower()
    if enc == b"base64":
        return _b64(data)
    if enc == b"quoted-printable":
        return binascii.a2b_qp(data)
    return data


def _decode_word(charset: bytes, kind: bytes, text: bytes) -> str:
    cs = charset.decode("ascii", "replace").split("*", 1)[0]  # RFC 2231 §5 language suffix
    raw = _b64(text) if kind in (b"b", b"B") else binascii.a2b_qp(text.replace(b"_", b" "))
    return decode_charset(raw, cs)


def decode_header_value(value: bytes) -> str:
    """An unfolded, RFC 2047-decoded header value as text."""
    value = value.replace(b"\r", b"").replace(b"\n", b"")
    value = _BETWEEN_WORDS.sub(rb"\1", value)
    out: list[str] = []
    pos = 0
    for m in _ENCODED_WORD.finditer(value):
        out.append(decode_charset(value[pos : m.start()], None))
        out.append(_decode_word(m.group(1), m.group(2), m.group(3)))
        pos = m.end()
    out.append(decode_charset(value[pos:], None))
    return "".join(out)


@dataclass(frozen=True)
class SearchHeaders:
    """The decoded header of a message, for SEARCH keys on header fields."""

    fields: tuple[tuple[str, str], ...]  # (lower-case field name, decoded value), in message order
    date: dt.datetime | None

    def get(self, name: str) -> list[str]:
        """Values of every field called `name` (SEARCH HEADER, RFC 3501 §6.4.4)."""
        lname = name.lower()
        return [v for n, v in self.fields if n == lname]

    def _joined(self, name: str) -> str:
        return ", ".join(self.get(name))

    @property
    def from_(self) -> str:
        return self._joined("from")

    @property
    def to(self) -> str:
        return self._joined("to")

    @property
    def cc(self) -> str:
        return self._joined("cc")

    @property
    def bcc(self) -> str:
        return self._joined("bcc")

    @property
    def subject(self) -> str:
        return self._joined("subject")

    @property
    def text(self) -> str:
        """All fields as "Name: value" lines, for SEARCH TEXT."""
        return "".join(f"{n}: {v}\n" for n, v in self.fields)


def _parse_date(value: str) -> dt.datetime | None:
    try:
        return email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def header_fields(msg: ParsedMessage) -> SearchHeaders:
    fields = tuple((f.name.decode("utf-8", "replace").lower(), decode_header_value(f.value)) for f in msg.root.fields)
    dates = [v for n, v in fields if n == "date"]
    return SearchHeaders(fields=fields, date=_parse_date(dates[-1]) if dates else None)


def _text_parts(root: MimePart) -> list[MimePart]:
    out: list[MimePart] = []
    stack = [root]
    while stack:
        part = stack.pop()
        if part.children:
            stack.extend(reversed(part.children))
        elif not part.is_multipart() and not part.is_message_rfc822():
            info = parse_content_info(part)
            if info.type is None or info.type.lower() == b"text":
                out.append(part)
    return out


def text_for_search(msg: ParsedMessage) -> str:
    """The decoded text of the message's text/* parts (SEARCH BODY; with `header_fields` for TEXT)."""
    texts = []
    for part in _text_parts(msg.root):
        info = parse_content_info(part)
        body = decode_transfer_encoding(msg.raw[part.body_start : part.end], info.transfer_encoding)
        charset = info.param(b"charset")
        texts.append(decode_charset(body, None if charset is None else charset.decode("ascii", "replace")))
    return "\n".join(texts)
