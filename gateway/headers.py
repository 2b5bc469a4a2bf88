"""A few header fields of a message, read exactly as the email package reads them in the whole header.

The hot paths need one or two fields (Content-Type and Content-Transfer-Encoding for S/MIME's forms, the
Message-ID of every APPEND), but the email package parses every field it is given. `fields_of` hands
it only the lines of the wanted fields, cut where it would end the header: the same `Message` as the
whole header's for those fields. `field_value` reads one field's text without the email package at
all (its fixed cost alone is about 35 µs, most of an APPEND's 41 µs Message-ID read). tests/test_headers.py
compares both with the whole header's parse on generated headers.

The email package's rules followed here (email.feedparser, Python 3.11):
- lines end in CRLF, CR or LF; the first line that is neither a field (name and colon), a continuation
  (leading space or tab) nor an mbox "From " line ends the header; an empty line is such a line;
- a continuation belongs to the field before it, unless a "From " line or a line starting with a colon
  came in between (those end the field before them and start none: the continuation is dropped);
- a field's name is what comes before its first colon, case-insensitive but otherwise exact.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32

# email.feedparser's headerRE: a field name and a colon, a continuation, or an mbox "From " line.
_HEADER_LINE = re.compile(rb"From |[\041-\071\073-\176]*:|[\t ]")
_BLANKS = (b" ", b"\t")  # a line starting with one continues the field before it
_EMPTY_LINE = re.compile(rb"\n[\r\n]|\r\r")  # a line end, then another: "\r\n\r" holds "\n\r"


def header_end(message: bytes) -> int:
    """An index no earlier than the end of the header block: the first empty line starts by then. A
    line end (CRLF, CR, LF) followed by CR or LF is one; keeping one octet of the pair keeps that end."""
    end = _EMPTY_LINE.search(message)  # one scan that stops there (three finds would each read the body)
    return end.start() + 1 if end else len(message)


def _lines(message: bytes, names: Collection[bytes]) -> list[bytes]:
    """The lines (each with its end) of the fields named in `names` (field names: lower case, no blank),
    in order."""
    kept: list[bytes] = []
    keep = False
    for line in message[: header_end(message)].splitlines(keepends=True):  # \r\n, \r or \n, as it splits
        if not _HEADER_LINE.match(line):
            break
        if line[:1] not in _BLANKS:
            # A "From " line or ":..." starts no field but ends the one before it: neither name is wanted.
            keep = line.split(b":", 1)[0].lower() in names
        if keep:
            kept.append(line)
    return kept


def fields_of(message: bytes, names: Collection[bytes]) -> Message:
    """The header fields named in `names` (lower case) of `message`, as the email package (compat32) reads
    them in the whole header."""
    kept = _lines(message, names)  # each with its own line end, as folded
    if kept and not kept[-1].endswith((b"\n", b"\r")):
        kept.append(b"\r\n")
    return BytesHeaderParser(policy=compat32).parsebytes(b"".join(kept) + b"\r\n")


def field_value(message: bytes, name: bytes) -> str | None:
    """What `email.message.Message.get` returns for the field `name` (lower case) of the whole header under
    compat32, when that is text: the first such field's value after its colon and leading blanks, its
    continuation lines as they are, its final line end removed. None when there is no such field or the
    value holds non-ASCII octets (compat32 gives a Header object for those)."""
    lines = _lines(message, (name,))
    if not lines:
        return None
    value = [lines[0].split(b":", 1)[1].lstrip(b" \t")]
    for line in lines[1:]:
        if line[:1] not in _BLANKS:
            break  # the first field of that name counts
        value.append(line)
    try:
        return b"".join(value).decode("ascii").rstrip("\r\n")
    except UnicodeDecodeError:
        return None
