"""RFC 3464 delivery status notifications: built, then read back with Python's `email` parser and our own reader."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.queue.dsn import (
    RecipientStatus,
    build_dsn,
    clean_text,
    delivery_status_blocks,
    describe_status,
    header_block,
    needs_dsn,
    parse_dsn_status,
)

NOW = datetime(2025, 6, 2, 10, 30, tzinfo=UTC)
ARRIVAL = datetime(2025, 5, 28, 9, 15, 42, tzinfo=UTC)
LAST = datetime(2025, 6, 2, 10, 29, 58, tzinfo=UTC)
MTA = "mta.ch-a.mssante.fr"
SENDER = "jeanne.martin@ch-a.mssante.fr"
MARKER = b"CORPS-CONFIDENTIEL-7f3a9c"
ORIGINAL_HEADERS = (
    b"Received: from client.ch-a.mssante.fr by mta.ch-a.mssante.fr; Wed, 28 May 2025 09:15:42 +0000\r\n"
    b"From: Dr Jeanne Martin <jeanne.martin@ch-a.mssante.fr>\r\n"
    b"To: bob@ch-b.mssante.fr\r\n"
    b"Subject: XDM/1.0/DDM+CR DUPONT Jean 19600201\r\n"
    b"Date: Wed, 28 May 2025 11:15:40 +0200\r\n"
    b"Message-ID: <20250528.abc@ch-a.mssante.fr>\r\n"
    b"X-MSS-NIL: mssgw-0.1\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
)
ORIGINAL = ORIGINAL_HEADERS + b"\r\nCompte rendu du patient : " + MARKER + b"\r\nFin.\r\n"

BOB = RecipientStatus(
    recipient="bob@ch-b.mssante.fr",
    action="failed",
    status="5.1.1",
    diagnostic="smtp; 550 5.1.1 <bob@ch-b.mssante.fr>: Recipient address rejected: unknown mailbox",
    remote_mta="mx.ch-b.mssante.fr",
    last_attempt=LAST,
)
CAROL = RecipientStatus(
    recipient="carol@ch-b.mssante.fr",
    action="failed",
    status="5.2.1",
    diagnostic="smtp; 550 5.2.1 mailbox disabled",
    remote_mta="mx.ch-b.mssante.fr",
    last_attempt=LAST,
)
DAVE = RecipientStatus(
    recipient="dave@cabinet-c.mssante.fr",
    action="failed",
    status="4.4.7",
    diagnostic="smtp; 421 4.4.2 mx.cabinet-c.mssante.fr: connection timed out",
    last_attempt=datetime(2025, 6, 2, 12, 29, 58, tzinfo=timezone(timedelta(hours=2))),
)


def build(recipients: list[RecipientStatus], **overrides: Any) -> bytes:
    args: dict[str, Any] = {
        "reporting_mta": MTA,
        "original_envelope_id": "QQ314159",
        "sender": SENDER,
        "recipients": recipients,
        "original_headers": ORIGINAL,
        "arrival": ARRIVAL,
        "message_id_domain": "ch-a.mssante.fr",
        "now": NOW,
    }
    args.update(overrides)
    return build_dsn(**args)


def parts(dsn: bytes) -> list[EmailMessage]:
    msg = message_from_bytes(dsn, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    payload = msg.get_payload()
    assert isinstance(payload, list)
    assert all(isinstance(p, EmailMessage) for p in payload)
    return [p for p in payload if isinstance(p, EmailMessage)]


def human_text(dsn: bytes) -> str:
    text = parts(dsn)[0].get_content()
    assert isinstance(text, str)
    return text


def assert_wire_clean(dsn: bytes) -> None:
    assert re.search(rb"(?<!\r)\n", dsn) is None, "bare LF"
    assert re.search(rb"\r(?!\n)", dsn) is None, "bare CR"
    assert dsn.endswith(b"\r\n")
    assert max(len(line) for line in dsn.split(b"\r\n")) <= 998


GOLDEN = """\
From: Postmaster <MAILER-DAEMON@mta.ch-a.mssante.fr>
To: jeanne.martin@ch-a.mssante.fr
Subject: Avis de non-remise / Delivery Status Notification (Failure)
Date: Mon, 02 Jun 2025 10:30:00 +0000
Message-ID: <dsn.20250602103000.GOLDEN_ID@ch-a.mssante.fr>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
 boundary="=_mssgw-dsn-GOLDEN_BOUNDARY"
