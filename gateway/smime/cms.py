"""CMS (RFC 5652) for S/MIME at DER level: detached signatures, enveloped and auth-enveloped data.

Implementation notes
- cryptography signs and encrypts PKCS#7 but cannot verify, cannot encrypt or decrypt with RSA-OAEP or
  AES-GCM, and its S/MIME text encoder costs most of the time (domain brief §10). So signatures come from
  its builder as DER (2.5× faster than building them with asn1crypto), and the other structures are
  built and read with asn1crypto, cryptography supplying the primitives (RSA, ECDSA, AES, hashes).
- Pure functions on bytes, no I/O: callers run them in a process pool (they cost milliseconds of CPU).
- Signing: SHA-256, signed attributes (contentType, signingTime, messageDigest), the signer's certificate
  and chain included, detached (the content travels in the multipart/signed, RFC 8551 §3.5.3).
- Verification checks each SignerInfo on its own (RFC 5652 §5.6): digest algorithm allowed, the
  messageDigest attribute equal to the content's digest, the signature over the DER of the signed
  attributes *as received* (re-encoding could "repair" them), by the certificate the sid names. Path
  validation, revocation and the sender binding are the caller's (gateway/smime/trust.py).
- Encryption: one random content key, AES-256-CBC (EnvelopedData) or AES-256-GCM (AuthEnvelopedData,
  RFC 5083/5084); per recipient RSA-OAEP with SHA-256 (RFC 8017; RFC 4055 parameters) or PKCS#1 v1.5.
- Decryption accepts RSA PKCS#1 v1.5 and OAEP with SHA-1/SHA-256/384/512; AES-128/192/256 in CBC and
  GCM. A key-transport failure does not raise at once: a random key is used instead and the content
  decryption fails like any corrupt message (no padding oracle, RFC 3218 §2.3.2).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import pkcs7

from gateway.errors import MssgwError

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

# Digests a signature may use (domain brief §7: no MD5, no SHA-1).
STRONG_DIGESTS: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
OAEP_DIGESTS: dict[str, Callable[[], hashes.HashAlgorithm]] = {"sha1": hashes.SHA1, **STRONG_DIGESTS}
CBC = {"aes128_cbc": 16, "aes192_cbc": 24, "aes256_cbc": 32}
GCM = {"aes128_gcm": 16, "aes192_gcm": 24, "aes256_gcm": 32}


class CmsError(MssgwError):
    """A CMS structure that cannot be used; `reason` is the machine-readable cause (audit, SMTP reply)."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason = reason

    def __reduce__(self) -> tuple[type[CmsError], tuple[str, str]]:  # crosses the process pool intact
        return type(self), (self.reason, str(self))


MALFORMED = (ValueError, TypeError, KeyError, x509.InvalidVersion, x509.DuplicateExtension, UnsupportedAlgorithm)
"""What parsing a peer's structure can raise, lazily and deep inside asn1crypto and cryptography (a field,
a carried certificate, an unknown algorithm): each entry point turns it into CmsError("malformed") —
found by tests/security's fuzz target, where these reached the SMTP reply as '500 Error: ...'."""


class GCMParameters(core.Sequence):  # type: ignore[misc]
    """RFC 5084 §3.2: `GCMParameters ::= SEQUENCE { aes-nonce OCTET STRING, aes-ICVlen INTEGER DEFAULT 12 }`
    (asn1crypto knows the GCM algorithm identifiers but not their parameters)."""

    _fields: ClassVar[list[Any]] = [("aes_nonce", core.OctetString), ("aes_icvlen", core.Integer, {"default": 12})]


# -- signing -------------------------------------------------------------------------------------


