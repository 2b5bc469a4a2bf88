"""Selected-state commands on messages: STORE, COPY, MOVE, UID variants, UID EXPUNGE."""

from __future__ import annotations

import pytest

from gateway.imap.proto.command import Command, CopyArgs, ExpungeArgs, StoreArgs, StoreMode
from gateway.imap.proto.sequence import SequenceSet
from tests.imap.proto.helpers import error, parse

ONE = SequenceSet(((1, 1),))


# -- STORE (RFC 3501 §6.4.6, RFC 7162 §3.1.3) -------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "mode", "silent"),
    [
        (b"FLAGS", StoreMode.REPLACE, False),
        (b"+FLAGS", StoreMode.ADD, False),
        (b"-FLAGS", StoreMode.REMOVE, False),
        (b"flags.silent", StoreMode.REPLACE, True),
        (b"+Flags.Silent", StoreMode.ADD, True),
        (b"-FLAGS.SILENT", StoreMode.REMOVE, True),
    ],
)
def test_store_items(item: bytes, mode: StoreMode, silent: bool) -> None:
    assert parse(b"a STORE 2:4 " + item + b" (\\Deleted)") == Command(
        "a", "STORE", StoreArgs(SequenceSet(((2, 4),)), mode, ("\\Deleted",), silent)
    )


def test_store_flag_forms() -> None:
    assert parse(b"a STORE 1 +FLAGS \\seen").args == StoreArgs(ONE, StoreMode.ADD, ("\\Seen",))
    assert parse(b"a STORE 1 +FLAGS \\Seen $Junk \\answered").args == StoreArgs(
        ONE, StoreMode.ADD, ("\\Seen", "$Junk", "\\Answered")
    )
    assert parse(b"a STORE 1 FLAGS ()").args == StoreArgs(ONE, StoreMode.REPLACE, ())
    assert parse(b"a STORE 1 FLAGS (\\Flagged \\Draft NonJunk)").args == StoreArgs(
        ONE, StoreMode.REPLACE, ("\\Flagged", "\\Draft", "NonJunk")
    )


def test_store_unchangedsince() -> None:
    assert parse(b"a STORE 1 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted)").args == StoreArgs(
        ONE, StoreMode.ADD, ("\\Deleted",), silent=True, unchanged_since=320162338
    )
    assert parse(b"a UID STORE 1 (unchangedsince 0) FLAGS ()") == Command(
        "a", "STORE", StoreArgs(ONE, StoreMode.REPLACE, (), unchanged_since=0), uid=True
    )


