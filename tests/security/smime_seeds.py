"""Material for the S/MIME fuzz target: a small trust space made by the project's own PKI code, a
recipient's certificate and key, and a seed corpus of real protected messages and their parts.

`write_material(directory)` writes:
- `root.pem`, `crl/*.der` (the trust anchor and its CAs' CRLs, for the signer checks), `ca/*.pem`;
- `bob.pem`, `bob.key` (the recipient the peer encrypts for: the node's side);
- `seeds/*`: each seed is one mode octet (see `fuzz_smime.MODES`) followed by its payload.

Run as a script to prepare a longer run: `PYTHONPATH=. python tests/security/smime_seeds.py DIR`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from certs.pki import TrustSpacePKI
from gateway.smime import cms, mime

SENDER = "alice.martin@ch-a.mssante.fr"
RECIPIENT = "bob.durand@ch-b.mssante.fr"
HOST = "mail.ch-b.mssante.fr"
MESSAGE = (
    f"From: Dr Alice Martin <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: Compte rendu\r\n"
    "Date: Mon, 02 Mar 2026 10:15:30 +0100\r\nMessage-ID: <cr1@ch-a.mssante.fr>\r\nMIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n\r\nCompte rendu de consultation.\r\n"
).encode()

# Mode octets (tests/security/fuzz_smime.py reads the first octet of an input modulo len(MODES)).
MESSAGE_MODE, SUBMITTED_MODE, DER_MODE, INNER_MODE = 0, 1, 2, 3


def _pem(cert: object) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)  # type: ignore[attr-defined, no-any-return]


def write_material(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    pki = TrustSpacePKI.create(directory / "pki", label="Fuzz", crl_base_url="http://crl.test/")
    alice, bob = pki.issue_address(SENDER), pki.issue_address(RECIPIENT)
    (directory / "root.pem").write_bytes(_pem(pki.root))
    (directory / "ca").mkdir(exist_ok=True)
    for name in ("personnes", "organisations"):
        (directory / "ca" / f"{name}.pem").write_bytes(_pem(pki.ca(name)))
    (directory / "crl").mkdir(exist_ok=True)
    for name, path in pki.publish_crls().items():
        (directory / "crl" / f"{name}.der").write_bytes(path.read_bytes())
    (directory / "bob.pem").write_bytes(_pem(bob.certificate))
    (directory / "bob.key").write_bytes(
        bob.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    to_bob = [cms.Recipient(bob.certificate)]
    protected = mime.protect(MESSAGE, signer=alice.certificate, key=alice.key, chain=alice.chain, recipients=to_bob)
    gcm = mime.protect(
        MESSAGE,
        signer=alice.certificate,
        key=alice.key,
        chain=alice.chain,
        recipients=[cms.Recipient(bob.certificate, oaep=False)],
        gcm=True,
    )
    envelope = mime.envelope_der(protected)
    signed_entity = cms.decrypt(envelope, bob.certificate, bob.key)
    signature = cms.sign_detached(mime.wrap(MESSAGE), alice.certificate, alice.key, alice.chain)
    # An end-to-end form: the author signed the message itself (what a client submits).
    header, body = mime.split(MESSAGE)
    entity = b"".join(raw for name, raw in mime.fields(header) if name.startswith("content-")) + b"\r\n" + body
    outer = b"".join(raw for name, raw in mime.fields(header) if not name.startswith("content-"))
    client_signed = outer + mime.signed_entity(
        entity, cms.sign_detached(entity, alice.certificate, alice.key, alice.chain), "b0undary"
    )
    seeds = {
        "protected": bytes([MESSAGE_MODE]) + protected,
        "protected-gcm": bytes([MESSAGE_MODE]) + gcm,
        "client-signed": bytes([SUBMITTED_MODE]) + client_signed,
        "plain": bytes([SUBMITTED_MODE]) + MESSAGE,
        "envelope-der": bytes([DER_MODE]) + envelope,
        "signature-der": bytes([DER_MODE]) + signature,
        "signed-entity": bytes([INNER_MODE]) + signed_entity,
        "client-signed-inner": bytes([INNER_MODE]) + client_signed,
    }
    (directory / "seeds").mkdir(exist_ok=True)
    for name, data in seeds.items():
        (directory / "seeds" / name).write_bytes(data)


if __name__ == "__main__":
    write_material(Path(sys.argv[1]))