def _asn1_cert(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def _same_name(a: asn1_x509.Name, b: asn1_x509.Name) -> bool:
    """RFC 5280 §7.1 name equality; identical encodings first (the usual case: the sender copied the
    issuer from the certificate), as asn1crypto's comparison string-preps every attribute, slowly."""
    return bool(a.dump() == b.dump() or a == b)


def sign_detached(
    content: bytes,
    certificate: x509.Certificate,
    key: PrivateKey,
    chain: Sequence[x509.Certificate] = (),
) -> bytes:
    """DER ContentInfo(SignedData) over `content` (the exact octets of the signed MIME entity), detached:
    SHA-256, the signed attributes contentType, signingTime and messageDigest, the chain included.

    cryptography's builder, in Rust: 0.75 ms a signature where building the same structure with
    asn1crypto took 1.9 ms (0.7 of them the RSA operation). The octets are those asn1crypto gave but
    for the signature algorithm's OID: rsaEncryption, as openssl writes it, instead of
    sha256WithRSAEncryption (RFC 5754 §3.2 allows both). `Binary`: the octets are signed as they are."""
    builder = pkcs7.PKCS7SignatureBuilder().set_data(content).add_signer(certificate, key, hashes.SHA256())
    for extra in chain:
        builder = builder.add_certificate(extra)
    return builder.sign(serialization.Encoding.DER, _SIGN_OPTIONS)


_SIGN_OPTIONS = [
    pkcs7.PKCS7Options.DetachedSignature,
    pkcs7.PKCS7Options.Binary,
    pkcs7.PKCS7Options.NoCapabilities,  # as before: no SMIMECapabilities attribute
]


# -- verifying -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignerCheck:
    """One SignerInfo's cryptographic check (its certificate's validity is judged elsewhere)."""

    certificate: x509.Certificate | None  # the certificate the sid names, when the message carries it
    ok: bool
    reason: str = ""  # when not ok: no-certificate | weak-algorithm | bad-digest | bad-signature | malformed
    signing_time: dt.datetime | None = None


@dataclass(frozen=True)
class Signed:
    signers: list[SignerCheck]
    certificates: list[x509.Certificate]  # every certificate the message carries (intermediates for paths)
    content: bytes  # the signed content (the detached one given, or the encapsulated one)


def load_signed(der: bytes) -> cms.SignedData:
    try:
        info = cms.ContentInfo.load(der, strict=True)
        if info["content_type"].native != "signed_data":
            raise CmsError("unsigned", f"not signed data but {info['content_type'].native}")
        signed = info["content"]
        signed["signer_infos"]
        signed["encap_content_info"]
    except CmsError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise CmsError("malformed", f"malformed CMS signed data: {exc}") from None
    assert isinstance(signed, cms.SignedData)
    return signed


def verify(der: bytes, content: bytes | None = None) -> Signed:
    """Check every signature of a DER SignedData over `content` (detached) or its encapsulated content."""
    signed = load_signed(der)
    try:
        encapsulated = signed["encap_content_info"]["content"]
        if content is None:
            if encapsulated.native is None:
                raise CmsError("malformed", "detached signature without its content")
            content = bytes(encapsulated.native)
        carried = [c.chosen for c in signed["certificates"] if c.name == "certificate"]
        certs = [x509.load_der_x509_certificate(c.dump()) for c in carried]
        e_type = signed["encap_content_info"]["content_type"].native
        infos = list(signed["signer_infos"])
        checks = [_check_signer(si, carried, certs, content, e_type) for si in infos]
    except MALFORMED as exc:
        raise CmsError("malformed", f"malformed CMS signed data: {type(exc).__name__}") from None
    return Signed(checks, certs, content)


def _find(
    sid: cms.SignerIdentifier, carried: list[asn1_x509.Certificate], certs: list[x509.Certificate]
) -> x509.Certificate | None:
    for raw, cert in zip(carried, certs, strict=True):
        if sid.name == "issuer_and_serial_number":
            wanted = sid.chosen  # the serial from cryptography's parse first: asn1crypto's is slower
            if cert.serial_number == wanted["serial_number"].native and _same_name(raw.issuer, wanted["issuer"]):
                return cert
        elif raw.key_identifier is not None and raw.key_identifier == sid.chosen.native:
            return cert
    return None


def _signing_time(attrs: cms.CMSAttributes) -> dt.datetime | None:
    for attr in attrs:
        if attr["type"].native == "signing_time":
            value = attr["values"][0].native
            return value if isinstance(value, dt.datetime) else None
    return None


def _check_signer(
    si: cms.SignerInfo,
    carried: list[asn1_x509.Certificate],
    certs: list[x509.Certificate],
    content: bytes,
    e_type: str,
) -> SignerCheck:
    try:
        cert = _find(si["sid"], carried, certs)
        if cert is None:
            return SignerCheck(None, False, "no-certificate")
        digest_name = si["digest_algorithm"]["algorithm"].native
        if digest_name not in STRONG_DIGESTS:
            return SignerCheck(cert, False, "weak-algorithm")
        digest = hashlib.new(digest_name, content).digest()
        attrs = si["signed_attrs"]
        when = None
        if attrs.native is not None and len(attrs):
            kinds = {a["type"].native: a["values"] for a in attrs}
            md = kinds.get("message_digest")
            ct = kinds.get("content_type")
            if md is None or ct is None or len(md) != 1 or ct[0].native != e_type:
                return SignerCheck(cert, False, "malformed")
            if md[0].native != digest:
                return SignerCheck(cert, False, "bad-digest")
            data = b"\x31" + attrs.dump()[1:]  # the received [0] IMPLICIT attributes as the SET OF signed
            when = _signing_time(attrs)
        else:
            data = content
        algorithm = si["signature_algorithm"]
        name = algorithm["algorithm"].native
        if name in ("md5_rsa", "sha1_rsa", "sha1_ecdsa", "md5", "sha1", "sha1_dsa"):
            return SignerCheck(cert, False, "weak-algorithm")
        if name == "rsassa_pss":
            pss = algorithm["parameters"]
            pss_hash = pss["hash_algorithm"]["algorithm"].native
            if pss_hash not in STRONG_DIGESTS:
                return SignerCheck(cert, False, "weak-algorithm")
            h = STRONG_DIGESTS[pss_hash]()
            pad: asym.AsymmetricPadding = asym.PSS(asym.MGF1(h), pss["salt_length"].native)
        else:
            hash_name = algorithm.hash_algo if name not in ("rsassa_pkcs1v15", "rsa") else digest_name
            if hash_name not in STRONG_DIGESTS:
                return SignerCheck(cert, False, "weak-algorithm")
            h = STRONG_DIGESTS[hash_name]()
            pad = asym.PKCS1v15()
        public = cert.public_key()
        signature = si["signature"].native
        try:
            if isinstance(public, rsa.RSAPublicKey):
                public.verify(signature, data, pad, h)
            elif isinstance(public, ec.EllipticCurvePublicKey):
                public.verify(signature, data, ec.ECDSA(h))
            else:
                return SignerCheck(cert, False, "weak-algorithm")
        except InvalidSignature:
            return SignerCheck(cert, False, "bad-signature")
        return SignerCheck(cert, True, signing_time=when)
    except (ValueError, TypeError, KeyError, NotImplementedError):
        return SignerCheck(None, False, "malformed")


# -- encrypting ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipient:
    certificate: x509.Certificate
    oaep: bool = True  # RSA-OAEP with SHA-256; False: PKCS#1 v1.5 (older peers)


# The envelope is written as DER directly: building it through asn1crypto's dict constructors cost
# ~6 ms per recipient entry (deep copies and re-tagging, bench/smime.py --profile) for a structure of
# fixed shape. Only constants and the certificates' own issuer octets go in; decrypt() and openssl read
# it back in the tests.


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + content


def _seq(*parts: bytes) -> bytes:
    return _tlv(0x30, b"".join(parts))


def _integer(n: int) -> bytes:
    return _tlv(0x02, n.to_bytes(n.bit_length() // 8 + 1, "big", signed=True))


def _octets(data: bytes) -> bytes:
    return _tlv(0x04, data)


def _oid(dotted: str) -> bytes:
    return bytes(core.ObjectIdentifier(dotted).dump())


OID_DATA = _oid("1.2.840.113549.1.7.1")
OID_ENVELOPED = _oid("1.2.840.113549.1.7.3")
OID_AUTH_ENVELOPED = _oid("1.2.840.113549.1.9.16.1.23")
OID_AES256_CBC = _oid("2.16.840.1.101.3.4.1.42")
OID_AES256_GCM = _oid("2.16.840.1.101.3.4.1.46")
OAEP_SHA256 = bytes(
    cms.KeyEncryptionAlgorithm(
        {
            "algorithm": "rsaes_oaep",
            "parameters": {
                "hash_algorithm": {"algorithm": "sha256"},
                "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha256"}},
            },
        }
    ).dump()
)
RSA_PKCS1 = bytes(cms.KeyEncryptionAlgorithm({"algorithm": "rsaes_pkcs1v15"}).dump())
# The key transports we write (their AlgorithmIdentifier's DER -> padding): encrypt picks from it, and
# decrypt recognises them by their octets without parsing the OAEP parameters.
_KNOWN_TRANSPORTS: dict[bytes, Callable[[], asym.AsymmetricPadding]] = {
    OAEP_SHA256: lambda: asym.OAEP(asym.MGF1(hashes.SHA256()), hashes.SHA256(), None),
    RSA_PKCS1: asym.PKCS1v15,
}


def _key_transport(recipient: Recipient, cek: bytes) -> bytes:
    """RFC 5652 §6.2.1 KeyTransRecipientInfo, version 0, rid = issuerAndSerialNumber."""
    public = recipient.certificate.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        raise CmsError("weak-algorithm", "key transport needs an RSA recipient certificate")
    algorithm = OAEP_SHA256 if recipient.oaep else RSA_PKCS1
    encrypted = public.encrypt(cek, _KNOWN_TRANSPORTS[algorithm]())
    rid = _issuer_and_serial(recipient.certificate.public_bytes(serialization.Encoding.DER))
    return _seq(_integer(0), rid, algorithm, _octets(encrypted))


@functools.lru_cache(maxsize=1024)
def _issuer_and_serial(certificate: bytes) -> bytes:
    """IssuerAndSerialNumber's DER for a certificate, with the issuer's octets as issued. Cached: parsing
    the certificate with asn1crypto was most of a key-transport entry's cost, and a node's recipients
    recur (the sender's own copy is in every message)."""
    cert = asn1_x509.Certificate.load(certificate)
    return _seq(bytes(cert.issuer.dump()), _integer(cert.serial_number))


def encrypt(content: bytes, recipients: Sequence[Recipient], *, gcm: bool = False) -> bytes:
    """DER ContentInfo: EnvelopedData (AES-256-CBC) or AuthEnvelopedData (AES-256-GCM) for `recipients`."""
    if not recipients:
        raise CmsError("no-recipient", "no recipient certificate to encrypt for")
    cek = os.urandom(32)
    infos = _tlv(0x31, b"".join(sorted(_key_transport(r, cek) for r in recipients)))  # DER SET OF: sorted
    if gcm:
        nonce = os.urandom(12)
        sealed = AESGCM(cek).encrypt(nonce, content, None)
        params = bytes(GCMParameters({"aes_nonce": nonce, "aes_icvlen": 16}).dump())
        info = _seq(OID_DATA, _seq(OID_AES256_GCM, params), _tlv(0x80, sealed[:-16]))
        auth = _seq(_integer(0), infos, info, _octets(sealed[-16:]))  # RFC 5083 §2.1
        return _seq(OID_AUTH_ENVELOPED, _tlv(0xA0, auth))
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padder.update(content) + padder.finalize()) + encryptor.finalize()
    info = _seq(OID_DATA, _seq(OID_AES256_CBC, _octets(iv)), _tlv(0x80, ciphertext))
    return _seq(OID_ENVELOPED, _tlv(0xA0, _seq(_integer(0), infos, info)))


