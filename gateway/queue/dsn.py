"""Implementation notes: delivery status notifications (DSN), RFC 3464 inside an RFC 6522 report, sans-I/O.

What is built
- One DSN per message and per give-up event, covering every recipient handed in (RFC 3464 §2: a DSN may report
  on several recipients of one message). The queue decides who failed; this module only writes and reads DSNs.
- Top level (RFC 5322 §3.6, RFC 2045): From `Postmaster <MAILER-DAEMON@<reporting MTA>>` (or `from_address`),
  To = the envelope sender, an ASCII-only bilingual Subject (no encoded words needed), Date, Message-ID,
  `Auto-Submitted: auto-replied` (RFC 3834 §5), MIME-Version, and
  `Content-Type: multipart/report; report-type=delivery-status` (RFC 6522 §3) with exactly three parts:
  1. text/plain, UTF-8, quoted-printable (7-bit safe over peers without 8BITMIME), French then English, naming
     each recipient, its RFC 3463 status explained in words, the remote MTA and its reply;
  2. message/delivery-status (RFC 3464 §2.1): the per-message block in the ABNF order of §2.2
     (Original-Envelope-Id, Reporting-MTA, Arrival-Date), then one block per recipient in the order of §2.3
     (Final-Recipient, Action, Status, Remote-MTA, Diagnostic-Code, Last-Attempt-Date), 7-bit;
  3. text/rfc822-headers (RFC 6522 §3 lets the third part return the headers only): the original header block.
     Messages carry health data: the body is never returned, and whatever is handed in is cut at the first
     empty line (so passing the whole message by mistake still returns headers only); the human-readable part
     quotes no header but the original Message-ID. Headers with 8-bit bytes (RFC 6532) are sent
     quoted-printable with charset=utf-8, as the media type's registration allows, so the DSN stays 7-bit.
- Written by hand, not with `email.generator`: the output is byte-for-byte deterministic for given inputs
  (Message-ID and MIME boundary are derived from a SHA-256 of the inputs, so a DSN rebuilt after a crash with
  the same `now` is the same message), CRLF everywhere, no line over 998 octets (RFC 5322 §2.1.1), and no
  encoded words or re-folding by the generator. Tests check that Python's `email` parser reads it back.

Inputs and trust
- Values this node chose (recipient and sender addresses, host names, envelope id) are validated and a bad
  one raises ValueError: they must be printable US-ASCII without white space, since RFC 3464 fields are
  7-bit (RFC 3464 §2.1; UTF-8 addresses would need message/global-delivery-status, RFC 6533, not supported).
- Remote replies (Diagnostic-Code) are untrusted text: line breaks and runs of white space become one space,
  other control and non-ASCII characters are written `\\x{HH}` (the escape of RFC 6533 §3), the whole is
  capped at 900 characters, then folded at spaces (RFC 5322 §2.2.3) so that unfolding gives it back exactly.
  A diagnostic without a `type;` prefix is given `smtp; ` (RFC 3464 §2.3.6 requires a diagnostic-type).
- `Original-Envelope-Id` is the ENVID already decoded from xtext (RFC 3461 §6.3 a, RFC 3464 §2.2.1):
  1 to 100 printable ASCII characters (RFC 3461 §4.4).
- Action/Status consistency (RFC 3464 §2.3.3, RFC 3463 §3.1): `delayed` needs a 4.x.x status,
  `delivered`/`relayed`/`expanded` a 2.x.x one; `failed` accepts 5.x.x and also 4.x.x (a transient error
  that lasted until the message expired, e.g. 4.4.7).
- No DSN about a DSN (RFC 3464 §2, RFC 5321 §4.5.5): `needs_dsn` is that rule, and
  `build_dsn` refuses a sender for which it is False.
- Dates must be timezone-aware; they are written as RFC 5322 §3.3 date-times with their own offset.
"""

from __future__ import annotations

import hashlib
import quopri
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import Message
from email.utils import format_datetime
from typing import Literal

Action = Literal["failed", "delayed", "delivered", "relayed", "expanded"]
ACTIONS: tuple[Action, ...] = ("failed", "delayed", "delivered", "relayed", "expanded")

