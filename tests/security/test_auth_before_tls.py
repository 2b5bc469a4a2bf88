"""No credentials before TLS (RFC 3207 §4, RFC 4954 §4, RFC 3501 §6.2.3, RFC 8314 §3): on 587, 25 and 143
AUTH/LOGIN are neither offered nor accepted before STARTTLS, with exact replies; credentials sent anyway
are not checked (no login recorded, none succeeds); commands pipelined behind STARTTLS in clear text are
discarded (the CVE-2011-0411 class). On 465 and 993 TLS comes first, so AUTH is offered at once.
Driven with smtplib and imaplib, and a raw socket where the clients would refuse to misbehave.
"""

from __future__ import annotations

import base64
import imaplib
import smtplib
import socket
from collections.abc import Iterator

import pytest

from tests.smtp.conftest import DOCTOR, PASSWORD, Gateway

MUST_STARTTLS = (530, b"5.7.0 Must issue a STARTTLS command first")
PLAIN = base64.b64encode(f"\0{DOCTOR}\0{PASSWORD}".encode()).decode()  # the right password


def audit(gw: Gateway, prefix: str) -> list[dict[str, object]]:
    return gw.node.cli("audit", "search", "--event", prefix, "--json").json()  # type: ignore[return-value]


@pytest.fixture
def no_login_recorded(gw: Gateway) -> Iterator[None]:
    """The test sends the right password in clear: no login may succeed, and SMTP must not even check it."""
    smtp_before, imap_before = len(audit(gw, "smtp.auth.")), audit(gw, "imap.login.")
    yield
    assert len(audit(gw, "smtp.auth.")) == smtp_before, "an AUTH before TLS reached the password check"
    new = audit(gw, "imap.login.")[len(imap_before) :]
    assert [(e["action"], e["response"]["result"], e["response"]["reason"]) for e in new] == [  # type: ignore[index]
        ("imap.login.failed", "refused", "no-tls")
    ] * len(new), new


# -- SMTP ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("listener", ["submission", "relay"])
def test_smtp_offers_only_starttls_before_tls(gw: Gateway, listener: str) -> None:
    client = smtplib.SMTP("127.0.0.1", gw.port(listener), timeout=30)
    code, _ = client.ehlo("client.example")
    assert code == 250
    assert client.has_extn("starttls")
    assert not client.has_extn("auth")
    with pytest.raises(smtplib.SMTPNotSupportedError):
        client.login(DOCTOR, PASSWORD)  # smtplib itself will not send it: no AUTH was offered
    client.close()


@pytest.mark.parametrize("listener", ["submission", "relay"])
@pytest.mark.usefixtures("no_login_recorded")
def test_smtp_auth_and_mail_before_tls_are_refused(gw: Gateway, listener: str) -> None:
    client = smtplib.SMTP("127.0.0.1", gw.port(listener), timeout=30)
    client.ehlo("client.example")
    for command, argument in (
        ("AUTH", f"PLAIN {PLAIN}"),
        ("AUTH", "LOGIN " + base64.b64encode(DOCTOR.encode()).decode()),
        ("AUTH", "LOGIN"),
        ("AUTH", "EXTERNAL ="),
        ("AUTH", "CRAM-MD5"),
        ("MAIL", f"FROM:<{DOCTOR}>"),
        ("RCPT", f"TO:<{DOCTOR}>"),
        ("DATA", ""),
        ("VRFY", DOCTOR),
    ):
        assert client.docmd(command, argument) == MUST_STARTTLS, command
    assert client.docmd("NOOP") == (250, b"2.0.0 OK")
    client.close()


def test_implicit_tls_offers_auth_at_once_and_no_starttls(gw: Gateway) -> None:
    client = gw.submissions(login=None)
    assert client.esmtp_features["auth"].split() == ["LOGIN", "PLAIN"]
    assert not client.has_extn("starttls")
    client.login(DOCTOR, PASSWORD)
    client.quit()


@pytest.mark.parametrize("listener", ["submission", "relay"])
def test_smtp_commands_pipelined_behind_starttls_are_discarded(gw: Gateway, listener: str) -> None:
    sock = socket.create_connection(("127.0.0.1", gw.port(listener)), timeout=5)
    plain = sock.makefile("rb")
    assert plain.readline().startswith(b"220 ")
    sock.sendall(b"EHLO client.example\r\n")
    while plain.readline()[3:4] == b"-":
        pass
    # A man in the middle appends commands to the client's STARTTLS: they must not run inside TLS.
    sock.sendall(b"STARTTLS\r\nVRFY injected\r\nHELP injected\r\n")
    assert plain.readline() == b"220 2.0.0 Ready to start TLS\r\n"
    tls = gw.tls().wrap_socket(sock)
    secure = tls.makefile("rb")
    tls.sendall(b"NOOP\r\n")
    assert secure.readline() == b"250 2.0.0 OK\r\n"  # the first reply under TLS is NOOP's: nothing else ran
    tls.settimeout(0.5)
    with pytest.raises(TimeoutError):
        secure.readline()
    tls.close()


# -- IMAP ----------------------------------------------------------------------------------------------

PRE_TLS = ("IMAP4REV1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "STARTTLS", "LOGINDISABLED")


@pytest.mark.usefixtures("no_login_recorded")
def test_imap_login_and_authenticate_before_tls_are_refused(gw: Gateway) -> None:
    client = imaplib.IMAP4("127.0.0.1", gw.port("imap"), timeout=30)
    assert client.capabilities == PRE_TLS  # LOGINDISABLED, and no AUTH= mechanism (RFC 3501 §6.2.3)
    with pytest.raises(imaplib.IMAP4.error, match=r"^b'\[PRIVACYREQUIRED\] LOGIN is disabled before STARTTLS'$"):
        client.login(DOCTOR, PASSWORD)
    with pytest.raises(imaplib.IMAP4.error, match=r"^\[PRIVACYREQUIRED\] authentication requires TLS$"):
        client.authenticate("PLAIN", lambda _: f"\0{DOCTOR}\0{PASSWORD}".encode())
    assert client.state == "NONAUTH"
    client.starttls(ssl_context=gw.tls())
    assert client.capabilities == ("IMAP4REV1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "AUTH=PLAIN")
    client.logout()


def test_imap_over_implicit_tls_offers_authentication_at_once(gw: Gateway) -> None:
    client = imaplib.IMAP4_SSL("127.0.0.1", gw.port("imaps"), ssl_context=gw.tls(), timeout=30)
    assert "AUTH=PLAIN" in client.capabilities
    assert "STARTTLS" not in client.capabilities
    assert "LOGINDISABLED" not in client.capabilities
    assert client.login(DOCTOR, PASSWORD)[0] == "OK"
    client.logout()
