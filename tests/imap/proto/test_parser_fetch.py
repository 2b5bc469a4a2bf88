"""FETCH (RFC 3501 §6.4.5) with CONDSTORE (RFC 7162 §3.1.4): attributes, macros, sections, partials, modifiers."""

from __future__ import annotations

import pytest

from gateway.imap.proto.command import (
    BodySection,
    Command,
    FetchArgs,
    FetchAtt,
    FetchItem,
    Partial,
    Section,
    SectionText,
)
from gateway.imap.proto.sequence import SequenceSet
from tests.imap.proto.helpers import error, parse

A = FetchAtt


def items(line: bytes) -> tuple[FetchItem, ...]:
    args = parse(b"a FETCH 1 " + line).args
    assert isinstance(args, FetchArgs)
    return args.items


def test_fetch_command_shape() -> None:
    assert parse(b"A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])") == Command(
        "A654",
        "FETCH",
        FetchArgs(
            SequenceSet(((2, 4),)),
            (A.FLAGS, BodySection(Section((), SectionText.HEADER_FIELDS, ("DATE", "FROM")))),
        ),
    )


@pytest.mark.parametrize(
    ("macro", "expected"),
    [
        (b"ALL", (A.FLAGS, A.INTERNALDATE, A.RFC822_SIZE, A.ENVELOPE)),
        (b"fast", (A.FLAGS, A.INTERNALDATE, A.RFC822_SIZE)),
        (b"Full", (A.FLAGS, A.INTERNALDATE, A.RFC822_SIZE, A.ENVELOPE, A.BODY)),
    ],
)
def test_macros(macro: bytes, expected: tuple[FetchItem, ...]) -> None:
    assert items(macro) == expected


@pytest.mark.parametrize("att", list(FetchAtt))
def test_simple_attributes(att: FetchAtt) -> None:
    assert items(att.value.lower().encode()) == (att,)
    assert items(b"(UID " + att.value.encode() + b")") == (A.UID, att)


@pytest.mark.parametrize(
    ("wire", "item"),
    [
        (b"BODY[]", BodySection()),
        (b"BODY.PEEK[]", BodySection(peek=True)),
        (b"body.peek[header]", BodySection(Section((), SectionText.HEADER), peek=True)),
        (b"BODY[TEXT]", BodySection(Section((), SectionText.TEXT))),
        (b"BODY[1]", BodySection(Section((1,)))),
        (b"BODY[1.2.3]", BodySection(Section((1, 2, 3)))),
        (b"BODY[1.2.MIME]", BodySection(Section((1, 2), SectionText.MIME))),
        (b"BODY[4.2.HEADER]", BodySection(Section((4, 2), SectionText.HEADER))),
        (b"BODY[3.TEXT]", BodySection(Section((3,), SectionText.TEXT))),
        (
            b"BODY.PEEK[1.2.HEADER.FIELDS (From To)]",
            BodySection(Section((1, 2), SectionText.HEADER_FIELDS, ("FROM", "TO")), peek=True),
        ),
        (
            b'BODY[HEADER.FIELDS.NOT ("Received" {10}\r\nX-Spam-Lvl)]',
            BodySection(Section((), SectionText.HEADER_FIELDS_NOT, ("RECEIVED", "X-SPAM-LVL"))),
        ),
        (b"BODY[]<0.2048>", BodySection(partial=Partial(0, 2048))),
        (b"BODY.PEEK[TEXT]<100.1>", BodySection(Section((), SectionText.TEXT), peek=True, partial=Partial(100, 1))),
    ],
)
def test_body_sections(wire: bytes, item: BodySection) -> None:
    assert items(wire) == (item,)
    assert items(b"(FLAGS " + wire + b" UID)") == (A.FLAGS, item, A.UID)


def test_changedsince() -> None:
    args = parse(b"a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)").args
    assert args == FetchArgs(SequenceSet(((1, None),)), (A.FLAGS,), changed_since=12345)
    # iPhone Mail sends CHANGEDSINCE 0 although the grammar starts at 1: accepted, it means "all".
    assert parse(b"a FETCH 1 FLAGS (CHANGEDSINCE 0)").args == FetchArgs(SequenceSet(((1, 1),)), (A.FLAGS,), 0)
    args = parse(b"a FETCH 1 FLAGS (changedsince 9223372036854775807)").args
    assert args == FetchArgs(SequenceSet(((1, 1),)), (A.FLAGS,), changed_since=2**63 - 1)


