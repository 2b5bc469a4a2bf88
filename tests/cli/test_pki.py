"""`mssgw pki ...` as a subprocess, with `openssl` as the interoperability oracle."""

from __future__ import annotations

import asyncio
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dns.rdatatype
import dns.zonefile
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.pki import TrustSpacePKI
from gateway.node import Node
from gateway.store.mailboxes import PrivateKey
from tests.conftest import DOMAIN, NodeDir

SIGN_ONLY = x509.KeyUsage(
    digital_signature=True,
    content_commitment=True,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, check=False)


def verify(root: Path, bundle: Path, purpose: str, *crls: Path) -> subprocess.CompletedProcess[str]:
    extra: list[str | Path] = ["-crl_check"] if crls else []
    for c in crls:
        extra += ["-CRLfile", c]
    return openssl(
        "verify", "-purpose", purpose, *extra, "-CAfile", root, "-untrusted", bundle / "chain.pem", bundle / "cert.pem"
    )


def test_issue_each_profile_and_verify_with_openssl(node: NodeDir, tmp_path: Path) -> None:
    root = tmp_path / "root.pem"
    r = node.cli("pki", "export-root", root)
    assert r.out.strip() == f"root certificate written to {root}"
    cases = [
        (["issue-server", "mx.clinique.fr", "10.0.0.1"], "sslserver"),
        (["issue-app", f"dpi@{DOMAIN}"], "sslclient"),
        (["issue-address", f"claire.martin@{DOMAIN}"], "smimesign"),
    ]
    for argv, purpose in cases:
        out = tmp_path / argv[0]
        r = node.cli("pki", *argv, "--out", out, "--json")
        assert r.code == 0, r.err
        data = r.json()
        assert data["files"]["cert"] == str(out / "cert.pem")  # type: ignore[index]
        v = verify(root, out, purpose)
        assert v.returncode == 0, v.stdout + v.stderr
        assert v.stdout.strip() == f"{out / 'cert.pem'}: OK"
    # An S/MIME certificate is not a TLS server certificate.
    wrong = verify(root, tmp_path / "issue-address", "sslserver")
    assert wrong.returncode != 0
    assert "error 26 at 0 depth lookup: unsuitable certificate purpose" in wrong.stdout + wrong.stderr


def test_p12_password_is_shown_once_and_opens_the_bundle(node: NodeDir, tmp_path: Path) -> None:
    out = tmp_path / "p12"
    r = node.cli("pki", "issue-address", f"claire.martin@{DOMAIN}", "--out", out, "--p12", "--json")
    data = r.json()
    password = data["p12_password"]  # type: ignore[index]
    p12 = Path(data["files"]["p12"])  # type: ignore[index]
    info = openssl("pkcs12", "-info", "-noout", "-in", p12, "-passin", f"pass:{password}")
    assert info.returncode == 0, info.stderr
    bad = openssl("pkcs12", "-info", "-noout", "-in", p12, "-passin", "pass:wrong")
    assert bad.returncode != 0
    audit = node.cli("audit", "search", "--event", "admin.pki.issued", "--json").json()
    assert all(password not in str(rec) for rec in audit)  # type: ignore[union-attr]


def test_address_certificate_attached_to_a_local_mailbox(node: NodeDir, tmp_path: Path) -> None:
    address = f"claire.martin@{DOMAIN}"
    node.cli("mailbox", "add", address, "--type", "PER", "--idnat", "810000000009")
    r = node.cli("pki", "issue-address", address, "--out", tmp_path / "c", "--json")
    assert r.json()["attached_to"] == address  # type: ignore[index]
    assert r.json()["signing_key_held"] is True  # type: ignore[index]  (the node signs as the address)
    certs = node.cli("mailbox", "show", address, "--json").json()["certificates"]  # type: ignore[index]
    assert [c["usage"] for c in certs] == ["smime"]
    audit = node.cli("audit", "search", "--event", "admin.pki.issued", "--json").json()
    assert "PRIVATE KEY" not in str(audit)


