"""Certificate profiles of the trust-space PKI and validation of the names they carry.

Implementation notes
--------------------
* One function per profile returns the subject DN and the extensions of a certificate; the
  signing itself (serials, validity, index) lives in :mod:`certs.pki`.
* Criticality follows RFC 5280: basicConstraints critical (§4.2.1.9), keyUsage critical
  (§4.2.1.3), extendedKeyUsage non-critical (§4.2.1.12), subjectAltName non-critical because the
  subject DN is never empty (§4.2.1.6), subject/authority key identifiers non-critical
  (§4.2.1.2, §4.2.1.1), cRLDistributionPoints non-critical (§4.2.1.13).
* Names are validated before any key is generated and normalised: host names and e-mail
  domains are lower-cased, the local part of an address keeps its case (RFC 5321 §2.4).
  Only ASCII names are accepted: dNSName and rfc822Name are IA5Strings (RFC 5280 §4.2.1.6);
  internationalised host names must be given as IDNA A-labels (``xn--...``), internationalised
  mailboxes (RFC 8398 SmtpUTF8Mailbox) are not supported.
* The common name is limited to 64 characters (ub-common-name, RFC 5280 appendix A.1), so the
  first host of a server certificate and the address of an address-bound or applicative
  certificate must fit in it: a longer one is rejected rather than silently truncated.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_NAMES",
    "CN_MAX_LENGTH",
    "LABEL_MAX_LENGTH",
    "CAProfile",
    "EndEntityProfile",
    "Profile",
    "ca_extensions",
    "ca_subject",
    "end_entity_extensions",
    "end_entity_subject",
    "normalize_address",
    "normalize_host",
    "normalize_hosts",
    "validate_label",
]

CA_NAMES: Final = ("root", "organisations", "personnes")
CN_MAX_LENGTH: Final = 64
# "AC ORGANISATIONS " is the longest CA common-name prefix (17 characters).
LABEL_MAX_LENGTH: Final = CN_MAX_LENGTH - len("AC ORGANISATIONS ")

_HOST_MAX_LENGTH: Final = 253
_LABEL_RE: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_ATEXT: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~")


class Profile(StrEnum):
    """Profile recorded in the index for every certificate."""

    ROOT_CA = "root-ca"
    INTERMEDIATE_CA = "intermediate-ca"
    SERVER = "server"
    APP = "app"
    ADDRESS = "address"
    DOMAIN = "domain"


@dataclass(frozen=True)
class CAProfile:
    """Subject prefix and path length of one CA of the hierarchy."""

    name: str
    cn_prefix: str
    path_length: int


@dataclass(frozen=True)
class EndEntityProfile:
    """Issuing CA, OU and key purposes of an end-entity profile."""

    profile: Profile
    issuer: str
    organizational_unit: str
    extended_key_usages: tuple[x509.ObjectIdentifier, ...]


CA_PROFILES: Final = {
    "root": CAProfile("root", "AC RACINE", 1),
    "organisations": CAProfile("organisations", "AC ORGANISATIONS", 0),
    "personnes": CAProfile("personnes", "AC PERSONNES", 0),
}

END_ENTITY_PROFILES: Final = {
    Profile.SERVER: EndEntityProfile(
        Profile.SERVER,
        "organisations",
        "SERVEURS",
        (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
    ),
    Profile.APP: EndEntityProfile(Profile.APP, "organisations", "BAL APPLICATIVES", (ExtendedKeyUsageOID.CLIENT_AUTH,)),
    Profile.ADDRESS: EndEntityProfile(
        Profile.ADDRESS, "personnes", "ADRESSES", (ExtendedKeyUsageOID.EMAIL_PROTECTION,)
    ),
    Profile.DOMAIN: EndEntityProfile(
        Profile.DOMAIN, "organisations", "DOMAINES", (ExtendedKeyUsageOID.EMAIL_PROTECTION,)
    ),
}


# --------------------------------------------------------------------------- names


def validate_label(label: str) -> str:
    """Check the PKI label used in the O attribute and in the CA common names."""
    if not label:
        raise ValueError("label must not be empty")
    if label != label.strip() or not label.isprintable():
        raise ValueError("label must not contain control characters or leading/trailing spaces")
    if len(label) > LABEL_MAX_LENGTH:
        raise ValueError(f"label too long (max {LABEL_MAX_LENGTH} characters): {label!r}")
    return label


def _is_a_label(label: str) -> bool:
    """Approximate RFC 5891 §5.4 check of an A-label: punycode that round-trips to a
    lower-case, non-ASCII U-label made of letters, marks, digits and hyphens."""
    try:
        decoded = label[4:].encode("ascii").decode("punycode")
        encoded = decoded.encode("punycode").decode("ascii")
    except UnicodeError:
        return False
    return (
        encoded == label[4:]
        and not decoded.isascii()
        and decoded == decoded.casefold()
        and all(ch == "-" or unicodedata.category(ch)[0] in "LMN" for ch in decoded)
    )


def _dns_name_problem(name: str) -> str | None:
    """Return why ``name`` (already lower-cased) is not a valid LDH/IDNA host name, or None."""
    if not name:
        return "empty name"
    if "*" in name:
        return "wildcards are not allowed"
    if not name.isascii():
        return "must be ASCII (give internationalised names in IDNA A-label form, xn--...)"
    if name.endswith("."):
        return "trailing dot not allowed"
    if len(name) > _HOST_MAX_LENGTH:
        return f"longer than {_HOST_MAX_LENGTH} characters"
    labels = name.split(".")
    for label in labels:
        if not label:
            return "empty label"
        if len(label) > 63:
            return f"label {label!r} longer than 63 characters"
        if not _LABEL_RE.fullmatch(label):
            return (
                f"label {label!r} must contain only letters, digits and hyphens and must not start or end with a hyphen"
            )
        if label.startswith("xn--"):
            if not _is_a_label(label):
                return f"invalid IDNA A-label {label!r}"
        elif label[2:4] == "--":
            return f"label {label!r} has hyphens in 3rd and 4th positions (reserved, RFC 5890 §2.3.1)"
    if labels[-1].isdigit():
        return "top-level label must not be all-numeric"
    return None


def normalize_host(host: str) -> str | ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Return the lower-cased DNS name, or the IP address when ``host`` parses as one."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
            raise ValueError(f"invalid host {host!r}: IPv6 scope ids are not allowed")
        return ip
    name = host.lower()
    problem = _dns_name_problem(name)
    if problem is not None:
        raise ValueError(f"invalid hostname {host!r}: {problem}")
    return name


def normalize_hosts(hosts: Sequence[str]) -> list[str | ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Validate the hosts of a server certificate; duplicates are dropped, order is kept."""
    if isinstance(hosts, str | bytes):
        raise TypeError("hosts must be a sequence of strings, not a single string")
    result: list[str | ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for host in hosts:
        if not isinstance(host, str):
            raise TypeError(f"host must be a string, not {type(host).__name__}")
        value = normalize_host(host)
        if value not in result:
            result.append(value)
    if not result:
        raise ValueError("at least one host is required")
    first = str(result[0])
    if len(first) > CN_MAX_LENGTH:
        raise ValueError(
            f"first host {first!r} is too long for the certificate common name (max {CN_MAX_LENGTH} characters)"
        )
    return result


def normalize_address(address: str) -> str:
    """Validate an e-mail address (RFC 5321 dot-atom local part) and lower-case its domain."""
    if not isinstance(address, str):
        raise TypeError(f"address must be a string, not {type(address).__name__}")

    def fail(reason: str) -> ValueError:
        return ValueError(f"invalid e-mail address {address!r}: {reason}")

    if address.count("@") != 1:
        raise fail("must contain exactly one '@'")
    local, domain = address.split("@")
    if not local:
        raise fail("empty local part")
    if len(local.encode("utf-8")) > 64:
        raise fail("local part longer than 64 octets")
    if not local.isascii():
        raise fail("local part must be ASCII (internationalised mailboxes are not supported)")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise fail("local part must not start or end with a dot nor contain consecutive dots")
    bad = sorted({c for c in local if c != "." and c not in _ATEXT})
    if bad:
        raise fail(f"local part contains invalid characters: {''.join(bad)!r}")
    domain = domain.lower()
    problem = _dns_name_problem(domain)
    if problem is not None:
        raise fail(f"domain {problem}")
    normalized = f"{local}@{domain}"
    if len(normalized) > 254:
        raise fail("longer than 254 characters")
    if len(normalized) > CN_MAX_LENGTH:
        raise ValueError(
            f"address {address!r} is too long for the certificate common name (max {CN_MAX_LENGTH} characters)"
        )
    return normalized


# --------------------------------------------------------------------------- subjects


def _name(label: str, organizational_unit: str, common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, label),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, organizational_unit),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def ca_subject(ca_name: str, label: str) -> x509.Name:
    """``C=FR, O=<label>, OU=IGC <label>, CN=AC <RACINE|ORGANISATIONS|PERSONNES> <label>``."""
    profile = CA_PROFILES[ca_name]
    return _name(label, f"IGC {label}", f"{profile.cn_prefix} {label}")