@pytest.mark.parametrize(
    ("line", "text"),
    [
        (b"a STORE", "missing sequence set"),
        (b"a STORE 1", "missing STORE item"),
        (b"a STORE 1 +FLAGS", "missing flags"),
        (b"a STORE 1 +FLAGS ", "missing flags"),
        (b"a STORE 1 FLAG (\\Seen)", "invalid STORE item FLAG: expected [+|-]FLAGS[.SILENT]"),
        (b"a STORE 1 +FLAGS.LOUD (\\Seen)", "invalid STORE item +FLAGS.LOUD: expected [+|-]FLAGS[.SILENT]"),
        (b"a STORE 0 +FLAGS (\\Seen)", "invalid sequence set 0"),
        (b"a STORE 1 +FLAGS (\\Seen", "missing ) after flag list"),
        (b"a STORE 1 +FLAGS (\\Seen))", "unexpected characters at end of command: )"),
        (b"a STORE 1 +FLAGS (\\Seen)x", "invalid text after ) of flag list"),
        (b"a STORE 1 +FLAGS (\\*)", "\\* is not a flag"),
        (b"a STORE 1 +FLAGS \\*", "\\* is not a flag"),
        (b"a STORE 1 +FLAGS (\\Recent)", "\\Recent cannot be set"),
        (b"a STORE 1 +FLAGS (\\Important)", "unknown system flag \\Important"),
        (b"a STORE 1 +FLAGS (\\)", "invalid flag"),
        (b'a STORE 1 +FLAGS ("x")', "invalid flag"),
        (b"a STORE 1 +FLAGS (a%b)", "invalid flag"),
        (b"a STORE 1 +FLAGS (\\Seen) x", "unexpected extra arguments"),
        (b"a STORE 1 () +FLAGS (\\Seen)", "missing STORE modifier"),
        (b"a STORE 1 (UNCHANGEDSINCE) +FLAGS (\\Seen)", "missing UNCHANGEDSINCE value"),
        (b"a STORE 1 (UNCHANGEDSINCE x) +FLAGS (\\Seen)", "invalid UNCHANGEDSINCE value x"),
        (b"a STORE 1 (UNCHANGEDSINCE -1) +FLAGS (\\Seen)", "invalid UNCHANGEDSINCE value -1"),
        (
            b"a STORE 1 (UNCHANGEDSINCE 9223372036854775808) +FLAGS (\\Seen)",
            "invalid UNCHANGEDSINCE value 9223372036854775808",
        ),
        (b"a STORE 1 (UNCHANGEDSINCE 1 UNCHANGEDSINCE 2) FLAGS ()", "duplicate STORE modifier UNCHANGEDSINCE"),
        (b"a STORE 1 (FOO 1) FLAGS ()", "unknown STORE modifier FOO"),
        (b"a STORE 1 (UNCHANGEDSINCE 1)", "missing STORE item"),
    ],
)
def test_store_errors(line: bytes, text: str) -> None:
    assert error(line) == ("a", text)


def test_store_flags_bare_list_extra_after() -> None:
    # Flags without parentheses run to the end of the command: anything after is another flag.
    assert parse(b"a STORE 1 +FLAGS \\Seen x").args == StoreArgs(ONE, StoreMode.ADD, ("\\Seen", "x"))


# -- COPY, MOVE (RFC 3501 §6.4.7, RFC 6851) ---------------------------------------------------------


@pytest.mark.parametrize("name", ["COPY", "MOVE"])
def test_copy_and_move(name: str) -> None:
    seq = SequenceSet(((2, 4), (7, None)))
    assert parse(b"a " + name.encode() + b" 2:4,7:* Trash") == Command("a", name, CopyArgs(seq, "Trash"))
    assert parse(b"a uid " + name.encode() + b' 2:4,7:* "Trash"') == Command(
        "a", name, CopyArgs(seq, "Trash"), uid=True
    )
    assert error(b"a " + name.encode() + b" 1") == ("a", "missing mailbox name")
    assert error(b"a " + name.encode() + b" 1 x y") == ("a", "unexpected extra arguments")
    assert error(b"a " + name.encode() + b" x y") == ("a", "invalid sequence set x")


# -- UID (RFC 3501 §6.4.8) and UID EXPUNGE (RFC 4315) -----------------------------------------------


def test_uid_expunge() -> None:
    assert parse(b"a UID EXPUNGE 3000:3002") == Command(
        "a", "EXPUNGE", ExpungeArgs(SequenceSet(((3000, 3002),))), uid=True
    )
    assert error(b"a UID EXPUNGE") == ("a", "missing sequence set")
    assert error(b"a UID EXPUNGE 1 2") == ("a", "unexpected extra arguments")
    assert error(b"a EXPUNGE 1") == ("a", "unexpected extra arguments")


@pytest.mark.parametrize("name", [b"FETCH 1 UID", b"SEARCH ALL", b"STORE 1 FLAGS ()", b"COPY 1 x", b"MOVE 1 x"])
def test_uid_prefix_sets_uid(name: bytes) -> None:
    command = parse(b"a UID " + name)
    assert command.uid
    assert command.name == name.split()[0].decode()


@pytest.mark.parametrize("line", [b"a UID UID FETCH 1 UID", b"a UID LIST x y", b"a UID  FETCH 1 UID"])
def test_uid_invalid(line: bytes) -> None:
    tag, text = error(line)
    assert tag == "a"
    assert text.startswith(("invalid UID command", "extra space before UID command"))
