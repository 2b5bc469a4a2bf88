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
- A purpose: a signer's keyUsage (when present) has digitalSignature or nonRepudiation; a recipient's
  (discovery, `purpose=RECIPIENT`) has keyEncipherment and an RSA key, the only key transport
  `cms.encrypt` does (RFC 8550 §4.4.2). pyhanko is given no key usage: it requires all it is given.
- OCSP is asked only when the certificate's issuer is one of our trust-space CAs (anchors and configured
  intermediates): a CA carried in the message vouches for nothing, and the responder URL of a
  certificate it issued is the sender's choice of where we connect.
- One verdict per signer, with one reason from a fixed vocabulary: the SMTP reply and the audit name it.
- Path validation's outcome is remembered per (signer, carried certificates, OCSP answer) while nothing
  it depended on can have changed: until new CRLs are set, the earliest CRL next-update or certificate
  expiry in play, and at most PATH_CACHE_TTL seconds. Profiling the relay put pyhanko's path building
  at ~8 % of the receiving node's event loop, for the same few signer certificates again and again.
  Checks at a given moment (`at`) are never cached; the key-strength and sender-binding checks, which
  depend on the message, always run.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from asn1crypto import crl as asn1_crl
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator import errors as pv

from gateway import lookups
from gateway.smime.cms import MALFORMED

if TYPE_CHECKING:
    import aiohttp

PATH_CACHE_TTL = 300.0
"""Longest time a path validation's outcome is reused (seconds)."""
PATH_CACHE_MAX = 10_000
PATH_MAX_CARRIED = 8
"""Carried certificates (a message's, a discovery's) offered to path building, and at most
PATH_MAX_PER_SUBJECT of one subject: pyhanko-certvalidator tries every issuer candidate depth first,
so layers of same-named CA certificates cost (per layer)^(layers) path attempts on the event loop."""
PATH_MAX_PER_SUBJECT = 2
OCSP_MAX_OCTETS = 64 * 1024  # a response (RFC 6960 §4.2.1): one certificate's status, its signer's chain
OCSP_CACHE_MAX = 10_000
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
    "not-for-signing": "the signer's certificate's key usage allows neither digitalSignature nor nonRepudiation",
    # Recipient checks (purpose "recipient", discovery): our key transport is RSA (cms._key_transport).
    "not-for-encryption": "the certificate's key usage does not allow keyEncipherment",
    "no-key-transport": "the certificate's key is not RSA: no key transport for it",
}
SIGNER = "signer"
RECIPIENT = "recipient"


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


def usage_allows(cert: x509.Certificate, purpose: str) -> bool:
    """RFC 8550 §4.4.2: a signer's keyUsage, when present, has digitalSignature or nonRepudiation; a key
    transport recipient's has keyEncipherment (RFC 5280 §4.2.1.3: no extension, no restriction)."""
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    if purpose == RECIPIENT:
        return usage.key_encipherment
    return usage.digital_signature or usage.content_commitment  # content_commitment = nonRepudiation


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


def ocsp_urls(cert: x509.Certificate) -> list[str]:
    """The OCSP responders a certificate names (RFC 5280 §4.2.2.1 Authority Information Access)."""
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return []
    return [
        str(d.access_location.value)
        for d in aia
        if d.access_method == AuthorityInformationAccessOID.OCSP
        and isinstance(d.access_location, x509.UniformResourceIdentifier)
    ]


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


async def read_capped(content: aiohttp.StreamReader, limit: int) -> bytes | None:
    """An HTTP body read whole, or None once it passes `limit` octets (counted as they come: aiohttp's
    read(n) gives only what has arrived so far)."""
    body = bytearray()
    async for chunk in content.iter_chunked(16384):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


