"""AUTHENTICATE OAUTHBEARER (RFC 7628 §4.1, §4.4) and XOAUTH2 with the identity provider's access tokens, on a
node whose [oidc] names a test provider (its keys over HTTPS on loopback): imaplib and a byte-exact client."""

from __future__ import annotations

import base64
import imaplib
import json
from collections.abc import Iterator

import pytest

from tests.auth.idp import Idp, token_gateway
from tests.conftest import NodeDir, copy_node
from tests.imap.commands.test_authenticate import LOGGED_IN, audit
from tests.imap.commands.test_capability import AFTER_TLS
from tests.imap.conftest import Raw, connect
from tests.smtp.conftest import DOCTOR, NURSE, SECRETARIAT, Gateway, provision

CLAIRE, LUCAS = "810000000009", "810000000017"
ERROR = {
    "status": "invalid_token",
    "scope": "openid",
    "openid-configuration": "https://auth.esante.test/auth/realms/esante-wallet/.well-known/openid-configuration",
}


@pytest.fixture(scope="module")
def idp() -> Idp:
    return Idp()


@pytest.fixture(scope="module")
def gw(template_node: NodeDir, tmp_path_factory: pytest.TempPathFactory, idp: Idp) -> Iterator[Gateway]:
    node = copy_node(template_node, tmp_path_factory.mktemp("imap-bearer") / "node")
    provision(node)
    with token_gateway(node, idp) as gw:
        yield gw


def oauthbearer(user: str | None, token: str) -> bytes:
    return f"n,{'a=' + user if user else ''},\x01host=127.0.0.1\x01port=143\x01auth=Bearer {token}\x01\x01".encode()


def test_capabilities_name_the_mechanisms_after_tls(gw: Gateway, imap_gw: Gateway) -> None:
    raw = Raw(gw, tls=False)
    assert b"AUTH=" not in raw.greeting  # before TLS: none (LOGINDISABLED)
    raw.close()
    raw = Raw(gw)
    assert raw.command("a1", "CAPABILITY")[0] == b"* CAPABILITY " + AFTER_TLS + b" AUTH=OAUTHBEARER AUTH=XOAUTH2"
    raw.close()
    plain = Raw(imap_gw)  # a node without [oidc]: not offered, and refused as unknown
    assert plain.command("a1", "CAPABILITY")[0] == b"* CAPABILITY " + AFTER_TLS
    initial = base64.b64encode(oauthbearer(DOCTOR, "abc")).decode()
    assert plain.command("a2", f"AUTHENTICATE OAUTHBEARER {initial}") == [
        b"a2 NO [CANNOT] mechanism OAUTHBEARER is not supported"
    ]
    plain.close()


def test_imaplib_logs_in_with_either_mechanism(gw: Gateway, idp: Idp) -> None:
    client = connect(gw)
    typ, data = client.authenticate("OAUTHBEARER", lambda _challenge: oauthbearer(DOCTOR, idp.token(CLAIRE)))
    assert (typ, data[0]) == ("OK", LOGGED_IN[3:])
    assert client.select("INBOX")[0] == "OK"
    client.logout()
    client = connect(gw)
    xoauth2 = f"user={NURSE}\x01auth=Bearer {idp.token(LUCAS, jti='imap-x')}\x01\x01".encode()
    assert client.authenticate("XOAUTH2", lambda _challenge: xoauth2)[0] == "OK"
    client.logout()
    done = [e for e in audit(gw, "imap.login.succeeded") if e["response"].get("jti") == "imap-x"]  # type: ignore[union-attr]
    assert [(e["principal"], e["response"]) for e in done] == [
        (NURSE, {"result": "done", "mechanism": "XOAUTH2", "idnat": LUCAS, "jti": "imap-x"})
    ]


def test_exact_exchange_with_and_without_initial_response(gw: Gateway, idp: Idp) -> None:
    raw = Raw(gw)
    initial = base64.b64encode(oauthbearer(None, idp.token(CLAIRE))).decode()  # no a=: her only mailbox
    assert raw.command("a1", f"AUTHENTICATE OAUTHBEARER {initial}") == [b"a1 " + LOGGED_IN]
    raw.close()
    raw = Raw(gw)
    raw.send(b"b1 AUTHENTICATE OAUTHBEARER\r\n")
    assert raw.line() == b"+ "
    raw.send(base64.b64encode(oauthbearer(DOCTOR, idp.token(CLAIRE))) + b"\r\n")
    assert raw.until(b"b1") == [b"b1 " + LOGGED_IN]
    raw.close()


