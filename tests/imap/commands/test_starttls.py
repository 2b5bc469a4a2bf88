"""STARTTLS (RFC 3501 §6.2.1, RFC 2595 §3.1, RFC 8314): only on the clear port and only before login; the
tagged OK, then the TLS handshake, then new capabilities (AUTH=PLAIN instead of STARTTLS LOGINDISABLED).
Clear text pipelined behind STARTTLS is never acted on under TLS (RFC 3207 §6, CVE-2011-0411 class): the
STARTTLS is refused instead. A failed handshake ends the session and is audited.
"""

from __future__ import annotations

import time

from tests.imap.commands.test_capability import AFTER_TLS, PRE_TLS, ImplicitRaw
from tests.imap.conftest import Box, Raw, connect
from tests.smtp.conftest import Gateway


def upgrade(raw: Raw, gw: Gateway) -> None:
    raw.sock = gw.tls().wrap_socket(raw.sock)
    raw.file = raw.sock.makefile("rb")


def test_starttls_then_the_capabilities_of_tls(imap_gw: Gateway) -> None:
    raw = Raw(imap_gw, tls=False)
    raw.send(b"a1 starttls\r\n")
    assert raw.line() == b"a1 OK Begin TLS negotiation now"
    upgrade(raw, imap_gw)
    assert raw.command("a2", "CAPABILITY") == [b"* CAPABILITY " + AFTER_TLS, b"a2 OK CAPABILITY completed"]
    assert raw.command("a3", "STARTTLS") == [b"a3 BAD TLS is already active"]
    assert raw.command("a4", "NOOP") == [b"a4 OK NOOP completed"]  # the refusal left TLS as it was
    raw.close()


def test_imaplib_starttls(imap_gw: Gateway) -> None:
    client = connect(imap_gw, tls="none")
    assert client.starttls(ssl_context=imap_gw.tls()) == ("OK", [None])  # imaplib: no untagged STARTTLS data
    assert client.capabilities == tuple(AFTER_TLS.decode().upper().split())
    client.logout()


def test_starttls_on_the_implicit_tls_port(imap_gw: Gateway) -> None:
    raw = ImplicitRaw(imap_gw)
    assert raw.command("a1", "STARTTLS") == [b"a1 BAD TLS is already active"]
    raw.close()


def test_starttls_takes_no_arguments(imap_gw: Gateway) -> None:
    raw = Raw(imap_gw, tls=False)
    assert raw.command("a1", "STARTTLS now") == [b"a1 BAD unexpected extra arguments"]
    assert raw.command("a2", "CAPABILITY") == [b"* CAPABILITY " + PRE_TLS, b"a2 OK CAPABILITY completed"]
    raw.send(b"a3 STARTTLS\r\n")  # still in clear: it can be asked again
    assert raw.line() == b"a3 OK Begin TLS negotiation now"
    upgrade(raw, imap_gw)
    assert raw.command("a4", "NOOP") == [b"a4 OK NOOP completed"]
    raw.close()


def test_commands_pipelined_behind_starttls_refuse_it(imap_gw: Gateway) -> None:
    raw = Raw(imap_gw, tls=False)
    raw.send(b"a1 STARTTLS\r\na2 CAPABILITY\r\n")  # one write: both are in the server's buffer together
    assert raw.until(b"a1") == [b"a1 BAD commands after STARTTLS must wait for TLS"]
    assert raw.until(b"a2") == [b"* CAPABILITY " + PRE_TLS, b"a2 OK CAPABILITY completed"]  # still in clear
    raw.close()


def test_starttls_only_before_login(box: Box) -> None:
    raw = box.raw()
    assert raw.command("a1", "STARTTLS") == [b"a1 BAD STARTTLS is not allowed in the authenticated state"]
    raw.close()


def test_a_failed_handshake_ends_the_session_and_is_audited(imap_gw: Gateway) -> None:
    raw = Raw(imap_gw, tls=False)
    raw.send(b"a1 STARTTLS\r\n")
    assert raw.line() == b"a1 OK Begin TLS negotiation now"
    time.sleep(0.3)  # the server is in its handshake: what follows is read as TLS
    raw.send(b"a2 LOGIN user password\r\n")  # not a ClientHello
    assert raw.file.read() == b""  # closed, whatever TLS alert came first is not IMAP
    raw.close()
    events = imap_gw.node.cli("audit", "search", "--event", "imap.tls.refused", "--json").json()
    assert [e["response"] for e in events] == [{"result": "refused", "reason": "WRONG_VERSION_NUMBER"}]  # type: ignore[index]