class OcspFetcher:
    """Asks a certificate's OCSP responder (RFC 6960, HTTP POST) and caches the answer until its
    nextUpdate (at most `ttl` seconds). Only fetching is ours: pyhanko-certvalidator checks the
    response (signer, freshness, the certificate it is about) as part of the path validation. A
    responder that fails yields None: the CRLs then decide, in the same hard-fail mode."""

    def __init__(self, *, timeout: float = 5.0, ttl: float = 3600.0) -> None:
        self.timeout = timeout
        self.ttl = ttl
        self._cache: dict[tuple[str, int], tuple[float, bytes]] = {}

    async def response(self, cert: x509.Certificate, issuer: x509.Certificate) -> bytes | None:
        import time

        import aiohttp

        urls = [u for u in ocsp_urls(cert) if u.lower().startswith(("http://", "https://"))]
        if not urls:
            return None
        key = (urls[0], cert.serial_number)
        cached = self._cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA256()).build()
        body = request.public_bytes(serialization.Encoding.DER)
        try:
            async with (
                lookups.session(self.timeout) as session,
                session.post(urls[0], data=body, headers={"Content-Type": "application/ocsp-request"}) as answer,
            ):
                if answer.status != 200:
                    return None
                read = await read_capped(answer.content, OCSP_MAX_OCTETS)
                if read is None:
                    return None
            data = read
            parsed = ocsp.load_der_ocsp_response(data)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return None
        if parsed.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            return None
        lifetime = self.ttl
        if parsed.next_update_utc is not None:
            lifetime = min(lifetime, (parsed.next_update_utc - dt.datetime.now(dt.UTC)).total_seconds())
        if lifetime > 0:
            if len(self._cache) >= OCSP_CACHE_MAX:  # one entry a certificate asked about: expired ones go first
                now = time.monotonic()
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
                if len(self._cache) >= OCSP_CACHE_MAX:
                    self._cache.clear()
            self._cache[key] = (time.monotonic() + lifetime, data)
        return data


