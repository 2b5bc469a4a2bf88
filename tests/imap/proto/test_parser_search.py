"""SEARCH (RFC 3501 §6.4.4) with ESEARCH RETURN (RFC 4731) and MODSEQ (RFC 7162 §3.1.5)."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.imap.proto.command import (
    AndKey,
    Command,
    DateKey,
    HeaderKey,
    KeywordKey,
    ModSeqKey,
    NotKey,
    OrKey,
    SearchArgs,
    SearchKey,
    SeqKey,
    SimpleKey,
    SizeKey,
    TextKey,
)
from gateway.imap.proto.lexer import BadCharsetError, ParseError
from gateway.imap.proto.sequence import SequenceSet
from tests.imap.proto.helpers import error, parse

SIMPLE = [
    "ALL",
    "ANSWERED",
    "DELETED",
    "DRAFT",
    "FLAGGED",
    "NEW",
    "OLD",
    "RECENT",
    "SEEN",
    "UNANSWERED",
    "UNDELETED",
    "UNDRAFT",
    "UNFLAGGED",
    "UNSEEN",
]


def key(line: bytes) -> SearchKey:
    args = parse(b"a SEARCH " + line).args
    assert isinstance(args, SearchArgs)
    return args.key


def test_search_command_shape() -> None:
    assert parse(b'A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"') == Command(
        "A282",
        "SEARCH",
        SearchArgs(
            AndKey(
                (
                    SimpleKey("FLAGGED"),
                    DateKey("SINCE", dt.date(1994, 2, 1)),
                    NotKey(TextKey("FROM", "Smith")),
                )
            )
        ),
    )
    assert parse(b"a UID SEARCH 1:100 UID 443:557") == Command(
        "a",
        "SEARCH",
        SearchArgs(AndKey((SeqKey(SequenceSet(((1, 100),))), SeqKey(SequenceSet(((443, 557),)), uid=True)))),
        uid=True,
    )


@pytest.mark.parametrize("name", SIMPLE)
def test_simple_keys(name: str) -> None:
    assert key(name.lower().encode()) == SimpleKey(name)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"])
def test_text_keys(name: str) -> None:
    assert key(name.encode() + b' "hello world"') == TextKey(name, "hello world")  # type: ignore[arg-type]
    assert key(name.encode() + b" atom") == TextKey(name, "atom")  # type: ignore[arg-type]
    assert error(b"a SEARCH " + name.encode()) == ("a", f"missing {name} string")


@pytest.mark.parametrize("name", ["BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"])
def test_date_keys(name: str) -> None:
    assert key(name.encode() + b" 5-Oct-2023") == DateKey(name, dt.date(2023, 10, 5))  # type: ignore[arg-type]
    assert error(b"a SEARCH " + name.encode() + b" 2023-10-05") == ("a", f"invalid {name} date 2023-10-05")


def test_other_keys() -> None:
    assert key(b"LARGER 1000") == SizeKey("LARGER", 1000)
    assert key(b"smaller 0") == SizeKey("SMALLER", 0)
    assert key(b"LARGER 9223372036854775807") == SizeKey("LARGER", 2**63 - 1)
    assert key(b"KEYWORD $Forwarded") == KeywordKey("$Forwarded")
    assert key(b"UNKEYWORD Junk") == KeywordKey("Junk", present=False)
    assert key(b"HEADER Message-ID <x@y>") == HeaderKey("MESSAGE-ID", "<x@y>")
    assert key(b'HEADER "X-Mss" ""') == HeaderKey("X-MSS", "")
    assert key(b"UID 1:*") == SeqKey(SequenceSet(((1, None),)), uid=True)
    assert key(b"2,4:*") == SeqKey(SequenceSet(((2, 2), (4, None))))
    assert key(b"*") == SeqKey(SequenceSet(((None, None),)))


def test_utf8_strings() -> None:
    assert key(b"CHARSET UTF-8 SUBJECT {6}\r\nd\xc3\xa9j\xc3\xa0") == TextKey("SUBJECT", "déjà")
    assert key(b'SUBJECT "d\xc3\xa9j\xc3\xa0"') == TextKey("SUBJECT", "déjà")


def test_not_or_groups() -> None:
    assert key(b"NOT SEEN") == NotKey(SimpleKey("SEEN"))
    assert key(b"OR SEEN FLAGGED") == OrKey(SimpleKey("SEEN"), SimpleKey("FLAGGED"))
    assert key(b"OR (SEEN FLAGGED) NOT (DELETED)") == OrKey(
        AndKey((SimpleKey("SEEN"), SimpleKey("FLAGGED"))), NotKey(SimpleKey("DELETED"))
    )
    assert key(b"(OR FROM a TO b) 1:5") == AndKey(
        (OrKey(TextKey("FROM", "a"), TextKey("TO", "b")), SeqKey(SequenceSet(((1, 5),))))
    )
    assert key(b"((SEEN))") == SimpleKey("SEEN")


def test_modseq() -> None:
    assert key(b"MODSEQ 620162338") == ModSeqKey(620162338)
    assert key(b"MODSEQ 0") == ModSeqKey(0)
    assert key(b'MODSEQ "/flags/\\\\draft" all 620162338') == ModSeqKey(620162338, "/flags/\\Draft", "all")
    assert key(b'modseq "/flags/$Junk" PRIV 5') == ModSeqKey(5, "/flags/$Junk", "priv")
    assert key(b'MODSEQ "/flags/x" shared 5') == ModSeqKey(5, "/flags/x", "shared")


def test_charset_and_return() -> None:
    assert parse(b"a SEARCH CHARSET utf-8 ALL").args == SearchArgs(SimpleKey("ALL"), charset="UTF-8")
    assert parse(b'a SEARCH CHARSET "US-ASCII" ALL').args == SearchArgs(SimpleKey("ALL"), charset="US-ASCII")
    assert parse(b"a SEARCH RETURN (MIN MAX COUNT) UNSEEN").args == SearchArgs(
        SimpleKey("UNSEEN"), return_options=("MIN", "MAX", "COUNT")
    )
    assert parse(b"a SEARCH RETURN () ALL").args == SearchArgs(SimpleKey("ALL"), return_options=("ALL",))
    assert parse(b"a SEARCH RETURN (all min all) CHARSET UTF-8 1:*").args == SearchArgs(
        SeqKey(SequenceSet(((1, None),))), "UTF-8", ("ALL", "MIN")
    )


def test_bad_charset() -> None:
    with pytest.raises(BadCharsetError) as info:
        parse(b"a SEARCH CHARSET ISO-8859-1 SUBJECT x")
    assert (info.value.tag, info.value.text) == ("a", "unsupported charset ISO-8859-1")
    assert info.value.supported == ("UTF-8", "US-ASCII")
    assert isinstance(info.value, ParseError)


@pytest.mark.parametrize(
    ("line", "text"),
    [
        (b"", "missing search key"),
        (b"FOO", "unknown search key FOO"),
        (b"ALL FOO", "unknown search key FOO"),
        (b"ALL ", "missing search key"),
        (b"ALL  SEEN", "extra space before search key"),
        (b"()", "missing search key in ( )"),
        (b"(SEEN", "missing ) after search keys"),
        (b"SEEN)", "unexpected characters at end of command: )"),
        (b"( SEEN)", "extra space before search key"),
        (b"NOT", "missing search key after NOT"),
        (b"OR SEEN", "missing second search key of OR"),
        (b"OR", "missing first search key of OR"),
        (b"0", "invalid sequence set 0"),
        (b"1:x", "invalid sequence set 1:x"),
        (b"$", "SEARCHRES ($) is not supported"),
        (b"UID", "missing UID sequence set"),
        (b"UID x", "invalid UID sequence set x"),
        (b"LARGER", "missing LARGER size"),
        (b"LARGER x", "invalid LARGER size x"),
        (b"LARGER -1", "invalid LARGER size -1"),
        (b"SMALLER 9223372036854775808", "invalid SMALLER size 9223372036854775808"),
        (b"KEYWORD", "missing KEYWORD flag"),
        (b"KEYWORD \\Seen", "invalid KEYWORD flag"),
        (b'KEYWORD "x"', "invalid KEYWORD flag"),
        (b"HEADER", "missing HEADER field name"),
        (b"HEADER Subject", "missing HEADER string"),
        (b"HEADER Sub:ject x", "invalid HEADER field name Sub:ject"),
        (b'SUBJECT "abc', "unterminated quoted SUBJECT string"),
        (b"SUBJECT {2}\r\n\xff\xfe", "SUBJECT string is not valid UTF-8"),
        (b"SINCE", "missing SINCE date"),
        (b"CHARSET", "missing charset"),
        (b"CHARSET UTF-8", "missing search key"),
        (b"RETURN", "missing RETURN options"),
        (b"RETURN (MIN)", "missing search key"),
        (b"RETURN MIN ALL", "expected ( before RETURN options"),
        (b"RETURN (SAVE) ALL", "RETURN option SAVE needs SEARCHRES, which is not supported"),
        (b"RETURN (FOO) ALL", "unknown RETURN option FOO"),
        (b"RETURN (MIN ALL", "missing ) after RETURN options"),
        (b'RETURN (MIN"x") ALL', "invalid RETURN option"),
        (b"MODSEQ", "missing MODSEQ value"),
        (b"MODSEQ x", "invalid MODSEQ value x"),
        (b"MODSEQ 9223372036854775808", "invalid MODSEQ value 9223372036854775808"),
        (b'MODSEQ "/flags/\\\\Seen" 5', "invalid MODSEQ entry type: expected priv, shared or all"),
        (b'MODSEQ "/flags/\\\\Seen" all', "missing MODSEQ value"),
        (b'MODSEQ "/other/x" all 5', "invalid MODSEQ entry name /other/x"),
        (b'MODSEQ "/flags/" all 5', "invalid MODSEQ entry name /flags/"),
        (b'MODSEQ "/flags/a b" all 5', "invalid MODSEQ entry name /flags/a b"),
    ],
)
def test_search_errors(line: bytes, text: str) -> None:
    assert error(b"a SEARCH " + line if line else b"a SEARCH") == ("a", text)
