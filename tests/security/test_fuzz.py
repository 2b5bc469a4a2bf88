"""Bounded runs of the atheris fuzz targets, their regression inputs, and the bugs they found.

Each target (SMTP DATA content checks, S/MIME MIME+CMS parsing, the national directory reader) runs for
`MSSGW_FUZZ_SECONDS` seconds (default 4) from a small real corpus; set it higher for a longer run, or run
a target by hand (see its docstring). The runs are skipped when atheris is not installed.

Inputs the fuzzers found are kept in tests/security/regressions/ (named after the flaw) and replayed
here without atheris: nothing outside the declared error types may escape, except the known bugs. Each
known bug has an `xfail(strict=True)` test that shows it (from the outside where it can be reached:
a real SMTP session, the CLI); when the bug is fixed the test passes, strict xfail fails the run, and the
bug's entry in the target's KNOWN_* list and the xfail mark are to be removed.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import io
import os
import re
import smtplib
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from directory import national
from directory.synthetic import generate_rows
from gateway.policy.verdict import Reject
from gateway.smime import cms, mime
from gateway.smtp import content
from tests.conftest import NodeDir
from tests.security import fuzz_directory, fuzz_smime, fuzz_smtp_data
from tests.security.conftest import relay_client
from tests.security.smime_seeds import write_material
from tests.smtp.conftest import DOCTOR, NURSE, PEER, Gateway

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
REGRESSIONS = HERE / "regressions"
SECONDS = os.environ.get("MSSGW_FUZZ_SECONDS", "4")
needs_atheris = pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed")


def fuzz(target: str, seeds: list[Path], tmp_path: Path, *, max_len: int, env: dict[str, str] | None = None) -> int:
    """Run `target` for SECONDS from `seeds` (read only); fail with libFuzzer's report on a finding."""
    work = tmp_path / "corpus"
    work.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            str(HERE / target),
            f"-max_total_time={SECONDS}",
            "-seed=1",
            f"-max_len={max_len}",
            "-timeout=10",  # an input taking longer is a finding (cost blow-up)
            "-rss_limit_mb=2048",
            f"-artifact_prefix={tmp_path}/",
            str(work),
            *map(str, seeds),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=float(SECONDS) + 120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-6000:]
    done = re.search(r"Done (\d+) runs", result.stderr)
    assert done is not None, result.stderr[-3000:]
    runs = int(done[1])
    assert runs >= 50, f"only {runs} inputs in {SECONDS} s"
    return runs


# -- SMTP DATA ---------------------------------------------------------------------------------------

D = b"ch-test.mssante.fr"
SMTP_SEEDS = {
    "plain": b"\x00From: Dr Claire Martin <claire.martin@"
    + D
    + b">\r\nTo: lucas.bernard@"
    + D
    + b', "Secr\xc3\xa9tariat" <secretariat@'
    + D
    + b">\r\nCc: (x) a@b.fr\r\nBcc: hidden@"
    + D
    + b",\r\n other@x.fr\r\nSubject: =?utf-8?q?R=C3=A9sultats?=\r\nMessage-ID: <m1@"
    + D
    + b">\r\nDate: Tue, 05 Mar 2024 10:00:00 +0000\r\nX-MSS-Test: 1\r\n\r\nBonjour,\r\n.\r\nfin\r\n",
    "group": b"\x00From: claire.martin@"
    + D
    + b'\r\nTo: Equipe: a@b.fr, c@d.fr;, e@f.fr\r\nSender: "x y" <claire.martin@'
    + D
    + b">\r\nReply-To: <r@x.fr>\r\n\r\n",
    "smuggled": b"\x00From: claire.martin@" + D + b"\r\n\r\nhello\n.\r\nMAIL FROM:<ceo@x.fr>\r\n",
    "no-body": b"\x00Subject: x\r\nFrom: <a@b.fr>\r\n",
    "long-line": b"\x00From: a@b.fr\r\n\r\n" + b"x" * 998 + b"\r\n",
    # amplified: a fragment repeated in a header field (fuzz_smtp_data.amplify)
    "many-to": bytes([0x80 | 1 | 1 << 3, 0x10]) + b"a@b.fr, |From: claire.martin@" + D + b"\r\n\r\nbody\r\n",
    "many-encoded-words": bytes([0x80 | 4, 0xF0]) + b"=?utf-8?b?w6k=?= |From: x@y.fr\r\n\r\n",
    "nested-comments": bytes([0x80, 0x40]) + b"(((a)))|\r\n\r\n",
    "many-fields": bytes([0x80 | 5 | 0x0F << 3, 0xFF]) + b"\r\nX-A: b|From: c@d.fr\r\n\r\n",
}


