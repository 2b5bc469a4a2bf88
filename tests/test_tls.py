"""gateway/tls.py: the smaller asyncio TLS read buffer still carries bulk transfers intact; a CRL directory's
files read once each, in either encoding."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import ssl
from asyncio import sslproto
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certs.pki import TrustSpacePKI, write_bundle
from gateway.tls import (
    ASYNCIO_TLS_BUFFER,
    RelayContexts,
    client_context,
    crl_stamp,
    read_crls,
    server_context,
    shrink_asyncio_tls_buffers,
)


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return tmp / "cert.pem", tmp / "key.pem"


async def test_a_3_mb_round_trip_through_the_shrunken_buffers(tmp_path: Path) -> None:
    original = sslproto.SSLProtocol.max_size
    try:
        shrink_asyncio_tls_buffers()
        assert sslproto.SSLProtocol.max_size == ASYNCIO_TLS_BUFFER == 32768
        cert, key = self_signed(tmp_path)
        payload = os.urandom(3 * 1024 * 1024 + 17)

        async def echo_digest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = await reader.readexactly(len(payload))
            writer.write(hashlib.sha256(data).digest() + data[-1000:])
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo_digest, "127.0.0.1", 0, ssl=server_context(cert, key))
        port = server.sockets[0].getsockname()[1]
        client = ssl.create_default_context(cafile=str(cert))
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="localhost")
        assert writer.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
        writer.write(payload)
        await writer.drain()
        answer = await reader.read()
        assert answer == hashlib.sha256(payload).digest() + payload[-1000:]
        writer.close()
        server.close()
        await server.wait_closed()
    finally:
        sslproto.SSLProtocol.max_size = original


def test_a_crl_directory_is_read_in_both_encodings_each_crl_once(tmp_path: Path) -> None:
    pki = TrustSpacePKI.create(tmp_path / "pki", label="TLS TEST", crl_base_url="http://crl.tls.test")
    crl = pki.path / "crl"  # root, organisations and personnes, each as .crl (DER) and .pem
    (crl / "junk.der").write_bytes(b"not a CRL")
    (crl / "notes.txt").write_text("not looked at")
    (crl / "fetching.part").write_bytes(b"")  # a CRL being written by the fetcher
    stamp = crl_stamp(crl)
    assert [Path(name).name for name, _, _ in stamp] == [
        "junk.der",
        "organisations.crl",
        "organisations.pem",
        "personnes.crl",
        "personnes.pem",
        "root.crl",
        "root.pem",
    ]
    crls, errors = read_crls(stamp)
    assert sorted(c.issuer.rfc4514_string() for c in crls) == sorted(
        pki.ca(name).subject.rfc4514_string() for name in ("root", "organisations", "personnes")
    )
    assert [(Path(name).name, bool(error)) for name, error in errors] == [("junk.der", True)]
    assert read_crls(stamp)[0] is crls  # parsed once for every reader of the directory
    (crl / "junk.der").unlink()
    assert read_crls(crl_stamp(crl))[0] is not crls  # a change is read anew
    assert crl_stamp(tmp_path / "absent") == ()


async def test_a_kept_context_meets_the_current_crls_at_each_handshake(tmp_path: Path) -> None:
    """CrlContexts.live(): the one context an asyncio TLS server keeps; each handshake is judged by the
    CRLs of the directory as it is then. Empty at first (a crl-cache/ before its first fetch): closed."""
    pki = TrustSpacePKI.create(tmp_path / "pki", label="TLS TEST", crl_base_url="http://crl.tls.test")
    server = write_bundle(pki.issue_server(["localhost"]), tmp_path / "server", root=pki.root)
    issued = pki.issue_server(["client.tls.test"])
    client = write_bundle(issued, tmp_path / "client", root=pki.root)
    crls = tmp_path / "crls"
    crls.mkdir()

    def fetched(*cas: str) -> None:
        for ca in cas:
            (crls / f"{ca}.crl").write_bytes((pki.path / "crl" / f"{ca}.crl").read_bytes())

    live = RelayContexts(server["fullchain"], server["key"], server["root"], crls).live()

    async def greet(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(greet, "127.0.0.1", 0, ssl=live)
    port = listener.sockets[0].getsockname()[1]

    async def attempt() -> str:
        ctx = client_context(server["root"], cert_chain=client["fullchain"], key=client["key"])
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
            got = await reader.read()  # TLS 1.3: a refused client certificate shows here, as an alert
            writer.close()
            return got.decode()
        except ssl.SSLError as exc:
            return str(exc.reason)

    # asyncio's server ends a refused handshake by closing, its alert unsent: the client reads nothing.
    refused = ""
    try:
        assert await attempt() == refused  # no CRL yet: the chain cannot be judged
        fetched("root", "organisations", "personnes")
        assert await attempt() == "ok"
        pki.revoke(issued.serial, x509.ReasonFlags.key_compromise)
        pki.publish_crls()
        assert await attempt() == "ok"  # published, not yet in the directory the node reads
        fetched("organisations")
        assert await attempt() == refused
        assert await attempt() == refused
    finally:
        listener.close()
        await listener.wait_closed()


def test_a_failed_rebuild_keeps_the_last_context(tmp_path: Path) -> None:
    """get() runs for each connection: when the certificate files are broken mid-rotation, the listener
    keeps serving with the context it has (and says so once), rather than refusing every connection."""
    from gateway.errors import ConfigError
    from gateway.tls import CrlContexts

    cert, key = self_signed(tmp_path)
    pki = TrustSpacePKI.create(tmp_path / "pki", label="TLS TEST", crl_base_url="http://crl.tls.test")
    crls = tmp_path / "crls"
    crls.mkdir()
    contexts = CrlContexts(lambda: server_context(cert, key), crls)
    first = contexts.get()
    assert first.verify_flags & ssl.VERIFY_CRL_CHECK_CHAIN  # no CRL yet, but a directory: checked, closed
    key.write_text("not a key")
    (crls / "root.crl").write_bytes((pki.path / "crl" / "root.crl").read_bytes())
    assert contexts.get() is first
    assert contexts.get() is first  # not tried again until the CRLs change
    with pytest.raises(ConfigError):  # with nothing to fall back on, the error is the caller's
        CrlContexts(lambda: server_context(cert, key), crls).get()
    cert, key = self_signed(tmp_path)  # repaired
    (crls / "organisations.crl").write_bytes((pki.path / "crl" / "organisations.crl").read_bytes())
    repaired = contexts.get()
    assert repaired is not first
    assert repaired.verify_flags & ssl.VERIFY_CRL_CHECK_CHAIN