Content-Transfer-Encoding: 7bit

This is a delivery status notification in MIME format (RFC 3464).
Ceci est un avis de remise au format MIME (RFC 3464).

--=_mssgw-dsn-GOLDEN_BOUNDARY
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable
Content-Language: fr, en
Content-Description: Notification

GOLDEN_TEXT
--=_mssgw-dsn-GOLDEN_BOUNDARY
Content-Type: message/delivery-status
Content-Description: Delivery report

Original-Envelope-Id: QQ314159
Reporting-MTA: dns; mta.ch-a.mssante.fr
Arrival-Date: Wed, 28 May 2025 09:15:42 +0000

Final-Recipient: rfc822; bob@ch-b.mssante.fr
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.ch-b.mssante.fr
Diagnostic-Code: smtp; 550 5.1.1 <bob@ch-b.mssante.fr>: Recipient address
 rejected: unknown mailbox
Last-Attempt-Date: Mon, 02 Jun 2025 10:29:58 +0000

--=_mssgw-dsn-GOLDEN_BOUNDARY
Content-Type: text/rfc822-headers
Content-Description: Original message headers

Received: from client.ch-a.mssante.fr by mta.ch-a.mssante.fr; Wed, 28 May 2025 09:15:42 +0000
From: Dr Jeanne Martin <jeanne.martin@ch-a.mssante.fr>
To: bob@ch-b.mssante.fr
Subject: XDM/1.0/DDM+CR DUPONT Jean 19600201
Date: Wed, 28 May 2025 11:15:40 +0200
Message-ID: <20250528.abc@ch-a.mssante.fr>
X-MSS-NIL: mssgw-0.1
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

--=_mssgw-dsn-GOLDEN_BOUNDARY--
"""

GOLDEN_HUMAN = """\
Ceci est un message automatique du serveur de messagerie
mta.ch-a.mssante.fr.

Votre message n'a pas pu être remis aux destinataires suivants ; il n'y
aura pas d'autre tentative :

  <bob@ch-b.mssante.fr>
    Motif : adresse du destinataire inconnue (5.1.1)
    Serveur distant : mx.ch-b.mssante.fr
    Réponse : smtp; 550 5.1.1 <bob@ch-b.mssante.fr>: Recipient address
      rejected: unknown mailbox

Le contenu de votre message n'est pas joint à cet avis : seuls ses
en-têtes sont renvoyés.
Message d'origine : <20250528.abc@ch-a.mssante.fr>
Reçu le : Wed, 28 May 2025 09:15:42 +0000

------------------------------------------------------------------------

This is an automatic message from the mail server mta.ch-a.mssante.fr.

Your message could not be delivered to the following recipients; no
further attempts will be made:

  <bob@ch-b.mssante.fr>
    Reason: unknown recipient address (5.1.1)
    Remote server: mx.ch-b.mssante.fr
    Reply: smtp; 550 5.1.1 <bob@ch-b.mssante.fr>: Recipient address
      rejected: unknown mailbox

