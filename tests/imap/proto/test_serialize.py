"""Response writing: strings, astrings, lists, flags, sequence sets, dates, status lines, FETCH labels."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.imap.proto import serialize as s
from gateway.imap.proto.command import BodySection, Partial, Section, SectionText


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        ("", b'""'),
        ("hello world", b'"hello world"'),
        ('a"b\\c', b'"a\\"b\\\\c"'),
        ("été", b"{5}\r\n\xc3\xa9t\xc3\xa9"),
        (b"a\r\nb", b"{4}\r\na\r\nb"),
        (b"tab\there", b"{8}\r\ntab\there"),
        (b"\x7f", b"{1}\r\n\x7f"),
        ("x" * 1024, b'"' + b"x" * 1024 + b'"'),
        ("x" * 1025, b"{1025}\r\n" + b"x" * 1025),
    ],
)
def test_string_quoted_when_safe_literal_otherwise(value: str | bytes, wire: bytes) -> None:
    assert s.string(value) == wire


def test_nul_cannot_be_sent() -> None:
    with pytest.raises(ValueError, match="NUL cannot be sent"):
        s.string(b"a\x00b")
    with pytest.raises(ValueError, match="NUL cannot be sent"):
        s.literal(b"\x00")


def test_quoted_refuses_unsafe_octets() -> None:
    for value in (b"a\rb", b"a\nb", b"\x00", b"\xc3\xa9", b"\x01"):
        with pytest.raises(ValueError, match="only printable US-ASCII"):
            s.quoted(value)


def test_nstring() -> None:
    assert s.nstring(None) == b"NIL"
    assert s.nstring("NIL") == b'"NIL"'
    assert s.nstring(b"") == b'""'


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        ("INBOX", b"INBOX"),
        ("Sent]", b"Sent]"),
        ("Entw&APw-rfe", b"Entw&APw-rfe"),
        ("", b'""'),
        ("nil", b'"nil"'),
        ("a b", b'"a b"'),
        ("a*", b'"a*"'),
        ("a%", b'"a%"'),
        ("(x)", b'"(x)"'),
        ("{3}", b'"{3}"'),
        ('a"b', b'"a\\"b"'),
        ("é", b"{2}\r\n\xc3\xa9"),
    ],
)
def test_astring_and_mailbox(value: str, wire: bytes) -> None:
    assert s.astring(value) == wire
    assert s.mailbox(value) == wire


def test_lists_and_flags() -> None:
    assert s.paren_list([b"a", b"b"]) == b"(a b)"
    assert s.paren_list([]) == b"()"
    assert s.flag_list(["\\Seen", "$Junk", "\\*"]) == b"(\\Seen $Junk \\*)"
    assert s.flag_list([]) == b"()"
    for bad in ("a b", "\\", "", "(x", "é", "a]"):
        with pytest.raises(ValueError, match="not an IMAP flag"):
            s.flag_list([bad])


@pytest.mark.parametrize(
    ("numbers", "text"),
    [
        ([1], "1"),
        ([1, 2, 3, 5], "1:3,5"),
        ([5, 3, 1, 2, 2], "1:3,5"),
        ([10, 12, 11, 20, 4294967295], "10:12,20,4294967295"),
        (range(1, 1001), "1:1000"),
    ],
)
def test_sequence_set(numbers: list[int], text: str) -> None:
    assert s.sequence_set(numbers) == text


def test_date_time() -> None:
    tz = dt.timezone(-dt.timedelta(hours=7))
    assert s.date_time(dt.datetime(1996, 7, 17, 2, 44, 25, tzinfo=tz)) == b'"17-Jul-1996 02:44:25 -0700"'
    assert s.date_time(dt.datetime(2024, 1, 7, 23, 5, 0, tzinfo=dt.UTC)) == b'" 7-Jan-2024 23:05:00 +0000"'
    half = dt.timezone(dt.timedelta(hours=5, minutes=30))
    assert s.date_time(dt.datetime(2024, 12, 31, 0, 0, 0, tzinfo=half)) == b'"31-Dec-2024 00:00:00 +0530"'
    with pytest.raises(ValueError, match="timezone-aware"):
        s.date_time(dt.datetime(2024, 1, 1))


def test_status_responses() -> None:
    assert s.tagged("A1", "OK", "LOGIN completed") == b"A1 OK LOGIN completed\r\n"
    assert s.tagged("A1", "NO", "no such mailbox", code="TRYCREATE") == b"A1 NO [TRYCREATE] no such mailbox\r\n"
    assert s.tagged("a", "BAD", "unknown command FROB") == b"a BAD unknown command FROB\r\n"
    assert s.untagged_status("OK", "UIDs valid", code="UIDVALIDITY 3857529045") == (
        b"* OK [UIDVALIDITY 3857529045] UIDs valid\r\n"
    )
    assert s.untagged_status("BYE", "line too long") == b"* BYE line too long\r\n"
    assert (
        s.untagged_status("OK", "x", code="PERMANENTFLAGS (\\Seen \\*)") == b"* OK [PERMANENTFLAGS (\\Seen \\*)] x\r\n"
    )
    assert s.untagged(b"3 EXISTS") == b"* 3 EXISTS\r\n"
    assert s.untagged("SEARCH 2 3") == b"* SEARCH 2 3\r\n"
    assert s.continuation() == b"+ Ready\r\n"
    assert s.continuation("idling") == b"+ idling\r\n"
    assert s.continuation_data(b"") == b"+ \r\n"
    assert s.continuation_data(b"\x00challenge") == b"+ AGNoYWxsZW5nZQ==\r\n"


@pytest.mark.parametrize("text", ["", "a\r\nb OK", "x\n", "\x00", "été", "[ALERT] x"])
def test_response_text_injection_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a valid response text"):
        s.tagged("a", "OK", text)
    with pytest.raises(ValueError, match="not a valid response text"):
        s.continuation(text)


@pytest.mark.parametrize("code", ["", "A]B", "X\r\n", "é"])
def test_response_code_refused(code: str) -> None:
    with pytest.raises(ValueError, match="not a valid response code"):
        s.untagged_status("OK", "x", code=code)


@pytest.mark.parametrize("tag", ["", "*", "+", "a b", "a+", "é", "a\r\n"])
def test_invalid_tag_refused(tag: str) -> None:
    with pytest.raises(ValueError, match="not a valid tag"):
        s.tagged(tag, "OK", "x")


def test_untagged_text_with_crlf_refused() -> None:
    with pytest.raises(ValueError, match="cannot hold CR or LF"):
        s.untagged("1 EXISTS\r\n* 2 EXISTS")


@pytest.mark.parametrize(
    ("item", "label"),
    [
        (BodySection(), b"BODY[]"),
        (BodySection(peek=True, partial=Partial(100, 50)), b"BODY[]<100>"),
        (BodySection(Section((1, 2), SectionText.MIME)), b"BODY[1.2.MIME]"),
        (BodySection(Section((), SectionText.TEXT)), b"BODY[TEXT]"),
        (BodySection(Section((3,))), b"BODY[3]"),
        (
            BodySection(Section((), SectionText.HEADER_FIELDS_NOT, ("FROM", "X SPACE"))),
            b'BODY[HEADER.FIELDS.NOT (FROM "X SPACE")]',
        ),
        (BodySection(Section((2,), SectionText.HEADER_FIELDS, ("DATE",))), b"BODY[2.HEADER.FIELDS (DATE)]"),
    ],
)
def test_body_section_label(item: BodySection, label: bytes) -> None:
    assert s.body_section_label(item) == label


def test_fetch_response() -> None:
    wire = s.fetch_response(12, [("FLAGS", s.flag_list(["\\Seen"])), ("UID", b"4"), (b"BODY[]", s.literal(b"hi"))])
    assert wire == b"* 12 FETCH (FLAGS (\\Seen) UID 4 BODY[] {2}\r\nhi)\r\n"


@pytest.mark.parametrize(
    ("text", "made"),
    [
        ("no folder Résultats", "no folder R?sultats"),
        ("[ALERT] pretend code", "ALERT] pretend code"),
        ("line\r\n* BYE smuggled", "line??* BYE smuggled"),
        ("", "?"),
        ("plain text", "plain text"),
    ],
)
def test_printable_text_makes_any_refusal_sendable(text: str, made: str) -> None:
    assert s.printable_text(text) == made
    assert s.tagged("a1", "NO", s.printable_text(text)) == b"a1 NO " + made.encode() + b"\r\n"
