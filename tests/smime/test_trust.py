"""gateway/smime/trust.py: the receive matrix of the domain brief §9 for the signer's certificate, with
certificates of a real trust-space PKI (certs.pki) and its published CRLs."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from certs.pki import TrustSpacePKI
from gateway.smime.trust import (
    PATH_MAX_CARRIED,
    PATH_MAX_PER_SUBJECT,
    REASONS,
    RECIPIENT,
    SignerVerdict,
    TrustStore,
    binding,
    ocsp_urls,
    path_candidates,
)

NOW = dt.datetime.now(dt.UTC)
ALICE = "alice.martin@ch-a.mssante.fr"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TrustSpacePKI:
    # made four years ago: room for a certificate that has since expired
    return TrustSpacePKI.create(
        tmp_path_factory.mktemp("trust") / "pki",
        label="Trust Test",
        crl_base_url="http://crl.test/",
        now=NOW - dt.timedelta(days=4 * 365),
    )


def store(pki: TrustSpacePKI, *, crls: bool = True, cas: bool = False) -> TrustStore:
    """`cas`: the trust space's intermediate CAs configured too (as a node has them), not only carried."""
    published = pki.publish_crls(now=NOW - dt.timedelta(minutes=5)) if crls else {}
    intermediates = [pki.ca("personnes"), pki.ca("organisations")] if cas else []
    return TrustStore([pki.root], [p.read_bytes() for p in published.values()], intermediates)


async def verdict(trust: TrustStore, issued: object, *addresses: str) -> tuple[bool, str, str]:
    cert, chain = issued.certificate, issued.chain  # type: ignore[attr-defined]
    v = await trust.check(cert, list(chain), addresses or (ALICE, ALICE))
    return v.ok, v.reason, v.binding


async def test_a_valid_address_bound_signer(pki: TrustSpacePKI) -> None:
    alice = pki.issue_address(ALICE)
    assert await verdict(store(pki), alice) == (True, "", "address")


async def test_a_mixed_case_sender_still_matches(pki: TrustSpacePKI) -> None:
    alice = pki.issue_address(ALICE)
    assert await verdict(store(pki), alice, "Alice.Martin@CH-A.mssante.fr", ALICE) == (True, "", "address")


async def test_a_revoked_signer(pki: TrustSpacePKI) -> None:
    alice = pki.issue_address(ALICE)
    pki.revoke(alice.serial, x509.ReasonFlags.key_compromise, now=NOW - dt.timedelta(hours=1))
    assert await verdict(store(pki), alice) == (False, "revoked", "")


async def test_an_expired_signer(pki: TrustSpacePKI) -> None:
    old = pki.issue_address(ALICE, now=NOW - dt.timedelta(days=4 * 365 - 2))  # three years: over a year ago
    assert old.certificate.not_valid_after_utc < NOW
    assert await verdict(store(pki), old) == (False, "expired", "")


async def test_a_signer_of_another_trust_space(pki: TrustSpacePKI, tmp_path: Path) -> None:
    other = TrustSpacePKI.create(tmp_path / "other", label="Elsewhere", crl_base_url="http://crl.elsewhere/")
    stranger = other.issue_address(ALICE)
    assert await verdict(store(pki), stranger) == (False, "untrusted", "")


async def test_without_a_revocation_list(pki: TrustSpacePKI) -> None:
    alice = pki.issue_address(ALICE)
    assert await verdict(store(pki, crls=False), alice) == (False, "no-revocation-info", "")


async def test_a_certificate_not_for_email(pki: TrustSpacePKI) -> None:
    server = pki.issue_server(["ch-a.mssante.fr"])  # domain-bound by its dNSName, but serverAuth/clientAuth
    assert await verdict(store(pki), server) == (False, "no-email-protection", "")


async def test_sender_mismatch_envelope_or_from(pki: TrustSpacePKI) -> None:
    alice = pki.issue_address(ALICE)
    trust = store(pki)
    assert await verdict(trust, alice, "bob.durand@ch-a.mssante.fr", ALICE) == (False, "sender-mismatch", "")
    assert await verdict(trust, alice, ALICE, "bob.durand@ch-a.mssante.fr") == (False, "sender-mismatch", "")