The content of your message is not attached to this notice: only its
headers are returned.
Original message: <20250528.abc@ch-a.mssante.fr>
Received on: Wed, 28 May 2025 09:15:42 +0000
"""


def test_single_recipient_golden() -> None:
    # Message-ID and boundary are hashes of the inputs: the same DSN comes out byte for byte, run after run.
    dsn = build([BOB])
    text = dsn.decode("ascii")
    qp = text.split("Content-Description: Notification\r\n\r\n", 1)[1].split("\r\n--=_mssgw-dsn-", 1)[0]
    expected = (
        GOLDEN.replace("\n", "\r\n")
        .replace("GOLDEN_BOUNDARY", "03f0c263e535644d64366f078ee14da5")
        .replace("GOLDEN_ID", "9699c7b4352292d3f66c957a")
        .replace("GOLDEN_TEXT", qp)
    )
    assert text == expected
    assert human_text(dsn) == GOLDEN_HUMAN.replace("\n", "\r\n")
    assert max(len(line) for line in qp.split("\r\n")) <= 76
    assert_wire_clean(dsn)


def test_single_recipient_headers_and_parts() -> None:
    dsn = build([BOB])
    msg = message_from_bytes(dsn, policy=policy.default)
    assert msg["From"] == "Postmaster <MAILER-DAEMON@mta.ch-a.mssante.fr>"
    assert msg["From"].addresses[0].addr_spec == "MAILER-DAEMON@mta.ch-a.mssante.fr"
    assert msg["To"] == SENDER
    assert msg["Subject"] == "Avis de non-remise / Delivery Status Notification (Failure)"
    assert msg["Date"] == "Mon, 02 Jun 2025 10:30:00 +0000"
    assert msg["Date"].datetime == NOW
    assert re.fullmatch(r"<dsn\.20250602103000\.[0-9a-f]{24}@ch-a\.mssante\.fr>", msg["Message-ID"])
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["MIME-Version"] == "1.0"
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert [p.get_content_type() for p in parts(dsn)] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    assert parts(dsn)[0].get_content_charset() == "utf-8"
    assert parts(dsn)[0]["Content-Transfer-Encoding"] == "quoted-printable"
    assert msg.defects == []
    assert all(p.defects == [] for p in parts(dsn))


def test_single_recipient_delivery_status_fields() -> None:
    dsn = build([BOB])
    status = parts(dsn)[1]
    blocks = status.get_payload()
    assert isinstance(blocks, list)
    assert len(blocks) == 2
    per_message, bob = blocks
    assert isinstance(per_message, Message)
    assert isinstance(bob, Message)
    assert list(per_message.items()) == [
        ("Original-Envelope-Id", "QQ314159"),
        ("Reporting-MTA", "dns; mta.ch-a.mssante.fr"),
        ("Arrival-Date", "Wed, 28 May 2025 09:15:42 +0000"),
    ]
    assert list(bob.items()) == [
        ("Final-Recipient", "rfc822; bob@ch-b.mssante.fr"),
        ("Action", "failed"),
        ("Status", "5.1.1"),
        ("Remote-MTA", "dns; mx.ch-b.mssante.fr"),
        ("Diagnostic-Code", "smtp; 550 5.1.1 <bob@ch-b.mssante.fr>: Recipient address rejected: unknown mailbox"),
        ("Last-Attempt-Date", "Mon, 02 Jun 2025 10:29:58 +0000"),
    ]
    assert parse_dsn_status(dsn) == [("bob@ch-b.mssante.fr", "failed", "5.1.1")]


def test_three_recipients() -> None:
    dsn = build([BOB, CAROL, DAVE])
    assert parse_dsn_status(dsn) == [
        ("bob@ch-b.mssante.fr", "failed", "5.1.1"),
        ("carol@ch-b.mssante.fr", "failed", "5.2.1"),
        ("dave@cabinet-c.mssante.fr", "failed", "4.4.7"),
    ]
    blocks = delivery_status_blocks(dsn)
    assert len(blocks) == 4
    assert list(blocks[2].items()) == [
        ("Final-Recipient", "rfc822; carol@ch-b.mssante.fr"),
        ("Action", "failed"),
        ("Status", "5.2.1"),
        ("Remote-MTA", "dns; mx.ch-b.mssante.fr"),
        ("Diagnostic-Code", "smtp; 550 5.2.1 mailbox disabled"),
        ("Last-Attempt-Date", "Mon, 02 Jun 2025 10:29:58 +0000"),
    ]
    # No Remote-MTA for a recipient that was never reached; the date keeps its own offset.
    assert list(blocks[3].items()) == [
        ("Final-Recipient", "rfc822; dave@cabinet-c.mssante.fr"),
        ("Action", "failed"),
        ("Status", "4.4.7"),
        ("Diagnostic-Code", "smtp; 421 4.4.2 mx.cabinet-c.mssante.fr: connection timed out"),
        ("Last-Attempt-Date", "Mon, 02 Jun 2025 12:29:58 +0200"),
    ]
    text = human_text(dsn)
    for line in (
        "  <carol@ch-b.mssante.fr>\r\n    Motif\u00a0: boîte aux lettres fermée ou désactivée (5.2.1)\r\n",
        "  <dave@cabinet-c.mssante.fr>\r\n    Motif\u00a0: délai de remise dépassé (4.4.7)\r\n",
        "  <carol@ch-b.mssante.fr>\r\n    Reason: mailbox closed or disabled (5.2.1)\r\n",
        "  <dave@cabinet-c.mssante.fr>\r\n    Reason: delivery time expired (4.4.7)\r\n",
        "    Réponse\u00a0: smtp; 550 5.2.1 mailbox disabled\r\n",
        "    Reply: smtp; 421 4.4.2 mx.cabinet-c.mssante.fr: connection timed out\r\n",
    ):
        assert line in text
    assert text.count("<bob@ch-b.mssante.fr>\r\n") == 2  # once in French, once in English
    assert_wire_clean(dsn)


def test_original_body_is_never_returned() -> None:
    for original in (ORIGINAL, ORIGINAL.replace(b"\r\n", b"\n"), ORIGINAL.replace(b"\r\n", b"\r")):
        dsn = build([BOB, CAROL], original_headers=original)
        assert MARKER not in dsn
        assert b"Compte rendu du patient" not in dsn
        headers_part = parts(dsn)[2]
        assert headers_part.get_payload() == ORIGINAL_HEADERS.decode()
        assert_wire_clean(dsn)
    # The human-readable part quotes no original header but the Message-ID (the subject names the patient).
    text = human_text(build([BOB]))
    assert "DUPONT" not in text
    assert "<20250528.abc@ch-a.mssante.fr>" in text


@pytest.mark.parametrize(
    ("original", "block"),
    [
        (b"A: 1\nB: 2\n\nbody", b"A: 1\r\nB: 2\r\n"),
        (b"A: 1\r\n 2\r\n\r\nX: not a header", b"A: 1\r\n 2\r\n"),
        (b"A: 1", b"A: 1\r\n"),
        (b"A: 1\r\n", b"A: 1\r\n"),
        (b"\r\nbody only", b""),
        (b"\nbody only", b""),
        (b"", b""),
        (b"A: " + b"x" * 2000 + b"\r\n\r\nbody", b"A: " + b"x" * 995 + b"\r\n"),
    ],
)
def test_header_block(original: bytes, block: bytes) -> None:
    assert header_block(original) == block


def test_eight_bit_original_headers_stay_seven_bit() -> None:
    original = "Subject: Résultat d'analyse\r\nFrom: a@ch-a.mssante.fr\r\n\r\ncorps".encode()
    dsn = build([BOB], original_headers=original)
    assert max(dsn) < 0x80
    part = parts(dsn)[2]
    assert part.get_content_type() == "text/rfc822-headers"
    assert part.get_content_charset() == "utf-8"
    assert part["Content-Transfer-Encoding"] == "quoted-printable"
    assert part.get_content() == "Subject: Résultat d'analyse\r\nFrom: a@ch-a.mssante.fr\r\n"
    assert b"corps" not in dsn


def test_envelope_id_is_optional() -> None:
    dsn = build([BOB], original_envelope_id=None)
    assert list(delivery_status_blocks(dsn)[0].keys()) == ["Reporting-MTA", "Arrival-Date"]
    assert b"Original-Envelope-Id" not in dsn


def test_from_address_override() -> None:
    msg = message_from_bytes(build([BOB], from_address="postmaster@ch-a.mssante.fr"), policy=policy.default)
    assert msg["From"] == "Postmaster <postmaster@ch-a.mssante.fr>"


def test_deterministic_for_the_same_inputs() -> None:
    assert build([BOB, CAROL]) == build([BOB, CAROL])
    other = build([BOB, CAROL], now=NOW + timedelta(seconds=1))
    first = message_from_bytes(build([BOB, CAROL]), policy=policy.default)
    second = message_from_bytes(other, policy=policy.default)
    assert first["Message-ID"] != second["Message-ID"]
    assert first.get_boundary() != second.get_boundary()
    assert second["Date"] == "Mon, 02 Jun 2025 10:30:01 +0000"


def test_default_now_is_the_current_utc_time() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    msg = message_from_bytes(build([BOB], now=None), policy=policy.default)
    after = datetime.now(UTC)
    assert before <= msg["Date"].datetime <= after
    assert msg["Date"].endswith("+0000")


@pytest.mark.parametrize(
    ("recipients", "subject"),
    [
        ([BOB], "Avis de non-remise / Delivery Status Notification (Failure)"),
        (
            [RecipientStatus("x@ch-b.mssante.fr", "delayed", "4.4.1"), BOB],
            "Avis de non-remise / Delivery Status Notification (Failure)",
        ),
        (
            [RecipientStatus("x@ch-b.mssante.fr", "delayed", "4.4.1")],
            "Avis de retard de remise / Delivery Status Notification (Delay)",
        ),
        (
            [RecipientStatus("x@ch-b.mssante.fr", "delivered", "2.0.0")],
            "Avis de remise / Delivery Status Notification (Success)",
        ),
        (
            [RecipientStatus("x@ch-b.mssante.fr", "relayed", "2.0.0")],
            "Avis de remise / Delivery Status Notification (Success)",
        ),
    ],
)
def test_subject_follows_the_actions(recipients: list[RecipientStatus], subject: str) -> None:
    dsn = build(recipients)
    assert message_from_bytes(dsn, policy=policy.default)["Subject"] == subject
    assert [a for _, a, _ in parse_dsn_status(dsn)] == [r.action for r in recipients]


def test_delayed_heading_in_both_languages() -> None:
    text = human_text(build([RecipientStatus("x@ch-b.mssante.fr", "delayed", "4.4.1")]))
    assert "La remise de votre message aux destinataires suivants est retardée\u00a0; de\r\nnouvelles" in text
    assert "Delivery of your message to the following recipients is delayed; it will\r\nbe retried:" in text
    assert "Motif\u00a0: le serveur destinataire ne répond pas (4.4.1)" in text
    assert "Reason: no answer from the destination server (4.4.1)" in text


def test_untrusted_diagnostics_are_cleaned_folded_and_capped() -> None:
    multi = RecipientStatus(
        "bob@ch-b.mssante.fr", "failed", "5.2.2", diagnostic="550-5.2.2 boîte pleine\r\n550 5.2.2\tover quota  "
    )
    dsn = build([multi])
    blocks = delivery_status_blocks(dsn)
    assert blocks[1]["Diagnostic-Code"] == "smtp; 550-5.2.2 bo\\x{EE}te pleine 550 5.2.2 over quota"
    huge = RecipientStatus("bob@ch-b.mssante.fr", "failed", "5.0.0", diagnostic="x-unix; " + "A" * 5000)
    words = RecipientStatus("carol@ch-b.mssante.fr", "failed", "5.0.0", diagnostic="smtp; 550 " + "mot " * 3000)
    dsn = build([huge, words])
    assert_wire_clean(dsn)
    blocks = delivery_status_blocks(dsn)
    diag_huge = str(blocks[1]["Diagnostic-Code"]).replace("\r\n", "")
    assert diag_huge == "x-unix; " + "A" * 889 + "..."
    diag_words = str(blocks[2]["Diagnostic-Code"]).replace("\r\n", "")
    assert len(diag_words) == 900
    assert diag_words.startswith("smtp; 550 mot mot ")
    assert diag_words.endswith("mot...")
    folded = str(blocks[2]["Diagnostic-Code"]).split("\r\n")
    assert len(folded) > 10
    assert max(len(line) for line in folded[1:]) <= 78
    parsed = parts(dsn)[1].get_payload()
    assert isinstance(parsed, list)
    assert isinstance(parsed[2], Message)
    assert parsed[2]["Diagnostic-Code"] == diag_words  # policy.default unfolds to the same value


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("550 5.1.1 unknown", "550 5.1.1 unknown"),
        ("  a\r\n\tb  c ", "a b c"),
        ("\x00nul\x7f", "\\x{0}nul\\x{7F}"),
        ("é€😀", "\\x{E9}\\x{20AC}\\x{1F600}"),
        ("\u2028", ""),
    ],
)
def test_clean_text(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean


def test_clean_text_does_not_cut_an_escape_in_half() -> None:
    assert clean_text("a" * 8 + "é", 12) == "a" * 8 + "..."  # not "aaaaaaaa\\..."
    assert clean_text("a" * 7 + "é", 12) == "a" * 7 + "..."  # not "aaaaaaa\\x{..."
    assert clean_text("a" * 20, 12) == "a" * 9 + "..."


def test_diagnostic_type_is_added_when_missing() -> None:
    plain = RecipientStatus("bob@ch-b.mssante.fr", "failed", "5.1.1", diagnostic="550 5.1.1 unknown")
    typed = RecipientStatus("carol@ch-b.mssante.fr", "failed", "5.1.1", diagnostic="X-Postfix; host not found")
    blank = RecipientStatus("dave@ch-b.mssante.fr", "failed", "5.1.1", diagnostic=" \r\n ")
    blocks = delivery_status_blocks(build([plain, typed, blank]))
    assert blocks[1]["Diagnostic-Code"] == "smtp; 550 5.1.1 unknown"
    assert blocks[2]["Diagnostic-Code"] == "X-Postfix; host not found"
    assert blocks[3]["Diagnostic-Code"] is None


@pytest.mark.parametrize(
    ("sender", "expected"),
    [
        ("", False),
        ("<>", False),
        (" < > ", False),
        ("MAILER-DAEMON@mta.ch-b.mssante.fr", False),
        ("mailer-daemon@ch-b.mssante.fr", False),
        ("<Mailer-Daemon@ch-b.mssante.fr>", False),
        ("mailer_daemon@ch-b.mssante.fr", False),
        ("MailerDaemon@ch-b.mssante.fr", False),
        ("mailer.daemon@ch-b.mssante.fr", False),
        ("mailer-daemon+bounces@ch-b.mssante.fr", False),
        ('"MAILER-DAEMON"@ch-b.mssante.fr', False),
        ("MAILER-DAEMON", False),
        ("jeanne.martin@ch-a.mssante.fr", True),
        ("<jeanne.martin@ch-a.mssante.fr>", True),
        ("postmaster@ch-a.mssante.fr", True),
        ("daemon@ch-a.mssante.fr", True),
        ("mailer@ch-a.mssante.fr", True),
        ("mailer-daemons@ch-a.mssante.fr", True),
        ("secretariat.mailer-daemon@ch-a.mssante.fr", True),
        ("bob@mailer-daemon.example", True),
    ],
)
def test_needs_dsn(sender: str, expected: bool) -> None:
    assert needs_dsn(sender) is expected


@pytest.mark.parametrize("sender", ["", "<>", "MAILER-DAEMON@ch-b.mssante.fr"])
def test_no_dsn_about_a_notification(sender: str) -> None:
    with pytest.raises(ValueError, match=r".") as info:
        build([BOB], sender=sender)
    assert str(info.value) == f"no DSN is sent to the sender {sender!r} (null or MAILER-DAEMON: RFC 3464 §2)"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"recipient": "bob@ch-b.mssante.fr\r\nBcc: evil@x.example"},
            "recipient 'bob@ch-b.mssante.fr\\r\\nBcc: evil@x.example' must be printable US-ASCII without white space"
            " or control characters",
        ),
        ({"recipient": "bob"}, "recipient 'bob' is not of the form local-part@domain"),
        ({"recipient": ""}, "recipient is empty"),
        ({"recipient": "b@" + "c" * 260}, "recipient is 262 characters long, more than 254"),
        (
            {"recipient": "rené@ch-b.mssante.fr"},
            "recipient 'rené@ch-b.mssante.fr' must be printable US-ASCII without white space or control characters",
        ),
        ({"action": "bounced"}, "action 'bounced' is not one of failed, delayed, delivered, relayed, expanded"),
        ({"status": "5.1"}, "status '5.1' is not an RFC 3463 code class.subject.detail (e.g. 5.1.1)"),
        ({"status": "550"}, "status '550' is not an RFC 3463 code class.subject.detail (e.g. 5.1.1)"),
        ({"status": "3.1.1"}, "status '3.1.1' is not an RFC 3463 code class.subject.detail (e.g. 5.1.1)"),
        ({"status": "2.0.0"}, "action 'failed' cannot have status 2.0.0 (class 2)"),
        ({"action": "delayed", "status": "5.4.7"}, "action 'delayed' cannot have status 5.4.7 (class 5)"),
        ({"action": "delivered", "status": "4.0.0"}, "action 'delivered' cannot have status 4.0.0 (class 4)"),
        ({"last_attempt": datetime(2025, 6, 2, 10, 0)}, "last attempt date must be timezone-aware"),
        (
            {"remote_mta": "mx.ch-b.mssante.fr\r\nX: y"},
            "remote MTA 'mx.ch-b.mssante.fr\\r\\nX: y' must be printable US-ASCII without white space or control"
            " characters",
        ),
        ({"final_recipient_type": "utf-8"}, "address type 'utf-8' is not supported (only rfc822)"),
    ],
)
def test_recipient_status_validation(kwargs: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {"recipient": "bob@ch-b.mssante.fr", "action": "failed", "status": "5.1.1"}
    fields.update(kwargs)
    with pytest.raises(ValueError, match=r".") as info:
        RecipientStatus(**fields)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"recipients": []}, "a DSN reports on at least one recipient"),
        ({"recipients": [BOB, BOB]}, "recipient 'bob@ch-b.mssante.fr' is listed twice"),
        ({"arrival": datetime(2025, 5, 28, 9, 15)}, "arrival date must be timezone-aware"),
        ({"now": datetime(2025, 6, 2, 10, 30)}, "now must be timezone-aware"),
        (
            {"reporting_mta": "mta ch-a"},
            "reporting MTA 'mta ch-a' is not a DNS host name (letters, digits, inner hyphens, dots)",
        ),
        (
            {"message_id_domain": "-bad.example"},
            "Message-ID domain '-bad.example' is not a DNS host name (letters, digits, inner hyphens, dots)",
        ),
        ({"sender": "jeanne"}, "sender 'jeanne' is not of the form local-part@domain"),
        (
            {"sender": "a@b.example\r\nBcc: c@d.example"},
            "sender 'a@b.example\\r\\nBcc: c@d.example' must be printable US-ASCII without white space or control"
            " characters",
        ),
        ({"from_address": "postmaster"}, "from address 'postmaster' is not of the form local-part@domain"),
        (
            {"original_envelope_id": "has space"},
            "original envelope id 'has space' must be printable US-ASCII without white space or control characters",
        ),
        ({"original_envelope_id": "x" * 101}, "original envelope id is 101 characters long, more than 100"),
    ],
)
def test_build_dsn_validation(overrides: dict[str, Any], message: str) -> None:
    args = dict(overrides)
    recipients = args.pop("recipients", [BOB])
    with pytest.raises(ValueError, match=r".") as info:
        build(recipients, **args)
    assert str(info.value) == message


def test_reporting_mta_trailing_dot_is_dropped() -> None:
    dsn = build([BOB], reporting_mta="mta.ch-a.mssante.fr.")
    assert delivery_status_blocks(dsn)[0]["Reporting-MTA"] == "dns; mta.ch-a.mssante.fr"


@pytest.mark.parametrize(
    ("status", "words"),
    [
        ("5.1.1", ("adresse du destinataire inconnue", "unknown recipient address")),
        ("5.3.4", ("message trop volumineux", "message too large")),
        ("4.4.7", ("délai de remise dépassé", "delivery time expired")),
        ("5.7.1", ("remise non autorisée (hors espace de confiance ou refusée)", "delivery not authorised")),
        ("5.6.9", ("problème de contenu", "message content problem")),  # unknown detail: its subject
        ("5.9.9", ("autre cause", "other cause")),
        ("5.001.001", ("adresse du destinataire inconnue", "unknown recipient address")),
    ],
)
def test_describe_status(status: str, words: tuple[str, str]) -> None:
    assert describe_status(status) == words


def test_parse_dsn_status_rejects_what_is_not_a_dsn() -> None:
    with pytest.raises(ValueError, match=r"^no message/delivery-status part in this message$"):
        parse_dsn_status(b"From: a@b.example\r\nSubject: hi\r\n\r\nbody\r\n")
    broken = build([BOB]).replace(b"Status: 5.1.1\r\n", b"")
    with pytest.raises(ValueError, match=r"^recipient block 1 lacks Final-Recipient, Action or Status$"):
        parse_dsn_status(broken)


def test_parse_dsn_status_reads_other_mtas() -> None:
    # Postfix-style output: LF only, extra per-message fields, a comment after the status, upper-case action.
    foreign = (
        b"From: MAILER-DAEMON@mx.example\n"
        b"MIME-Version: 1.0\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n'
        b"\n"
        b"--B\nContent-Type: text/plain\n\nbounced\n"
        b"--B\nContent-Type: message/delivery-status\n\n"
        b"Reporting-MTA: dns; mx.example\nX-Postfix-Queue-ID: 4F2\n\n"
        b"Final-Recipient: RFC822;\n  someone@example.org\nOriginal-Recipient: rfc822;someone@example.org\n"
        b"Action: FAILED\nStatus: 5.0.0 (permanent)\n\n"
        b"--B--\n"
    )
    assert parse_dsn_status(foreign) == [("someone@example.org", "failed", "5.0.0")]


_PRINTABLE = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
_ADDRESSES = st.builds(
    lambda local, domain: f"{local}@{domain}",
    st.text(alphabet=_PRINTABLE, min_size=1, max_size=60),
    st.from_regex(r"[a-z0-9]{1,12}(\.[a-z0-9-]{1,12}[a-z0-9])?\.[a-z]{2,6}", fullmatch=True),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(_ADDRESSES, min_size=1, max_size=6, unique=True),
    st.lists(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=800), min_size=6),
    st.lists(st.sampled_from(["5.1.1", "5.2.1", "4.4.7", "5.7.1", "5.0.0", "4.4.1"]), min_size=6),
)
def test_random_recipients_and_diagnostics_round_trip(
    recipients: list[str], diagnostics: list[str], statuses: list[str]
) -> None:
    statuses_used = statuses[: len(recipients)]
    entries = [
        RecipientStatus(r, "failed", s, diagnostic="smtp; " + d, last_attempt=LAST)
        for r, d, s in zip(recipients, diagnostics, statuses_used, strict=False)
    ]
    dsn = build(entries)
    assert_wire_clean(dsn)
    assert max(dsn) < 0x80
    assert parse_dsn_status(dsn) == [(r, "failed", s) for r, s in zip(recipients, statuses_used, strict=True)]
    blocks = delivery_status_blocks(dsn)
    assert len(blocks) == len(recipients) + 1
    for block, diag in zip(blocks[1:], diagnostics, strict=False):
        value = block["Diagnostic-Code"]
        assert isinstance(value, str)
        assert value.replace("\r\n", "") == " ".join(("smtp; " + diag).split())
    msg = message_from_bytes(dsn, policy=policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert [p.get_content_type() for p in parts(dsn)] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    status_blocks = parts(dsn)[1].get_payload()
    assert isinstance(status_blocks, list)
    assert all(isinstance(b, Message) for b in status_blocks)
    assert len(status_blocks) == len(recipients) + 1
    text = human_text(dsn)
    for r in recipients:
        assert text.count(f"  <{r}>\r\n") >= 2
    assert MARKER not in dsn