def test_revocation_reaches_the_crl_and_openssl_rejects_the_certificate(node: NodeDir, tmp_path: Path) -> None:
    root = tmp_path / "root.pem"
    node.cli("pki", "export-root", root)
    revoked, kept = tmp_path / "revoked", tmp_path / "kept"
    serial = node.cli("pki", "issue-server", "a.clinique.fr", "--out", revoked, "--json").json()["serial"]  # type: ignore[index]
    node.cli("pki", "issue-server", "b.clinique.fr", "--out", kept)
    r = node.cli("pki", "revoke", serial, "--reason", "keyCompromise", "--json")
    assert r.code == 0, r.err
    assert r.json()["reason"] == "keyCompromise"  # type: ignore[index]
    crl_dir = node.data / "pki" / "crl"
    crls = (crl_dir / "organisations.pem", crl_dir / "root.pem")
    v = verify(root, revoked, "sslserver", *crls)
    assert v.returncode != 0
    assert "certificate revoked" in v.stdout + v.stderr
    assert verify(root, kept, "sslserver", *crls).returncode == 0
    text = openssl("crl", "-noout", "-text", "-in", crls[0]).stdout
    shown = serial.upper().zfill(len(serial) + len(serial) % 2)  # openssl prints whole octets
    assert f"Serial Number: {shown}" in text
    assert "Key Compromise" in text
    listing = {e["serial"]: e for e in node.cli("pki", "list", "--json").json()}  # type: ignore[union-attr]
    assert listing[serial]["revocation_reason"] == "keyCompromise"


def test_issue_domain_for_an_organisation_rotation(node: NodeDir, tmp_path: Path) -> None:
    root = tmp_path / "root.pem"
    assert node.cli("pki", "export-root", root).code == 0
    out = tmp_path / "domain"
    r = node.cli("pki", "issue-domain", "--out", out, "--json")
    assert r.code == 0, r.err
    data = r.json()
    assert data["subject"].startswith(f"CN={DOMAIN},")  # type: ignore[index]
    v = verify(root, out, "smimesign")
    assert v.stdout.strip() == f"{out / 'cert.pem'}: OK", v.stdout + v.stderr
    cert = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [DOMAIN, f"patient.{DOMAIN}"]  # the node's two domains
    audit = node.cli("audit", "search", "--event", "admin.pki.issued", "--json").json()
    assert audit[-1]["response"]["serial"] == data["serial"]  # type: ignore[index]
    # Only this node's mail domains: a peer binding a signer to its sender's domain refuses any other.
    r = node.cli("pki", "issue-domain", "clinique-b.mssante.fr", "--out", tmp_path / "other")
    assert (r.code, r.err.strip()) == (
        2,
        f"mssgw: clinique-b.mssante.fr is not a mail domain of this node ({DOMAIN}, patient.{DOMAIN})",
    )
    assert not (tmp_path / "other").exists()
    audit = node.cli("audit", "search", "--event", "admin.pki.issued", "--json").json()
    assert audit[-1]["response"] == {  # type: ignore[index]
        "result": "refused",
        "reason": f"clinique-b.mssante.fr is not a mail domain of this node ({DOMAIN}, patient.{DOMAIN})",
    }


def test_pki_refusals(node: NodeDir, tmp_path: Path) -> None:
    r = node.cli("pki", "revoke", "abcdef", "--reason", "superseded")
    assert (r.code, r.err.strip()) == (2, "mssgw: unknown serial number: abcdef")
    r = node.cli("pki", "revoke", "abcdef", "--reason", "bored")
    assert r.code == 2
    assert r.err.startswith("mssgw: unknown revocation reason 'bored'")
    r = node.cli("pki", "issue-address", "not-an-address", "--out", tmp_path / "x")
    assert r.code == 2
    assert r.err.startswith("mssgw: ")
    assert not (tmp_path / "x").exists()
    r = node.cli("pki", "init")
    assert (r.code, r.err.strip()) == (2, f"mssgw: PKI already exists at {node.data / 'pki'}")


def test_output_paths_are_checked_before_anything_is_issued(node: NodeDir, tmp_path: Path) -> None:
    """A bad --out or file is a precise refusal (it was an internal error), and no certificate is issued
    that nobody holds the key of."""
    before = node.cli("pki", "list", "--json").json()
    r = node.cli("pki", "export-root", tmp_path / "nope" / "root.pem")
    assert (r.code, r.err.strip()) == (2, f"mssgw: {tmp_path / 'nope' / 'root.pem'}: No such file or directory")
    taken = tmp_path / "taken"
    assert node.cli("pki", "issue-address", f"claire.martin@{DOMAIN}", "--out", taken).code == 0
    issued = node.cli("pki", "list", "--json").json()
    r = node.cli("pki", "issue-address", f"claire.martin@{DOMAIN}", "--out", taken)
    assert (r.code, r.err.strip()) == (
        2,
        f"mssgw: bundle files already exist in {taken}: cert.pem, chain.pem, fullchain.pem, key.pem, root.pem",
    )
    afile = tmp_path / "a-file"
    afile.write_text("")
    r = node.cli("pki", "issue-app", f"dpi@{DOMAIN}", "--out", afile / "sub")
    assert (r.code, r.err.strip()) == (2, f"mssgw: {afile / 'sub'}: cannot be made in {afile}")
    assert node.cli("pki", "list", "--json").json() == issued
    assert len(issued) == len(before) + 1  # type: ignore[arg-type]


