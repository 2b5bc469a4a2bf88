"""A small trust space for the S/MIME tests (a real certs.pki hierarchy, keys and certificates on disk
for `openssl cms`), and the openssl runner."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.pki import Issued, TrustSpacePKI


@dataclass
class Holder:
    issued: Issued
    cert: Path
    key: Path

    @property
    def certificate(self) -> x509.Certificate:
        return self.issued.certificate


@dataclass
class Space:
    root: Path
    chain: Path  # the PERSONNES intermediate
    alice: Holder
    bob: Holder
    carol: Holder


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> Space:
    base = tmp_path_factory.mktemp("smime")
    pki = TrustSpacePKI.create(base / "pki", label="CMS Test", crl_base_url="http://crl.test/")

    def holder(name: str) -> Holder:
        issued = pki.issue_address(f"{name}@ch-a.mssante.fr")
        cert, key = base / f"{name}.pem", base / f"{name}.key"
        cert.write_bytes(pem(issued.certificate))
        key.write_bytes(
            issued.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return Holder(issued, cert, key)

    alice = holder("alice")
    (base / "root.pem").write_bytes(pem(pki.root))
    (base / "chain.pem").write_bytes(b"".join(pem(c) for c in alice.issued.chain))
    return Space(base / "root.pem", base / "chain.pem", alice, holder("bob"), holder("carol"))


def openssl(*args: str | Path, data: bytes = b"") -> bytes:
    done = subprocess.run(["openssl", *map(str, args)], input=data, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout
