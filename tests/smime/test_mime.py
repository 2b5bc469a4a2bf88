"""gateway/smime/mime.py: Direct's wrap → sign → encrypt, read back by openssl and by us; what openssl
builds (detached and opaque signatures inside an envelope) read by us; each refusal with its reason."""

from __future__ import annotations

import base64
import re
import subprocess
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.smime import cms, mime
from tests.smime.conftest import Space, openssl

MESSAGE = (
    b"From: Dr Alice Martin <alice@ch-a.mssante.fr>\r\n"
    b"To: Bob Durand <bob@ch-a.mssante.fr>\r\n"
    b"Cc: carol@ch-a.mssante.fr\r\n"
    b"Subject: =?utf-8?q?R=C3=A9sultats_de_biologie?=\r\n"
    b"Date: Mon, 02 Mar 2026 10:15:30 +0100\r\n"
    b"Message-ID: <m1.test@ch-a.mssante.fr>\r\n"
    b"X-Patient-Ref:\r\n 12345\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Bonjour,\r\n\r\nVoici les r\xc3\xa9sultats.\r\n-- \r\nDr Martin\r\n"
)


def protected(space: Space, *, gcm: bool = False) -> bytes:
    return mime.protect(
        MESSAGE,
        signer=space.alice.certificate,
        key=space.alice.issued.key,
        chain=space.alice.issued.chain,
        recipients=[cms.Recipient(space.bob.certificate), cms.Recipient(space.alice.certificate)],
        gcm=gcm,
    )


def test_the_outer_message_shows_only_the_addressing_fields(space: Space) -> None:
    out = protected(space)
    header, body = mime.split(out)
    assert header == (
        b"From: Dr Alice Martin <alice@ch-a.mssante.fr>\r\n"
        b"To: Bob Durand <bob@ch-a.mssante.fr>\r\n"
        b"Cc: carol@ch-a.mssante.fr\r\n"
        b"Date: Mon, 02 Mar 2026 10:15:30 +0100\r\n"
        b"Message-ID: <m1.test@ch-a.mssante.fr>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment; filename=smime.p7m\r\n"
    )
    assert b"R=C3=A9sultats" not in out  # the Subject travels inside only
    assert max(len(line) for line in body.split(b"\r\n")) == 76