def path_candidates(cert: x509.Certificate, carried: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """The carried certificates that may issue in a path to `cert`, in their order: CA certificates only
    (RFC 5280 §6.1.4 (k): any other fails as an issuer anyway), each once, at most PATH_MAX_PER_SUBJECT of
    one subject and PATH_MAX_CARRIED in all. A trust-space path has one or two intermediates, and the
    node's configured ones are offered apart: the bounds only cut what a sender or a peer's directory
    piles up to make path building explode."""
    kept: list[x509.Certificate] = []
    per_subject: dict[x509.Name, int] = {}
    for c in carried:
        if len(kept) >= PATH_MAX_CARRIED:
            break
        if c == cert or c in kept or per_subject.get(c.subject, 0) >= PATH_MAX_PER_SUBJECT:
            continue
        try:
            if not c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                continue
        except (x509.ExtensionNotFound, ValueError):
            continue
        per_subject[c.subject] = per_subject.get(c.subject, 0) + 1
        kept.append(c)
    return kept


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
        self._cas = [*anchors, *intermediates]  # issuers an OCSP request may name
        self.ocsp: OcspFetcher | None = None  # set by the node: OCSP for certificates naming a responder
        self.revocation = revocation  # pyhanko-certvalidator's mode; "off" only in the client without CRLs
        self.crls = [asn1_crl.CertificateList.load(c) for c in crls]
        self._paths: dict[bytes, tuple[float, str]] = {}  # key -> (valid until, "" or the failure reason)
        # The trust space's CA certificates: a peer's signature need not carry its chain (openssl's does not)
        self.intermediates = [_asn1(c) for c in intermediates]

    def set_crls(self, crls: Sequence[bytes]) -> None:
        """Replace the revocation lists (DER): checks started after this use them."""
        self.crls = [asn1_crl.CertificateList.load(c) for c in crls]
        self._paths = {}  # outcomes were reached with the old lists

    async def check(
        self,
        cert: x509.Certificate,
        intermediates: Sequence[x509.Certificate],
        addresses: Iterable[str],
        *,
        at: dt.datetime | None = None,
        purpose: str = SIGNER,
    ) -> SignerVerdict:
        """The verdict on one signer of a message sent by `addresses` (envelope sender, From:), or with
        `purpose` RECIPIENT on a certificate to encrypt to for `addresses`."""
        try:
            return await self._check(cert, intermediates, addresses, at, purpose)
        except MALFORMED:
            # The signer's certificate (or one carried with it) cannot even be read: an unknown signature
            # algorithm, a malformed or repeated extension, a malformed name met while building the path.
            # Nothing about it can be trusted (tests/security's fuzz target found these escaping).
            return SignerVerdict(cert, False, "untrusted")

    async def _check(
        self,
        cert: x509.Certificate,
        intermediates: Sequence[x509.Certificate],
        addresses: Iterable[str],
        at: dt.datetime | None,
        purpose: str,
    ) -> SignerVerdict:
        if purpose == RECIPIENT and not isinstance(cert.public_key(), rsa.RSAPublicKey):
            # An EC key is strong but we only do RSA key transport: refused here, not by cms.encrypt for
            # the whole message.
            return SignerVerdict(cert, False, "no-key-transport")
        if not key_is_strong(cert):
            return SignerVerdict(cert, False, "weak-key")
        hash_algorithm = cert.signature_hash_algorithm
        if hash_algorithm is None or hash_algorithm.name in WEAK_HASHES:
            return SignerVerdict(cert, False, "weak-algorithm")
        bound = binding(cert, addresses)
        if bound is None:
            return SignerVerdict(cert, False, "sender-mismatch")
        if not usage_allows(cert, purpose):
            return SignerVerdict(cert, False, "not-for-encryption" if purpose == RECIPIENT else "not-for-signing")
        ocsps: list[asn1_ocsp.OCSPResponse] = []
        if self.ocsp is not None:
            # Only for an issuer of our trust space that signed it: an issuer carried in the message vouches
            # for nothing, and a certificate naming a trust-space CA without its signature (its own key,
            # a copied name) is anyone's; their responder URL is the sender's choice of where we connect.
            issuer = next((c for c in self._cas if c.subject == cert.issuer and _issued_by(cert, c)), None)
            response = await self.ocsp.response(cert, issuer) if issuer is not None else None
            if response is not None:
                ocsps.append(asn1_ocsp.OCSPResponse.load(response))
        reason = await self._path(cert, intermediates, ocsps, at)
        return SignerVerdict(cert, False, reason) if reason else SignerVerdict(cert, True, binding=bound)

    async def _path(
        self,
        cert: x509.Certificate,
        intermediates: Sequence[x509.Certificate],
        ocsps: list[asn1_ocsp.OCSPResponse],
        at: dt.datetime | None,
    ) -> str:
        """Empty when `cert` has a valid path for e-mail protection, else the reason; reused while it holds."""
        intermediates = path_candidates(cert, intermediates)
        key = b""
        if at is None:
            digest = hashes.Hash(hashes.SHA256())
            for part in [cert, *intermediates]:
                digest.update(part.fingerprint(hashes.SHA256()))
            for response in ocsps:
                digest.update(response.dump())
            key = digest.finalize()
            cached = self._paths.get(key)
            if cached is not None and cached[0] > time.time():
                return cached[1]
        paths = self._paths  # replaced by set_crls: an outcome reached with the old lists is not kept
        reason = await self._validate(cert, intermediates, ocsps, at)
        if at is None and paths is self._paths:
            if len(self._paths) >= PATH_CACHE_MAX:
                self._paths.clear()
            self._paths[key] = (self._valid_until(cert, intermediates), reason)
        return reason

    def _valid_until(self, cert: x509.Certificate, intermediates: Sequence[x509.Certificate]) -> float:
        """When a path outcome reached now may no longer hold: a certificate expires or a CRL is due."""
        until = time.time() + PATH_CACHE_TTL
        for c in [cert, *intermediates, *self._cas]:
            until = min(until, c.not_valid_after_utc.timestamp())
        for crl in self.crls:
            next_update = crl["tbs_cert_list"]["next_update"].native
            if next_update is not None:
                until = min(until, next_update.timestamp())
        return until

    async def _validate(
        self,
        cert: x509.Certificate,
        intermediates: Sequence[x509.Certificate],
        ocsps: list[asn1_ocsp.OCSPResponse],
        at: dt.datetime | None,
    ) -> str:
        context = ValidationContext(
            trust_roots=self.anchors,
            ocsps=ocsps,
            other_certs=self.intermediates,
            crls=self.crls,
            moment=at or dt.datetime.now(dt.UTC),
            allow_fetching=False,
            revocation_mode=self.revocation,
            weak_hash_algos=WEAK_HASHES,
        )
        validator = CertificateValidator(_asn1(cert), [_asn1(c) for c in intermediates], validation_context=context)
        try:
            await validator.async_validate_usage(set(), extended_key_usage={"email_protection"})  # type: ignore[no-untyped-call]
        except pv.RevokedError:
            return "revoked"
        except pv.ExpiredError:
            return "expired"
        except pv.NotYetValidError:
            return "not-yet-valid"
        except pv.InsufficientRevinfoError:
            return "no-revocation-info"
        except pv.DisallowedAlgorithmError:
            return "weak-algorithm"
        except pv.InvalidCertificateError:
            # pyhanko-certvalidator also says this of a self-signed certificate it found no path for: no
            # authority vouches for it, whatever its key usage.
            return "untrusted" if cert.issuer == cert.subject else "no-email-protection"
        except (pv.PathBuildingError, pv.PathValidationError):
            return "untrusted"
        return ""
