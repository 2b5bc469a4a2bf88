"""Encryption at rest: sealing, owner binding, the KEK's sources and the key-file rules."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.errors import SecretKeyError
from gateway.store.crypto import (
    KEY_BYTES,
    DataKey,
    DecryptionError,
    KeyEncryptionKey,
    check_secret_file,
    generate_kek_b64,
    load_kek,
    write_secret_file,
)

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))
THIRD = bytes(range(2, 34))
TRUNCATED = "sealed data is truncated or of an unknown version"
FAILED = "sealed data failed authentication (wrong key, owner or altered)"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _key_file(path: Path, content: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    path.chmod(mode)
    return path


def test_data_key_round_trip_and_blob_layout() -> None:
    dk = DataKey(KEY)
    blob = dk.seal(b"bonjour docteur", b"aad")
    assert len(blob) == 1 + 12 + len(b"bonjour docteur") + 16
    assert blob[:1] == b"\x01"
    assert b"bonjour" not in blob
    assert dk.open(blob, b"aad") == b"bonjour docteur"
    assert dk.seal(b"bonjour docteur", b"aad") != blob  # a fresh nonce each time
    assert dk.open(dk.seal(b"", b""), b"") == b""


def test_aad_binds_a_blob_to_its_owner() -> None:
    dk = DataKey(KEY)
    blob = dk.seal(b"compte rendu", b"a@ch.mssante.fr\x00m1")
    for aad in (b"b@ch.mssante.fr\x00m1", b"a@ch.mssante.fr\x00m2", b""):
        with pytest.raises(DecryptionError) as exc:
            dk.open(blob, aad)
        assert str(exc.value) == FAILED


def test_wrong_key_and_altered_blob_fail() -> None:
    blob = DataKey(KEY).seal(b"x" * 100, b"aad")
    with pytest.raises(DecryptionError) as exc:
        DataKey(OTHER).open(blob, b"aad")
    assert str(exc.value) == FAILED
    altered = blob[:20] + bytes([blob[20] ^ 1]) + blob[21:]
    with pytest.raises(DecryptionError) as exc:
        DataKey(KEY).open(altered, b"aad")
    assert str(exc.value) == FAILED


def test_truncated_and_unknown_version_blobs() -> None:
    dk = DataKey(KEY)
    blob = dk.seal(b"", b"aad")
    assert len(blob) == 29
    for bad in (b"", b"\x01", blob[:28], b"\x02" + blob[1:], b"\x00" + blob[1:]):
        with pytest.raises(DecryptionError) as exc:
            dk.open(bad, b"aad")
        assert str(exc.value) == TRUNCATED
    assert issubclass(DecryptionError, SecretKeyError)


def test_kek_wraps_data_keys_per_owner() -> None:
    kek = KeyEncryptionKey(KEY)
    dk = DataKey.generate()
    wrapped = kek.wrap(dk, "a@ch.mssante.fr")
    assert kek.unwrap(wrapped, "a@ch.mssante.fr").open(dk.seal(b"msg", b"m"), b"m") == b"msg"
    with pytest.raises(DecryptionError) as exc:
        kek.unwrap(wrapped, "b@ch.mssante.fr")
    assert str(exc.value) == FAILED
    with pytest.raises(DecryptionError) as exc:
        KeyEncryptionKey(OTHER).unwrap(wrapped, "a@ch.mssante.fr")
    assert str(exc.value) == FAILED
    # KEK seals are domain-separated from wrapped data keys.
    sealed = kek.seal(b"JBSWY3DPEHPK3PXP", b"totp")
    assert kek.open(sealed, b"totp") == b"JBSWY3DPEHPK3PXP"
    with pytest.raises(DecryptionError):
        DataKey(KEY).open(sealed, b"totp")


def test_key_lengths() -> None:
    with pytest.raises(SecretKeyError) as exc:
        KeyEncryptionKey(b"\x00" * 16)
    assert str(exc.value) == "a key-encryption key must be 32 bytes, got 16"
    with pytest.raises(SecretKeyError) as exc:
        KeyEncryptionKey(b"\x00" * 32, [b"\x01" * 31])
    assert str(exc.value) == "a key-encryption key must be 32 bytes, got 31"
    with pytest.raises(SecretKeyError) as exc:
        DataKey(b"\x00" * 31)
    assert str(exc.value) == "a data key must be 32 bytes"
    assert len(base64.b64decode(generate_kek_b64())) == KEY_BYTES
    assert generate_kek_b64() != generate_kek_b64()


def test_reprs_never_show_key_material() -> None:
    kek = KeyEncryptionKey(KEY)
    dk = DataKey(KEY)
    assert repr(dk) == str(dk) == "DataKey(<hidden>)"
    assert repr(kek) == str(kek) == "KeyEncryptionKey(id=630dcd2966c43366, previous=[])"
    assert kek.key_id == "630dcd2966c43366"
    for text in (repr(kek), repr(dk), repr([kek, dk]), repr({"k": kek})):
        assert KEY.hex() not in text
        assert _b64(KEY) not in text
        assert repr(KEY) not in text
    # __slots__: no __dict__ for a debugger or a structured logger to dump.
    assert not hasattr(kek, "__dict__")
    assert not hasattr(dk, "__dict__")


def test_load_kek_from_file(tmp_path: Path) -> None:
    path = _key_file(tmp_path / "keys" / "kek", _b64(KEY) + "\n")
    kek = load_kek(None, path, tmp_path / "data")
    assert kek.key_id == KeyEncryptionKey(KEY).key_id
    assert kek.open(KeyEncryptionKey(KEY).seal(b"s", b"a"), b"a") == b"s"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o601, 0o610])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = _key_file(tmp_path / "kek", _b64(KEY), mode)
    with pytest.raises(SecretKeyError) as exc:
        load_kek(None, path, None)
    assert str(exc.value) == f"key file {path} is readable by others (mode {mode:o}); chmod 600 it"


def test_owner_only_modes_are_accepted(tmp_path: Path) -> None:
    for mode in (0o600, 0o400, 0o700):
        path = _key_file(tmp_path / f"kek-{mode:o}", _b64(KEY), mode)
        assert load_kek(None, path, None).key_id == "630dcd2966c43366"


def test_key_file_inside_the_data_dir_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for path in (data / "kek", data / "keys" / "kek"):
        _key_file(path, _b64(KEY))
        with pytest.raises(SecretKeyError) as exc:
            load_kek(None, path, data)
        assert str(exc.value) == f"key file {path} is inside the data directory {data}; keep it apart from the data"
    # A symlink from outside still resolves into the data directory.
    link = tmp_path / "link-kek"
    link.symlink_to(data / "kek")
    with pytest.raises(SecretKeyError) as exc:
        check_secret_file(link, data)
    assert str(exc.value) == f"key file {link} is inside the data directory {data}; keep it apart from the data"
    # A sibling directory whose name starts like the data directory's is not inside it.
    beside = _key_file(tmp_path / "data-keys" / "kek", _b64(KEY))
    assert load_kek(None, beside, data).key_id == "630dcd2966c43366"


def test_missing_and_non_regular_key_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "kek"
    with pytest.raises(SecretKeyError) as exc:
        load_kek(None, missing, None)
    assert str(exc.value) == f"key file {missing} does not exist"
    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)
    directory.chmod(0o700)
    with pytest.raises(SecretKeyError) as exc:
        load_kek(None, directory, None)
    assert str(exc.value) == f"key file {directory} is not a regular file"
    with pytest.raises(SecretKeyError) as exc:
        load_kek(None, None, None)
    assert str(exc.value) == "no key-encryption key: set MSSGW_STORE__KEK or store.kek_file"


def test_key_file_contents_must_be_a_base64_32_byte_key(tmp_path: Path) -> None:
    bad = _key_file(tmp_path / "bad", "not base64 at all! c2VjcmV0")
    with pytest.raises(SecretKeyError) as exc:
        load_kek(None, bad, None)
    assert str(exc.value) == f"{bad}: the key-encryption key is not valid base64"
    short = _key_file(tmp_path / "short", _b64(KEY[:16]))
    with pytest.raises(SecretKeyError) as exc:
        load_kek(None, short, None)
    assert str(exc.value) == f"{short}: a key-encryption key must be 32 bytes, got 16"
    with pytest.raises(SecretKeyError) as exc:
        load_kek("@@" + _b64(KEY), None, None)
    assert str(exc.value) == "store.kek: the key-encryption key is not valid base64"
    assert _b64(KEY) not in str(exc.value)


def test_inline_kek_from_the_environment_wins_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file_key = _key_file(tmp_path / "keys" / "kek", _b64(OTHER))
    cfg_path = tmp_path / "node" / "mssgw.toml"
    cfg_path.parent.mkdir()
    cfg_path.write_text(f'[node]\ndomain = "ch-test.mssante.fr"\n[store]\nkek_file = "{file_key}"\n')
    monkeypatch.setenv("MSSGW_STORE__KEK", _b64(KEY))
    cfg = load_config(cfg_path)
    assert cfg.store.kek is not None
    assert cfg.store.kek_file == file_key
    kek = load_kek(cfg.store.kek.get_secret_value(), cfg.store.kek_file, cfg.base_dir)
    assert kek.key_id == KeyEncryptionKey(KEY).key_id != KeyEncryptionKey(OTHER).key_id
    # The file is not even looked at: a missing or unsafe one does not matter then.
    assert load_kek(_b64(KEY), tmp_path / "missing", None).key_id == kek.key_id
    monkeypatch.delenv("MSSGW_STORE__KEK")
    assert load_kek(None, load_config(cfg_path).store.kek_file, None).key_id == KeyEncryptionKey(OTHER).key_id


def test_write_secret_file_is_0600_from_the_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[tuple[int, int]] = []
    modes_at_fsync: list[int] = []
    real_open, real_fsync = os.open, os.fsync

    def spy_open(path: object, flags: int, mode: int = 0o777, *args: object, **kwargs: object) -> int:
        opened.append((flags, mode))
        return real_open(path, flags, mode, *args, **kwargs)  # type: ignore[arg-type]

    def spy_fsync(fd: int) -> None:
        modes_at_fsync.append(stat.S_IMODE(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(os, "fsync", spy_fsync)
    old_umask = os.umask(0)  # a careless umask must not widen the file
    try:
        target = tmp_path / "secrets" / "kek"
        write_secret_file(target, b"secret-bytes")
    finally:
        os.umask(old_umask)
    monkeypatch.undo()
    want = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    assert [(flags & want, mode) for flags, mode in opened] == [(want, 0o600)]
    assert modes_at_fsync == [0o600]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    assert target.read_bytes() == b"secret-bytes"


def test_write_secret_file_refuses_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "kek"
    target.write_bytes(b"original")
    with pytest.raises(FileExistsError):
        write_secret_file(target, b"replacement")
    assert target.read_bytes() == b"original"
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FileExistsError):
        write_secret_file(link, b"through a symlink")
    assert not (tmp_path / "elsewhere").exists()


# -- rotation: previous keys open, the current one seals -------------------------------------------------


def test_previous_keys_open_and_the_current_one_seals() -> None:
    old, new = KeyEncryptionKey(KEY), KeyEncryptionKey(OTHER, [KEY])
    assert new.key_id == KeyEncryptionKey(OTHER).key_id
    assert new.previous_ids == [old.key_id]
    assert repr(new) == f"KeyEncryptionKey(id={new.key_id}, previous=['{old.key_id}'])"
    dk = DataKey.generate()
    wrapped_old = old.wrap(dk, "a@x")
    sealed_old = old.seal(b"seed", b"totp\0a@x")
    # Opened with the previous key; the owner binding still holds under it.
    assert new.unwrap(wrapped_old, "a@x").seal(b"m", b"aad")[:1] == b"\x01"
    assert new.open(sealed_old, b"totp\0a@x") == b"seed"
    with pytest.raises(DecryptionError):
        new.unwrap(wrapped_old, "b@x")
    with pytest.raises(DecryptionError):
        new.open(sealed_old, b"totp\0b@x")
    # Sealed anew under the current key, which alone then opens it; None when nothing is to do.
    rewrapped = new.rewrap(wrapped_old, "a@x")
    resealed = new.reseal(sealed_old, b"totp\0a@x")
    assert rewrapped is not None
    assert resealed is not None
    assert KeyEncryptionKey(OTHER).open(resealed, b"totp\0a@x") == b"seed"
    body = b"corps"
    assert KeyEncryptionKey(OTHER).unwrap(rewrapped, "a@x").open(dk.seal(body, b"m"), b"m") == body
    assert new.rewrap(rewrapped, "a@x") is None
    assert new.reseal(resealed, b"totp\0a@x") is None
    # Without the previous key, the old blobs are refused as any foreign blob is.
    with pytest.raises(DecryptionError):
        KeyEncryptionKey(OTHER).unwrap(wrapped_old, "a@x")
    with pytest.raises(DecryptionError):
        KeyEncryptionKey(OTHER).reseal(sealed_old, b"totp\0a@x")
    # A previous key equal to the current one is dropped.
    assert KeyEncryptionKey(KEY, [KEY, OTHER, OTHER]).previous_ids == [KeyEncryptionKey(OTHER).key_id]


def test_previous_keys_load_from_values_and_checked_files(tmp_path: Path) -> None:
    current = _key_file(tmp_path / "keys" / "kek.key", _b64(KEY))
    older = _key_file(tmp_path / "keys" / "kek-2025.key", _b64(OTHER))
    kek = load_kek(None, current, tmp_path / "data", [_b64(THIRD)], [older])
    assert kek.key_id == KeyEncryptionKey(KEY).key_id
    assert kek.previous_ids == [KeyEncryptionKey(THIRD).key_id, KeyEncryptionKey(OTHER).key_id]
    older.chmod(0o644)
    with pytest.raises(SecretKeyError) as exc:
        load_kek(None, current, tmp_path / "data", [], [older])
    assert str(exc.value) == f"key file {older} is readable by others (mode 644); chmod 600 it"
    with pytest.raises(SecretKeyError) as exc:
        load_kek(None, current, None, ["@@"], [])
    assert str(exc.value) == "store.previous_keks[0]: the key-encryption key is not valid base64"