@pytest.mark.parametrize("gcm", [False, True])
def test_openssl_decrypts_then_verifies_what_we_protect(space: Space, tmp_path: Path, gcm: bool) -> None:
    (tmp_path / "msg").write_bytes(protected(space, gcm=gcm))
    signed = openssl(
        "cms", "-decrypt", "-in", tmp_path / "msg", "-recip", space.bob.cert, "-inkey", space.bob.key
    )  # fmt: skip
    assert signed.startswith(b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256;')
    (tmp_path / "signed").write_bytes(signed)
    done = subprocess.run(
        ["openssl", "cms", "-verify", "-in", tmp_path / "signed", "-CAfile", space.root, "-purpose", "smimesign"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, b"CMS Verification successful\n")
    assert done.stdout == b"Content-Type: message/rfc822\r\n\r\n" + MESSAGE  # the whole original, wrapped


@pytest.mark.parametrize("gcm", [False, True])
def test_we_open_what_we_protect(space: Space, gcm: bool) -> None:
    opened = mime.unprotect(protected(space, gcm=gcm), space.bob.certificate, space.bob.issued.key)
    assert (opened.message, opened.wrapped) == (MESSAGE, True)
    assert [(s.ok, s.certificate) for s in opened.signed.signers] == [(True, space.alice.certificate)]
    # the sender's own copy opens with the sender's key
    assert mime.unprotect(protected(space), space.alice.certificate, space.alice.issued.key).message == MESSAGE


def envelope(space: Space, tmp_path: Path, entity: bytes, *sign: str) -> bytes:
    """openssl signs `entity` (when `sign` options are given) then encrypts it for bob, outer header added."""
    (tmp_path / "entity").write_bytes(entity)
    if sign:
        signed = openssl(
            "cms", "-sign", "-in", tmp_path / "entity", "-signer", space.alice.cert, "-inkey", space.alice.key,
            "-md", "sha256", "-crlfeol", *sign,
        )  # fmt: skip
        (tmp_path / "entity").write_bytes(signed)
    enc = openssl(
        "cms", "-encrypt", "-binary", "-crlfeol", "-in", tmp_path / "entity", "-aes-256-cbc", "-recip", space.bob.cert
    )  # fmt: skip  (-crlfeol: CRLF line ends, as a message has them once submitted over SMTP)
    return b"From: alice@ch-a.mssante.fr\r\nTo: bob@ch-a.mssante.fr\r\nSubject: outer\r\n" + enc


def test_we_open_openssls_detached_signature_in_an_envelope(space: Space, tmp_path: Path) -> None:
    raw = envelope(space, tmp_path, mime.wrap(MESSAGE), "-binary")
    opened = mime.unprotect(raw, space.bob.certificate, space.bob.issued.key)
    assert (opened.message, opened.wrapped, [s.ok for s in opened.signed.signers]) == (MESSAGE, True, [True])


def test_we_open_an_opaque_signature_in_an_envelope(space: Space, tmp_path: Path) -> None:
    raw = envelope(space, tmp_path, mime.wrap(MESSAGE), "-binary", "-nodetach")
    opened = mime.unprotect(raw, space.bob.certificate, space.bob.issued.key)
    assert (opened.message, [s.ok for s in opened.signed.signers]) == (MESSAGE, [True])


def test_an_unwrapped_signed_body_keeps_the_outer_header(space: Space, tmp_path: Path) -> None:
    entity = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nCompte rendu.\r\n"
    opened = mime.unprotect(envelope(space, tmp_path, entity, "-binary"), space.bob.certificate, space.bob.issued.key)
    assert opened.wrapped is False
    assert opened.message == (
        b"From: alice@ch-a.mssante.fr\r\nTo: bob@ch-a.mssante.fr\r\nSubject: outer\r\nMIME-Version: 1.0\r\n" + entity
    )


def test_a_signed_whole_message_wins_over_the_outer_header(space: Space, tmp_path: Path) -> None:
    # openssl signing a whole message (or RFC 9788 header protection): its own fields were signed, the
    # outer ones of the same name were not, so From and Subject come from inside, nothing twice.
    entity = b"From: alice@ch-a.mssante.fr\r\nSubject: inner\r\nContent-Type: text/plain\r\n\r\nCompte rendu.\r\n"
    opened = mime.unprotect(envelope(space, tmp_path, entity, "-binary"), space.bob.certificate, space.bob.issued.key)
    assert opened.message == b"To: bob@ch-a.mssante.fr\r\nMIME-Version: 1.0\r\n" + entity


def test_refusals(space: Space, tmp_path: Path) -> None:
    def reason(raw: bytes) -> tuple[str, str]:
        with pytest.raises(cms.CmsError) as refused:
            mime.unprotect(raw, space.bob.certificate, space.bob.issued.key)
        return refused.value.reason, str(refused.value)

    assert reason(MESSAGE) == ("plaintext", "the message is not encrypted (S/MIME enveloped-data required)")
    assert reason(envelope(space, tmp_path, mime.wrap(MESSAGE))) == ("unsigned", "the message is not signed")
    broken = b"From: a@b\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\n!!notbase64!!\r\n"
    assert reason(broken) == ("malformed", "the encrypted part is not valid base64")
    for_carol = mime.protect(
        MESSAGE,
        signer=space.alice.certificate,
        key=space.alice.issued.key,
        recipients=[cms.Recipient(space.carol.certificate)],
    )
    assert reason(for_carol) == ("not-for-us", "no recipient entry for our certificate")


def test_a_body_changed_after_signing_is_a_bad_digest(space: Space, tmp_path: Path) -> None:
    (tmp_path / "entity").write_bytes(mime.wrap(MESSAGE))
    signed = openssl(
        "cms", "-sign", "-binary", "-crlfeol", "-in", tmp_path / "entity",
        "-signer", space.alice.cert, "-inkey", space.alice.key,
    )  # fmt: skip
    tampered = signed.replace(b"Voici les r\xc3\xa9sultats.", b"Voici les r\xc3\xa9sultatz.")
    assert tampered != signed
    (tmp_path / "entity").write_bytes(tampered)
    enc = openssl(
        "cms", "-encrypt", "-binary", "-crlfeol", "-aes-128-cbc", "-in", tmp_path / "entity", "-recip", space.bob.cert
    )  # fmt: skip
    opened = mime.unprotect(b"From: alice@ch-a.mssante.fr\r\n" + enc, space.bob.certificate, space.bob.issued.key)
    assert [(s.ok, s.reason) for s in opened.signed.signers] == [(False, "bad-digest")]


def test_triple_des_is_refused_as_weak(space: Space, tmp_path: Path) -> None:
    (tmp_path / "entity").write_bytes(mime.wrap(MESSAGE))
    enc = openssl(
        "cms", "-encrypt", "-binary", "-crlfeol", "-des3", "-in", tmp_path / "entity", "-recip", space.bob.cert
    )
    with pytest.raises(cms.CmsError) as refused:
        mime.unprotect(b"From: alice@ch-a.mssante.fr\r\n" + enc, space.bob.certificate, space.bob.issued.key)
    assert (refused.value.reason, str(refused.value)) == (
        "weak-algorithm",
        "unsupported content encryption tripledes_3key",
    )


def test_parts_are_cut_byte_exactly() -> None:
    body = b"preamble\r\n--b\r\nA\r\n\r\n--b \t\r\nB\r\n--b--\r\nepilogue\r\n"
    assert mime._parts(body, b"b") == [b"A\r\n", b"B"]
    with pytest.raises(mime.MimeError) as refused:
        mime._parts(b"--b\r\nA\r\n--b\r\nB\r\n", b"b")
    assert refused.value.reason == "malformed"
    # The boundary inside a longer line is not a delimiter; the close delimiter may end the body.
    assert mime._parts(b"--b\r\nA\r\n--bb\r\n--b-x\r\n--b--", b"b") == [b"A\r\n--bb\r\n--b-x"]
    assert mime._parts(b"--b\r\nA\r\n--b--\n", b"b") == [b"A"]


def _parts_by_pattern(body: bytes, boundary: bytes) -> list[bytes] | None:
    """RFC 2046 §5.1.1's delimiter lines as a regular expression: what `_parts` scans for by hand."""
    text = b"\r\n" + body
    line = re.compile(re.escape(b"\r\n--" + boundary) + rb"(--)?[ \t]*(?:\r\n|$)")
    parts: list[bytes] = []
    previous = None
    for m in line.finditer(text):
        if previous is not None:
            parts.append(text[previous.end() : m.start()])
        if m.group(1):
            return parts
        previous = m
    return None


@given(
    st.sampled_from([b"b", b"-", b"--", b"b-", b"a.b*", b"b ", b"(b)"]),
    st.lists(st.sampled_from([b"--", b"-", b"b", b"a.b*", b"x", b" ", b"\t", b"\r\n", b"\n", b"\r", b"$"])),
)
def test_parts_cut_where_the_rfc_2046_pattern_does(boundary: bytes, pieces: list[bytes]) -> None:
    body = b"".join(pieces)
    expected = _parts_by_pattern(body, boundary)
    if expected is None:
        with pytest.raises(mime.MimeError):
            mime._parts(body, boundary)
    else:
        assert mime._parts(body, boundary) == expected


def _whole_header(entity: bytes) -> Message:
    """What mime._headers stood for before it kept only the Content-* lines: the whole header parsed."""
    return BytesHeaderParser(policy=compat32).parsebytes(mime.split(entity)[0])


def _read(h: Message) -> tuple[object, ...]:
    return (
        h.get_content_type(),
        h.get_params(header="content-type"),
        h.get_param("boundary", None, header="content-type"),
        h.get("content-transfer-encoding"),
    )


HEADER_LINES = [
    b"From: claire@hopital-a.mssante.fr",
    b"Subject: =?utf-8?q?R=C3=A9sultats?=",
    b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256;',
    b' boundary="----=_b1"',
    b"\tcharset=utf-8",
    b"content-type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m",
    b"CONTENT-TRANSFER-ENCODING: base64",
    b"Content-Transfer-Encoding:  7bit ",
    b"From claire Mon Nov 23 08:00:00 2026",
    b"Content-Type : text/html",  # a space before the colon: the email package ends the header here
    b"not a header line",
    b": no name",
    b"X-\xc3\xa9: non-ASCII name",
    b"",
]


@pytest.mark.parametrize(
    "header",
    [
        b"Content-Type: text/plain\r\n",
        b'Subject: x\r\nContent-Type: multipart/signed; protocol="application/pkcs7-signature";\r\n boundary="b1"\r\n',
        b"Content-Type: text/plain\r\nContent-Type: application/pkcs7-mime\r\n",  # the first counts
        b" leading: continuation\r\nContent-Type: message/rfc822\r\n",
        b"From x\r\nContent-Type: application/pkcs7-mime; smime-type=signed-data\r\n",
        b'Content-Type: multipart/signed;\n boundary="lf-only"\n\nContent-Type: text/html\n',
        b"Subject: x\r\nbody line\r\nContent-Type: application/pkcs7-mime\r\n",  # not a header any more
        b"Content-Type: text/plain",  # no line end at all
        b"",
    ],
)
def test_only_the_content_lines_are_parsed_with_the_same_outcome(header: bytes) -> None:
    entity = header + b"\r\nbody\r\n"
    assert _read(mime._headers(entity)) == _read(_whole_header(entity))


@given(st.lists(st.sampled_from(HEADER_LINES), max_size=12), st.sampled_from([b"\r\n", b"\n", b"\r"]))
def test_any_mix_of_lines_reads_as_the_whole_header_does(lines: list[bytes], end: bytes) -> None:
    entity = b"".join(line + end for line in lines) + b"\r\nbody\r\n"
    assert _read(mime._headers(entity)) == _read(_whole_header(entity))


def test_base64_bodies_may_be_folded_with_any_whitespace() -> None:
    # RFC 2045 §6.8: line breaks, and whitespace MTAs add, are not part of the data; \s's six octets go.
    der = bytes(range(256)) * 3
    encoded = base64.b64encode(der)
    folded = b"\r\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    for ws in (b"\n", b" ", b"\t", b"\x0b", b"\x0c", b"\r\n "):
        body = folded.replace(b"\r\n", ws) + ws
        entity = b"Content-Type: application/pkcs7-mime\r\nContent-Transfer-Encoding: base64\r\n\r\n" + body
        assert mime.cms_octets(entity, "the part") == der
    with pytest.raises(cms.CmsError) as refused:
        mime.cms_octets(b"Content-Transfer-Encoding: base64\r\n\r\nAAAA\x00AAAA\r\n", "the part")
    assert str(refused.value) == "the part is not valid base64"
