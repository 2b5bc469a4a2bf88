"""gateway/smime/cms.py against `openssl cms`, both ways: what we sign and encrypt, openssl verifies and
decrypts; what openssl signs and encrypts (CBC, GCM, OAEP SHA-1/SHA-256, PKCS#1 v1.5, several
recipients), we verify and decrypt; and every bad input gets its precise reason."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
from asn1crypto import cms as asn1_cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.smime import cms
from tests.smime.conftest import Holder, Space, openssl

CONTENT = (
    b"Content-Type: message/rfc822\r\n\r\nFrom: Dr Claire Martin <claire.martin@ch-a.mssante.fr>\r\n"
    b"Subject: =?utf-8?q?R=C3=A9sultats?=\r\n\r\nCompte rendu.\r\n"
)


# -- what we produce, openssl reads -------------------------------------------------------------


def test_openssl_verifies_our_detached_signature(space: Space, tmp_path: Path) -> None:
    der = cms.sign_detached(CONTENT, space.alice.certificate, space.alice.issued.key, space.alice.issued.chain)
    (tmp_path / "sig.der").write_bytes(der)
    (tmp_path / "content").write_bytes(CONTENT)
    out = subprocess.run(
        [
            *("openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", tmp_path / "sig.der"),
            *("-content", tmp_path / "content", "-CAfile", space.root, "-purpose", "smimesign"),
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert (out.returncode, out.stdout, out.stderr) == (0, CONTENT, b"CMS Verification successful\n")
    # the signer info openssl reads: SHA-256, our certificate
    info = openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", tmp_path / "sig.der").decode()
    assert "algorithm: sha256 (2.16.840.1.101.3.4.2.1)" in info
    assert "signingTime" in info
    assert "messageDigest" in info
    assert hex(space.alice.certificate.serial_number)[2:].upper() in info.replace(":", "").upper()


@pytest.mark.parametrize(("gcm", "oaep"), [(False, True), (False, False), (True, True)])
def test_openssl_decrypts_what_we_encrypt(space: Space, tmp_path: Path, gcm: bool, oaep: bool) -> None:
    der = cms.encrypt(
        CONTENT, [cms.Recipient(space.bob.certificate, oaep), cms.Recipient(space.alice.certificate)], gcm=gcm
    )
    (tmp_path / "env.der").write_bytes(der)
    for who in (space.bob, space.alice):
        plain = openssl(
            "cms",
            "-decrypt",
            "-binary",
            "-inform",
            "DER",
            "-in",
            tmp_path / "env.der",
            "-recip",
            who.cert,
            "-inkey",
            who.key,
        )
        assert plain == CONTENT
    info = openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", tmp_path / "env.der").decode()
    assert ("aes-256-gcm" if gcm else "aes-256-cbc") in info
    assert info.count("rsaesOaep") == (2 if oaep else 1)  # bob's transport as asked, alice's OAEP (the default)


def test_the_octets_are_signed_as_they_are(space: Space, tmp_path: Path) -> None:
    # Bare LF, lone CR and 8-bit octets: nothing canonicalised before hashing (a signed entity is
    # checked byte-exact on the way in), and no SMIMECapabilities attribute among the signed ones.
    content = b"Content-Type: text/plain; charset=utf-8\n\nligne\rsuivante \xc3\xa9\r\n\x00fin\n"
    der = cms.sign_detached(content, space.alice.certificate, space.alice.issued.key, space.alice.issued.chain)
    assert [(s.ok, s.reason) for s in cms.verify(der, content).signers] == [(True, "")]
    assert [s.reason for s in cms.verify(der, content.replace(b"\n", b"\r\n")).signers] == ["bad-digest"]
    (tmp_path / "sig.der").write_bytes(der)
    (tmp_path / "content").write_bytes(content)
    out = openssl(
        *("cms", "-verify", "-binary", "-inform", "DER", "-in", tmp_path / "sig.der", "-content", tmp_path / "content"),
        *("-CAfile", space.root, "-purpose", "smimesign"),
    )
    assert out == content
    signer = asn1_cms.ContentInfo.load(der)["content"]["signer_infos"][0]
    attrs = {a["type"].native: a["values"][0].native for a in signer["signed_attrs"]}
    assert sorted(attrs) == ["content_type", "message_digest", "signing_time"]
    assert attrs["message_digest"] == hashlib.sha256(content).digest()


def test_our_signature_round_trips_through_our_verifier(space: Space) -> None:
    der = cms.sign_detached(CONTENT, space.alice.certificate, space.alice.issued.key, space.alice.issued.chain)
    result = cms.verify(der, CONTENT)
    assert [(s.ok, s.reason, s.certificate) for s in result.signers] == [(True, "", space.alice.certificate)]
    assert set(result.certificates) == {space.alice.certificate, *space.alice.issued.chain}  # a DER SET OF: sorted
    assert result.signers[0].signing_time is not None


# -- what openssl produces, we read -------------------------------------------------------------


def openssl_sign(space: Space, tmp_path: Path, *extra: str, signers: Sequence[Holder] = ()) -> bytes:
    (tmp_path / "content").write_bytes(CONTENT)
    args: list[str | Path] = ["cms", "-sign", "-binary", "-outform", "DER", "-in", tmp_path / "content"]
    for who in signers or [space.alice]:
        args += ["-signer", who.cert, "-inkey", who.key]
    return openssl(*args, *extra)


def test_we_verify_openssls_detached_signature(space: Space, tmp_path: Path) -> None:
    der = openssl_sign(space, tmp_path, "-md", "sha256")
    result = cms.verify(der, CONTENT)
    assert [(s.ok, s.reason) for s in result.signers] == [(True, "")]
    assert result.signers[0].certificate == space.alice.certificate


def test_an_opaque_signature_carries_its_content(space: Space, tmp_path: Path) -> None:
    der = openssl_sign(space, tmp_path, "-nodetach", "-md", "sha384")
    result = cms.verify(der)
    assert (result.content, [s.ok for s in result.signers]) == (CONTENT, [True])


def test_a_tampered_body_is_a_bad_digest(space: Space, tmp_path: Path) -> None:
    der = openssl_sign(space, tmp_path, "-md", "sha256")
    result = cms.verify(der, CONTENT.replace(b"Compte rendu", b"Compte rendx"))
    assert [(s.ok, s.reason) for s in result.signers] == [(False, "bad-digest")]


def test_sha1_is_a_weak_algorithm(space: Space, tmp_path: Path) -> None:
    der = openssl_sign(space, tmp_path, "-md", "sha1")
    assert [(s.ok, s.reason) for s in cms.verify(der, CONTENT).signers] == [(False, "weak-algorithm")]


def test_one_good_signer_beside_a_bad_one_is_reported_each(space: Space, tmp_path: Path) -> None:
    der = openssl_sign(space, tmp_path, "-md", "sha256", signers=[space.carol, space.alice])
    # carol's signature corrupted in place (signer infos are a DER SET OF: found by serial, not position)
    result = cms.verify(der, CONTENT)
    assert [s.ok for s in result.signers] == [True, True]
    carol = next(
        si
        for si in cms.load_signed(der)["signer_infos"]
        if si["sid"].chosen["serial_number"].native == space.carol.certificate.serial_number
    )
    sig = bytearray(carol["signature"].native)
    sig[-1] ^= 0xFF
    broken = der.replace(carol["signature"].native, bytes(sig))
    checks = {s.certificate: (s.ok, s.reason) for s in cms.verify(broken, CONTENT).signers}
    assert checks == {space.carol.certificate: (False, "bad-signature"), space.alice.certificate: (True, "")}


def test_a_signer_whose_certificate_is_missing(space: Space, tmp_path: Path) -> None:
    der = openssl_sign(space, tmp_path, "-md", "sha256", "-nocerts")
    result = cms.verify(der, CONTENT)
    assert [(s.certificate, s.ok, s.reason) for s in result.signers] == [(None, False, "no-certificate")]


def test_an_ec_signature(space: Space, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "ec signer")])
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    der = cms.sign_detached(CONTENT, cert, key)
    assert [(s.ok, s.reason) for s in cms.verify(der, CONTENT).signers] == [(True, "")]
    assert [(s.ok, s.reason) for s in cms.verify(der, CONTENT + b"x").signers] == [(False, "bad-digest")]


@pytest.mark.parametrize(
    "options",
    [
        ["-aes-256-cbc"],
        ["-aes-128-cbc"],
        ["-aes-192-cbc"],
        ["-aes-256-gcm"],
        ["-aes-128-gcm"],
        ["-aes-256-cbc", "-keyopt", "rsa_padding_mode:oaep"],  # OAEP with SHA-1 (its default)
        ["-aes-256-cbc", "-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256"],
        ["-aes-256-gcm", "-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256"],
    ],
    ids=lambda o: " ".join(o),
)
def test_we_decrypt_what_openssl_encrypts(space: Space, tmp_path: Path, options: list[str]) -> None:
    (tmp_path / "content").write_bytes(CONTENT)
    cipher, keyopts = options[0], options[1:]  # -keyopt applies to the -recip before it
    der = openssl(
        "cms", "-encrypt", "-binary", "-outform", "DER", "-in", tmp_path / "content", cipher,
        "-recip", space.alice.cert, *keyopts, "-recip", space.bob.cert, *keyopts,
    )  # fmt: skip
    if keyopts:
        info = openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", "/dev/stdin", data=der).decode()
        assert info.count("rsaesOaep") == 2
    for who in (space.alice, space.bob):  # several recipients: each finds its own entry
        assert cms.decrypt(der, who.certificate, who.issued.key) == CONTENT
    with pytest.raises(cms.CmsError) as refused:
        cms.decrypt(der, space.carol.certificate, space.carol.issued.key)
    assert (refused.value.reason, str(refused.value)) == ("not-for-us", "no recipient entry for our certificate")
    kind = "authenticated_enveloped_data" if "gcm" in options[0] else "enveloped_data"
    assert cms.describe(der).kind == kind


def test_a_tampered_gcm_ciphertext_cannot_be_decrypted(space: Space) -> None:
    der = bytearray(cms.encrypt(CONTENT * 4, [cms.Recipient(space.bob.certificate)], gcm=True))
    der[-40] ^= 0x01  # inside the encrypted content, before the tag
    with pytest.raises(cms.CmsError) as refused:
        cms.decrypt(bytes(der), space.bob.certificate, space.bob.issued.key)
    assert (refused.value.reason, str(refused.value)) == (
        "cannot-decrypt",
        "the message cannot be decrypted with our key",
    )


def test_a_tampered_cbc_ciphertext_decrypts_to_other_octets(space: Space) -> None:
    """CBC has no integrity of its own: the signature inside the envelope is what catches this."""
    der = bytearray(cms.encrypt(CONTENT * 4, [cms.Recipient(space.bob.certificate)]))
    der[-100] ^= 0x01  # a block well before the padding
    got = cms.decrypt(bytes(der), space.bob.certificate, space.bob.issued.key)
    assert len(got) == len(CONTENT * 4)
    assert got != CONTENT * 4


def test_a_key_for_someone_else_fails_like_corruption(space: Space) -> None:
    """Bob's entry decrypted with Carol's key (a forged rid): no early padding error, the content fails
    (GCM here: with CBC a random key still yields valid padding about once in 200 tries)."""
    der = cms.encrypt(CONTENT, [cms.Recipient(space.bob.certificate, oaep=False)], gcm=True)
    with pytest.raises(cms.CmsError) as refused:
        cms.decrypt(der, space.bob.certificate, space.carol.issued.key)
    assert refused.value.reason == "cannot-decrypt"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "malformed"),
        (b"\x30\x03\x02\x01\x01", "malformed"),
        (b"not der at all", "malformed"),
    ],
)
def test_garbage_is_malformed(space: Space, data: bytes, reason: str) -> None:
    with pytest.raises(cms.CmsError) as refused:
        cms.decrypt(data, space.bob.certificate, space.bob.issued.key)
    assert refused.value.reason == reason
    with pytest.raises(cms.CmsError) as refused:
        cms.verify(data, CONTENT)
    assert refused.value.reason == reason


def test_signed_data_is_not_encrypted_and_the_other_way_round(space: Space) -> None:
    signed = cms.sign_detached(CONTENT, space.alice.certificate, space.alice.issued.key)
    with pytest.raises(cms.CmsError) as refused:
        cms.decrypt(signed, space.bob.certificate, space.bob.issued.key)
    assert (refused.value.reason, str(refused.value)) == ("not-encrypted", "not enveloped data but signed_data")
    enveloped = cms.encrypt(CONTENT, [cms.Recipient(space.bob.certificate)])
    with pytest.raises(cms.CmsError) as refused:
        cms.verify(enveloped, CONTENT)
    assert (refused.value.reason, str(refused.value)) == ("unsigned", "not signed data but enveloped_data")


@pytest.mark.parametrize("gcm", [False, True])
def test_the_hand_written_envelope_is_canonical_der(space: Space, gcm: bool) -> None:
    from asn1crypto import cms as asn1_cms

    recipients = [cms.Recipient(h.certificate, oaep=n % 2 == 0) for n, h in enumerate((space.bob, space.carol))]
    der = cms.encrypt(CONTENT * 20, recipients, gcm=gcm)  # long enough for multi-octet lengths
    parsed = asn1_cms.ContentInfo.load(der, strict=True)
    assert parsed.dump(force=True) == der  # re-encoded by asn1crypto: the same octets
    entries = [ri.dump() for ri in parsed["content"]["recipient_infos"]]
    assert entries == sorted(entries)  # DER SET OF: in the order of their encodings (X.690 §11.6)
    serials = {d[1] for d in cms.describe(der).recipients if isinstance(d, tuple)}
    assert serials == {space.bob.certificate.serial_number, space.carol.certificate.serial_number}


def test_names_compare_by_encoding_then_by_rfc5280_rules() -> None:
    from asn1crypto import x509 as asn1_x509

    printable = asn1_x509.Name.build({"country_name": "FR", "common_name": "AC Test"})
    utf8 = asn1_x509.Name.build({"country_name": "FR", "common_name": "ac  test"}, use_printable=False)
    other = asn1_x509.Name.build({"country_name": "FR", "common_name": "AC Autre"})
    assert printable.dump() != utf8.dump()
    assert cms._same_name(printable, asn1_x509.Name.load(printable.dump()))
    assert cms._same_name(printable, utf8)  # case and inner spaces fold (RFC 4518 string preparation)
    assert not cms._same_name(printable, other)
