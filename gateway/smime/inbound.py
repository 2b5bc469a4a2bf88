"""The inbound decision on a message from a peer operator: decrypt, verify, judge the signers, and either
the message to store (with its Authentication-Results) or the SMTP refusal naming the reason.

Implementation notes
- One valid signer suffices; invalid co-signers beside it do not fail the message (domain brief §7). When
  none is valid, the refusal names the most telling failure: a broken signature (the content was
  altered) before a certificate problem, so a forged co-signer cannot hide a tampered body.
- The sender binding uses the envelope sender and the From: of the *protected* (inner) message: the
  outer header is not signed.
- Reply codes (RFC 3463): 5.7.1 refused by policy (plaintext, unsigned, sender mismatch), 5.7.5
  cryptographic failure (cannot decrypt, untrusted/revoked/expired signer), 5.7.6 algorithm not
  supported (weak), 5.7.7 message integrity failure (bad digest or signature). A missing or stale CRL is
  ours to fix, not the sender's: 451 4.7.5, so the peer retries.
- At most MAX_SIGNERS SignerInfos are judged: each may cost a path validation and an OCSP request, and
  the sender chooses how many there are (the reply to its DATA waits for them).
- The stored message carries RFC 7281's `smime` method in an Authentication-Results field (RFC 8601)
  naming the signer, its certificate serial and issuer, and the validation time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses

from cryptography import x509

from gateway.smime import cms, mime
from gateway.smime.pool import CryptoPool, OpenedDer
from gateway.smime.trust import REASONS, SignerVerdict, TrustStore

# reason -> (SMTP code, enhanced status, text)
REFUSALS: dict[str, tuple[int, str, str]] = {
    "plaintext": (550, "5.7.1", "message refused: not encrypted (S/MIME enveloped-data required)"),
    "unsigned": (550, "5.7.1", "message refused: not signed (S/MIME signature required)"),
    "not-encrypted": (550, "5.7.1", "message refused: not encrypted (S/MIME enveloped-data required)"),
    "not-for-us": (550, "5.7.5", "message refused: not encrypted for the recipient's certificate"),
    "cannot-decrypt": (550, "5.7.5", "message refused: cannot be decrypted"),
    "malformed": (550, "5.7.5", "message refused: malformed S/MIME structure"),
    "no-recipient": (550, "5.7.5", "message refused: no recipient entry"),
    "weak-algorithm": (550, "5.7.6", "message refused: weak or unsupported algorithm"),
    "weak-key": (550, "5.7.6", "message refused: the signer's key is too weak"),
    "bad-digest": (550, "5.7.7", "message refused: the content does not match its signature"),
    "bad-signature": (550, "5.7.7", "message refused: bad signature"),
    "no-certificate": (550, "5.7.5", "message refused: the signer's certificate is missing"),
    "untrusted": (550, "5.7.5", "message refused: the signer is not trusted"),
    "revoked": (550, "5.7.5", "message refused: the signer's certificate is revoked"),
    "expired": (550, "5.7.5", "message refused: the signer's certificate has expired"),
    "not-yet-valid": (550, "5.7.5", "message refused: the signer's certificate is not valid yet"),
    "no-email-protection": (550, "5.7.5", "message refused: the signer's certificate is not for e-mail"),
    "not-for-signing": (550, "5.7.5", "message refused: the signer's certificate is not for signing"),
    "sender-mismatch": (550, "5.7.1", "message refused: the signer is not the sender"),
    "no-revocation-info": (451, "4.7.5", "no current revocation list for the signer, try again later"),
    # End-to-end submissions (a message the author already protected):
    "missing-recipient": (550, "5.7.1", "message refused: not encrypted for the recipient's certificate"),
    "recipient-no-certificate": (550, "5.7.1", "message refused: no certificate to encrypt for the recipient"),
    "recipient-unavailable": (451, "4.7.5", "the recipient's certificate cannot be looked up now, try again later"),
}
# When no signer is valid, the failure named: integrity first, then the rest in this order.
PRIORITY = [
    "bad-digest",
    "bad-signature",
    "malformed",
    "weak-algorithm",
    "weak-key",
    "sender-mismatch",
    "revoked",
    "expired",
    "not-yet-valid",
    "untrusted",
    "no-email-protection",
    "not-for-signing",
    "no-certificate",
    "no-revocation-info",
]


MAX_SIGNERS = 4


@dataclass(frozen=True)
class Inbound:
    ok: bool
    reason: str = ""  # a key of REFUSALS when refused
    message: bytes = b""  # accepted: what to store
    signer: x509.Certificate | None = None
    binding: str = ""
    detail: str = ""  # refused: what it concerns (the recipient without an entry)
    results: bytes = b""  # accepted from a peer: the Authentication-Results field put on top of `message`

    @property
    def reply(self) -> tuple[int, str]:
        code, status, text = REFUSALS[self.reason]
        return code, f"{status} {text}" + (f" ({self.detail})" if self.detail else "")


def from_addresses(message: bytes) -> list[str]:
    header = BytesHeaderParser(policy=compat32).parsebytes(mime.split(message)[0])
    return [a for _, a in getaddresses([str(v) for v in header.get_all("from", [])]) if "@" in a]


def authentication_results(host: str, verdict: SignerVerdict, at: dt.datetime, addresses: Sequence[str] = ()) -> bytes:
    """RFC 8601 field with RFC 7281's smime method: who signed, with which certificate, when checked. The
    identifier is the certificate's name that bound the sender (`addresses`), else its first one."""
    cert = verdict.certificate
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.RFC822Name) or san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    bound = {a.lower() for a in addresses} | {a.rpartition("@")[2].lower() for a in addresses}
    matching = [n for n in names if n.lower() in bound]
    identifier = (matching or names or [cert.subject.rfc4514_string()])[0]
    issuer = cert.issuer.rfc4514_string().replace("\\", "\\\\").replace('"', '\\"')
    when = at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f"Authentication-Results: {host};\r\n"
        f" smime=pass body.smime-identifier={identifier}\r\n"
        f" body.smime-serial={cert.serial_number:X}\r\n"
        f' body.smime-issuer="{issuer}" ({verdict.binding}-bound, validated {when})\r\n'
    ).encode()


