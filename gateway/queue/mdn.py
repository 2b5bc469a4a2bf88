"""Implementation notes: message disposition notifications (MDN, RFC 8098) as Direct uses them between
operators (domain brief §7 "Delivery notifications"), sans-I/O: writing ours, reading peers'.

Writing
- The receiving operator reports on a peer's message to each local recipient: *processed* once the message is
  accepted (decrypted, verified, committed), *dispatched* once it is in the mailbox when the original's
  `Disposition-Notification-Options` carries `X-DIRECT-FINAL-DESTINATION-DELIVERY` (Direct's "timely and
  reliable" option). A message that is accepted and then not delivered gets the queue's DSN instead.
- One MDN per recipient (RFC 8098 §3: one Final-Recipient per report). Top level: From = that recipient (it is
  signed with the domain's certificate, which the peer binds the From: to), To = the original envelope sender
  (never `Disposition-Notification-To`: RFC 8098 §2.1 forbids sending automatically to an address other than the
  Return-Path, which would let a message make us write to anyone), Subject in French and English, In-Reply-To and
  References (mail clients thread it under the original), `Auto-Submitted: auto-replied` (RFC 3834 §5).
  The envelope sender is null (RFC 8098 §2.1).
- `multipart/report; report-type=disposition-notification` (RFC 6522) with two parts: the human text (French,
  then English, quoted-printable) and `message/disposition-notification` with Reporting-UA, Final-Recipient,
  Original-Message-ID and `Disposition: automatic-action/MDN-sent-automatically; <type>` (RFC 8098 §3.2.6),
  plus the empty `X-DIRECT-FINAL-DESTINATION-DELIVERY:` extension field on a dispatched MDN (as Direct's
  reference implementation writes it) and a `Failure:` field on a failed one. The optional third part (the
  original's headers) is left out: they carry health data (the subject) and the peer knows them.
- Byte-for-byte deterministic for given inputs, like the DSNs (Message-ID and boundary from a SHA-256).

Reading
- `read_report` tells a notification a peer sent about one of our messages: the disposition of an MDN, or the
  action of each recipient of a DSN (RFC 3464), with the Message-ID it reports on (Original-Message-ID, or the
  Message-ID in a DSN's returned headers). Anything else is None: an ordinary message, or a report we cannot read
  (it is then delivered as it came, never dropped).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import format_datetime
from typing import Literal

from gateway.queue.dsn import (
    _check_address,
    _check_aware,
    _check_hostname,
    _original_message_id,
    _qp,
    _wrap,
    clean_text,
    header_block,
    parse_dsn_status,
)

Disposition = Literal["processed", "dispatched", "failed"]
DISPOSITIONS: tuple[Disposition, ...] = ("processed", "dispatched", "failed")
FINAL_DELIVERY = "X-DIRECT-FINAL-DESTINATION-DELIVERY"
# What a report says about one recipient, for the sending side's tracking (gateway.queue.notices).
Outcome = Literal["processed", "dispatched", "failed", "delayed", "delivered", "displayed", "other"]
MAX_REPORT = 1024 * 1024  # a notification is small: a bigger "report" is delivered as an ordinary message

_MESSAGE_ID = re.compile(r"<[\x21-\x3d\x3f-\x7e]{1,250}>\Z")  # "<...>" without ">" inside, printable
_SUBJECT_ASCII = {
    "processed": "Avis de traitement / Processed notification",
    "dispatched": "Avis de remise / Delivered to the mailbox",
    "failed": "Avis d'echec de remise / Delivery failed",
}
_TEXT = {
    "processed": (
        "Votre message {id} a été reçu, déchiffré et vérifié par l'opérateur de {rcpt}.",
        "Your message {id} was received, decrypted and verified by the operator of {rcpt}.",
    ),
    "dispatched": (
        "Votre message {id} a été remis dans la boîte aux lettres de {rcpt}.",
        "Your message {id} was delivered to the mailbox of {rcpt}.",
    ),
    "failed": (
        "Votre message {id} n'a pas pu être remis à {rcpt}.",
        "Your message {id} could not be delivered to {rcpt}.",
    ),
}


def check_message_id(value: str) -> str:
    """`value` if it is a msg-id this module writes into a field as it is (printable ASCII in angle brackets)."""
    if not _MESSAGE_ID.match(value):
        raise ValueError(f"message id {value!r} is not '<...>' of printable US-ASCII")
    return value


def wants_final_delivery(options: str | None) -> bool:
    """Whether `Disposition-Notification-Options` (RFC 8098 §2.2: `param=importance,value[,value]`, `;` between
    parameters, names case-insensitive) asks for Direct's dispatched MDN with a true value."""
    if not options:
        return False
    for param in options.split(";"):
        name, eq, rest = param.partition("=")
        if not eq or name.strip().upper() != FINAL_DELIVERY:
            continue
        values = [v.strip().lower() for v in rest.split(",")]
        return len(values) >= 2 and values[0] in ("required", "optional") and values[1] == "true"
    return False


