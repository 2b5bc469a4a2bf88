"""Tests of the trust-space PKI (certs.pki), checked against the real openssl binary."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.pki import (
    IndexEntry,
    Issued,
    PKIError,
    Profile,
    TrustSpacePKI,
    parse_reason,
    write_bundle,
)

PASSPHRASE = b"correct horse battery staple"
P12_PASSWORD = b"p12-secret"
LABEL = "MSSGW TEST"
CRL_BASE = "http://crl.mssgw.test/igc"
SKEW = timedelta(minutes=5)
E = TypeVar("E", bound=x509.ExtensionType)
SERVER_HOSTS = ["MX.Hopital.test", "192.0.2.10", "2001:db8::1", "mx.hopital.test", "imap.hopital.test"]


@dataclass(frozen=True)
class World:
    pki: TrustSpacePKI
    path: Path
    now: datetime
    server: Issued
    app: Issued
    address: Issued
    bundles: Path


def raises(exc_type: type[Exception], message: str) -> pytest.RaisesExc[Exception]:
    """pytest.raises that requires the exact message."""
    return pytest.raises(exc_type, match=rf"\A{re.escape(message)}\Z")


def openssl(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60)


def years_later(moment: datetime, years: int) -> datetime:
    return moment.replace(year=moment.year + years)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def ext(cert: x509.Certificate, cls: type[E]) -> x509.Extension[E]:
    return cert.extensions.get_extension_for_class(cls)


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def crl_number(path: Path) -> int:
    crl = x509.load_der_x509_crl(path.read_bytes())
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def ee_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=True,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def crldp(url: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints([x509.DistributionPoint([x509.UniformResourceIdentifier(url)], None, None, None)])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    base = tmp_path_factory.mktemp("trust-space")
    now = datetime.now(UTC).replace(microsecond=0)
    pki = TrustSpacePKI.create(base / "pki", label=LABEL, crl_base_url=CRL_BASE + "/", passphrase=PASSPHRASE, now=now)
    server = pki.issue_server(SERVER_HOSTS, now=now)
    app = pki.issue_app("lgc@Hopital.test", now=now)
    address = pki.issue_address("Jean.Dupont@Hopital.TEST", now=now)
    bundles = base / "bundles"
    for name, issued in (("server", server), ("app", app), ("address", address)):
        write_bundle(issued, bundles / name, name=name, p12_password=P12_PASSWORD, root=pki.root)
    return World(pki, base / "pki", now, server, app, address, bundles)


# --------------------------------------------------------------------------- hierarchy


def test_root_certificate(world: World) -> None:
    root = world.pki.root
    assert root.subject.rfc4514_string() == "CN=AC RACINE MSSGW TEST,OU=IGC MSSGW TEST,O=MSSGW TEST,C=FR"
    assert root.issuer == root.subject
    root.verify_directly_issued_by(root)
    basic = ext(root, x509.BasicConstraints)
    assert basic.critical is True
    assert basic.value == x509.BasicConstraints(ca=True, path_length=1)
    key_usage = ext(root, x509.KeyUsage)
    assert key_usage.critical is True
    assert key_usage.value == ca_key_usage()
    ski = x509.SubjectKeyIdentifier.from_public_key(root.public_key())
    assert ext(root, x509.SubjectKeyIdentifier).value == ski
    assert ext(root, x509.AuthorityKeyIdentifier).value.key_identifier == ski.digest
    with pytest.raises(x509.ExtensionNotFound):
        ext(root, x509.CRLDistributionPoints)
    assert root.not_valid_before_utc == world.now - SKEW
    assert root.not_valid_after_utc == years_later(world.now, 20)
    assert root.signature_hash_algorithm is not None
    assert root.signature_hash_algorithm.name == "sha256"
    assert root.public_key().key_size == 2048  # type: ignore[union-attr]


@pytest.mark.parametrize(("name", "cn"), [("organisations", "AC ORGANISATIONS"), ("personnes", "AC PERSONNES")])
def test_intermediate_certificates(world: World, name: str, cn: str) -> None:
    ca = world.pki.ca(name)
    root = world.pki.root
    assert ca.subject.rfc4514_string() == f"CN={cn} MSSGW TEST,OU=IGC MSSGW TEST,O=MSSGW TEST,C=FR"
    assert ca.issuer == root.subject
    ca.verify_directly_issued_by(root)
    assert ext(ca, x509.BasicConstraints).value == x509.BasicConstraints(ca=True, path_length=0)
    assert ext(ca, x509.BasicConstraints).critical is True
    assert ext(ca, x509.KeyUsage).value == ca_key_usage()
    assert ext(ca, x509.CRLDistributionPoints).value == crldp("http://crl.mssgw.test/igc/root.crl")
    assert ext(ca, x509.CRLDistributionPoints).critical is False
    root_ski = ext(root, x509.SubjectKeyIdentifier).value
    assert ext(ca, x509.AuthorityKeyIdentifier).value.key_identifier == root_ski.digest
    assert ext(ca, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(ca.public_key())
    assert ca.not_valid_before_utc == world.now - SKEW
    assert ca.not_valid_after_utc == years_later(world.now, 10)
    assert world.pki.crl_url(name) == f"http://crl.mssgw.test/igc/{name}.crl"


def test_state_and_accessors(world: World) -> None:
    assert TrustSpacePKI.exists(world.path) is True
    assert world.pki.label == LABEL
    assert world.pki.crl_base_url == CRL_BASE
    assert world.pki.key_size == 2048
    assert world.pki.ca("root") == world.pki.root
    with raises(ValueError, "unknown CA name 'racine' (expected one of: root, organisations, personnes)"):
        world.pki.ca("racine")
    state = json.loads((world.path / "state.json").read_text())
    assert state["label"] == LABEL
    assert state["crl_base_url"] == CRL_BASE
    assert state["key_size"] == 2048
    assert state["created_at"] == iso(world.now)
    assert PASSPHRASE.decode() not in repr(world.pki)
    assert repr(world.pki) == f"TrustSpacePKI(path={str(world.path)!r}, label='MSSGW TEST')"


# --------------------------------------------------------------------------- profiles


def check_end_entity_common(world: World, issued: Issued, ca_name: str) -> None:
    cert = issued.certificate
    ca = world.pki.ca(ca_name)
    assert issued.chain == (ca,)
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    assert ext(cert, x509.BasicConstraints).value == x509.BasicConstraints(ca=False, path_length=None)
    assert ext(cert, x509.BasicConstraints).critical is True
    assert ext(cert, x509.KeyUsage).value == ee_key_usage()
    assert ext(cert, x509.KeyUsage).critical is True
    assert ext(cert, x509.ExtendedKeyUsage).critical is False
    assert ext(cert, x509.SubjectAlternativeName).critical is False
    assert ext(cert, x509.CRLDistributionPoints).value == crldp(f"http://crl.mssgw.test/igc/{ca_name}.crl")
    ca_ski = ext(ca, x509.SubjectKeyIdentifier).value
    assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == ca_ski.digest
    assert ext(cert, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(
        issued.key.public_key()
    )
    assert cert.not_valid_before_utc == world.now - SKEW
    assert cert.not_valid_after_utc == years_later(world.now, 3)
    assert issued.serial == serial_hex(cert)


def test_server_profile(world: World) -> None:
    cert = world.server.certificate
    check_end_entity_common(world, world.server, "organisations")
    assert cert.subject.rfc4514_string() == "CN=mx.hopital.test,OU=SERVEURS,O=MSSGW TEST,C=FR"
    assert list(ext(cert, x509.SubjectAlternativeName).value) == [
        x509.DNSName("mx.hopital.test"),
        x509.IPAddress(ipaddress.IPv4Address("192.0.2.10")),
        x509.IPAddress(ipaddress.IPv6Address("2001:db8::1")),
        x509.DNSName("imap.hopital.test"),
    ]
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]


def test_app_profile(world: World) -> None:
    cert = world.app.certificate
    check_end_entity_common(world, world.app, "organisations")
    assert cert.subject.rfc4514_string() == "CN=lgc@hopital.test,OU=BAL APPLICATIVES,O=MSSGW TEST,C=FR"
    assert list(ext(cert, x509.SubjectAlternativeName).value) == [x509.RFC822Name("lgc@hopital.test")]
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_address_profile(world: World) -> None:
    cert = world.address.certificate
    check_end_entity_common(world, world.address, "personnes")
    assert cert.subject.rfc4514_string() == "CN=Jean.Dupont@hopital.test,OU=ADRESSES,O=MSSGW TEST,C=FR"
    assert cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS) == []
    assert list(ext(cert, x509.SubjectAlternativeName).value) == [x509.RFC822Name("Jean.Dupont@hopital.test")]
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.EMAIL_PROTECTION]


def test_domain_profile(world: World) -> None:
    issued = world.pki.issue_domain("Hopital.TEST.", now=world.now)
    cert = issued.certificate
    check_end_entity_common(world, issued, "organisations")
    assert cert.subject.rfc4514_string() == "CN=hopital.test,OU=DOMAINES,O=MSSGW TEST,C=FR"
    assert list(ext(cert, x509.SubjectAlternativeName).value) == [x509.DNSName("hopital.test")]
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.EMAIL_PROTECTION]
    assert world.pki.find(issued.serial).profile is Profile.DOMAIN
    with raises(ValueError, "invalid mail domain '192.0.2.1': an IP address"):
        world.pki.issue_domain("192.0.2.1", now=world.now)
    with raises(ValueError, "invalid hostname 'bad..test': empty label"):
        world.pki.issue_domain("bad..test", now=world.now)


def test_validity_capped_by_issuer_and_expired_ca(world: World) -> None:
    ca = world.pki.ca("personnes")
    late = ca.not_valid_after_utc - timedelta(days=365)
    issued = world.pki.issue_address("late@hopital.test", now=late)
    assert issued.certificate.not_valid_before_utc == late - SKEW
    assert issued.certificate.not_valid_after_utc == ca.not_valid_after_utc
    with raises(PKIError, f"CA personnes expired on {iso(ca.not_valid_after_utc)}"):
        world.pki.issue_address("later@hopital.test", now=ca.not_valid_after_utc)
    with raises(ValueError, "now must be a timezone-aware datetime"):
        world.pki.issue_address("naive@hopital.test", now=datetime(2030, 1, 1))


# --------------------------------------------------------------------------- openssl interoperability


@pytest.mark.parametrize(
    ("profile", "purpose", "valid"),
    [
        ("server", None, True),
        ("server", "sslserver", True),
        ("server", "sslclient", True),
        ("server", "smimesign", False),
        ("server", "smimeencrypt", False),
        ("app", None, True),
        ("app", "sslclient", True),
        ("app", "sslserver", False),
        ("app", "smimesign", False),
        ("address", None, True),
        ("address", "smimesign", True),
        ("address", "smimeencrypt", True),
        ("address", "sslserver", False),
        ("address", "sslclient", False),
    ],
)
def test_openssl_verify_purpose(world: World, profile: str, purpose: str | None, valid: bool) -> None:
    purpose_args = ["-purpose", purpose] if purpose else []
    result = openssl(
        "verify",
        *purpose_args,
        "-CAfile",
        "root.pem",
        "-untrusted",
        "chain.pem",
        "cert.pem",
        cwd=world.bundles / profile,
    )
    if valid:
        assert (result.returncode, result.stdout) == (0, "cert.pem: OK\n")
    else:
        assert result.returncode == 2
        assert "error 26 at 0 depth lookup: unsuitable certificate purpose" in result.stdout + result.stderr


def test_openssl_shows_subject_alt_name(world: World) -> None:
    result = openssl("x509", "-noout", "-ext", "subjectAltName", "-in", str(world.bundles / "server" / "cert.pem"))
    assert result.returncode == 0
    assert result.stdout == (
        "X509v3 Subject Alternative Name: \n"
        "    DNS:mx.hopital.test, IP Address:192.0.2.10, IP Address:2001:DB8:0:0:0:0:0:1,"
        " DNS:imap.hopital.test\n"
    )


def test_openssl_reads_encrypted_ca_keys(world: World) -> None:
    for name in ("root", "organisations", "personnes"):
        key_path = world.path / name / "key.pem"
        assert key_path.read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
        good = openssl("pkey", "-in", str(key_path), "-passin", f"pass:{PASSPHRASE.decode()}", "-noout")
        assert good.returncode == 0, good.stderr
        bad = openssl("pkey", "-in", str(key_path), "-passin", "pass:wrong", "-noout")
        assert bad.returncode == 1


# --------------------------------------------------------------------------- revocation


def test_revocation_and_crls(world: World, tmp_path: Path) -> None:
    pki = world.pki
    crl_dir = world.path / "crl"
    numbers_before = {name: crl_number(crl_dir / f"{name}.crl") for name in ("root", "organisations", "personnes")}
    victim = pki.issue_server(["victim.hopital.test"])
    sibling = pki.issue_server(["sibling.hopital.test"])
    plain = pki.issue_address("plain@hopital.test")
    for name, issued in (("victim", victim), ("sibling", sibling)):
        write_bundle(issued, tmp_path / name, root=pki.root)

    revoked_at = datetime.now(UTC).replace(microsecond=0)
    entry = pki.revoke(victim.serial, parse_reason("key-compromise"), now=revoked_at)
    assert (entry.serial, entry.revoked, entry.revoked_at, entry.revocation_reason) == (
        victim.serial,
        True,
        revoked_at,
        "keyCompromise",
    )
    assert pki.find(victim.serial) == entry
    pki.revoke(plain.certificate.serial_number, x509.ReasonFlags.unspecified, now=revoked_at)
    paths = pki.publish_crls(next_update=timedelta(days=2), now=revoked_at)
    assert paths == {name: crl_dir / f"{name}.crl" for name in ("root", "organisations", "personnes")}
    assert {name: crl_number(path) for name, path in paths.items()} == {
        name: number + 1 for name, number in numbers_before.items()
    }

    crl = x509.load_der_x509_crl(paths["organisations"].read_bytes())
    assert crl.is_signature_valid(pki.ca("organisations").public_key())  # type: ignore[arg-type]
    assert crl.issuer == pki.ca("organisations").subject
    assert crl.last_update_utc == revoked_at
    assert crl.next_update_utc == revoked_at + timedelta(days=2)
    assert (crl_dir / "organisations.pem").read_bytes() == crl.public_bytes(serialization.Encoding.PEM)
    revoked = crl.get_revoked_certificate_by_serial_number(victim.certificate.serial_number)
    assert revoked is not None
    assert revoked.revocation_date_utc == revoked_at
    assert revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason is x509.ReasonFlags.key_compromise
    assert crl.get_revoked_certificate_by_serial_number(sibling.certificate.serial_number) is None
    personnes_crl = x509.load_der_x509_crl(paths["personnes"].read_bytes())
    plain_revoked = personnes_crl.get_revoked_certificate_by_serial_number(plain.certificate.serial_number)
    assert plain_revoked is not None
    assert len(plain_revoked.extensions) == 0  # RFC 5280 §5.3.1: no reasonCode for unspecified

    text = openssl("crl", "-inform", "DER", "-in", str(paths["organisations"]), "-noout", "-text")
    assert text.returncode == 0
    hex_serial = format(victim.certificate.serial_number, "X")
    hex_serial = hex_serial.zfill(len(hex_serial) + len(hex_serial) % 2)
    assert f"    Serial Number: {hex_serial}\n" in text.stdout
    assert "            X509v3 CRL Reason Code: \n                Key Compromise\n" in text.stdout
    assert f"            X509v3 CRL Number: \n                {numbers_before['organisations'] + 1}\n" in text.stdout

    crl_args = ["-crl_check", "-CRLfile", str(paths["organisations"]), "-CRLfile", str(paths["root"])]
    verify = ["verify", *crl_args, "-CAfile", "root.pem", "-untrusted", "chain.pem", "cert.pem"]
    bad = openssl(*verify, cwd=tmp_path / "victim")
    assert bad.returncode == 2
    assert "error 23 at 0 depth lookup: certificate revoked" in bad.stdout + bad.stderr
    good = openssl(*verify, cwd=tmp_path / "sibling")
    assert (good.returncode, good.stdout) == (0, "cert.pem: OK\n")

    again = pki.publish_crls(now=revoked_at)
    assert crl_number(again["organisations"]) == numbers_before["organisations"] + 2


def test_revocation_errors(world: World) -> None:
    pki = world.pki
    with raises(PKIError, "unknown serial number: 1"):
        pki.revoke(1, x509.ReasonFlags.superseded)
    with raises(PKIError, "unknown serial number: abcdef"):
        pki.find("0xABCDEF")

    issued = pki.issue_app("twice@hopital.test")
    pki.revoke(issued.serial, x509.ReasonFlags.superseded)
    colon_upper = ":".join(f"{b:02X}" for b in issued.certificate.serial_number.to_bytes(20, "big").lstrip(b"\0"))
    with raises(PKIError, f"certificate {issued.serial} is already revoked"):
        pki.revoke(colon_upper, x509.ReasonFlags.key_compromise)
    assert pki.find(issued.certificate.serial_number).revocation_reason == "superseded"

    with raises(PKIError, "the root CA certificate cannot be revoked"):
        pki.revoke(world.pki.root.serial_number, x509.ReasonFlags.ca_compromise)
    with raises(ValueError, "removeFromCRL is only used in delta CRLs and cannot be a revocation reason"):
        pki.revoke(world.server.serial, x509.ReasonFlags.remove_from_crl)
    with raises(ValueError, "invalid serial number 'zz': expected a positive integer or hexadecimal string"):
        pki.revoke("zz", x509.ReasonFlags.superseded)
    with raises(ValueError, "next_update must be a positive duration"):
        pki.publish_crls(next_update=timedelta(0))
    assert pki.find(world.server.serial).revoked is False


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("keyCompromise", x509.ReasonFlags.key_compromise),
        ("KEYCOMPROMISE", x509.ReasonFlags.key_compromise),
        ("key-compromise", x509.ReasonFlags.key_compromise),
        ("cACompromise", x509.ReasonFlags.ca_compromise),
        ("ca-compromise", x509.ReasonFlags.ca_compromise),
        ("aa-compromise", x509.ReasonFlags.aa_compromise),
        ("affiliation-changed", x509.ReasonFlags.affiliation_changed),
        ("Superseded", x509.ReasonFlags.superseded),
        ("cessation-of-operation", x509.ReasonFlags.cessation_of_operation),
        ("certificateHold", x509.ReasonFlags.certificate_hold),
        ("privilege_withdrawn", x509.ReasonFlags.privilege_withdrawn),
        ("remove-from-crl", x509.ReasonFlags.remove_from_crl),
        (" unspecified ", x509.ReasonFlags.unspecified),
    ],
)
def test_parse_reason(text: str, reason: x509.ReasonFlags) -> None:
    assert parse_reason(text) is reason


def test_parse_reason_rejects_unknown_names() -> None:
    message = (
        "unknown revocation reason 'stolen' (expected one of: unspecified, keyCompromise, cACompromise,"
        " affiliationChanged, superseded, cessationOfOperation, certificateHold, privilegeWithdrawn,"
        " aACompromise, removeFromCRL)"
    )
    with raises(ValueError, message):
        parse_reason("stolen")


# --------------------------------------------------------------------------- keys, passphrases, bundles


def test_key_files_are_private(world: World) -> None:
    assert stat.S_IMODE(os.stat(world.path).st_mode) == 0o700
    for name in ("root", "organisations", "personnes"):
        assert stat.S_IMODE(os.stat(world.path / name / "key.pem").st_mode) == 0o600
        assert stat.S_IMODE(os.stat(world.path / name).st_mode) == 0o700
    for profile in ("server", "app", "address"):
        assert stat.S_IMODE(os.stat(world.bundles / profile / "key.pem").st_mode) == 0o600
        assert stat.S_IMODE(os.stat(world.bundles / profile / f"{profile}.p12").st_mode) == 0o600


def test_passphrase_is_required_and_checked(world: World) -> None:
    count = len(world.pki.entries())
    with raises(PKIError, "cannot decrypt CA key organisations/key.pem: wrong passphrase"):
        TrustSpacePKI(world.path, b"wrong passphrase").issue_server(["x.hopital.test"])
    with raises(PKIError, "CA key personnes/key.pem is encrypted: a passphrase is required"):
        TrustSpacePKI(world.path).issue_address("x@hopital.test")
    with raises(PKIError, "cannot decrypt CA key root/key.pem: wrong passphrase"):
        TrustSpacePKI(world.path, b"wrong passphrase").publish_crls()
    assert len(world.pki.entries()) == count
    reopened = TrustSpacePKI(world.path, PASSPHRASE)
    issued = reopened.issue_app("reopened@hopital.test")
    issued.certificate.verify_directly_issued_by(world.pki.ca("organisations"))
    assert len(world.pki.entries()) == count + 1


def test_pkcs12_bundle(world: World) -> None:
    bundle = world.bundles / "address"
    p12_path = bundle / "address.p12"
    info = openssl("pkcs12", "-info", "-noout", "-in", str(p12_path), "-passin", f"pass:{P12_PASSWORD.decode()}")
    assert info.returncode == 0, info.stderr
    output = info.stdout + info.stderr
    assert "MAC: sha256" in output
    assert "Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC, Iteration 100000, PRF hmacWithSHA256" in output
    wrong = openssl("pkcs12", "-info", "-noout", "-in", str(p12_path), "-passin", "pass:nope")
    assert wrong.returncode == 1

    loaded = pkcs12.load_pkcs12(p12_path.read_bytes(), P12_PASSWORD)
    assert loaded.key is not None
    assert loaded.cert is not None
    assert loaded.cert.certificate == world.address.certificate
    assert loaded.cert.friendly_name == b"Jean.Dupont@hopital.test"
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert loaded.key.public_key().public_bytes(serialization.Encoding.DER, spki) == (
        world.address.certificate.public_key().public_bytes(serialization.Encoding.DER, spki)
    )
    assert [c.certificate for c in loaded.additional_certs] == [world.pki.ca("personnes"), world.pki.root]


def test_bundle_files(world: World, tmp_path: Path) -> None:
    pem = serialization.Encoding.PEM
    leaf = world.server.certificate
    organisations = world.pki.ca("organisations")
    bundle = world.bundles / "server"
    assert (bundle / "cert.pem").read_bytes() == leaf.public_bytes(pem)
    assert (bundle / "chain.pem").read_bytes() == organisations.public_bytes(pem) + world.pki.root.public_bytes(pem)
    assert (bundle / "fullchain.pem").read_bytes() == leaf.public_bytes(pem) + organisations.public_bytes(pem)
    assert (bundle / "root.pem").read_bytes() == world.pki.root.public_bytes(pem)
    assert (bundle / "key.pem").read_text().startswith("-----BEGIN PRIVATE KEY-----\n")
    assert "key=" not in repr(world.server)

    written = write_bundle(world.app, tmp_path / "app")
    assert sorted(written) == ["cert", "chain", "fullchain", "key"]
    assert (tmp_path / "app" / "chain.pem").read_bytes() == organisations.public_bytes(pem)
    existing = "cert.pem, chain.pem, fullchain.pem, key.pem"
    with raises(PKIError, f"bundle files already exist in {tmp_path / 'app'}: {existing} (use overwrite)"):
        write_bundle(world.server, tmp_path / "app")
    assert (tmp_path / "app" / "cert.pem").read_bytes() == world.app.certificate.public_bytes(pem)
    write_bundle(world.server, tmp_path / "app", overwrite=True)
    assert (tmp_path / "app" / "cert.pem").read_bytes() == leaf.public_bytes(pem)
    assert stat.S_IMODE(os.stat(tmp_path / "app" / "key.pem").st_mode) == 0o600
    assert sorted(p.name for p in (tmp_path / "app").iterdir()) == [
        "cert.pem",
        "chain.pem",
        "fullchain.pem",
        "key.pem",
    ]
    with raises(ValueError, "bundle name must be a plain file name: '../evil'"):
        write_bundle(world.app, tmp_path / "other", name="../evil", p12_password=b"x")


# --------------------------------------------------------------------------- index


def test_index_round_trip(world: World) -> None:
    raw = json.loads((world.path / "index.json").read_text())
    assert raw["version"] == 1
    by_serial = {item["serial"]: item for item in raw["certificates"]}
    cert = world.server.certificate
    assert by_serial[world.server.serial] == {
        "serial": serial_hex(cert),
        "ca": "organisations",
        "profile": "server",
        "subject": "CN=mx.hopital.test,OU=SERVEURS,O=MSSGW TEST,C=FR",
        "sans": ["DNS:mx.hopital.test", "IP:192.0.2.10", "IP:2001:db8::1", "DNS:imap.hopital.test"],
        "not_before": iso(world.now - SKEW),
        "not_after": iso(years_later(world.now, 3)),
        "fingerprint_sha256": cert.fingerprint(hashes.SHA256()).hex(),
        "revoked_at": None,
        "revocation_reason": None,
    }
    assert by_serial[world.address.serial]["sans"] == ["email:Jean.Dupont@hopital.test"]
    assert len(by_serial) == len(raw["certificates"])  # serials are unique
    entries = world.pki.entries()
    assert [entry.to_json() for entry in entries] == raw["certificates"]
    assert [IndexEntry.from_json(item) for item in raw["certificates"]] == entries
    assert TrustSpacePKI(world.path).entries() == entries
    assert [(e.ca, e.profile) for e in entries[:3]] == [
        ("root", Profile.ROOT_CA),
        ("root", Profile.INTERMEDIATE_CA),
        ("root", Profile.INTERMEDIATE_CA),
    ]
    assert [e.serial for e in entries[:3]] == [
        serial_hex(world.pki.ca(n)) for n in ("root", "organisations", "personnes")
    ]
    entry = world.pki.find(cert.serial_number)
    assert world.pki.find(world.server.serial.upper()) == entry
    assert world.pki.find("0x" + world.server.serial) == entry
    assert entry.not_after == years_later(world.now, 3)
    assert not list(world.path.glob(".*.tmp"))


def test_concurrent_issuance_keeps_every_entry(world: World) -> None:
    before = {entry.serial for entry in world.pki.entries()}

    def issue_batch(worker: int) -> list[str]:
        pki = TrustSpacePKI(world.path, PASSPHRASE)  # one instance (and lock fd) per worker
        return [pki.issue_app(f"w{worker}-{n}@hopital.test").serial for n in range(4)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        issued = [serial for batch in pool.map(issue_batch, range(4)) for serial in batch]
    after = {entry.serial for entry in world.pki.entries()}
    assert len(set(issued)) == 16
    assert after - before == set(issued)


# --------------------------------------------------------------------------- creation


def test_create_refuses_existing_pki_and_leftovers(world: World, tmp_path: Path) -> None:
    with raises(PKIError, f"PKI already exists at {world.path}"):
        TrustSpacePKI.create(world.path, label=LABEL, crl_base_url=CRL_BASE)
    (tmp_path / "partial" / "root").mkdir(parents=True)
    with raises(PKIError, f"{tmp_path / 'partial'} holds files of an incomplete PKI (root); remove them first"):
        TrustSpacePKI.create(tmp_path / "partial", label=LABEL, crl_base_url=CRL_BASE)
    assert TrustSpacePKI.exists(tmp_path / "partial") is False
    with raises(PKIError, f"PKI not initialised at {tmp_path} (no state.json)"):
        TrustSpacePKI(tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"label": ""}, "label must not be empty"),
        ({"label": " X"}, "label must not contain control characters or leading/trailing spaces"),
        ({"label": "L" * 48}, f"label too long (max 47 characters): '{'L' * 48}'"),
        (
            {"crl_base_url": "ftp://crl.test"},
            "crl_base_url must be an absolute http:// or https:// URL: 'ftp://crl.test'",
        ),
        (
            {"crl_base_url": "http://crl.test/?x=1"},
            "crl_base_url must not have a query or a fragment: 'http://crl.test/?x=1'",
        ),
        ({"key_size": 1024}, "key_size must be one of 2048, 3072, 4096, not 1024"),
        ({"passphrase": b""}, "passphrase must not be empty"),
    ],
)
def test_create_validates_parameters(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"label": LABEL, "crl_base_url": CRL_BASE, **kwargs}
    with raises(ValueError, message):
        TrustSpacePKI.create(tmp_path / "pki", **arguments)  # type: ignore[arg-type]
    assert not (tmp_path / "pki").exists()


def test_unencrypted_pki_and_revoked_intermediate(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    pki = TrustSpacePKI.create(tmp_path / "pki", label="PLAIN", crl_base_url="https://pki.example.test", now=now)
    assert json.loads((tmp_path / "pki" / "state.json").read_text()) == {
        "version": 1,
        "label": "PLAIN",
        "crl_base_url": "https://pki.example.test",
        "key_size": 2048,
        "created_at": iso(now),
        "crl_numbers": {"root": 1, "organisations": 1, "personnes": 1},
    }
    for name in ("root", "organisations", "personnes"):
        assert crl_number(tmp_path / "pki" / "crl" / f"{name}.crl") == 1
        assert (tmp_path / "pki" / name / "key.pem").read_text().startswith("-----BEGIN PRIVATE KEY-----\n")
    with raises(PKIError, "CA key organisations/key.pem is not encrypted but a passphrase was given"):
        TrustSpacePKI(tmp_path / "pki", b"unexpected").issue_server(["a.test"])

    server = pki.issue_server(["node.example.test"])
    write_bundle(server, tmp_path / "node", root=pki.root)
    organisations = pki.ca("organisations")
    entry = pki.revoke(format(organisations.serial_number, "X"), x509.ReasonFlags.ca_compromise, now=now)
    assert (entry.ca, entry.profile, entry.revocation_reason) == (
        "root",
        Profile.INTERMEDIATE_CA,
        "cACompromise",
    )
    with raises(PKIError, "CA organisations is revoked"):
        pki.issue_app("lgc@example.test")
    paths = TrustSpacePKI(tmp_path / "pki").publish_crls(now=now)
    assert {name: crl_number(path) for name, path in paths.items()} == {
        "root": 2,
        "organisations": 2,
        "personnes": 2,
    }
    assert json.loads((tmp_path / "pki" / "state.json").read_text())["crl_numbers"] == {
        "root": 2,
        "organisations": 2,
        "personnes": 2,
    }
    root_crl = x509.load_der_x509_crl(paths["root"].read_bytes())
    assert [r.serial_number for r in root_crl] == [organisations.serial_number]
    result = openssl(
        "verify",
        "-crl_check_all",
        "-CRLfile",
        str(paths["organisations"]),
        "-CRLfile",
        str(paths["root"]),
        "-CAfile",
        "root.pem",
        "-untrusted",
        "chain.pem",
        "cert.pem",
        cwd=tmp_path / "node",
    )
    assert result.returncode == 2
    assert "error 23 at 1 depth lookup: certificate revoked" in result.stdout + result.stderr


# --------------------------------------------------------------------------- input validation


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        ([], "at least one host is required"),
        (["*.hopital.test"], "invalid hostname '*.hopital.test': wildcards are not allowed"),
        (
            ["bad_host.test"],
            "invalid hostname 'bad_host.test': label 'bad_host' must contain only letters, digits and hyphens"
            " and must not start or end with a hyphen",
        ),
        (
            ["-mx.test"],
            "invalid hostname '-mx.test': label '-mx' must contain only letters, digits and hyphens"
            " and must not start or end with a hyphen",
        ),
        (["mx..test"], "invalid hostname 'mx..test': empty label"),
        (["mx.test."], "invalid hostname 'mx.test.': trailing dot not allowed"),
        ([""], "invalid hostname '': empty name"),
        (
            ["hôpital.test"],
            "invalid hostname 'hôpital.test': must be ASCII"
            " (give internationalised names in IDNA A-label form, xn--...)",
        ),
        (["xn--zz.test"], "invalid hostname 'xn--zz.test': invalid IDNA A-label 'xn--zz'"),
        (
            ["ab--cd.test"],
            "invalid hostname 'ab--cd.test': label 'ab--cd' has hyphens in 3rd and 4th positions"
            " (reserved, RFC 5890 §2.3.1)",
        ),
        (
            [f"{'a' * 64}.test"],
            f"invalid hostname '{'a' * 64}.test': label '{'a' * 64}' longer than 63 characters",
        ),
        (["1.2.3.999"], "invalid hostname '1.2.3.999': top-level label must not be all-numeric"),
        (["fe80::1%eth0"], "invalid host 'fe80::1%eth0': IPv6 scope ids are not allowed"),
        (
            [f"{'a' * 60}.test", "b.test"],
            f"first host '{'a' * 60}.test' is too long for the certificate common name (max 64 characters)",
        ),
    ],
)
def test_invalid_hosts(world: World, hosts: list[str], message: str) -> None:
    with raises(ValueError, message):
        world.pki.issue_server(hosts)


def test_hosts_must_not_be_a_single_string(world: World) -> None:
    with raises(TypeError, "hosts must be a sequence of strings, not a single string"):
        world.pki.issue_server("mx.hopital.test")


def test_idna_a_label_accepted(world: World) -> None:
    issued = world.pki.issue_server(["xn--hpital-dva.test"])
    assert list(ext(issued.certificate, x509.SubjectAlternativeName).value) == [x509.DNSName("xn--hpital-dva.test")]


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("lgc.hopital.test", "must contain exactly one '@'"),
        ("a@b@hopital.test", "must contain exactly one '@'"),
        ("@hopital.test", "empty local part"),
        (f"{'x' * 65}@hopital.test", "local part longer than 64 octets"),
        ("jérôme@hopital.test", "local part must be ASCII (internationalised mailboxes are not supported)"),
        ("jean dupont@hopital.test", "local part contains invalid characters: ' '"),
        (".jean@hopital.test", "local part must not start or end with a dot nor contain consecutive dots"),
        (
            "jean..dupont@hopital.test",
            "local part must not start or end with a dot nor contain consecutive dots",
        ),
        ("jean@", "domain empty name"),
        (
            "jean@hop_ital.test",
            "domain label 'hop_ital' must contain only letters, digits and hyphens"
            " and must not start or end with a hyphen",
        ),
        ("jean@*.hopital.test", "domain wildcards are not allowed"),
    ],
)
@pytest.mark.parametrize("method", ["issue_address", "issue_app"])
def test_invalid_addresses(world: World, method: str, address: str, reason: str) -> None:
    with raises(ValueError, f"invalid e-mail address {address!r}: {reason}"):
        getattr(world.pki, method)(address)


def test_address_too_long_for_common_name(world: World) -> None:
    address = f"{'a' * 40}@{'b' * 30}.test"
    message = f"address {address!r} is too long for the certificate common name (max 64 characters)"
    with raises(ValueError, message):
        world.pki.issue_address(address)
