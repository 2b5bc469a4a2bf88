"""AUTHENTICATE (RFC 3501 §6.2.2) with PLAIN (RFC 4616) and EXTERNAL (RFC 4422 App. A: the registered TLS
client certificate of an APP mailbox), with or without an initial response (SASL-IR, RFC 4959 §3: `=` is an
empty one), the `+ ` challenge and `*` cancel (→ BAD), bad base64 (→ BAD), refused credentials
(`NO [AUTHENTICATIONFAILED]`, RFC 5530 §3), another identity (`NO [AUTHORIZATIONFAILED]`), no TLS
(`NO [PRIVACYREQUIRED]`, RFC 8314), unknown mechanisms (`NO [CANNOT]`).

The EXTERNAL cases use an APP mailbox of this module's node with a certificate issued (and so registered) by
`mssgw pki issue-app`, and a certificate from the trust space registered to no mailbox.
"""

from __future__ import annotations

import base64
import secrets
import ssl
from pathlib import Path

import pytest

from gateway.auth.passwords import hash_password
from gateway.node import Node
from tests.conftest import DOMAIN
from tests.imap.commands.test_capability import AFTER_LOGIN, AFTER_TLS
from tests.imap.conftest import Box, Raw, run
from tests.smtp.conftest import DOCTOR, PASSWORD, Gateway
from tests.smtp.test_auth_external import client_tls

LOGGED_IN = b"OK [CAPABILITY " + AFTER_LOGIN.encode() + b"] Logged in"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def audit(gw: Gateway, event: str) -> list[dict[str, object]]:
    return gw.node.cli("audit", "search", "--event", event, "--json").json()  # type: ignore[return-value]


def with_certificate(gw: Gateway, ctx: ssl.SSLContext) -> Raw:
    """A byte-exact client that does STARTTLS with this context (a client certificate, or none)."""
    raw = Raw(gw, tls=False)
    raw.send(b"t0 STARTTLS\r\n")
    assert raw.line() == b"t0 OK Begin TLS negotiation now"
    raw.sock = ctx.wrap_socket(raw.sock)
    raw.file = raw.sock.makefile("rb")
    return raw


# -- PLAIN -------------------------------------------------------------------------------------------


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


def test_plain_exact_replies_and_audit(imap_gw: Gateway, box: Box) -> None:
    raw = Raw(imap_gw)  # authzid equal to the user (another case): allowed; the mechanism name in any case
    token = b64(f"{box.address.upper()}\0{box.address}\0{PASSWORD}")
    assert raw.command("a1", f"authenticate plain {token}") == [b"a1 " + LOGGED_IN]
    assert raw.command("a2", "AUTHENTICATE PLAIN " + token) == [
        b"a2 BAD AUTHENTICATE is not allowed in the authenticated state"
    ]
    raw.close()
    raw = Raw(imap_gw)
    raw.send(b"b1 AUTHENTICATE PLAIN\r\n")
    assert raw.line() == b"+ "  # an empty challenge (RFC 4959 §3)
    raw.send(b64(f"\0{box.address}\0{PASSWORD}").encode() + b"\r\n")
    assert raw.until(b"b1") == [b"b1 " + LOGGED_IN]
    raw.close()
    mine = [e for e in audit(imap_gw, "imap.login.succeeded") if e["principal"] == box.address]
    assert [e["response"] for e in mine] == [{"result": "done", "mechanism": "PLAIN"}] * 2


