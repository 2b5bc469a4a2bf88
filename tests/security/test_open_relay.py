"""The open-relay matrix: nobody gets mail carried outside the trust space or sent in another's name.

- submission (587 after STARTTLS, 465): nothing without AUTH, whatever the sender or recipient;
- an authenticated professional: recipients only in this node's domains or trust-listed operators,
  every routing trick refused (percent hack, bang path, quoted local part, source route, address literal,
  several `@`); senders only their own identities (MAIL FROM and From:);
- the relay port (25): a peer needs a trust-space certificate naming a trust-listed domain; it may only
  send for its own domains and only to this node's active mailboxes.

Exact replies throughout, from real sessions (smtplib). Overlaps with tests/smtp/test_submission.py and
tests/smtp/test_relay_in.py are deliberate: this file is the whole matrix in one place, on both
submission ports.
"""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest

from certs.pki import TrustSpacePKI, write_bundle
from tests.conftest import DOMAIN
from tests.security.conftest import relay_client
from tests.smtp.conftest import APP, DOCTOR, NURSE, PASSWORD, PEER, Gateway

AUTH_REQUIRED = (530, b"5.7.0 Authentication required")
SUBMISSION = ("submission", "submissions")


def client(gw: Gateway, listener: str, login: str | None) -> smtplib.SMTP:
    return gw.submission(login=login) if listener == "submission" else gw.submissions(login=login)


def invalid(address: str, reason: str) -> tuple[int, str]:
    return 553, f"5.1.3 invalid recipient address {address}: {reason}"


def outside(address: str) -> tuple[int, str]:
    return 550, f"5.7.1 {address}: recipient outside the trust space"


# -- without authentication --------------------------------------------------------------------------


@pytest.mark.parametrize("listener", SUBMISSION)
@pytest.mark.parametrize("sender", [DOCTOR, "ceo@gmail.com", f"dr.x@{PEER}", ""])
def test_nothing_without_authentication(gw: Gateway, listener: str, sender: str) -> None:
    smtp = client(gw, listener, None)
    assert smtp.docmd("MAIL", f"FROM:<{sender}>") == AUTH_REQUIRED
    for rcpt in (NURSE, "victim@gmail.com", f"dr.x@{PEER}"):
        assert smtp.docmd("RCPT", f"TO:<{rcpt}>") == AUTH_REQUIRED
    assert smtp.docmd("DATA") == AUTH_REQUIRED
    smtp.quit()


# -- an authenticated professional -------------------------------------------------------------------

PCT = "'%' in the local part is not accepted (percent-hack routing)"
RECIPIENTS = [
    ("someone@gmail.com", outside("someone@gmail.com")),
    ("X@GMAIL.COM", outside("X@GMAIL.COM")),
    (f"x@sub.{DOMAIN}", outside(f"x@sub.{DOMAIN}")),
    (f"x@{DOMAIN}.evil.com", outside(f"x@{DOMAIN}.evil.com")),
    # RFC 5321 §3.6.1: a source route is ignored; what remains is judged on its own.
    (f"@{DOMAIN}:x@gmail.com", outside("x@gmail.com")),
    (f"@{DOMAIN},@{PEER}:x@gmail.com", outside("x@gmail.com")),
    (f"x%gmail.com@{DOMAIN}", invalid(f"x%gmail.com@{DOMAIN}", PCT)),
    (f'"x%gmail.com"@{DOMAIN}', invalid(f"x%gmail.com@{DOMAIN}", PCT)),
    (f'"x@gmail.com"@{DOMAIN}', invalid(f'"x@gmail.com"@{DOMAIN}', "quoted local parts are not accepted")),
    (
        f"gmail.com!x@{DOMAIN}",
        invalid(f"gmail.com!x@{DOMAIN}", "'!' in the local part is not accepted (bang-path routing)"),
    ),
    (f"x@gmail.com@{DOMAIN}", (553, "5.1.3 Error: malformed address")),
    (f"x@{DOMAIN}@gmail.com", (553, "5.1.3 Error: malformed address")),
    ("x@gmail.com.", (553, "5.1.3 Error: malformed address")),
    ("x@[192.0.2.1]", invalid("x@[192.0.2.1]", "address literals are not accepted")),
    ("x@[IPv6:2001:db8::1]", invalid("x@[IPv6:2001:db8::1]", "address literals are not accepted")),
    ("postmaster", invalid("postmaster", "the address has no '@'")),
    ("x@localhost", invalid("x@localhost", "the domain 'localhost' has a single label")),
]


