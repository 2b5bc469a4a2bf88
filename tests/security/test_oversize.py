"""Oversize and over-long inputs, on the wire, with exact replies: a client (logged in or not) cannot make
the node hold more than its limits, and a refusal leaves the session usable where the protocol can tell
where the refused input ended.

SMTP (node limit: 1,000,000-octet messages, see conftest): DATA past SIZE without announcing it (587, 465,
25), 1001 header fields, a 256 KiB header block, 1001 address entries, 101 recipients, command lines of
megabytes before TLS. IMAP: the whole of a command before login (32 KiB over several literals), the text of
a command after login (64 KiB), APPEND past APPENDLIMIT with imaplib. The limits already tested elsewhere are
listed in tests/security/README.md.
"""

from __future__ import annotations

import imaplib
import smtplib
import socket
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from certs.pki import TrustSpacePKI
from gateway.smime import cms, mime
from gateway.smtp.server import relay_size_limit
from tests.imap.conftest import Raw
from tests.security.conftest import MAX_MESSAGE_SIZE, Wire, relay_client
from tests.smtp.conftest import DOCTOR, NURSE, PASSWORD, PEER, Gateway

TOO_BIG = (552, "5.3.4 Message size exceeds fixed maximum message size")


def head(sender: str = DOCTOR, rcpt: str = NURSE) -> bytes:
    return f"From: {sender}\r\nTo: {rcpt}\r\nSubject: big\r\n".encode()