def test_plain_refusals(imap_gw: Gateway, box: Box) -> None:
    raw = Raw(imap_gw)
    assert raw.command("a1", "AUTHENTICATE PLAIN " + b64(f"\0{box.address}\0wrong")) == [
        b"a1 NO [AUTHENTICATIONFAILED] Authentication failed"
    ]
    assert raw.command("a2", "AUTHENTICATE PLAIN =") == [b"a2 BAD PLAIN expects authzid NUL authcid NUL password"]
    assert raw.command("a3", "AUTHENTICATE PLAIN " + b64(f"{box.address}\0{PASSWORD}")) == [
        b"a3 BAD PLAIN expects authzid NUL authcid NUL password"
    ]
    assert raw.command("a4", f"AUTHENTICATE PLAIN {b64('x')}!") == [b"a4 BAD invalid base64 in initial response"]
    assert raw.command("a5", "AUTHENTICATE PLAIN eA") == [b"a5 BAD invalid base64 in initial response"]  # no pad
    assert raw.command("a6", "AUTHENTICATE PLAIN ") == [b"a6 BAD missing initial response"]
    assert raw.command("a7", "AUTHENTICATE") == [b"a7 BAD missing authentication mechanism"]
    assert raw.command("a8", "AUTHENTICATE PLAIN = extra") == [b"a8 BAD unexpected extra arguments"]
    assert raw.command("a9", "AUTHENTICATE SCRAM-SHA-256 =") == [
        b"a9 NO [CANNOT] mechanism SCRAM-SHA-256 is not supported"
    ]
    raw.send(b"b1 AUTHENTICATE PLAIN\r\n")
    assert raw.line() == b"+ "
    raw.send(b"not base64!\r\n")
    assert raw.until(b"b1") == [b"b1 BAD invalid base64 in authentication response"]
    raw.send(b"b2 AUTHENTICATE PLAIN\r\n")
    assert raw.line() == b"+ "
    raw.send(b"\r\n")  # an empty response: no credentials at all
    assert raw.until(b"b2") == [b"b2 BAD PLAIN expects authzid NUL authcid NUL password"]
    assert raw.command("b3", "NOOP") == [b"b3 OK NOOP completed"]  # still not authenticated, still talking
    assert raw.command("b4", "SELECT INBOX") == [b"b4 BAD SELECT is not allowed in the not authenticated state"]
    raw.close()
    mine = [e for e in audit(imap_gw, "imap.login.failed") if e["response"].get("login") == box.address]  # type: ignore[union-attr]
    assert [e["response"]["reason"] for e in mine] == ["bad-password"]  # type: ignore[index]
    assert "wrong" not in str(mine)


def test_plain_before_tls_is_refused_and_audited(imap_gw: Gateway, box: Box) -> None:
    raw = Raw(imap_gw, tls=False)
    token = b64(f"\0{box.address}\0{PASSWORD}")
    assert raw.command("a1", f"AUTHENTICATE PLAIN {token}") == [b"a1 NO [PRIVACYREQUIRED] authentication requires TLS"]
    assert raw.command("a2", "AUTHENTICATE EXTERNAL =") == [b"a2 NO [PRIVACYREQUIRED] authentication requires TLS"]
    raw.close()
    refused = [e for e in audit(imap_gw, "imap.login.failed") if e["response"].get("reason") == "no-tls"]  # type: ignore[union-attr]
    assert [e["response"] for e in refused][-2:] == [{"result": "refused", "reason": "no-tls"}] * 2


def test_a_response_line_without_crlf_is_bad_not_the_end(imap_gw: Gateway, box: Box) -> None:
    raw = Raw(imap_gw)
    raw.send(b"a1 AUTHENTICATE PLAIN\r\n")
    assert raw.line() == b"+ "
    raw.send(b64(f"\0{box.address}\0{PASSWORD}").encode() + b"\n")  # bare LF (RFC 3501 §2.2: CRLF)
    assert raw.until(b"a1") == [b"a1 BAD line must end with CRLF"]
    assert raw.command("a2", "NOOP") == [b"a2 OK NOOP completed"]
    raw.close()


# -- EXTERNAL ----------------------------------------------------------------------------------------

APP = f"dpi-{secrets.token_hex(3)}@{DOMAIN}"


@pytest.fixture(scope="module")
def certs(imap_gw: Gateway, tmp_path_factory: pytest.TempPathFactory) -> tuple[Gateway, Path]:
    """This module's node, with an APP mailbox holding a registered certificate, and an unregistered one."""

    async def job(n: Node) -> None:
        await n.mailboxes.create(APP, "APP", service="DPI", password_hash=hash_password(PASSWORD))

    run(imap_gw.node, job)
    base = tmp_path_factory.mktemp("external")
    for address, out in ((APP, "app"), (f"inconnu@{DOMAIN}", "unregistered")):
        r = imap_gw.node.cli("pki", "issue-app", address, "--out", str(base / out), "--json")
        assert r.code == 0, r.err
    return imap_gw, base


