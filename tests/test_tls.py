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

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certs.pki import TrustSpacePKI
from gateway.tls import ASYNCIO_TLS_BUFFER, crl_stamp, read_crls, server_context, shrink_asyncio_tls_buffers


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
    assert crl_stamp(tmp_path / "absent") == ()
