"""The states of a session (RFC 3501 §3: not authenticated, authenticated, selected, logout) and what every
command line is refused with before any command runs: a command the state does not allow, an unknown
command, a malformed tag (§9 `tag`), a line not ending in CRLF (§2.2), an overlong line or literal
(RFC 7162 §4, RFC 7888 §4). Each is `BAD` (§7.1.3) with the server's precise text, tagged when the tag
could be read, `* BAD` when not, `* BYE` and close when the stream can no longer be cut into commands.
"""

from __future__ import annotations

import secrets

from tests.imap.conftest import Box, Raw
from tests.smtp.conftest import PASSWORD, Gateway

# Valid syntax, each in the wrong state before login (RFC 3501 §6.3, §6.4 and extensions)
AUTHENTICATED_ONLY = [
    "SELECT INBOX",
    "EXAMINE INBOX",
    "CREATE Dossiers",
    "DELETE Dossiers",
    "RENAME Dossiers Archives",
    "SUBSCRIBE Dossiers",
    "UNSUBSCRIBE Dossiers",
    'LIST "" *',
    'LSUB "" *',
    "STATUS INBOX (MESSAGES)",
    "ENABLE CONDSTORE",
    "NAMESPACE",
    "IDLE",
]
SELECTED_ONLY = [
    "CHECK",
    "CLOSE",
    "UNSELECT",
    "EXPUNGE",
    "SEARCH ALL",
    "FETCH 1 FLAGS",
    "STORE 1 +FLAGS (\\Seen)",
    "COPY 1 Dossiers",
    "MOVE 1 Dossiers",
    "UID FETCH 1 FLAGS",
    "UID SEARCH ALL",
    "UID STORE 1 +FLAGS (\\Seen)",
    "UID COPY 1 Dossiers",
    "UID MOVE 1 Dossiers",
    "UID EXPUNGE 1",
]
NOT_AUTHENTICATED_ONLY = ["STARTTLS", "LOGIN user password", "AUTHENTICATE PLAIN"]


def name_of(command: str) -> str:
    words = command.split()
    return " ".join(words[:2]) if words[0] == "UID" else words[0]


def refusals(raw: Raw, commands: list[str], state: str) -> None:
    for n, command in enumerate(commands):
        tag = f"s{n}"
        assert raw.command(tag, command) == [
            f"{tag} BAD {name_of(command)} is not allowed in the {state} state".encode()
        ]


def test_commands_out_of_state_and_unknown_ones(imap_gw: Gateway) -> None:
    raw = Raw(imap_gw)
    assert raw.command("a1", "FETCH 1 FLAGS") == [b"a1 BAD FETCH is not allowed in the not authenticated state"]
    assert raw.command("a2", "SELECT INBOX") == [b"a2 BAD SELECT is not allowed in the not authenticated state"]
    assert raw.command("a3", "FROBNICATE") == [b"a3 BAD unknown command FROBNICATE"]
    assert raw.command("a4", "LOGIN onlyone") == [b"a4 BAD missing password"]
    assert raw.command("a5", "NOOP extra") == [b"a5 BAD unexpected extra arguments"]
    raw.close()


def test_every_command_of_a_later_state_is_bad_before_login(imap_gw: Gateway) -> None:
    raw = Raw(imap_gw)
    refusals(raw, AUTHENTICATED_ONLY + SELECTED_ONLY, "not authenticated")
    raw.send(b"ap APPEND INBOX {5+}\r\nHello\r\n")  # the literal is read, then the command refused
    assert raw.until(b"ap") == [b"ap BAD APPEND is not allowed in the not authenticated state"]
    assert raw.command("z", "CAPABILITY")[-1] == b"z OK CAPABILITY completed"  # still not authenticated
    raw.close()


def test_selected_state_commands_and_login_commands_once_authenticated(box: Box) -> None:
    raw = box.raw()
    refusals(raw, SELECTED_ONLY, "authenticated")
    refusals(raw, NOT_AUTHENTICATED_ONLY, "authenticated")
    assert raw.command("s", "SELECT INBOX")[-1] == b"s OK [READ-WRITE] SELECT completed"
    refusals(raw, NOT_AUTHENTICATED_ONLY, "selected")
    assert raw.command("u", "UNSELECT") == [b"u OK UNSELECT completed"]  # back to authenticated
    assert raw.command("c", "CHECK") == [b"c BAD CHECK is not allowed in the authenticated state"]
    raw.close()


