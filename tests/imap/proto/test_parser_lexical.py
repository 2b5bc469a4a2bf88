"""Lexical rules through real commands: quoted strings, literals, astrings, dates, sequence sets."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.imap.proto.command import CopyArgs, DateKey, MailboxArgs
from gateway.imap.proto.framing import CommandLine
from gateway.imap.proto.lexer import MAX_DEPTH
from gateway.imap.proto.parser import parse_command
from gateway.imap.proto.sequence import SequenceSet
from tests.imap.proto.helpers import error, parse

# -- quoted strings (RFC 3501 §4.3, §9 quoted) ------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "name"),
    [
        (b'""', ""),
        (b'"a b"', "a b"),
        (b'"a\\"b"', 'a"b'),
        (b'"a\\\\b"', "a\\b"),
        (b'"\xc3\xa9t\xc3\xa9"', "été"),  # 8-bit UTF-8 accepted in quoted strings (RFC 6855 / 9051)
        (b'"{3}"', "{3}"),
        (b'"(x)"', "(x)"),
    ],
)
def test_quoted_strings(wire: bytes, name: str) -> None:
    assert parse(b"a CREATE " + wire).args == MailboxArgs(name)


@pytest.mark.parametrize(
    ("wire", "text"),
    [
        (b'"abc', "unterminated quoted mailbox name"),
        (b'"abc\\"', "unterminated quoted mailbox name"),
        (b'"abc\\', "unterminated quoted mailbox name"),
        (b'"a\\nb"', "invalid escape \\n in quoted mailbox name"),
        (b'"a\x00b"', "NUL in quoted mailbox name"),
        (b'"a\rb"', "CR in quoted mailbox name"),
        (b'"a"b', "invalid mailbox name"),
        (b'"\xff"', "mailbox name is not valid UTF-8"),
        (b'"a\x01b"', "invalid character in mailbox name"),
    ],
)
def test_quoted_string_errors(wire: bytes, text: str) -> None:
    assert error(b"a CREATE " + wire) == ("a", text)


# -- literals (RFC 3501 §4.3, RFC 7888) -------------------------------------------------------------


def test_literals_sync_and_non_sync() -> None:
    assert parse(b"a CREATE {5}\r\nab cd").args == MailboxArgs("ab cd")
    assert parse(b'a CREATE {5+}\r\na"b)c').args == MailboxArgs('a"b)c')
    assert parse(b"a CREATE {0}\r\n").args == MailboxArgs("")


def test_literal_followed_by_more_arguments() -> None:
    assert parse(b"a COPY 1 {4}\r\nSent").args == CopyArgs(SequenceSet(((1, 1),)), "Sent")
    assert parse(b"a RENAME {1}\r\nx {1+}\r\ny").args is not None


@pytest.mark.parametrize(
    ("line", "text"),
    [
        (b"a CREATE {abc}", "literal size is not a number: {abc}"),
        (b"a CREATE {-1}", "literal size is not a number: {-1}"),
        (b"a CREATE {}", "literal size is not a number: {}"),
        (b"a CREATE {3", "invalid literal mailbox name"),
        (b"a CREATE {3} x", "literal mailbox name must end its line"),
        (b"a CREATE {3}\r\nabcx", "invalid mailbox name"),
        (b"a CREATE {1}\r\n\x00", "NUL in literal mailbox name"),
    ],
)
def test_literal_errors(line: bytes, text: str) -> None:
    assert error(line) == ("a", text)


def test_literal_marker_in_last_line_without_data() -> None:
    # Built by hand: a marker the framing would have treated as a literal, with no data after it.
    line = CommandLine((b"a CREATE {3}",))
    with pytest.raises(Exception, match="literal mailbox name must end its line"):
        parse_command(line)


# -- mailbox names, astrings ------------------------------------------------------------------------


@pytest.mark.parametrize("wire", [b"INBOX", b"inbox", b"InBoX", b'"inbox"', b"{5}\r\niNbOx"])
def test_inbox_is_case_insensitive(wire: bytes) -> None:
    assert parse(b"a DELETE " + wire).args == MailboxArgs("INBOX")


def test_other_names_keep_their_case() -> None:
    assert parse(b"a CREATE INBOX.Sent").args == MailboxArgs("INBOX.Sent")
    assert parse(b"a CREATE inboxes").args == MailboxArgs("inboxes")
    assert parse(b"a CREATE Entw&APw-rfe").args == MailboxArgs("Entw&APw-rfe")
    assert parse(b"a CREATE a]b").args == MailboxArgs("a]b")


@pytest.mark.parametrize(
    ("line", "text"),
    [
        (b"a CREATE", "missing mailbox name"),
        (b"a CREATE ", "missing mailbox name"),
        (b"a CREATE  x", "extra space before mailbox name"),
        (b"a CREATE a*b", "invalid mailbox name"),
        (b"a CREATE a%", "invalid mailbox name"),
        (b"a CREATE (x)", "invalid mailbox name"),
        (b"a CREATE x y", "unexpected extra arguments"),
        (b"a CREATE \xc3\xa9", "invalid mailbox name"),
    ],
)
def test_mailbox_errors(line: bytes, text: str) -> None:
    assert error(line) == ("a", text)


# -- dates (RFC 3501 §9 date, date-time) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "date"),
    [
        (b"1-Feb-1994", dt.date(1994, 2, 1)),
        (b"01-feb-1994", dt.date(1994, 2, 1)),
        (b'"31-DEC-2024"', dt.date(2024, 12, 31)),
        (b"29-Feb-2024", dt.date(2024, 2, 29)),
    ],
)
def test_dates(wire: bytes, date: dt.date) -> None:
    assert parse(b"a SEARCH SINCE " + wire).args.key == DateKey("SINCE", date)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "wire",
    [b"31-Feb-1994", b"1-Foo-1994", b"1-Feb-94", b"123-Feb-1994", b"1/2/1994", b"1-Feb-1994x", b'"1-Feb-1994 "'],
)
def test_invalid_dates(wire: bytes) -> None:
    shown = wire.strip(b'"').decode()
    assert error(b"a SEARCH SINCE " + wire) == ("a", f"invalid SINCE date {shown}")


def test_date_time_in_append() -> None:
    tz = dt.timezone(-dt.timedelta(hours=7))
    expected = dt.datetime(1996, 7, 17, 2, 44, 25, tzinfo=tz)
    for wire in (b'"17-Jul-1996 02:44:25 -0700"', b'" 7-Jul-1996 02:44:25 -0700"', b'"7-jul-1996 02:44:25 +0000"'):
        args = parse(b"a APPEND x " + wire + b" {1}\r\nm").args
        assert args.internal_date is not None  # type: ignore[union-attr]
    assert parse(b'a APPEND x "17-Jul-1996 02:44:25 -0700" {1}\r\nm').args.internal_date == expected  # type: ignore[union-attr]
    seven = parse(b'a APPEND x " 7-Jul-1996 02:44:25 +0130" {1}\r\nm').args.internal_date  # type: ignore[union-attr]
    assert seven == dt.datetime(1996, 7, 7, 2, 44, 25, tzinfo=dt.timezone(dt.timedelta(hours=1, minutes=30)))


@pytest.mark.parametrize(
    "wire",
    [
        b'"17-Jul-1996 02:44:25"',
        b'"17-Jul-1996 24:00:00 +0000"',
        b'"17-Jul-1996 02:60:00 +0000"',
        b'"17-Jul-1996 02:44:60 +0000"',
        b'"17-Jul-1996 02:44:25 +2400"',
        b'"17-Jul-1996 02:44:25 +0060"',
        b'"17-Jul-1996  02:44:25 +0000"',
        b'"30-Feb-1996 02:44:25 +0000"',
        b'"17-Jul-1996 2:44:25 +0000"',
    ],
)
def test_invalid_date_times(wire: bytes) -> None:
    shown = wire.strip(b'"').decode()
    assert error(b"a APPEND x " + wire + b" {1}\r\nm") == ("a", f"invalid APPEND date-time {shown}")


def test_unquoted_date_time() -> None:
    assert error(b"a APPEND x (\\Seen) 17-Jul-1996 {1}\r\nm") == ("a", "invalid message: expected a literal")


# -- sequence sets (RFC 3501 §9 sequence-set) -------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "ranges"),
    [
        (b"1", ((1, 1),)),
        (b"1:5", ((1, 5),)),
        (b"*", ((None, None),)),
        (b"5:*", ((5, None),)),
        (b"*:5", ((None, 5),)),
        (b"1,3:4,*", ((1, 1), (3, 4), (None, None))),
        (b"4294967295", ((4294967295, 4294967295),)),
        (b"9:2", ((9, 2),)),
    ],
)
def test_sequence_sets(wire: bytes, ranges: tuple[tuple[int | None, int | None], ...]) -> None:
    assert parse(b"a COPY " + wire + b" x").args == CopyArgs(SequenceSet(ranges), "x")


@pytest.mark.parametrize(
    "wire",
    [b"0", b"1:", b":1", b"a", b"1:x", b"1,", b",1", b"1,,2", b"01", b"1:0", b"4294967296", b"1:2:3", b"**", b"-1"],
)
def test_invalid_sequence_sets(wire: bytes) -> None:
    assert error(b"a COPY " + wire + b" x") == ("a", f"invalid sequence set {wire.decode()}")


def test_sequence_set_errors_other() -> None:
    assert error(b"a COPY $ x") == ("a", "SEARCHRES ($) is not supported")
    assert error(b"a COPY") == ("a", "missing sequence set")
    assert error(b"a COPY 1") == ("a", "missing mailbox name")
    assert error(b"a COPY (1) x") == ("a", "invalid sequence set (1")


def test_sequence_set_resolve() -> None:
    seq = SequenceSet.parse("1,3:4,*")
    assert seq.resolve(10) == ((1, 1), (3, 4), (10, 10))
    assert SequenceSet.parse("5:2,3:7,9,8").resolve(100) == ((2, 9),)
    assert SequenceSet.parse("559:*").resolve(100) == ((100, 559),)  # RFC 3501 §6.4.8
    assert SequenceSet.parse("*").resolve(0) == ((0, 0),)
    assert seq.contains(4, 10)
    assert not seq.contains(5, 10)
    assert seq.contains(10, 10)


def test_sequence_set_select() -> None:
    uids = [3, 7, 8, 20, 4000000000]
    assert SequenceSet.parse("1:*").select(uids) == uids
    assert SequenceSet.parse("4:8,*").select(uids) == [7, 8, 4000000000]
    assert SequenceSet.parse("9999999:*").select(uids) == [4000000000]
    assert SequenceSet.parse("*").select([]) == []
    assert SequenceSet.parse("5:6").select(uids) == []


def test_sequence_set_helpers() -> None:
    assert str(SequenceSet.parse(b"1,3:4,*,5:*")) == "1,3:4,*,5:*"
    assert SequenceSet.parse("2,9:*").highest_explicit == 9
    assert SequenceSet.parse("*").highest_explicit == 0
    assert SequenceSet.parse("1:*").has_star
    assert not SequenceSet.parse("1:2").has_star
    assert str(SequenceSet.from_numbers([5, 1, 2, 3, 3, 9, 10])) == "1:3,5,9:10"
    with pytest.raises(ValueError, match="cannot be empty"):
        SequenceSet.from_numbers([])
    with pytest.raises(ValueError, match="not a message number or UID: 0"):
        SequenceSet.from_numbers([0])


def test_nesting_is_bounded() -> None:
    deep = b"NOT " * (MAX_DEPTH + 1) + b"SEEN"
    assert error(b"a SEARCH " + deep) == ("a", f"nesting too deep (max {MAX_DEPTH} levels)")
    assert error(b"a SEARCH " + b"(" * 5000 + b"SEEN" + b")" * 5000) == (
        "a",
        f"nesting too deep (max {MAX_DEPTH} levels)",
    )
    parse(b"a SEARCH " + b"NOT " * MAX_DEPTH + b"SEEN")
