"""Server-side IMAP command framing: bytes in, whole commands (lines + literals) out. Sans-I/O.

Implementation notes
- A command is one or more CRLF-terminated lines; a line that ends with a literal marker `{N}` or `{N+}`
  is followed by exactly N octets of literal data, then the command goes on (RFC 3501 §2.2, §4.3; RFC 7888
  §3 for `{N+}`). The reader cuts the stream into `CommandLine(lines, literals)`, with
  `len(lines) == len(literals) + 1`: `lines[i]` (without its CRLF) ends with the marker that announced
  `literals[i]`. The parser (`parser.parse_command`) reads that structure; nothing is re-joined or copied.
- Only what follows a line's final `}` decides that it announces a literal: any line ending with
  `{digits}` or `{digits+}` is one, wherever the parser would put it (as every server must: the client
  sends the octets anyway). A line ending in anything else ends the command.
- A synchronising literal `{N}` gives a `Continuation` event: the server sends `+ ...` and only then does
  the client send the octets (RFC 3501 §7.5). A literal over the limits is refused *before* that event
  (`FramingError`, non-fatal, code TOOBIG): the client then sends no octets and abandons the command, so
  the next line is a new command. A non-synchronising literal over the limits (`{N+}`) is fatal: its
  octets are already on their way and cannot be told apart from commands (RFC 7888 §4: reply BAD
  [TOOBIG] and close the connection).
- Lines are at most `max_line` octets (CRLF excluded), and the lines of one command together at most
  `max_text`; exceeding either is fatal, detected as soon as the buffered octets pass the limit (a
  client that never sends LF cannot grow the buffer). Where such a line would end is unknown, so
  resynchronising would mean guessing (and a guessed line end is how command smuggling starts).
- A line ending in a bare LF (no CR) is an error: the command is refused with BAD (non-fatal). When that
  line announces a non-synchronising literal, its octets and the rest of the command are read and
  dropped, so that client data is never taken for a command; when it announces a synchronising literal,
  the refusal is sent at once (the client waits for `+`). CR, NUL and 8-bit octets inside a line are the
  parser's business (it refuses them where the grammar does).
- Events are produced lazily, one at a time, from what has been fed so far: `events()` is a generator, and
  `expect_line()` called between two events makes the *next* line a `RawLine` (the AUTHENTICATE
  exchange, RFC 3501 §6.2.2 and RFC 4959, and IDLE's `DONE`, RFC 2177 §3). A client that pipelines
  `DONE` behind IDLE is therefore framed correctly as long as the server switches mode before pulling the
  next event.
- The events depend only on the byte stream, never on how it was split into `feed` calls (tested with
  arbitrary chunkings). After a fatal error the reader yields nothing more: the server closes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "DEFAULT_MAX_COMMAND",
    "DEFAULT_MAX_LINE",
    "DEFAULT_MAX_LITERAL",
    "DEFAULT_MAX_TEXT",
    "CommandLine",
    "CommandReader",
    "Continuation",
    "Event",
    "FramingError",
    "RawLine",
    "split_commands",
]

DEFAULT_MAX_LINE = 8192  # octets in one line, CRLF excluded (RFC 7162 §4 asks servers to take at least 8192)
DEFAULT_MAX_TEXT = 65536  # octets in all the lines of one command, literals excluded
DEFAULT_MAX_LITERAL = 25 * 1024 * 1024  # octets in one literal (an APPEND of a 25 MiB message)
DEFAULT_MAX_COMMAND = 32 * 1024 * 1024  # octets in one command: lines and literals

# RFC 3501 §9 `literal = "{" number "}" CRLF *CHAR8`; RFC 7888 §8 `literal = "{" number64 ["+"] "}" ...`.
# The digits are bounded here only by the line; their count is checked before int() (a 4301-digit
# number makes Python raise ValueError).
_LITERAL_MARKER = re.compile(rb"\{([0-9]+)(\+?)\}\Z")
_MAX_SIZE_DIGITS = 20  # number64 (RFC 9051 §9) has at most 19 digits

# RFC 3501 §9 `tag = 1*<any ASTRING-CHAR except "+">`; used only to name the command in a FramingError.
_TAG = re.compile(rb"[\x21\x23\x24\x26\x27\x2c-\x5b\x5d-\x7a\x7c\x7e]+")


@dataclass(frozen=True, slots=True)
class CommandLine:
    """One whole command as received: `lines[i]` (no CRLF) ends with the marker of `literals[i]`."""

    lines: tuple[bytes, ...]
    literals: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if len(self.lines) != len(self.literals) + 1:
            raise ValueError("a command has one more line than literals")

    @property
    def raw(self) -> bytes:
        """The command's octets as they were on the wire, without the final CRLF (for logs and tests)."""
        out = bytearray(self.lines[0])
        for literal, line in zip(self.literals, self.lines[1:], strict=True):
            out += b"\r\n" + literal + line
        return bytes(out)

    def __repr__(self) -> str:  # literals can be whole messages: show their sizes only
        sizes = ", ".join(f"<{len(lit)} octets>" for lit in self.literals)
        return f"CommandLine(lines={self.lines!r}, literals=({sizes}))"