Head = Message
"""A message's header block, parsed once (`head`) for the questions below."""


def head(message: bytes | Head) -> Head:
    """The header block of `message`, parsed (compat32: values as written); a parsed one as it is."""
    if isinstance(message, Message):
        return message
    return BytesHeaderParser(policy=policy.compat32).parsebytes(header_block(message))


def header_value(message: bytes | Head, name: str) -> str | None:
    """The first `name:` field of `message`'s header block, unfolded, or None (for the worker, which keeps
    only the queued bytes)."""
    value = head(message).get(name)
    return " ".join(str(value).split()) if value is not None else None


def _token(message: bytes | Head, name: str) -> str | None:
    """The first `;`-separated token of a field, lower-cased (a media type, an Auto-Submitted keyword)."""
    value = header_value(message, name)
    return value.split(";", 1)[0].strip().lower() if value is not None else None


def is_report(message: bytes | Head) -> bool:
    """Whether `message` is a `multipart/report` (RFC 6522) of any report type, readable or not: a notification
    of some kind, which no notification answers (and which its sender's own system does not answer either)."""
    return _token(message, "Content-Type") == "multipart/report"


def automatic(message: bytes | Head) -> bool:
    """Whether no delivery notification may answer `message`, nor be waited for: a report or an automatic
    message (RFC 3834). One parse of the header block for both questions."""
    parsed = head(message)
    return is_report(parsed) or auto_submitted(parsed)


def auto_submitted(message: bytes | Head) -> bool:
    """Whether `message` says it was sent automatically (RFC 3834 §5: an `Auto-Submitted` value but `no`), so
    that no automatic notice answers it (§2)."""
    return _token(message, "Auto-Submitted") not in (None, "no")


def build_mdn(
    *,
    reporting_ua: str,
    recipient: str,
    to: str,
    original_message_id: str,
    disposition: Disposition,
    message_id_domain: str,
    failure: str | None = None,
    now: datetime | None = None,
) -> bytes:
    """A complete RFC 5322 message: `recipient`'s MDN to `to` about `original_message_id` (module notes)."""
    reporting_ua = _check_hostname("reporting UA", reporting_ua)
    message_id_domain = _check_hostname("Message-ID domain", message_id_domain)
    _check_address("recipient", recipient)
    _check_address("notified address", to)
    check_message_id(original_message_id)
    if disposition not in DISPOSITIONS:
        raise ValueError(f"disposition {disposition!r} is not one of {', '.join(DISPOSITIONS)}")
    if (failure is not None) != (disposition == "failed"):
        raise ValueError("a failure text goes with the failed disposition, and only with it")
    failure_text = (clean_text(failure or "", 400) or "delivery failed") if disposition == "failed" else None
    now = _check_aware("now", now) if now is not None else datetime.now(UTC)

    fields = [
        f"Reporting-UA: {reporting_ua}; mssgw",
        f"Final-Recipient: rfc822; {recipient}",
        f"Original-Message-ID: {original_message_id}",
        f"Disposition: automatic-action/MDN-sent-automatically; {disposition}",
    ]
    if disposition == "dispatched":
        fields.append(f"{FINAL_DELIVERY}:")
    if failure_text is not None:
        fields.append(f"Failure: {failure_text}")
    report = ("\r\n".join(fields) + "\r\n").encode("ascii")
    french, english = (t.format(id=original_message_id, rcpt=recipient) for t in _TEXT[disposition])
    human = _qp(_wrap(french) + "\n\n" + "-" * 72 + "\n\n" + _wrap(english) + "\n")

    digest = hashlib.sha256()
    for piece in (reporting_ua, recipient, to, message_id_domain, now.isoformat()):
        digest.update(piece.encode() + b"\0")
    digest.update(report)
    token = digest.hexdigest()
    boundary = f"=_mssgw-mdn-{token[:32]}"
    top = [
        f"From: {recipient}",
        f"To: {to}",
        f"Subject: {_SUBJECT_ASCII[disposition]}",
        f"Date: {format_datetime(now)}",
        f"Message-ID: <mdn.{now.astimezone(UTC):%Y%m%d%H%M%S}.{token[32:56]}@{message_id_domain}>",
        f"In-Reply-To: {original_message_id}",
        f"References: {original_message_id}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=disposition-notification;",
        f' boundary="{boundary}"',
        "Content-Transfer-Encoding: 7bit",
        "",
        "This is a message disposition notification in MIME format (RFC 8098).",
        "",
    ]
    b = boundary.encode()
    return b"".join(
        [
            "\r\n".join(top).encode("ascii") + b"\r\n",
            b"--" + b + b"\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\nContent-Language: fr, en\r\n\r\n" + human + b"\r\n",
            b"--" + b + b"\r\nContent-Type: message/disposition-notification\r\n\r\n" + report + b"\r\n",
            b"--" + b + b"--\r\n",
        ]
    )


