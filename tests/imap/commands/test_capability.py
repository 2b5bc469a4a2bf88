"""CAPABILITY (RFC 3501 §6.1.1, §7.2.1) and the capabilities of the greeting (§7.1, `resp-text-code`).

What each state offers: before TLS on 143 STARTTLS and LOGINDISABLED and no AUTH= mechanism (RFC 3501
§6.2.3, RFC 2595 §3.1, RFC 8314); under TLS (STARTTLS or implicit TLS on 993) AUTH=PLAIN (AUTH=EXTERNAL
only to a client that sent a certificate: tests/imap/commands/test_authenticate.py); once authenticated the
extensions, and APPENDLIMIT (RFC 7889). Shared constants and small clients for the other modules live here.
"""

from __future__ import annotations

import socket

from tests.imap.conftest import Box, Raw, connect
from tests.smtp.conftest import PASSWORD, Gateway

PRE_TLS = b"IMAP4rev1 LITERAL+ SASL-IR ID ENABLE STARTTLS LOGINDISABLED"
AFTER_TLS = b"IMAP4rev1 LITERAL+ SASL-IR ID ENABLE AUTH=PLAIN"
AFTER_LOGIN = (
    "IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UNSELECT UIDPLUS MOVE CHILDREN SPECIAL-USE CONDSTORE ESEARCH "
    "APPENDLIMIT=26214400"
)
GREETING_TEXT = b"mail.ch-test.mssante.fr mssgw IMAP4rev1 ready"


class ImplicitRaw(Raw):
    """A byte-exact client on the implicit TLS port (993, RFC 8314 §3.3)."""

    def __init__(self, gw: Gateway) -> None:
        plain = socket.create_connection(("127.0.0.1", gw.port("imaps")), timeout=30)
        self.sock = gw.tls().wrap_socket(plain)
        self.file = self.sock.makefile("rb")
        self.greeting = self.line()


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


def test_implicit_tls_greeting_offers_plain_and_no_starttls(imap_gw: Gateway) -> None:
    raw = ImplicitRaw(imap_gw)
    assert raw.greeting == b"* OK [CAPABILITY " + AFTER_TLS + b"] " + GREETING_TEXT
    assert raw.command("a1", "CAPABILITY") == [b"* CAPABILITY " + AFTER_TLS, b"a1 OK CAPABILITY completed"]
    raw.close()


def test_capability_once_authenticated_and_selected(box: Box) -> None:
    raw = box.raw()
    expected = [b"* CAPABILITY " + AFTER_LOGIN.encode(), b"a1 OK CAPABILITY completed"]
    assert raw.command("a1", "CAPABILITY") == expected
    assert raw.command("s", "SELECT INBOX")[-1] == b"s OK [READ-WRITE] SELECT completed"
    assert raw.command("a1", "CAPABILITY") == expected  # the same in the selected state
    raw.close()


def test_capability_names_are_case_insensitive(imap_gw: Gateway) -> None:
    raw = Raw(imap_gw)
    assert raw.command("a1", "capability") == [b"* CAPABILITY " + AFTER_TLS, b"a1 OK CAPABILITY completed"]
    assert raw.command("a2", "CaPaBiLiTy") == [b"* CAPABILITY " + AFTER_TLS, b"a2 OK CAPABILITY completed"]
    raw.close()


def test_capability_takes_no_arguments(imap_gw: Gateway) -> None:
    raw = Raw(imap_gw, tls=False)
    assert raw.command("a1", "CAPABILITY IMAP4rev1") == [b"a1 BAD unexpected extra arguments"]
    assert raw.command("a2", "CAPABILITY ") == [b"a2 BAD unexpected extra arguments"]
    assert raw.command("a3", "CAPABILITY(") == [b"a3 BAD invalid command name"]
    assert raw.command("a4", "CAPABILITY") == [b"* CAPABILITY " + PRE_TLS, b"a4 OK CAPABILITY completed"]
    raw.close()


def test_imaplib_reads_the_capabilities_of_each_state(imap_gw: Gateway, box: Box) -> None:
    client = connect(imap_gw, tls="none")
    assert client.capabilities == tuple(PRE_TLS.decode().upper().split())  # from the greeting (imaplib upper-cases)
    client.starttls(ssl_context=imap_gw.tls())  # imaplib asks CAPABILITY again after TLS
    assert client.capabilities == tuple(AFTER_TLS.decode().upper().split())
    client.login(box.address, PASSWORD)
    # imaplib keeps the CAPABILITY code of the LOGIN reply, then adds the untagged response
    assert client.capability() == ("OK", [AFTER_LOGIN.encode(), AFTER_LOGIN.encode()])
    client.logout()
