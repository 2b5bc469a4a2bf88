"""Submission on 587 (STARTTLS) and 465 (implicit TLS), driven by smtplib, a raw client and swaks."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import smtplib
import sqlite3
import subprocess
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DOMAIN
from tests.smtp.conftest import (
    APP,
    DISABLED,
    DOCTOR,
    NURSE,
    PASSWORD,
    PEER,
    SECRETARIAT,
    Gateway,
    RawSMTP,
    inbox,
    wait_for_message,
)


def message(sender: str, to: str, subject: str, body: str = "Bonjour,\r\nrésultats joints.\r\n", **extra: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    for k, v in extra.items():
        msg[k.replace("_", "-")] = v
    msg.set_content(body)
    return msg.as_bytes().replace(b"\n", b"\r\n")


# -- TLS and AUTH ordering (domain brief §9) -----------------------------------------------------------


def test_before_starttls_only_starttls_is_offered_and_auth_is_refused(gateway: Gateway) -> None:
    client = smtplib.SMTP("127.0.0.1", gateway.port("submission"), timeout=30)
    code, features = client.ehlo("client.example")
    assert code == 250
    assert b"STARTTLS" in features
    assert b"AUTH" not in features
    assert client.docmd("AUTH", "PLAIN AGNsYWlyZQB4") == (530, b"5.7.0 Must issue a STARTTLS command first")
    assert client.docmd("MAIL", f"FROM:<{DOCTOR}>") == (530, b"5.7.0 Must issue a STARTTLS command first")
    assert client.docmd("STARTTLS", "abcd") == (501, b"5.5.4 Syntax: STARTTLS")
    client.close()


def test_help_lists_the_commands_and_their_syntax(gateway: Gateway) -> None:
    """RFC 5321 §4.1.1.8. Every command passes through the node's stop gate (server.py): HELP must still
    see each one's syntax."""
    client = gateway.submission()
    code, text = client.docmd("HELP")
    assert code == 250
    assert text == b"2.0.0 Supported commands: AUTH DATA EHLO HELO HELP MAIL NOOP QUIT RCPT RSET VRFY"
    assert client.docmd("HELP", "MAIL") == (250, b"2.0.0 Syntax: MAIL FROM: <address> [SP <mail-parameters>]")
    client.quit()


def test_every_reply_but_the_greeting_ehlo_and_continuations_has_an_enhanced_code(gateway: Gateway) -> None:
    """RFC 2034 §4: ENHANCEDSTATUSCODES is advertised, so aiosmtpd's own plain replies get one too (as
    Postfix gives them); the greeting, the positive EHLO/HELO replies and 3xx continuations do not."""
    enhanced = re.compile(rb"[245]\.\d{1,3}\.\d{1,3}( |$)")
    client = smtplib.SMTP(timeout=30)
    code, greeting = client.connect("127.0.0.1", gateway.port("submission"))  # connect() gives the greeting
    client._host = "127.0.0.1"  # type: ignore[attr-defined]  # what SMTP(host) would set, for starttls()
    assert code == 220
    assert not enhanced.match(greeting)
    code, ehlo = client.ehlo("client.example")
    assert code == 250
    assert not any(enhanced.match(line) for line in ehlo.split(b"\n"))
    assert client.has_extn("enhancedstatuscodes")
    assert client.docmd("NOOP") == (250, b"2.0.0 OK")
    assert client.docmd("EHLO") == (501, b"5.5.4 Syntax: EHLO hostname")
    assert client.starttls(context=gateway.tls()) == (220, b"2.0.0 Ready to start TLS")
    code, helo = client.docmd("HELO", "client.example")  # (before TLS, only EHLO, NOOP and QUIT: 530 5.7.0)
    assert code == 250
    assert not enhanced.match(helo)
    assert client.docmd("RSET") == (250, b"2.0.0 OK")
    assert client.docmd("EXPN", "x") == (502, b"5.5.1 EXPN not implemented")
    client.ehlo("client.example")
    client.login(DOCTOR, PASSWORD)
    assert client.mail(DOCTOR) == (250, b"2.1.0 OK")
    assert client.rcpt(NURSE) == (250, b"2.1.5 OK")
    assert client.docmd("DATA") == (354, b"End data with <CR><LF>.<CR><LF>")
    client.send(f"From: <{DOCTOR}>\r\nTo: <{NURSE}>\r\nSubject: x\r\n\r\nbody\r\n.\r\n".encode())
    code, text = client.getreply()
    assert code == 250, text
    assert text.startswith(b"2.0.0 OK ")
    assert client.docmd("QUIT") == (221, b"2.0.0 Bye")


