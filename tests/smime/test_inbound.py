"""gateway/smime/inbound.py: the receive matrix of the domain brief §9, each case with its exact SMTP reply,
through the real crypto pool and a trust store with the PKI's published CRLs."""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.pki import Issued, TrustSpacePKI
from gateway.smime import cms, inbound, mime
from gateway.smime.pool import CryptoPool
from gateway.smime.trust import SignerVerdict, TrustStore

NOW = dt.datetime.now(dt.UTC)  # when the module's PKI is made (4 years before it)


def now() -> dt.datetime:
    """The moment of a check: not NOW, which a long run leaves minutes behind the certificates issued since."""
    return dt.datetime.now(dt.UTC)


A = "alice.martin@ch-a.mssante.fr"
B = "bob.durand@ch-b.mssante.fr"
MESSAGE = (
    f"From: Dr Alice Martin <{A}>\r\nTo: <{B}>\r\nSubject: Compte rendu\r\n"
    "Date: Mon, 02 Mar 2026 10:15:30 +0100\r\nMessage-ID: <cr1@ch-a.mssante.fr>\r\n\r\nCompte rendu.\r\n"
).encode()


def pem_key(issued: Issued) -> bytes:
    return issued.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class World:
    pki: TrustSpacePKI
    alice: Issued
    bob: Issued
    dir: Path

    def files(self, issued: Issued, name: str) -> tuple[Path, Path]:
        cert, key = self.dir / f"{name}.pem", self.dir / f"{name}.key"
        cert.write_bytes(issued.certificate.public_bytes(serialization.Encoding.PEM))
        key.write_bytes(pem_key(issued))
        return cert, key


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    base = tmp_path_factory.mktemp("inbound")
    pki = TrustSpacePKI.create(
        base / "pki", label="Inbound", crl_base_url="http://crl.test/", now=NOW - dt.timedelta(days=4 * 365)
    )
    return World(pki, pki.issue_address(A), pki.issue_address(B), base)


@pytest.fixture(scope="module")
def pool() -> Iterator[CryptoPool]:
    p = CryptoPool(0)
    yield p
    p.close()


def trust(world: World, *, crls: bool = True) -> TrustStore:
    published = world.pki.publish_crls(now=now() - dt.timedelta(minutes=5)) if crls else {}
    cas = [world.pki.ca("personnes"), world.pki.ca("organisations")]  # openssl's signatures carry no chain
    return TrustStore([world.pki.root], [p.read_bytes() for p in published.values()], cas)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pkcs8(issued: Issued) -> bytes:
    return issued.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def envelope(world: World, signed_entity: bytes, recipient: Issued | None = None) -> bytes:
    """An outer message around `signed_entity` encrypted (AES-256-CBC, OAEP) for bob (or `recipient`)."""
    outer = f"From: {A}\r\nTo: {B}\r\nMIME-Version: 1.0\r\n".encode()
    to = recipient or world.bob
    return mime.enveloped_message(outer, cms.encrypt(signed_entity, [cms.Recipient(to.certificate)]))


def signed_by(issued: Issued, content: bytes = mime.wrap(MESSAGE)) -> bytes:
    return mime.signed_entity(content, cms.sign_detached(content, issued.certificate, issued.key, issued.chain), "b1")


def openssl_signed(world: World, *signers: tuple[Issued, str], md: str = "sha256") -> bytes:
    (world.dir / "inner").write_bytes(mime.wrap(MESSAGE))
    args: list[str | Path] = ["openssl", "cms", "-sign", "-binary", "-crlfeol", "-md", md, "-in", world.dir / "inner"]
    for issued, name in signers:
        cert, key = world.files(issued, name)
        args += ["-signer", cert, "-inkey", key]
    return subprocess.run(args, capture_output=True, check=True, timeout=60).stdout


async def decide(
    world: World,
    pool: CryptoPool,
    raw: bytes,
    *,
    sender: str = A,
    store: TrustStore | None = None,
    at: dt.datetime | None = None,
) -> inbound.Inbound:
    return await inbound.check(
        raw,
        sender=sender,
        certificate=der(world.bob.certificate),
        key=pkcs8(world.bob),
        pool=pool,
        trust=store or trust(world),
        host="mx.ch-b.mssante.fr",
        at=at or now(),
    )