# -- decrypting ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """What an enveloped message says about itself before anyone decrypts it."""

    kind: str  # enveloped_data | authenticated_enveloped_data
    content_algorithm: str  # aes256_cbc, aes128_gcm, ...
    recipients: list[tuple[str, int] | bytes]  # (issuer DN, serial) or subject key identifier, per ktri


def _load_enveloped(der: bytes) -> tuple[str, cms.EnvelopedData | cms.AuthEnvelopedData]:
    try:
        info = cms.ContentInfo.load(der, strict=True)
        kind = info["content_type"].native
        if kind not in ("enveloped_data", "authenticated_enveloped_data"):
            raise CmsError("not-encrypted", f"not enveloped data but {kind}")
        body = info["content"]
        body["recipient_infos"]
    except CmsError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise CmsError("malformed", f"malformed CMS enveloped data: {exc}") from None
    return kind, body


def describe(der: bytes) -> Envelope:
    try:
        return _describe(der)
    except MALFORMED as exc:
        raise CmsError("malformed", f"malformed CMS enveloped data: {type(exc).__name__}") from None


def _describe(der: bytes) -> Envelope:
    kind, body = _load_enveloped(der)
    content_info = body["encrypted_content_info" if kind == "enveloped_data" else "auth_encrypted_content_info"]
    out: list[tuple[str, int] | bytes] = []
    for ri in body["recipient_infos"]:
        if ri.name != "ktri":
            continue
        rid = ri.chosen["rid"]
        if rid.name == "issuer_and_serial_number":
            out.append((rid.chosen["issuer"].human_friendly, rid.chosen["serial_number"].native))
        else:
            out.append(rid.chosen.native)
    return Envelope(kind, content_info["content_encryption_algorithm"]["algorithm"].native, out)