def custom(
    pki: TrustSpacePKI,
    address: str,
    *,
    signing: bool = True,
    enciphering: bool = True,
    non_repudiation: bool = False,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | None = None,
    ocsp_url: str | None = None,
) -> tuple[x509.Certificate, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey]:
    """An address-bound certificate of the PERSONNES CA with the keyUsage bits asked for (the PKI's
    profiles always have digitalSignature + keyEncipherment), and its key."""
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = pki.ca("personnes")
    usage = x509.KeyUsage(signing, non_repudiation, enciphering, False, False, False, False, False, False)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
        .not_valid_after(dt.datetime.now(dt.UTC) + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()), critical=False)  # type: ignore[arg-type]
    )
    if ocsp_url:
        where = x509.UniformResourceIdentifier(ocsp_url)
        access = x509.AuthorityInformationAccess([x509.AccessDescription(AuthorityInformationAccessOID.OCSP, where)])
        builder = builder.add_extension(access, critical=False)
    return builder.sign(pki._ca_key("personnes"), hashes.SHA256()), key  # type: ignore[arg-type]


async def test_key_usage_for_each_purpose(pki: TrustSpacePKI) -> None:
    """RFC 8550 §4.4.2: a signer needs digitalSignature or nonRepudiation; a recipient we encrypt to by
    RSA key transport needs keyEncipherment."""
    trust = store(pki, cas=True)
    signing_only, _ = custom(pki, ALICE, enciphering=False)
    enciphering_only, _ = custom(pki, ALICE, signing=False)
    non_repudiation_only, _ = custom(pki, ALICE, signing=False, enciphering=False, non_repudiation=True)
    assert await trust.check(signing_only, [], [ALICE]) == SignerVerdict(signing_only, True, binding="address")
    assert await trust.check(non_repudiation_only, [], [ALICE]) == SignerVerdict(
        non_repudiation_only, True, binding="address"
    )
    v = await trust.check(enciphering_only, [], [ALICE])
    assert (v.ok, v.reason, v.text) == (False, "not-for-signing", REASONS["not-for-signing"])
    assert await trust.check(enciphering_only, [], [ALICE], purpose=RECIPIENT) == SignerVerdict(
        enciphering_only, True, binding="address"
    )
    v = await trust.check(signing_only, [], [ALICE], purpose=RECIPIENT)
    assert (v.ok, v.reason, v.text) == (False, "not-for-encryption", REASONS["not-for-encryption"])


async def test_an_ec_key_signs_but_takes_no_key_transport(pki: TrustSpacePKI) -> None:
    """P-256 is a strong signer key; as a recipient it is refused here, since cms.encrypt only does RSA
    key transport (it would otherwise fail the whole message for every recipient)."""
    trust = store(pki, cas=True)
    cert, _ = custom(pki, ALICE, enciphering=False, key=ec.generate_private_key(ec.SECP256R1()))
    assert await trust.check(cert, [], [ALICE]) == SignerVerdict(cert, True, binding="address")
    v = await trust.check(cert, [], [ALICE], purpose=RECIPIENT)
    assert (v.ok, v.reason, v.text) == (False, "no-key-transport", REASONS["no-key-transport"])


def handmade(bits: int, digest: hashes.HashAlgorithm, san: list[x509.GeneralName]) -> x509.Certificate:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "handmade")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .sign(key, digest)
    )


@pytest.fixture
def sha1_cert(tmp_path: Path) -> x509.Certificate:
    """cryptography refuses to sign with SHA-1; openssl still does."""
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-sha1", "-nodes", "-subj", "/CN=sha1", "-days", "30"),
            *("-addext", f"subjectAltName=email:{ALICE}", "-keyout", tmp_path / "k.pem", "-out", tmp_path / "c.pem"),
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return x509.load_pem_x509_certificate((tmp_path / "c.pem").read_bytes())