def test_publish_dns_prints_cert_records_a_zone_reader_reads_back(node: NodeDir, tmp_path: Path) -> None:
    claire, gone, plain = f"claire.martin@{DOMAIN}", f"ancien@{DOMAIN}", f"secretariat@{DOMAIN}"
    node.cli("mailbox", "add", claire, "--type", "PER", "--idnat", "810000000009")
    node.cli("mailbox", "add", gone, "--type", "ORG", "--service", "Ancien")
    node.cli("mailbox", "add", plain, "--type", "ORG", "--service", "Secrétariat")
    node.cli("pki", "issue-address", claire, "--out", tmp_path / "claire")
    node.cli("pki", "issue-address", gone, "--out", tmp_path / "gone")
    node.cli("mailbox", "disable", gone)
    node.cli("pki", "issue-app", plain, "--out", tmp_path / "app")  # TLS, not S/MIME: not published
    domain = TrustSpacePKI(node.data / "pki").issue_domain(DOMAIN).certificate
    (tmp_path / "domain.pem").write_bytes(domain.public_bytes(serialization.Encoding.PEM))
    address_cert = x509.load_pem_x509_certificate((tmp_path / "claire" / "cert.pem").read_bytes())

    r = node.cli("pki", "publish-dns", "--domain-cert", tmp_path / "domain.pem")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert [line.split(" ", 5)[:5] for line in lines] == [
        [f"claire.martin.{DOMAIN}.", "IN", "CERT", "PKIX", "0"],
        [f"{DOMAIN}.", "IN", "CERT", "PKIX", "0"],
    ]
    rrsets = dns.zonefile.read_rrsets(r.out, default_ttl=3600, rdclass=None)
    assert [(rs.name.to_text(), rs.rdtype, len(rs)) for rs in rrsets] == [
        (f"claire.martin.{DOMAIN}.", dns.rdatatype.CERT, 1),
        (f"{DOMAIN}.", dns.rdatatype.CERT, 1),
    ]
    for rrset, cert in zip(rrsets, [address_cert, domain], strict=True):
        rd = rrset[0]
        assert (rd.certificate_type, rd.key_tag, rd.algorithm) == (1, 0, 0)
        assert rd.certificate == cert.public_bytes(serialization.Encoding.DER)

    data = node.cli("pki", "publish-dns", "--domain-cert", tmp_path / "domain.pem", "--json").json()
    assert [(rec["name"], rec["binding"], rec["owner"]) for rec in data["records"]] == [  # type: ignore[index]
        (f"claire.martin.{DOMAIN}.", "address", claire),
        (f"{DOMAIN}.", "domain", DOMAIN),
    ]
    assert [rec["line"] for rec in data["records"]] == lines  # type: ignore[index]
    assert data["skipped"] == []  # type: ignore[index]
    audit = node.cli("audit", "search", "--event", "admin.pki.dns_published", "--json").json()
    assert [rec["response"] for rec in audit] == [  # type: ignore[union-attr,index]
        {"result": "done", "records": 2, "skipped": 0, "domains": [DOMAIN]}
    ] * 2


