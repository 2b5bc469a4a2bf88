"""The lexical layer of IMAP commands (RFC 3501 §4, §9): a cursor over a framed `CommandLine`.

Implementation notes
- The cursor walks `CommandLine.lines` and steps over a literal only where a string is allowed: a line
  `lines[i]` ends with the marker `{N}`/`{N+}` of `literals[i]`, and reading that marker as a string
  yields the literal's octets and moves to the start of `lines[i + 1]`. A marker anywhere else is refused.
- Every error is a `ParseError` whose text names what was expected (`missing mailbox name`,
  `invalid sequence set 1:x`). Client octets shown in a text go through `show()`: at most 40 printable
  ASCII characters, anything else as `?`, so a reply can never carry CR, LF or 8-bit data.
- Tokens are checked for their delimiter: after an atom, a number or a sequence set comes SP, `)` or the
  end of the command, otherwise the token itself is reported invalid (`a SELECT INB"OX` says
  `invalid mailbox name`, not something about quotes).
- Quoted strings accept 8-bit octets (UTF-8, as RFC 6855 / RFC 9051 §4.3 allow and clients send in SEARCH);
  they refuse NUL, and CR and LF cannot occur (the framing cut lines there). Literals refuse NUL
  (RFC 3501 §9 `CHAR8`). Strings decode as strict UTF-8 where text is wanted.
- Nesting depth (parenthesised search keys, NOT, OR) is bounded by `MAX_DEPTH`, so hostile input cannot
  exhaust the Python stack.
"""

from __future__ import annotations

import datetime as dt
import re

from gateway.errors import MssgwError
from gateway.imap.proto.framing import CommandLine
from gateway.imap.proto.sequence import SequenceSet

__all__ = ["MAX_DEPTH", "BadCharsetError", "Cursor", "ParseError", "show"]

MAX_DEPTH = 32

SP = 0x20
LPAREN = 0x28
RPAREN = 0x29
DQUOTE = 0x22
BACKSLASH = 0x5C
LBRACE = 0x7B


# RFC 3501 §9: atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials / resp-specials
ATOM_CHARS = frozenset(c for c in range(0x21, 0x7F) if c not in b'(){%*"\\]')
ASTRING_CHARS = ATOM_CHARS | {0x5D}  # ASTRING-CHAR = ATOM-CHAR / resp-specials
TAG_CHARS = ASTRING_CHARS - {0x2B}  # tag = 1*<any ASTRING-CHAR except "+">
LIST_CHARS = ATOM_CHARS | {0x25, 0x2A, 0x5D}  # list-char = ATOM-CHAR / list-wildcards / resp-specials

_LITERAL = re.compile(rb"\{([0-9]+)(\+?)\}\Z")
_BRACED = re.compile(rb"\{([^}]*)\}")
_QUOTED = re.compile(rb'"((?:[^"\\\x00\r\n]|\\["\\])*)"')
_QUOTED_ESCAPE = re.compile(rb'\\(["\\])')
_NUMBER = re.compile(rb"[0-9]{1,20}\Z")
_DATE = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})\Z")
_DATE_TIME = re.compile(
    rb"( [0-9]|[0-9]{1,2})-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})\Z"
)
_MONTHS = {
    month: number
    for number, month in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), start=1
    )
}

_CONTROL_NAMES = {0x00: "NUL", 0x0D: "CR", 0x0A: "LF"}

SYSTEM_FLAGS = {f.upper(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")}


def show(text: bytes | bytearray | str) -> str:
    """Client octets made safe for a reply text: printable ASCII only, at most 40 characters."""
    data = text.encode("utf-8", "replace") if isinstance(text, str) else bytes(text)
    shown = "".join(chr(c) if 0x20 <= c < 0x7F else "?" for c in data[:40])
    return shown + ("..." if len(data) > 40 else "")


class ParseError(MssgwError):
    """A malformed command: reply `<tag> BAD <text>` (or `* BAD <text>` when `tag` is None)."""

    def __init__(self, tag: str | None, text: str) -> None:
        super().__init__(text)
        self.tag = tag
        self.text = text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.tag!r}, {self.text!r})"