def test_after_starttls_auth_is_offered_and_mail_needs_it(gateway: Gateway) -> None:
    client = gateway.submission(login=None)
    assert client.has_extn("auth")
    assert client.esmtp_features["auth"].split() == ["LOGIN", "PLAIN"]  # EXTERNAL: only with a certificate
    assert client.esmtp_features["size"] == str(25 * 1024 * 1024)
    assert client.docmd("MAIL", f"FROM:<{DOCTOR}>") == (530, b"5.7.0 Authentication required")
    assert client.docmd("RCPT", f"TO:<{NURSE}>") == (530, b"5.7.0 Authentication required")
    client.login(DOCTOR, PASSWORD)
    assert client.docmd("RCPT", f"TO:<{NURSE}>") == (503, b"5.5.1 Error: need MAIL command")
    assert client.docmd("DATA") == (503, b"5.5.1 Error: need RCPT command")
    client.quit()


def test_bad_credentials_get_535_and_are_audited(gateway: Gateway) -> None:
    client = gateway.submission(login=None)
    with pytest.raises(smtplib.SMTPAuthenticationError) as exc:
        client.login(NURSE, "wrong password!!")
    assert (exc.value.smtp_code, exc.value.smtp_error) == (535, b"5.7.8 Authentication credentials invalid")
    client.close()
    events = gateway.node.cli("audit", "search", "--event", "smtp.auth.failed", "--json").json()
    assert events[-1]["response"]["login"] == NURSE  # type: ignore[index]
    assert events[-1]["response"]["reason"] == "bad-password"  # type: ignore[index]
    assert events[-1]["peer"] == "127.0.0.1"  # type: ignore[index]
    assert "wrong password" not in str(events)


def test_implicit_tls_offers_auth_and_submits(gateway: Gateway) -> None:
    client = gateway.submissions(login=None)
    assert client.esmtp_features["auth"].split() == ["LOGIN", "PLAIN"]  # EXTERNAL: only with a certificate
    assert "starttls" not in client.esmtp_features
    client.login(DOCTOR, PASSWORD)
    refused = client.sendmail(DOCTOR, [NURSE], message(DOCTOR, NURSE, "via 465"))
    assert refused == {}
    client.quit()
    wait_for_message(gateway.node, NURSE, b"Subject: via 465")
    # aiosmtpd's own deprecation warning at every AUTH (Session.login_data) is not passed on to the operator
    assert "login_data" not in gateway.running.stderr()


# -- a message end to end ----------------------------------------------------------------------------


def test_submitted_message_reaches_the_inbox_with_received_and_message_id(gateway: Gateway) -> None:
    client = gateway.submission()
    raw = message(DOCTOR, DOCTOR, "Compte rendu", Bcc="cache@" + DOMAIN, **{"Return-Path": "<forged@x.fr>"})
    assert b"Message-ID" not in raw  # EmailMessage adds none: the gateway must
    code, reply = client.mail(DOCTOR)
    assert (code, reply) == (250, b"2.1.0 OK")
    assert client.rcpt(DOCTOR) == (250, b"2.1.5 OK")
    code, reply = client.data(raw)
    assert code == 250
    assert re.fullmatch(rb"2\.0\.0 OK delivered as [0-9a-f]{32}", reply)
    client.quit()
    got = wait_for_message(gateway.node, DOCTOR, b"Subject: Compte rendu")
    head = got.split(b"\r\n\r\n", 1)[0].decode()
    # RFC 5321 §4.4: the final delivery's Return-Path: first, from MAIL FROM; the client's own is gone
    assert head.startswith(
        f"Return-Path: <{DOCTOR}>\r\nReceived: from client.example ([127.0.0.1])\r\n\t(using TLSv1.3 with cipher "
    )
    assert head.count("Return-Path:") == 1
    assert re.search(r"\r\n\tby mail\.ch-test\.mssante\.fr with ESMTPSA id [0-9a-f]{16}\r\n\tfor <", head)
    assert re.search(rf"\r\nMessage-ID: <[0-9a-f]{{32}}@{re.escape(DOMAIN)}>", head)
    assert "Bcc:" not in head
    assert "cache@" not in head
    assert got.endswith(b"\r\n\r\nBonjour,\r\nr\xc3\xa9sultats joints.\r\n")


# -- identity policy -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("login", "mail_from", "reply"),
    [
        (DOCTOR, NURSE, f"5.7.1 {DOCTOR} may not send as {NURSE}"),
        (NURSE, SECRETARIAT, f"5.7.1 {NURSE} may not send as {SECRETARIAT}"),
        (DOCTOR, DISABLED, f"5.7.1 mailbox {DISABLED} is disabled"),
        (DOCTOR, f"someone@{PEER}", f"5.7.1 someone@{PEER} is not in the directory"),
        (DOCTOR, "", "5.7.1 null sender not accepted from clients"),
    ],
)
def test_mail_from_must_be_an_identity_of_the_principal(
    gateway: Gateway, login: str, mail_from: str, reply: str
) -> None:
    client = gateway.submission(login=login)
    assert client.docmd("MAIL", f"FROM:<{mail_from}>") == (550, reply.encode())
    client.quit()


