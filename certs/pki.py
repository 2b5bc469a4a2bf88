"""Implementation notes
--------------------
A private, IGC-Santé-like PKI for development and tests of the trust space.

Hierarchy (RSA, SHA-256; RFC 5280 §4.2.1.9 basicConstraints, §4.2.1.3 keyUsage):

* ``root``: "AC RACINE <label>", self-signed, CA with pathLenConstraint 1, keyCertSign + cRLSign,
  20 years;
* ``organisations``: "AC ORGANISATIONS <label>", CA with pathLenConstraint 0, 10 years (capped by the
  root), issues the ``server``, ``app`` and ``domain`` profiles;
* ``personnes``: "AC PERSONNES <label>", same constraints, issues the ``address`` profile.

End-entity profiles (:mod:`certs.profiles`), 3 years capped by the issuer's notAfter, basicConstraints
CA:FALSE, keyUsage digitalSignature + keyEncipherment (§4.2.1.3):

* ``server``: CN = first host, subjectAltName dNSName / iPAddress per host (§4.2.1.6),
  extendedKeyUsage serverAuth + clientAuth (§4.2.1.12): one certificate for both ends of the
  mutual TLS between operators;
* ``app``: applicative mailbox, CN = SAN rfc822Name = the mailbox address, clientAuth;
* ``address``: address-bound S/MIME, CN = SAN rfc822Name = the address (domain lower-cased),
  emailProtection, no emailAddress attribute in the subject DN (§4.1.2.6 deprecates it);
* ``domain``: domain-bound S/MIME (an operator's seal for every address of a mail domain, as Direct
  allows), CN = SAN dNSName = the domain, emailProtection.

Every certificate has subject and authority key identifiers (§4.2.1.2, §4.2.1.1); every certificate
but the root has a CRL distribution point (§4.2.1.13) ``{crl_base_url}/{issuing ca}.crl``.
notBefore is backdated by :data:`NOT_BEFORE_BACKDATE` (never before the issuer's notBefore) to absorb
clock skew between nodes.  CRLs (§5) carry the authority key identifier (§5.2.1), a CRL number
(§5.2.3) and a reason code per entry (§5.3.1, omitted for ``unspecified`` as §5.3.1 recommends).

Invariants:

* private keys are created with mode 0600 from the first byte (``os.open`` with
  ``O_CREAT | O_EXCL | O_WRONLY``, never a chmod afterwards), PEM PKCS#8, encrypted with
  ``BestAvailableEncryption`` when a passphrase is given; the PKI directory is created 0700;
* ``index.json`` and ``state.json`` are written atomically (temporary file, fsync, ``os.replace``,
  fsync of the directory); mutations hold an exclusive ``flock`` on ``<pki>/.lock`` and re-read the
  index, so several processes can share one PKI directory;
* serial numbers are random (``x509.random_serial_number``, 159 bits) and unique in the index;
* CRL numbers are strictly increasing per CA: the new numbers are saved in ``state.json`` before the
  CRLs are written, so a crash can leave a gap, never a repeat;
* ``state.json`` is written last by :meth:`TrustSpacePKI.create`: it marks a complete PKI;
* no secret (passphrase, key) ever appears in an exception message or a repr; nothing is printed or
  logged.

Layout of a PKI directory::

    state.json  index.json  .lock
    root/{cert,key}.pem  organisations/{cert,key}.pem  personnes/{cert,key}.pem
    crl/{root,organisations,personnes}.crl (DER)  crl/{root,organisations,personnes}.pem
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from certs.profiles import (
    CA_NAMES,
    END_ENTITY_PROFILES,
    Profile,
    ca_extensions,
    ca_subject,
    end_entity_extensions,
    end_entity_subject,
    normalize_address,
    normalize_hosts,
    validate_label,
)

__all__ = [
    "CA_NAMES",
    "KEY_SIZES",
    "NOT_BEFORE_BACKDATE",
    "P12_KDF_ROUNDS",
    "REASON_NAMES",
    "IndexEntry",
    "Issued",
    "PKIError",
    "PrivateKey",
    "Profile",
    "TrustSpacePKI",
    "parse_reason",
    "write_bundle",
]

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

KEY_SIZES: Final = (2048, 3072, 4096)
ROOT_VALIDITY_YEARS: Final = 20
INTERMEDIATE_VALIDITY_YEARS: Final = 10
END_ENTITY_VALIDITY_YEARS: Final = 3
NOT_BEFORE_BACKDATE: Final = timedelta(minutes=5)
DEFAULT_CRL_NEXT_UPDATE: Final = timedelta(days=7)
P12_KDF_ROUNDS: Final = 100_000
STATE_VERSION: Final = 1
INDEX_VERSION: Final = 1

# RFC 5280 §5.3.1 names, in the order of the ASN.1 enumeration (7 is unused).
REASON_NAMES: Final = (
    "unspecified",
    "keyCompromise",
    "cACompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "certificateHold",
    "privilegeWithdrawn",
    "aACompromise",
    "removeFromCRL",
)
_REASONS: Final = {flag.value.lower(): flag for flag in x509.ReasonFlags}


class PKIError(Exception):
    """A PKI operation was refused or the PKI directory is unusable (one-line reason)."""


@dataclass(frozen=True)
class Issued:
    """A freshly issued certificate, its private key and its chain (issuer first, root excluded)."""

    certificate: x509.Certificate
    key: PrivateKey = field(repr=False)
    chain: tuple[x509.Certificate, ...]

    @property
    def serial(self) -> str:
        """Serial number as lower-case hexadecimal, as in the index."""
        return format(self.certificate.serial_number, "x")


@dataclass(frozen=True)
class IndexEntry:
    """One certificate of ``index.json``."""

    serial: str
    ca: str
    profile: Profile
    subject: str
    sans: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    fingerprint_sha256: str
    revoked_at: datetime | None = None
    revocation_reason: str | None = None

    @property
    def serial_number(self) -> int:
        return int(self.serial, 16)

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def reason(self) -> x509.ReasonFlags | None:
        return None if self.revocation_reason is None else x509.ReasonFlags(self.revocation_reason)

    def to_json(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "ca": self.ca,
            "profile": self.profile.value,
            "subject": self.subject,
            "sans": list(self.sans),
            "not_before": _iso(self.not_before),
            "not_after": _iso(self.not_after),
            "fingerprint_sha256": self.fingerprint_sha256,
            "revoked_at": None if self.revoked_at is None else _iso(self.revoked_at),
            "revocation_reason": self.revocation_reason,
        }

    @classmethod
    def from_json(cls, data: Any) -> IndexEntry:
        try:
            revoked_at = data["revoked_at"]
            reason = data["revocation_reason"]
            entry = cls(
                serial=_str(data["serial"]),
                ca=_str(data["ca"]),
                profile=Profile(data["profile"]),
                subject=_str(data["subject"]),
                sans=tuple(_str(san) for san in data["sans"]),
                not_before=_parse_iso(data["not_before"]),
                not_after=_parse_iso(data["not_after"]),
                fingerprint_sha256=_str(data["fingerprint_sha256"]),
                revoked_at=None if revoked_at is None else _parse_iso(revoked_at),
                revocation_reason=None if reason is None else x509.ReasonFlags(reason).value,
            )
            int(entry.serial, 16)
        except (KeyError, TypeError, ValueError) as exc:
            raise PKIError(f"invalid index entry: {type(exc).__name__}: {exc}") from None
        if entry.ca not in CA_NAMES:
            raise PKIError(f"invalid index entry: unknown CA {entry.ca!r}")
        return entry

    @classmethod
    def for_certificate(cls, certificate: x509.Certificate, ca: str, profile: Profile) -> IndexEntry:
        return cls(
            serial=format(certificate.serial_number, "x"),
            ca=ca,
            profile=profile,
            subject=certificate.subject.rfc4514_string(),
            sans=_san_strings(certificate),
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            fingerprint_sha256=certificate.fingerprint(hashes.SHA256()).hex(),
        )


# --------------------------------------------------------------------------- small helpers


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: Any) -> datetime:
    moment = datetime.fromisoformat(_str(text))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without time zone: {text!r}")
    return moment.astimezone(UTC)


def _utc(now: datetime | None) -> datetime:
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    return now.astimezone(UTC).replace(microsecond=0)


def _add_years(moment: datetime, years: int) -> datetime:
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:  # 29 February
        return moment.replace(year=moment.year + years, day=28)


def _parse_serial(serial: int | str) -> int:
    if isinstance(serial, bool):
        raise TypeError("serial must be an int or a hexadecimal string")
    if isinstance(serial, int):
        number = serial
    elif isinstance(serial, str):
        text = serial.strip().replace(":", "").lower().removeprefix("0x")
        try:
            number = int(text, 16)
        except ValueError:
            number = -1
    else:
        raise TypeError("serial must be an int or a hexadecimal string")
    if number <= 0:
        raise ValueError(f"invalid serial number {serial!r}: expected a positive integer or hexadecimal string")
    return number


def _san_strings(certificate: x509.Certificate) -> tuple[str, ...]:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    result: list[str] = []
    for name in san:
        if isinstance(name, x509.DNSName):
            result.append(f"DNS:{name.value}")
        elif isinstance(name, x509.IPAddress):
            result.append(f"IP:{name.value}")
        elif isinstance(name, x509.RFC822Name):
            result.append(f"email:{name.value}")
        else:
            result.append(f"{type(name).__name__}:{name.value}")
    return tuple(result)


def _check_passphrase(passphrase: bytes | None, what: str = "passphrase") -> None:
    if passphrase is None:
        return
    if not isinstance(passphrase, bytes):
        raise TypeError(f"{what} must be bytes")
    if not passphrase:
        raise ValueError(f"{what} must not be empty")


def _validate_crl_base_url(url: str) -> str:
    if not url.isascii() or any(c.isspace() for c in url):
        raise ValueError("crl_base_url must be an ASCII URL without spaces")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"crl_base_url must be an absolute http:// or https:// URL: {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"crl_base_url must not have a query or a fragment: {url!r}")
    return url.rstrip("/")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes, *, mode: int, replace_existing: bool) -> None:
    """Write ``data`` to ``path`` with ``mode`` from creation.

    ``replace_existing`` False: ``O_EXCL`` on the final path (fails if it exists).
    ``replace_existing`` True: ``O_EXCL`` temporary file, fsync, ``os.replace`` (atomic).
    """
    target = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp") if replace_existing else path
    fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if replace_existing:
            os.replace(target, path)
    except BaseException:
        with contextlib.suppress(OSError):
            target.unlink()
        raise
    _fsync_dir(path.parent)


def _write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    _write_file(path, text.encode("utf-8"), mode=0o644, replace_existing=True)


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: PrivateKey, passphrase: bytes | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption() if passphrase is None else serialization.BestAvailableEncryption(passphrase)
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def _spki(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _ski(certificate: x509.Certificate) -> x509.SubjectKeyIdentifier:
    return certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value


def _common_name(certificate: x509.Certificate) -> str:
    attributes = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attributes[0].value if attributes else ""
    return value if isinstance(value, str) else value.decode("utf-8")


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _build_certificate(
    *,
    subject: x509.Name,
    issuer: x509.Name,
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    serial: int,
    not_before: datetime,
    not_after: datetime,
    extensions: Sequence[tuple[x509.ExtensionType, bool]],
    signing_key: PrivateKey,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signing_key, hashes.SHA256())


def _new_serial(entries: Sequence[IndexEntry], taken: set[int] | None = None) -> int:
    used = {entry.serial_number for entry in entries} | (taken or set())
    while True:
        serial = x509.random_serial_number()
        if serial not in used:
            return serial


def _sign_crl(
    ca_certificate: x509.Certificate,
    ca_key: PrivateKey,
    revoked: Sequence[IndexEntry],
    *,
    number: int,
    now: datetime,
    next_update: timedelta,
) -> x509.CertificateRevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_certificate.subject)
        .last_update(now)
        .next_update(now + next_update)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(_ski(ca_certificate)), False)
        .add_extension(x509.CRLNumber(number), False)
    )
    for entry in revoked:
        assert entry.revoked_at is not None
        revoked_builder = (
            x509.RevokedCertificateBuilder().serial_number(entry.serial_number).revocation_date(entry.revoked_at)
        )
        reason = entry.reason
        if reason is not None and reason is not x509.ReasonFlags.unspecified:
            revoked_builder = revoked_builder.add_extension(x509.CRLReason(reason), False)
        builder = builder.add_revoked_certificate(revoked_builder.build())
    return builder.sign(ca_key, hashes.SHA256())


def _write_crl(directory: Path, ca_name: str, crl: x509.CertificateRevocationList) -> Path:
    crl_dir = directory / "crl"
    crl_dir.mkdir(mode=0o755, exist_ok=True)
    der_path = crl_dir / f"{ca_name}.crl"
    _write_file(der_path, crl.public_bytes(serialization.Encoding.DER), mode=0o644, replace_existing=True)
    _write_file(
        crl_dir / f"{ca_name}.pem",
        crl.public_bytes(serialization.Encoding.PEM),
        mode=0o644,
        replace_existing=True,
    )
    return der_path


# --------------------------------------------------------------------------- the PKI


class TrustSpacePKI:
    """A PKI directory: root, ORGANISATIONS and PERSONNES CAs, index and CRLs.

    Opening reads ``state.json`` and the CA certificates; CA private keys are decrypted on first
    use (signing) with the passphrase given here and kept in memory for the object's lifetime.
    """

    def __init__(self, path: Path | str, passphrase: bytes | None = None) -> None:
        _check_passphrase(passphrase)
        self._path = Path(path)
        self._passphrase = passphrase
        state = self._read_state()
        self._label: str = state["label"]
        self._crl_base_url: str = state["crl_base_url"]
        self._key_size: int = state["key_size"]
        self._certificates: dict[str, x509.Certificate] = {}
        for name in CA_NAMES:
            cert_path = self._path / name / "cert.pem"
            try:
                self._certificates[name] = x509.load_pem_x509_certificate(cert_path.read_bytes())
            except FileNotFoundError:
                raise PKIError(f"PKI at {self._path} is incomplete: missing {name}/cert.pem") from None
            except ValueError:
                raise PKIError(f"PKI at {self._path} is corrupted: invalid {name}/cert.pem") from None
        self._keys: dict[str, PrivateKey] = {}

    def __repr__(self) -> str:
        return f"TrustSpacePKI(path={str(self._path)!r}, label={self._label!r})"

    # ----------------------------------------------------------------- creation

    @staticmethod
    def exists(path: Path | str) -> bool:
        """True when ``path`` holds a complete PKI (its ``state.json``)."""
        return (Path(path) / "state.json").is_file()

    @classmethod
    def create(
        cls,
        path: Path | str,
        *,
        label: str,
        crl_base_url: str,
        key_size: int = 2048,
        passphrase: bytes | None = None,
        now: datetime | None = None,
    ) -> TrustSpacePKI:
        """Create the three CAs, the index, empty CRLs (number 1) and ``state.json`` under ``path``.

        ``path`` may exist if it is an empty directory (or holds no PKI file); a PKI is never
        overwritten.
        """
        path = Path(path)
        label = validate_label(label)
        crl_base_url = _validate_crl_base_url(crl_base_url)
        if isinstance(key_size, bool) or key_size not in KEY_SIZES:
            raise ValueError(f"key_size must be one of {', '.join(map(str, KEY_SIZES))}, not {key_size!r}")
        _check_passphrase(passphrase)
        moment = _utc(now)
        if path.exists() and not path.is_dir():
            raise PKIError(f"not a directory: {path}")
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        with _locked(path):
            if cls.exists(path):
                raise PKIError(f"PKI already exists at {path}")
            leftovers = [name for name in (*CA_NAMES, "crl", "index.json") if (path / name).exists()]
            if leftovers:
                raise PKIError(f"{path} holds files of an incomplete PKI ({', '.join(leftovers)}); remove them first")
            certificates, keys, entries = cls._make_hierarchy(label, crl_base_url, key_size, moment)
            for name in CA_NAMES:
                (path / name).mkdir(mode=0o700)
                _write_file(
                    path / name / "key.pem",
                    _key_pem(keys[name], passphrase),
                    mode=0o600,
                    replace_existing=False,
                )
                _write_file(path / name / "cert.pem", _pem(certificates[name]), mode=0o644, replace_existing=False)
            _write_json(
                path / "index.json",
                {"version": INDEX_VERSION, "certificates": [e.to_json() for e in entries]},
            )
            for name in CA_NAMES:
                crl = _sign_crl(
                    certificates[name],
                    keys[name],
                    [],
                    number=1,
                    now=moment,
                    next_update=DEFAULT_CRL_NEXT_UPDATE,
                )
                _write_crl(path, name, crl)
            _write_json(
                path / "state.json",
                {
                    "version": STATE_VERSION,
                    "label": label,
                    "crl_base_url": crl_base_url,
                    "key_size": key_size,
                    "created_at": _iso(moment),
                    "crl_numbers": dict.fromkeys(CA_NAMES, 1),
                },
            )
        pki = cls(path, passphrase)
        pki._keys.update(keys)
        return pki

    @staticmethod
    def _make_hierarchy(
        label: str, crl_base_url: str, key_size: int, now: datetime
    ) -> tuple[dict[str, x509.Certificate], dict[str, PrivateKey], list[IndexEntry]]:
        keys: dict[str, PrivateKey] = {
            name: rsa.generate_private_key(public_exponent=65537, key_size=key_size) for name in CA_NAMES
        }
        serial_list: list[int] = []
        for _ in CA_NAMES:
            serial_list.append(_new_serial([], set(serial_list)))
        root_subject = ca_subject("root", label)
        root = _build_certificate(
            subject=root_subject,
            issuer=root_subject,
            public_key=keys["root"].public_key(),
            serial=serial_list[0],
            not_before=now - NOT_BEFORE_BACKDATE,
            not_after=_add_years(now, ROOT_VALIDITY_YEARS),
            extensions=ca_extensions("root", keys["root"].public_key(), issuer_ski=None, crl_url=None),
            signing_key=keys["root"],
        )
        certificates = {"root": root}
        entries = [IndexEntry.for_certificate(root, "root", Profile.ROOT_CA)]
        for name, serial in zip(CA_NAMES[1:], serial_list[1:], strict=True):
            certificate = _build_certificate(
                subject=ca_subject(name, label),
                issuer=root.subject,
                public_key=keys[name].public_key(),
                serial=serial,
                not_before=now - NOT_BEFORE_BACKDATE,
                not_after=min(_add_years(now, INTERMEDIATE_VALIDITY_YEARS), root.not_valid_after_utc),
                extensions=ca_extensions(
                    name, keys[name].public_key(), issuer_ski=_ski(root), crl_url=f"{crl_base_url}/root.crl"
                ),
                signing_key=keys["root"],
            )
            certificates[name] = certificate
            entries.append(IndexEntry.for_certificate(certificate, "root", Profile.INTERMEDIATE_CA))
        return certificates, keys, entries

    # ----------------------------------------------------------------- accessors

    @property
    def path(self) -> Path:
        return self._path

    @property
    def label(self) -> str:
        return self._label

    @property
    def crl_base_url(self) -> str:
        return self._crl_base_url

    @property
    def key_size(self) -> int:
        return self._key_size

    @property
    def root(self) -> x509.Certificate:
        """The trust anchor (self-signed root CA certificate)."""
        return self._certificates["root"]

    def ca(self, name: str) -> x509.Certificate:
        """Certificate of the CA ``name`` (``root``, ``organisations`` or ``personnes``)."""
        return self._certificates[_ca_name(name)]

    def crl_url(self, name: str) -> str:
        """URL of the CRL of CA ``name``, as put in the CRL distribution points it issues."""
        return f"{self._crl_base_url}/{_ca_name(name)}.crl"

    def entries(self) -> list[IndexEntry]:
        """Every certificate of the index (CAs included), in issuance order."""
        return self._read_index()

    def find(self, serial: int | str) -> IndexEntry:
        """Index entry of ``serial`` (int or hexadecimal, colons and ``0x`` allowed)."""
        number = _parse_serial(serial)
        for entry in self._read_index():
            if entry.serial_number == number:
                return entry
        raise PKIError(f"unknown serial number: {number:x}")

    # ----------------------------------------------------------------- issuance

    def issue_server(self, hosts: Sequence[str], *, now: datetime | None = None) -> Issued:
        """TLS certificate of an operator node (serverAuth + clientAuth) for ``hosts``."""
        names = normalize_hosts(hosts)
        sans: list[x509.GeneralName] = [
            x509.DNSName(name) if isinstance(name, str) else x509.IPAddress(name) for name in names
        ]
        return self._issue(Profile.SERVER, str(names[0]), sans, now)

    def issue_app(self, address: str, *, now: datetime | None = None) -> Issued:
        """Client certificate (clientAuth) of the applicative mailbox ``address``."""
        normalized = normalize_address(address)
        return self._issue(Profile.APP, normalized, [x509.RFC822Name(normalized)], now)

    def issue_address(self, address: str, *, now: datetime | None = None, ocsp_url: str | None = None) -> Issued:
        """Address-bound S/MIME certificate (emailProtection) of ``address``; with ``ocsp_url``, an
        Authority Information Access naming that OCSP responder (RFC 5280 §4.2.2.1)."""
        normalized = normalize_address(address)
        return self._issue(Profile.ADDRESS, normalized, [x509.RFC822Name(normalized)], now, ocsp_url)

    def issue_domain(self, domain: str, *also: str, now: datetime | None = None) -> Issued:
        """Domain-bound S/MIME certificate (emailProtection, SAN dNSName) of the mail domain ``domain`` and of
        the operator's other mail domains ``also`` (its patient domain: patients hold no keys of their own)."""
        names: list[str] = []
        for raw in (domain, *also):
            name = normalize_hosts([raw.rstrip(".")])[0]  # lower-cased, checked
            if not isinstance(name, str):
                raise ValueError(f"invalid mail domain {raw!r}: an IP address")
            names += [name] if name not in names else []
        return self._issue(Profile.DOMAIN, names[0], [x509.DNSName(n) for n in names], now)

    def _issue(
        self,
        profile: Profile,
        common_name: str,
        sans: list[x509.GeneralName],
        now: datetime | None,
        ocsp_url: str | None = None,
    ) -> Issued:
        moment = _utc(now)
        ca_name = END_ENTITY_PROFILES[profile].issuer
        ca_certificate = self._certificates[ca_name]
        ca_key = self._ca_key(ca_name)
        key = rsa.generate_private_key(public_exponent=65537, key_size=self._key_size)
        with _locked(self._path):
            entries = self._read_index()
            self._check_ca_usable(ca_name, entries, moment)
            certificate = _build_certificate(
                subject=end_entity_subject(profile, self._label, common_name),
                issuer=ca_certificate.subject,
                public_key=key.public_key(),
                serial=_new_serial(entries),
                not_before=max(moment - NOT_BEFORE_BACKDATE, ca_certificate.not_valid_before_utc),
                not_after=min(_add_years(moment, END_ENTITY_VALIDITY_YEARS), ca_certificate.not_valid_after_utc),
                extensions=[
                    *end_entity_extensions(
                        profile,
                        key.public_key(),
                        sans=sans,
                        issuer_ski=_ski(ca_certificate),
                        crl_url=self.crl_url(ca_name),
                    ),
                    *(
                        [
                            (
                                x509.AuthorityInformationAccess(
                                    [
                                        x509.AccessDescription(
                                            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)
                                        )
                                    ]
                                ),
                                False,
                            )
                        ]
                        if ocsp_url
                        else []
                    ),
                ],
                signing_key=ca_key,
            )
            entries.append(IndexEntry.for_certificate(certificate, ca_name, profile))
            self._write_index(entries)
        return Issued(certificate=certificate, key=key, chain=(ca_certificate,))

    def _check_ca_usable(self, ca_name: str, entries: Sequence[IndexEntry], now: datetime) -> None:
        certificate = self._certificates[ca_name]
        serial = certificate.serial_number
        for entry in entries:
            if entry.serial_number == serial and entry.revoked:
                raise PKIError(f"CA {ca_name} is revoked")
        if now >= certificate.not_valid_after_utc:
            raise PKIError(f"CA {ca_name} expired on {_iso(certificate.not_valid_after_utc)}")
        if now < certificate.not_valid_before_utc:
            raise PKIError(f"CA {ca_name} is not valid before {_iso(certificate.not_valid_before_utc)}")

    # ----------------------------------------------------------------- revocation

    def revoke(self, serial: int | str, reason: x509.ReasonFlags, *, now: datetime | None = None) -> IndexEntry:
        """Mark ``serial`` revoked in the index (the CRLs change at the next :meth:`publish_crls`)."""
        if not isinstance(reason, x509.ReasonFlags):
            raise TypeError("reason must be an x509.ReasonFlags (see parse_reason)")
        if reason is x509.ReasonFlags.remove_from_crl:
            raise ValueError("removeFromCRL is only used in delta CRLs and cannot be a revocation reason")
        number = _parse_serial(serial)
        moment = _utc(now)
        with _locked(self._path):
            entries = self._read_index()
            position = next((i for i, e in enumerate(entries) if e.serial_number == number), None)
            if position is None:
                raise PKIError(f"unknown serial number: {number:x}")
            entry = entries[position]
            if entry.profile is Profile.ROOT_CA:
                raise PKIError("the root CA certificate cannot be revoked")
            if entry.revoked:
                raise PKIError(f"certificate {number:x} is already revoked")
            updated = replace(entry, revoked_at=moment, revocation_reason=reason.value)
            entries[position] = updated
            self._write_index(entries)
        return updated

    def publish_crls(
        self, *, next_update: timedelta = DEFAULT_CRL_NEXT_UPDATE, now: datetime | None = None
    ) -> dict[str, Path]:
        """Sign and write one CRL per CA (DER ``crl/<ca>.crl`` and PEM ``crl/<ca>.pem``).

        Returns the DER path of each CA's CRL.  CRL numbers increase by one per publication.
        """
        if next_update <= timedelta(0):
            raise ValueError("next_update must be a positive duration")
        moment = _utc(now)
        keys = {name: self._ca_key(name) for name in CA_NAMES}
        paths: dict[str, Path] = {}
        with _locked(self._path):
            state = self._read_state()
            numbers = {name: int(state["crl_numbers"].get(name, 0)) + 1 for name in CA_NAMES}
            state["crl_numbers"] = numbers
            _write_json(self._path / "state.json", state)
            entries = self._read_index()
            for name in CA_NAMES:
                revoked = [entry for entry in entries if entry.ca == name and entry.revoked]
                crl = _sign_crl(
                    self._certificates[name],
                    keys[name],
                    revoked,
                    number=numbers[name],
                    now=moment,
                    next_update=next_update,
                )
                paths[name] = _write_crl(self._path, name, crl)
        return paths

    # ----------------------------------------------------------------- storage

    def _read_state(self) -> dict[str, Any]:
        state_path = self._path / "state.json"
        try:
            state = json.loads(state_path.read_text("utf-8"))
        except FileNotFoundError:
            raise PKIError(f"PKI not initialised at {self._path} (no state.json)") from None
        except ValueError as exc:
            raise PKIError(f"corrupted {state_path}: {exc}") from None
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise PKIError(f"unsupported or corrupted {state_path}")
        if (
            not isinstance(state.get("label"), str)
            or not isinstance(state.get("crl_base_url"), str)
            or state.get("key_size") not in KEY_SIZES
            or not isinstance(state.get("crl_numbers"), dict)
        ):
            raise PKIError(f"unsupported or corrupted {state_path}")
        return state

    def _read_index(self) -> list[IndexEntry]:
        index_path = self._path / "index.json"
        try:
            data = json.loads(index_path.read_text("utf-8"))
        except FileNotFoundError:
            raise PKIError(f"PKI index missing: {index_path}") from None
        except ValueError as exc:
            raise PKIError(f"corrupted {index_path}: {exc}") from None
        if (
            not isinstance(data, dict)
            or data.get("version") != INDEX_VERSION
            or not isinstance(data.get("certificates"), list)
        ):
            raise PKIError(f"unsupported or corrupted {index_path}")
        return [IndexEntry.from_json(item) for item in data["certificates"]]

    def _write_index(self, entries: Sequence[IndexEntry]) -> None:
        serials = [entry.serial for entry in entries]
        assert len(set(serials)) == len(serials), "duplicate serial in index"
        _write_json(
            self._path / "index.json",
            {"version": INDEX_VERSION, "certificates": [entry.to_json() for entry in entries]},
        )

    def _ca_key(self, name: str) -> PrivateKey:
        cached = self._keys.get(name)
        if cached is not None:
            return cached
        relative = f"{name}/key.pem"
        try:
            data = (self._path / name / "key.pem").read_bytes()
        except FileNotFoundError:
            raise PKIError(f"PKI at {self._path} is incomplete: missing {relative}") from None
        encrypted = b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data
        if encrypted and self._passphrase is None:
            raise PKIError(f"CA key {relative} is encrypted: a passphrase is required")
        if not encrypted and self._passphrase is not None:
            raise PKIError(f"CA key {relative} is not encrypted but a passphrase was given")
        try:
            key = serialization.load_pem_private_key(data, self._passphrase)
        except (TypeError, ValueError):
            if encrypted:
                raise PKIError(f"cannot decrypt CA key {relative}: wrong passphrase") from None
            raise PKIError(f"cannot load CA key {relative}: invalid PEM private key") from None
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise PKIError(f"CA key {relative} is neither an RSA nor an EC key")
        if _spki(key.public_key()) != _spki(self._certificates[name].public_key()):
            raise PKIError(f"CA key {relative} does not match {name}/cert.pem")
        self._keys[name] = key
        return key


