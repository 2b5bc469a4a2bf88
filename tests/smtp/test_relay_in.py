"""Relay from peer operators on 25: STARTTLS, a trust-space client certificate, the peer's own senders."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest

from certs.pki import TrustSpacePKI, write_bundle
from tests.smtp.conftest import DISABLED, DOCTOR, PEER, Gateway, wait_for_message
from tests.smtp.test_submission import message


def bundle(pki: TrustSpacePKI, out: Path, *hosts: str) -> Path:
    write_bundle(pki.issue_server(list(hosts)), out, name="peer", root=pki.root)
    return out


@pytest.fixture(scope="module")
def peer_cert(gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A peer operator's certificate for the trust-listed domain, from the trust-space PKI."""
    return bundle(TrustSpacePKI(gateway.node.data / "pki"), tmp_path_factory.mktemp("peer"), PEER, f"mx.{PEER}")


def relay_client(gw: Gateway, cert: Path | None) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", gw.port("relay"), timeout=30)
    client.ehlo(f"mx.{PEER}")
    ctx = gw.tls()
    if cert is not None:
        ctx.load_cert_chain(cert / "fullchain.pem", cert / "key.pem")
    client.starttls(context=ctx)
    client.ehlo(f"mx.{PEER}")
    return client


def last_tls_refusal(gw: Gateway) -> str:
    for _ in range(50):
        found = gw.node.cli("audit", "search", "--event", "smtp.tls.refused", "--json").json()
        if found:
            return str(found[-1]["response"]["reason"])  # type: ignore[index]
    raise AssertionError("no smtp.tls.refused record")


def test_peer_relays_to_a_local_mailbox(gateway: Gateway, peer_cert: Path) -> None:
    client = relay_client(gateway, peer_cert)
    assert "auth" not in client.esmtp_features  # certificates are the only credential between operators
    sender = f"dr.durand@{PEER}"
    assert client.sendmail(sender, [DOCTOR], message(sender, DOCTOR, "relais entrant")) == {}
    client.quit()
    got = wait_for_message(gateway.node, DOCTOR, b"Subject: relais entrant")
    head = got.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith(f"Received: from mx.{PEER} ([127.0.0.1])\r\n\t(using TLSv1.3 with cipher ")
    assert "with ESMTPS id " in head
    accepted = gateway.node.cli("audit", "search", "--event", "smtp.message.accepted", "--json").json()
    assert accepted[-1]["author"] == "relay:node1"  # type: ignore[index]
    assert accepted[-1]["principal"] == PEER  # type: ignore[index]


def test_starttls_is_required_first(gateway: Gateway) -> None:
    client = smtplib.SMTP("127.0.0.1", gateway.port("relay"), timeout=30)
    client.ehlo("mx.example")
    assert client.docmd("MAIL", f"FROM:<a@{PEER}>") == (530, b"5.7.0 Must issue a STARTTLS command first")
    client.close()


def test_no_client_certificate(gateway: Gateway) -> None:
    client = relay_client(gateway, None)
    assert client.docmd("MAIL", f"FROM:<a@{PEER}>") == (
        530,
        b"5.7.0 a trust-space client certificate is required (mutual TLS)",
    )
    client.quit()


def test_certificate_for_a_domain_off_the_trust_list(gateway: Gateway, tmp_path: Path) -> None:
    cert = bundle(TrustSpacePKI(gateway.node.data / "pki"), tmp_path, "labo.example.fr")
    client = relay_client(gateway, cert)
    assert client.docmd("MAIL", "FROM:<a@labo.example.fr>") == (
        550,
        b"5.7.1 the client certificate names no domain of the trust list (labo.example.fr)",
    )
    client.quit()
    refused = gateway.node.cli("audit", "search", "--event", "smtp.peer.refused", "--json").json()
    assert refused[-1]["response"]["reply"].startswith("550 5.7.1 the client certificate")  # type: ignore[index]


def test_sender_domain_must_be_the_peers(gateway: Gateway, peer_cert: Path) -> None:
    client = relay_client(gateway, peer_cert)
    assert client.docmd("MAIL", "FROM:<x@autre.mssante.fr>") == (
        550,
        f"5.7.1 sender domain autre.mssante.fr is not served by the authenticated peer ({PEER})".encode(),
    )
    client.quit()


@pytest.mark.parametrize(
    ("rcpt", "reply"),
    [
        ("nobody@ch-test.mssante.fr", "5.1.1 nobody@ch-test.mssante.fr: no such mailbox"),
        (DISABLED, f"5.2.1 {DISABLED}: mailbox disabled"),
        ("x@gmail.com", "5.7.1 x@gmail.com: relaying denied, gmail.com is not a domain of this operator"),
        (f"y@{PEER}", f"5.7.1 y@{PEER}: relaying denied, {PEER} is not a domain of this operator"),
    ],
)
def test_relay_recipients_must_be_active_local_mailboxes(
    gateway: Gateway, peer_cert: Path, rcpt: str, reply: str
) -> None:
    client = relay_client(gateway, peer_cert)
    client.mail(f"a@{PEER}")
    assert client.rcpt(rcpt) == (550, reply.encode())
    client.quit()


def test_certificate_from_another_ca_fails_the_handshake(gateway: Gateway, tmp_path: Path) -> None:
    rogue = TrustSpacePKI.create(tmp_path / "rogue", label="rogue.test", crl_base_url="http://crl.rogue.test")
    cert = bundle(rogue, tmp_path / "b", PEER)
    with pytest.raises(smtplib.SMTPServerDisconnected) as exc:
        relay_client(gateway, cert)
    # asyncio closes the connection without the alert; the node audits why it refused the handshake.
    assert str(exc.value) == "Connection unexpectedly closed"
    assert last_tls_refusal(gateway) == "unable to get local issuer certificate"


def test_revoked_certificate_fails_the_handshake(gateway: Gateway, tmp_path: Path) -> None:
    pki = TrustSpacePKI(gateway.node.data / "pki")
    issued = pki.issue_server([PEER])
    write_bundle(issued, tmp_path, name="revoked", root=pki.root)
    client = relay_client(gateway, tmp_path)
    assert client.mail(f"a@{PEER}") == (250, b"2.1.0 OK")  # valid until revoked
    client.quit()
    r = gateway.node.cli("pki", "revoke", issued.serial, "--reason", "keyCompromise")
    assert r.code == 0, r.err
    # The listener reloads the published CRLs: the next handshake with this certificate fails.
    with pytest.raises(smtplib.SMTPServerDisconnected) as exc:
        relay_client(gateway, tmp_path)
    assert str(exc.value) == "Connection unexpectedly closed"
    assert last_tls_refusal(gateway) == "certificate revoked"