def test_delegated_user_sends_as_the_org_mailbox(gateway: Gateway) -> None:
    def last_use() -> str | None:
        with sqlite3.connect(gateway.node.data / "mssgw.db") as conn:
            (when,) = conn.execute("SELECT last_login_at FROM accounts WHERE address = ?", (SECRETARIAT,)).fetchone()
        return when  # type: ignore[no-any-return]

    before = last_use()
    client = gateway.submission(login=DOCTOR)
    raw = message(SECRETARIAT, NURSE, "Convocation", Sender=DOCTOR)
    assert client.sendmail(SECRETARIAT, [NURSE], raw) == {}
    client.quit()
    # The ORG mailbox is in use, though nobody logged in to it: retention counts from this.
    after = last_use()
    assert after is not None
    assert after != before


def test_from_header_must_match_the_envelope(gateway: Gateway) -> None:
    client = gateway.submission(login=DOCTOR)
    with pytest.raises(smtplib.SMTPDataError) as exc:
        client.sendmail(DOCTOR, [NURSE], message(NURSE, DOCTOR, "usurpation"))
    assert (exc.value.smtp_code, exc.value.smtp_error) == (
        550,
        f"5.7.1 From: {NURSE} does not match the envelope sender {DOCTOR}".encode(),
    )
    client.quit()


# -- recipients and relaying ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rcpt", "code", "reply"),
    [
        ("someone@gmail.com", 550, "5.7.1 someone@gmail.com: recipient outside the trust space"),
        (f"nobody@{DOMAIN}", 550, f"5.1.1 nobody@{DOMAIN}: no such mailbox"),
        (DISABLED, 550, f"5.2.1 {DISABLED}: mailbox disabled"),
        (
            f"a%b@{DOMAIN}",
            553,
            f"5.1.3 invalid recipient address a%b@{DOMAIN}: "
            "'%' in the local part is not accepted (percent-hack routing)",
        ),
        (
            f"a!b@{DOMAIN}",
            553,
            f"5.1.3 invalid recipient address a!b@{DOMAIN}: '!' in the local part is not accepted (bang-path routing)",
        ),
        # A source route is dropped by the SMTP parser (RFC 5321 §3.6.1); what remains is judged on its own.
        (f"@{DOMAIN}:x@gmail.com", 550, "5.7.1 x@gmail.com: recipient outside the trust space"),
        ("x@[127.0.0.1]", 553, "5.1.3 invalid recipient address x@[127.0.0.1]: address literals are not accepted"),
        ("a" * 75 + f"@{DOMAIN}", 553, None),
        ("x@" + ".".join(["d" * 63] * 4) + ".fr", 553, None),
    ],
)
def test_recipient_refusals(gateway: Gateway, rcpt: str, code: int, reply: str | None) -> None:
    client = gateway.submission(login=DOCTOR)
    client.mail(DOCTOR)
    got_code, got = client.docmd("RCPT", f"TO:<{rcpt}>")  # exactly as given: smtplib.rcpt() rewrites some
    assert got_code == code
    if reply is not None:
        assert got.decode() == reply
    else:
        assert got.startswith(b"5.1.3 invalid recipient address ")
    client.quit()


def test_refusals_by_the_smtp_parser_are_audited_once(gateway: Gateway) -> None:
    client = gateway.submission(login=DOCTOR)
    client.mail(DOCTOR)
    # smtplib's rcpt() would rewrite a source route: send the exact command.
    assert client.docmd("RCPT", f"TO:<@{DOMAIN}>") == (553, b"5.1.3 Error: malformed address")
    assert client.docmd("RCPT", f"TO:<a%b@{DOMAIN}>")[0] == 553
    client.quit()
    refused = gateway.node.cli("audit", "search", "--event", "smtp.recipient.refused", "--json").json()
    last = [r["response"] for r in refused[-2:]]  # type: ignore[index]
    assert last[0] == {
        "command": f"TO:<@{DOMAIN}>",
        "reply": "553 5.1.3 Error: malformed address",
        "result": "refused",
    }
    assert last[1]["reply"].startswith(f"553 5.1.3 invalid recipient address a%b@{DOMAIN}")
    assert "command" not in last[1]  # the policy's refusal, audited once by the handler