def test_unknown_commands_are_bad_and_audited(imap_gw: Gateway) -> None:
    name = f"XYZZY{secrets.token_hex(3).upper()}"
    raw = Raw(imap_gw, tls=False)
    assert raw.command("a1", name) == [f"a1 BAD unknown command {name}".encode()]
    assert raw.command("a2", f"{name.lower()} with args") == [f"a2 BAD unknown command {name}".encode()]
    assert raw.command("a3", "UID FROB 1") == [
        b"a3 BAD invalid UID command FROB: expected COPY, MOVE, FETCH, SEARCH, STORE or EXPUNGE"
    ]
    assert raw.command("a4", "UID") == [b"a4 BAD missing UID command"]
    assert raw.command("a5", "X-CUSTOM") == [b"a5 BAD unknown command X-CUSTOM"]
    raw.close()
    events = imap_gw.node.cli("audit", "search", "--event", "imap.command.refused", "--json").json()
    mine = [e["response"] for e in events if name in str(e["response"])]  # type: ignore[index]
    assert mine == [{"result": "bad", "reason": f"unknown command {name}"}] * 2


def test_tags(imap_gw: Gateway) -> None:
    raw = Raw(imap_gw)
    assert raw.command("A.1-b]~", "NOOP") == [b"A.1-b]~ OK NOOP completed"]  # any ASTRING-CHAR but "+"
    assert raw.command("x" * 200, "NOOP") == [b"x" * 200 + b" OK NOOP completed"]
    raw.send(b"* NOOP\r\n")
    assert raw.line() == b"* BAD invalid tag"
    raw.send(b"+a NOOP\r\n")
    assert raw.line() == b"* BAD invalid tag"
    raw.send(b"a{1 NOOP\r\n")
    assert raw.line() == b"* BAD invalid tag"
    raw.send(b'"a" NOOP\r\n')
    assert raw.line() == b"* BAD invalid tag"
    raw.send(b" NOOP\r\n")
    assert raw.line() == b"* BAD missing tag"
    raw.send(b"\r\n")
    assert raw.line() == b"* BAD empty command line"
    assert raw.command("a1", "") == [b"a1 BAD missing command name"]
    raw.send(b"a2\r\n")
    assert raw.line() == b"a2 BAD missing command name"
    assert raw.command("a3", " NOOP") == [b"a3 BAD extra space before command name"]
    assert raw.command("a4", "NOOP(") == [b"a4 BAD invalid command name"]
    assert raw.command("a5", "a5") == [b"a5 BAD unknown command A5"]  # a tag then a name: any atom
    assert raw.command("a6", "noop") == [b"a6 OK NOOP completed"]  # command names are case-insensitive
    raw.close()


def test_line_level_errors(imap_gw: Gateway) -> None:
    raw = Raw(imap_gw)
    raw.send(b"a1 NOOP\n")  # RFC 3501 §2.2: lines end with CRLF
    assert raw.line() == b"a1 BAD line must end with CRLF"
    raw.send(b"a2 NOOP\xff\r\n")  # 8-bit octets in an atom
    assert raw.until(b"a2") == [b"a2 BAD invalid command name"]
    raw.send(b"a3 LOGIN {3}\n")  # a synchronising literal on a bare-LF line: refused before "+"
    assert raw.line() == b"a3 BAD line must end with CRLF"
    raw.send(b"a4 LOGIN {9000}\r\n")  # before login a literal is at most 8192 octets: no "+"
    assert raw.line() == b"a4 BAD [TOOBIG] literal too big (max 8192 octets)"
    assert raw.command("a5", "NOOP") == [b"a5 OK NOOP completed"]  # none of these ended the session
    raw.send(b"a6 LOGIN {9000+}\r\n")  # RFC 7888 §4: the octets are coming anyway: the session ends
    assert raw.line() == b"* BYE literal too big (max 8192 octets)"
    assert raw.line() == b""
    raw.close()


def test_an_overlong_line_ends_the_session(imap_gw: Gateway, box: Box) -> None:
    raw = Raw(imap_gw)  # before login a line may carry AUTHENTICATE's bearer token: 16,640 octets
    raw.send(b"a1 NOOP " + b"x" * 17000 + b"\r\n")
    assert raw.line() == b"* BYE line too long (max 16640 octets)"
    assert raw.line() == b""
    raw.close()
    raw = Raw(imap_gw)
    assert raw.command("b1", f"LOGIN {box.address} {PASSWORD}")[-1].startswith(b"b1 OK")
    raw.send(b"b2 NOOP " + b"x" * 9000 + b"\r\n")
    assert raw.line() == b"* BYE line too long (max 8192 octets)"
    raw.close()