async def test_a_1024_bit_key_and_a_sha1_certificate(pki: TrustSpacePKI, sha1_cert: x509.Certificate) -> None:
    trust = store(pki)
    weak = handmade(1024, hashes.SHA256(), [x509.RFC822Name(ALICE)])
    v = await trust.check(weak, [], [ALICE])
    assert (v.ok, v.reason, v.text) == (False, "weak-key", REASONS["weak-key"])
    assert await trust.check(sha1_cert, [], [ALICE]) == SignerVerdict(sha1_cert, False, "weak-algorithm")


async def test_a_self_signed_signer_is_untrusted_not_misused(pki: TrustSpacePKI) -> None:
    # pyhanko-certvalidator reports a self-signed certificate without a path as an invalid certificate, the
    # error it also gives a wrong key usage: the reason must still say that no authority vouches for it.
    mine = handmade(2048, hashes.SHA256(), [x509.RFC822Name(ALICE)])
    assert await store(pki).check(mine, [], [ALICE]) == SignerVerdict(mine, False, "untrusted")


def test_binding_address_domain_and_neither() -> None:
    cert = handmade(2048, hashes.SHA256(), [x509.RFC822Name("Alice@CH-A.mssante.fr"), x509.DNSName("ch-b.mssante.fr")])
    assert binding(cert, [ALICE.replace(".martin", "")]) == "address"
    assert binding(cert, ["secretariat@ch-b.mssante.fr", "accueil@CH-B.mssante.fr"]) == "domain"
    assert binding(cert, ["alice@ch-a.mssante.fr", "secretariat@ch-b.mssante.fr"]) == "domain"  # the weaker
    assert binding(cert, ["bob@ch-a.mssante.fr"]) is None
    assert binding(cert, ["no-at-sign"]) is None
    nosan = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.subject)
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=1))
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert binding(nosan.public_key(key.public_key()).sign(key, hashes.SHA256()), [ALICE]) is None


# -- OCSP (RFC 6960) for certificates that name a responder ---------------------------------------------


class Responder:
    """An OCSP responder on loopback, answering for the PERSONNES CA with the status it is told."""

    def __init__(self, pki: TrustSpacePKI) -> None:
        from cryptography.hazmat.primitives import serialization

        self.pki = pki
        self.ca = pki.ca("personnes")
        self.key = serialization.load_pem_private_key((pki.path / "personnes" / "key.pem").read_bytes(), None)
        self.certificates: dict[int, x509.Certificate] = {}  # what it answers for
        self.revoked: set[int] = set()
        self.asked = 0
        self.split = False  # send the response in two parts, 0.2 s apart (two TCP segments)

    async def handle(self, request: object) -> object:
        from aiohttp import web
        from cryptography.x509 import ocsp

        assert isinstance(request, web.Request)
        self.asked += 1
        asked = ocsp.load_der_ocsp_request(await request.read())
        cert = self.certificates[asked.serial_number]
        now = dt.datetime.now(dt.UTC)
        status = ocsp.OCSPCertStatus.REVOKED if asked.serial_number in self.revoked else ocsp.OCSPCertStatus.GOOD
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response(
                cert=cert,
                issuer=self.ca,
                algorithm=hashes.SHA256(),
                cert_status=status,
                this_update=now - dt.timedelta(minutes=1),
                next_update=now + dt.timedelta(hours=1),
                revocation_time=now - dt.timedelta(minutes=5) if status is ocsp.OCSPCertStatus.REVOKED else None,
                revocation_reason=x509.ReasonFlags.key_compromise if status is ocsp.OCSPCertStatus.REVOKED else None,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, self.ca)
        )
        from cryptography.hazmat.primitives import serialization

        body = builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)  # type: ignore[arg-type]
        if not self.split:
            return web.Response(body=body, content_type="application/ocsp-response")
        response = web.StreamResponse(headers={"Content-Type": "application/ocsp-response"})
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body[:100])
        await asyncio.sleep(0.2)
        await response.write(body[100:])
        await response.write_eof()
        return response


@contextlib.asynccontextmanager
async def ocsp_responder(pki: TrustSpacePKI) -> AsyncIterator[tuple[Responder, str]]:
    """A Responder served on loopback, and its URL."""
    from aiohttp import web

    responder = Responder(pki)
    app = web.Application()
    app.router.add_post("/ocsp", responder.handle)  # type: ignore[arg-type]
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield responder, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/ocsp"  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


