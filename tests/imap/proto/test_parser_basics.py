"""Tags, command names, commands without arguments, LOGIN, AUTHENTICATE, ENABLE, ID, SASL lines, IDLE DONE."""

from __future__ import annotations

import pytest

from gateway.imap.proto.command import AuthenticateArgs, Command, EnableArgs, IdArgs, LoginArgs
from gateway.imap.proto.framing import CommandLine
from gateway.imap.proto.lexer import ParseError
from gateway.imap.proto.parser import is_idle_done, parse_command, parse_sasl_response
from tests.imap.proto.helpers import error, parse

NO_ARGS = ["CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "CHECK", "CLOSE", "EXPUNGE", "UNSELECT", "IDLE", "NAMESPACE"]


@pytest.mark.parametrize("name", NO_ARGS)
def test_commands_without_arguments(name: str) -> None:
    assert parse(b"A001 " + name.lower().encode()) == Command("A001", name)


@pytest.mark.parametrize("name", NO_ARGS)
def test_commands_without_arguments_refuse_extra_arguments(name: str) -> None:
    assert error(b"t1 " + name.encode() + b" now") == ("t1", "unexpected extra arguments")


def test_tag_with_unusual_allowed_characters() -> None:
    assert parse(b"a.b-c]d!#$&'~ NOOP").tag == "a.b-c]d!#$&'~"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"", (None, "empty command line")),
        (b"*", (None, "invalid tag")),
        (b"* NOOP", (None, "invalid tag")),
        (b"+ NOOP", (None, "invalid tag")),
        (b"a+ NOOP", (None, "invalid tag")),
        (b"a*b NOOP", (None, "invalid tag")),
        (b"a%b NOOP", (None, "invalid tag")),
        (b'a"b NOOP', (None, "invalid tag")),
        (b"a(b NOOP", (None, "invalid tag")),
        (b"a\\b NOOP", (None, "invalid tag")),
        (b"a{b NOOP", (None, "invalid tag")),
        (b"\xc3\xa9 NOOP", (None, "invalid tag")),
        (b"a\x01 NOOP", (None, "invalid tag")),
        (b" NOOP", (None, "missing tag")),
        (b"a", ("a", "missing command name")),
        (b"a ", ("a", "missing command name")),
        (b"a  NOOP", ("a", "extra space before command name")),
        (b"a FROB", ("a", "unknown command FROB")),
        (b"a frob x y", ("a", "unknown command FROB")),
        (b'a NO"OP', ("a", "invalid command name")),
        (b"a (NOOP)", ("a", "invalid command name")),
        (b"a NOOP ", ("a", "unexpected extra arguments")),
        (b"a NOOP)", ("a", "unexpected characters at end of command: )")),
        (b"a UID", ("a", "missing UID command")),
        (b"a UID NOOP", ("a", "invalid UID command NOOP: expected COPY, MOVE, FETCH, SEARCH, STORE or EXPUNGE")),
    ],
)
def test_tag_and_command_name_errors(line: bytes, expected: tuple[str | None, str]) -> None:
    assert error(line) == expected


def test_error_text_never_echoes_unsafe_octets() -> None:
    tag, text = error(b"a X\x7f\xff" + b"Y" * 60)
    assert tag == "a"
    assert text == "invalid command name"
    _, text = error(b"a " + b"Z" * 60)
    assert text == "unknown command " + "Z" * 40 + "..."


def test_parse_error_is_typed_and_printable() -> None:
    with pytest.raises(ParseError) as info:
        parse(b"a FROB")
    assert str(info.value) == "unknown command FROB"
    assert repr(info.value) == "ParseError('a', 'unknown command FROB')"


# -- LOGIN (RFC 3501 §6.2.3) ------------------------------------------------------------------------