def end_entity_subject(profile: Profile, label: str, common_name: str) -> x509.Name:
    """``C=FR, O=<label>, OU=<profile OU>, CN=<common name>`` (no emailAddress attribute)."""
    return _name(label, END_ENTITY_PROFILES[profile].organizational_unit, common_name)


# --------------------------------------------------------------------------- extensions

_Extension = tuple[x509.ExtensionType, bool]


def _key_usage(*, digital_signature: bool = False, key_encipherment: bool = False, ca: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _identifiers(
    public_key: CertificateIssuerPublicKeyTypes, issuer_ski: x509.SubjectKeyIdentifier | None
) -> list[_Extension]:
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski or ski)
    return [(ski, False), (aki, False)]


def _crl_distribution_points(crl_url: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints(
        [
            x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(crl_url)],
                relative_name=None,
                reasons=None,
                crl_issuer=None,
            )
        ]
    )


def ca_extensions(
    ca_name: str,
    public_key: CertificateIssuerPublicKeyTypes,
    *,
    issuer_ski: x509.SubjectKeyIdentifier | None,
    crl_url: str | None,
) -> list[_Extension]:
    """Extensions of a CA certificate (RFC 5280 §4.2.1.9 basicConstraints, §4.2.1.3 keyUsage).

    The root is self-signed (``issuer_ski`` None) and carries no CRL distribution point;
    intermediates point to the root CRL.
    """
    profile = CA_PROFILES[ca_name]
    extensions: list[_Extension] = [
        (x509.BasicConstraints(ca=True, path_length=profile.path_length), True),
        (_key_usage(ca=True), True),
        *_identifiers(public_key, issuer_ski),
    ]
    if crl_url is not None:
        extensions.append((_crl_distribution_points(crl_url), False))
    return extensions


def end_entity_extensions(
    profile: Profile,
    public_key: CertificateIssuerPublicKeyTypes,
    *,
    sans: list[x509.GeneralName],
    issuer_ski: x509.SubjectKeyIdentifier,
    crl_url: str,
) -> list[_Extension]:
    """Extensions of an end-entity certificate (RFC 5280 §4.2.1.3, §4.2.1.6, §4.2.1.12, §4.2.1.13)."""
    spec = END_ENTITY_PROFILES[profile]
    return [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (_key_usage(digital_signature=True, key_encipherment=True), True),
        (x509.ExtendedKeyUsage(list(spec.extended_key_usages)), False),
        (x509.SubjectAlternativeName(sans), False),
        *_identifiers(public_key, issuer_ski),
        (_crl_distribution_points(crl_url), False),
    ]