@pytest.mark.parametrize("listener", ["submission", "submissions", "relay"])
def test_data_past_the_size_limit_is_refused_and_the_session_goes_on(
    gw: Gateway, peer_cert: Path, listener: str
) -> None:
    if listener == "relay":
        wire, sender, rcpt = Wire(gw, listener, cert=peer_cert), f"dr.durand@{PEER}", DOCTOR
        limit = relay_size_limit(MAX_MESSAGE_SIZE)  # the S/MIME form of a message at the limit
    else:
        wire, sender, rcpt = Wire(gw, listener), DOCTOR, NURSE
        wire.login(DOCTOR, PASSWORD)
        limit = MAX_MESSAGE_SIZE
    assert f"SIZE {limit}" in wire.features.splitlines()
    assert wire.command(f"MAIL FROM:<{sender}> SIZE={limit + 1}") == TOO_BIG  # announced: at once
    assert wire.command(f"MAIL FROM:<{sender}>") == (250, "2.1.0 OK")  # not announced: read, then refused
    assert wire.command(f"RCPT TO:<{rcpt}>") == (250, "2.1.5 OK")
    assert wire.command("DATA")[0] == 354
    line = b"x" * 998 + b"\r\n"
    wire.send(head(sender, rcpt) + b"\r\n" + line * (limit // len(line) + 10) + b".\r\n")
    assert wire.reply() == TOO_BIG
    assert wire.command("NOOP") == (250, "2.0.0 OK")
    wire.close()
    refused = content_refusals(gw)[-1]
    assert refused["peer"] == "127.0.0.1"
    assert refused["response"] == {
        "result": "refused",
        "reply": "552 5.3.4 Message size exceeds fixed maximum message size",
        "size": len(head(sender, rcpt)) + 2 + 1000 * (limit // 1000 + 10) + 3,
    }


def test_the_smime_form_of_a_message_within_the_limit_passes_the_relay(gw: Gateway, peer_cert: Path) -> None:
    """Domain brief §7: peers relay messages signed then encrypted, in base64: a message just under the size
    limit is a third larger on the relay port. Held to the message's limit there, it was accepted with 250
    at the sender's operator and bounced here. The opened message is held to the limit instead."""
    sender = f"dr.durand@{PEER}"
    signer = TrustSpacePKI(gw.node.data / "pki").issue_address(sender)
    doctor = cms.Recipient(x509.load_pem_x509_certificate((gw.node.data / "smime" / DOCTOR / "cert.pem").read_bytes()))
    line = b"x" * 76 + b"\r\n"

    def protected(size: int) -> bytes:
        plain = head(sender, DOCTOR) + b"\r\n" + line * (size // len(line))
        return mime.protect(plain, signer=signer.certificate, key=signer.key, chain=signer.chain, recipients=[doctor])

    at_limit = protected(MAX_MESSAGE_SIZE - 1000)
    assert len(at_limit) > MAX_MESSAGE_SIZE * 4 // 3
    client = relay_client(gw, peer_cert)
    assert client.sendmail(sender, [DOCTOR], at_limit) == {}
    with pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail(sender, [DOCTOR], protected(MAX_MESSAGE_SIZE + 1000))
    assert (refused.value.smtp_code, refused.value.smtp_error) == (552, TOO_BIG[1].encode())
    client.quit()
    record = content_refusals(gw)[-1]
    assert record["author"] == "relay:node1"
    assert record["response"]["reply"] == f"552 {TOO_BIG[1]}"
    assert MAX_MESSAGE_SIZE < record["response"]["size"] < MAX_MESSAGE_SIZE + 2000


def content_refusals(gw: Gateway) -> list[dict[str, Any]]:
    found = gw.node.cli("audit", "search", "--event", "smtp.content.refused", "--json").json()
    assert isinstance(found, list)
    return found


@pytest.mark.parametrize("listener", ["submission", "relay"])
def test_a_line_over_1000_octets_in_data_is_refused_at_the_end_and_audited(
    gw: Gateway, peer_cert: Path, listener: str
) -> None:
    """RFC 5321 §4.5.3.1.6: 1000 octets per line with its CRLF (aiosmtpd allows 1001). The rest of the data
    is read and dropped, the refusal answers the end line, and a command sent with the end line (RFC 2920
    pipelining) is still read as a command."""
    if listener == "relay":
        wire, sender, rcpt = Wire(gw, listener, cert=peer_cert), f"dr.durand@{PEER}", DOCTOR
    else:
        wire, sender, rcpt = Wire(gw, listener), DOCTOR, NURSE
        wire.login(DOCTOR, PASSWORD)
    for length, reply in (
        (1001, (554, "5.6.0 line 5 is longer than 998 octets (RFC 5322 section 2.1.1)")),
        (1002, (500, "5.5.2 Line too long (see RFC 5321 4.5.3.1.6)")),
        (70_000, (500, "5.5.2 Line too long (see RFC 5321 4.5.3.1.6)")),
    ):
        before = len(content_refusals(gw))
        assert wire.command(f"MAIL FROM:<{sender}>") == (250, "2.1.0 OK")
        assert wire.command(f"RCPT TO:<{rcpt}>") == (250, "2.1.5 OK")
        assert wire.command("DATA")[0] == 354
        wire.send(head(sender, rcpt) + b"\r\n" + b"L" * (length - 2) + b"\r\nafter\r\n.\r\nNOOP\r\n")
        assert wire.reply() == reply, length
        assert wire.reply() == (250, "2.0.0 OK")  # the pipelined NOOP
        refusals = content_refusals(gw)
        assert len(refusals) == before + 1
        # The record keeps the policy's wording; the wire's is ASCII (RFC 5321 §4.2).
        assert refusals[-1]["response"]["reply"].replace("§", "section ") == f"{reply[0]} {reply[1]}"
    wire.close()


def refused_content(gw: Gateway, message: bytes) -> tuple[int, bytes]:
    client = gw.submission(login=DOCTOR)
    try:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail(DOCTOR, [NURSE], message)
        return refused.value.smtp_code, refused.value.smtp_error
    finally:
        client.quit()


def test_more_than_950_header_fields(gw: Gateway) -> None:
    """A client gets 950 fields: 50 are kept for the trace fields the hops add (a peer takes 1000)."""
    fields = b"".join(b"X-Champ-%d: valeur\r\n" % n for n in range(998))
    assert refused_content(gw, head() + fields + b"\r\nbody\r\n") == (
        554,
        b"5.6.0 more than 950 header fields refused (room is kept for the 50 trace fields added on the way)",
    )


def test_a_header_block_over_256_kib(gw: Gateway) -> None:
    fields = b"".join(b"X-Long-%d: " % n + b"v" * 900 + b"\r\n" for n in range(300))
    assert refused_content(gw, head() + fields + b"\r\nbody\r\n") == (
        554,
        b"5.6.0 header block larger than 229376 octets refused "
        b"(room is kept for the 32768 octets of trace fields added on the way)",
    )


def test_more_than_1000_address_entries(gw: Gateway) -> None:
    to = b"To: " + b",\r\n ".join(b"a%d@ch-test.mssante.fr" % n for n in range(1001)) + b"\r\n"
    message = f"From: {DOCTOR}\r\nSubject: many\r\n".encode() + to + b"\r\nbody\r\n"
    assert refused_content(gw, message) == (
        554,
        b"5.6.0 more than 1000 address list entries in the header fields refused",
    )


def test_more_than_100_recipients(gw: Gateway) -> None:
    client = gw.submission(login=DOCTOR)
    client.mail(DOCTOR)
    for n in range(100):
        assert client.docmd("RCPT", f"TO:<dr.{n}@{PEER}>") == (250, b"2.1.5 OK")
    assert client.docmd("RCPT", f"TO:<dr.100@{PEER}>") == (452, b"4.5.3 too many recipients")
    client.quit()


@pytest.mark.parametrize("size", [600, 70_000, 3_000_000])
def test_command_lines_of_any_length_before_tls(gw: Gateway, size: int) -> None:
    """aiosmtpd refuses a line over 512 octets and drops the rest of it: no buffering of megabytes."""
    sock = socket.create_connection(("127.0.0.1", gw.port("submission")), timeout=30)
    replies = sock.makefile("rb")
    assert replies.readline().startswith(b"220 ")
    sock.sendall(b"EHLO " + b"x" * size + b"\r\nNOOP\r\n")
    assert replies.readline() == b"500 5.5.2 Command line too long\r\n"
    assert replies.readline() == b"250 2.0.0 OK\r\n"
    sock.close()


def test_auth_line_too_long(gw: Gateway) -> None:
    """RFC 4954 §4: an AUTH line may be 12,288 octets (bearer tokens need it); past that, 500."""
    client = gw.submission(login=None)
    assert client.docmd("AUTH", "PLAIN " + "A" * 12_276) == (501, b"5.5.2 Malformed PLAIN response")
    assert client.docmd("AUTH", "PLAIN " + "A" * 12_280) == (500, b"5.5.2 Command line too long")
    assert client.docmd("MAIL", "FROM:<" + "a" * 1000 + "@x.fr>") == (500, b"5.5.2 Command line too long")
    assert client.docmd("NOOP") == (250, b"2.0.0 OK")
    client.quit()


# -- IMAP ----------------------------------------------------------------------------------------------


def test_imap_before_login_a_command_holds_at_most_32_kib(gw: Gateway) -> None:
    """Each literal is under the 8 KiB pre-login limit, but together they pass the command's 32 KiB."""
    raw = Raw(gw)
    parts = b"".join(b"{8000+}\r\n" + b"x" * 8000 + b" " for _ in range(5))
    raw.send(b"a LOGIN " + parts + b"\r\n")
    assert raw.line() == b"* BYE literal too big (max 721 octets)"  # what was left of the 32 KiB
    assert raw.line() == b""
    raw.close()


def test_imap_after_login_the_text_of_a_command_is_at_most_64_kib(gw: Gateway) -> None:
    """Lines under 8 KiB each, joined by literals, past the 64 KiB of command text."""
    raw = Raw(gw)
    assert raw.command("l", f'LOGIN {DOCTOR} "{PASSWORD}"')[-1].endswith(b"Logged in")
    chunk = b"SUBJECT " + b"y" * 7000 + b" {1+}\r\nz "
    raw.send(b"s SEARCH " + chunk * 10 + b"ALL\r\n")
    assert raw.line() == b"* BYE command too long (max 65536 octets outside literals)"
    assert raw.line() == b""
    raw.close()


def test_imaplib_append_past_appendlimit(gw: Gateway) -> None:
    client = imaplib.IMAP4_SSL("127.0.0.1", gw.port("imaps"), ssl_context=gw.tls(), timeout=30)
    client.login(DOCTOR, PASSWORD)
    assert f"APPENDLIMIT={MAX_MESSAGE_SIZE}".encode() in client.capability()[1][0].split()
    message = head() + b"\r\n" + b"z" * MAX_MESSAGE_SIZE
    with pytest.raises(imaplib.IMAP4.error, match=r"TOOBIG\] literal too big \(max 1000000 octets\)"):
        client.append("INBOX", None, None, message)  # refused at the literal's announcement: no "+"
    assert client.noop()[0] == "OK"
    client.logout()