async def test_a_good_message_is_stored_with_its_authentication_results(world: World, pool: CryptoPool) -> None:
    raw = mime.protect(
        MESSAGE,
        signer=world.alice.certificate,
        key=world.alice.key,
        chain=world.alice.chain,
        recipients=[cms.Recipient(world.bob.certificate)],
    )
    moment = now()
    got = await decide(world, pool, raw, at=moment)
    assert (got.ok, got.reason, got.signer, got.binding) == (True, "", world.alice.certificate, "address")
    rest = got.message
    issuer = world.alice.certificate.issuer.rfc4514_string()
    expected = (
        "Authentication-Results: mx.ch-b.mssante.fr;\r\n"
        f" smime=pass body.smime-identifier={A}\r\n"
        f" body.smime-serial={world.alice.certificate.serial_number:X}\r\n"
        f' body.smime-issuer="{issuer}" (address-bound, validated {moment.strftime("%Y-%m-%dT%H:%M:%SZ")})\r\n'
    ).encode()
    assert rest == expected + MESSAGE


@pytest.mark.parametrize("sender", [A, "Alice.Martin@CH-A.MSSANTE.FR"])
async def test_mixed_case_sender(world: World, pool: CryptoPool, sender: str) -> None:
    got = await decide(world, pool, envelope(world, signed_by(world.alice)), sender=sender)
    assert (got.ok, got.reason) == (True, "")


async def refusal(world: World, pool: CryptoPool, raw: bytes, **kw: object) -> tuple[int, str]:
    got = await decide(world, pool, raw, **kw)  # type: ignore[arg-type]
    assert not got.ok
    return got.reply


async def test_plaintext_and_unsigned(world: World, pool: CryptoPool) -> None:
    assert await refusal(world, pool, MESSAGE) == (
        550,
        "5.7.1 message refused: not encrypted (S/MIME enveloped-data required)",
    )
    unsigned = envelope(world, mime.wrap(MESSAGE))
    assert await refusal(world, pool, unsigned) == (
        550,
        "5.7.1 message refused: not signed (S/MIME signature required)",
    )


async def test_encrypted_for_someone_else(world: World, pool: CryptoPool) -> None:
    other = world.pki.issue_address("carol@ch-b.mssante.fr")
    raw = envelope(world, signed_by(world.alice), recipient=other)
    assert await refusal(world, pool, raw) == (
        550,
        "5.7.5 message refused: not encrypted for the recipient's certificate",
    )


async def test_a_tampered_body(world: World, pool: CryptoPool) -> None:
    signed = signed_by(world.alice).replace(b"Compte rendu.", b"Compte rendx.")
    assert await refusal(world, pool, envelope(world, signed)) == (
        550,
        "5.7.7 message refused: the content does not match its signature",
    )


async def test_an_untrusted_signer(world: World, pool: CryptoPool, tmp_path: Path) -> None:
    elsewhere = TrustSpacePKI.create(tmp_path / "x", label="Elsewhere", crl_base_url="http://x/").issue_address(A)
    assert await refusal(world, pool, envelope(world, signed_by(elsewhere))) == (
        550,
        "5.7.5 message refused: the signer is not trusted",
    )


async def test_a_revoked_signer(world: World, pool: CryptoPool) -> None:
    revoked = world.pki.issue_address(A)
    world.pki.revoke(revoked.serial, x509.ReasonFlags.key_compromise, now=now() - dt.timedelta(hours=1))
    assert await refusal(world, pool, envelope(world, signed_by(revoked))) == (
        550,
        "5.7.5 message refused: the signer's certificate is revoked",
    )


async def test_an_expired_signer(world: World, pool: CryptoPool) -> None:
    old = world.pki.issue_address(A, now=now() - dt.timedelta(days=4 * 365 - 2))
    assert await refusal(world, pool, envelope(world, signed_by(old))) == (
        550,
        "5.7.5 message refused: the signer's certificate has expired",
    )