async def test_ocsp_says_revoked_when_the_crl_does_not_yet(pki: TrustSpacePKI) -> None:
    from gateway.smime.trust import OcspFetcher

    async with ocsp_responder(pki) as (responder, url):
        good = pki.issue_address(ALICE, ocsp_url=url)
        bad = pki.issue_address(ALICE, ocsp_url=url)
        responder.certificates = {c.certificate.serial_number: c.certificate for c in (good, bad)}
        responder.revoked.add(bad.certificate.serial_number)
        trust = store(pki, cas=True)  # CRLs published now: neither is on them
        trust.ocsp = OcspFetcher()
        assert await verdict(trust, good) == (True, "", "address")
        assert await verdict(trust, bad) == (False, "revoked", "")
        assert responder.asked == 2
        assert await verdict(trust, good) == (True, "", "address")
        assert responder.asked == 2  # answered from the cache until the response's nextUpdate
        # A response that comes in two parts is read whole (the first part alone did not parse: the CRLs
        # then decided, and the revoked certificate passed).
        responder.split = True
        later = pki.issue_address(ALICE, ocsp_url=url)
        responder.certificates[later.certificate.serial_number] = later.certificate
        responder.revoked.add(later.certificate.serial_number)
        assert await verdict(trust, later) == (False, "revoked", "")
        assert responder.asked == 3
    # The responder gone: the CRLs decide, in the same hard-fail mode.
    trust = store(pki, cas=True)
    trust.ocsp = OcspFetcher(timeout=2)
    assert await verdict(trust, pki.issue_address(ALICE, ocsp_url=url)) == (True, "", "address")