class BadCharsetError(ParseError):
    """SEARCH with a charset we do not support: reply `<tag> NO [BADCHARSET (UTF-8 US-ASCII)] <text>`
    (RFC 3501 §6.4.4, §7.1). Catch it before ParseError."""

    supported: tuple[str, ...] = ("UTF-8", "US-ASCII")


class Cursor:
    """Reads tokens from a `CommandLine`; each method names what it reads for its error texts."""

    __slots__ = ("depth", "last", "line", "lines", "literals", "pos", "seg", "tag")

    def __init__(self, command: CommandLine) -> None:
        self.lines = command.lines
        self.literals = command.literals
        self.last = len(self.lines) - 1
        self.seg = 0
        self.line = self.lines[0]
        self.pos = 0
        self.tag: str | None = None
        self.depth = 0

    # -- basics ------------------------------------------------------------------------------------------

    def error(self, text: str) -> ParseError:
        return ParseError(self.tag, text)

    def at_end(self) -> bool:
        return self.pos >= len(self.line) and self.seg == self.last

    def peek(self) -> int:
        """The next octet, or -1 at the end of the current line."""
        return self.line[self.pos] if self.pos < len(self.line) else -1

    def rest(self) -> bytes:
        return self.line[self.pos :]

    def _span(self, chars: frozenset[int]) -> bytes:
        start = self.pos
        line = self.line
        end = start
        while end < len(line) and line[end] in chars:
            end += 1
        self.pos = end
        return line[start:end]

    def _delimited(self, what: str) -> None:
        """A token must be followed by SP, ")" or the end of the command."""
        if not self.at_end() and self.peek() not in (SP, RPAREN):
            raise self.error(f"invalid {what}")

    def sp(self, what: str) -> None:
        """The SP before `what`, with `what` present after it."""
        if self.at_end() or self.peek() == RPAREN:
            raise self.error(f"missing {what}")
        if self.peek() != SP:
            raise self.error(f"expected space before {what}")
        self.pos += 1
        if self.at_end():
            raise self.error(f"missing {what}")
        if self.peek() == SP:
            raise self.error(f"extra space before {what}")

    def maybe_sp(self) -> bool:
        """Consume an SP if one comes next."""
        if self.peek() == SP:
            self.pos += 1
            return True
        return False

    def end(self) -> None:
        """Nothing may follow the last argument (RFC 3501 §9 `command = tag SP ... CRLF`)."""
        if not self.at_end():
            if self.peek() == SP:
                raise self.error("unexpected extra arguments")
            raise self.error(f"unexpected characters at end of command: {show(self.rest())}")

    def next_word_is(self, word: bytes) -> bool:
        """True when the next token is `word` (case-insensitive), followed by SP or the end of the line."""
        rest = self.line[self.pos : self.pos + len(word) + 1]
        return rest[: len(word)].upper() == word and rest[len(word) :] in (b" ", b"")

    def open(self, what: str) -> None:
        if self.at_end():
            raise self.error(f"missing {what}")
        if self.peek() != LPAREN:
            raise self.error(f"expected ( before {what}")
        self.pos += 1

    def close(self, what: str) -> None:
        if self.at_end():
            raise self.error(f"missing ) after {what}")
        if self.peek() != RPAREN:
            raise self.error(f"expected ) after {what}")
        self.pos += 1
        self._delimited(f"text after ) of {what}")

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"nesting too deep (max {MAX_DEPTH} levels)")

    def leave(self) -> None:
        self.depth -= 1

    # -- atoms, numbers --------------------------------------------------------------------------------

    def tag_token(self) -> str:
        """RFC 3501 §9 `tag`."""
        if self.at_end():
            raise ParseError(None, "empty command line")
        tag = self._span(TAG_CHARS)
        if not tag:
            raise ParseError(None, "missing tag" if self.peek() == SP else "invalid tag")
        if not self.at_end() and self.peek() != SP:
            raise ParseError(None, "invalid tag")
        self.tag = tag.decode("ascii")
        return self.tag

    def atom(self, what: str) -> str:
        """RFC 3501 §9 `atom = 1*ATOM-CHAR`."""
        if self.at_end():
            raise self.error(f"missing {what}")
        value = self._span(ATOM_CHARS)
        if not value:
            raise self.error(f"invalid {what}")
        self._delimited(what)
        return value.decode("ascii")

    def word(self) -> bytes:
        """The octets up to the next SP or ")" (to show a whole malformed token in an error)."""
        start = self.pos
        line = self.line
        end = start
        while end < len(line) and line[end] not in (SP, RPAREN):
            end += 1
        self.pos = end
        return line[start:end]

    def number(self, what: str, low: int = 0, high: int = 4294967295) -> int:
        """RFC 3501 §9 `number` (or nz-number with low=1, number64 with high=2**63 - 1)."""
        if self.at_end():
            raise self.error(f"missing {what}")
        token = self.word()
        if not token:
            raise self.error(f"missing {what}")
        if _NUMBER.match(token) is None or not low <= int(token) <= high:
            raise self.error(f"invalid {what} {show(token)}")
        return int(token)

    def sequence_set(self, what: str = "sequence set") -> SequenceSet:
        """RFC 3501 §9 `sequence-set`."""
        if self.at_end():
            raise self.error(f"missing {what}")
        token = self.word()
        if not token:
            raise self.error(f"missing {what}")
        try:
            return SequenceSet.parse(token)
        except ValueError as exc:
            raise self.error(str(exc).replace("sequence set", what, 1)) from None

    # -- strings ---------------------------------------------------------------------------------------

    def quoted(self, what: str) -> bytes:
        """RFC 3501 §9 `quoted = DQUOTE *QUOTED-CHAR DQUOTE`, escapes only `\\\\` and `\\"`."""
        match = _QUOTED.match(self.line, self.pos)
        if match is None:
            self._diagnose_quoted(what)
        assert match is not None
        self.pos = match.end()
        self._delimited(what)
        return _QUOTED_ESCAPE.sub(rb"\1", match.group(1))

    def _diagnose_quoted(self, what: str) -> None:
        line, i = self.line, self.pos + 1
        while i < len(line):
            c = line[i]
            if c in (0x00, 0x0D, 0x0A):
                raise self.error(f"{_CONTROL_NAMES[c]} in quoted {what}")
            if c == BACKSLASH:
                if i + 1 < len(line) and line[i + 1] not in b'"\\':
                    raise self.error(f"invalid escape \\{show(line[i + 1 : i + 2])} in quoted {what}")
                i += 2
                continue
            i += 1
        raise self.error(f"unterminated quoted {what}")

    def literal(self, what: str) -> bytes:
        """RFC 3501 §9 `literal`, RFC 7888 `{N+}`: the octets the framing read after the marker."""
        rest = self.rest()
        if self.seg < self.last and _LITERAL.match(rest) is not None:
            data = self.literals[self.seg]
            if b"\x00" in data:
                raise self.error(f"NUL in literal {what}")
            self.seg += 1
            self.line = self.lines[self.seg]
            self.pos = 0
            self._delimited(what)
            return data
        braced = _BRACED.match(rest)
        if braced is None:
            raise self.error(f"invalid literal {what}")
        if not re.fullmatch(rb"[0-9]+\+?", braced.group(1)):
            raise self.error(f"literal size is not a number: {show(braced.group())}")
        raise self.error(f"literal {what} must end its line")

    def string(self, what: str) -> bytes:
        """RFC 3501 §9 `string = quoted / literal`."""
        c = self.peek()
        if self.at_end():
            raise self.error(f"missing {what}")
        if c == DQUOTE:
            return self.quoted(what)
        if c == LBRACE:
            return self.literal(what)
        raise self.error(f"invalid {what}: expected a quoted string or a literal")

    def astring(self, what: str) -> bytes:
        """RFC 3501 §9 `astring = 1*ASTRING-CHAR / string`."""
        if self.at_end():
            raise self.error(f"missing {what}")
        if self.peek() in (DQUOTE, LBRACE):
            return self.string(what)
        value = self._span(ASTRING_CHARS)
        if not value:
            raise self.error(f"invalid {what}")
        self._delimited(what)
        return value

    def nstring(self, what: str) -> bytes | None:
        """RFC 3501 §9 `nstring = string / nil`."""
        if self.rest()[:3].upper() == b"NIL" and self.peek() not in (DQUOTE, LBRACE):
            self.pos += 3
            self._delimited(what)
            return None
        return self.string(what)

    def text(self, data: bytes, what: str) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error(f"{what} is not valid UTF-8") from None

    def astring_text(self, what: str) -> str:
        return self.text(self.astring(what), what)

    # -- mailboxes, flags, dates -------------------------------------------------------------------------

    def mailbox(self, what: str = "mailbox name") -> str:
        """RFC 3501 §9 `mailbox = "INBOX" / astring`; INBOX is case-insensitive (§5.1)."""
        name = self.astring_text(what)
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
            raise self.error(f"invalid character in {what}")
        return "INBOX" if name.upper() == "INBOX" else name

    def list_mailbox(self, what: str = "mailbox pattern") -> str:
        """RFC 3501 §9 `list-mailbox = 1*list-char / string`."""
        if self.at_end():
            raise self.error(f"missing {what}")
        if self.peek() in (DQUOTE, LBRACE):
            data = self.string(what)
        else:
            data = self._span(LIST_CHARS)
            if not data:
                raise self.error(f"invalid {what}")
            self._delimited(what)
        pattern = self.text(data, what)
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in pattern):
            raise self.error(f"invalid character in {what}")
        return pattern

    def flag(self, what: str = "flag") -> str:
        """RFC 3501 §9 `flag`: a system flag `\\Seen` (canonical case), `\\*`, or a keyword atom."""
        if self.peek() == BACKSLASH:
            self.pos += 1
            if self.peek() == 0x2A:  # "\*": flag-perm, only in PERMANENTFLAGS
                self.pos += 1
                self._delimited(what)
                return "\\*"
            name = "\\" + self.atom(what)
            return SYSTEM_FLAGS.get(name.upper(), name)
        return self.atom(what)

    def flag_list(self, what: str = "flag list") -> list[str]:
        """RFC 3501 §9 `flag-list = "(" [flag *(SP flag)] ")"`."""
        self.open(what)
        flags: list[str] = []
        if self.peek() != RPAREN:
            flags.append(self.flag())
            while self.peek() == SP:
                self.pos += 1
                flags.append(self.flag())
        self.close(what)
        return flags

    def date(self, what: str = "date") -> dt.date:
        """RFC 3501 §9 `date = date-text / DQUOTE date-text DQUOTE`, e.g. 1-Feb-1994."""
        if self.at_end():
            raise self.error(f"missing {what}")
        token = self.quoted(what) if self.peek() == DQUOTE else self.word()
        match = _DATE.match(token)
        month = _MONTHS.get(match.group(2).decode().upper(), 0) if match else 0
        try:
            if match is None or not month:
                raise ValueError
            return dt.date(int(match.group(3)), month, int(match.group(1)))
        except ValueError:
            raise self.error(f"invalid {what} {show(token)}") from None

    def date_time(self, what: str = "date-time") -> dt.datetime:
        """RFC 3501 §9 `date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE`.

        A one-digit day without its leading space is accepted too (clients send it).
        """
        if self.peek() != DQUOTE:
            raise self.error(f"invalid {what}: expected a quoted string")
        token = self.quoted(what)
        match = _DATE_TIME.match(token)
        try:
            if match is None:
                raise ValueError
            day, mon, year, hh, mm, ss, sign, zh, zm = (g.decode() for g in match.groups())
            month = _MONTHS.get(mon.upper(), 0)
            if not month or int(zh) > 23 or int(zm) > 59:
                raise ValueError
            offset = dt.timedelta(hours=int(zh), minutes=int(zm)) * (-1 if sign == "-" else 1)
            return dt.datetime(int(year), month, int(day), int(hh), int(mm), int(ss), tzinfo=dt.timezone(offset))
        except ValueError:
            raise self.error(f"invalid {what} {show(token)}") from None