@pytest.mark.parametrize(
    ("user", "changes", "reason"),
    [
        (DOCTOR, {"age": 4000}, "token-expired"),
        (NURSE, {}, "not-the-owner"),  # Claire's good token, for Lucas's mailbox
        (SECRETARIAT, {}, "not-a-personal-mailbox"),
        (DOCTOR, {"identifier": "810000000008"}, "no-identifier"),  # a bad RPPS check digit
    ],
)
def test_refused_token_gets_the_error_then_no(
    gw: Gateway, idp: Idp, user: str, changes: dict[str, object], reason: str
) -> None:
    raw = Raw(gw)
    jti = f"imap-refused-{reason}"
    initial = base64.b64encode(oauthbearer(user, idp.token(jti=jti, **changes))).decode()  # type: ignore[arg-type]
    raw.send(f"a1 AUTHENTICATE OAUTHBEARER {initial}\r\n".encode())
    challenge = raw.line()
    assert challenge.startswith(b"+ ")
    assert json.loads(base64.b64decode(challenge[2:])) == ERROR  # RFC 7628 §3.2.2
    raw.send(b"AQ==\r\n")  # §3.2.3: the client's %x01
    assert raw.until(b"a1") == [b"a1 NO [AUTHENTICATIONFAILED] Authentication failed"]
    assert raw.command("a2", "SELECT INBOX") == [b"a2 BAD SELECT is not allowed in the not authenticated state"]
    raw.close()
    failed = [e for e in audit(gw, "imap.login.failed") if e["response"].get("reason") == reason]  # type: ignore[union-attr]
    assert [(e["response"]["mechanism"], e["response"]["login"]) for e in failed] == [("OAUTHBEARER", user)]  # type: ignore[index]


def test_malformed_and_cancelled(gw: Gateway, idp: Idp) -> None:
    raw = Raw(gw)
    bad = base64.b64encode(b"n,,\x01auth=Basic Y2xhaXJl\x01\x01").decode()
    assert raw.command("a1", f"AUTHENTICATE OAUTHBEARER {bad}") == [b"a1 BAD malformed OAUTHBEARER response"]
    assert raw.command("a2", "AUTHENTICATE XOAUTH2 =") == [b"a2 BAD malformed XOAUTH2 response"]
    raw.send(b"a3 AUTHENTICATE XOAUTH2\r\n")
    assert raw.line() == b"+ "
    raw.send(b"*\r\n")
    assert raw.until(b"a3") == [b"a3 BAD authentication cancelled"]
    # A refused token, then the client cancels the error exchange: still NO, still talking.
    raw.send(f"a4 AUTHENTICATE XOAUTH2 {base64.b64encode(oauthbearer(DOCTOR, 'x')).decode()}\r\n".encode())
    assert raw.until(b"a4") == [b"a4 BAD malformed XOAUTH2 response"]
    expired = f"user={DOCTOR}\x01auth=Bearer {idp.token(age=4000)}\x01\x01".encode()
    raw.send(b"a5 AUTHENTICATE XOAUTH2 " + base64.b64encode(expired) + b"\r\n")
    assert json.loads(base64.b64decode(raw.line()[2:])) == {"status": "401", "schemes": "bearer", "scope": "openid"}
    raw.send(b"*\r\n")
    assert raw.until(b"a5") == [b"a5 NO [AUTHENTICATIONFAILED] Authentication failed"]
    assert raw.command("a6", "NOOP") == [b"a6 OK NOOP completed"]
    raw.close()


def test_before_tls_refused(gw: Gateway, idp: Idp) -> None:
    raw = Raw(gw, tls=False)
    initial = base64.b64encode(oauthbearer(DOCTOR, idp.token())).decode()
    assert raw.command("a1", f"AUTHENTICATE OAUTHBEARER {initial}") == [
        b"a1 NO [PRIVACYREQUIRED] authentication requires TLS"
    ]
    raw.close()


def test_imaplib_sees_the_failure(gw: Gateway, idp: Idp) -> None:
    client = connect(gw)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.authenticate("OAUTHBEARER", lambda challenge: b"\x01" if challenge else oauthbearer(NURSE, idp.token()))
    client.logout()


def test_a_large_token_fits_on_imap_too(gw: Gateway, idp: Idp) -> None:
    """A token SMTP takes (its AUTH line up to 12,288 octets) must pass IMAP's pre-login line limit as well."""
    big = idp.token(CLAIRE, roles=["x" * 40] * 150)
    initial = base64.b64encode(oauthbearer(DOCTOR, big))
    assert len(initial) > 9000
    raw = Raw(gw)
    assert raw.command("a1", f"AUTHENTICATE OAUTHBEARER {initial.decode()}") == [b"a1 " + LOGGED_IN]
    raw.close()
    raw = Raw(gw)
    raw.send(b"b1 AUTHENTICATE OAUTHBEARER\r\n")
    assert raw.line() == b"+ "
    raw.send(initial + b"\r\n")
    assert raw.until(b"b1") == [b"b1 " + LOGGED_IN]
    raw.close()