@dataclass(frozen=True)
class Report:
    """A peer's notification about one of our messages: `outcomes` holds (recipient, outcome) pairs, the
    recipient lower-cased, in the report's order."""

    kind: Literal["mdn", "dsn"]
    original_message_id: str
    outcomes: tuple[tuple[str, Outcome], ...]


def _disposition_outcome(value: str) -> Outcome:
    """RFC 8098 §3.2.6: `action-mode/sending-mode; type[/modifier]` (Direct adds the `failed` type)."""
    _modes, _semi, rest = value.partition(";")
    kind, _slash, modifier = rest.strip().lower().partition("/")
    kind = kind.strip()
    if kind == "failed" or modifier.strip() == "error":
        return "failed"
    if kind in ("processed", "dispatched", "displayed"):
        return kind  # type: ignore[return-value]
    if kind in ("deleted", "denied"):
        return "failed"
    return "other"


_ACTIONS: dict[str, Outcome] = {
    "failed": "failed",
    "delayed": "delayed",
    "delivered": "delivered",
    "relayed": "delivered",
    "expanded": "delivered",
}


def _address(value: str) -> str | None:
    _type, semi, address = " ".join(value.split()).partition(";")
    address = address.strip().strip("<>").lower()
    return address if semi and "@" in address else None


def _report_type(msg: Message) -> str | None:
    if msg.get_content_type() != "multipart/report":
        return None
    value = msg.get_param("report-type")
    return value.lower() if isinstance(value, str) else None


def read_report(message: bytes) -> Report | None:
    """The notification in `message` (module notes), or None."""
    if len(message) > MAX_REPORT or b"multipart/report" not in message[:65536].lower():
        return None  # cheap: most messages never reach the parser
    try:
        msg = message_from_bytes(message, policy=policy.compat32)
        kind = _report_type(msg)
        if kind == "disposition-notification":
            return _read_mdn(msg)
        if kind == "delivery-status":
            return _read_dsn(message, msg)
    except (ValueError, LookupError, TypeError, IndexError):
        return None
    return None


def _read_mdn(msg: Message) -> Report | None:
    for part in msg.walk():
        if part.get_content_type() != "message/disposition-notification":
            continue
        # The email package parses a message/* part's content as a message: the report's fields are its headers.
        payload = part.get_payload()
        fields = payload[0] if isinstance(payload, list) and payload else None
        if not isinstance(fields, Message):
            return None
        mid, final, disposition = (fields.get(n) for n in ("Original-Message-ID", "Final-Recipient", "Disposition"))
        if mid is None or final is None or disposition is None:
            return None
        address = _address(str(final))
        mid_text = " ".join(str(mid).split())
        if address is None or not _MESSAGE_ID.match(mid_text):
            return None
        return Report("mdn", mid_text, ((address, _disposition_outcome(str(disposition))),))
    return None


def _read_dsn(raw: bytes, msg: Message) -> Report | None:
    mid = None
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "text/rfc822-headers":
            body = part.get_payload(decode=True)
            mid = _original_message_id(body) if isinstance(body, bytes) else None
        elif ctype == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                mid = inner[0].get("Message-ID")
        if mid:
            break
    mid_text = " ".join(str(mid).split()) if mid else ""
    if not _MESSAGE_ID.match(mid_text):
        return None
    outcomes: list[tuple[str, Outcome]] = []
    for address, action, _status in parse_dsn_status(raw):
        found = _address(f"rfc822; {address}")
        if found is not None:
            outcomes.append((found, _ACTIONS.get(action, "other")))
    return Report("dsn", mid_text, tuple(outcomes)) if outcomes else None