def test_refusals_of_auth_size_and_parameters_are_audited(gateway: Gateway) -> None:
    """Every refusal is audited: an authorization identity that is not the user's, a response that is not
    base64, SIZE past the limit, and the DSN parameters (RFC 3461) this node does not offer (555, with
    its enhanced code X.5.4, RFC 3463). A record of AUTH names the mechanism, never the response."""

    def last(event: str, n: int) -> list[dict[str, Any]]:
        found = gateway.node.cli("audit", "search", "--event", event, "--json").json()
        return [r["response"] for r in found[-n:]]  # type: ignore[index]

    client = gateway.submission(login=None)
    token = base64.b64encode(f"{SECRETARIAT}\0{DOCTOR}\0{PASSWORD}".encode()).decode()
    assert client.docmd("AUTH", f"PLAIN {token}") == (535, b"5.7.8 Authorization identity not allowed")
    assert client.docmd("AUTH", "PLAIN #%@!") == (501, b"5.5.2 Can't decode base64")
    assert client.docmd("AUTH", "CRAM-MD5") == (504, b"5.5.4 Unrecognized authentication type")
    assert last("smtp.auth.failed", 3) == [
        {"result": "refused", "login": DOCTOR, "authzid": SECRETARIAT, "reason": "authzid-not-allowed"},
        {"result": "refused", "reply": "501 5.5.2 Can't decode base64", "command": "PLAIN"},
        {"result": "refused", "reply": "504 5.5.4 Unrecognized authentication type", "command": "CRAM-MD5"},
    ]
    wrong = base64.b64encode(f"\0{NURSE}\0not the password".encode()).decode()
    assert client.docmd("AUTH", f"PLAIN {wrong}") == (535, b"5.7.8 Authentication credentials invalid")
    assert last("smtp.auth.failed", 2)[0]["command"] == "CRAM-MD5"  # the handler's record, not a second one
    assert last("smtp.auth.failed", 1)[0]["reason"] == "bad-password"
    client.login(DOCTOR, PASSWORD)
    too_big = f"FROM:<{DOCTOR}> SIZE=30000000"
    assert client.docmd("MAIL", too_big) == (552, b"5.3.4 Message size exceeds fixed maximum message size")
    assert client.docmd("MAIL", f"FROM:<{DOCTOR}> RET=HDRS") == (
        555,
        b"5.5.4 MAIL FROM parameters not recognized or not implemented",
    )
    assert client.mail(DOCTOR) == (250, b"2.1.0 OK")
    assert client.docmd("RCPT", f"TO:<{NURSE}> NOTIFY=NEVER") == (
        555,
        b"5.5.4 RCPT TO parameters not recognized or not implemented",
    )
    client.quit()
    assert last("smtp.sender.refused", 2) == [
        {"result": "refused", "reply": "552 5.3.4 Message size exceeds fixed maximum message size", "command": too_big},
        {
            "result": "refused",
            "reply": "555 5.5.4 MAIL FROM parameters not recognized or not implemented",
            "command": f"FROM:<{DOCTOR}> RET=HDRS",
        },
    ]
    assert last("smtp.recipient.refused", 1) == [
        {
            "result": "refused",
            "reply": "555 5.5.4 RCPT TO parameters not recognized or not implemented",
            "command": f"TO:<{NURSE}> NOTIFY=NEVER",
        }
    ]


def test_recipient_in_a_peer_domain_is_accepted(gateway: Gateway) -> None:
    client = gateway.submission(login=DOCTOR)
    client.mail(DOCTOR)
    assert client.rcpt(f"dr.x@{PEER}") == (250, b"2.1.5 OK")
    client.quit()


# -- content (SMTP smuggling, line length, size) --------------------------------------------------------


@pytest.mark.parametrize(
    "ending",
    [b"\n.\r\n", b"\n.\n", b"\r\n.\n", b"\r.\r", b"\n.\r"],
    ids=["LF.CRLF", "LF.LF", "CRLF.LF", "CR.CR", "LF.CR"],
)
def test_smuggling_variants_are_refused(gateway: Gateway, ending: bytes) -> None:
    raw = RawSMTP(gateway)
    raw.command("AUTH PLAIN " + base64.b64encode(f"\0{DOCTOR}\0{PASSWORD}".encode()).decode())
    assert raw.command(f"MAIL FROM:<{DOCTOR}>")[0] == 250
    assert raw.command(f"RCPT TO:<{NURSE}>")[0] == 250
    assert raw.command("DATA")[0] == 354
    smuggled = f"MAIL FROM:<{DOCTOR}>\r\nRCPT TO:<{NURSE}>\r\nDATA\r\nFrom: {DOCTOR}\r\n\r\nsmuggled\r\n".encode()
    raw.send(f"From: {DOCTOR}\r\nTo: {NURSE}\r\nSubject: s\r\n\r\nhello".encode() + ending + smuggled + b".\r\n")
    code, text = raw.reply()
    assert code == 554, text
    assert text.startswith("5.6.0 ")
    raw.close()