@pytest.mark.parametrize("listener", SUBMISSION)
@pytest.mark.parametrize(("rcpt", "reply"), RECIPIENTS, ids=[r for r, _ in RECIPIENTS])
def test_no_recipient_outside_the_trust_space(gw: Gateway, listener: str, rcpt: str, reply: tuple[int, str]) -> None:
    smtp = client(gw, listener, DOCTOR)
    assert smtp.mail(DOCTOR) == (250, b"2.1.0 OK")
    code, text = smtp.docmd("RCPT", f"TO:<{rcpt}>")  # exactly as written (smtplib.rcpt would quote)
    assert (code, text.decode()) == reply
    smtp.quit()


@pytest.mark.parametrize("listener", SUBMISSION)
def test_recipients_inside_the_trust_space_are_taken(gw: Gateway, listener: str) -> None:
    """The control for the matrix above: this node's mailboxes and trust-listed operators' addresses."""
    smtp = client(gw, listener, DOCTOR)
    smtp.mail(DOCTOR)
    for rcpt in (NURSE, NURSE.upper(), f'"{NURSE.split("@")[0]}"@{DOMAIN}', f"dr.x@{PEER}"):
        assert smtp.docmd("RCPT", f"TO:<{rcpt}>") == (250, b"2.1.5 OK"), rcpt
    smtp.quit()


SENDERS = [
    ("ceo@gmail.com", (550, "5.7.1 ceo@gmail.com is not in the directory")),
    (f"dr.x@{PEER}", (550, f"5.7.1 dr.x@{PEER} is not in the directory")),
    (NURSE, (550, f"5.7.1 {DOCTOR} may not send as {NURSE}")),
    (APP, (550, f"5.7.1 {DOCTOR} may not send as {APP}")),
    (
        f"claire.martin%gmail.com@{DOMAIN}",
        (553, f"5.1.7 invalid sender address claire.martin%gmail.com@{DOMAIN}: {PCT}"),
    ),
    (
        f'"claire.martin@gmail.com"@{DOMAIN}',
        (553, f'5.1.7 invalid sender address "claire.martin@gmail.com"@{DOMAIN}: quoted local parts are not accepted'),
    ),
    ("", (550, "5.7.1 null sender not accepted from clients")),
]


@pytest.mark.parametrize("listener", SUBMISSION)
@pytest.mark.parametrize(("sender", "reply"), SENDERS, ids=[s or "null" for s, _ in SENDERS])
def test_no_sending_in_another_name(gw: Gateway, listener: str, sender: str, reply: tuple[int, str]) -> None:
    smtp = client(gw, listener, DOCTOR)
    code, text = smtp.docmd("MAIL", f"FROM:<{sender}>")
    assert (code, text.decode()) == reply
    smtp.quit()


@pytest.mark.parametrize(
    ("fields", "reply"),
    [
        ("From: ceo@gmail.com", f"5.7.1 From: ceo@gmail.com does not match the envelope sender {DOCTOR}"),
        (f"From: {NURSE}", f"5.7.1 From: {NURSE} does not match the envelope sender {DOCTOR}"),
        (
            f"From: {DOCTOR}\r\nSender: ceo@gmail.com",
            f"5.7.1 Sender: ceo@gmail.com is neither the envelope sender {DOCTOR} nor the authenticated user {DOCTOR}",
        ),
    ],
    ids=["external-from", "colleague-from", "external-sender"],
)
def test_header_identity_must_be_the_senders(gw: Gateway, fields: str, reply: str) -> None:
    smtp = gw.submission(login=DOCTOR)
    message = f"{fields}\r\nTo: {NURSE}\r\nSubject: usurpation\r\n\r\nbody\r\n".encode()
    with pytest.raises(smtplib.SMTPDataError) as refused:
        smtp.sendmail(DOCTOR, [NURSE], message)
    assert (refused.value.smtp_code, refused.value.smtp_error.decode()) == (550, reply)
    smtp.quit()


# -- the relay port ----------------------------------------------------------------------------------


def denied(address: str, domain: str) -> tuple[int, str]:
    return 550, f"5.7.1 {address}: relaying denied, {domain} is not a domain of this operator"