@dataclass(frozen=True, slots=True)
class Continuation:
    """The client announced a synchronising literal that was accepted: send `+ ...` now (RFC 3501 §7.5)."""


@dataclass(frozen=True, slots=True)
class RawLine:
    """The line asked for by `expect_line()`, without its CRLF (AUTHENTICATE response, IDLE `DONE`)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class FramingError:
    """A command refused before parsing: reply `<tag> BAD [code] text` (or `* BAD` without a tag).

    When `fatal`, send `* BYE text` and close: the stream can no longer be cut into commands.
    """

    tag: str | None
    text: str
    fatal: bool = False
    code: str | None = None


Event = CommandLine | Continuation | RawLine | FramingError


def _tag_of(line: bytes | bytearray) -> str | None:
    match = _TAG.match(line)
    if match is None or (match.end() < len(line) and line[match.end()] != 0x20):
        return None
    return match.group().decode("ascii")


class CommandReader:
    """Cuts the client's byte stream into events. `feed` bytes, then iterate `events()`."""

    def __init__(
        self,
        *,
        max_line: int = DEFAULT_MAX_LINE,
        max_text: int = DEFAULT_MAX_TEXT,
        max_literal: int = DEFAULT_MAX_LITERAL,
        max_command: int = DEFAULT_MAX_COMMAND,
    ) -> None:
        self.max_line = max_line
        self.max_text = max_text
        self.max_literal = max_literal
        self.max_command = max_command
        self._buf = bytearray()
        self._scan = 0  # no LF in _buf[:_scan]
        self._closed = False
        self._raw = False  # the next line is a RawLine
        self._reset()

    def _reset(self) -> None:
        self._lines: list[bytes] = []
        self._literals: list[bytes] = []
        self._tag: str | None = None
        self._text = 0  # octets of lines so far
        self._total = 0  # octets of lines and literals so far
        self._need = 0  # literal octets still to read (state: reading a literal when > 0 or _in_literal)
        self._in_literal = False
        self._literal = bytearray()
        self._error: str | None = None  # set: drop the command, report this at its end

    # -- the server's side ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True after a fatal error: the reader yields no more events."""
        return self._closed

    @property
    def pending(self) -> bool:
        """True when octets were fed that have not made an event yet (a client leaving mid-command)."""
        return bool(self._buf) or bool(self._lines) or self._in_literal

    def feed(self, data: bytes) -> None:
        """Add received octets. Nothing is processed until events are pulled."""
        if not self._closed:
            self._buf += data

    def expect_line(self) -> None:
        """Deliver the next line as a `RawLine` (once), not as a command."""
        self._raw = True

    def events(self) -> Iterator[Event]:
        """Yield the events the octets fed so far make, one at a time (see the module notes)."""
        while (event := self.next_event()) is not None:
            yield event

    def next_event(self) -> Event | None:
        """The next event, or None when more octets are needed (or after a fatal error)."""
        while not self._closed:
            if self._in_literal:
                if not self._read_literal():
                    return None
                continue
            result = self._read_line()
            if not isinstance(result, _More):
                return result
        return None

    # -- internals -----------------------------------------------------------------------------------

    def _overlong(self, text: str, limit: int) -> FramingError:
        if self._raw:
            tag = None
        elif self._lines:
            tag = self._tag
        else:  # the first limit + 1 octets of the line are the same whatever the chunking
            tag = _tag_of(self._buf[: limit + 1])
        return self._fatal(tag, text)

    def _fatal(self, tag: str | None, text: str, code: str | None = None) -> FramingError:
        self._closed = True
        self._buf = bytearray()
        self._reset()
        return FramingError(tag, text, fatal=True, code=code)

    def _refuse(self, text: str, code: str | None = None) -> FramingError:
        event = FramingError(self._tag, text, fatal=False, code=code)
        self._reset()
        return event

    def _read_literal(self) -> bool:
        take = min(self._need, len(self._buf))
        if take:
            if self._error is None:
                self._literal += self._buf[:take]
            del self._buf[:take]
            self._need -= take
        if self._need:
            return False
        self._literals.append(bytes(self._literal))
        self._literal = bytearray()
        self._in_literal = False
        return True

    def _limit(self) -> tuple[int, str]:
        """The most octets the current line may have, and what to say when it has more."""
        line_limit = (self.max_line, f"line too long (max {self.max_line} octets)")
        if self._raw:
            return line_limit
        text_left = self.max_text - self._text
        if text_left < self.max_line:
            return text_left, f"command too long (max {self.max_text} octets outside literals)"
        return line_limit

    def _read_line(self) -> Event | _More | None:
        """One line: an event, None (more octets needed) or _MORE (a literal follows: go on)."""
        limit, too_long = self._limit()
        lf = self._buf.find(b"\n", self._scan)
        if lf < 0:
            # The line may still end in CR: allow limit + 1 octets before giving up on it. The same
            # octets decide as when the LF is already there, so the outcome does not depend on chunking.
            if len(self._buf) > limit + 1:
                return self._overlong(too_long, limit)
            self._scan = len(self._buf)
            return None
        crlf = lf > 0 and self._buf[lf - 1] == 0x0D
        if (lf - 1 if crlf else lf) > limit:
            return self._overlong(too_long, limit)
        line = bytes(self._buf[: lf - 1 if crlf else lf])
        del self._buf[: lf + 1]
        self._scan = 0

        if self._raw:  # RFC 3501 §6.2.2, RFC 2177 §3: one line, not a command
            self._raw = False
            if not crlf:
                return FramingError(None, "line must end with CRLF")
            return RawLine(line)

        if not self._lines and not self._literals:
            self._tag = _tag_of(line)
        self._text += len(line)
        self._total += len(line)
        if not crlf and self._error is None:
            self._error = "line must end with CRLF"  # RFC 3501 §2.2: lines end with CRLF

        marker = _LITERAL_MARKER.search(line)
        if marker is None:  # end of the command
            if self._error is not None:
                return self._refuse(self._error)
            self._lines.append(line)
            event = CommandLine(tuple(self._lines), tuple(self._literals))
            self._reset()
            return event

        digits, plus = marker.group(1), marker.group(2) == b"+"
        size = int(digits) if len(digits) <= _MAX_SIZE_DIGITS else self.max_command + 1
        too_big = size > self.max_literal or self._total + size > self.max_command
        if too_big:
            text = f"literal too big (max {min(self.max_literal, self.max_command - self._total)} octets)"
            if plus:  # RFC 7888 §4: the octets are coming anyway
                return self._fatal(self._tag, text, code="TOOBIG")
            return self._refuse(text, code="TOOBIG")  # RFC 3501 §7.5: no "+", the client gives up
        if not plus and self._error is not None:
            return self._refuse(self._error)  # the client waits for "+": tell it now
        self._lines.append(line)
        self._total += size
        self._need = size
        self._in_literal = True
        if not plus:
            return Continuation()
        return _MORE


class _More:
    """Internal: a literal follows, keep reading."""


_MORE = _More()


def split_commands(data: bytes, **limits: int) -> list[Event]:
    """All the events of a complete byte stream (tests, transcripts)."""
    reader = CommandReader(**limits)
    reader.feed(data)
    return list(reader.events())