def test_publish_dns_refusals(node: NodeDir, tmp_path: Path) -> None:
    r = node.cli("pki", "publish-dns")
    assert (r.code, r.out.strip()) == (0, "; no certificate to publish")
    pki = TrustSpacePKI(node.data / "pki")
    foreign = "names no mail domain of this node (dNSName)"
    cases = {
        "server.pem": (pki.issue_server([f"mx.{DOMAIN}"]).certificate, "is not an e-mail protection certificate"),
        "other.pem": (pki.issue_domain("ch-autre.mssante.fr").certificate, foreign),
        "address.pem": (pki.issue_address(f"x@{DOMAIN}").certificate, foreign),
    }
    for name, (cert, reason) in cases.items():
        (tmp_path / name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        r = node.cli("pki", "publish-dns", "--domain-cert", tmp_path / name)
        subject = cert.subject.rfc4514_string()
        assert (r.code, r.out, r.err.strip()) == (2, "", f"mssgw: {tmp_path / name}: {subject} {reason}")
    r = node.cli("pki", "publish-dns", "--domain-cert", tmp_path / "missing.pem")
    assert (r.code, r.err.strip()) == (2, f"mssgw: cannot read {tmp_path / 'missing.pem'}: No such file or directory")
    (tmp_path / "junk.pem").write_text("junk")
    r = node.cli("pki", "publish-dns", "--domain-cert", tmp_path / "junk.pem")
    assert (r.code, r.err.strip()) == (2, f"mssgw: {tmp_path / 'junk.pem'} holds no PEM certificate")


def _self_signed(
    address: str,
    tmp_path: Path,
    *,
    key: PrivateKey | None = None,
    usage: x509.KeyUsage | None = None,
    name: str = "foreign",
) -> tuple[Path, Path]:
    """A certificate and key for `address` from no trust-space authority."""
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
    )
    if usage is not None:
        builder = builder.add_extension(usage, critical=True)
    cert = builder.sign(key, hashes.SHA256())
    cert_path, key_path = tmp_path / f"{name}-cert.pem", tmp_path / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def _p12_bundle(node: NodeDir, address: str, tmp_path: Path) -> dict[str, str]:
    """`issue-address` with a PKCS#12 (password Pass-Douze-12) for an address without a mailbox yet, as a
    national PKI would issue it: nothing is attached."""
    r = node.cli(
        "pki",
        "issue-address",
        address,
        "--out",
        tmp_path / address,
        "--p12",
        "--p12-password-stdin",
        "--json",
        input="Pass-Douze-12\n",
    )
    assert r.code == 0, r.err
    assert "attached_to" not in r.json()  # type: ignore[operator]
    return r.json()["files"]  # type: ignore[index,no-any-return]


def test_attach_an_address_certificate_issued_elsewhere(node: NodeDir, tmp_path: Path) -> None:
    claire, lucas = f"claire.martin@{DOMAIN}", f"lucas.bernard@{DOMAIN}"
    # Issued before the mailboxes exist, as a national PKI would.
    bundles = {address: _p12_bundle(node, address, tmp_path) for address in (claire, lucas)}
    for address, idnat in ((claire, "810000000009"), (lucas, "810000000017")):
        assert node.cli("mailbox", "add", address, "--type", "PER", "--idnat", idnat).code == 0
    # PKCS#12, its password on standard input.
    r = node.cli(
        "pki",
        "attach-address",
        claire,
        "--p12",
        bundles[claire]["p12"],
        "--password-stdin",
        "--json",
        input="Pass-Douze-12\n",
    )
    assert r.code == 0, r.err
    cert = x509.load_pem_x509_certificate(Path(bundles[claire]["cert"]).read_bytes())
    fingerprint = cert.fingerprint(hashes.SHA256()).hex()
    assert r.json()["fingerprint"] == fingerprint  # type: ignore[index]
    assert r.json()["signing_key_held"] is True  # type: ignore[index]
    # PEM: the certificate with its chain after it, and the key.
    r = node.cli("pki", "attach-address", lucas, "--cert", bundles[lucas]["fullchain"], "--key", bundles[lucas]["key"])
    assert r.code == 0, r.err
    assert r.out.startswith(f"attached CN={lucas}")

    async def identity() -> bytes | None:
        async with Node(node.cfg()) as n:
            found = await n.mailboxes.signing_identity(claire)
            return found.certificate if found else None

    # What the node now signs and decrypts as Claire with.
    assert asyncio.run(identity()) == cert.public_bytes(serialization.Encoding.DER)
    audit = node.cli("audit", "search", "--event", "admin.pki.attached", "--json").json()
    assert [(e["principal"] or e["request"]["address"], e["response"]["result"]) for e in audit] == [  # type: ignore[union-attr,index]
        (claire, "done"),
        (lucas, "done"),
    ]
    assert audit[0]["response"]["fingerprint"] == fingerprint  # type: ignore[index]
    assert "PRIVATE KEY" not in str(audit)
    assert "Pass-Douze" not in str(audit)