def test_login_atoms_quoted_and_literals() -> None:
    assert parse(b"a LOGIN bob pass]word").args == LoginArgs("bob", "pass]word")
    assert parse(b'a LOGIN "b o\\"b" "p\\\\w"').args == LoginArgs('b o"b', "p\\w")
    assert parse(b"a LOGIN {3}\r\nbob {5+}\r\np w\xc3\xa9").args == LoginArgs("bob", "p wé")


def test_login_password_not_in_repr() -> None:
    assert "s3cret" not in repr(parse(b"a LOGIN bob s3cret"))


@pytest.mark.parametrize(
    ("line", "text"),
    [
        (b"a LOGIN", "missing user name"),
        (b"a LOGIN bob", "missing password"),
        (b"a LOGIN bob ", "missing password"),
        (b"a LOGIN bob pw extra", "unexpected extra arguments"),
        (b'a LOGIN "bob pw', "unterminated quoted user name"),
        (b"a LOGIN bob (pw)", "invalid password"),
        (b"a LOGIN bob {2}\r\n\xff\xfe", "password is not valid UTF-8"),
        (b"a LOGIN bob {2}\r\np\x00", "NUL in literal password"),
    ],
)
def test_login_errors(line: bytes, text: str) -> None:
    assert error(line) == ("a", text)


# -- AUTHENTICATE (RFC 3501 §6.2.2, SASL-IR RFC 4959) -----------------------------------------------


def test_authenticate_without_initial_response() -> None:
    assert parse(b"a AUTHENTICATE plain") == Command("a", "AUTHENTICATE", AuthenticateArgs("PLAIN"))


def test_authenticate_with_initial_response() -> None:
    args = parse(b"a AUTHENTICATE PLAIN AGJvYgBwdw==").args
    assert args == AuthenticateArgs("PLAIN", b"\x00bob\x00pw")
    assert "bob" not in repr(args)


def test_authenticate_empty_initial_response() -> None:
    assert parse(b"a AUTHENTICATE EXTERNAL =").args == AuthenticateArgs("EXTERNAL", b"")


@pytest.mark.parametrize(
    ("line", "text"),
    [
        (b"a AUTHENTICATE", "missing authentication mechanism"),
        (b"a AUTHENTICATE PLAIN ", "missing initial response"),
        (b"a AUTHENTICATE PLAIN AGJvYgBwdw", "invalid base64 in initial response"),
        (b"a AUTHENTICATE PLAIN AG$v", "invalid base64 in initial response"),
        (b"a AUTHENTICATE PLAIN AA== x", "unexpected extra arguments"),
        (b'a AUTHENTICATE "PLAIN"', "invalid authentication mechanism"),
    ],
)
def test_authenticate_errors(line: bytes, text: str) -> None:
    assert error(line) == ("a", text)


def test_sasl_response_lines() -> None:
    assert parse_sasl_response(b"AGJvYgBwdw==") == b"\x00bob\x00pw"
    assert parse_sasl_response(b"") == b""
    assert parse_sasl_response(b"*") is None
    with pytest.raises(ParseError, match="invalid base64 in authentication response"):
        parse_sasl_response(b"AGJvYg Bwdw==")
    with pytest.raises(ParseError, match="invalid base64"):
        parse_sasl_response(b"abc")


def test_idle_done() -> None:
    assert is_idle_done(b"DONE")
    assert is_idle_done(b"done")
    assert not is_idle_done(b"DONE ")
    assert not is_idle_done(b"a NOOP")


# -- ENABLE (RFC 5161) ------------------------------------------------------------------------------


def test_enable() -> None:
    assert parse(b"a ENABLE condstore utf8=accept").args == EnableArgs(("CONDSTORE", "UTF8=ACCEPT"))


@pytest.mark.parametrize(
    ("line", "text"),
    [(b"a ENABLE", "missing capability name"), (b'a ENABLE "X"', "invalid capability name")],
)
def test_enable_errors(line: bytes, text: str) -> None:
    assert error(line) == ("a", text)


# -- ID (RFC 2971) ----------------------------------------------------------------------------------


