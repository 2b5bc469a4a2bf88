"""The outbound step before a relay: find each recipient's certificate, sign as the sender, encrypt for
every recipient that has one (and the sender's own certificate), and say why the others cannot get it.

Implementation notes
- One protected message per relay transaction: the recipients of one peer share it (one content key,
  a key-transport entry each, RFC 5652 §6), as Direct does.
- A recipient without a usable certificate fails alone, permanently (5.7.x in its DSN naming why); a
  discovery that failed for now (DNS down) defers it (4.7.x); the others still go (issue 5).
- No signing key for the sender fails every recipient permanently: the operator has to issue one
  (`mssgw pki issue-address`), and the sender learns it from the DSN now rather than in five days.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.smime import mime
from gateway.smime.discovery import Found, Outcome
from gateway.smime.pool import CryptoPool
from gateway.store.mailboxes import SigningIdentity


class Finder(Protocol):
    async def find(self, address: str) -> Found: ...


@dataclass(frozen=True)
class Refused:
    recipient: str
    permanent: bool
    status: str  # RFC 3463 enhanced status for the DSN
    diagnostic: str


@dataclass(frozen=True)
class Protected:
    message: bytes | None  # None when no recipient can receive it
    recipients: list[str] = field(default_factory=list)  # those it is encrypted for
    refused: list[Refused] = field(default_factory=list)
    signer_serial: str = ""  # hex, of the certificate that signed it


def _refusal(found: Found) -> Refused:
    if found.outcome is Outcome.UNAVAILABLE:
        return Refused(found.address, False, "4.7.5", f"certificate discovery failed for now: {found.detail}")
    if found.outcome is Outcome.INVALID:
        reasons = ", ".join(sorted({r.reason for r in found.rejected})) or "invalid"
        return Refused(found.address, True, "5.7.5", f"no usable certificate for the recipient ({reasons})")
    if found.outcome is Outcome.BAD_ADDRESS:
        return Refused(found.address, True, "5.1.3", f"bad recipient address for certificate discovery: {found.detail}")
    return Refused(found.address, True, "5.7.5", "no certificate found for the recipient (S/MIME required)")


async def protect(
    message: bytes,
    *,
    sender: str,
    recipients: Sequence[str],
    identity: SigningIdentity | None,
    finder: Finder,
    pool: CryptoPool,
    oaep: bool = True,
    gcm: bool = False,
) -> Protected:
    """Sign as `sender` with `identity` and encrypt `message` for each of `recipients` that has a
    usable certificate (plus the sender's own, to read its sent copy).

    End-to-end mode (the submission listener checked these): a message its author encrypted goes as it
    is; one its author signed is encrypted without a second signature."""
    kind = mime.form(message)
    if kind == "enveloped":
        return Protected(message, list(recipients), [], "")
    if identity is None and kind == "plain":
        text = f"the sender {sender} has no S/MIME signing certificate at this operator"
        return Protected(None, [], [Refused(r, True, "5.7.1", text) for r in recipients])
    certificates: list[tuple[bytes, bool]] = [(identity.certificate, oaep)] if identity else []
    going: list[str] = []
    refused: list[Refused] = []
    for recipient in recipients:
        found = await finder.find(recipient)
        if found.outcome is not Outcome.FOUND:
            refused.append(_refusal(found))
            continue
        going.append(recipient)
        certificates += [(c.public_bytes(serialization.Encoding.DER), oaep) for c in found.certificates]
    if not going:
        return Protected(None, [], refused)
    if kind == "signed":
        encrypted = await pool.encrypt_signed(message, recipients=certificates, gcm=gcm)
        return Protected(encrypted, going, refused, "")
    assert identity is not None
    protected = await pool.protect(
        message,
        signer=identity.certificate,
        key=identity.key,
        chain=identity.chain,
        recipients=certificates,
        gcm=gcm,
    )
    serial = f"{x509.load_der_x509_certificate(identity.certificate).serial_number:X}"
    return Protected(protected, going, refused, serial)
