"""Modified UTF-7 for mailbox names (RFC 3501 §5.1.3): encode and strictly decode.

Implementation notes
- Written here rather than taken from a library: the one well-kept implementation on PyPI is
  `imapclient.imap_utf7`, inside a client library we would add only for these ~60 lines, and its decoder is
  lenient (it accepts non-canonical forms, which would let two wire names denote one mailbox).
- Printable US-ASCII (0x20-0x7E) stands for itself, except "&" which is "&-"; every other run of characters
  is "&" + modified BASE64 (RFC 2045 alphabet with "," for "/", no "=" padding) of its UTF-16BE + "-".
- Decoding accepts only the canonical form, so that `encode(decode(w)) == w` for every accepted `w`:
  no 8-bit or control octets; no unterminated "&"; only the modified BASE64 alphabet; no leftover bits
  that are not zero, nor a length that leaves a partial octet or UTF-16 unit; no unpaired surrogate;
  no printable ASCII inside a shift sequence ("&ACE-" for "!"); no two shift sequences back to back
  ("&U,BTFw-&ZeVnLIqe-" must be "&U,BTF2XlZyyKng-"). Errors are ValueError with the offset.
"""

from __future__ import annotations

import base64
import binascii
import re

__all__ = ["decode", "encode"]

_B64 = re.compile(r"[A-Za-z0-9+,]*\Z")


def _printable(ch: str) -> bool:
    return 0x20 <= ord(ch) <= 0x7E


def _base64(raw: bytes) -> str:
    """Modified BASE64: "," for "/", no padding."""
    return base64.b64encode(raw).rstrip(b"=").replace(b"/", b",").decode("ascii")


def _encode_run(run: str) -> str:
    try:
        utf16 = run.encode("utf-16-be")
    except UnicodeEncodeError:
        raise ValueError("mailbox name holds an unpaired surrogate") from None
    return "&" + _base64(utf16) + "-"


def encode(name: str) -> str:
    """A mailbox name (any Unicode text) as modified UTF-7."""
    out: list[str] = []
    run_start = -1
    for i, ch in enumerate(name):
        if _printable(ch):
            if run_start >= 0:
                out.append(_encode_run(name[run_start:i]))
                run_start = -1
            out.append("&-" if ch == "&" else ch)
        elif run_start < 0:
            run_start = i
    if run_start >= 0:
        out.append(_encode_run(name[run_start:]))
    return "".join(out)


def decode(name: str) -> str:
    """A modified UTF-7 mailbox name as Unicode text; ValueError unless `name` is canonical (see notes)."""
    out: list[str] = []
    i = 0
    previous_end = -1  # where the last BASE64 shift sequence ended
    while i < len(name):
        ch = name[i]
        if not _printable(ch):
            raise ValueError(f"invalid character {ord(ch):#04x} at offset {i} in modified UTF-7")
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = name.find("-", i + 1)
        if end < 0:
            raise ValueError(f"unterminated & sequence at offset {i} in modified UTF-7")
        body = name[i + 1 : end]
        if not body:
            out.append("&")
            i = end + 1
            continue
        if previous_end == i:
            raise ValueError(f"adjacent & sequences at offset {i} in modified UTF-7")
        if _B64.match(body) is None:
            raise ValueError(f"invalid modified BASE64 in & sequence at offset {i}")
        try:
            raw = base64.b64decode(body.replace(",", "/") + "=" * (-len(body) % 4), validate=True)
        except binascii.Error:
            raise ValueError(f"invalid modified BASE64 length in & sequence at offset {i}") from None
        if _base64(raw) != body:
            raise ValueError(f"non-zero padding bits in & sequence at offset {i}")
        if len(raw) % 2:
            raise ValueError(f"incomplete UTF-16 in & sequence at offset {i}")
        try:
            text = raw.decode("utf-16-be")
        except UnicodeDecodeError:
            raise ValueError(f"invalid UTF-16 (unpaired surrogate) in & sequence at offset {i}") from None
        if any(_printable(c) for c in text):
            raise ValueError(f"printable US-ASCII encoded in & sequence at offset {i}")
        out.append(text)
        i = end + 1
        previous_end = i
    return "".join(out)