def addressed_to(der: bytes, certificates: Sequence[x509.Certificate]) -> list[bool]:
    """For each certificate, whether the enveloped data has a key-transport entry for it (no key needed:
    the receiver picks its decryption key, and checks every local recipient has an entry)."""
    _, body = _load_enveloped(der)
    try:
        rids = [ri.chosen["rid"] for ri in body["recipient_infos"] if ri.name == "ktri"]
        return [any(_is_for(rid, cert) for rid in rids) for cert in certificates]
    except MALFORMED as exc:  # a recipient identifier parsed lazily turned out malformed
        raise CmsError("malformed", f"malformed CMS enveloped data: {type(exc).__name__}") from None


def _is_for(rid: cms.RecipientIdentifier, cert: x509.Certificate) -> bool:
    if rid.name == "issuer_and_serial_number":
        # The serial first, from cryptography's parse: most entries are for someone else, and asn1crypto's
        # parse of our certificate was a tenth of opening a message (three entries per message).
        if rid.chosen["serial_number"].native != cert.serial_number:
            return False
        issuer = rid.chosen["issuer"]
        return bool(issuer.dump() == cert.issuer.public_bytes() or _same_name(issuer, _asn1_cert(cert).issuer))
    try:
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return False
    return bool(rid.chosen.native == ski)


