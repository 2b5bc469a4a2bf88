"""IMAP string output for ENVELOPE and BODYSTRUCTURE (RFC 3501 §4.3, §9 `string` / `nstring`).

Private to this package: the general response serialiser lives in gateway/imap/proto/serialize.py
(another piece of work); these helpers exist so that FETCH structures can be built now and compared
octet for octet with Dovecot, whose choices they copy (lib-imap/imap-quote.c):
- `nstring`: NIL for None; a quoted string unless the value has CR, LF, an 8-bit octet or more than
  four `"`/`\\` to escape, in which case a literal `{n}\\r\\n...` (RFC 3501 §4.3: quoted strings are
  7-bit and line-free). The first NUL ends the value, as C strings do.
- `nstring_nolf`: line breaks of folded header values removed first (a space inserted when the next
  line does not start with white space).
- `string_for_humans` (subjects and display names): runs of white space, CR and LF become one space,
  leading and trailing white space goes, NUL becomes 0x80; any change or any `"`/`\\`/8-bit octet
  gives a literal. A value of only white space is "".
"""

from __future__ import annotations

import re

_WHITE_SPACE_RUN = re.compile(rb"[ \t\r\n]+")
_MAX_ESCAPES = 4  # QUOTED_MAX_ESCAPE_CHARS: beyond this a literal is shorter


def _literal(value: bytes) -> bytes:
    return b"{%d}\r\n" % len(value) + value


def nstring(value: bytes | None) -> bytes:
    if value is None:
        return b"NIL"
    value = value.split(b"\0", 1)[0]
    escapes = value.count(b'"') + value.count(b"\\")
    if escapes > _MAX_ESCAPES or b"\r" in value or b"\n" in value or not value.isascii():
        return _literal(value)
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def string(value: bytes) -> bytes:
    return nstring(value)


def nstring_nolf(value: bytes | None) -> bytes:
    if value is None:
        return b"NIL"
    value = value.split(b"\0", 1)[0]
    if b"\r" not in value and b"\n" not in value:
        return nstring(value)
    out = bytearray()
    n = len(value)
    for i, c in enumerate(value):
        if c not in (0x0D, 0x0A):
            out.append(c)
        elif i + 1 < n and value[i + 1] not in (0x20, 0x09, 0x0D, 0x0A):
            out.append(0x20)  # keep words of two lines apart
    return nstring(bytes(out))


def string_for_humans(value: bytes) -> bytes:
    """imap_append_string_for_humans."""
    human = _WHITE_SPACE_RUN.sub(b" ", value).strip(b" ").replace(b"\0", b"\x80")
    if human == value and b'"' not in value and b"\\" not in value and value.isascii():
        return b'"' + value + b'"'
    if not human:
        return b'""'
    return _literal(human)
