"""RFC 5322 / RFC 2045 lexical parsing of header values: tokens, parameters, address lists.

Implementation notes
- Behaviour follows Dovecot 2.3's lib-mail (rfc822-parser.c, rfc2231-parser.c, message-address.c)
  step for step, because what an IMAP server reports for malformed headers is only "correct" by
  agreement with what clients already see from common servers; the corpus in
  tests/imap/corpus/dovecot-expected.json pins it. Everything here works on bytes and never raises.
- A `Scanner` is a cursor over one header value. Reading past the end yields NUL (0), as the C code
  reads the terminator of its NUL-terminated buffers; no method moves the cursor beyond `end`.
- Return codes keep the C convention: 1 = more input follows, 0 = end of input reached, -1 = syntax
  error. Callers rely on the distinction (for example "user" alone versus "user more").
- NUL octets inside quoted strings, comments and domain literals become U+FFFD (as UTF-8) where the
  caller asks for it (`nul_replacement`), as Dovecot does for addresses and MIME parameters.
- Parameters (RFC 2045 §5.1) are merged per RFC 2231 §3-§4 continuations (`name*0*=...; name*1=...`
  become `name*`), with values left encoded: BODYSTRUCTURE reports them as sent. At most
  `MAX_PARAMS` parameters (broken ones included) are read, a bound on work for hostile input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# rfc822_atext_chars: 1 = atext, 2 = alphanumeric or 8-bit, 4 = atext but a MIME tspecial ("/", "=", "?").
_ATEXT = bytes(
    [0] * 32
    + [0, 1, 0, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1, 0, 4]  # SP ! " # $ % & ' ( ) * + , - . /
    + [2] * 10
    + [0, 0, 0, 4, 0, 4]  # : ; < = > ?
    + [0]
    + [2] * 26  # @ A-Z
    + [0, 0, 0, 1, 1]  # [ \ ] ^ _
    + [1]
    + [2] * 26  # ` a-z
    + [1, 1, 1, 1, 0]  # { | } ~ DEL
    + [2] * 128
)
assert len(_ATEXT) == 256


def _run_of(pred: object) -> re.Pattern[bytes]:
    chars = bytes(c for c in range(256) if callable(pred) and pred(c))
    return re.compile(b"[" + b"".join(re.escape(bytes([c])) for c in chars) + b"]+")


# Runs of one character class, matched in C rather than one octet at a time.
_ATEXT_RUN = _run_of(lambda c: _ATEXT[c] != 0)
_ATEXT_OR_DOT_RUN = _run_of(lambda c: _ATEXT[c] != 0 or c == 0x2E)
_TOKEN_RUN = _run_of(lambda c: (_ATEXT[c] & 3) != 0 or c == 0x2E)
_WS_RUN = re.compile(rb"[ \t\r\n]+")
_QUOTED_SPECIAL = re.compile(rb'["\\\n\x00]')

NUL_REPLACEMENT = "\ufffd".encode()
MAX_PARAMS = 128  # RFC2231_MAX_PARAMS

_SP, _HT, _CR, _LF = 0x20, 0x09, 0x0D, 0x0A
_DQUOTE, _BSLASH, _LPAREN, _RPAREN = 0x22, 0x5C, 0x28, 0x29
_DOT, _AT, _LT, _GT, _COLON, _SEMI, _COMMA, _EQ, _SLASH = 0x2E, 0x40, 0x3C, 0x3E, 0x3A, 0x3B, 0x2C, 0x3D, 0x2F
_LBRACKET, _RBRACKET = 0x5B, 0x5D


def is_atext(c: int) -> bool:
    return _ATEXT[c] != 0


class Scanner:
    """A cursor over one header value (rfc822_parser_context)."""

    __slots__ = ("data", "end", "last_comment", "nul_replacement", "pos")

    def __init__(self, data: bytes, last_comment: bytearray | None = None, nul_replacement: bytes | None = None):
        self.data = data
        self.pos = 0
        self.end = len(data)
        self.last_comment = last_comment
        self.nul_replacement = nul_replacement

    def cur(self) -> int:
        return self.data[self.pos] if self.pos < self.end else 0

    def skip_comment(self) -> int:
        """Skip a (possibly nested) comment at "(", keeping its text in `last_comment`."""
        data, lc = self.data, self.last_comment
        if lc is not None:
            del lc[:]
        level = 1
        self.pos += 1
        start = self.pos
        while self.pos < self.end:
            c = data[self.pos]
            if c == 0:
                if lc is not None and self.nul_replacement is not None:
                    lc += data[start : self.pos] + self.nul_replacement
                    start = self.pos + 1
            elif c == _LPAREN:
                level += 1
            elif c == _RPAREN:
                level -= 1
                if level == 0:
                    if lc is not None:
                        lc += data[start : self.pos]
                    self.pos += 1
                    return 1 if self.pos < self.end else 0
            elif c == _LF:
                if lc is not None:  # folding whitespace: drop the (CR)LF
                    stop = self.pos - 1 if self.pos > start and data[self.pos - 1] == _CR else self.pos
                    lc += data[start:stop]
                    start = self.pos + 1
            elif c == _BSLASH:
                self.pos += 1
                if self.pos >= self.end:
                    return -1
                if data[self.pos] in (_CR, _LF, 0):
                    self.pos -= 1  # obs-qp: not an escape
                else:
                    if lc is not None:
                        lc += data[start : self.pos - 1]
                    start = self.pos
            self.pos += 1
        return -1  # missing ")"

    def skip_lwsp(self) -> int:
        """Skip CFWS (RFC 5322 §3.2.2)."""
        data = self.data
        while self.pos < self.end:
            c = data[self.pos]
            if c in (_SP, _HT, _CR, _LF):
                m = _WS_RUN.match(data, self.pos)
                assert m is not None
                self.pos = m.end()
            elif c == _LPAREN:
                if self.skip_comment() < 0:
                    return -1
            else:
                break
        return 1 if self.pos < self.end else 0

    def _run(self, pattern: re.Pattern[bytes], out: bytearray) -> int:
        """Append the run of `pattern` characters at the cursor (maybe empty); then skip CFWS if
        input remains (1 / -1), else 0."""
        m = pattern.match(self.data, self.pos)
        if m is not None:
            out += m.group()
            self.pos = m.end()
        if self.pos < self.end:
            return self.skip_lwsp()
        return 0

    def parse_atom(self, out: bytearray) -> int:
        if self.pos >= self.end or not is_atext(self.data[self.pos]):
            return -1
        return self._run(_ATEXT_RUN, out)

    def parse_dot_atom(self, out: bytearray) -> int:
        """dot-atom, allowing CFWS around "." as RFC 822 did."""
        data = self.data
        if self.pos >= self.end or not is_atext(data[self.pos]):
            return -1
        while True:
            m = _ATEXT_RUN.match(data, self.pos)
            if m is None:
                return -1  # "." not followed by an atom
            out += m.group()
            self.pos = m.end()
            if self.pos >= self.end:
                return 0
            ret = self.skip_lwsp()
            if ret <= 0:
                return ret
            if data[self.pos] != _DOT:
                return 1
            self.pos += 1
            out.append(_DOT)
            if self.skip_lwsp() <= 0:
                return -1

    def parse_mime_token(self, out: bytearray) -> int:
        return self._run(_TOKEN_RUN, out)

    def parse_quoted_string(self, out: bytearray) -> int:
        data = self.data
        self.pos += 1  # the opening DQUOTE
        start = self.pos
        while self.pos < self.end:
            m = _QUOTED_SPECIAL.search(data, self.pos)
            if m is None:
                self.pos = self.end
                break
            self.pos = m.start()
            c = data[self.pos]
            if c == 0:
                if self.nul_replacement is not None:
                    out += data[start : self.pos] + self.nul_replacement
                    start = self.pos + 1
            elif c == _DQUOTE:
                out += data[start : self.pos]
                self.pos += 1
                return self.skip_lwsp()
            elif c == _LF:  # folding whitespace: drop the (CR)LF
                stop = self.pos - 1 if self.pos > start and data[self.pos - 1] == _CR else self.pos
                out += data[start:stop]
                start = self.pos + 1
            elif c == _BSLASH:
                self.pos += 1
                if self.pos >= self.end:
                    return -1
                if data[self.pos] in (_CR, _LF, 0):
                    self.pos -= 1
                else:
                    out += data[start : self.pos - 1]
                    start = self.pos
            self.pos += 1
        return -1  # missing DQUOTE

    def _parse_atom_or_dot(self, out: bytearray) -> int:
        return self._run(_ATEXT_OR_DOT_RUN, out)

    def parse_phrase(self, out: bytearray) -> int:
        """phrase / obs-phrase (RFC 5322 §3.2.5, §4.1): words joined by one space."""
        if self.pos >= self.end:
            return 0
        if self.data[self.pos] == _DOT:
            return -1
        while True:
            ret = self.parse_quoted_string(out) if self.cur() == _DQUOTE else self._parse_atom_or_dot(out)
            if ret <= 0:
                return ret
            c = self.cur()
            if not is_atext(c) and c != _DQUOTE and c != _DOT:
                break
            out.append(_SP)
        return self.skip_lwsp()

    def _parse_domain_literal(self, out: bytearray) -> int:
        data = self.data
        start = self.pos
        self.pos += 1
        while self.pos < self.end:
            c = data[self.pos]
            if c == 0:
                if self.nul_replacement is not None:
                    out += data[start : self.pos] + self.nul_replacement
                    start = self.pos + 1
            elif c == _LBRACKET:
                return -1
            elif c == _RBRACKET:
                out += data[start : self.pos + 1]
                self.pos += 1
                return self.skip_lwsp()
            elif c == _LF:
                stop = self.pos - 1 if self.pos > start and data[self.pos - 1] == _CR else self.pos
                out += data[start:stop]
                start = self.pos + 1
            elif c == _BSLASH:  # the backslash is kept in the output
                self.pos += 1
                if self.pos >= self.end:
                    return -1
                if data[self.pos] in (_CR, _LF, 0):
                    out += data[start : self.pos]
                    start = self.pos
                    self.pos -= 1
            self.pos += 1
        return -1  # missing "]"

    def parse_domain(self, out: bytearray) -> int:
        """At "@": dot-atom / domain-literal / obs-domain."""
        self.pos += 1
        if self.skip_lwsp() <= 0:
            return -1
        if self.data[self.pos] == _LBRACKET:
            return self._parse_domain_literal(out)
        return self.parse_dot_atom(out)

    def parse_content_type(self, out: bytearray) -> int:
        """type "/" subtype (RFC 2045 §5.1); on error `out` keeps what Dovecot keeps (maybe only the type)."""
        if self.skip_lwsp() <= 0:
            return -1
        if self.parse_mime_token(out) <= 0 or not out:
            return -1
        if self.cur() != _SLASH:
            del out[:]
            return -1
        self.pos += 1
        if self.skip_lwsp() <= 0:
            del out[:]
            return -1
        out.append(_SLASH)
        mark = len(out)
        ret = self.parse_mime_token(out)
        if ret < 0 or len(out) == mark or (self.pos != self.end and self.cur() != _SEMI):
            del out[:]
            return -1
        return ret

    def parse_content_param(self) -> tuple[int, bytes, bytes]:
        """One `; attribute=value` (RFC 2045 §5.1): (code, key, value); code 0 = no more parameters."""
        if self.pos >= self.end:
            return 0, b"", b""
        if self.data[self.pos] != _SEMI:
            return -1, b"", b""
        self.pos += 1
        if self.skip_lwsp() <= 0:
            return -1, b"", b""
        key = bytearray()
        if self.parse_mime_token(key) <= 0:
            return -1, b"", b""
        if self.cur() != _EQ:
            return -1, b"", b""
        self.pos += 1
        value = bytearray()
        ret = self.skip_lwsp()
        if ret <= 0:
            pass  # broken or empty value
        elif self.data[self.pos] == _DQUOTE:
            ret = self.parse_quoted_string(value)
        elif self.data[self.pos] == _EQ:
            # Broken input seen in the wild: name==?utf-8?b?...?=
            while self.pos < self.end and self.data[self.pos] not in (_SEMI, _SP, _HT, _CR, _LF):
                value.append(self.data[self.pos])
                self.pos += 1
        else:
            ret = self.parse_mime_token(value)
        return (-1 if ret < 0 else 1), bytes(key), bytes(value)


def _rfc2231_escape(value: bytes) -> bytes:
    return value.replace(b"%", b"%25")


def parse_parameters(sc: Scanner) -> list[tuple[bytes, bytes]]:
    """The parameter list after a MIME value, RFC 2231 continuations merged (rfc2231_parse)."""
    saved = sc.nul_replacement
    sc.nul_replacement = NUL_REPLACEMENT
    plain: list[tuple[bytes, bytes]] = []
    # (key, index, extended, value); the index is carried over from the previous starred
    # parameter when a key is only "name*", as the C code leaves it in place.
    starred: list[tuple[bytes, int, bool, bytes]] = []
    idx = 0
    count = 0
    while True:
        ret, key, value = sc.parse_content_param()
        if ret == 0:
            break
        count += 1
        if count > MAX_PARAMS:
            break
        if ret < 0:
            if sc.pos >= sc.end:
                break
            sc.pos += 1  # try to continue anyway
            continue
        star = key.find(b"*")
        if star < 0:
            plain.append((key, value))
            continue
        p = star
        if p + 1 < len(key):
            p += 1
            idx = 0
            while p < len(key) and 0x30 <= key[p] <= 0x39:
                idx = idx * 10 + key[p] - 0x30
                p += 1
        extended = p < len(key) and key[p] == 0x2A
        if extended:
            p += 1
        if p < len(key):
            plain.append((key, value))
        else:
            starred.append((key[:star], idx, extended, value))
    sc.nul_replacement = saved
    if not starred:
        return plain
    starred.sort(key=lambda t: (t[0], t[1]))
    i = 0
    while i < len(starred):
        name = starred[i][0].lower()
        j = i
        ok, have_extended, next_idx = True, False, 0
        while j < len(starred) and starred[j][0].lower() == name:
            if starred[j][1] != next_idx:
                ok = False
            have_extended = have_extended or starred[j][2]
            next_idx += 1
            j += 1
        group = starred[i:j]
        if not ok:  # missing indexes: not RFC 2231 after all
            for k, n, ext, v in group:
                plain.append((k + b"*%d" % n + (b"*" if ext else b""), v))
        else:
            merged = bytearray(b"''" if not group[0][2] and have_extended else b"")
            for _k, _n, ext, v in group:
                merged += _rfc2231_escape(v) if have_extended and not ext else v
            plain.append((group[0][0] + (b"*" if have_extended else b""), bytes(merged)))
        i = j
    return plain


# --- Addresses (RFC 5322 §3.4), message-address.c with FILL_MISSING and non-strict dots ---


@dataclass
class Address:
    """One ENVELOPE address (RFC 3501 §7.4.2): a mailbox, or a group start (mailbox = group name,
    domain None) or group end (all None)."""

    name: bytes | None = None
    route: bytes | None = None
    mailbox: bytes | None = None
    domain: bytes | None = None
    invalid_syntax: bool = False


class _AddressParser:
    def __init__(self, value: bytes) -> None:
        self.sc = Scanner(value, last_comment=bytearray(), nul_replacement=NUL_REPLACEMENT)
        self.addr = Address()
        self.out: list[Address] = []
        self.s = bytearray()

    def _add(self) -> None:
        self.out.append(self.addr)
        self.addr = Address()

    def _nonstrict_dot_atom(self) -> int:
        sc = self.sc
        ret = -1
        while True:
            while sc.cur() == _DOT:
                self.s.append(_DOT)
                sc.pos += 1
                if sc.pos == sc.end:
                    return 0  # the @domain is missing, but the local part parsed
                ret = 1
            if sc.cur() == _AT:
                break
            ret = sc.parse_atom(self.s)
            if not (ret > 0 and sc.cur() == _DOT):
                break
        return ret

    def _local_part(self) -> int:
        del self.s[:]
        ret = self.sc.parse_quoted_string(self.s) if self.sc.cur() == _DQUOTE else self._nonstrict_dot_atom()
        if ret < 0:
            return -1
        self.addr.mailbox = bytes(self.s)
        return ret

    def _domain(self) -> int:
        del self.s[:]
        ret = self.sc.parse_domain(self.s)
        if ret < 0:
            return -1
        self.addr.domain = bytes(self.s)
        return ret

    def _domain_list(self) -> int:
        sc = self.sc
        del self.s[:]
        while True:
            if sc.pos >= sc.end:
                return 0
            if sc.data[sc.pos] != _AT:
                break
            if self.s:
                self.s.append(_COMMA)
            self.s.append(_AT)
            ret = sc.parse_domain(self.s)
            if ret <= 0:
                return ret
            while sc.skip_lwsp() > 0 and sc.cur() == _COMMA:
                sc.pos += 1
        self.addr.route = bytes(self.s)
        return 1

    def _angle_addr(self) -> int:
        sc = self.sc
        sc.pos += 1  # "<"
        if sc.skip_lwsp() <= 0:
            return -1
        if sc.cur() == _AT:
            if self._domain_list() > 0 and sc.cur() == _COLON:
                sc.pos += 1
            else:
                self.addr.route = b"INVALID_ROUTE"
                if sc.pos >= sc.end:
                    return -1
            if sc.skip_lwsp() <= 0:
                return -1
        if sc.cur() != _GT:  # "<>" is not a valid address: nothing to read
            if self._local_part() <= 0:
                return -1
            if sc.cur() == _AT and self._domain() <= 0:
                return -1
        if sc.cur() != _GT:
            return -1
        sc.pos += 1
        return sc.skip_lwsp()

    def _name_addr(self) -> int:
        sc = self.sc
        del self.s[:]
        if sc.parse_phrase(self.s) <= 0 or sc.cur() != _LT:
            return -1
        self.addr.name = bytes(self.s) or None  # "<address>" without a display name
        if self._angle_addr() < 0:
            self.addr.domain = b"SYNTAX_ERROR"
            self.addr.invalid_syntax = True
        return 1 if sc.pos < sc.end else 0

    def _addr_spec(self) -> int:
        sc = self.sc
        assert sc.last_comment is not None
        del sc.last_comment[:]
        quoted = sc.cur() == _DQUOTE
        ret = self._local_part()
        ret2 = -2
        if ret <= 0:
            self.addr.invalid_syntax = True
        if ret != 0 and sc.pos < sc.end and sc.data[sc.pos] == _AT:
            ret2 = self._domain()
            if ret2 <= 0:
                ret = ret2
        if sc.last_comment:
            self.addr.name = bytes(sc.last_comment)
        elif ret2 == -2:
            # "user" without @domain and without (comment): a mailbox if alone, else a display name.
            self.s.append(_SP)
            mark = len(self.s)
            sc.parse_phrase(self.s)
            if len(self.s) != mark:
                self.addr.mailbox = None
                self.addr.name = bytes(self.s)
            elif not quoted:
                self.addr.domain = b""
            self.addr.invalid_syntax = True
            ret = -1
        return ret

    def _add_fixed(self) -> None:
        if self.addr.mailbox is None:
            self.addr.mailbox = b"MISSING_MAILBOX"
            self.addr.invalid_syntax = True
        if not self.addr.domain:
            self.addr.domain = b"MISSING_DOMAIN"
            self.addr.invalid_syntax = True
        self._add()

    def _mailbox(self) -> int:
        sc = self.sc
        start = sc.pos
        ret = self._name_addr()
        if ret < 0:
            sc.pos = start
            ret = self._addr_spec()
            a = self.addr
            if a.invalid_syntax and a.name is None and a.mailbox is not None and a.domain is None:
                a.name, a.mailbox = a.mailbox, None
        if ret < 0:
            self.addr.invalid_syntax = True
        self._add_fixed()
        return ret

    def _group(self) -> int:
        sc = self.sc
        del self.s[:]
        if sc.parse_phrase(self.s) <= 0 or sc.cur() != _COLON:
            return -1
        sc.pos += 1  # from here on this is a group, whatever follows
        ret = sc.skip_lwsp()
        if ret <= 0:
            self.addr.invalid_syntax = True
        self.addr.mailbox = bytes(self.s)
        self._add()
        if ret > 0 and sc.cur() != _SEMI:
            while True:
                self._mailbox()
                if sc.pos >= sc.end or sc.data[sc.pos] != _COMMA:
                    break
                sc.pos += 1
                if sc.skip_lwsp() <= 0:
                    ret = -1
                    break
        if ret >= 0:
            if sc.pos >= sc.end or sc.data[sc.pos] != _SEMI:
                ret = -1
            else:
                sc.pos += 1
                ret = sc.skip_lwsp()
        if ret < 0:
            self.addr.invalid_syntax = True
        self._add()  # the group end marker
        return 0 if ret == 0 else 1

    def _address(self) -> int:
        start = self.sc.pos
        ret = self._group()
        if ret < 0:
            self.sc.pos = start
            ret = self._mailbox()
        return ret

    def parse(self) -> list[Address]:
        sc = self.sc
        if sc.skip_lwsp() <= 0:
            return self.out
        while True:
            if self._address() == 0:
                break
            if sc.pos >= sc.end or sc.data[sc.pos] != _COMMA:
                break
            sc.pos += 1
            ret = sc.skip_lwsp()
            if ret <= 0:
                if ret < 0:  # ends with garbage
                    self._add_fixed()
                break
        return self.out


def parse_addresses(value: bytes) -> list[Address]:
    """An address-list header value (RFC 5322 §3.4), groups flattened RFC 3501 style."""
    return _AddressParser(value).parse()