def _unwrap_key(ktri: cms.KeyTransRecipientInfo, key: rsa.RSAPrivateKey, size: int) -> bytes:
    algorithm = ktri["key_encryption_algorithm"]
    encrypted = ktri["encrypted_key"].native
    known = _KNOWN_TRANSPORTS.get(algorithm.dump())
    pad = known() if known is not None else _transport_padding(algorithm)
    try:
        cek = key.decrypt(encrypted, pad)
    except ValueError:
        cek = b""
    # No early failure (a padding oracle): a wrong key makes the content fail to decrypt like corruption.
    return cek if len(cek) == size else os.urandom(size)


def _transport_padding(algorithm: cms.KeyEncryptionAlgorithm) -> asym.AsymmetricPadding:
    name = algorithm["algorithm"].native
    if name == "rsaes_oaep":
        params = algorithm["parameters"]
        digest = params["hash_algorithm"]["algorithm"].native
        mgf_digest = params["mask_gen_algorithm"]["parameters"]["algorithm"].native
        if digest not in OAEP_DIGESTS or mgf_digest not in OAEP_DIGESTS:
            raise CmsError("weak-algorithm", f"unsupported OAEP digest {digest}")
        label = params["p_source_algorithm"]["parameters"].native or None
        return asym.OAEP(asym.MGF1(OAEP_DIGESTS[mgf_digest]()), OAEP_DIGESTS[digest](), label)
    if name in ("rsaes_pkcs1v15", "rsa"):
        return asym.PKCS1v15()
    raise CmsError("weak-algorithm", f"unsupported key transport {name}")


