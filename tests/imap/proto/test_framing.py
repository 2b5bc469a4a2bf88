"""CommandReader: commands, literals, continuations, limits, raw lines, and chunking invariance."""

from __future__ import annotations

import pytest

from gateway.imap.proto.framing import (
    CommandLine,
    CommandReader,
    Continuation,
    Event,
    FramingError,
    RawLine,
    split_commands,
)


def bytewise(data: bytes, **limits: int) -> list[Event]:
    """The events when the stream arrives one octet at a time (pulling events after each octet)."""
    reader = CommandReader(**limits)
    events: list[Event] = []
    for i in range(len(data)):
        reader.feed(data[i : i + 1])
        events.extend(reader.events())
    return events


def both(data: bytes, **limits: int) -> list[Event]:
    """The events of `data`, checked to be the same whole and octet by octet."""
    whole = split_commands(data, **limits)
    assert bytewise(data, **limits) == whole
    return whole


def test_simple_commands_pipelined() -> None:
    assert both(b"a NOOP\r\nb CAPABILITY\r\n") == [
        CommandLine((b"a NOOP",)),
        CommandLine((b"b CAPABILITY",)),
    ]


def test_incomplete_line_waits() -> None:
    reader = CommandReader()
    reader.feed(b"a NO")
    assert list(reader.events()) == []
    assert reader.pending
    reader.feed(b"OP\r")
    assert list(reader.events()) == []
    reader.feed(b"\n")
    assert list(reader.events()) == [CommandLine((b"a NOOP",))]
    assert not reader.pending


def test_sync_literal_continuation_then_data() -> None:
    reader = CommandReader()
    reader.feed(b"a LOGIN {3}\r\n")
    assert list(reader.events()) == [Continuation()]
    reader.feed(b"bob {6}\r\n")
    assert list(reader.events()) == [Continuation()]
    reader.feed(b"secret\r\n")
    assert list(reader.events()) == [CommandLine((b"a LOGIN {3}", b" {6}", b""), (b"bob", b"secret"))]


def test_non_sync_literals_need_no_continuation() -> None:
    assert both(b"a LOGIN {3+}\r\nbob {6+}\r\nsecret\r\nb NOOP\r\n") == [
        CommandLine((b"a LOGIN {3+}", b" {6+}", b""), (b"bob", b"secret")),
        CommandLine((b"b NOOP",)),
    ]


def test_literal_may_hold_crlf_and_marker_like_text() -> None:
    payload = b"x {5}\r\nHELLO\r\n"
    assert both(b"a APPEND INBOX {%d+}\r\n" % len(payload) + payload + b"\r\n") == [
        CommandLine((b"a APPEND INBOX {14+}", b""), (payload,))
    ]


def test_empty_literal() -> None:
    assert both(b"a LOGIN {0}\r\n {0+}\r\n\r\n") == [
        Continuation(),
        CommandLine((b"a LOGIN {0}", b" {0+}", b""), (b"", b"")),
    ]


def test_empty_line_is_a_command_line() -> None:
    assert both(b"\r\n") == [CommandLine((b"",))]


def test_marker_not_at_line_end_is_no_literal() -> None:
    assert both(b"a LOGIN {3} x\r\n") == [CommandLine((b"a LOGIN {3} x",))]


def test_literal_size_not_a_number_is_left_to_the_parser() -> None:
    assert both(b"a LOGIN {abc}\r\n") == [CommandLine((b"a LOGIN {abc}",))]


def test_raw_line_mode_for_authenticate_and_idle() -> None:
    reader = CommandReader()
    reader.feed(b"a IDLE\r\nDONE\r\nb NOOP\r\n")
    events = reader.events()
    assert next(events) == CommandLine((b"a IDLE",))
    reader.expect_line()  # switched between two events: applies to the pipelined DONE
    assert next(events) == RawLine(b"DONE")
    assert next(events) == CommandLine((b"b NOOP",))
    assert list(events) == []


def test_raw_line_keeps_literal_marker_text() -> None:
    reader = CommandReader()
    reader.expect_line()
    reader.feed(b"dGVzdA== {5}\r\n")
    assert list(reader.events()) == [RawLine(b"dGVzdA== {5}")]


def test_raw_line_bare_lf() -> None:
    reader = CommandReader()
    reader.expect_line()
    reader.feed(b"DONE\nb NOOP\r\n")
    assert list(reader.events()) == [
        FramingError(None, "line must end with CRLF"),
        CommandLine((b"b NOOP",)),
    ]


def test_bare_lf_is_refused_and_next_command_read() -> None:
    assert both(b"a NOOP\nb NOOP\r\n") == [
        FramingError("a", "line must end with CRLF"),
        CommandLine((b"b NOOP",)),
    ]


