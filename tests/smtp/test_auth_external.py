"""APP mailboxes authenticate with their TLS client certificate (SASL EXTERNAL, RFC 4422 App. A) on SMTP
submission (AUTH EXTERNAL, RFC 4954) and IMAP (AUTHENTICATE EXTERNAL): registered, unrevoked, APP only."""

from __future__ import annotations

import base64
import smtplib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DOMAIN, NodeDir, copy_node
from tests.imap.conftest import Raw
from tests.smtp.conftest import APP, DOCTOR, PASSWORD, Gateway, provision, serve
from tests.smtp.test_submission import message


@pytest.fixture(scope="module")
def certs(template_node: NodeDir, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Path]]:
    """A node whose APP mailbox has a registered certificate, a revoked one, and a PER with an S/MIME one."""
    base = tmp_path_factory.mktemp("external")
    node = copy_node(template_node, base / "node")
    provision(node)
    for kind, address, out in (
        ("issue-app", APP, "app"),
        ("issue-app", APP, "revoked"),
        ("issue-address", DOCTOR, "doctor"),
        ("issue-app", f"inconnu@{DOMAIN}", "unregistered"),  # no such mailbox here: nothing registered
    ):
        r = node.cli("pki", kind, address, "--out", str(base / out), "--json")
        assert r.code == 0, r.err
        if out == "revoked":
            serial = str(r.json()["serial"])  # type: ignore[index]
    assert node.cli("pki", "revoke", serial, "--reason", "keyCompromise").code == 0
    for gw in serve(node):
        yield gw, base


def client_tls(gw: Gateway, bundle: Path | None) -> ssl.SSLContext:
    ctx = gw.tls()
    if bundle is not None:
        ctx.load_cert_chain(bundle / "fullchain.pem", bundle / "key.pem")
    return ctx


def smtp(gw: Gateway, bundle: Path | None) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", gw.port("submission"), timeout=30)
    client.ehlo("app.example")
    client.starttls(context=client_tls(gw, bundle))
    client.ehlo("app.example")
    return client


def test_auth_external_with_the_app_certificate_submits_as_the_app(certs: tuple[Gateway, Path]) -> None:
    gw, base = certs
    client = smtp(gw, base / "app")
    assert client.esmtp_features["auth"].split() == ["EXTERNAL", "LOGIN", "PLAIN"]
    assert client.docmd("AUTH", "EXTERNAL =") == (235, b"2.7.0 Authentication successful")
    assert client.sendmail(APP, [DOCTOR], message(APP, DOCTOR, "Résultat automatique")) == {}
    assert client.docmd("MAIL", f"FROM:<{DOCTOR}>") == (550, f"5.7.1 {APP} may not send as {DOCTOR}".encode())
    client.quit()


def test_auth_external_refusals(certs: tuple[Gateway, Path]) -> None:
    gw, base = certs
    client = smtp(gw, None)  # no certificate: EXTERNAL is not offered, and refused when tried
    assert client.esmtp_features["auth"].split() == ["LOGIN", "PLAIN"]
    assert client.docmd("AUTH", "EXTERNAL =") == (535, b"5.7.8 Authentication credentials invalid")
    client.quit()
    client = smtp(gw, base / "unregistered")  # from the trust space, but registered to no mailbox here
    assert client.docmd("AUTH", "EXTERNAL =") == (535, b"5.7.8 Authentication credentials invalid")
    client.quit()
    client = smtp(gw, base / "app")  # the right certificate, asking to act as someone else
    authzid = base64.b64encode(DOCTOR.encode()).decode()
    assert client.docmd("AUTH", f"EXTERNAL {authzid}") == (535, b"5.7.8 Authentication credentials invalid")
    client.quit()
    for refused in ("revoked", "doctor"):  # revoked (CRL); an S/MIME certificate, not for TLS clients (EKU)
        with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
            smtp(gw, base / refused)
    events = gw.node.cli("audit", "search", "--event", "smtp.auth.failed", "--json").json()
    assert [e["response"]["reason"] for e in events] == [  # type: ignore[index]
        "no-certificate",
        "unregistered-certificate",
        "authzid",
    ]


def test_imap_authenticate_external(certs: tuple[Gateway, Path]) -> None:
    gw, base = certs
    raw = Raw(gw, tls=False)
    raw.send(b"t0 STARTTLS\r\n")
    assert raw.line() == b"t0 OK Begin TLS negotiation now"
    raw.sock = client_tls(gw, base / "app").wrap_socket(raw.sock)
    raw.file = raw.sock.makefile("rb")
    assert raw.command("a1", "CAPABILITY")[0].endswith(b"AUTH=PLAIN AUTH=EXTERNAL")
    reply = raw.command("a2", "AUTHENTICATE EXTERNAL =")
    assert reply[-1].startswith(b"a2 OK [CAPABILITY IMAP4rev1")
    assert reply[-1].endswith(b"] Logged in")
    raw.close()
    raw = Raw(gw)  # no certificate: not offered, and refused when tried
    assert raw.command("b0", "CAPABILITY")[0].endswith(b"ENABLE AUTH=PLAIN")
    assert raw.command("b1", "AUTHENTICATE EXTERNAL =") == [b"b1 NO [AUTHENTICATIONFAILED] Authentication failed"]
    assert raw.command("b2", f'LOGIN {APP} "{PASSWORD}"')[-1].endswith(b"Logged in")  # its password still works
    raw.close()
