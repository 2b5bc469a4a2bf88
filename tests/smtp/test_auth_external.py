"""APP mailboxes authenticate with their TLS client certificate (SASL EXTERNAL, RFC 4422 App. A) on SMTP
submission (AUTH EXTERNAL, RFC 4954) and IMAP (AUTHENTICATE EXTERNAL): registered, unrevoked, APP only."""

from __future__ import annotations

import base64
import smtplib
import socket
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
        ("issue-app", APP, "late"),  # revoked while the node runs
        ("issue-address", DOCTOR, "doctor"),
        ("issue-app", f"inconnu@{DOMAIN}", "unregistered"),  # no such mailbox here: nothing registered
    ):
        r = node.cli("pki", kind, address, "--out", str(base / out), "--json")
        assert r.code == 0, r.err
        if out in ("revoked", "late"):
            (base / out / "serial").write_text(str(r.json()["serial"]))  # type: ignore[index]
    assert node.cli("pki", "revoke", (base / "revoked" / "serial").read_text(), "--reason", "keyCompromise").code == 0
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
    assert client.has_extn("enhancedstatuscodes")  # the EHLO reply with a certificate is built apart
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


def _smtps(gw: Gateway, bundle: Path) -> tuple[int, bytes]:
    with smtplib.SMTP_SSL("127.0.0.1", gw.port("submissions"), timeout=30, context=client_tls(gw, bundle)) as c:
        c.ehlo("app.example")
        return c.docmd("AUTH", "EXTERNAL =")


def _imaps(gw: Gateway, bundle: Path) -> bytes:
    sock = socket.create_connection(("127.0.0.1", gw.port("imaps")), timeout=30)
    with client_tls(gw, bundle).wrap_socket(sock) as tls, tls.makefile("rb") as f:
        f.readline()  # the greeting
        tls.sendall(b"a1 AUTHENTICATE EXTERNAL =\r\n")
        return f.readline().split(b" [")[0]


def _imap_starttls(gw: Gateway, bundle: Path) -> bytes:
    raw = Raw(gw, tls=False)
    raw.send(b"t0 STARTTLS\r\n")
    assert raw.line() == b"t0 OK Begin TLS negotiation now"
    try:  # TLS 1.3: the client's handshake ends first, the server's refusal comes after
        raw.sock = client_tls(gw, bundle).wrap_socket(raw.sock)
        raw.sock.sendall(b"t1 CAPABILITY\r\n")
        if not (first := raw.sock.recv(1)):
            raise ConnectionError("closed")
        return first
    finally:
        raw.close()


def test_a_certificate_revoked_while_the_node_runs_is_refused_from_the_next_handshake(
    certs: tuple[Gateway, Path],
) -> None:
    """Submission (STARTTLS and implicit TLS) and IMAPS keep one TLS context each; every handshake still
    meets the CRLs as they are now (gateway.tls.CrlContexts.live)."""
    gw, base = certs
    late = base / "late"
    client = smtp(gw, late)
    assert client.docmd("AUTH", "EXTERNAL =") == (235, b"2.7.0 Authentication successful")
    client.quit()
    assert _smtps(gw, late) == (235, b"2.7.0 Authentication successful")
    assert _imaps(gw, late) == b"a1 OK"
    assert _imap_starttls(gw, late) == b"*"
    assert gw.node.cli("pki", "revoke", (late / "serial").read_text(), "--reason", "keyCompromise").code == 0
    refused = (ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)
    with pytest.raises(refused):
        smtp(gw, late)
    with pytest.raises(refused):
        _smtps(gw, late)
    with pytest.raises(refused):
        _imaps(gw, late)
    with pytest.raises(refused):
        _imap_starttls(gw, late)
    # Each refusal audited with OpenSSL's reason: STARTTLS by the session, implicit TLS by the listener.
    revoked = {"result": "refused", "reason": "certificate revoked"}
    smtp_records = gw.node.cli("audit", "search", "--event", "smtp.tls.refused", "--json").json()
    imap_records = gw.node.cli("audit", "search", "--event", "imap.tls.refused", "--json").json()
    got = [(r["author"].split(":")[0], r["peer"], r["response"]) for r in smtp_records[-2:] + imap_records[-2:]]  # type: ignore[index,operator]
    assert got == [
        ("smtp", "127.0.0.1", revoked),  # 587, STARTTLS
        ("submissions", "127.0.0.1", {**revoked, "listener": "submissions"}),  # 465
        ("imaps", "127.0.0.1", {**revoked, "listener": "imaps"}),  # 993
        ("imap", "127.0.0.1", revoked),  # 143, STARTTLS
    ]
    assert _smtps(gw, base / "app") == (235, b"2.7.0 Authentication successful")  # the others still work
    assert _imaps(gw, base / "app") == b"a1 OK"


def test_a_resumed_tls_session_does_not_carry_a_revoked_certificate_through(
    certs: tuple[Gateway, Path], tmp_path: Path
) -> None:
    """A TLS 1.2 session resumed after the certificate's revocation skips the handshake's check (OpenSSL
    keeps the session cache on the listener's first context; the ssl module cannot turn session ids
    off): AUTH EXTERNAL checks the certificate against the current CRLs itself. TLS 1.3 issues no
    ticket, so nothing resumes."""
    gw, base = certs
    r = gw.node.cli("pki", "issue-app", APP, "--out", str(tmp_path), "--json")
    assert r.code == 0, r.err
    serial = str(r.json()["serial"])  # type: ignore[index]
    tls12 = client_tls(gw, tmp_path)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with smtplib.SMTP_SSL("127.0.0.1", gw.port("submissions"), timeout=30, context=tls12) as client:
        client.ehlo("app.example")
        assert client.docmd("AUTH", "EXTERNAL =") == (235, b"2.7.0 Authentication successful")
        session = client.sock.session  # type: ignore[union-attr]
    assert gw.node.cli("pki", "revoke", serial, "--reason", "keyCompromise").code == 0
    sock = socket.create_connection(("127.0.0.1", gw.port("submissions")), timeout=30)
    with tls12.wrap_socket(sock, session=session) as resumed, resumed.makefile("rb") as f:
        assert resumed.session_reused
        assert f.readline().startswith(b"220 ")
        resumed.sendall(b"EHLO app.example\r\n")
        while f.readline()[3:4] == b"-":
            pass
        resumed.sendall(b"AUTH EXTERNAL =\r\n")
        assert f.readline() == b"535 5.7.8 Authentication credentials invalid\r\n"
    failed = gw.node.cli("audit", "search", "--event", "smtp.auth.failed", "--json").json()
    assert failed[-1]["response"]["reason"] == "certificate-revoked"  # type: ignore[index]
    # TLS 1.3: no ticket is issued, so there is no session to resume.
    tls13 = client_tls(gw, base / "app")
    tls13.minimum_version = ssl.TLSVersion.TLSv1_3
    with smtplib.SMTP_SSL("127.0.0.1", gw.port("submissions"), timeout=30, context=tls13) as client:
        client.ehlo("app.example")  # tickets, if any, come after the handshake
        assert client.docmd("AUTH", "EXTERNAL =") == (235, b"2.7.0 Authentication successful")
        assert client.sock.session is None or not client.sock.session.has_ticket  # type: ignore[union-attr]