@pytest.mark.parametrize(
    ("length", "code", "reply"),
    [
        # aiosmtpd's reader stops a line past 1001 octets with CRLF; our content check takes 999 to 1001.
        (1004, 500, "5.5.2 Line too long (see RFC 5321 4.5.3.1.6)"),
        (999, 554, None),
    ],
)
def test_overlong_line_is_refused(gateway: Gateway, length: int, code: int, reply: str | None) -> None:
    client = gateway.submission(login=DOCTOR)
    raw = message(DOCTOR, NURSE, "long") + b"x" * length + b"\r\n"
    with pytest.raises(smtplib.SMTPDataError) as exc:
        client.sendmail(DOCTOR, [NURSE], raw)
    assert exc.value.smtp_code == code
    if reply is not None:
        assert exc.value.smtp_error.decode() == reply
    else:
        assert b"longer than 998 octets" in exc.value.smtp_error
    client.quit()


def test_a_998_octet_line_is_accepted(gateway: Gateway) -> None:
    client = gateway.submission(login=DOCTOR)
    assert client.sendmail(DOCTOR, [NURSE], message(DOCTOR, NURSE, "limit") + b"y" * 998 + b"\r\n") == {}
    client.quit()


def test_size_is_advertised_and_enforced(gateway: Gateway) -> None:
    client = gateway.submission(login=DOCTOR)
    assert client.docmd("MAIL", f"FROM:<{DOCTOR}> SIZE=30000000") == (
        552,
        b"5.3.4 Message size exceeds fixed maximum message size",
    )
    client.quit()