@pytest.mark.parametrize(
    ("line", "text"),
    [
        (b"a FETCH", "missing sequence set"),
        (b"a FETCH 1", "missing FETCH attribute"),
        (b"a FETCH 1 ", "missing FETCH attribute"),
        (b"a FETCH 1:x FLAGS", "invalid sequence set 1:x"),
        (b"a FETCH 1 ()", "missing FETCH attribute"),
        (b"a FETCH 1 (FLAGS", "missing ) after FETCH attributes"),
        (b"a FETCH 1 (FLAGS UID", "missing ) after FETCH attributes"),
        (b"a FETCH 1 (FLAGS  UID)", "missing FETCH attribute"),
        (b"a FETCH 1 FOO", "unknown FETCH attribute FOO"),
        (b"a FETCH 1 (FLAGS FOO)", "unknown FETCH attribute FOO"),
        (b"a FETCH 1 (ALL)", "FETCH macro ALL cannot be in a list"),
        (b"a FETCH 1 ALL[x", "unknown FETCH attribute ALL[x"),
        (b"a FETCH 1 FLAGS UID", "expected ( before FETCH modifier"),
        (b"a FETCH 1 BINARY[1]", "unknown FETCH attribute BINARY[1]"),
        (b"a FETCH 1 RFC822.PEEK", "unknown FETCH attribute RFC822.PEEK"),
        (b"a FETCH 1 BODY.PEEK", "BODY.PEEK needs a section"),
        (b"a FETCH 1 BODY[", "missing ] after section"),
        (b"a FETCH 1 BODY[HEADER", "missing ] after section"),
        (b"a FETCH 1 BODY[0]", "invalid section part 0"),
        (b"a FETCH 1 BODY[01]", "invalid section part 01"),
        (b"a FETCH 1 BODY[1..2]", "invalid section 1..2"),
        (b"a FETCH 1 BODY[HEADERS]", "invalid section HEADERS"),
        (b"a FETCH 1 BODY[MIME]", "section MIME needs a part number"),
        (b"a FETCH 1 BODY[TEXT.1]", "invalid section TEXT.1"),
        (b"a FETCH 1 BODY[HEADER.FIELDS]", "expected space before header list"),
        (b"a FETCH 1 BODY[HEADER.FIELDS ()]", "missing header field name"),
        (b"a FETCH 1 BODY[HEADER.FIELDS (From]", "missing ) after header list"),
        (b"a FETCH 1 BODY[HEADER.FIELDS (From:)]", "invalid header field name From:"),
        (b"a FETCH 1 BODY[HEADER.FIELDS From]", "expected ( before header list"),
        (b"a FETCH 1 BODY[HEADER.FIELDS (From)", "missing ] after section"),
        (b"a FETCH 1 BODY[TEXT (From)]", "invalid section TEXT"),
        (b"a FETCH 1 BODY[]<0>", "invalid partial range <0>"),
        (b"a FETCH 1 BODY[]<0.0>", "invalid partial range <0.0>"),
        (b"a FETCH 1 BODY[]<x.1>", "invalid partial range <x.1>"),
        (b"a FETCH 1 BODY[]<0.4294967296>", "invalid partial range <0.4294967296>"),
        (b"a FETCH 1 BODY[]x", "invalid FETCH attribute x"),
        (b"a FETCH 1 BODY[](FLAGS)", "invalid FETCH attribute (FLAGS"),
        (b"a FETCH 1 FLAGS ()", "missing FETCH modifier"),
        (b"a FETCH 1 FLAGS (CHANGEDSINCE)", "missing CHANGEDSINCE value"),
        (b"a FETCH 1 FLAGS (CHANGEDSINCE -1)", "invalid CHANGEDSINCE value -1"),
        (b"a FETCH 1 FLAGS (CHANGEDSINCE 9223372036854775808)", "invalid CHANGEDSINCE value 9223372036854775808"),
        (b"a FETCH 1 FLAGS (CHANGEDSINCE 1 CHANGEDSINCE 2)", "duplicate FETCH modifier CHANGEDSINCE"),
        (b"a FETCH 1 FLAGS (CHANGEDSINCE 1 VANISHED)", "FETCH modifier VANISHED needs QRESYNC, which is not supported"),
        (b"a FETCH 1 FLAGS (PRIORITY 1)", "unknown FETCH modifier PRIORITY"),
        (b"a FETCH 1 FLAGS (CHANGEDSINCE 1) x", "unexpected extra arguments"),
    ],
)
def test_fetch_errors(line: bytes, text: str) -> None:
    assert error(line) == ("a", text)