def test_attach_address_refusals(node: NodeDir, tmp_path: Path) -> None:
    claire, other = f"claire.martin@{DOMAIN}", f"paul.durand@{DOMAIN}"
    assert node.cli("mailbox", "add", claire, "--type", "PER", "--idnat", "810000000009").code == 0
    # A certificate of Claire's, then revoked: its CRL is in the node's CRL directory at once.
    mine = node.cli("pki", "issue-address", claire, "--out", tmp_path / "mine", "--json").json()
    assert node.cli("pki", "revoke", mine["serial"], "--reason", "keyCompromise").code == 0  # type: ignore[index]
    domain = node.cli("pki", "issue-domain", "--out", tmp_path / "domain", "--json").json()["files"]  # type: ignore[index]
    foreign_cert, foreign_key = _self_signed(claire, tmp_path)
    ec_cert, ec_key = _self_signed(claire, tmp_path, key=ec.generate_private_key(ec.SECP256R1()), name="ec")
    sign_cert, sign_key = _self_signed(claire, tmp_path, usage=SIGN_ONLY, name="sign-only")
    p12 = _p12_bundle(node, other, tmp_path)["p12"]
    refused = "mssgw: not attached: every peer would refuse this certificate: "
    wrong_password = f"mssgw: {p12}: not a PKCS#12 file, the wrong password, or an unsupported algorithm"
    cases = [
        (
            [claire, "--p12", p12, "--password-stdin"],
            "Wrong-Password\n",
            wrong_password,
        ),
        (
            [claire, "--p12", p12, "--password-stdin"],
            "Pass-Douze-12\n",
            refused + "the signer's certificate is not bound to the sender address (sender-mismatch)",
        ),
        (
            [claire, "--cert", mine["files"]["fullchain"], "--key", mine["files"]["key"]],
            None,  # type: ignore[index]
            refused + "the signer's certificate is revoked (revoked)",
        ),
        (
            [claire, "--cert", foreign_cert, "--key", foreign_key],
            None,
            refused + "the signer's certificate does not chain to a trust-space authority (untrusted)",
        ),
        (
            [claire, "--cert", domain["fullchain"], "--key", domain["key"]],
            None,
            "mssgw: not attached: the certificate names the domain, not the address (a domain certificate is "
            "configured as [[smime.organisation]])",
        ),
        (
            [claire, "--cert", tmp_path / "missing.pem", "--key", foreign_key],
            None,
            f"mssgw: cannot read {tmp_path / 'missing.pem'}: No such file or directory",
        ),
        ([claire, "--cert", foreign_cert], None, "mssgw: --cert FILE needs --key FILE"),
        (
            [claire, "--cert", ec_cert, "--key", ec_key],
            None,
            "mssgw: the key must be RSA: the node signs and decrypts with it (RSA key transport)",
        ),
        (
            [claire, "--cert", sign_cert, "--key", sign_key],
            None,
            "mssgw: the certificate's key usage must allow signing and key encipherment: the node signs and "
            "decrypts as the address with one certificate",
        ),
        (
            [claire, "--cert", foreign_cert, "--key", foreign_key, "--password-stdin"],
            "Pass-Douze-12\n",
            f"mssgw: {foreign_key}: the key is not encrypted: leave out --password-stdin",
        ),
        (
            [f"nobody@{DOMAIN}", "--cert", foreign_cert, "--key", foreign_key],
            None,
            f"mssgw: no local mailbox nobody@{DOMAIN}",
        ),
        (
            [f"123456789012345@patient.{DOMAIN}", "--cert", foreign_cert, "--key", foreign_key],
            None,
            "mssgw: patient mailboxes hold no keys: the operator signs for them with its domain certificate",
        ),
    ]
    for argv, stdin, message in cases:
        r = node.cli("pki", "attach-address", *argv, input=stdin)
        assert (r.code, r.err.strip()) == (2, message), argv
    # A valid certificate of Claire's with another's key: the key must be the certificate's.
    good = node.cli("pki", "issue-address", claire, "--out", tmp_path / "good", "--json").json()["files"]  # type: ignore[index]
    r = node.cli("pki", "attach-address", claire, "--cert", good["fullchain"], "--key", foreign_key)
    assert (r.code, r.err.strip()) == (2, "mssgw: the private key does not match the certificate")
    audit = node.cli("audit", "search", "--event", "admin.pki.attached", "--json").json()
    assert [e["response"]["result"] for e in audit] == ["refused"] * (len(cases) + 1)  # type: ignore[union-attr,index]
    assert (
        audit[0]["response"]["reason"] == f"{p12}: not a PKCS#12 file, the wrong password, or an unsupported algorithm"
    )  # type: ignore[index]
    # Nothing was attached by any of them: Claire signs with the certificate issue-address attached itself.
    certs = node.cli("mailbox", "show", claire, "--json").json()["certificates"]  # type: ignore[index]
    assert len(certs) == 2  # the revoked one and the good one, both from issue-address (attached there)


def test_no_address_certificate_for_a_patient(node: NodeDir, tmp_path: Path) -> None:
    """As attach-address: the operator signs for patients with its domain certificate."""
    before = node.cli("pki", "list", "--json").json()
    r = node.cli("pki", "issue-address", f"285037512345688@patient.{DOMAIN}", "--out", tmp_path / "p")
    assert (r.code, r.err.strip()) == (
        2,
        "mssgw: patient mailboxes hold no keys: the operator signs for them with its domain certificate",
    )
    assert node.cli("pki", "list", "--json").json() == before