async def test_sender_mismatch_envelope_and_inner_from(world: World, pool: CryptoPool) -> None:
    raw = envelope(world, signed_by(world.alice))
    assert await refusal(world, pool, raw, sender="mallory@ch-a.mssante.fr") == (
        550,
        "5.7.1 message refused: the signer is not the sender",
    )
    forged = mime.wrap(MESSAGE.replace(f"<{A}>".encode(), b"<mallory@ch-a.mssante.fr>"))
    assert await refusal(world, pool, envelope(world, signed_by(world.alice, forged))) == (
        550,
        "5.7.1 message refused: the signer is not the sender",
    )


async def test_a_sha1_signature(world: World, pool: CryptoPool) -> None:
    raw = envelope(world, openssl_signed(world, (world.alice, "alice"), md="sha1"))
    assert await refusal(world, pool, raw) == (550, "5.7.6 message refused: weak or unsupported algorithm")


async def test_a_bad_co_signer_beside_a_good_one(world: World, pool: CryptoPool, tmp_path: Path) -> None:
    stranger = TrustSpacePKI.create(tmp_path / "s", label="Stranger", crl_base_url="http://s/").issue_address(A)
    raw = envelope(world, openssl_signed(world, (stranger, "stranger"), (world.alice, "alice")))
    got = await decide(world, pool, raw)
    assert (got.ok, got.signer) == (True, world.alice.certificate)


def weak_signed(world: World) -> bytes:
    """A signature by a self-made 1024-bit certificate (the PKI issues no such thing)."""
    key, cert = world.dir / "weak.key", world.dir / "weak.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:1024", "-nodes", "-subj", "/CN=weak", "-days", "30"),
            *("-addext", f"subjectAltName=email:{A}", "-keyout", key, "-out", cert),
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    (world.dir / "inner").write_bytes(mime.wrap(MESSAGE))
    return subprocess.run(
        [
            *("openssl", "cms", "-sign", "-binary", "-crlfeol", "-md", "sha256", "-in", world.dir / "inner"),
            *("-signer", cert, "-inkey", key),
        ],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout


async def test_a_1024_bit_signer(world: World, pool: CryptoPool) -> None:
    raw = envelope(world, weak_signed(world))
    assert await refusal(world, pool, raw) == (550, "5.7.6 message refused: the signer's key is too weak")


async def test_without_a_current_crl_the_peer_is_asked_to_retry(world: World, pool: CryptoPool) -> None:
    raw = envelope(world, signed_by(world.alice))
    assert await refusal(world, pool, raw, store=trust(world, crls=False)) == (
        451,
        "4.7.5 no current revocation list for the signer, try again later",
    )


async def test_an_encryption_only_signer(world: World, pool: CryptoPool) -> None:
    """RFC 8550 §4.4.2: a keyUsage of keyEncipherment alone does not allow signing."""
    from tests.smime.test_trust import custom

    cert, key = custom(world.pki, A, signing=False)
    content = mime.wrap(MESSAGE)
    signed = mime.signed_entity(content, cms.sign_detached(content, cert, key), "b1")
    assert await refusal(world, pool, envelope(world, signed)) == (
        550,
        "5.7.5 message refused: the signer's certificate is not for signing",
    )


async def test_signer_infos_past_the_cap_are_not_judged(world: World, pool: CryptoPool, tmp_path: Path) -> None:
    """Each SignerInfo may cost a path validation and an OCSP request on the peer's DATA reply, and the
    sender chooses how many there are: only the first MAX_SIGNERS are judged."""

    judged: list[x509.Certificate] = []

    class Counting(TrustStore):
        async def check(self, cert: x509.Certificate, *args: object, **kw: object) -> SignerVerdict:
            judged.append(cert)
            return await super().check(cert, *args, **kw)  # type: ignore[arg-type]

    elsewhere = TrustSpacePKI.create(tmp_path / "s", label="Stranger", crl_base_url="http://s/")
    strangers = [(elsewhere.issue_address(A), f"stranger{i}") for i in range(inbound.MAX_SIGNERS + 2)]
    published = world.pki.publish_crls(now=now() - dt.timedelta(minutes=5))
    store = Counting([world.pki.root], [p.read_bytes() for p in published.values()], [world.pki.ca("personnes")])
    raw = envelope(world, openssl_signed(world, *strangers))
    assert await refusal(world, pool, raw, store=store) == (550, "5.7.5 message refused: the signer is not trusted")
    assert len(judged) == inbound.MAX_SIGNERS == 4