def _ca_name(name: str) -> str:
    if name not in CA_NAMES:
        raise ValueError(f"unknown CA name {name!r} (expected one of: {', '.join(CA_NAMES)})")
    return name


# --------------------------------------------------------------------------- helpers for callers


def parse_reason(text: str) -> x509.ReasonFlags:
    """RFC 5280 §5.3.1 reason name (case-insensitive, camelCase, kebab-case or snake_case)."""
    flag = _REASONS.get(text.strip().replace("-", "").replace("_", "").lower())
    if flag is None:
        raise ValueError(f"unknown revocation reason {text!r} (expected one of: {', '.join(REASON_NAMES)})")
    return flag


def write_bundle(
    issued: Issued,
    out_dir: Path | str,
    *,
    name: str = "bundle",
    p12_password: bytes | None = None,
    root: x509.Certificate | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write an issued certificate as files usable by servers, mail clients and openssl.

    * ``cert.pem``: the certificate; ``key.pem``: its private key (PKCS#8, unencrypted, 0600);
    * ``chain.pem``: the intermediate(s), then ``root`` when given;
    * ``fullchain.pem``: certificate + intermediate(s), what a TLS server sends (the root is left
      out, RFC 8446 §4.4.2);
    * ``root.pem`` when ``root`` is given;
    * ``<name>.p12`` when ``p12_password`` is given: key, certificate and chain (root included when
      given), friendly name = the CN, PBES2 AES-256-CBC / PBKDF2 + HMAC-SHA-256 MAC (0600).

    Existing files are refused unless ``overwrite`` (then each file is replaced atomically).
    Returns the written paths keyed ``cert``, ``chain``, ``fullchain``, ``key``, ``root``, ``p12``.
    """
    if not name or name in (".", "..") or name.startswith(".") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"bundle name must be a plain file name: {name!r}")
    _check_passphrase(p12_password, "p12_password")
    directory = Path(out_dir)
    leaf = issued.certificate
    chain = [*issued.chain, *([root] if root is not None else [])]
    contents: dict[str, tuple[Path, bytes, int]] = {
        "cert": (directory / "cert.pem", _pem(leaf), 0o644),
        "chain": (directory / "chain.pem", b"".join(_pem(c) for c in chain), 0o644),
        "fullchain": (directory / "fullchain.pem", b"".join(_pem(c) for c in (leaf, *issued.chain)), 0o644),
        "key": (directory / "key.pem", _key_pem(issued.key, None), 0o600),
    }
    if root is not None:
        contents["root"] = (directory / "root.pem", _pem(root), 0o644)
    if p12_password is not None:
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(P12_KDF_ROUNDS)
            .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
            .hmac_hash(hashes.SHA256())
            .build(p12_password)
        )
        p12 = pkcs12.serialize_key_and_certificates(
            _common_name(leaf).encode("utf-8"), issued.key, leaf, chain, encryption
        )
        contents["p12"] = (directory / f"{name}.p12", p12, 0o600)
    if not overwrite:
        existing = [path.name for path, _, _ in contents.values() if path.exists()]
        if existing:
            raise PKIError(f"bundle files already exist in {directory}: {', '.join(existing)} (use overwrite)")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path, data, mode in contents.values():
        _write_file(path, data, mode=mode, replace_existing=overwrite)
    return {key: path for key, (path, _, _) in contents.items()}
