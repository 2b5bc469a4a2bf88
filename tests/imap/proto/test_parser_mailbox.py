"""Authenticated-state commands: SELECT EXAMINE CREATE DELETE RENAME SUBSCRIBE UNSUBSCRIBE LIST LSUB STATUS APPEND."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.imap.proto.command import (
    AppendArgs,
    Command,
    ListArgs,
    MailboxArgs,
    RenameArgs,
    SelectArgs,
    StatusArgs,
    StatusItem,
)
from tests.imap.proto.helpers import error, parse


@pytest.mark.parametrize("name", ["SELECT", "EXAMINE"])
def test_select_and_examine(name: str) -> None:
    assert parse(b"a " + name.encode() + b" inbox") == Command("a", name, SelectArgs("INBOX"))
    assert parse(b"a " + name.encode() + b' "Sent" (condstore)').args == SelectArgs("Sent", condstore=True)


@pytest.mark.parametrize(
    ("line", "text"),
    [
        (b"a SELECT", "missing mailbox name"),
        (b"a SELECT INBOX ()", "missing SELECT parameter"),
        (b"a SELECT INBOX (QRESYNC (1 2))", "SELECT parameter QRESYNC is not supported"),
        (b"a SELECT INBOX (FOO)", "unknown SELECT parameter FOO"),
        (b"a SELECT INBOX (CONDSTORE", "missing ) after SELECT parameters"),
        (b"a SELECT INBOX CONDSTORE", "expected ( before SELECT parameters"),
        (b"a SELECT INBOX (CONDSTORE) x", "unexpected extra arguments"),
        (b"a EXAMINE INBOX x", "expected ( before SELECT parameters"),
    ],
)
def test_select_errors(line: bytes, text: str) -> None:
    assert error(line) == ("a", text)


@pytest.mark.parametrize("name", ["CREATE", "DELETE", "SUBSCRIBE", "UNSUBSCRIBE"])
def test_mailbox_commands(name: str) -> None:
    assert parse(b"a " + name.encode() + b" Archive/2024") == Command("a", name, MailboxArgs("Archive/2024"))
    assert error(b"a " + name.encode()) == ("a", "missing mailbox name")
    assert error(b"a " + name.encode() + b" x y") == ("a", "unexpected extra arguments")


def test_rename() -> None:
    assert parse(b'a RENAME inbox "Old mail"').args == RenameArgs("INBOX", "Old mail")
    assert error(b"a RENAME x") == ("a", "missing new mailbox name")
    assert error(b"a RENAME x y z") == ("a", "unexpected extra arguments")


# -- LIST (RFC 3501 §6.3.8, RFC 5258, RFC 6154, RFC 5819) and LSUB ----------------------------------


def test_list_basic() -> None:
    assert parse(b'a LIST "" *').args == ListArgs("", ("*",))
    assert parse(b"a LIST ~/Mail/ %").args == ListArgs("~/Mail/", ("%",))
    assert parse(b'a LIST "" ""').args == ListArgs("", ("",))
    assert parse(b'a LIST "" INBOX.%.a]b').args == ListArgs("", ("INBOX.%.a]b",))
    assert parse(b'a LIST "" "foo bar*"').args == ListArgs("", ("foo bar*",))
    assert parse(b"a LIST {0}\r\n {1}\r\n*").args == ListArgs("", ("*",))


def test_list_special_use() -> None:
    assert parse(b'a LIST (SPECIAL-USE) "" *').args == ListArgs(
        "", ("*",), select_options=("SPECIAL-USE",), extended=True
    )
    assert parse(b'a LIST "" * RETURN (SPECIAL-USE)').args == ListArgs(
        "", ("*",), return_options=("SPECIAL-USE",), extended=True
    )


def test_list_extended_full() -> None:
    line = b'a LIST (subscribed recursivematch) "" ("INBOX" %) RETURN (CHILDREN STATUS (MESSAGES UNSEEN))'
    assert parse(line).args == ListArgs(
        "",
        ("INBOX", "%"),
        select_options=("SUBSCRIBED", "RECURSIVEMATCH"),
        return_options=("CHILDREN", "STATUS"),
        status_items=(StatusItem.MESSAGES, StatusItem.UNSEEN),
        extended=True,
    )
    assert parse(b'a LIST () "" % RETURN ()').args == ListArgs("", ("%",), extended=True)


@pytest.mark.parametrize(
    ("line", "text"),
    [
        (b"a LIST", "missing mailbox reference"),
        (b'a LIST ""', "missing mailbox pattern"),
        (b'a LIST "" (', "missing mailbox pattern"),
        (b'a LIST "" ()', "invalid mailbox pattern"),
        (b'a LIST "" a(b', "invalid mailbox pattern"),
        (b'a LIST "" * x', "unexpected extra arguments"),
        (b'a LIST "" * RETURN', "missing LIST return options"),
        (b'a LIST "" * RETURN (FOO)', "unknown LIST return option FOO"),
        (b'a LIST "" * RETURN (STATUS)', "missing STATUS items"),
        (b'a LIST "" * RETURN (STATUS ())', "missing STATUS item"),
        (b'a LIST (FOO) "" *', "unknown LIST selection option FOO"),
        (b'a LIST (RECURSIVEMATCH) "" *', "LIST selection option RECURSIVEMATCH needs SUBSCRIBED or SPECIAL-USE"),
        (
            b'a LIST (REMOTE RECURSIVEMATCH) "" *',
            "LIST selection option RECURSIVEMATCH needs SUBSCRIBED or SPECIAL-USE",
        ),
        (b"a LIST (SUBSCRIBED)", "missing mailbox reference"),
        (b'a LIST "" "\x01"', "invalid character in mailbox pattern"),
    ],
)
def test_list_errors(line: bytes, text: str) -> None:
    assert error(line) == ("a", text)


def test_lsub() -> None:
    assert parse(b'a LSUB "#news." "comp.mail.*"') == Command("a", "LSUB", ListArgs("#news.", ("comp.mail.*",)))
    assert error(b'a LSUB ""') == ("a", "missing mailbox pattern")
    assert error(b'a LSUB "" * RETURN ()') == ("a", "unexpected extra arguments")


# -- STATUS (RFC 3501 §6.3.10, RFC 7162 §3.1.8) ---------------------------------------------------


def test_status() -> None:
    line = b"a STATUS blurdybloop (UIDNEXT MESSAGES unseen recent uidvalidity HIGHESTMODSEQ)"
    assert parse(line).args == StatusArgs(
        "blurdybloop",
        (
            StatusItem.UIDNEXT,
            StatusItem.MESSAGES,
            StatusItem.UNSEEN,
            StatusItem.RECENT,
            StatusItem.UIDVALIDITY,
            StatusItem.HIGHESTMODSEQ,
        ),
    )


@pytest.mark.parametrize(
    ("line", "text"),
    [
        (b"a STATUS", "missing mailbox name"),
        (b"a STATUS x", "missing STATUS items"),
        (b"a STATUS x ()", "missing STATUS item"),
        (b"a STATUS x MESSAGES", "expected ( before STATUS items"),
        (b"a STATUS x (MESSAGES", "missing ) after STATUS items"),
        (b"a STATUS x (MESSAGES SIZE)", "unknown STATUS item SIZE"),
        (b"a STATUS x (MESSAGES  UNSEEN)", "invalid STATUS item"),
        (b"a STATUS x (MESSAGES) y", "unexpected extra arguments"),
        (b"a STATUS x (MESSAGES)y", "invalid text after ) of STATUS items"),
    ],
)
def test_status_errors(line: bytes, text: str) -> None:
    assert error(line) == ("a", text)


# -- APPEND (RFC 3501 §6.3.11) ----------------------------------------------------------------------


def test_append_plain() -> None:
    args = parse(b"A003 APPEND saved-messages {14}\r\nSubject: x\r\n\r\n").args
    assert args == AppendArgs("saved-messages", b"Subject: x\r\n\r\n")
    assert "Subject" not in repr(args)


def test_append_flags_and_date() -> None:
    line = b'a APPEND INBOX (\\seen $Label \\DRAFT) "05-Oct-2023 10:00:00 +0200" {3+}\r\nabc'
    assert parse(line).args == AppendArgs(
        "INBOX",
        b"abc",
        ("\\Seen", "$Label", "\\Draft"),
        dt.datetime(2023, 10, 5, 10, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    )
    assert parse(b"a APPEND INBOX () {1}\r\nx").args == AppendArgs("INBOX", b"x")
    assert parse(b'a APPEND INBOX "05-Oct-2023 10:00:00 +0000" {1}\r\nx').args is not None


@pytest.mark.parametrize(
    ("line", "text"),
    [
        (b"a APPEND", "missing mailbox name"),
        (b"a APPEND INBOX", "missing message literal"),
        (b"a APPEND INBOX (\\Seen)", "missing message literal"),
        (b'a APPEND INBOX "hello"', "invalid APPEND date-time hello"),
        (b'a APPEND INBOX "hello" x', "invalid APPEND date-time hello"),
        (b"a APPEND INBOX message", "invalid message: expected a literal"),
        (b"a APPEND INBOX (\\Seen {1}\r\nx", "invalid flag"),
        (b"a APPEND INBOX (\\Recent) {1}\r\nx", "\\Recent cannot be set"),
        (b"a APPEND INBOX (\\*) {1}\r\nx", "\\* is not a flag"),
        (b"a APPEND INBOX (\\Foo) {1}\r\nx", "unknown system flag \\Foo"),
        (b"a APPEND INBOX {1}\r\nx y", "unexpected extra arguments"),
        (b"a APPEND INBOX {2}\r\nx\x00", "NUL in literal message"),
    ],
)
def test_append_errors(line: bytes, text: str) -> None:
    assert error(line) == ("a", text)
