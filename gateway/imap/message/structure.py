"""ENVELOPE, BODY and BODYSTRUCTURE (RFC 3501 §7.4.2, RFC 9051 §7.5.2), serialised as IMAP.

Implementation notes
- The values match Dovecot 2.3 octet for octet on the corpus (tests/imap/corpus), which is what
  clients already parse (message-part-data.c, imap-envelope.c, imap-bodystructure.c):
  * ENVELOPE fields are the raw header text: RFC 2047 encoded words are not decoded. Date,
    In-Reply-To and Message-ID are the unfolded value; Subject and display names are "for humans"
    (white space runs collapsed, see quote.py). The last Date/Subject/In-Reply-To/Message-ID wins;
    repeated address fields are concatenated, as if one comma-separated field, so that a second
    From: cannot hide behind the first. Sender and Reply-To default to From (RFC 3501 §7.4.2).
    Groups are (NIL NIL "name" NIL) ... (NIL NIL NIL NIL); unparsable addresses keep what could be
    read and fill the rest with MISSING_MAILBOX / MISSING_DOMAIN / INVALID_ROUTE / SYNTAX_ERROR.
  * Content-* fields count only in MIME parts; the first of each wins (Content-Disposition: the first
    with parameters). Type, subtype, parameter names and values are reported as written (case
    kept). A text/* part without a charset gets ("charset" "us-ascii") appended, no Content-Type at
    all is "text" "plain" ("charset" "us-ascii"); an invalid Content-Type keeps what was readable
    (possibly "" ""). No Content-Transfer-Encoding is "7bit".
  * Sizes are octets of the part body; lines are its LF count (RFC 3501: text/* and message/rfc822
    have a line count; for message/rfc822 it counts the encapsulated header too).
  * A multipart with no body parts (no boundary parameter, or the boundary never occurs) reports one
    empty text/plain part, since the grammar requires one (RFC 3501 §9 body-type-mpart).
  * Extension data (BODYSTRUCTURE only): multipart: parameters, disposition, language, location;
    others: MD5, disposition, language, location. Empty trailing extension fields are still sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.imap.message.parser import HeaderField, MimePart, PartFlag
from gateway.imap.message.quote import nstring, nstring_nolf, string, string_for_humans
from gateway.imap.message.rfc822 import NUL_REPLACEMENT, Address, Scanner, parse_addresses, parse_parameters

DEFAULT_CHARSET = b"us-ascii"
_EMPTY_BODY = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0)'
_EMPTY_BODYSTRUCTURE = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)'

Params = list[tuple[bytes, bytes]]


def header_strdup(value: bytes) -> bytes:
    """A header value as a string: NUL octets become U+FFFD (message_header_strdup)."""
    return value.replace(b"\0", NUL_REPLACEMENT)


@dataclass
class Envelope:
    date: bytes | None = None
    subject: bytes | None = None
    from_: list[Address] = field(default_factory=list)
    sender: list[Address] = field(default_factory=list)
    reply_to: list[Address] = field(default_factory=list)
    to: list[Address] = field(default_factory=list)
    cc: list[Address] = field(default_factory=list)
    bcc: list[Address] = field(default_factory=list)
    in_reply_to: bytes | None = None
    message_id: bytes | None = None


_ADDRESS_FIELDS = {
    b"from": "from_",
    b"sender": "sender",
    b"reply-to": "reply_to",
    b"to": "to",
    b"cc": "cc",
    b"bcc": "bcc",
}
_STRING_FIELDS = {b"date": "date", b"subject": "subject", b"in-reply-to": "in_reply_to", b"message-id": "message_id"}


def parse_envelope(fields: list[HeaderField]) -> Envelope | None:
    """RFC 3501 §7.4.2 ENVELOPE data from a header; None for a header without any field."""
    if not fields:
        return None
    env = Envelope()
    for f in fields:
        name = f.name.lower()
        if name in _STRING_FIELDS:
            setattr(env, _STRING_FIELDS[name], header_strdup(f.value))
        elif name in _ADDRESS_FIELDS:
            getattr(env, _ADDRESS_FIELDS[name]).extend(parse_addresses(f.value))
    return env


def _write_addresses(addrs: list[Address]) -> bytes:
    if not addrs:
        return b"NIL"
    out = bytearray(b"(")
    for a in addrs:
        name = b"NIL" if a.name is None else string_for_humans(a.name)
        out += b"(" + name + b" " + nstring(a.route) + b" " + nstring(a.mailbox) + b" " + nstring(a.domain) + b")"
    return bytes(out + b")")


def write_envelope(env: Envelope | None) -> bytes:
    """The envelope fields, without the enclosing parentheses."""
    if env is None:
        return b"NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL"
    subject = b"NIL" if env.subject is None else string_for_humans(env.subject)
    return b" ".join(
        [
            nstring_nolf(env.date),
            subject,
            _write_addresses(env.from_),
            _write_addresses(env.sender or env.from_),
            _write_addresses(env.reply_to or env.from_),
            _write_addresses(env.to),
            _write_addresses(env.cc),
            _write_addresses(env.bcc),
            nstring_nolf(env.in_reply_to),
            nstring_nolf(env.message_id),
        ]
    )


@dataclass
class ContentInfo:
    """The Content-* fields of one part (RFC 2045 §5-§6, RFC 2183, RFC 3066, RFC 2557, RFC 1864)."""

    type: bytes | None = None
    subtype: bytes | None = None
    params: Params = field(default_factory=list)
    id: bytes | None = None
    description: bytes | None = None
    transfer_encoding: bytes | None = None
    md5: bytes | None = None
    disposition: bytes | None = None
    disposition_params: Params = field(default_factory=list)
    language: list[bytes] = field(default_factory=list)
    location: bytes | None = None

    def param(self, name: bytes) -> bytes | None:
        """The first content-type parameter called `name` (case-insensitive)."""
        lname = name.lower()
        return next((v for k, v in self.params if k.lower() == lname), None)


def _parse_content_type(info: ContentInfo, value: bytes) -> None:
    sc = Scanner(value)
    sc.skip_lwsp()
    ct = bytearray()
    ret = sc.parse_content_type(ct)
    slash = ct.find(b"/")
    info.type = bytes(ct if slash < 0 else ct[:slash])
    info.subtype = b"" if slash < 0 else bytes(ct[slash + 1 :])
    if ret >= 0:  # a broken Content-Type keeps type and subtype, but not its parameters
        info.params = parse_parameters(sc)


def _parse_transfer_encoding(info: ContentInfo, value: bytes) -> None:
    sc = Scanner(value)
    sc.skip_lwsp()
    token = bytearray()
    if sc.parse_mime_token(token) >= 0 and sc.skip_lwsp() == 0 and token:
        info.transfer_encoding = bytes(token)


def _parse_disposition(info: ContentInfo, value: bytes) -> None:
    sc = Scanner(value)
    sc.skip_lwsp()
    token = bytearray()
    if sc.parse_mime_token(token) < 0:
        return
    info.disposition = bytes(token)
    info.disposition_params = parse_parameters(sc)


def _parse_language(info: ContentInfo, value: bytes) -> None:
    sc = Scanner(value)
    langs: list[bytes] = []
    sc.skip_lwsp()
    while True:
        atom = bytearray()
        if sc.parse_atom(atom) < 0:
            break
        langs.append(bytes(atom))
        if sc.pos >= sc.end or sc.data[sc.pos] != 0x2C:
            break
        sc.pos += 1
        sc.skip_lwsp()
    info.language = langs


def parse_content_info(part: MimePart) -> ContentInfo:
    info = ContentInfo()
    if not part.flags & PartFlag.IS_MIME:
        return info  # without MIME-Version, Content-* fields mean nothing (RFC 2045 §4)
    for f in part.fields:
        name = f.name.lower()
        if not name.startswith(b"content-"):
            continue
        name = name[8:]
        if name == b"id":
            if info.id is None:
                info.id = header_strdup(f.value)
        elif name == b"md5":
            if info.md5 is None:
                info.md5 = header_strdup(f.value)
        elif name == b"type":
            if info.type is None:
                _parse_content_type(info, f.value)
        elif name == b"transfer-encoding":
            if info.transfer_encoding is None:
                _parse_transfer_encoding(info, f.value)
        elif name == b"language":
            if not info.language:
                _parse_language(info, f.value)
        elif name == b"location":
            if info.location is None:
                info.location = header_strdup(f.value)
        elif name == b"description":
            if info.description is None:
                info.description = header_strdup(f.value)
        elif name == b"disposition" and not info.disposition_params:
            _parse_disposition(info, f.value)
    return info


def _write_params(params: Params, default_charset: bool) -> bytes:
    if not params and not default_charset:
        return b"NIL"
    items = [string(k) + b" " + string(v) for k, v in params]
    if default_charset and not any(k.lower() == b"charset" for k, _ in params):
        items.append(b'"charset" "' + DEFAULT_CHARSET + b'"')
    return b"(" + b" ".join(items) + b")"


def _write_common_extension(info: ContentInfo) -> bytes:
    if info.disposition is None:
        disposition = b"NIL"
    else:
        disposition = b"(" + string(info.disposition) + b" " + _write_params(info.disposition_params, False) + b")"
    language = b"(" + b" ".join(string(x) for x in info.language) + b")" if info.language else b"NIL"
    return b" " + disposition + b" " + language + b" " + nstring_nolf(info.location)


def _is_truncated(part: MimePart, info: ContentInfo) -> bool:
    """A message/rfc822 or multipart type the parser did not open (limits reached)."""
    if info.type is not None:
        t = info.type.lower()
        return (t == b"message" and (info.subtype or b"").lower() == b"rfc822") or t == b"multipart"
    return part.parent is not None and bool(part.parent.flags & PartFlag.MULTIPART_DIGEST)


class BodyWriter:
    """Writes BODY / BODYSTRUCTURE for the parts of one message."""

    def __init__(self, raw: bytes, extensible: bool) -> None:
        self.raw = raw
        self.extensible = extensible

    def write(self, part: MimePart) -> bytes:
        # Recursive: the parser bounds nesting at MAX_NESTED_PARTS (100), well inside Python's limit.
        if part.is_multipart():
            return self._multipart(part)
        return self._single(part)

    def _multipart(self, part: MimePart) -> bytes:
        info = parse_content_info(part)
        if part.children:
            out = bytearray(b"".join(b"(" + self.write(c) + b")" for c in part.children))
        else:
            out = bytearray(_EMPTY_BODYSTRUCTURE if self.extensible else _EMPTY_BODY)
        out += b" " + string(info.subtype or b"")
        if self.extensible:
            out += b" " + _write_params(info.params, False) + _write_common_extension(info)
        return bytes(out)

    def _single(self, part: MimePart) -> bytes:
        info = parse_content_info(part)
        text = False
        if part.is_message_rfc822():
            out = bytearray(b'"message" "rfc822"')
        elif _is_truncated(part, info):
            out = bytearray(b'"application" "octet-stream"')
        elif info.type is None:
            text = True
            out = bytearray(b'"text" "plain"')
        else:
            text = info.type.lower() == b"text"
            out = bytearray(string(info.type) + b" " + string(info.subtype or b""))
        out += b" " + _write_params(info.params, text)
        out += b" " + nstring_nolf(info.id) + b" " + nstring_nolf(info.description) + b" "
        out += b'"7bit"' if info.transfer_encoding is None else string(info.transfer_encoding)
        out += b" %d" % part.body_size
        lines = self.raw.count(b"\n", part.body_start, part.end)
        if text:
            out += b" %d" % lines
        elif part.is_message_rfc822() and part.children:
            inner = part.children[0]
            out += b" (" + write_envelope(parse_envelope(inner.fields)) + b") "
            out += b"(" + self.write(inner) + b")"
            out += b" %d" % lines
        if self.extensible:
            out += b" " + nstring_nolf(info.md5) + _write_common_extension(info)
        return bytes(out)