@needs_atheris
def test_fuzz_smtp_data(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    for name, data in SMTP_SEEDS.items():
        (seeds / name).write_bytes(data)
    fuzz("fuzz_smtp_data.py", [seeds], tmp_path, max_len=4096)


@pytest.mark.parametrize("name", SMTP_SEEDS)
def test_smtp_data_seeds_hold_the_properties(name: str) -> None:
    fuzz_smtp_data.check(SMTP_SEEDS[name])


def test_a_message_at_the_header_limits_is_refused_at_submission_not_by_the_next_hop() -> None:
    """Found by the fuzz target: 1000 fields were accepted (250) and the next hop refused them (554)."""
    now = dt.datetime(2024, 3, 5, tzinfo=dt.UTC)
    for count, accepted in ((999, False), (949, True)):  # with From:, 1000 and 950 fields
        fields = b"".join(b"X-A-%d: b\r\n" % n for n in range(count))
        message = b"From: claire.martin@ch-test.mssante.fr\r\n" + fields + b"\r\nbody\r\n"
        submitted = content.prepare_submission(
            message, received=fuzz_smtp_data.RECEIVED, message_id_domain="ch-test.mssante.fr", now=now
        )
        if not accepted:
            assert submitted == content.SUBMISSION_TOO_MANY_FIELDS
            continue
        assert not isinstance(submitted, Reject), submitted
        # The peer operator's relay listener runs prepare_relay on what we relay: it takes it.
        assert not isinstance(content.prepare_relay(submitted[0], received=fuzz_smtp_data.RECEIVED), Reject)


# -- S/MIME ------------------------------------------------------------------------------------------

SMIME_REGRESSIONS = sorted((REGRESSIONS / "smime").iterdir())
# What each regression input raised before it was fixed (now CmsError or an "untrusted" signer verdict).
SMIME_BUGS: dict[str, type[Exception]] = {
    "judge-signer-unknown-signature-algorithm": UnsupportedAlgorithm,  # trust.check: signature_hash_algorithm
    "judge-signer-malformed-extension": ValueError,  # trust.binding: cert.extensions
    "judge-signer-duplicate-extension": x509.DuplicateExtension,  # trust.binding: cert.extensions
    "judge-path-malformed-name": ValueError,  # trust: pyhanko-certvalidator path building (asn1crypto)
    "verify-carried-certificate-bad-version": x509.InvalidVersion,  # cms.verify: load_der_x509_certificate
    "verify-signer-unknown-key-type": UnsupportedAlgorithm,  # cms._check_signer: cert.public_key()
    "addressed-to-truncated-recipient-info": ValueError,  # cms.addressed_to: lazy asn1crypto parsing
    "describe-issuer-not-utf8": UnicodeDecodeError,  # cms.describe: issuer.human_friendly
}


@pytest.fixture(scope="module")
def smime_material(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("smime-material")
    write_material(directory)
    previous = os.environ.get("MSSGW_FUZZ_SMIME")
    os.environ["MSSGW_FUZZ_SMIME"] = str(directory)
    fuzz_smime._material = None
    yield directory
    fuzz_smime._material = None
    if previous is None:
        del os.environ["MSSGW_FUZZ_SMIME"]
    else:
        os.environ["MSSGW_FUZZ_SMIME"] = previous


@needs_atheris
def test_fuzz_smime(tmp_path: Path, smime_material: Path) -> None:
    fuzz(
        "fuzz_smime.py",
        [smime_material / "seeds", REGRESSIONS / "smime"],
        tmp_path,
        max_len=8192,
        env={"MSSGW_FUZZ_SMIME": str(smime_material)},
    )


@pytest.mark.parametrize("path", sorted(Path(p) for p in SMIME_REGRESSIONS), ids=lambda p: p.name)
def test_smime_regressions_raise_nothing_undeclared(path: Path, smime_material: Path) -> None:
    fuzz_smime.check(path.read_bytes())


def test_smime_seeds_hold_the_properties(smime_material: Path) -> None:
    for seed in sorted((smime_material / "seeds").iterdir()):
        fuzz_smime.check(seed.read_bytes())


@pytest.mark.parametrize("name", SMIME_BUGS)
def test_smime_regression_is_refused_cleanly(name: str, smime_material: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each input that once let SMIME_BUGS[name] escape now gets the checks' own outcome, in strict mode."""
    assert (REGRESSIONS / "smime" / name).is_file()
    monkeypatch.setattr(fuzz_smime, "STRICT", True)
    fuzz_smime.check((REGRESSIONS / "smime" / name).read_bytes())


def test_every_smime_regression_is_named_for_its_bug() -> None:
    assert {p.name for p in SMIME_REGRESSIONS} == set(SMIME_BUGS)


def unknown_signature_algorithm_signer(address: str) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A certificate for `address` whose signature algorithm OID nobody knows (sha256WithRSA's last arc
    changed), and its key: what a hostile signer can put in a message; it is not validated yet when read."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    sha256_rsa = bytes.fromhex("06092A864886F70D01010B")
    der = cert.public_bytes(serialization.Encoding.DER)
    assert der.count(sha256_rsa) == 2
    return x509.load_der_x509_certificate(der.replace(sha256_rsa, bytes.fromhex("06092A864886F70D01017F"))), key


def test_a_signer_with_an_unknown_signature_algorithm_is_refused_cleanly(gw: Gateway) -> None:
    """An authenticated client submits an end-to-end signed message (its own form) signed by such a certificate."""
    cert, key = unknown_signature_algorithm_signer(DOCTOR)
    entity = b"Content-Type: text/plain\r\n\r\nCompte rendu.\r\n"
    signed = mime.signed_entity(entity, cms.sign_detached(entity, cert, key), "b0undary")
    message = f"From: {DOCTOR}\r\nTo: {NURSE}\r\nSubject: signed\r\nMIME-Version: 1.0\r\n".encode() + signed
    client = gw.submission(login=DOCTOR)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail(DOCTOR, [NURSE], message)
    client.close()
    code, text = refused.value.smtp_code, refused.value.smtp_error
    assert code == 550, (code, text)
    assert text.startswith(b"5.7."), text


def test_a_peer_envelope_with_a_malformed_recipient_issuer_is_refused_cleanly(gw: Gateway, peer_cert: Path) -> None:
    """A trusted peer sends an enveloped-data whose entry for the doctor names her certificate's serial with
    an issuer whose country is not a DirectoryString (ASN.1 tag 11): caught before any decryption."""
    doctor = x509.load_pem_x509_certificate((gw.node.data / "smime" / DOCTOR / "cert.pem").read_bytes())
    der = cms.encrypt(b"Content-Type: text/plain\r\n\r\nx\r\n", [cms.Recipient(doctor)])
    issuer = asn1_x509.Certificate.load(doctor.public_bytes(serialization.Encoding.DER)).issuer.dump()
    country = b"\x06\x03\x55\x04\x06\x13\x02FR"  # countryName, PrintableString "FR"
    assert der.count(issuer) == 1
    assert country in issuer
    der = der.replace(issuer, issuer.replace(country, b"\x06\x03\x55\x04\x06\x0b\x02FR", 1))
    outer = f"From: dr.durand@{PEER}\r\nTo: {DOCTOR}\r\nSubject: x\r\nMIME-Version: 1.0\r\n".encode()
    client = relay_client(gw, peer_cert)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail(f"dr.durand@{PEER}", [DOCTOR], mime.enveloped_message(outer, der))
    client.close()
    assert (refused.value.smtp_code, refused.value.smtp_error) == (
        550,
        b"5.7.5 message refused: malformed S/MIME structure",
    )


# -- the national directory --------------------------------------------------------------------------


def directory_seeds(directory: Path) -> Path:
    directory.mkdir()
    rows = "".join(national.format_row(r) for r in generate_rows(6, seed=3))
    text = (national.HEADER + "\n" + rows).encode()
    (directory / "plain").write_bytes(b"\x00" + text)
    bad = b"PER|X@Y.FR|8|123|8123" + b"|" * 26 + b"\n\n\xff|x\nORG|Sec@X.FR||||3|3750712184|" + b"|" * 23 + b"\n"
    (directory / "bom-crlf-bad").write_bytes(b"\x00\xef\xbb\xbf" + text.replace(b"\n", b"\r\n") + bad)
    (directory / "rows").write_bytes(b"\x03" + rows.encode() + bad)
    (directory / "in-zip").write_bytes(b"\x05" + text)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("Extraction_Correspondance_MSSante.txt", text)
    (directory / "zip-file").write_bytes(b"\x02" + buffer.getvalue())
    return directory


@needs_atheris
def test_fuzz_directory(tmp_path: Path) -> None:
    seeds = directory_seeds(tmp_path / "seeds")
    fuzz("fuzz_directory.py", [seeds, REGRESSIONS / "directory"], tmp_path, max_len=4096)


def test_directory_seeds_and_regressions_hold_the_properties(tmp_path: Path) -> None:
    for path in [*directory_seeds(tmp_path / "seeds").iterdir(), *(REGRESSIONS / "directory").iterdir()]:
        fuzz_directory.check(path.read_bytes())


def damaged_zip(path: Path) -> Path:
    buffer = io.BytesIO()
    rows = "".join(national.format_row(r) for r in generate_rows(200, seed=1))
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("Extraction_Correspondance_MSSante.txt", national.HEADER + "\n" + rows)
    data = bytearray(buffer.getvalue())
    data[200] ^= 0xFF  # inside the deflated member: a download cut or altered on the way
    path.write_bytes(bytes(data))
    return path


def read_extraction(path: Path) -> list[tuple[int, bytes]]:
    """Every data line of an extraction, as `mssgw directory import` reads them."""
    stream, _ = national.open_extraction(path)
    with stream:
        return list(national.iter_lines(stream))


def test_a_damaged_zip_extraction_is_refused_as_not_an_extraction(tmp_path: Path) -> None:
    with pytest.raises(national.HeaderError):
        read_extraction(damaged_zip(tmp_path / "extraction.zip"))


def test_the_cli_names_a_damaged_zip(node: NodeDir, tmp_path: Path) -> None:
    result = node.cli("directory", "import", damaged_zip(tmp_path / "extraction.zip"))
    assert result.code != 0
    assert "internal error" not in result.err, result.err
    assert result.err.startswith(f"mssgw: {tmp_path / 'extraction.zip'}: "), result.err


def test_zip_member_names_are_not_echoed_raw(tmp_path: Path) -> None:
    path = tmp_path / "two.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.txt", national.HEADER + "\n")
        zf.writestr("\x1b[2J\x1b]0;pwned\x07b.txt", "x")
    with pytest.raises(national.HeaderError) as refused:
        national.open_extraction(path)
    assert str(refused.value).isprintable(), str(refused.value)


@pytest.mark.parametrize(
    "name", ["zip-member-without-name", "zip-member-names-with-control-characters", "zip-member-offset-out-of-file"]
)
def test_directory_regression_is_refused_cleanly(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fuzz_directory, "STRICT", True)
    fuzz_directory.check((REGRESSIONS / "directory" / name).read_bytes())
