"""Greeting, capabilities, STARTTLS, LOGIN, AUTHENTICATE, LOGOUT and the states (RFC 3501 §3, §6.1-6.2;
domain brief §9 IMAP edge cases), against the real server with imaplib and raw bytes."""

from __future__ import annotations

import base64
import imaplib

import pytest

from tests.imap.conftest import Box, Raw, connect
from tests.smtp.conftest import PASSWORD, Gateway

PRE_TLS = b"IMAP4rev1 LITERAL+ SASL-IR ID ENABLE STARTTLS LOGINDISABLED"
AFTER_LOGIN = (
    "IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UNSELECT UIDPLUS MOVE CHILDREN SPECIAL-USE CONDSTORE ESEARCH "
    "APPENDLIMIT=26214400"
)


def test_greeting_and_capabilities_before_and_after_tls(imap_gw: Gateway) -> None:
    raw = Raw(imap_gw, tls=False)
    assert raw.greeting == b"* OK [CAPABILITY " + PRE_TLS + b"] mail.ch-test.mssante.fr mssgw IMAP4rev1 ready"
    assert raw.command("a1", "CAPABILITY") == [b"* CAPABILITY " + PRE_TLS, b"a1 OK CAPABILITY completed"]
    assert raw.command("a2", "NOOP") == [b"a2 OK NOOP completed"]
    raw.send(b"a3 STARTTLS\r\n")
    assert raw.line() == b"a3 OK Begin TLS negotiation now"
    raw.sock = imap_gw.tls().wrap_socket(raw.sock)
    raw.file = raw.sock.makefile("rb")
    assert raw.command("a4", "CAPABILITY") == [
        b"* CAPABILITY IMAP4rev1 LITERAL+ SASL-IR ID ENABLE AUTH=PLAIN",  # EXTERNAL: with a certificate
        b"a4 OK CAPABILITY completed",
    ]
    assert raw.command("a5", "STARTTLS") == [b"a5 BAD TLS is already active"]
    assert raw.command("a6", "LOGOUT") == [b"* BYE mssgw logging out", b"a6 OK LOGOUT completed"]
    assert raw.line() == b""  # closed


def test_login_before_tls_is_refused(imap_gw: Gateway, box: Box) -> None:
    raw = Raw(imap_gw, tls=False)
    assert raw.command("a1", f'LOGIN {box.address} "{PASSWORD}"') == [
        b"a1 NO [PRIVACYREQUIRED] LOGIN is disabled before STARTTLS"
    ]
    assert raw.command("a2", "AUTHENTICATE PLAIN") == [b"a2 NO [PRIVACYREQUIRED] authentication requires TLS"]
    raw.close()


def test_commands_out_of_state_and_unknown_ones(imap_gw: Gateway) -> None:
    raw = Raw(imap_gw)
    assert raw.command("a1", "FETCH 1 FLAGS") == [b"a1 BAD FETCH is not allowed in the not authenticated state"]
    assert raw.command("a2", "SELECT INBOX") == [b"a2 BAD SELECT is not allowed in the not authenticated state"]
    assert raw.command("a3", "FROBNICATE") == [b"a3 BAD unknown command FROBNICATE"]
    assert raw.command("a4", "LOGIN onlyone") == [b"a4 BAD missing password"]
    assert raw.command("a5", "NOOP extra") == [b"a5 BAD unexpected extra arguments"]
    raw.close()


def test_bad_password_is_no_and_audited(imap_gw: Gateway, box: Box) -> None:
    client = connect(imap_gw)
    with pytest.raises(imaplib.IMAP4.error, match=r"\[AUTHENTICATIONFAILED\] Authentication failed"):
        client.login(box.address, "not the password")
    client.login(box.address, PASSWORD)  # below the lock-out threshold: the right password works
    client.logout()
    events = imap_gw.node.cli("audit", "search", "--event", "imap.login.failed", "--json").json()
    mine = [e for e in events if e["response"].get("login") == box.address]  # type: ignore[index,union-attr]
    assert [e["response"]["reason"] for e in mine] == ["bad-password"]  # type: ignore[index]
    assert "not the password" not in str(events)


def test_login_answers_capabilities_and_logout(imap_gw: Gateway, box: Box) -> None:
    client = connect(imap_gw)
    typ, data = client.login(box.address, PASSWORD)
    assert (typ, data) == ("OK", [b"[CAPABILITY " + AFTER_LOGIN.encode() + b"] Logged in"])
    typ, data = client.capability()  # imaplib also keeps the login's CAPABILITY code: the last is ours
    assert (typ, data[-1]) == ("OK", AFTER_LOGIN.encode())
    assert client.logout() == ("BYE", [b"mssgw logging out"])


def test_implicit_tls_login(imap_gw: Gateway, box: Box) -> None:
    client = connect(imap_gw, tls="implicit")
    assert client.login(box.address, PASSWORD)[0] == "OK"
    client.logout()


def test_authenticate_plain_with_and_without_initial_response(imap_gw: Gateway, box: Box) -> None:
    token = base64.b64encode(f"\0{box.address}\0{PASSWORD}".encode()).decode()
    raw = Raw(imap_gw)
    reply = raw.command("a1", f"AUTHENTICATE PLAIN {token}")
    assert reply[-1] == b"a1 OK [CAPABILITY " + AFTER_LOGIN.encode() + b"] Logged in"
    raw.close()
    raw = Raw(imap_gw)
    raw.send(b"b1 AUTHENTICATE PLAIN\r\n")
    assert raw.line() == b"+ "
    raw.send(token.encode() + b"\r\n")
    assert raw.until(b"b1")[-1].startswith(b"b1 OK [CAPABILITY")
    raw.close()
    raw = Raw(imap_gw)
    raw.send(b"c1 AUTHENTICATE PLAIN\r\n")
    assert raw.line() == b"+ "
    raw.send(b"*\r\n")
    assert raw.until(b"c1") == [b"c1 BAD authentication cancelled"]
    assert raw.command("c2", "AUTHENTICATE CRAM-MD5") == [b"c2 NO [CANNOT] mechanism CRAM-MD5 is not supported"]
    wrong = base64.b64encode(f"other@x.fr\0{box.address}\0{PASSWORD}".encode()).decode()
    assert raw.command("c3", f"AUTHENTICATE PLAIN {wrong}") == [
        b"c3 NO [AUTHORIZATIONFAILED] cannot act as another user"
    ]
    raw.close()