def test_bare_lf_before_sync_literal_refused_at_once() -> None:
    # The client waits for "+": the refusal must come now, and the next line is a new command.
    assert both(b"a LOGIN {3}\nb NOOP\r\n") == [
        FramingError("a", "line must end with CRLF"),
        CommandLine((b"b NOOP",)),
    ]


def test_bare_lf_before_non_sync_literal_skips_its_octets() -> None:
    # The literal's octets must never be taken for a command (command smuggling).
    assert both(b"a APPEND INBOX {12+}\nx DELETE y\r\n\r\nb NOOP\r\n") == [
        FramingError("a", "line must end with CRLF"),
        CommandLine((b"b NOOP",)),
    ]


def test_bare_lf_in_a_later_line_of_the_command() -> None:
    assert both(b"a LOGIN {3+}\r\nbob x\nb NOOP\r\n") == [
        FramingError("a", "line must end with CRLF"),
        CommandLine((b"b NOOP",)),
    ]


def test_bare_cr_stays_in_the_line() -> None:
    assert both(b"a NO\rOP\r\n") == [CommandLine((b"a NO\rOP",))]


def test_line_too_long_is_fatal() -> None:
    data = b"a1 " + b"x" * 20 + b"\r\nb NOOP\r\n"
    assert both(data, max_line=16) == [FramingError("a1", "line too long (max 16 octets)", fatal=True)]


def test_line_too_long_detected_without_lf() -> None:
    reader = CommandReader(max_line=16)
    reader.feed(b"a1 " + b"x" * 13)  # 16 octets: may still end with CRLF
    assert list(reader.events()) == []
    reader.feed(b"yy")  # 18 octets without LF: the line is already too long
    assert list(reader.events()) == [FramingError("a1", "line too long (max 16 octets)", fatal=True)]
    assert reader.closed
    reader.feed(b"\r\nb NOOP\r\n")
    assert list(reader.events()) == []


def test_line_at_the_limit_is_accepted() -> None:
    line = b"a " + b"x" * 14
    assert both(line + b"\r\n", max_line=16) == [CommandLine((line,))]


def test_command_text_too_long_over_several_lines() -> None:
    data = b"a LOGIN {1+}\r\nx " + b"y" * 30 + b"\r\n"
    assert both(data, max_text=32) == [
        FramingError("a", "command too long (max 32 octets outside literals)", fatal=True)
    ]


def test_sync_literal_too_big_is_refused_without_continuation() -> None:
    assert both(b"a APPEND INBOX {101}\r\nb NOOP\r\n", max_literal=100) == [
        FramingError("a", "literal too big (max 100 octets)", code="TOOBIG"),
        CommandLine((b"b NOOP",)),
    ]


def test_non_sync_literal_too_big_is_fatal() -> None:
    assert both(b"a APPEND INBOX {101+}\r\n" + b"x" * 101 + b"\r\n", max_literal=100) == [
        FramingError("a", "literal too big (max 100 octets)", fatal=True, code="TOOBIG")
    ]


def test_literal_size_with_too_many_digits() -> None:
    assert both(b"a APPEND INBOX {" + b"9" * 5000 + b"}\r\n", max_line=8192) == [
        FramingError("a", "literal too big (max 26214400 octets)", code="TOOBIG")
    ]


def test_command_total_too_big() -> None:
    data = b"a LOGIN {60+}\r\n" + b"x" * 60 + b" {60}\r\nb NOOP\r\n"
    assert both(data, max_literal=100, max_command=100) == [
        FramingError("a", "literal too big (max 22 octets)", code="TOOBIG"),
        CommandLine((b"b NOOP",)),
    ]


@pytest.mark.parametrize(
    ("line", "tag"),
    [(b"* NOOP", None), (b"+ x", None), (b"a(b NOOP", None), (b"", None), (b"tag", "tag"), (b" x", None)],
)
def test_framing_error_tag(line: bytes, tag: str | None) -> None:
    assert both(line + b"\n") == [FramingError(tag, "line must end with CRLF")]


def test_raw_and_literal_octets() -> None:
    command = CommandLine((b"a LOGIN {3}", b" {2+}", b""), (b"bob", b"pw"))
    assert command.raw == b"a LOGIN {3}\r\nbob {2+}\r\npw"
    assert "bob" not in repr(command)


def test_command_line_shape_checked() -> None:
    with pytest.raises(ValueError, match="one more line than literals"):
        CommandLine((b"a",), (b"x",))


def test_large_literal_in_big_chunks() -> None:
    body = b"0123456789abcdef" * 65536  # 1 MiB
    reader = CommandReader()
    reader.feed(b"a APPEND INBOX {%d+}\r\n" % len(body))
    for i in range(0, len(body), 65536):
        reader.feed(body[i : i + 65536])
        assert list(reader.events()) == []
    reader.feed(b"\r\n")
    [event] = list(reader.events())
    assert isinstance(event, CommandLine)
    assert event.literals == (body,)
