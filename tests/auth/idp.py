"""A test identity provider: its signing keys (RSA and EC), the tokens it mints, and its jwks_uri served over
HTTPS on loopback by a real server (a thread of the test process), with its own CA."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tests.conftest import NodeDir
from tests.smtp.conftest import Gateway, serve

ISSUER = "https://auth.esante.test/auth/realms/esante-wallet"
AUDIENCE = "mssgw-test"


def _jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str, alg: str) -> dict[str, Any]:
    algo = jwt.get_algorithm_by_name(alg)
    data: dict[str, Any] = json.loads(algo.to_jwk(key.public_key()))
    return {**data, "kid": kid, "use": "sig", "alg": alg}


@dataclass
class Idp:
    rsa_key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    ec_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    served: dict[str, Any] = field(default_factory=dict)  # the JWKS the HTTPS server answers with
    fetches: int = 0

    def jwks(self) -> dict[str, Any]:
        return {"keys": [_jwk(self.rsa_key, "rsa-1", "RS256"), _jwk(self.ec_key, "ec-1", "ES256")]}

    def write(self, path: Path, doc: dict[str, Any] | None = None) -> Path:
        path.write_text(json.dumps(doc if doc is not None else self.jwks()))
        return path

    def token(
        self,
        identifier: str | None = "810000000009",
        *,
        alg: str = "RS256",
        kid: str | None = "rsa-1",
        key: Any = None,
        lifetime: int = 300,
        age: int = 0,
        drop: tuple[str, ...] = (),
        **claims: Any,
    ) -> str:
        now = int(time.time()) - age
        body: dict[str, Any] = {
            "iss": ISSUER,
            "aud": "account",
            "azp": AUDIENCE,
            "iat": now,
            "exp": now + lifetime,
            "jti": "c0ffee-1",
            "preferred_username": identifier,
            "scope": "openid",
        }
        body.update(claims)
        for name in drop:
            body.pop(name, None)
        if key is None:
            key = self.ec_key if alg.startswith("ES") else self.rsa_key
        headers = {"kid": kid} if kid is not None else {}
        return jwt.encode(body, key, algorithm=alg, headers=headers)


def _self_signed() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem_key


@contextmanager
def serve_jwks(idp: Idp, workdir: Path, pieces: int = 1) -> Iterator[tuple[str, Path]]:
    """(the jwks_uri, the CA file that verifies it): an HTTPS server answering GET /certs with `idp.served`
    (its JWKS, until a test changes it) and 404 elsewhere; `pieces`: the body written in
    that many parts, 0.1 s apart, chunked."""
    cert, key = _self_signed()
    (workdir / "idp-cert.pem").write_bytes(cert)
    (workdir / "idp-key.pem").write_bytes(key)
    idp.served.clear()
    idp.served.update(idp.jwks())

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/certs":
                self.send_error(404)
                return
            idp.fetches += 1
            body = json.dumps(idp.served).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if pieces == 1:
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            size = -(-len(body) // pieces)
            for i in range(0, len(body), size):
                part = body[i : i + size]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
                time.sleep(0.1)
            self.wfile.write(b"0\r\n\r\n")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    Handler.protocol_version = "HTTP/1.1" if pieces > 1 else "HTTP/1.0"
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(workdir / "idp-cert.pem", workdir / "idp-key.pem")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/certs", workdir / "idp-cert.pem"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def token_gateway(node: NodeDir, idp: Idp) -> Iterator[Gateway]:
    """The node `node` (provisioned: tests.smtp.conftest.provision) served with [oidc] naming `idp`, whose
    keys it fetches from its jwks_uri over HTTPS."""
    with serve_jwks(idp, node.data) as (uri, ca):
        env = {
            "MSSGW_OIDC__ISSUER": ISSUER,
            "MSSGW_OIDC__JWKS": uri,
            "MSSGW_OIDC__AUDIENCE": AUDIENCE,
            "MSSGW_OIDC__CA_FILE": str(ca),
        }
        yield from serve(node, env)