def decrypt(der: bytes, certificate: x509.Certificate, key: PrivateKey) -> bytes:
    """The content of an enveloped (or auth-enveloped) message, for the holder of `certificate` and `key`."""
    try:
        return _decrypt(der, certificate, key)
    except MALFORMED as exc:  # a field parsed lazily turned out malformed
        raise CmsError("malformed", f"malformed CMS enveloped data: {exc}") from None


def _decrypt(der: bytes, certificate: x509.Certificate, key: PrivateKey) -> bytes:
    kind, body = _load_enveloped(der)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CmsError("weak-algorithm", "only RSA key transport is supported")
    mine = [ri.chosen for ri in body["recipient_infos"] if ri.name == "ktri" and _is_for(ri.chosen["rid"], certificate)]
    if not mine:
        raise CmsError("not-for-us", "no recipient entry for our certificate")
    content_info = body["encrypted_content_info" if kind == "enveloped_data" else "auth_encrypted_content_info"]
    algorithm = content_info["content_encryption_algorithm"]
    name = algorithm["algorithm"].native
    ciphertext = content_info["encrypted_content"].native or b""
    if kind == "enveloped_data":
        if name not in CBC:
            raise CmsError("weak-algorithm", f"unsupported content encryption {name}")
        cek = _unwrap_key(mine[0], key, CBC[name])
        iv = algorithm["parameters"].native
        if not isinstance(iv, bytes) or len(iv) != 16 or not ciphertext or len(ciphertext) % 16:
            raise CmsError("malformed", "bad AES-CBC parameters or ciphertext length")
        decryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).decryptor()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        try:
            return unpadder.update(padded) + unpadder.finalize()
        except ValueError:
            raise CmsError("cannot-decrypt", "the message cannot be decrypted with our key") from None
    if name not in GCM:
        raise CmsError("weak-algorithm", f"unsupported content encryption {name}")
    cek = _unwrap_key(mine[0], key, GCM[name])
    try:
        params = algorithm["parameters"].parse(GCMParameters)
        nonce, icv_len = params["aes_nonce"].native, params["aes_icvlen"].native
    except (ValueError, TypeError) as exc:
        raise CmsError("malformed", f"bad AES-GCM parameters: {exc}") from None
    mac = body["mac"].native
    if len(mac) != icv_len or icv_len not in (12, 13, 14, 15, 16):
        raise CmsError("malformed", "bad AES-GCM tag length")
    aad = None
    if body["auth_attrs"].native is not None:
        aad = b"\x31" + body["auth_attrs"].dump()[1:]  # RFC 5083 §2.2: the DER SET OF authAttrs
    try:
        if icv_len == 16:
            return AESGCM(cek).decrypt(nonce, ciphertext + mac, aad)
        decryptor = Cipher(algorithms.AES(cek), modes.GCM(nonce, mac, min_tag_length=icv_len)).decryptor()
        if aad:
            decryptor.authenticate_additional_data(aad)
        return decryptor.update(ciphertext) + decryptor.finalize()
    except InvalidTag:
        raise CmsError("cannot-decrypt", "the message cannot be decrypted with our key") from None
