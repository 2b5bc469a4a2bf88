"""Relay from peer operators on 25: STARTTLS, a trust-space client certificate, the peer's own senders, and
S/MIME (signed then encrypted, the signer valid and bound to the sender) before anything is accepted."""

from __future__ import annotations

import json
import re
import smtplib
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from certs.pki import Issued, TrustSpacePKI, write_bundle
from gateway.smime import cms, mime
from gateway.smime.service import CRL_CHECK
from tests.conftest import DOMAIN, NodeDir, copy_node
from tests.smime.conftest import openssl
from tests.smtp.conftest import DISABLED, DOCTOR, NURSE, PEER, Gateway, inbox, serve, wait_for_message
from tests.smtp.test_submission import message

SENDER = f"dr.durand@{PEER}"


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


@dataclass
class PeerSender:
    """dr.durand at the peer operator: an address-bound certificate from the trust space, on disk for openssl."""

    issued: Issued
    cert: Path
    key: Path
    doctor: Path  # the doctor's certificate (recipient), PEM


@pytest.fixture(scope="module")
def durand(gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> PeerSender:
    out = tmp_path_factory.mktemp("durand")
    issued = TrustSpacePKI(gateway.node.data / "pki").issue_address(SENDER)
    files = write_bundle(issued, out, name="durand")
    return PeerSender(issued, files["cert"], files["key"], gateway.node.data / "smime" / DOCTOR / "cert.pem")


def protect(
    peer: PeerSender, plain: bytes, to: list[Path], *, signer: Issued | None = None, gcm: bool = False
) -> bytes:
    """What a conforming peer sends (Direct's wrap, sign, encrypt), made by gateway.smime.mime."""
    by = signer or peer.issued
    return mime.protect(
        plain,
        signer=by.certificate,
        key=by.key,
        chain=by.chain,
        recipients=[cms.Recipient(x509.load_pem_x509_certificate(c.read_bytes())) for c in to],
        gcm=gcm,
    )


def last_smime_refusal(gw: Gateway) -> dict[str, str]:
    found = gw.node.cli("audit", "search", "--event", "smime.refused", "--json").json()
    return found[-1]["response"]  # type: ignore[index,no-any-return]


def test_peer_relays_to_a_local_mailbox(gateway: Gateway, peer_cert: Path, durand: PeerSender) -> None:
    # Made by openssl: signed (SHA-256, its certificate carried) then encrypted (AES-256-CBC, OAEP SHA-256).
    plain = message(SENDER, DOCTOR, "relais entrant").replace(b"\r\n", b"\n")
    signed = openssl("cms", "-sign", "-md", "sha256", "-signer", durand.cert, "-inkey", durand.key, data=plain)
    encrypt = ["cms", "-encrypt", "-aes256", "-from", SENDER, "-to", DOCTOR, "-subject", "confidentiel"]
    oaep = ["-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256"]
    protected = openssl(*encrypt, "-recip", durand.doctor, *oaep, data=signed).replace(b"\n", b"\r\n")
    client = relay_client(gateway, peer_cert)
    assert "auth" not in client.esmtp_features  # certificates are the only credential between operators
    assert client.has_extn("enhancedstatuscodes")  # RFC 2034, as on the submission ports
    assert client.sendmail(SENDER, [DOCTOR], protected) == {}
    client.quit()
    got = wait_for_message(gateway.node, DOCTOR, b"Subject: relais entrant")
    head = got.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith(f"Return-Path: <{SENDER}>\r\nReceived: from mx.{PEER} ([127.0.0.1])\r\n\t(using TLSv1.3 ")
    assert "with ESMTPS id " in head
    # The stored message is the verified inner one, under the verdict naming the signer and its serial.
    results = head.split("Authentication-Results: ", 1)[1]
    assert results.startswith(
        f"mail.{DOMAIN};\r\n smime=pass body.smime-identifier={SENDER}\r\n"
        f" body.smime-serial={durand.issued.certificate.serial_number:X}\r\n"
    )
    assert "(address-bound, validated " in results
    assert "Subject: confidentiel" not in head
    assert "application/pkcs7-mime" not in head
    accepted = gateway.node.cli("audit", "search", "--event", "smtp.message.accepted", "--json").json()
    assert accepted[-1]["author"] == "relay:node1"  # type: ignore[index]
    assert accepted[-1]["principal"] == PEER  # type: ignore[index]
    verified = gateway.node.cli("audit", "search", "--event", "smime.verified", "--json").json()
    assert verified[-1]["response"] == {  # type: ignore[index]
        "result": "done",
        "signer_serial": f"{durand.issued.certificate.serial_number:X}",
        "binding": "address",
        "mail_from": SENDER,
    }


def test_aes_gcm_from_a_conforming_peer_is_accepted(gateway: Gateway, peer_cert: Path, durand: PeerSender) -> None:
    client = relay_client(gateway, peer_cert)
    raw = protect(durand, message(SENDER, DOCTOR, "relais GCM"), [durand.doctor], gcm=True)
    assert client.sendmail(SENDER, [DOCTOR], raw) == {}
    client.quit()
    assert b"smime=pass" in wait_for_message(gateway.node, DOCTOR, b"Subject: relais GCM")


def _refusal(gateway: Gateway, peer_cert: Path, sender: str, rcpts: list[str], raw: bytes) -> tuple[int, bytes]:
    client = relay_client(gateway, peer_cert)
    client.mail(sender)
    for rcpt in rcpts:
        assert client.rcpt(rcpt)[0] == 250
    reply = client.data(raw)
    client.quit()
    return reply


def test_plaintext_from_a_peer_is_refused(gateway: Gateway, peer_cert: Path) -> None:
    reply = _refusal(gateway, peer_cert, SENDER, [DOCTOR], message(SENDER, DOCTOR, "en clair"))
    assert reply == (550, b"5.7.1 message refused: not encrypted (S/MIME enveloped-data required)")
    refused = last_smime_refusal(gateway)
    assert (refused["reason"], refused["reply"]) == ("plaintext", f"550 {reply[1].decode()}")


def test_encrypted_but_unsigned_is_refused(gateway: Gateway, peer_cert: Path, durand: PeerSender) -> None:
    cert = x509.load_pem_x509_certificate(durand.doctor.read_bytes())
    inner = message(SENDER, DOCTOR, "non signé")
    raw = mime.enveloped_message(
        f"From: {SENDER}\r\nTo: {DOCTOR}\r\nMIME-Version: 1.0\r\n".encode(),
        cms.encrypt(inner, [cms.Recipient(cert)]),
    )
    assert _refusal(gateway, peer_cert, SENDER, [DOCTOR], raw) == (
        550,
        b"5.7.1 message refused: not signed (S/MIME signature required)",
    )
    assert last_smime_refusal(gateway)["reason"] == "unsigned"


def test_signer_who_is_not_the_sender_is_refused(gateway: Gateway, peer_cert: Path, durand: PeerSender) -> None:
    other = TrustSpacePKI(gateway.node.data / "pki").issue_address(f"autre@{PEER}")
    raw = protect(durand, message(SENDER, DOCTOR, "usurpation"), [durand.doctor], signer=other)
    assert _refusal(gateway, peer_cert, SENDER, [DOCTOR], raw) == (
        550,
        b"5.7.1 message refused: the signer is not the sender",
    )
    assert last_smime_refusal(gateway)["reason"] == "sender-mismatch"


def test_mixed_case_sender_matches_its_certificate(gateway: Gateway, peer_cert: Path, durand: PeerSender) -> None:
    shouting = "Dr.Durand@" + PEER.upper()
    raw = protect(durand, message(shouting, DOCTOR, "casse mixte"), [durand.doctor])
    client = relay_client(gateway, peer_cert)
    assert client.sendmail(shouting, [DOCTOR], raw) == {}
    client.quit()
    assert b"smime=pass" in wait_for_message(gateway.node, DOCTOR, b"Subject: casse mixte")


def test_signer_from_another_trust_space_is_refused(
    gateway: Gateway, peer_cert: Path, durand: PeerSender, tmp_path: Path
) -> None:
    rogue = TrustSpacePKI.create(tmp_path / "rogue", label="rogue.test", crl_base_url="http://crl.rogue.test")
    raw = protect(durand, message(SENDER, DOCTOR, "faux"), [durand.doctor], signer=rogue.issue_address(SENDER))
    assert _refusal(gateway, peer_cert, SENDER, [DOCTOR], raw) == (
        550,
        b"5.7.5 message refused: the signer is not trusted",
    )
    assert last_smime_refusal(gateway)["reason"] == "untrusted"


def test_a_tampered_body_is_refused(gateway: Gateway, peer_cert: Path, durand: PeerSender) -> None:
    cert = x509.load_pem_x509_certificate(durand.doctor.read_bytes())
    content = mime.wrap(message(SENDER, DOCTOR, "altéré"))
    signature = cms.sign_detached(content, durand.issued.certificate, durand.issued.key, durand.issued.chain)
    entity = mime.signed_entity(content.replace(b"Bonjour", b"Bonsoir"), signature, "b1")
    raw = mime.enveloped_message(
        f"From: {SENDER}\r\nTo: {DOCTOR}\r\nMIME-Version: 1.0\r\n".encode(),
        cms.encrypt(entity, [cms.Recipient(cert)]),
    )
    assert _refusal(gateway, peer_cert, SENDER, [DOCTOR], raw) == (
        550,
        b"5.7.7 message refused: the content does not match its signature",
    )
    assert last_smime_refusal(gateway)["reason"] == "bad-digest"


def test_every_local_recipient_needs_an_entry(gateway: Gateway, peer_cert: Path, durand: PeerSender) -> None:
    raw = protect(durand, message(SENDER, DOCTOR, "pour deux"), [durand.doctor])
    assert _refusal(gateway, peer_cert, SENDER, [DOCTOR, NURSE], raw) == (
        550,
        f"5.7.5 message refused: not encrypted for the recipient's certificate ({NURSE})".encode(),
    )
    assert last_smime_refusal(gateway)["reason"] == "not-for-us"


def test_a_revoked_signer_is_refused_once_the_crl_says_so(
    gateway: Gateway, peer_cert: Path, durand: PeerSender
) -> None:
    pki = TrustSpacePKI(gateway.node.data / "pki")
    issued = pki.issue_address(f"revoque@{PEER}")
    raw = protect(durand, message(f"revoque@{PEER}", DOCTOR, "révoqué"), [durand.doctor], signer=issued)
    r = gateway.node.cli("pki", "revoke", issued.serial, "--reason", "keyCompromise")
    assert r.code == 0, r.err
    time.sleep(CRL_CHECK + 0.5)  # the node looks at the CRL directory at most this often
    assert _refusal(gateway, peer_cert, f"revoque@{PEER}", [DOCTOR], raw) == (
        550,
        b"5.7.5 message refused: the signer's certificate is revoked",
    )
    assert last_smime_refusal(gateway)["reason"] == "revoked"


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


def test_the_listener_checks_peers_against_the_configured_crl_directory(template_node: NodeDir, tmp_path: Path) -> None:
    """`[smime] crl_dir` as an operator under an external PKI sets it, holding DER files as crl-cache/
    does: the relay listener judges peers' certificates by those CRLs, not by the development PKI's."""
    node = copy_node(template_node, tmp_path / "node")
    assert node.cli("trust", "add-domain", PEER).code == 0
    pki = TrustSpacePKI(node.data / "pki")
    crls = tmp_path / "crl"
    crls.mkdir()

    def fetched(*cas: str) -> None:
        for ca in cas:
            (crls / f"{ca}.crl").write_bytes((pki.path / "crl" / f"{ca}.crl").read_bytes())

    fetched("organisations", "personnes")  # no CRL for the root yet
    issued = pki.issue_server([PEER])
    write_bundle(issued, tmp_path / "peer", name="peer", root=pki.root)
    for gw in serve(node, {"MSSGW_SMIME__CRL_DIR": str(crls)}):
        # Fail closed: the root has no CRL here, so no chain under it can be judged (and the log says so).
        with pytest.raises(smtplib.SMTPServerDisconnected):
            relay_client(gw, tmp_path / "peer")
        assert last_tls_refusal(gw) == "unable to get certificate CRL"
        log = [json.loads(line) for line in gw.running.stderr_path.read_text().splitlines()]
        warned = [(x["level"], x["ca"]) for x in log if x.get("event") == "no current CRL for a trust-space CA"]
        assert warned == [("warning", pki.root.subject.rfc4514_string())]
        fetched("root")
        client = relay_client(gw, tmp_path / "peer")
        assert client.mail(f"a@{PEER}") == (250, b"2.1.0 OK")
        client.quit()
        assert gw.node.cli("pki", "revoke", issued.serial, "--reason", "keyCompromise").code == 0
        # Published in the development PKI's crl/, which this node does not read: still accepted.
        client = relay_client(gw, tmp_path / "peer")
        assert client.mail(f"a@{PEER}") == (250, b"2.1.0 OK")
        client.quit()
        fetched("organisations")  # the new CRL reaches the configured directory
        with pytest.raises(smtplib.SMTPServerDisconnected):
            relay_client(gw, tmp_path / "peer")
        assert last_tls_refusal(gw) == "certificate revoked"


def test_a_mailbox_may_keep_the_smime_form_for_its_end_to_end_client(
    gateway: Gateway, peer_cert: Path, durand: PeerSender
) -> None:
    r = gateway.node.cli("mailbox", "keep-smime", DOCTOR, "on")
    assert (r.code, r.out.strip()) == (0, f"{DOCTOR} now keeps the S/MIME form of messages from peers")
    try:
        nurse = gateway.node.data / "smime" / NURSE / "cert.pem"
        raw = protect(durand, message(SENDER, f"{DOCTOR}, {NURSE}", "deux formes"), [durand.doctor, nurse])
        client = relay_client(gateway, peer_cert)
        assert client.sendmail(SENDER, [DOCTOR, NURSE], raw) == {}
        client.quit()
        kept = wait_for_message(gateway.node, DOCTOR, raw.split(b"\r\n\r\n", 1)[1][:200])
        opened = wait_for_message(gateway.node, NURSE, b"Subject: deux formes")
        # The same verdict on both; the doctor's copy is the message as it crossed, for her own client.
        verdict = re.search(rb"Authentication-Results: .*?\)\r\n", opened, re.DOTALL)
        assert verdict is not None
        assert verdict.group(0) in kept
        assert kept.endswith(raw.split(b"\r\n\r\n", 1)[1])
        assert b"application/pkcs7-mime" in kept.split(b"\r\n\r\n", 1)[0]
        assert b"Subject: deux formes" not in kept
    finally:
        assert gateway.node.cli("mailbox", "keep-smime", DOCTOR, "off").code == 0
    shown = gateway.node.cli("mailbox", "show", DOCTOR, "--json").json()
    assert shown["keep_smime"] is False  # type: ignore[index]


def _copies(gateway: Gateway, address: str, marker: bytes) -> int:
    return sum(marker in body for body in inbox(gateway.node, address))


def test_a_message_relayed_again_is_acknowledged_and_stored_once(
    gateway: Gateway, peer_cert: Path, durand: PeerSender
) -> None:
    """A peer that did not get our 250 (or died before recording it) relays the message again, encrypted
    afresh: the mailbox that got it gets no second copy, a recipient that did not gets it now."""
    nurse = gateway.node.data / "smime" / NURSE / "cert.pem"
    mid = "<renvoi.1@ch-peer.mssante.fr>"
    plain = message(SENDER, DOCTOR, "relais renvoye", Message_ID=mid)
    code, text = _refusal(gateway, peer_cert, SENDER, [DOCTOR], protect(durand, plain, [durand.doctor]))
    assert code == 250
    assert text.startswith(b"2.0.0 OK delivered as "), text
    assert _copies(gateway, DOCTOR, b"Subject: relais renvoye") == 1

    time.sleep(1.1)  # a retry comes later: the check time in our Authentication-Results field differs
    code, again = _refusal(gateway, peer_cert, SENDER, [DOCTOR, NURSE], protect(durand, plain, [durand.doctor, nurse]))
    assert code == 250
    assert again.startswith(b"2.0.0 OK delivered as "), again
    assert _copies(gateway, DOCTOR, b"Subject: relais renvoye") == 1
    assert _copies(gateway, NURSE, b"Subject: relais renvoye") == 1
    queue_id = again.decode().rsplit(" ", 1)[1]
    duplicates = gateway.node.cli("audit", "search", "--event", "queue.duplicate", "--json").json()
    assert duplicates[-1]["response"] == {  # type: ignore[index]
        "result": "done",
        "queue_id": queue_id,
        "rcpt": DOCTOR,
        "message_id": mid,
    }
    delivered = gateway.node.cli("audit", "search", "--event", "queue.delivered", "--json").json()
    mine = [d["response"]["rcpt"] for d in delivered if d["response"].get("message_id") == mid]  # type: ignore[index,union-attr]
    assert mine == [DOCTOR, NURSE]
    # Our processed MDN went once to each mailbox's first copy: none again for the doctor's.
    mdns = gateway.node.cli("audit", "search", "--event", "notice.mdn.queued", "--json").json()
    sent = [len(m["response"]["mdn_queue_ids"]) for m in mdns if m["response"].get("message_id") == mid]  # type: ignore[index,union-attr]
    assert sent == [1, 1]


def test_the_receipt_is_the_senders_and_the_message_ids(gateway: Gateway, peer_cert: Path, durand: PeerSender) -> None:
    """Another Message-ID is another message; so is the same Message-ID from another sender, and the same
    Message-ID with other content (a peer that reuses them loses nothing)."""
    colleague = f"dr.petit@{PEER}"
    other = TrustSpacePKI(gateway.node.data / "pki").issue_address(colleague)
    for n, (sender, signer, mid) in enumerate(
        [
            (SENDER, durand.issued, "<a.1@ch-peer.mssante.fr>"),
            (SENDER, durand.issued, "<a.2@ch-peer.mssante.fr>"),
            (colleague, other, "<a.1@ch-peer.mssante.fr>"),
            (SENDER, durand.issued, "<a.1@ch-peer.mssante.fr>"),  # the first one's, another subject
        ]
    ):
        plain = message(sender, DOCTOR, f"recu {n}", Message_ID=mid)
        raw = protect(durand, plain, [durand.doctor], signer=signer)
        client = relay_client(gateway, peer_cert)
        assert client.sendmail(sender, [DOCTOR], raw) == {}
        client.quit()
    assert [_copies(gateway, DOCTOR, f"Subject: recu {n}".encode()) for n in range(4)] == [1, 1, 1, 1]


def test_a_peers_delivery_notification_with_the_null_sender_is_taken(
    gateway: Gateway, peer_cert: Path, durand: PeerSender
) -> None:
    """RFC 5321 §4.5.5: bounces travel with `MAIL FROM:<>`, bound by their From: alone. aiosmtpd reads an
    empty sender as "no MAIL yet": its RCPT answered 503 and a second MAIL was taken, so every DSN a peer
    sent (mssgw's own worker sends them so) was lost."""
    raw = protect(durand, message(SENDER, DOCTOR, "avis de non-remise"), [durand.doctor])
    client = relay_client(gateway, peer_cert)
    assert client.docmd("MAIL", "FROM:<>") == (250, b"2.1.0 OK")
    assert client.docmd("MAIL", f"FROM:<{SENDER}>") == (503, b"5.5.1 Error: nested MAIL command")
    assert client.docmd("RCPT", f"TO:<{DOCTOR}>") == (250, b"2.1.5 OK")
    code, reply = client.data(raw)
    assert code == 250, reply
    assert re.fullmatch(rb"2\.0\.0 OK delivered as [0-9a-f]{32}", reply)
    client.quit()
    got = wait_for_message(gateway.node, DOCTOR, b"Subject: avis de non-remise")
    assert got.startswith(b"Return-Path: <>\r\nReceived: from ")  # RFC 5321 §4.4: the null sender too
    assert b"smime=pass" in got
    accepted = gateway.node.cli("audit", "search", "--event", "smtp.message.accepted", "--json").json()
    assert accepted[-1]["response"]["mail_from"] == ""  # type: ignore[index]