RELAY_RECIPIENTS = [
    ("x@gmail.com", denied("x@gmail.com", "gmail.com")),
    (f"y@{PEER}", denied(f"y@{PEER}", PEER)),  # the peer's own domain: not ours to deliver
    (f"@{DOMAIN}:x@gmail.com", denied("x@gmail.com", "gmail.com")),
    (f"x%gmail.com@{DOMAIN}", invalid(f"x%gmail.com@{DOMAIN}", PCT)),
    (f'"x@gmail.com"@{DOMAIN}', invalid(f'"x@gmail.com"@{DOMAIN}', "quoted local parts are not accepted")),
    (
        f"gmail.com!x@{DOMAIN}",
        invalid(f"gmail.com!x@{DOMAIN}", "'!' in the local part is not accepted (bang-path routing)"),
    ),
    ("x@[127.0.0.1]", invalid("x@[127.0.0.1]", "address literals are not accepted")),
    (f"postmaster@{DOMAIN}", (550, f"5.1.1 postmaster@{DOMAIN}: no such mailbox")),
]


@pytest.mark.parametrize(("rcpt", "reply"), RELAY_RECIPIENTS, ids=[r for r, _ in RELAY_RECIPIENTS])
def test_relay_delivers_only_to_local_mailboxes(
    gw: Gateway, peer_cert: Path, rcpt: str, reply: tuple[int, str]
) -> None:
    smtp = relay_client(gw, peer_cert)
    assert smtp.mail(f"dr.durand@{PEER}") == (250, b"2.1.0 OK")
    code, text = smtp.docmd("RCPT", f"TO:<{rcpt}>")
    assert (code, text.decode()) == reply
    assert smtp.docmd("RCPT", f"TO:<{DOCTOR}>") == (250, b"2.1.5 OK")  # the control
    smtp.quit()


def not_served(domain: str) -> tuple[int, str]:
    return 550, f"5.7.1 sender domain {domain} is not served by the authenticated peer ({PEER})"


RELAY_SENDERS = [
    ("x@gmail.com", not_served("gmail.com")),
    (DOCTOR, not_served(DOMAIN)),  # a peer cannot write as this node's users
    (f"@{PEER}:x@gmail.com", not_served("gmail.com")),
    (f"a%b@{PEER}", (553, f"5.1.7 invalid sender address a%b@{PEER}: {PCT}")),
    (
        f'"x@{DOMAIN}"@{PEER}',
        (553, f'5.1.7 invalid sender address "x@{DOMAIN}"@{PEER}: quoted local parts are not accepted'),
    ),
]


@pytest.mark.parametrize(("sender", "reply"), RELAY_SENDERS, ids=[s for s, _ in RELAY_SENDERS])
def test_relay_senders_are_the_peers_own(gw: Gateway, peer_cert: Path, sender: str, reply: tuple[int, str]) -> None:
    smtp = relay_client(gw, peer_cert)
    code, text = smtp.docmd("MAIL", f"FROM:<{sender}>")
    assert (code, text.decode()) == reply
    smtp.quit()


def test_a_trust_space_client_certificate_is_not_an_operators(gw: Gateway, tmp_path: Path) -> None:
    """An APP mailbox's certificate chains to the same root (clientAuth) but names an address, not a
    trust-listed domain: it does not make its holder a peer operator."""
    pki = TrustSpacePKI(gw.node.data / "pki")
    write_bundle(pki.issue_app(APP), tmp_path, name="app")
    smtp = relay_client(gw, tmp_path)
    assert smtp.docmd("MAIL", f"FROM:<{APP}>") == (
        550,
        b"5.7.1 the client certificate names no domain of the trust list (none)",
    )
    smtp.quit()


def test_relay_without_a_certificate_relays_nothing(gw: Gateway) -> None:
    smtp = relay_client(gw, None)
    required = (530, b"5.7.0 a trust-space client certificate is required (mutual TLS)")
    assert smtp.docmd("MAIL", f"FROM:<dr.durand@{PEER}>") == required
    assert smtp.docmd("RCPT", f"TO:<{DOCTOR}>") == (503, b"5.5.1 Error: need MAIL command")
    smtp.quit()


def test_a_password_does_not_open_the_relay_port(gw: Gateway) -> None:
    smtp = relay_client(gw, None)
    assert "auth" not in smtp.esmtp_features
    with pytest.raises(smtplib.SMTPNotSupportedError):
        smtp.login(DOCTOR, PASSWORD)
    assert smtp.docmd("AUTH", "PLAIN AGNsYWlyZQB4") == (504, b"5.5.4 Unrecognized authentication type")
    smtp.quit()