MAX_LINE = 998  # RFC 5322 §2.1.1, octets without CRLF
FOLD_WIDTH = 78  # RFC 5322 §2.1.1 recommendation
MAX_ADDRESS = 254  # RFC 5321 §4.5.3.1.3: 256 for the path, minus the angle brackets
MAX_DIAGNOSTIC = 900  # characters, after cleaning; keeps every line of the report far below 998 octets
MAX_ENVID = 100  # RFC 3461 §4.4

_STATUS = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})\Z")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\Z")
_DIAG_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9-]*[ ]?;")
_PRINTABLE = re.compile(r"[\x21-\x7e]+\Z")
_BLANK_LINE = re.compile(rb"\r\n\r\n|\n\n|\r\r|\r\n\n|\n\r\n")
_ANY_EOL = re.compile(rb"\r\n|\r|\n")


def _check_token(what: str, value: str, limit: int) -> str:
    """`value` if it is 1..limit printable US-ASCII characters without white space, else ValueError."""
    if not value:
        raise ValueError(f"{what} is empty")
    if not _PRINTABLE.match(value):
        raise ValueError(f"{what} {value!r} must be printable US-ASCII without white space or control characters")
    if len(value) > limit:
        raise ValueError(f"{what} is {len(value)} characters long, more than {limit}")
    return value


def _check_address(what: str, value: str) -> str:
    _check_token(what, value, MAX_ADDRESS)
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"{what} {value!r} is not of the form local-part@domain")
    return value


def _check_hostname(what: str, value: str) -> str:
    name = value[:-1] if value.endswith(".") else value
    if len(name) > 253 or not _HOSTNAME.match(name):
        raise ValueError(f"{what} {value!r} is not a DNS host name (letters, digits, inner hyphens, dots)")
    return name