async def test_ocsp_is_asked_only_for_an_issuer_of_the_trust_space(pki: TrustSpacePKI, tmp_path: Path) -> None:
    """An issuer carried in the message vouches for nothing: its certificates' responder URLs are the
    sender's choice of where we connect (and each one a wait on the peer's DATA reply)."""
    from gateway.smime.trust import OcspFetcher

    async with ocsp_responder(pki) as (responder, url):
        other = TrustSpacePKI.create(tmp_path / "other", label="Elsewhere", crl_base_url="http://crl.elsewhere/")
        stranger = other.issue_address(ALICE, ocsp_url=url)
        ours = pki.issue_address(ALICE, ocsp_url=url)
        responder.certificates = {ours.certificate.serial_number: ours.certificate}
        trust = store(pki)  # no CA configured: each issuer is only among the certificates carried
        trust.ocsp = OcspFetcher()
        assert await verdict(trust, stranger) == (False, "untrusted", "")
        assert await verdict(trust, ours) == (True, "", "address")  # the CRLs decide
        assert responder.asked == 0
        trust = store(pki, cas=True)
        trust.ocsp = OcspFetcher()
        assert await verdict(trust, ours) == (True, "", "address")
        assert responder.asked == 1
        # The trust-space CA's name on a certificate it did not sign (anyone's key, ours copied): no OCSP.
        forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        genuine = ours.certificate
        builder = (
            x509.CertificateBuilder()
            .subject_name(genuine.subject)
            .issuer_name(genuine.issuer)
            .public_key(forger.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(genuine.not_valid_before_utc)
            .not_valid_after(genuine.not_valid_after_utc)
        )
        for extension in genuine.extensions:
            builder = builder.add_extension(extension.value, extension.critical)
        forged = builder.sign(forger, hashes.SHA256())
        assert ocsp_urls(forged) == [url]
        trust.ocsp = OcspFetcher()
        outcome = await trust.check(forged, [], [ALICE])
        assert (outcome.ok, outcome.reason, responder.asked) == (False, "untrusted", 1)


async def test_a_path_outcome_is_reused_until_the_crls_change(
    pki: TrustSpacePKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second check of a signer skips pyhanko's path building; new CRLs (a revocation) end that."""
    alice = pki.issue_address(ALICE)
    trust = store(pki)
    validations: list[str] = []
    real = TrustStore._validate

    async def counted(self: TrustStore, *args: object) -> str:
        reason = await real(self, *args)  # type: ignore[arg-type]
        validations.append(reason)
        return reason

    monkeypatch.setattr(TrustStore, "_validate", counted)
    assert await verdict(trust, alice) == (True, "", "address")
    assert await verdict(trust, alice) == (True, "", "address")
    assert validations == [""]
    # The binding depends on the message, not the path: it is judged every time.
    assert await verdict(trust, alice, "bob@ch-a.mssante.fr", ALICE) == (False, "sender-mismatch", "")
    pki.revoke(alice.serial, x509.ReasonFlags.key_compromise, now=NOW - dt.timedelta(hours=1))
    trust.set_crls([p.read_bytes() for p in pki.publish_crls(now=NOW - dt.timedelta(minutes=5)).values()])
    assert await verdict(trust, alice) == (False, "revoked", "")
    assert validations == ["", "revoked"]
    # A check at a given moment is never answered from (nor stored in) the cache.
    v = await trust.check(alice.certificate, list(alice.chain), (ALICE,), at=dt.datetime.now(dt.UTC))
    assert (v.ok, v.reason) == (False, "revoked")
    assert validations == ["", "revoked", "revoked"]


async def test_a_path_outcome_lasts_no_longer_than_the_next_crl(pki: TrustSpacePKI) -> None:
    alice = pki.issue_address(ALICE)
    trust = store(pki)
    next_updates = [c["tbs_cert_list"]["next_update"].native.timestamp() for c in trust.crls]
    assert len(next_updates) == 3  # one per CA of the development PKI
    until = trust._valid_until(alice.certificate, list(alice.chain))
    assert until <= min(next_updates)
    assert until <= dt.datetime.now(dt.UTC).timestamp() + 300


def _named(
    subject: str,
    issuer: str,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    signer: ec.EllipticCurvePrivateKey,
    *,
    address: str | None = None,
) -> x509.Certificate:
    """A certificate of `subject` under `issuer`'s name, without key identifiers (any certificate of that
    name is an issuer candidate): a CA, or with `address` an end entity for it."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=address is None, path_length=None), critical=True)
    )
    if address is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False)
    return builder.sign(signer, hashes.SHA256())


async def test_carried_certificates_cannot_make_path_building_explode(pki: TrustSpacePKI) -> None:
    """Eight layers of five same-named CA certificates each (40, about 12 KB: one DNS CERT answer, one
    LDAP value, or a signed message's certificates) behind a certificate that passes every other check:
    path building would try 5^8 paths on the event loop (27 s here before the bound). At most
    PATH_MAX_CARRIED carried CA certificates, PATH_MAX_PER_SUBJECT of a subject, are offered."""
    keys = [[ec.generate_private_key(ec.SECP256R1()) for _ in range(5)] for _ in range(10)]
    layers = [_named(f"L{i}", f"L{i + 1}", keys[i][j], keys[i + 1][0]) for i in range(1, 9) for j in range(5)]
    signer, _ = custom(pki, ALICE)
    mine = _named(
        "alice", "L1", rsa.generate_private_key(public_exponent=65537, key_size=2048), keys[1][0], address=ALICE
    )
    offered = path_candidates(mine, [mine, signer, *layers, layers[0]])
    assert offered == [layers[0], layers[1], layers[5], layers[6], layers[10], layers[11], layers[15], layers[16]]
    assert len(offered) == PATH_MAX_CARRIED == 4 * PATH_MAX_PER_SUBJECT
    assert await store(pki).check(mine, [*layers], [ALICE]) == SignerVerdict(mine, False, "untrusted")


async def test_a_real_chain_among_piled_up_certificates_still_validates(pki: TrustSpacePKI) -> None:
    """End-entity certificates, repeats and the signer itself are not candidates: the issuing CA carried
    after them is still offered, and the path holds."""
    alice = pki.issue_address(ALICE)
    others = [pki.issue_address(f"x{n}@ch-a.mssante.fr").certificate for n in range(12)]
    carried = [alice.certificate, *others, *others, *alice.chain, *alice.chain]
    assert path_candidates(alice.certificate, carried) == list(alice.chain)
    v = await store(pki).check(alice.certificate, carried, [ALICE])
    assert (v.ok, v.reason) == (True, "")
