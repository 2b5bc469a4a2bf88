"""MDNs (RFC 8098) as Direct uses them: writing ours byte for byte, reading peers' (gateway.queue.mdn)."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy

import pytest

from gateway.queue import mdn
from gateway.queue.dsn import RecipientStatus, build_dsn

NOW = datetime(2026, 11, 24, 10, 30, tzinfo=UTC)
MID = "<cr.123@hopital-a.mssante.test>"


def build(disposition: mdn.Disposition = "processed", **kw: object) -> bytes:
    args: dict[str, object] = {
        "reporting_ua": "mail.clinique-b.mssante.test",
        "recipient": "paul.durand@clinique-b.mssante.test",
        "to": "claire.martin@hopital-a.mssante.test",
        "original_message_id": MID,
        "disposition": disposition,
        "message_id_domain": "clinique-b.mssante.test",
        "now": NOW,
    }
    args.update(kw)
    return mdn.build_mdn(**args)  # type: ignore[arg-type]


def test_a_processed_mdn_has_the_report_fields_direct_reads() -> None:
    raw = build()
    head, _, _ = raw.partition(b"\r\n\r\n")
    assert head.startswith(
        b"From: paul.durand@clinique-b.mssante.test\r\n"
        b"To: claire.martin@hopital-a.mssante.test\r\n"
        b"Subject: Avis de traitement / Processed notification\r\n"
        b"Date: Tue, 24 Nov 2026 10:30:00 +0000\r\n"
        b"Message-ID: <mdn.20261124103000."
    )
    assert f"In-Reply-To: {MID}\r\nReferences: {MID}\r\nAuto-Submitted: auto-replied\r\n".encode() in head
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "disposition-notification"
    parts = list(msg.iter_parts())  # type: ignore[attr-defined]
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/disposition-notification"]
    text = " ".join(parts[0].get_content().split())
    assert f"Votre message {MID} a été reçu, déchiffré et vérifié par l'opérateur de paul.durand@" in text
    assert f"Your message {MID} was received, decrypted and verified by the operator of paul.durand@" in text
    report = raw.split(b"Content-Type: message/disposition-notification\r\n\r\n", 1)[1].split(b"\r\n\r\n")[0]
    assert report == (
        b"Reporting-UA: mail.clinique-b.mssante.test; mssgw\r\n"
        b"Final-Recipient: rfc822; paul.durand@clinique-b.mssante.test\r\n"
        b"Original-Message-ID: <cr.123@hopital-a.mssante.test>\r\n"
        b"Disposition: automatic-action/MDN-sent-automatically; processed"
    )
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998  # RFC 5322 §2.1.1
    assert raw.isascii()


def test_a_dispatched_mdn_carries_directs_final_delivery_field_and_a_failed_one_its_reason() -> None:
    dispatched = build("dispatched")
    assert b"; dispatched\r\nX-DIRECT-FINAL-DESTINATION-DELIVERY:\r\n" in dispatched
    assert b"X-DIRECT-FINAL-DESTINATION-DELIVERY" not in build()
    failed = build("failed", failure="mailbox\r\nfull \x00")
    assert b"; failed\r\nFailure: mailbox full \\x{0}\r\n" in failed
    assert b"Subject: Avis d'echec de remise / Delivery failed\r\n" in failed


def test_an_mdn_is_the_same_bytes_for_the_same_inputs() -> None:
    assert build() == build()
    assert build() != build(now=datetime(2026, 11, 24, 10, 31, tzinfo=UTC))
    assert build() != build(recipient="accueil@clinique-b.mssante.test")


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"original_message_id": "cr.123@a"}, "is not '<...>'"),
        ({"original_message_id": "<a>b>"}, "is not '<...>'"),
        ({"original_message_id": "<a b@c>"}, "is not '<...>'"),
        ({"original_message_id": "<" + "a" * 251 + ">"}, "is not '<...>'"),
        ({"to": "no-at-sign"}, "local-part@domain"),
        ({"to": "a b@c"}, "without white space"),
        ({"recipient": "é@b"}, "printable US-ASCII"),
        ({"reporting_ua": "bad host"}, "not a DNS host name"),
        ({"disposition": "displayed"}, "is not one of processed, dispatched, failed"),
        ({"failure": "x"}, "goes with the failed disposition"),
        ({"now": datetime(2026, 11, 24)}, "timezone-aware"),  # the naive value is the point
    ],
)
def test_an_mdn_is_refused_for_values_it_cannot_carry(kw: dict[str, object], reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("(", r"\(")):
        build(**kw)  # type: ignore[arg-type]
    if "disposition" not in kw:
        with pytest.raises(ValueError, match="goes with the failed disposition"):
            build("failed")  # a failed MDN without its reason


@pytest.mark.parametrize(
    ("options", "wanted"),
    [
        ("X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true", True),
        ("x-direct-final-destination-delivery = Required , TRUE", True),
        ("signed-receipt-protocol=optional,pkcs7-signature; X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true", True),
        ("X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,false", False),
        ("X-DIRECT-FINAL-DESTINATION-DELIVERY=true", False),  # no importance: not the RFC 8098 §2.2 form
        ("X-DIRECT-FINAL-DESTINATION-DELIVERY=sometimes,true", False),
        ("X-DIRECT-FINAL-DESTINATION-DELIVERY", False),
        ("", False),
        (None, False),
    ],
)
def test_the_dispatched_mdn_is_asked_for_only_by_the_rfc_8098_option_form(options: str | None, wanted: bool) -> None:
    assert mdn.wants_final_delivery(options) is wanted


def test_our_mdns_and_dsns_read_back_as_reports() -> None:
    assert mdn.read_report(build()) == mdn.Report("mdn", MID, (("paul.durand@clinique-b.mssante.test", "processed"),))
    assert mdn.read_report(build("dispatched"))
    assert mdn.read_report(build("failed", failure="x")) == mdn.Report(
        "mdn", MID, (("paul.durand@clinique-b.mssante.test", "failed"),)
    )
    dsn = build_dsn(
        reporting_mta="mail.clinique-b.mssante.test",
        original_envelope_id=None,
        sender="claire.martin@hopital-a.mssante.test",
        recipients=[
            RecipientStatus("Paul.Durand@clinique-b.mssante.test", "failed", "5.2.2"),
            RecipientStatus("accueil@clinique-b.mssante.test", "delayed", "4.4.1"),
            RecipientStatus("secretariat@clinique-b.mssante.test", "relayed", "2.0.0"),
        ],
        original_headers=f"Subject: x\r\nMessage-ID: {MID}\r\n\r\nbody".encode(),
        arrival=NOW,
        message_id_domain="clinique-b.mssante.test",
        now=NOW,
    )
    assert mdn.read_report(dsn) == mdn.Report(
        "dsn",
        MID,
        (
            ("paul.durand@clinique-b.mssante.test", "failed"),
            ("accueil@clinique-b.mssante.test", "delayed"),
            ("secretariat@clinique-b.mssante.test", "delivered"),
        ),
    )


READ_RECEIPT = (
    b"From: paul.durand@clinique-b.mssante.test\r\nTo: claire.martin@hopital-a.mssante.test\r\n"
    b"Subject: Return Receipt (displayed)\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type="disposition-notification"; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain\r\n\r\nOpened.\r\n"
    b"--b\r\nContent-Type: message/disposition-notification\r\n\r\n"
    b"Reporting-UA: paul-pc; Mozilla Thunderbird\r\n"
    b"Final-Recipient: rfc822;Paul.Durand@clinique-b.mssante.test\r\n"
    b"Original-Message-ID: <cr.123@hopital-a.mssante.test>\r\n"
    b"Disposition: manual-action/MDN-sent-manually; displayed\r\n\r\n"
    b"--b--\r\n"
)


def test_a_persons_read_receipt_reads_as_displayed() -> None:
    assert mdn.read_report(READ_RECEIPT) == mdn.Report(
        "mdn", MID, (("paul.durand@clinique-b.mssante.test", "displayed"),)
    )
    denied = READ_RECEIPT.replace(b"manual-action/MDN-sent-manually; displayed", b"a/b; deleted")
    assert mdn.read_report(denied) == mdn.Report("mdn", MID, (("paul.durand@clinique-b.mssante.test", "failed"),))
    error = READ_RECEIPT.replace(b"; displayed", b"; processed/error")
    assert mdn.read_report(error) == mdn.Report("mdn", MID, (("paul.durand@clinique-b.mssante.test", "failed"),))
    odd = READ_RECEIPT.replace(b"; displayed", b"; x-something")
    assert mdn.read_report(odd) == mdn.Report("mdn", MID, (("paul.durand@clinique-b.mssante.test", "other"),))


@pytest.mark.parametrize(
    "message",
    [
        b"From: a@b\r\nSubject: multipart/report in the subject only\r\n\r\nhello\r\n",
        READ_RECEIPT.replace(b"Original-Message-ID: <cr.123@hopital-a.mssante.test>\r\n", b""),
        READ_RECEIPT.replace(b"Original-Message-ID: <cr.123@hopital-a.mssante.test>", b"Original-Message-ID: cr.123"),
        READ_RECEIPT.replace(b"Final-Recipient: rfc822;Paul.Durand@clinique-b.mssante.test\r\n", b""),
        READ_RECEIPT.replace(b"Final-Recipient: rfc822;Paul.Durand@", b"Final-Recipient: Paul.Durand@"),
        READ_RECEIPT.replace(b"Disposition: manual-action/MDN-sent-manually; displayed\r\n", b""),
        READ_RECEIPT.replace(b"message/disposition-notification", b"text/plain"),
        READ_RECEIPT.replace(b'report-type="disposition-notification"', b"report-type=x-unknown"),
        READ_RECEIPT.replace(b"disposition-notification", b"delivery-status"),  # a DSN without its fields
        READ_RECEIPT + b"x" * mdn.MAX_REPORT,  # too big to be a notification
    ],
)
def test_what_is_not_a_readable_report_is_none(message: bytes) -> None:
    assert mdn.read_report(message) is None


def test_header_value_reads_the_header_block_only() -> None:
    raw = (
        b"Subject: x\r\nDisposition-Notification-Options: X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,\r\n"
        b" true\r\n\r\n"
    )
    assert (
        mdn.header_value(raw, "disposition-notification-options")
        == "X-DIRECT-FINAL-DESTINATION-DELIVERY=optional, true"
    )
    assert mdn.wants_final_delivery(mdn.header_value(raw, "Disposition-Notification-Options"))
    assert (
        mdn.header_value(
            b"Subject: x\r\n\r\nDisposition-Notification-Options: y\r\n", "Disposition-Notification-Options"
        )
        is None
    )


@pytest.mark.parametrize(
    ("field", "automatic"),
    [
        (b"Auto-Submitted: auto-replied\r\n", True),
        (b"Auto-Submitted: Auto-Generated; owner-email=x@y\r\n", True),
        (b"Auto-Submitted: no\r\n", False),
        (b"Auto-Submitted: No ; comment\r\n", False),
        (b"", False),
    ],
)
def test_automatic_messages_are_told_by_rfc_3834_auto_submitted(field: bytes, automatic: bool) -> None:
    assert mdn.auto_submitted(b"Subject: x\r\n" + field + b"\r\nAuto-Submitted: auto-replied\r\n") is automatic


@pytest.mark.parametrize(
    ("head", "report", "automatic"),
    [
        (b'Content-Type: multipart/report; report-type="x-unknown"; boundary=b\r\n', True, True),
        (b"Content-Type: MULTIPART/REPORT\r\n", True, True),
        (b"Content-Type: multipart/mixed; boundary=b\r\n", False, False),
        (b"Auto-Submitted: auto-generated\r\n", False, True),
        (b"", False, False),
    ],
)
def test_any_report_counts_as_a_notification_readable_or_not(head: bytes, report: bool, automatic: bool) -> None:
    message = b"Subject: x\r\n" + head + b"\r\nContent-Type: multipart/report\r\n"
    assert (mdn.is_report(message), mdn.automatic(message)) == (report, automatic)
