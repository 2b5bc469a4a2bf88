"""LOGOUT (RFC 3501 §6.1.3): in every state, `* BYE` then the tagged OK, then the server closes the
connection; nothing sent after LOGOUT is answered. The end of an authenticated session is audited.
"""

from __future__ import annotations

import imaplib

from tests.imap.commands.test_capability import ImplicitRaw
from tests.imap.conftest import Box, Raw, connect
from tests.smtp.conftest import Gateway

BYE = b"* BYE mssgw logging out"


def test_logout_before_tls_and_before_login(imap_gw: Gateway) -> None:
    raw = Raw(imap_gw, tls=False)
    assert raw.command("a1", "LOGOUT") == [BYE, b"a1 OK LOGOUT completed"]
    assert raw.line() == b""  # closed by the server
    raw.close()
    raw = ImplicitRaw(imap_gw)
    assert raw.command("b1", "logout") == [BYE, b"b1 OK LOGOUT completed"]
    assert raw.line() == b""
    raw.close()


def test_logout_when_authenticated_and_selected_is_audited(imap_gw: Gateway, box: Box) -> None:
    raw = box.raw()
    assert raw.command("a1", "LOGOUT") == [BYE, b"a1 OK LOGOUT completed"]
    assert raw.line() == b""
    raw.close()
    raw = box.raw()
    assert raw.command("s", "SELECT INBOX")[-1] == b"s OK [READ-WRITE] SELECT completed"
    assert raw.command("b1", "LOGOUT") == [BYE, b"b1 OK LOGOUT completed"]
    assert raw.line() == b""
    raw.close()
    events = imap_gw.node.cli("audit", "search", "--event", "imap.logout", "--json").json()
    mine = [(e["author"], e["response"]) for e in events if e["principal"] == box.address]  # type: ignore[index]
    assert mine == [(f"imap:{box.address}", {"result": "done"})] * 2


def test_commands_after_logout_are_not_answered(box: Box) -> None:
    raw = box.raw()
    raw.send(b"a1 LOGOUT\r\na2 NOOP\r\n")  # pipelined: the session ends with the LOGOUT
    assert raw.until(b"a1") == [BYE, b"a1 OK LOGOUT completed"]
    assert raw.line() == b""
    raw.close()


def test_logout_takes_no_arguments(imap_gw: Gateway) -> None:
    raw = Raw(imap_gw)
    assert raw.command("a1", "LOGOUT now") == [b"a1 BAD unexpected extra arguments"]
    assert raw.command("a2", "NOOP") == [b"a2 OK NOOP completed"]  # the session goes on
    assert raw.command("a3", "LOGOUT") == [BYE, b"a3 OK LOGOUT completed"]
    raw.close()


def test_imaplib_logout(imap_gw: Gateway, box: Box) -> None:
    client = box.login()
    assert client.logout() == ("BYE", [b"mssgw logging out"])
    assert client.state == "LOGOUT"
    client = connect(imap_gw)
    assert client.logout() == ("BYE", [b"mssgw logging out"])
    assert isinstance(client, imaplib.IMAP4)