def _check_aware(what: str, value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")
    return value


def clean_text(value: str, limit: int = MAX_DIAGNOSTIC) -> str:
    """Untrusted text made safe for a 7-bit header field (see the module notes); may return ''."""
    out: list[str] = []
    for ch in value:
        code = ord(ch)
        if ch.isspace():
            out.append(" ")
        elif 0x21 <= code <= 0x7E:
            out.append(ch)
        else:
            out.append(f"\\x{{{code:X}}}")
    text = " ".join("".join(out).split())
    if len(text) > limit:
        text = text[: limit - 3]
        text = re.sub(r"\\(?:x(?:\{[0-9A-F]*)?)?\Z", "", text).rstrip() + "..."
    return text


def _diagnostic(value: str | None) -> str | None:
    if value is None:
        return None
    text = clean_text(value, MAX_DIAGNOSTIC)
    if not text:
        return None
    if _DIAG_TYPE.match(text):
        return text
    return clean_text(f"smtp; {text}", MAX_DIAGNOSTIC)


@dataclass(frozen=True, slots=True)
class RecipientStatus:
    """What happened to one recipient (RFC 3464 §2.3). `diagnostic` is the full field value, type included,
    e.g. "smtp; 550 5.1.1 unknown mailbox"; `remote_mta` a host name or address literal."""

    recipient: str
    action: Action
    status: str
    diagnostic: str | None = None
    remote_mta: str | None = None
    last_attempt: datetime | None = None
    final_recipient_type: Literal["rfc822"] = "rfc822"

    def __post_init__(self) -> None:
        _check_address("recipient", self.recipient)
        if self.action not in ACTIONS:
            raise ValueError(f"action {self.action!r} is not one of {', '.join(ACTIONS)}")
        m = _STATUS.match(self.status)
        if not m:
            raise ValueError(f"status {self.status!r} is not an RFC 3463 code class.subject.detail (e.g. 5.1.1)")
        klass = m.group(1)
        allowed = {"failed": "45", "delayed": "4"}.get(self.action, "2")
        if klass not in allowed:
            raise ValueError(f"action {self.action!r} cannot have status {self.status} (class {klass})")
        if self.remote_mta is not None:
            _check_token("remote MTA", self.remote_mta, 255)
        if self.last_attempt is not None:
            _check_aware("last attempt date", self.last_attempt)
        if self.final_recipient_type != "rfc822":
            raise ValueError(f"address type {self.final_recipient_type!r} is not supported (only rfc822)")


def needs_dsn(sender: str) -> bool:
    """False when no DSN may be sent about a message from `sender`: the null reverse-path (DSNs and MDNs
    themselves, RFC 3464 §2; MDNs, RFC 8098) and MAILER-DAEMON-like senders (any case, with `-`, `_` or `.`
    or nothing between the words, with or without a domain or a +detail), to break notification loops."""
    s = sender.strip()
    if s.startswith("<") and s.endswith(">"):
        s = s[1:-1].strip()
    if not s:
        return False
    local = s.rpartition("@")[0] if "@" in s else s
    local = local.strip('"').split("+", 1)[0]
    return re.sub(r"[-_.]", "", local.lower()) != "mailerdaemon"


# --- human-readable part --------------------------------------------------------------------------------------

# RFC 3463 §3 subject.detail codes (the class comes from the status): (French, English).
_DETAILS: dict[str, tuple[str, str]] = {
    "1.1": ("adresse du destinataire inconnue", "unknown recipient address"),
    "1.2": ("domaine du destinataire inconnu", "unknown recipient domain"),
    "1.3": ("adresse du destinataire invalide", "invalid recipient address"),
    "1.6": ("le destinataire a changé d'adresse", "the recipient has moved"),
    "2.0": ("problème de boîte aux lettres du destinataire", "problem with the recipient's mailbox"),
    "2.1": ("boîte aux lettres fermée ou désactivée", "mailbox closed or disabled"),
    "2.2": ("boîte aux lettres pleine", "mailbox full"),
    "2.3": ("message trop volumineux pour cette boîte", "message too large for this mailbox"),
    "3.4": ("message trop volumineux", "message too large"),
    "4.1": ("le serveur destinataire ne répond pas", "no answer from the destination server"),
    "4.2": ("connexion interrompue", "connection dropped"),
    "4.4": ("aucune route vers la destination", "unable to route to the destination"),
    "4.7": ("délai de remise dépassé", "delivery time expired"),
    "5.0": ("erreur de protocole", "protocol error"),
    "7.0": ("refus de sécurité", "refused for security reasons"),
    "7.1": ("remise non autorisée (hors espace de confiance ou refusée)", "delivery not authorised"),
    "7.5": ("échec de chiffrement ou de signature", "cryptographic failure"),
}
_SUBJECTS: dict[str, tuple[str, str]] = {
    "0": ("cause non précisée", "unspecified cause"),
    "1": ("problème d'adresse", "addressing problem"),
    "2": ("problème de boîte aux lettres", "mailbox problem"),
    "3": ("problème du système de messagerie", "mail system problem"),
    "4": ("problème de réseau ou de routage", "network or routing problem"),
    "5": ("problème de protocole", "protocol problem"),
    "6": ("problème de contenu", "message content problem"),
    "7": ("problème de sécurité ou de politique", "security or policy problem"),
}
_HEADINGS: dict[Action, tuple[str, str]] = {
    "failed": (
        "Votre message n'a pas pu être remis aux destinataires suivants\u00a0;"
        " il n'y aura pas d'autre tentative\u00a0:",
        "Your message could not be delivered to the following recipients; no further attempts will be made:",
    ),
    "delayed": (
        "La remise de votre message aux destinataires suivants est retardée\u00a0;"
        " de nouvelles tentatives auront lieu\u00a0:",
        "Delivery of your message to the following recipients is delayed; it will be retried:",
    ),
    "delivered": (
        "Votre message a été remis aux destinataires suivants\u00a0:",
        "Your message was delivered to the following recipients:",
    ),
    "relayed": (
        "Votre message a été transmis aux destinataires suivants,"
        " par un système qui n'envoie pas d'avis de remise\u00a0:",
        "Your message was relayed to the following recipients, through a system that sends no delivery notices:",
    ),
    "expanded": (
        "Votre message a été remis aux destinataires suivants, puis redistribué\u00a0:",
        "Your message was delivered to the following recipients, then redistributed:",
    ),
}
_SUBJECT_LINES = {
    "failed": "Avis de non-remise / Delivery Status Notification (Failure)",
    "delayed": "Avis de retard de remise / Delivery Status Notification (Delay)",
    "success": "Avis de remise / Delivery Status Notification (Success)",
}


def describe_status(status: str) -> tuple[str, str]:
    """(French, English) words for an RFC 3463 code: its subject.detail when known, else its subject."""
    m = _STATUS.match(status)
    if not m:
        raise ValueError(f"status {status!r} is not an RFC 3463 code")
    detail = f"{int(m.group(2))}.{int(m.group(3))}"
    return _DETAILS.get(detail) or _SUBJECTS.get(str(int(m.group(2))), ("autre cause", "other cause"))


_WORDS: tuple[dict[str, str], ...] = (
    {
        "intro": "Ceci est un message automatique du serveur de messagerie {mta}.",
        "reason": "Motif\u00a0:",
        "remote": "Serveur distant\u00a0:",
        "reply": "Réponse\u00a0:",
        "no_body": "Le contenu de votre message n'est pas joint à cet avis\u00a0: seuls ses en-têtes sont renvoyés.",
        "original": "Message d'origine\u00a0: {id}",
        "received": "Reçu le\u00a0: {date}",
    },
    {
        "intro": "This is an automatic message from the mail server {mta}.",
        "reason": "Reason:",
        "remote": "Remote server:",
        "reply": "Reply:",
        "no_body": "The content of your message is not attached to this notice: only its headers are returned.",
        "original": "Original message: {id}",
        "received": "Received on: {date}",
    },
)


def _wrap(text: str, indent: int = 0) -> str:
    """Wrapped at 72 columns for plain-text readers; words (addresses, codes) are never split, and French
    punctuation keeps its no-break space (U+00A0, which textwrap does not break at) before `;` and `:`."""
    return textwrap.fill(text, width=72, subsequent_indent=" " * indent, break_long_words=False, break_on_hyphens=False)


def _human_text(
    reporting_mta: str, recipients: Sequence[RecipientStatus], original_id: str | None, arrival: str
) -> str:
    """French, a rule, then English; LF line ends (the QP encoder turns them into CRLF)."""
    blocks: list[str] = []
    for lang, words in enumerate(_WORDS):
        lines = [_wrap(words["intro"].format(mta=reporting_mta)), ""]
        for action in ACTIONS:
            group = [r for r in recipients if r.action == action]
            if not group:
                continue
            lines += [_wrap(_HEADINGS[action][lang]), ""]
            for r in group:
                lines.append(f"  <{r.recipient}>")
                lines.append(_wrap(f"    {words['reason']} {describe_status(r.status)[lang]} ({r.status})", 6))
                if r.remote_mta is not None:
                    lines.append(f"    {words['remote']} {r.remote_mta}")
                diag = _diagnostic(r.diagnostic)
                if diag is not None:
                    lines.append(_wrap(f"    {words['reply']} {diag}", 6))
                lines.append("")
        lines.append(_wrap(words["no_body"]))
        if original_id is not None:
            lines.append(_wrap(words["original"].format(id=original_id)))
        lines.append(words["received"].format(date=arrival))
        blocks.append("\n".join(lines))
    return ("\n\n" + "-" * 72 + "\n\n").join(blocks) + "\n"


# --- machine-readable parts -----------------------------------------------------------------------------------


def _fold(name: str, value: str) -> str:
    """`name: value` folded at single spaces to FOLD_WIDTH columns where words allow (RFC 5322 §2.2.3); the value
    has no runs of white space, so removing the CRLFs gives it back exactly."""
    words = value.split(" ")
    lines: list[str] = []
    current = f"{name}: {words[0]}"
    for word in words[1:]:
        if len(current) + 1 + len(word) > FOLD_WIDTH:
            lines.append(current)
            current = f" {word}"
        else:
            current += f" {word}"
    lines.append(current)
    return "\r\n".join(lines)


def _status_fields(
    reporting_mta: str, original_envelope_id: str | None, arrival: datetime, recipients: Sequence[RecipientStatus]
) -> str:
    per_message = []
    if original_envelope_id is not None:
        per_message.append(f"Original-Envelope-Id: {original_envelope_id}")
    per_message.append(f"Reporting-MTA: dns; {reporting_mta}")
    per_message.append(f"Arrival-Date: {format_datetime(arrival)}")
    blocks = ["\r\n".join(per_message)]
    for r in recipients:
        fields = [
            f"Final-Recipient: {r.final_recipient_type}; {r.recipient}",
            f"Action: {r.action}",
            f"Status: {r.status}",
        ]
        if r.remote_mta is not None:
            fields.append(f"Remote-MTA: dns; {r.remote_mta}")
        diag = _diagnostic(r.diagnostic)
        if diag is not None:
            fields.append(_fold("Diagnostic-Code", diag))
        if r.last_attempt is not None:
            fields.append(f"Last-Attempt-Date: {format_datetime(r.last_attempt)}")
        blocks.append("\r\n".join(fields))
    return "\r\n\r\n".join(blocks) + "\r\n"


def header_block(original: bytes) -> bytes:
    """The header block of `original` (all of it when there is no empty line), CRLF-terminated lines,
    each cut at 998 octets; nothing after the first empty line ever comes out."""
    m = _BLANK_LINE.search(original)
    head = original[: m.start()] if m else original
    if original.startswith((b"\r\n", b"\n", b"\r")):
        head = b""
    lines = [line[:MAX_LINE] for line in _ANY_EOL.split(head)]
    while lines and not lines[-1]:
        lines.pop()
    return b"".join(line + b"\r\n" for line in lines)


def _original_message_id(headers: bytes) -> str | None:
    text = headers.decode("ascii", "replace")
    m = re.search(r"^message-id:(.*(?:\r\n[ \t].*)*)", text, re.IGNORECASE | re.MULTILINE)
    if not m:
        return None
    value = clean_text(m.group(1).replace("\r\n", ""), 250)
    return value or None


def _qp(text: str) -> bytes:
    """Quoted-printable (RFC 2045 §6.7) of UTF-8 text, CRLF line ends, lines of at most 76 characters."""
    encoded = quopri.encodestring(text.encode("utf-8"))
    return encoded.replace(b"\n", b"\r\n")


def _needs_encoding(data: bytes) -> bool:
    return any(b > 0x7E or (b < 0x20 and b not in (0x09, 0x0D, 0x0A)) for b in data)


def build_dsn(
    *,
    reporting_mta: str,
    original_envelope_id: str | None,
    sender: str,
    recipients: Sequence[RecipientStatus],
    original_headers: bytes,
    arrival: datetime,
    message_id_domain: str,
    now: datetime | None = None,
    from_address: str | None = None,
) -> bytes:
    """A complete RFC 5322 message: the DSN to `sender` about `recipients` (see the module notes)."""
    reporting_mta = _check_hostname("reporting MTA", reporting_mta)
    message_id_domain = _check_hostname("Message-ID domain", message_id_domain)
    if not needs_dsn(sender):
        raise ValueError(f"no DSN is sent to the sender {sender!r} (null or MAILER-DAEMON: RFC 3464 §2)")
    _check_address("sender", sender)
    sender_from = _check_address("from address", from_address) if from_address else f"MAILER-DAEMON@{reporting_mta}"
    if original_envelope_id is not None:
        _check_token("original envelope id", original_envelope_id, MAX_ENVID)
    if not recipients:
        raise ValueError("a DSN reports on at least one recipient")
    seen: set[str] = set()
    for r in recipients:
        if r.recipient in seen:
            raise ValueError(f"recipient {r.recipient!r} is listed twice")
        seen.add(r.recipient)
    _check_aware("arrival date", arrival)
    now = _check_aware("now", now) if now is not None else datetime.now(UTC)

    headers = header_block(original_headers)
    status = _status_fields(reporting_mta, original_envelope_id, arrival, recipients).encode("ascii")
    human = _qp(_human_text(reporting_mta, recipients, _original_message_id(headers), format_datetime(arrival)))
    headers_8bit = _needs_encoding(headers)
    if headers_8bit:  # raw UTF-8 (RFC 6532) or stray bytes: keep the part 7-bit
        headers_body = quopri.encodestring(headers.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n")
    else:
        headers_body = headers

    digest = hashlib.sha256()
    for piece in (reporting_mta, sender, sender_from, message_id_domain, format_datetime(now), now.isoformat()):
        digest.update(piece.encode() + b"\0")
    for piece_b in (status, headers):
        digest.update(piece_b + b"\0")
    token = digest.hexdigest()
    boundary = f"=_mssgw-dsn-{token[:32]}"
    n = 0
    while any(boundary.encode() in part for part in (human, status, headers_body)):
        n += 1
        boundary = f"=_mssgw-dsn-{token[:32]}-{n}"

    if any(r.action == "failed" for r in recipients):
        subject = _SUBJECT_LINES["failed"]
    elif any(r.action == "delayed" for r in recipients):
        subject = _SUBJECT_LINES["delayed"]
    else:
        subject = _SUBJECT_LINES["success"]

    top = [
        f"From: Postmaster <{sender_from}>",
        f"To: {sender}",
        f"Subject: {subject}",
        f"Date: {format_datetime(now)}",
        f"Message-ID: <dsn.{now.astimezone(UTC):%Y%m%d%H%M%S}.{token[32:56]}@{message_id_domain}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f' boundary="{boundary}"',
        "Content-Transfer-Encoding: 7bit",
        "",
        "This is a delivery status notification in MIME format (RFC 3464).",
        "Ceci est un avis de remise au format MIME (RFC 3464).",
        "",
    ]
    b = boundary.encode()
    out = [("\r\n".join(top)).encode("ascii") + b"\r\n"]
    out.append(
        b"--" + b + b"\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n"
        b"Content-Language: fr, en\r\n"
        b"Content-Description: Notification\r\n"
        b"\r\n" + human + b"\r\n"
    )
    out.append(
        b"--" + b + b"\r\n"
        b"Content-Type: message/delivery-status\r\n"
        b"Content-Description: Delivery report\r\n"
        b"\r\n" + status + b"\r\n"
    )
    out.append(
        b"--"
        + b
        + b"\r\n"
        + (
            b"Content-Type: text/rfc822-headers; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n"
            if headers_8bit
            else b"Content-Type: text/rfc822-headers\r\n"
        )
        + b"Content-Description: Original message headers\r\n"
        b"\r\n" + headers_body + b"\r\n"
    )
    out.append(b"--" + b + b"--\r\n")
    return b"".join(out)


# --- reading ---------------------------------------------------------------------------------------------------


def _unfold(value: str) -> str:
    return re.sub(r"\r?\n(?=[ \t])", "", value).strip()


def delivery_status_blocks(dsn: bytes) -> list[Message]:
    """The field blocks of the first message/delivery-status part of `dsn` (per-message block first), parsed
    with the compat32 policy so that values come back as written (no encoded-word decoding)."""
    msg = message_from_bytes(dsn, policy=policy.compat32)
    for part in msg.walk():
        if part.get_content_type() == "message/delivery-status":
            blocks = part.get_payload()
            if not isinstance(blocks, list) or not blocks:
                raise ValueError("the message/delivery-status part has no field blocks")
            return [b for b in blocks if isinstance(b, Message)]
    raise ValueError("no message/delivery-status part in this message")


def parse_dsn_status(dsn: bytes) -> list[tuple[str, str, str]]:
    """(recipient, action, status) for each per-recipient block of a DSN, in order. The recipient is the
    address of Final-Recipient without its type; action is lower-cased; status is the bare RFC 3463 code."""
    result: list[tuple[str, str, str]] = []
    for n, block in enumerate(delivery_status_blocks(dsn)[1:], start=1):
        final, action, status = (block.get(name) for name in ("Final-Recipient", "Action", "Status"))
        if final is None or action is None or status is None:
            raise ValueError(f"recipient block {n} lacks Final-Recipient, Action or Status")
        _type, semi, address = _unfold(str(final)).partition(";")
        if not semi or not address.strip():
            raise ValueError(f"recipient block {n}: Final-Recipient {final!r} is not 'type; address'")
        code = _unfold(str(status)).split(" ", 1)[0]
        result.append((address.strip(), _unfold(str(action)).lower(), code))
    return result