def swaks(gateway: Gateway, *extra: str) -> str:
    """swaks submitting as NURSE on 587 (STARTTLS, the CA checked, AUTH PLAIN): its transcript."""
    out = subprocess.run(
        [
            "swaks",
            "--server",
            "127.0.0.1",
            "--port",
            str(gateway.port("submission")),
            "--tls",
            "--tls-ca-path",
            str(gateway.root),
            "--tls-verify",
            "--auth",
            "PLAIN",
            "--auth-user",
            NURSE,
            "--auth-password",
            PASSWORD,
            "--from",
            NURSE,
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_swaks_submits_with_starttls_and_auth(gateway: Gateway) -> None:
    out = swaks(gateway, "--to", DOCTOR, "--header", "Subject: swaks", "--helo", "swaks.example")
    assert "<~  250 2.0.0 OK delivered as " in out
    wait_for_message(gateway.node, DOCTOR, b"Subject: swaks")


def test_openssl_sees_only_the_allowed_suites_on_587(gateway: Gateway) -> None:
    base = [
        "openssl",
        "s_client",
        "-starttls",
        "smtp",
        "-connect",
        f"127.0.0.1:{gateway.port('submission')}",
        "-CAfile",
        str(gateway.root),
    ]
    ok = subprocess.run(
        [*base, "-tls1_2", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384"],
        input="QUIT\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert "Cipher is ECDHE-RSA-AES256-GCM-SHA384" in ok.stdout
    refused = subprocess.run(
        [*base, "-tls1_2", "-cipher", "AES256-SHA256"],
        input="QUIT\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert refused.returncode != 0
    old = subprocess.run([*base, "-tls1_1"], input="QUIT\n", capture_output=True, text=True, timeout=30, check=False)
    assert old.returncode != 0


def test_app_mailbox_sends_as_itself(gateway: Gateway) -> None:
    client = gateway.submission(login=APP)
    assert client.sendmail(APP, [DOCTOR], message(APP, DOCTOR, "résultat automatique")) == {}
    client.quit()


# -- end-to-end mode: messages the author protected (issue 5) ------------------------------------------


def bundle_of(gw: Gateway, address: str) -> tuple[Path, Path]:
    """(certificate, key) of a provisioned address, as its owner's mail client holds them."""
    where = gw.node.data / "smime" / address
    return where / "cert.pem", where / "key.pem"


def openssl_sign(gw: Gateway, signer: str, plain: bytes, sender: str = DOCTOR, to: str = NURSE) -> bytes:
    """What a mail client sends signed: the message signed, its addressing fields in the outer header."""
    cert, key = bundle_of(gw, signer)
    signed = subprocess.run(
        ["openssl", "cms", "-sign", "-md", "sha256", "-signer", cert, "-inkey", key, "-from", sender, "-to", to],
        input=plain.replace(b"\r\n", b"\n"),
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    return signed.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def openssl_encrypt(gw: Gateway, entity: bytes, sender: str, to: str, *recipients: str) -> bytes:
    args = ["openssl", "cms", "-encrypt", "-aes256", "-from", sender, "-to", to, "-subject", "confidentiel"]
    for address in recipients:
        args += ["-recip", str(bundle_of(gw, address)[0])]
    enc = subprocess.run(args, input=entity, capture_output=True, check=True, timeout=60).stdout
    return enc.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def test_a_message_the_client_encrypted_for_every_recipient_is_taken_as_is(gateway: Gateway) -> None:
    signed = openssl_sign(gateway, DOCTOR, message(DOCTOR, NURSE, "chiffré de bout en bout"))
    raw = openssl_encrypt(gateway, signed, DOCTOR, NURSE, NURSE, DOCTOR)
    client = gateway.submission()
    assert client.sendmail(DOCTOR, [NURSE], raw) == {}
    client.quit()
    got = wait_for_message(gateway.node, NURSE, b"Subject: confidentiel")
    assert got.endswith(raw.split(b"\r\n\r\n", 1)[1])  # still encrypted: only the nurse's key opens it
    verified = gateway.node.cli("audit", "search", "--event", "smime.verified", "--json").json()
    assert verified[-1]["response"]["form"] == "encrypted"  # type: ignore[index]


def test_a_client_encrypted_message_missing_a_recipient_is_refused_naming_it(gateway: Gateway) -> None:
    raw = openssl_encrypt(gateway, openssl_sign(gateway, DOCTOR, message(DOCTOR, NURSE, "x")), DOCTOR, NURSE, DOCTOR)
    client = gateway.submission()
    client.mail(DOCTOR)
    client.rcpt(DOCTOR)
    client.rcpt(NURSE)
    assert client.data(raw) == (
        550,
        f"5.7.1 message refused: not encrypted for the recipient's certificate ({NURSE})".encode(),
    )
    client.quit()
    refused = gateway.node.cli("audit", "search", "--event", "smime.refused", "--json").json()
    assert refused[-1]["response"]["reason"] == "missing-recipient"  # type: ignore[index]


def test_a_client_signed_message_is_verified_against_the_sender(gateway: Gateway) -> None:
    signed = openssl_sign(gateway, DOCTOR, message(DOCTOR, NURSE, "signé par le client"))
    client = gateway.submission()
    assert client.sendmail(DOCTOR, [NURSE], signed) == {}
    client.quit()
    got = wait_for_message(gateway.node, NURSE, b"signed message")
    assert b"multipart/signed" in got.split(b"\r\n\r\n", 1)[0]
    verified = gateway.node.cli("audit", "search", "--event", "smime.verified", "--json").json()
    assert verified[-1]["response"]["form"] == "signed"  # type: ignore[index]
    # Signed by the nurse's certificate while sending as the doctor: refused.
    forged = openssl_sign(gateway, NURSE, message(DOCTOR, NURSE, "signé par une autre"))
    client = gateway.submission()
    assert client.mail(DOCTOR) == (250, b"2.1.0 OK")
    assert client.rcpt(NURSE) == (250, b"2.1.5 OK")
    assert client.data(forged) == (550, b"5.7.1 message refused: the signer is not the sender")
    client.quit()


# -- delivery at acceptance --------------------------------------------------------------------------


def _audit(gw: Gateway, action: str) -> list[dict[str, Any]]:
    with sqlite3.connect(gw.node.data / "audit.db") as conn:
        rows = conn.execute("SELECT response FROM audit_records WHERE action = ? ORDER BY seq", (action,)).fetchall()
    return [json.loads(r) for (r,) in rows]


def _queued(gw: Gateway) -> list[tuple[str, str, str]]:
    with sqlite3.connect(gw.node.data / "mssgw.db") as conn:
        return conn.execute("SELECT message_id, recipient, status FROM queue_recipients ORDER BY id").fetchall()


def _set_quota(gw: Gateway, address: str, quota: int | None, *, fill: int = 0) -> None:
    """Set the mailbox's quota; with `fill`, first store a message of that many octets, and make the quota
    what the mailbox then holds: full, yet larger than any small message alone (that would be 5.2.3)."""
    from gateway.node import Node
    from gateway.store.mailstore import Mailstore
    from gateway.store.messages import MessageStore

    async def go() -> None:
        async with Node(gw.node.cfg()) as n:
            box = Mailstore(MessageStore(n.mailboxes))
            limit = quota
            if fill:
                await MessageStore(n.mailboxes).deliver(address, b"Subject: lest\r\n\r\n" + b"x" * fill + b"\r\n")
                limit = (await box.usage(address))[0]
            await box.set_quota(address, limit)

    asyncio.run(go())


def _accepted(gw: Gateway, rcpts: list[str], subject: str, how: str) -> str:
    """Submit from the doctor to `rcpts`; the id of the 250 `how` ("delivered" or "queued")."""
    client = gw.submission()
    assert client.mail(DOCTOR) == (250, b"2.1.0 OK")
    for rcpt in rcpts:
        assert client.rcpt(rcpt) == (250, b"2.1.5 OK")
    code, reply = client.data(message(DOCTOR, rcpts[0], subject))
    client.quit()
    assert code == 250
    found = re.fullmatch(rb"2\.0\.0 OK " + how.encode() + rb" as ([0-9a-f]{32})", reply)
    assert found, reply
    return found.group(1).decode()


def test_a_message_for_local_mailboxes_is_in_them_at_250(gateway: Gateway) -> None:
    before = len(inbox(gateway.node, NURSE)), len(inbox(gateway.node, SECRETARIAT))
    queue_id = _accepted(gateway, [NURSE, SECRETARIAT], "Tout de suite", "delivered")
    # Read once, without waiting: the 250 came after the mailboxes' commit.
    assert b"Subject: Tout de suite" in inbox(gateway.node, NURSE)[-1]
    assert b"Subject: Tout de suite" in inbox(gateway.node, SECRETARIAT)[-1]
    assert (len(inbox(gateway.node, NURSE)), len(inbox(gateway.node, SECRETARIAT))) == (before[0] + 1, before[1] + 1)
    assert [q for q in _queued(gateway) if q[0] == queue_id] == []  # never queued
    accepted = [r for r in _audit(gateway, "smtp.message.accepted") if r["queue_id"] == queue_id]
    assert [(r["rcpt"], r["result"]) for r in accepted] == [([NURSE, SECRETARIAT], "done")]
    delivered = [r for r in _audit(gateway, "queue.delivered") if r.get("queue_id") == queue_id]
    assert [(r["rcpt"], r["folder"], r["result"]) for r in delivered] == [
        (NURSE, "INBOX", "done"),
        (SECRETARIAT, "INBOX", "done"),
    ]
    assert all(isinstance(r["uid"], int) and r["uid"] > 0 for r in delivered)


def test_a_mailbox_over_its_quota_gets_the_message_through_the_queue(gateway: Gateway) -> None:
    _set_quota(gateway, SECRETARIAT, None, fill=20_000)  # full: no message gets in until room is made
    try:
        before = len(inbox(gateway.node, NURSE))
        queue_id = _accepted(gateway, [NURSE, SECRETARIAT], "Boite pleine", "queued")
        # Nothing of the delivery at acceptance stayed (one transaction): the worker delivers the nurse's
        # copy and keeps retrying the full mailbox (4.2.2) until it expires or room is made.
        wait_for_message(gateway.node, NURSE, b"Subject: Boite pleine")
        assert len(inbox(gateway.node, NURSE)) == before + 1
        deadline = time.monotonic() + 20
        while not [r for r in _audit(gateway, "queue.deferred") if r.get("rcpt") == SECRETARIAT]:
            assert time.monotonic() < deadline, "no deferral of the full mailbox"
            time.sleep(0.2)
        assert [(r, st) for m, r, st in _queued(gateway) if m == queue_id] == [
            (NURSE, "delivered"),
            (SECRETARIAT, "pending"),
        ]
        deferred = [r for r in _audit(gateway, "queue.deferred") if r.get("rcpt") == SECRETARIAT][-1]
        assert deferred["reason"] == "smtp; 452 4.2.2 mailbox full"
    finally:
        _set_quota(gateway, SECRETARIAT, None)


def test_a_message_with_a_remote_recipient_is_queued_whole(gateway: Gateway) -> None:
    _accepted(gateway, [NURSE, f"dr.durand@{PEER}"], "Mixte", "queued")
    wait_for_message(gateway.node, NURSE, b"Subject: Mixte")  # by the worker


def test_a_mailbox_disabled_between_rcpt_and_data_is_left_to_the_queue(gateway: Gateway) -> None:
    """Delivery at acceptance delivers only to active mailboxes: a mailbox disabled after its RCPT sends the
    message through the queue, whose worker refuses it (5.2.1) as it always did."""
    client = gateway.submission()
    try:
        assert client.mail(DOCTOR) == (250, b"2.1.0 OK")
        assert client.rcpt(NURSE) == (250, b"2.1.5 OK")
        assert gateway.node.cli("mailbox", "disable", NURSE).code == 0
        code, reply = client.data(message(DOCTOR, NURSE, "Entre-temps"))
        client.quit()
        assert code == 250
        found = re.fullmatch(rb"2\.0\.0 OK queued as ([0-9a-f]{32})", reply)
        assert found, reply
        deadline = time.monotonic() + 20
        while not (failed := [r for r in _audit(gateway, "queue.failed") if r.get("rcpt") == NURSE]):
            assert time.monotonic() < deadline, "the worker did not refuse the disabled mailbox"
            time.sleep(0.2)
        assert failed[-1]["status"] == "5.2.1"
    finally:
        assert gateway.node.cli("mailbox", "enable", NURSE).code == 0
    assert all(b"Subject: Entre-temps" not in m for m in inbox(gateway.node, NURSE))


def test_an_internal_error_is_a_temporary_reply_without_internals() -> None:
    from gateway.smtp.server import _Handler

    reply = asyncio.run(_Handler.handle_exception(None, RuntimeError("connection to server lost")))  # type: ignore[arg-type]
    assert reply == "451 4.3.0 Local error in processing, try again later"


def test_pipelined_commands_are_answered_in_order(gateway: Gateway) -> None:
    """RFC 2920 §3.1: PIPELINING is advertised; a group of MAIL, RCPTs and DATA sent at once gets one reply
    each, in order, a refused RCPT among them; the commands pipelined behind the end of DATA are run next."""
    raw = RawSMTP(gateway)
    raw.send(b"EHLO raw.example\r\n")
    assert "PIPELINING" in raw.expect(250).splitlines()
    raw.command("AUTH PLAIN " + base64.b64encode(f"\0{DOCTOR}\0{PASSWORD}".encode()).decode())
    stranger = f"nobody@{DOMAIN}"
    group = [f"MAIL FROM:<{DOCTOR}>", f"RCPT TO:<{NURSE}>", f"RCPT TO:<{stranger}>", f"RCPT TO:<{SECRETARIAT}>", "DATA"]
    raw.send("".join(f"{line}\r\n" for line in group).encode())
    no_such = (550, f"5.1.1 {stranger}: no such mailbox")
    assert [raw.reply() for _ in range(5)] == [
        (250, "2.1.0 OK"),
        (250, "2.1.5 OK"),
        no_such,
        (250, "2.1.5 OK"),
        (354, "End data with <CR><LF>.<CR><LF>"),
    ]
    raw.send(
        f"From: <{DOCTOR}>\r\nTo: <{NURSE}>\r\nSubject: pipelined\r\n\r\nbody\r\n.\r\n"
        f"RSET\r\nMAIL FROM:<{DOCTOR}>\r\nRCPT TO:<{stranger}>\r\nDATA\r\nQUIT\r\n".encode()
    )
    code, text = raw.reply()
    assert (code, text[: len("2.0.0 OK delivered as ")]) == (250, "2.0.0 OK delivered as ")
    assert [raw.reply() for _ in range(6)] == [
        (250, "2.0.0 OK"),
        (250, "2.1.0 OK"),
        no_such,
        (503, "5.5.1 Error: need RCPT command"),  # every RCPT refused: no DATA (RFC 2920 §3.1)
        (221, "2.0.0 Bye"),
        (0, "connection closed"),
    ]
    for mailbox in (NURSE, SECRETARIAT):
        wait_for_message(gateway.node, mailbox, b"Subject: pipelined")


def test_a_groups_replies_leave_in_one_write(gateway: Gateway) -> None:
    """RFC 2920 §3.1: the replies to the group's RSET, MAIL and RCPTs are held while its next command is
    buffered and leave with the reply to DATA: one TLS record, so one recv() returns all five. A MAIL sent
    alone is answered at once."""
    raw = RawSMTP(gateway)
    raw.command("AUTH PLAIN " + base64.b64encode(f"\0{DOCTOR}\0{PASSWORD}".encode()).decode())
    group = ["RSET", f"MAIL FROM:<{DOCTOR}>", f"RCPT TO:<{NURSE}>", f"RCPT TO:<nobody@{DOMAIN}>", "DATA"]
    raw.send("".join(f"{line}\r\n" for line in group).encode())
    assert raw.sock.recv(65536) == (
        b"250 2.0.0 OK\r\n250 2.1.0 OK\r\n250 2.1.5 OK\r\n"
        + f"550 5.1.1 nobody@{DOMAIN}: no such mailbox\r\n".encode()
        + b"354 End data with <CR><LF>.<CR><LF>\r\n"
    )
    raw.send(f"From: <{DOCTOR}>\r\nTo: <{NURSE}>\r\nSubject: grouped\r\n\r\nbody\r\n.\r\nRSET\r\n".encode())
    assert raw.sock.recv(65536).startswith(b"250 2.0.0 OK delivered as ")
    assert raw.sock.recv(65536) == b"250 2.0.0 OK\r\n"
    raw.send(f"MAIL FROM:<{DOCTOR}>\r\n".encode())
    assert raw.sock.recv(65536) == b"250 2.1.0 OK\r\n"
    raw.close()


def test_swaks_pipelines_a_submission(gateway: Gateway) -> None:
    """swaks --pipeline sends MAIL, both RCPTs and DATA in one write once EHLO offers PIPELINING."""
    out = swaks(gateway, "--to", f"{DOCTOR},{SECRETARIAT}", "--header", "Subject: swaks pipelined", "--pipeline")
    assert "<~  250-PIPELINING\n" in out
    group = (  # the group written at once, then its four replies
        f" ~> MAIL FROM:<{NURSE}>\n ~> RCPT TO:<{DOCTOR}>\n ~> RCPT TO:<{SECRETARIAT}>\n ~> DATA\n"
        "<~  250 2.1.0 OK\n<~  250 2.1.5 OK\n<~  250 2.1.5 OK\n<~  354 End data with <CR><LF>.<CR><LF>\n"
    )
    assert group in out, out
    assert "<~  250 2.0.0 OK delivered as " in out
    for mailbox in (DOCTOR, SECRETARIAT):
        wait_for_message(gateway.node, mailbox, b"Subject: swaks pipelined")