def test_external_with_the_registered_certificate(certs: tuple[Gateway, Path]) -> None:
    gw, base = certs
    raw = with_certificate(gw, client_tls(gw, base / "app"))
    assert raw.command("a1", "CAPABILITY") == [
        b"* CAPABILITY " + AFTER_TLS + b" AUTH=EXTERNAL",
        b"a1 OK CAPABILITY completed",
    ]
    assert raw.command("a2", "AUTHENTICATE EXTERNAL =") == [b"a2 " + LOGGED_IN]  # SASL-IR, no authzid
    raw.close()
    raw = with_certificate(gw, client_tls(gw, base / "app"))
    raw.send(b"b1 AUTHENTICATE EXTERNAL\r\n")  # no initial response: an empty challenge, then the response
    assert raw.line() == b"+ "
    raw.send(b"\r\n")
    assert raw.until(b"b1") == [b"b1 " + LOGGED_IN]
    raw.close()
    raw = with_certificate(gw, client_tls(gw, base / "app"))
    assert raw.command("c1", f"AUTHENTICATE EXTERNAL {b64(APP.upper())}") == [b"c1 " + LOGGED_IN]  # its own name
    raw.close()
    raw = with_certificate(gw, client_tls(gw, base / "app"))
    raw.send(b"d1 AUTHENTICATE EXTERNAL\r\n")
    assert raw.line() == b"+ "
    raw.send(b"*\r\n")
    assert raw.until(b"d1") == [b"d1 BAD authentication cancelled"]
    raw.close()
    mine = [e for e in audit(gw, "imap.login.succeeded") if e["principal"] == APP]
    assert [e["response"] for e in mine][-3:] == [{"result": "done", "mechanism": "EXTERNAL"}] * 3


def test_external_refusals(certs: tuple[Gateway, Path]) -> None:
    gw, base = certs
    raw = with_certificate(gw, client_tls(gw, None))  # no certificate: not offered, refused when tried
    assert raw.command("a1", "CAPABILITY") == [b"* CAPABILITY " + AFTER_TLS, b"a1 OK CAPABILITY completed"]
    assert raw.command("a2", "AUTHENTICATE EXTERNAL =") == [b"a2 NO [AUTHENTICATIONFAILED] Authentication failed"]
    raw.close()
    raw = with_certificate(gw, client_tls(gw, base / "app"))  # the right certificate, acting as someone else
    assert raw.command("b1", f"AUTHENTICATE EXTERNAL {b64(DOCTOR)}") == [
        b"b1 NO [AUTHENTICATIONFAILED] Authentication failed"
    ]
    assert raw.command("b2", "AUTHENTICATE EXTERNAL !") == [b"b2 BAD invalid base64 in initial response"]
    assert raw.command("b3", "AUTHENTICATE EXTERNAL =") == [b"b3 " + LOGGED_IN]  # then as itself
    raw.close()
    raw = with_certificate(gw, client_tls(gw, base / "unregistered"))  # trusted, registered to nobody here
    assert raw.command("c1", "AUTHENTICATE EXTERNAL =") == [b"c1 NO [AUTHENTICATIONFAILED] Authentication failed"]
    assert raw.command("c2", f'LOGIN {APP} "{PASSWORD}"') == [b"c2 " + LOGGED_IN]  # a password still works
    raw.close()
    external = [e for e in audit(gw, "imap.login.failed") if e["response"].get("mechanism") == "EXTERNAL"]  # type: ignore[union-attr]
    assert [(e["response"].get("login"), e["response"]["reason"]) for e in external][-3:] == [  # type: ignore[union-attr,index]
        (None, "no-certificate"),
        (APP, "authzid"),
        (None, "unregistered-certificate"),
    ]
