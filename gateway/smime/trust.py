"""Whether a signer's certificate counts (domain brief §7; RFC 8550): trusted path, validity, revocation,
emailProtection, key and algorithm strength, and its binding to the sender.

Implementation notes
- Path building and validation (RFC 5280 §6), CRL checks and the EKU are pyhanko-certvalidator's, not
  hand-written: `hard-fail` revocation (a path without fresh revocation information fails), SHA-1 and
  MD5 refused anywhere in the path, no fetching from here (CRLs come from the node's cache).
- Our own checks come first, on the signer's certificate alone: RSA ≥ 2048 bits or EC on P-256/384/521,
  and the sender binding: the envelope sender and the From: address must each equal an rfc822Name of
  the SAN (case-insensitively: mixed-case local parts occur in the wild) or have their domain among its
  dNSNames (domain-bound certificates). The subject DN's e-mail attribute is never used (RFC 8550 §3).
- One verdict per signer, with one reason from a fixed vocabulary: the SMTP reply and the audit name it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator import errors as pv

WEAK_HASHES = {"md5", "sha1"}
STRONG_CURVES = {"secp256r1", "secp384r1", "secp521r1"}

REASONS = {
    "untrusted": "the signer's certificate does not chain to a trust-space authority",
    "revoked": "the signer's certificate is revoked",
    "expired": "the signer's certificate has expired",
    "not-yet-valid": "the signer's certificate is not valid yet",
    "no-revocation-info": "no current revocation list for the signer's certificate",
    "weak-key": "the signer's key is too weak (RSA under 2048 bits or a weak curve)",
    "weak-algorithm": "the signer's certificate uses a weak algorithm (MD5 or SHA-1)",
    "no-email-protection": "the signer's certificate is not for e-mail protection",
    "sender-mismatch": "the signer's certificate is not bound to the sender address",
}


@dataclass(frozen=True)
class SignerVerdict:
    certificate: x509.Certificate
    ok: bool
    reason: str = ""  # a key of REASONS when not ok
    binding: str = ""  # when ok: "address" (rfc822Name) or "domain" (dNSName)

    @property
    def text(self) -> str:
        return REASONS.get(self.reason, "")


def _asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def key_is_strong(cert: x509.Certificate) -> bool:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return key.key_size >= 2048
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.curve.name in STRONG_CURVES
    return False


def binding(cert: x509.Certificate, addresses: Iterable[str]) -> str | None:
    """ "address" when every address is an rfc822Name of the SAN, "domain" when every one's domain is a
    dNSName (or a mix of both), None when one of them is not covered."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    emails = {e.lower() for e in san.get_values_for_type(x509.RFC822Name)}
    domains = {d.lower().rstrip(".") for d in san.get_values_for_type(x509.DNSName)}
    kinds = set()
    for address in addresses:
        address = address.strip().lower()
        if address in emails:
            kinds.add("address")
        elif "@" in address and address.rsplit("@", 1)[1] in domains:
            kinds.add("domain")
        else:
            return None
    return "address" if kinds == {"address"} else "domain" if kinds else None


class TrustStore:
    """The trust anchors and the revocation lists a node validates signers against."""

    def __init__(
        self,
        anchors: Sequence[x509.Certificate],
        crls: Sequence[bytes] = (),
        intermediates: Sequence[x509.Certificate] = (),
        *,
        revocation: str = "hard-fail",
    ) -> None:
        self.anchors = [_asn1(a) for a in anchors]
        self.revocation = revocation  # pyhanko-certvalidator's mode; "off" only in the client without CRLs
        self.crls = [asn1_crl.CertificateList.load(c) for c in crls]
        # The trust space's CA certificates: a peer's signature need not carry its chain (openssl's does not)
        self.intermediates = [_asn1(c) for c in intermediates]

    def set_crls(self, crls: Sequence[bytes]) -> None:
        """Replace the revocation lists (DER): checks started after this use them."""
        self.crls = [asn1_crl.CertificateList.load(c) for c in crls]

    async def check(
        self,
        cert: x509.Certificate,
        intermediates: Sequence[x509.Certificate],
        addresses: Iterable[str],
        *,
        at: dt.datetime | None = None,
    ) -> SignerVerdict:
        """The verdict on one signer of a message sent by `addresses` (envelope sender, From:)."""
        if not key_is_strong(cert):
            return SignerVerdict(cert, False, "weak-key")
        hash_algorithm = cert.signature_hash_algorithm
        if hash_algorithm is None or hash_algorithm.name in WEAK_HASHES:
            return SignerVerdict(cert, False, "weak-algorithm")
        bound = binding(cert, addresses)
        if bound is None:
            return SignerVerdict(cert, False, "sender-mismatch")
        context = ValidationContext(
            trust_roots=self.anchors,
            other_certs=self.intermediates,
            crls=self.crls,
            moment=at or dt.datetime.now(dt.UTC),
            allow_fetching=False,
            revocation_mode=self.revocation,
            weak_hash_algos=WEAK_HASHES,
        )
        validator = CertificateValidator(
            _asn1(cert), [_asn1(c) for c in intermediates if c != cert], validation_context=context
        )
        try:
            await validator.async_validate_usage(set(), extended_key_usage={"email_protection"})  # type: ignore[no-untyped-call]
        except pv.RevokedError:
            return SignerVerdict(cert, False, "revoked")
        except pv.ExpiredError:
            return SignerVerdict(cert, False, "expired")
        except pv.NotYetValidError:
            return SignerVerdict(cert, False, "not-yet-valid")
        except pv.InsufficientRevinfoError:
            return SignerVerdict(cert, False, "no-revocation-info")
        except pv.DisallowedAlgorithmError:
            return SignerVerdict(cert, False, "weak-algorithm")
        except pv.InvalidCertificateError:
            return SignerVerdict(cert, False, "no-email-protection")
        except (pv.PathBuildingError, pv.PathValidationError):
            return SignerVerdict(cert, False, "untrusted")
        return SignerVerdict(cert, True, binding=bound)
