"""Encryption at rest: per-mailbox data keys wrapped by the node's key-encryption key (KEK).

Implementation notes
- Algorithm: AES-256-GCM everywhere (cryptography's AESGCM), 96-bit random nonces. A sealed blob is
  `version(1) || nonce(12) || ciphertext+tag`. The associated data binds a blob to its owner (mailbox
  address, object id), so a ciphertext moved to another row or mailbox fails to open.
- A data key is wrapped with the KEK and AAD = b"dk\\0" + address; the KEK id (first 8 bytes of
  SHA-256 of the key, hex) is stored beside each wrapped key.
- Rotation: the KEK may carry previous keys (`[store] previous_kek_files`, `previous_keks`). It always
  seals and wraps with the current one and opens with any: a blob carries no key id, so the current key
  is tried first, then each previous one (a failed AES-GCM open of a data key costs microseconds).
  `rewrap`/`reseal` give the blob sealed anew under the current key, or None when it already is: what
  `mssgw kek rewrap` does to every sealed item before a previous key is dropped.
- The KEK comes from the configuration (`store.kek`, normally MSSGW_STORE__KEK) or a key file. A key file
  must be a regular file readable by its owner only and must not sit inside the data directory: the
  key would otherwise travel with every copy of the data it protects.
- Key material never appears in reprs, exceptions or logs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.errors import SecretKeyError

_VERSION = b"\x01"
_NONCE = 12
KEY_BYTES = 32


class DecryptionError(SecretKeyError):
    """A sealed blob failed authentication: wrong key, wrong owner, or altered data."""


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(_NONCE)
    return _VERSION + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _open(key: bytes, blob: bytes, aad: bytes) -> bytes:
    if len(blob) < 1 + _NONCE + 16 or blob[:1] != _VERSION:
        raise DecryptionError("sealed data is truncated or of an unknown version")
    try:
        return AESGCM(key).decrypt(blob[1 : 1 + _NONCE], blob[1 + _NONCE :], aad)
    except InvalidTag:
        raise DecryptionError("sealed data failed authentication (wrong key, owner or altered)") from None


class DataKey:
    """A mailbox's data key: seals message bodies and other per-mailbox secrets."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise SecretKeyError("a data key must be 32 bytes")
        self._key = key

    def __repr__(self) -> str:
        return "DataKey(<hidden>)"

    @classmethod
    def generate(cls) -> DataKey:
        return cls(secrets.token_bytes(KEY_BYTES))

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        return _seal(self._key, plaintext, aad)

    def open(self, blob: bytes, aad: bytes) -> bytes:
        return _open(self._key, blob, aad)


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]


class KeyEncryptionKey:
    """The node's KEK: wraps data keys and small secrets (TOTP seeds); opens with previous keys too."""

    __slots__ = ("_key", "_previous", "key_id")

    def __init__(self, key: bytes, previous: Sequence[bytes] = ()) -> None:
        for k in (key, *previous):
            if len(k) != KEY_BYTES:
                raise SecretKeyError(f"a key-encryption key must be {KEY_BYTES} bytes, got {len(k)}")
        self._key = key
        self._previous = tuple(dict.fromkeys(k for k in previous if k != key))
        self.key_id = key_id(key)

    def __repr__(self) -> str:
        return f"KeyEncryptionKey(id={self.key_id}, previous={self.previous_ids})"

    @property
    def previous_ids(self) -> list[str]:
        return [key_id(k) for k in self._previous]

    @staticmethod
    def _dk_aad(owner: str) -> bytes:
        return b"dk\0" + owner.encode()

    def _open_any(self, blob: bytes, aad: bytes) -> tuple[bytes, bool]:
        """The plaintext, and whether the current key opened it."""
        try:
            return _open(self._key, blob, aad), True
        except DecryptionError as error:
            for key in self._previous:
                try:
                    return _open(key, blob, aad), False
                except DecryptionError:
                    continue
            raise error from None

    def wrap(self, dk: DataKey, owner: str) -> bytes:
        return _seal(self._key, dk._key, self._dk_aad(owner))

    def unwrap(self, blob: bytes, owner: str) -> DataKey:
        return DataKey(self._open_any(blob, self._dk_aad(owner))[0])

    def rewrap(self, blob: bytes, owner: str) -> bytes | None:
        """`blob` wrapped anew with the current key; None when it already is (DecryptionError if no key opens it)."""
        raw, current = self._open_any(blob, self._dk_aad(owner))
        return None if current else _seal(self._key, raw, self._dk_aad(owner))

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        return _seal(self._key, plaintext, b"kek\0" + aad)

    def open(self, blob: bytes, aad: bytes) -> bytes:
        return self._open_any(blob, b"kek\0" + aad)[0]

    def reseal(self, blob: bytes, aad: bytes) -> bytes | None:
        """`blob` sealed anew with the current key; None when it already is (DecryptionError if no key opens it)."""
        plaintext, current = self._open_any(blob, b"kek\0" + aad)
        return None if current else self.seal(plaintext, aad)


def generate_kek_b64() -> str:
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def _decode(text: str, where: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SecretKeyError(f"{where}: the key-encryption key is not valid base64") from None
    if len(raw) != KEY_BYTES:
        raise SecretKeyError(f"{where}: a key-encryption key must be {KEY_BYTES} bytes, got {len(raw)}")
    return raw


def _read_key_file(path: Path, data_dir: Path | None) -> bytes:
    check_secret_file(path, data_dir)
    return _decode(path.read_text(), str(path))


def write_secret_file(path: Path, data: bytes) -> None:
    """Create `path` readable by its owner only, from the first byte (no window at a wider mode)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def check_secret_file(path: Path, data_dir: Path | None) -> None:
    """Refuse key files others can read, or that live inside the data directory they protect."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SecretKeyError(f"key file {path} does not exist") from None
    if not stat.S_ISREG(st.st_mode):
        raise SecretKeyError(f"key file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise SecretKeyError(f"key file {path} is readable by others (mode {st.st_mode & 0o777:o}); chmod 600 it")
    if data_dir is not None:
        real, data = path.resolve(), data_dir.resolve()
        if real == data or data in real.parents:
            raise SecretKeyError(
                f"key file {path} is inside the data directory {data_dir}; keep it apart from the data"
            )


def load_kek(
    inline: str | None,
    key_file: Path | None,
    data_dir: Path | None,
    previous_inline: Sequence[str] = (),
    previous_files: Sequence[Path] = (),
) -> KeyEncryptionKey:
    """The KEK from the inline value (environment) if set, else from the key file; with the previous keys
    (inline values, then files, each file checked as the current one is)."""
    if inline:
        current = _decode(inline, "store.kek")
    elif key_file is None:
        raise SecretKeyError("no key-encryption key: set MSSGW_STORE__KEK or store.kek_file")
    else:
        current = _read_key_file(key_file, data_dir)
    previous = [_decode(v, f"store.previous_keks[{i}]") for i, v in enumerate(previous_inline)]
    previous += [_read_key_file(p, data_dir) for p in previous_files]
    return KeyEncryptionKey(current, previous)