def strip_results(message: bytes, host: str) -> bytes:
    """`message` without the Authentication-Results fields claiming to be ours (RFC 8601 §5: a sender
    could otherwise forge our verdict inside the signed content)."""
    header, body = mime.split(message)
    kept = []
    dropped = False
    for name, raw in mime.fields(header):
        if name == "authentication-results":
            authserv = raw.split(b":", 1)[1].split(b";", 1)[0].strip().split()
            if authserv and authserv[0].decode("ascii", "replace").lower() == host.lower():
                dropped = True
                continue
        kept.append(raw)
    if not dropped:
        return message
    return b"".join(kept) + b"\r\n" + body


async def check(
    raw: bytes,
    *,
    sender: str,
    certificate: bytes,
    key: bytes,
    pool: CryptoPool,
    trust: TrustStore,
    host: str,
    at: dt.datetime | None = None,
) -> Inbound:
    """Decide on `raw` (received from a peer for a local recipient whose certificate/key are given)."""
    moment = at or dt.datetime.now(dt.UTC)
    try:
        opened = await pool.unprotect(raw, certificate=certificate, key=key)
    except cms.CmsError as exc:
        return Inbound(False, exc.reason if exc.reason in REFUSALS else "malformed")
    # A null sender (a bounce, a notification) binds by its From: alone.
    addresses = [a for a in (sender,) if a] + from_addresses(opened.message)
    judged = await judge(opened, addresses, trust, at)  # `at` as given: a check of now may be reused
    if isinstance(judged, str):
        return Inbound(False, judged)
    header = authentication_results(host, judged, moment, addresses)
    inner = strip_results(opened.message, host)
    return Inbound(True, message=header + inner, signer=judged.certificate, binding=judged.binding, results=header)


async def judge(
    opened: OpenedDer, addresses: list[str], trust: TrustStore, at: dt.datetime | None = None
) -> SignerVerdict | str:
    """The first valid signer's verdict, or the most telling reason none is (see PRIORITY); `at` None is now."""
    carried = [x509.load_der_x509_certificate(c) for c in opened.certificates]
    failures: list[str] = []
    for cert_der, signature_ok, reason in opened.signers[:MAX_SIGNERS]:
        if not signature_ok:
            failures.append(reason)
            continue
        assert cert_der is not None
        cert = x509.load_der_x509_certificate(cert_der)
        verdict = await trust.check(cert, [c for c in carried if c != cert], addresses, at=at)
        if verdict.ok:
            return verdict
        failures.append(verdict.reason)
    if not failures:
        return "unsigned"
    return min(failures, key=lambda r: PRIORITY.index(r) if r in PRIORITY else len(PRIORITY))


def describe_reason(reason: str) -> str:
    """A reason's words for the audit record (the SMTP text, or the signer-check text)."""
    return REFUSALS.get(reason, (0, "", REASONS.get(reason, reason)))[2]
