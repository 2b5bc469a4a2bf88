"""Message content checks and the changes a gateway makes to a message: sans-I/O, bytes in, bytes or verdicts out.

Implementation notes
- Input is what aiosmtpd hands `handle_DATA` as `envelope.original_content`: the DATA lines after
  dot-unstuffing (RFC 5321 §4.5.2), split on CRLF only, each line still ending in CRLF, without the final
  `.` line. A lone CR or LF is not a line end for aiosmtpd and stays inside the bytes.
- SMTP smuggling (CVE-2023-51764/51765/51766): a client hides a second message behind an end-of-data that
  some server takes for CRLF.CRLF (LF.LF, LF.CRLF, CRLF.LF, CR.CR, LF.CR...). RFC 5321 §2.3.8 allows CR and
  LF only together as CRLF, so `check_raw` refuses any bare CR or bare LF anywhere in the content: with
  aiosmtpd ending DATA on exactly CRLF.CRLF, every variant leaves a bare CR or LF behind and is refused.
  The test is three C-level counts: no bare CR or LF iff count(CR) == count(LF) == count(CRLF).
- Line length: at most 998 octets per line excluding CRLF (RFC 5322 §2.1.1; RFC 5321 §4.5.3.1.6 says 1000
  with CRLF). Checked without splitting the message: from each line start, the last LF inside the next
  998 + 2 octets is found with `bytes.rfind`; none means the line is too long. No copy, no per-line
  Python step. Measured on 25 MB of 78-octet lines: the scan 7 ms, the whole `check_raw` about 50 ms (the
  three counts dominate), `prepare_submission` and `prepare_relay` about 55-60 ms.
- NUL octets are refused (RFC 5322 §3.5 `text` excludes %d0; 8BITMIME data excludes it, RFC 2045 §2.8:
  we offer no BINARYMIME). The content must end with CRLF (RFC 5321 §4.1.1.4: the CRLF before `.`
  terminates the last line); aiosmtpd always delivers it so, the check guards other callers.
- Header block (RFC 5322 §2.1, §2.2): everything before the first empty line; a message may have no body
  and no empty line. Each header line is a field `name:` (ftext, RFC 5322 §3.6.8, no space before the
  colon) or a continuation starting with SP or HTAB (folding, §2.2.3); anything else is refused rather
  than guessed at (a line two parsers read differently is how From: spoofing starts). The header block
  must be UTF-8 (RFC 6532 §3.2) and is bounded: `MAX_HEADER_BYTES` octets, `MAX_HEADER_FIELDS` fields.
  A client's submission gets less (`TRACE_FIELDS` fields and `TRACE_BYTES` octets fewer): the fields this
  node and the next hops add (Received:, Date:, Message-ID:, Authentication-Results:) must not take an
  acknowledged message past the limits of the peer operator, which would then bounce it (found by
  tests/security's fuzz target: 1000 fields were accepted here and refused by the next hop).
- Field counts (RFC 5322 §3.6): exactly one From:, at most one Sender:, at most one Message-ID:. From: is
  a mailbox-list (no groups, §3.6.2); with several mailboxes a Sender: is required; Sender: is one mailbox.
  A Message-ID: must look like `<left@right>` (§3.6.4). Other fields are not judged.
- Addresses (facts for the identity policy): address lists are split at top-level commas and groups by a
  linear scanner here (respecting quoted strings, comments, angle brackets and domain literals). Each
  entry that is a plain `addr-spec` or `phrase <addr-spec>` of dot-atoms, without RFC 2047 encoded words,
  is read by a strict regular expression; every other entry is parsed by the standard library
  (`email.headerregistry`, the RFC 5322 parser of `email.policy.default`; Python 3.11's
  `email.utils.getaddresses` has no `strict=` mode and mis-splits hostile input, CVE-2023-27043). An entry
  is valid only when that parser reports no defect other than an obsolete-syntax one, yields at most one
  mailbox with a local part and a domain, and the address it yields appears verbatim in the entry: the
  parser silently decodes an RFC 2047 encoded word in a local part (`=?utf-8?q?bob?= @x.fr` gives
  `bob@x.fr`) and drops comments inside an addr-spec; such addresses are refused, not trusted. A field
  with any invalid entry contributes no address and is named in `Headers.invalid_fields`.
  Display names (RFC 2047 or not) are never facts. Addresses are returned as written (case kept).
- Parser cost is bounded: the standard parser is quadratic on some inputs (10 kB of `, , ,` takes a
  second, 100 kB a minute; about 0.13 ms for one ordinary entry), so it only ever sees one entry at a
  time, of at most `MAX_ENTRY_CHARS` characters, within a per-message budget (`SLOW_PARSE_BUDGET`; an
  entry of n characters costs 100 + n + n²/64, fitted on hostile entries; spent on From:, then Sender:,
  To:, Cc:; a field that would exceed it is invalid); a message with more than `MAX_ADDRESS_ENTRIES`
  address-list entries (empty ones included) is refused. Hostile header blocks measured: under 40 ms.
- Submission (RFC 6409 §8): Bcc: fields are removed with their continuation lines, at the byte level; a
  `Date:` (§8.2) and a `Message-ID:` (§8.3) are appended to the header block when missing; the Received:
  field is prepended. Nothing else changes: the other header lines and the body keep their exact bytes
  (S/MIME signs them later). An invalid Message-ID is refused rather than replaced, so that the only
  changes remain the ones listed here. Relay from a peer operator: same checks, Received: prepended only.
- Return-Path: (RFC 5321 §4.4) is the final delivery's to write, from the envelope: a message's own
  Return-Path: fields (which a sender "SHOULD NOT" send) are removed on submission and on relay, at the
  byte level as Bcc:, so that the one the mailbox shows is ours (Postfix drops them the same way).
- Received: (RFC 5321 §4.4): `from HELO ([ip])`, the TLS version and cipher in a comment, `by`, `with`
  ESMTPS/ESMTPSA (RFC 3848), `id`, `for` (pass one only for a single-recipient envelope: RFC 5321 §7.2),
  and the date; folded at clause boundaries, lines of at most 78 characters where the values allow, never
  998. The HELO name is the client's: used verbatim only when it is a domain name or an address literal,
  otherwise every character outside `[A-Za-z0-9.-]` becomes `_` (so no CR, LF, space, `(` or `;`).
- Replies: every refusal is `554 5.6.0` (RFC 5321 §4.3.2 lists 554 among the replies to end of data;
  RFC 3463 X.6.0 "other or undefined media error") with event `SMTP_CONTENT_REFUSED`. Reply texts never
  hold message content, only counts, line numbers and field names.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email import errors as email_errors
from email.header import decode_header, make_header
from email.headerregistry import Address, HeaderRegistry
from email.utils import format_datetime

from gateway.audit.events import AuditEvent
from gateway.policy.verdict import Reject

MAX_LINE = 998  # octets per line, CRLF excluded (RFC 5322 §2.1.1)
MAX_HEADER_BYTES = 256 * 1024  # octets in the header block, its last CRLF included
MAX_HEADER_FIELDS = 1000
TRACE_FIELDS = 50  # fields kept free at submission for those the hops add
TRACE_BYTES = 32 * 1024  # octets kept free at submission likewise
MAX_ADDRESS_ENTRIES = 1000  # comma-separated entries in From:, Sender:, To: and Cc: together
MAX_ENTRY_CHARS = 512  # characters in one address-list entry (display name and address)
SLOW_PARSE_BUDGET = 16384  # cost units (about 1.3 µs each) per message for the standard library's address parser

_CODE = 554
_ENHANCED = "5.6.0"


def _reject(text: str) -> Reject:
    return Reject(_CODE, _ENHANCED, text, AuditEvent.SMTP_CONTENT_REFUSED)


BARE_CR_LF = _reject("bare CR or LF in message content refused (RFC 5321 §2.3.8)")
UNTERMINATED = _reject("message content does not end with CRLF (RFC 5321 §4.1.1.4)")
NUL_OCTET = _reject("NUL octet in message content refused (RFC 5322 §3.5)")
HEADER_NOT_UTF8 = _reject("header block is not valid UTF-8 (RFC 6532 §3.2)")
HEADER_TOO_BIG = _reject(f"header block larger than {MAX_HEADER_BYTES} octets refused")
TOO_MANY_FIELDS = _reject(f"more than {MAX_HEADER_FIELDS} header fields refused")
SUBMISSION_HEADER_TOO_BIG = _reject(
    f"header block larger than {MAX_HEADER_BYTES - TRACE_BYTES} octets refused "
    f"(room is kept for the {TRACE_BYTES} octets of trace fields added on the way)"
)
SUBMISSION_TOO_MANY_FIELDS = _reject(
    f"more than {MAX_HEADER_FIELDS - TRACE_FIELDS} header fields refused "
    f"(room is kept for the {TRACE_FIELDS} trace fields added on the way)"
)
TOO_MANY_ENTRIES = _reject(f"more than {MAX_ADDRESS_ENTRIES} address list entries in the header fields refused")
FROM_INVALID = _reject("the From: header field is not a valid mailbox list (RFC 5322 §3.6.2)")
SENDER_INVALID = _reject("the Sender: header field is not a single valid mailbox (RFC 5322 §3.6.2)")
SENDER_REQUIRED = _reject("a From: header field with several mailboxes requires a Sender: field (RFC 5322 §3.6.2)")
MESSAGE_ID_INVALID = _reject("the Message-ID: header field is not a valid msg-id (RFC 5322 §3.6.4)")


def _line_too_long(line: int, max_line: int) -> Reject:
    return _reject(f"line {line} is longer than {max_line} octets (RFC 5322 §2.1.1)")


def _not_a_field(line: int) -> Reject:
    return _reject(f"header line {line} is not a header field (RFC 5322 §2.2)")


def _from_count(found: int) -> Reject:
    return _reject(f"exactly one From: header field required, found {found} (RFC 5322 §3.6)")


def _at_most_one(name: str, found: int) -> Reject:
    return _reject(f"at most one {name}: header field allowed, found {found} (RFC 5322 §3.6)")


# ---------------------------------------------------------------------------------------------- raw bytes


def check_raw(data: bytes, *, max_line: int = MAX_LINE) -> Reject | None:
    """None if `data` (DATA content as aiosmtpd delivers it) passes the octet-level checks, else the refusal.

    In order: bare CR or LF anywhere, content not ending with CRLF, NUL octets, a line longer than
    `max_line` octets (CRLF excluded; the reply names the first such line, counted from 1).
    """
    if max_line < 1:
        raise ValueError("max_line must be positive")
    crlf = data.count(b"\r\n")
    if data.count(b"\r") != crlf or data.count(b"\n") != crlf:
        return BARE_CR_LF
    if data and not data.endswith(b"\r\n"):
        return UNTERMINATED
    if b"\x00" in data:
        return NUL_OCTET
    line = _first_long_line(data, max_line)
    return _line_too_long(line, max_line) if line else None


def _first_long_line(data: bytes, max_line: int) -> int:
    """The number (from 1) of the first line longer than `max_line`, or 0.

    `data` has no bare CR or LF and ends with CRLF, so every LF ends a line. From a line start, the last
    LF within `max_line + 2` octets ends the last line that starts in the window; every line up to it
    fits. No LF there means the line at `pos` is longer than `max_line`.
    """
    window = max_line + 2
    n = len(data)
    pos = 0
    while n - pos > window:
        lf = data.rfind(b"\n", pos, pos + window)
        if lf < 0:
            return data.count(b"\n", 0, pos) + 1
        pos = lf + 1
    return 0


# ---------------------------------------------------------------------------------------------- header block

_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+:")


@dataclass(frozen=True, slots=True)
class _Field:
    name: str  # lower-case
    raw: bytes  # the whole field as in the message: its lines, each ending with CRLF
    colon: int  # offset of the colon in `raw`

    def value(self) -> str:
        """Unfolded (RFC 5322 §2.2.3), decoded, without surrounding white space."""
        return self.raw[self.colon + 1 :].replace(b"\r\n", b"").decode("utf-8").strip(" \t")


def _header_fields(data: bytes, *, submission: bool = False) -> tuple[list[_Field], int] | Reject:
    """The header fields of `data` (checked by `check_raw`) and the offset where its header block ends;
    within the submission limits when `submission`, else the full ones."""
    max_bytes = MAX_HEADER_BYTES - TRACE_BYTES if submission else MAX_HEADER_BYTES
    max_fields = MAX_HEADER_FIELDS - TRACE_FIELDS if submission else MAX_HEADER_FIELDS
    if data.startswith(b"\r\n"):
        return [], 0
    sep = data.find(b"\r\n\r\n", 0, max_bytes + 2)
    if sep >= 0:
        end = sep + 2
    elif len(data) <= max_bytes:
        end = len(data)  # no body
    else:
        return SUBMISSION_HEADER_TOO_BIG if submission else HEADER_TOO_BIG
    block = data[:end]
    if not block:
        return [], 0
    try:
        block.decode("utf-8")
    except UnicodeDecodeError:
        return HEADER_NOT_UTF8
    fields: list[_Field] = []
    lines: list[bytes] = []
    name = b""
    for number, line in enumerate(block[:-2].split(b"\r\n"), start=1):
        if line[:1] in (b" ", b"\t"):
            if not lines:
                return _not_a_field(number)
            lines.append(line)
            continue
        match = _FIELD_NAME.match(line)
        if match is None:
            return _not_a_field(number)
        if lines:
            fields.append(_Field(name.decode("ascii").lower(), b"\r\n".join(lines) + b"\r\n", len(name)))
        if len(fields) >= max_fields:
            return SUBMISSION_TOO_MANY_FIELDS if submission else TOO_MANY_FIELDS
        name = match.group()[:-1]
        lines = [line]
    if lines:
        fields.append(_Field(name.decode("ascii").lower(), b"\r\n".join(lines) + b"\r\n", len(name)))
    return fields, end


# ---------------------------------------------------------------------------------------------- addresses

# One address-list entry, as far as it goes without nesting: plain text, quoted strings, comments without
# nested comments, angle-addrs (which may hold a quoted local part or an obsolete route) and domain
# literals. Each alternative starts with a different character, so matching never backtracks.
_ENTRY = re.compile(
    r"""(?:[^"\\(),:;<>\[\]]+
        |"(?:[^"\\]|\\.)*"
        |\((?:[^()\\]|\\.)*\)
        |<(?:[^<>"\\]|"(?:[^"\\]|\\.)*")*>
        |\[(?:[^\[\]\\]|\\.)*\]
    )*""",
    re.VERBOSE | re.DOTALL,
)
_COMMENT_TOKEN = re.compile(r"(?:[^()\\]|\\.)*", re.DOTALL)
_MAX_COMMENT_DEPTH = 8
# A phrase (display name, group name): words and quoted strings, no specials, no controls (C0, DEL, C1).
_PHRASE_CHAR = r"[^\x00-\x08\x0a-\x1f\x7f-\x9f\"\\(),:;<>@\[\]]"
_QUOTED = r'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f-\x9f]|\\[^\x00-\x08\x0a-\x1f\x7f-\x9f])*"'
_PHRASE = re.compile(rf"(?:{_PHRASE_CHAR}|{_QUOTED})+")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDR = rf"{_ATEXT}+(?:\.{_ATEXT}+)*@{_LABEL}(?:\.{_LABEL})*"
# Fast path: `addr-spec` or `[phrase] <addr-spec>` where the phrase starts with a word (RFC 5322 §3.2.5).
_WORD_START = rf"(?:[^\x00-\x1f\x7f-\x9f\"\\(),:;<>@\[\] .]|{_QUOTED})"
_FAST = re.compile(
    rf"[ \t]*(?:(?P<bare>{_ADDR})|(?:{_WORD_START}(?:{_PHRASE_CHAR}|{_QUOTED})*)?(?<!\.)<(?P<angle>{_ADDR})>)[ \t]*"
)
_REGISTRY = HeaderRegistry()


class _TooManyEntries(Exception):
    pass


@dataclass(slots=True)
class _Budget:
    slow_cost: int = SLOW_PARSE_BUDGET
    entries: int = 0


@dataclass(frozen=True, slots=True)
class _Entry:
    text: str
    in_group: bool


def _match_end(pattern: re.Pattern[str], value: str, pos: int, end: int) -> int:
    match = pattern.match(value, pos, end)
    assert match is not None  # the patterns end in `*`: they always match
    return match.end()


def _skip_comment(value: str, pos: int, end: int) -> int:
    """The offset after the (possibly nested) comment opening at `pos`, or -1 if it does not close before `end`."""
    depth = 0
    while pos < end:
        char = value[pos]
        if char == "(":
            depth += 1
            if depth > _MAX_COMMENT_DEPTH:
                return -1
            pos += 1
        elif char == ")":
            depth -= 1
            pos += 1
            if depth == 0:
                return pos
        else:
            pos = _match_end(_COMMENT_TOKEN, value, pos, end)
            if pos < end and value[pos] == "\\":
                return -1  # a backslash whose escaped character is past `end`
    return -1


def _split_address_list(value: str, budget: _Budget) -> tuple[list[_Entry], bool] | None:
    """The non-empty entries of an address list and whether it holds a group; None if it is malformed.

    Raises `_TooManyEntries` past `MAX_ADDRESS_ENTRIES` entries in the message (empty ones included).
    """
    entries: list[_Entry] = []
    has_group = False
    in_group = False
    after_group = False  # just after a group's ";": only white space may come before "," or the end
    pos = start = 0
    n = len(value)

    def close(end: int) -> bool:
        nonlocal after_group
        text = value[start:end].strip(" \t")
        budget.entries += 1
        if budget.entries > MAX_ADDRESS_ENTRIES:
            raise _TooManyEntries
        if after_group:
            after_group = False
            return not text
        if text:
            entries.append(_Entry(text, in_group))
        return True

    while True:
        limit = min(n, start + MAX_ENTRY_CHARS + 1)  # scan no further than an entry may go
        pos = _match_end(_ENTRY, value, pos, limit)
        if pos - start > MAX_ENTRY_CHARS:
            return None
        if pos == n:
            break
        char = value[pos]
        if char == "(":
            pos = _skip_comment(value, pos, limit)
            if pos < 0:
                return None
        elif char == ",":
            if not close(pos):
                return None
            pos = start = pos + 1
        elif char == ":":
            name = value[start:pos].strip(" \t")
            if in_group or after_group or not _PHRASE.fullmatch(name):
                return None
            in_group = has_group = True
            pos = start = pos + 1
        elif char == ";":
            if not in_group or not close(pos):
                return None
            in_group, after_group = False, True
            pos = start = pos + 1
        else:
            return None  # unterminated quoted string, angle-addr or literal; stray `)`, `>`, `]` or `\`
    if in_group or not close(n):
        return None
    return entries, has_group


def _slow_parse_cost(text: str) -> int:
    """The standard parser's cost for `text`: a fixed part, then about quadratic (measured on hostile entries)."""
    return 100 + len(text) + len(text) * len(text) // 64


def _parse_entry(text: str, budget: _Budget) -> str | None:
    """The address of one entry; "" if the entry holds no address (a lone comment); None if invalid."""
    if "=?" not in text:
        fast = _FAST.fullmatch(text)
        if fast is not None:
            return fast.group("bare") or fast.group("angle")
    cost = _slow_parse_cost(text)
    if cost > budget.slow_cost:
        return None
    budget.slow_cost -= cost
    try:
        header = _REGISTRY("to", text)
    except Exception:  # the parser raises IndexError, ValueError, RecursionError... on hostile input
        return None
    if any(not isinstance(d, email_errors.ObsoleteHeaderDefect) for d in header.defects):
        return None
    # typeshed types the registry's result as BaseHeader; for "to" it is also an AddressHeader
    addresses: tuple[Address, ...] = getattr(header, "addresses", ())
    if not addresses:
        return ""
    if len(addresses) > 1:
        return None
    address = addresses[0]
    spec = address.addr_spec
    if not address.username or not address.domain or "=?" in spec or spec not in text:
        return None
    return spec


def _parse_address_field(value: str, *, groups: bool, budget: _Budget) -> list[str] | None:
    """The addresses of one address field; None if any part of it is invalid."""
    split = _split_address_list(value, budget)
    if split is None:
        return None
    entries, has_group = split
    if has_group and not groups:
        return None
    found: list[str] = []
    for entry in entries:
        address = _parse_entry(entry.text, budget)
        if address is None:
            return None
        if address:
            found.append(address)
    return found


# ---------------------------------------------------------------------------------------------- facts

_MESSAGE_ID = re.compile(r"<[^<>@\s\x00-\x1f\x7f]+@[^<>@\s\x00-\x1f\x7f]+>")


@dataclass(frozen=True, slots=True)
class Headers:
    """Facts about a message's header block, for the identity policy and the audit record.

    Address tuples hold the addr-specs of every field of that name, in order, as written (compare them
    with `directory.addresses.normalise`). A field that does not parse contributes nothing and its
    lower-case name is in `invalid_fields` (at most once, in the order from, sender, to, cc).
    `x_mss` maps each X-MSS-* field name, upper-cased, to its unfolded value; a repeated field's values
    are joined with ", " (so an ambiguous repeat never looks like one valid value).
    """

    from_fields: int
    from_: tuple[str, ...]
    sender_fields: int
    sender: tuple[str, ...]
    to: tuple[str, ...]
    cc: tuple[str, ...]
    invalid_fields: tuple[str, ...]
    message_id: str | None  # the first Message-ID: value, unfolded
    message_id_fields: int
    has_subject: bool
    has_date: bool
    x_mss: dict[str, str]
    bcc_fields: int
    field_count: int
    header_bytes: int
    subject: str | None = None  # the first Subject:, unfolded and RFC 2047-decoded (the FIN rule reads it)
    reply_to: tuple[str, ...] = ()  # Reply-To: addr-specs (the patient rules let a patient write to them)
    notification_options: str | None = None  # the first Disposition-Notification-Options: (RFC 8098 §2.2)


def _facts(fields: list[_Field]) -> Headers | Reject:
    budget = _Budget()
    addresses: dict[str, list[str]] = {"from": [], "sender": [], "to": [], "cc": [], "reply-to": []}
    invalid: list[str] = []
    try:
        for kind, found in addresses.items():
            for field in fields:
                if field.name != kind:
                    continue
                parsed = _parse_address_field(field.value(), groups=kind in ("to", "cc", "reply-to"), budget=budget)
                if parsed is None:
                    if kind not in invalid and kind != "reply-to":
                        invalid.append(kind)
                else:
                    found.extend(parsed)
    except _TooManyEntries:
        return TOO_MANY_ENTRIES
    message_ids = [f.value() for f in fields if f.name == "message-id"]
    x_mss: dict[str, list[str]] = {}
    for field in fields:
        if field.name.startswith("x-mss-"):
            x_mss.setdefault(field.name.upper(), []).append(field.value())
    return Headers(
        from_fields=_count(fields, "from"),
        from_=tuple(addresses["from"]),
        sender_fields=_count(fields, "sender"),
        sender=tuple(addresses["sender"]),
        to=tuple(addresses["to"]),
        cc=tuple(addresses["cc"]),
        invalid_fields=tuple(invalid),
        message_id=message_ids[0] if message_ids else None,
        message_id_fields=len(message_ids),
        has_subject=_count(fields, "subject") > 0,
        has_date=_count(fields, "date") > 0,
        x_mss={name: ", ".join(values) for name, values in x_mss.items()},
        bcc_fields=_count(fields, "bcc"),
        field_count=len(fields),
        header_bytes=sum(len(f.raw) for f in fields),
        subject=_subject(fields),
        reply_to=tuple(addresses["reply-to"]),
        notification_options=next((f.value() for f in fields if f.name == "disposition-notification-options"), None),
    )


def _subject(fields: list[_Field]) -> str | None:
    found = next((f.value() for f in fields if f.name == "subject"), None)
    if found is None:
        return None
    try:
        return str(make_header(decode_header(found)))
    except (ValueError, LookupError, UnicodeError):
        return found  # an undecodable encoded-word is compared as written


def _count(fields: Iterable[_Field], name: str) -> int:
    return sum(1 for f in fields if f.name == name)


def parse_headers(data: bytes) -> Headers | Reject:
    """The facts of the header block of `data` (raw checks included), or the refusal. No field rules."""
    refused = check_raw(data)
    if refused is not None:
        return refused
    split = _header_fields(data)
    if isinstance(split, Reject):
        return split
    return _facts(split[0])


def _field_rules(facts: Headers) -> Reject | None:
    """RFC 5322 §3.6 rules on the fields that name the author and identify the message."""
    if facts.from_fields != 1:
        return _from_count(facts.from_fields)
    if "from" in facts.invalid_fields or not facts.from_:
        return FROM_INVALID
    if facts.sender_fields > 1:
        return _at_most_one("Sender", facts.sender_fields)
    if facts.sender_fields == 1 and ("sender" in facts.invalid_fields or len(facts.sender) != 1):
        return SENDER_INVALID
    if len(facts.from_) > 1 and facts.sender_fields == 0:
        return SENDER_REQUIRED
    if facts.message_id_fields > 1:
        return _at_most_one("Message-ID", facts.message_id_fields)
    if facts.message_id is not None and not _MESSAGE_ID.fullmatch(facts.message_id):
        return MESSAGE_ID_INVALID
    return None


# ---------------------------------------------------------------------------------------------- changes


def _received_field(received: str) -> _Field:
    """The caller's Received: field text (no final CRLF) as a field; ValueError if it is not one."""
    if received[:9].lower() != "received:" or not received.isascii():
        raise ValueError("the Received: field must be ASCII text starting with 'Received:'")
    lines = received.split("\r\n")
    if any("\r" in line or "\n" in line or len(line) > MAX_LINE for line in lines):
        raise ValueError("the Received: field has a bare CR or LF or a line longer than 998 characters")
    if any(not line or line[0] not in " \t" for line in lines[1:]) or not lines[-1].strip(" \t"):
        raise ValueError("the Received: field's continuation lines must start with white space")
    return _Field("received", received.encode("ascii") + b"\r\n", 8)


def _check_now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    return now


_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def _check_domain(value: str, what: str) -> str:
    if len(value) > 253 or not _DOMAIN.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not a domain name")
    return value


def prepare_submission(
    data: bytes, *, received: str, message_id_domain: str, now: datetime | None = None
) -> tuple[bytes, Headers] | Reject:
    """A client's message as this node relays it, with the facts of its new header block; or the refusal.

    Raw checks, header block checks, the From:/Sender:/Message-ID: rules; then every Bcc: and Return-Path:
    field removed,
    `Date:` then `Message-ID: <random@message_id_domain>` appended to the header block when missing, and
    `received` (one field, no final CRLF) prepended. All other bytes unchanged.
    """
    received_field = _received_field(received)
    _check_domain(message_id_domain, "message_id_domain")
    stamp = _check_now(now)
    refused = check_raw(data)
    if refused is not None:
        return refused
    split = _header_fields(data, submission=True)
    if isinstance(split, Reject):
        return split
    fields, end = split
    kept = [f for f in fields if f.name not in ("bcc", "return-path")]
    added: list[_Field] = []
    if not any(f.name == "date" for f in kept):
        added.append(_Field("date", f"Date: {format_datetime(stamp)}\r\n".encode("ascii"), 4))
    if not any(f.name == "message-id" for f in kept):
        value = f"<{secrets.token_hex(16)}@{message_id_domain}>"
        added.append(_Field("message-id", f"Message-ID: {value}\r\n".encode("ascii"), 10))
    result = [received_field, *kept, *added]
    facts = _facts(result)
    if isinstance(facts, Reject):
        return facts
    refused = _field_rules(facts)
    if refused is not None:
        return refused
    return b"".join(f.raw for f in result) + data[end:], facts


def prepare_relay(data: bytes, *, received: str) -> tuple[bytes, Headers] | Reject:
    """A peer operator's message with `received` prepended and its Return-Path: fields removed, and its facts;
    or the refusal. No other change."""
    received_field = _received_field(received)
    refused = check_raw(data)
    if refused is not None:
        return refused
    split = _header_fields(data)
    if isinstance(split, Reject):
        return split
    fields, end = split
    facts = _facts([received_field, *fields])
    if isinstance(facts, Reject):
        return facts
    refused = _field_rules(facts)
    if refused is not None:
        return refused
    if any(f.name == "return-path" for f in fields):
        return b"".join(f.raw for f in (received_field, *fields) if f.name != "return-path") + data[end:], facts
    return received_field.raw + data, facts


# ---------------------------------------------------------------------------------------------- Received:

_HELO_DOMAIN = re.compile(
    r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?)*"
)
_TOKEN = re.compile(r"[A-Za-z0-9._-]{1,64}")
_QUEUE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_RCPT = re.compile(_ADDR)
_PROTOCOLS = {"ESMTP": False, "ESMTPA": False, "ESMTPS": True, "ESMTPSA": True}  # name -> over TLS (RFC 3848)
_FOLD_AT = 78


def sanitise_helo(helo: str) -> str:
    """The client's HELO/EHLO name as safe to put in a Received: field.

    A domain name (LDH labels, underscores tolerated, at most 255 characters) or an address literal
    (`[192.0.2.1]`, `[IPv6:2001:db8::1]`) is kept as sent; anything else has each character outside
    `[A-Za-z0-9.-]` replaced by `_`, cut to 64 characters; an empty name becomes `unknown`.
    """
    name = helo.strip(" \t")
    if len(name) <= 255 and _HELO_DOMAIN.fullmatch(name):
        return name
    if name.startswith("[") and name.endswith("]") and name.isascii():
        inner = name[1:-1]
        try:
            if inner[:5].lower() == "ipv6:":
                ipaddress.IPv6Address(inner[5:])
            else:
                ipaddress.IPv4Address(inner)
        except ValueError:
            pass
        else:
            return name
    return re.sub(r"[^A-Za-z0-9.-]", "_", name)[:64] or "unknown"


def _address_literal(ip: str) -> str:
    address = ipaddress.ip_address(ip.partition("%")[0])  # a zone index has no place in a literal
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"[{address.ipv4_mapped}]"
        return f"[IPv6:{address.compressed}]"
    return f"[{address}]"


def received_header(
    *,
    from_helo: str,
    from_ip: str,
    by: str,
    protocol: str,
    tls_version: str | None,
    cipher: str | None,
    queue_id: str,
    for_rcpt: str | None,
    now: datetime,
) -> str:
    """An RFC 5321 §4.4 Received: field, folded with CRLF + TAB, without a final CRLF.

    Only `from_helo` is untrusted (see `sanitise_helo`); the other values come from this node and raise
    ValueError when they cannot be written safely. `protocol` is ESMTP, ESMTPA, ESMTPS or ESMTPSA and must
    agree with `tls_version` (an S protocol iff TLS). Pass `for_rcpt` only for a single-recipient envelope.
    """
    if protocol not in _PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}")
    if _PROTOCOLS[protocol] != (tls_version is not None):
        raise ValueError(f"protocol {protocol} does not match tls_version {tls_version!r}")
    if cipher is not None and tls_version is None:
        raise ValueError("a cipher without a TLS version")
    for token in (tls_version, cipher):
        if token is not None and not _TOKEN.fullmatch(token):
            raise ValueError(f"{token!r} is not a TLS version or cipher name")
    if not _QUEUE_ID.fullmatch(queue_id):
        raise ValueError(f"{queue_id!r} is not a queue id")
    if for_rcpt is not None and (len(for_rcpt) > 254 or not _RCPT.fullmatch(for_rcpt)):
        raise ValueError(f"{for_rcpt!r} is not a recipient address")
    _check_domain(by, "by")
    date = format_datetime(_check_now(now))
    groups: list[list[str]] = [[f"Received: from {sanitise_helo(from_helo)}", f"({_address_literal(from_ip)})"]]
    if tls_version is not None:
        groups.append([f"(using {tls_version}" + (f" with cipher {cipher})" if cipher else ")")])
    by_clause = [f"by {by}", f"with {protocol}", f"id {queue_id}"]
    if for_rcpt is None:
        by_clause[-1] += ";"
        groups += [by_clause, [date]]
    else:
        groups += [by_clause, [f"for <{for_rcpt}>;", date]]
    lines: list[str] = []
    for group in groups:
        line = "\t" + group[0] if lines else group[0]
        for unit in group[1:]:
            if len(line) + 1 + len(unit) <= _FOLD_AT:
                line += " " + unit
            else:
                lines.append(line)
                line = "\t" + unit
        lines.append(line)
    return "\r\n".join(lines)
