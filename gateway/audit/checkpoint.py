"""Signed audit checkpoints: (tree size, root hash) statements signed with the node's Ed25519 key.

Implementation notes
- The signed message is text, one field a line, so it can be checked with any Ed25519 tool:
  `mssgw-audit-checkpoint/1`, node name, tree size, base64 root hash, timestamp, each followed by "\\n".
- The key id is the first 16 hex digits of SHA-256 over the raw public key; checkpoints carry it so a
  rotated key's checkpoints remain verifiable with the old public key.
- The private key file is created 0600 outside the data directory (same rules as the KEK).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.errors import SecretKeyError
from gateway.store.crypto import check_secret_file, write_secret_file

FORMAT = "mssgw-audit-checkpoint/1"


def checkpoint_message(node: str, tree_size: int, root_hash: bytes, ts: str) -> bytes:
    return f"{FORMAT}\n{node}\n{tree_size}\n{base64.b64encode(root_hash).decode()}\n{ts}\n".encode()


ARCHIVE_FORMAT = "mssgw-audit-archive/1"


def archive_message(node: str, first_seq: int, last_seq: int, last_ts: str, root_hash: bytes, ts: str) -> bytes:
    """What an archive's signature covers (gateway.audit.archive): its range, its last record's time and the
    root over the records up to it. A format of its own, so that no periodic checkpoint (whose message
    starts with another first line) can pass for an archive and let records be deleted."""
    root = base64.b64encode(root_hash).decode()
    return f"{ARCHIVE_FORMAT}\n{node}\n{first_seq}\n{last_seq}\n{last_ts}\n{root}\n{ts}\n".encode()


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class CheckpointVerifier:
    public_key: Ed25519PublicKey

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            self.public_key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def public_pem(self) -> bytes:
        return self.public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    @classmethod
    def from_pem(cls, data: bytes) -> CheckpointVerifier:
        key = serialization.load_pem_public_key(data)
        if not isinstance(key, Ed25519PublicKey):
            raise SecretKeyError("an audit checkpoint public key must be Ed25519")
        return cls(key)


class CheckpointSigner:
    __slots__ = ("_key", "verifier")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.verifier = CheckpointVerifier(key.public_key())

    def __repr__(self) -> str:
        return f"CheckpointSigner(key_id={self.verifier.key_id})"

    @property
    def key_id(self) -> str:
        return self.verifier.key_id

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    @classmethod
    def generate(cls, path: Path) -> CheckpointSigner:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        write_secret_file(path, pem)
        return cls(key)

    @classmethod
    def load(cls, path: Path, data_dir: Path | None) -> CheckpointSigner:
        check_secret_file(path, data_dir)
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError):
            raise SecretKeyError(f"{path} is not an unencrypted PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SecretKeyError(f"{path} is not an Ed25519 key")
        return cls(key)