def test_id_nil_and_empty_and_pairs() -> None:
    assert parse(b"a ID NIL").args == IdArgs(None)
    assert parse(b"a ID nil").args == IdArgs(None)
    assert parse(b"a ID ()").args == IdArgs(())
    assert parse(b'a ID ("name" "Thunderbird" "version" NIL "os" {5}\r\nLinux)').args == IdArgs(
        (("name", "Thunderbird"), ("version", None), ("os", "Linux"))
    )


@pytest.mark.parametrize(
    ("line", "text"),
    [
        (b"a ID", "missing ID parameters"),
        (b"a ID x", "expected ( before ID parameters"),
        (b"a ID (name x)", "invalid ID field name: expected a quoted string or a literal"),
        (b'a ID ("name")', "missing ID field value"),
        (b'a ID ("name" "x"', "missing ) after ID parameters"),
        (b'a ID ("name" "x" "name" "y")', "duplicate ID field name"),
        (b'a ID ("' + b"n" * 31 + b'" "x")', "ID field name longer than 30 octets"),
        (b'a ID ("name" "' + b"v" * 1025 + b'")', "ID field value longer than 1024 octets"),
        (b"a ID NIL x", "unexpected extra arguments"),
        (b'a ID ("a" "b") x', "unexpected extra arguments"),
    ],
)
def test_id_errors(line: bytes, text: str) -> None:
    assert error(line) == ("a", text)


def test_id_too_many_fields() -> None:
    pairs = b" ".join(b'"f%d" "v"' % i for i in range(31))
    assert error(b"a ID (" + pairs + b")") == ("a", "more than 30 ID fields")


def test_parse_command_takes_framed_lines() -> None:
    line = CommandLine((b"a LOGIN {3}", b" pw"), (b"bob",))
    assert parse_command(line) == Command("a", "LOGIN", LoginArgs("bob", "pw"))


# -- commands as real clients send them -------------------------------------------------------------

CLIENT_COMMANDS = [
    b"1 capability",
    b'2 ID ("name" "Thunderbird" "version" "115.3.1")',
    b"3 authenticate PLAIN",
    b'4 list (subscribed) "" "*" return (special-use)',
    b'5 select "INBOX" (CONDSTORE)',
    b"6 UID fetch 1:* (FLAGS) (CHANGEDSINCE 1234)",
    b"7 UID fetch 1 (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID "
    b"Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])",
    b"8 IDLE",
    b'A00000007 LIST "" "INBOX.%" RETURN (SUBSCRIBED CHILDREN)',
    b"A00000008 UID STORE 5 +FLAGS.SILENT (\\Deleted)",
    b"A00000009 UID SEARCH 1:* NOT DELETED",
    b"10 UID FETCH 3 (UID INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS (date subject from content-type to "
    b"cc bcc message-id in-reply-to references x-mailer)] FLAGS)",
    b'11 APPEND "Sent" (\\Seen) {5+}\r\nhello',
    b'12 STATUS "INBOX" (UIDNEXT MESSAGES UNSEEN RECENT)',
    b'13 UID MOVE 4 "Trash"',
    b"14 UID EXPUNGE 4",
    b"15 NAMESPACE",
    b'16 LSUB "" "*"',
    b"17 UID SEARCH RETURN (ALL) CHARSET UTF-8 SUBJECT {6+}\r\nd\xc3\xa9j\xc3\xa0",
    b"18 uid fetch 1:* (BODYSTRUCTURE ENVELOPE) (changedsince 0)",
    b"19 UNSELECT",
    b"20 LOGOUT",
]


@pytest.mark.parametrize("line", CLIENT_COMMANDS)
def test_real_client_commands_parse(line: bytes) -> None:
    command = parse(line)
    assert command.tag == line.split(b" ")[0].decode()


def test_unsupported_extension_command_is_unknown() -> None:
    assert error(b"a GETQUOTAROOT INBOX") == ("a", "unknown command GETQUOTAROOT")
    assert error(b"a COMPRESS DEFLATE") == ("a", "unknown command COMPRESS")
