"""Property tests (hypothesis): serialise -> parse round trips, sequence sets, split-invariant framing,
modified UTF-7, and "the parser raises nothing but ParseError" on arbitrary input."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.imap.proto import serialize as s
from gateway.imap.proto.command import AppendArgs, IdArgs, LoginArgs
from gateway.imap.proto.framing import CommandLine, CommandReader, Event
from gateway.imap.proto.lexer import ParseError
from gateway.imap.proto.parser import parse_command
from gateway.imap.proto.sequence import MAX_NUMBER, SequenceSet
from gateway.imap.proto.utf7 import decode, encode

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text that can travel in IMAP strings: any Unicode scalar value but NUL (surrogates cannot be UTF-8).
imap_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
no_nul_bytes = st.binary(max_size=200).map(lambda b: b.replace(b"\x00", b"\x01"))


def frame_one(wire: bytes) -> CommandLine:
    """The single command of `wire` (continuations skipped)."""
    reader = CommandReader()
    reader.feed(wire)
    commands = [event for event in reader.events() if isinstance(event, CommandLine)]
    assert len(commands) == 1
    assert not reader.pending
    return commands[0]


# -- serialise -> parse ------------------------------------------------------------------------------


@SETTINGS
@given(userid=imap_text, password=imap_text)
def test_astring_and_string_round_trip(userid: str, password: str) -> None:
    wire = b"a LOGIN " + s.astring(userid) + b" " + s.string(password) + b"\r\n"
    assert parse_command(frame_one(wire)).args == LoginArgs(userid, password)


@SETTINGS
@given(userid=imap_text, password=imap_text)
def test_forced_literals_round_trip(userid: str, password: str) -> None:
    wire = b"a LOGIN " + s.literal(userid) + b" " + s.literal(password) + b"\r\n"
    assert parse_command(frame_one(wire)).args == LoginArgs(userid, password)


@SETTINGS
@given(
    pairs=st.dictionaries(
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30), st.none() | imap_text, max_size=5
    )
)
def test_nstring_round_trip(pairs: dict[str, str | None]) -> None:
    # Field names are unique case-insensitively (RFC 2971): keep the first of each.
    unique: dict[str, tuple[str, str | None]] = {}
    for field, value in pairs.items():
        unique.setdefault(field.lower(), (field, value))
    params = tuple(unique.values())
    body = b" ".join(s.string(field) + b" " + s.nstring(value) for field, value in params)
    args = parse_command(frame_one(b"a ID (" + body + b")\r\n")).args
    assert args == IdArgs(params)


@SETTINGS
@given(message=no_nul_bytes)
def test_append_literal_octets_exact(message: bytes) -> None:
    wire = b"a APPEND Drafts (\\Draft) " + s.literal(message) + b"\r\n"
    assert parse_command(frame_one(wire)).args == AppendArgs("Drafts", message, ("\\Draft",))


# -- sequence sets -----------------------------------------------------------------------------------

bound = st.none() | st.integers(1, MAX_NUMBER)


@SETTINGS
@given(ranges=st.lists(st.tuples(bound, bound), min_size=1, max_size=8))
def test_sequence_set_text_round_trip(ranges: list[tuple[int | None, int | None]]) -> None:
    seq = SequenceSet(tuple((low, low) if low == high else (low, high) for low, high in ranges))
    assert SequenceSet.parse(str(seq)) == seq


@SETTINGS
@given(numbers=st.sets(st.integers(1, 300), min_size=1, max_size=60), largest=st.integers(0, 320))
def test_sequence_set_compress_and_select(numbers: set[int], largest: int) -> None:
    text = s.sequence_set(numbers)
    seq = SequenceSet.parse(text)
    every = list(range(1, 321))
    assert seq.select(every, largest=largest) == sorted(numbers)
    assert all(seq.contains(n, largest) == (n in numbers) for n in range(0, 321))
    assert len(text) <= len(",".join(map(str, sorted(numbers))))


@SETTINGS
@given(
    ranges=st.lists(st.tuples(bound, bound), min_size=1, max_size=6),
    largest=st.integers(0, 50),
    existing=st.sets(st.integers(1, 60)),
)
def test_sequence_set_select_matches_brute_force(
    ranges: list[tuple[int | None, int | None]], largest: int, existing: set[int]
) -> None:
    small = [(None if a is None else a % 70 + 1, None if b is None else b % 70 + 1) for a, b in ranges]
    seq = SequenceSet(tuple(small))

    def named(n: int) -> bool:
        for low, high in small:
            lo = largest if low is None else low
            hi = largest if high is None else high
            if min(lo, hi) <= n <= max(lo, hi):
                return True
        return False

    values = sorted(existing)
    assert seq.select(values, largest=largest) == [n for n in values if named(n)]


# -- framing is split-invariant ----------------------------------------------------------------------

command_piece = st.one_of(
    st.sampled_from([b"a NOOP\r\n", b"b LOGIN x y\r\n", b"\r\n", b"c NOOP\n", b"d SELECT INBOX\r", b"\n"]),
    no_nul_bytes.map(lambda b: b"e APPEND x {%d}\r\n" % len(b) + b + b"\r\n"),
    no_nul_bytes.map(lambda b: b"f APPEND x {%d+}\r\n" % len(b) + b + b" {0}\r\n\r\n"),
    no_nul_bytes.map(lambda b: b"g APPEND x {%d+}\n" % len(b) + b + b"\r\n"),
    st.binary(max_size=60),
    st.just(b"h " + b"x" * 70 + b"\r\n"),  # over the test's line limit
    st.just(b"i APPEND x {500}\r\n"),  # over the test's literal limit
)
LIMITS = {"max_line": 64, "max_text": 150, "max_literal": 300, "max_command": 400}


def events_of(chunks: list[bytes]) -> list[Event]:
    reader = CommandReader(**LIMITS)
    events: list[Event] = []
    for chunk in chunks:
        reader.feed(chunk)
        events.extend(reader.events())
    return events


@SETTINGS
@given(pieces=st.lists(command_piece, max_size=8), cuts=st.lists(st.integers(0, 5000), max_size=20))
def test_framing_is_split_invariant(pieces: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(pieces)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    chunks = [stream[i:j] for i, j in zip([0, *points], [*points, len(stream)], strict=True)]
    assert events_of(chunks) == events_of([stream])
    assert events_of([stream[i : i + 1] for i in range(len(stream))]) == events_of([stream])


# -- modified UTF-7 ----------------------------------------------------------------------------------


@SETTINGS
@given(name=st.text(st.characters(codec="utf-8"), max_size=30))
def test_utf7_round_trip(name: str) -> None:
    wire = encode(name)
    assert all(0x20 <= ord(c) <= 0x7E for c in wire)
    assert decode(wire) == name


@SETTINGS
@given(wire=st.text(st.sampled_from("&-AOkZeVnLIqe,+/=2D3abc é\t"), max_size=20))
def test_utf7_decode_is_canonical_or_refuses(wire: str) -> None:
    try:
        name = decode(wire)
    except ValueError:
        return
    assert encode(name) == wire


# -- the parser raises only ParseError ---------------------------------------------------------------

VOCABULARY = [
    b"a",
    b"UID",
    b"FETCH",
    b"STORE",
    b"SEARCH",
    b"LIST",
    b"STATUS",
    b"APPEND",
    b"SELECT",
    b"ID",
    b"LOGIN",
    b"AUTHENTICATE",
    b"ENABLE",
    b"COPY",
    b"MOVE",
    b"EXPUNGE",
    b"RENAME",
    b"LSUB",
    b"NOT",
    b"OR",
    b"(",
    b")",
    b"[",
    b"]",
    b"<",
    b">",
    b"1",
    b"0",
    b"*",
    b":",
    b",",
    b"$",
    b".",
    b"BODY",
    b"BODY.PEEK",
    b"HEADER.FIELDS",
    b"MIME",
    b"TEXT",
    b"FLAGS",
    b"+FLAGS.SILENT",
    b"\\Seen",
    b"\\",
    b'"',
    b'"x"',
    b"NIL",
    b"{3}",
    b"{1+}",
    b"RETURN",
    b"CHARSET",
    b"UTF-8",
    b"MODSEQ",
    b"CHANGEDSINCE",
    b"UNCHANGEDSINCE",
    b"SINCE",
    b"1-Feb-1994",
    b'"17-Jul-1996 02:44:25 -0700"',
    b"SPECIAL-USE",
    b"HEADER",
    b"INBOX",
    b"=",
    b"AGJvYg==",
    b"\xc3\xa9",
    b"\x00",
]
token_soup = st.lists(st.sampled_from(VOCABULARY), max_size=25).map(
    lambda tokens: b"".join(t + (b" " if i % 3 else b"") for i, t in enumerate(tokens))
)


def parse_all(data: bytes) -> None:
    """Parse every command of `data`: only ParseError may come out, its text fit for a reply line."""
    reader = CommandReader(max_literal=1000)
    reader.feed(data)
    for event in reader.events():
        if isinstance(event, CommandLine):
            try:
                parse_command(event)
            except ParseError as exc:
                s.tagged(exc.tag or "x", "BAD", exc.text)  # ValueError if the text could not be sent


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=300))
def test_parser_raises_only_parse_error_on_random_bytes(data: bytes) -> None:
    parse_all(data + b"\r\n")


@settings(max_examples=700, deadline=None)
@given(
    head=st.sampled_from([b"a ", b"a UID ", b"t1 SEARCH ", b"t1 FETCH 1 ", b"t1 STORE 1 "]),
    soup=token_soup,
    literal=no_nul_bytes,
)
def test_parser_raises_only_parse_error_on_token_soup(head: bytes, soup: bytes, literal: bytes) -> None:
    parse_all(head + soup + b"\r\n")
    lines = (head + soup + b" {%d}" % len(literal), soup[:10])
    with contextlib.suppress(ParseError):
        parse_command(CommandLine(lines, (literal,)))
