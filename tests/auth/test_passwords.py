"""argon2id passwords and TOTP codes."""

from __future__ import annotations

import time

import pyotp
import pytest
from argon2 import PasswordHasher, Type
from argon2.exceptions import VerificationError

from gateway.auth import passwords, totp
from gateway.errors import UsageError


async def test_hash_and_verify_off_the_loop() -> None:
    hashed = await passwords.hash_async("correct horse battery staple")
    assert hashed.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert await passwords.verify_async(hashed, "correct horse battery staple") is True
    assert await passwords.verify_async(hashed, "correct horse battery stapler") is False
    assert passwords.verify_password("not-a-hash", "x") is False
    assert passwords.needs_rehash(hashed) is False


# (type, t, m KiB, p, salt bytes, digest bytes, libsodium checks it): small memory costs keep this quick.
HASHES = [
    (Type.ID, 3, 65536, 4, 16, 32, True),  # the default, as stored
    (Type.ID, 1, 1024, 1, 16, 32, True),
    (Type.ID, 2, 256, 8, 8, 16, True),
    (Type.ID, 1, 64, 2, 32, 32, True),
    (Type.ID, 1, 64, 1, 16, 12, False),  # digest under libsodium's 16 bytes
    (Type.ID, 1, 64, 1, 64, 40, False),  # a string of 128 bytes or more
    (Type.I, 3, 64, 1, 16, 32, False),
    (Type.D, 1, 64, 1, 16, 32, False),
]


@pytest.mark.parametrize(("kind", "t", "m", "p", "salt", "digest", "sodium"), HASHES)
def test_libsodium_and_argon2_cffi_agree(
    kind: Type, t: int, m: int, p: int, salt: int, digest: int, sodium: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = "correct horse – battery é"
    hashed = PasswordHasher(t, m, p, digest, salt, type=kind).hash(password)
    assert passwords._sodium_takes(hashed) is sodium
    reference = PasswordHasher()
    tampered = hashed[:-2] + ("AA" if hashed[-2:] != "AA" else "BB")
    cases = [
        (hashed, password, True),
        (hashed, password + "x", False),
        (hashed, "", False),
        (tampered, password, False),
    ]
    for h, pw, expected in cases:
        try:
            assert reference.verify(h, pw) is expected
        except VerificationError:
            assert expected is False
        assert passwords.verify_password(h, pw) is expected
    if sodium:  # libsodium answers alone: argon2-cffi's verification is never reached
        monkeypatch.setattr(passwords, "_HASHER", _Unreachable())
        assert passwords.verify_password(hashed, password) is True
        assert passwords.verify_password(hashed, password[:-1]) is False


class _Unreachable:
    def verify(self, *_args: object) -> bool:
        raise AssertionError("argon2-cffi verified a hash that libsodium takes")


@pytest.mark.parametrize(
    "hashed",
    [
        "",
        "$argon2id$v=19$m=65536,t=3,p=4$",
        "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$",
        "$argon2id$v=16$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
        "$argon2id$v=19$m=4,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",  # m under 8 × p
        "$argon2id$v=19$m=64,t=0,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
        "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA\x00",
        "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA€",
        "$argon2id$v=19$m=64,t=1,p=1$c2FsdH*hbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
    ],
)
def test_malformed_hashes_verify_nothing(hashed: str) -> None:
    assert passwords.verify_password(hashed, "anything at all") is False


def test_a_hash_followed_by_a_nul_and_more_is_refused_even_with_the_right_password() -> None:
    hashed = PasswordHasher(1, 64, 1).hash("correct horse battery")
    assert passwords.verify_password(hashed, "correct horse battery") is True
    # Both libraries read the hash as a C string: without the check, the tail would be ignored.
    assert passwords.verify_password(hashed + "\x00junk", "correct horse battery") is False


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short", "the password must be at least 12 characters long"),
        ("x" * 1025, "the password must be at most 1024 characters long"),
        (" leading space ok?", "the password must not start or end with spaces nor hold control characters"),
        ("tab\tinside-pass", "the password must not start or end with spaces nor hold control characters"),
    ],
)
def test_password_policy(password: str, reason: str) -> None:
    with pytest.raises(UsageError) as exc:
        passwords.hash_password(password)
    assert str(exc.value) == reason


def test_generated_passwords_are_long_and_distinct() -> None:
    made = {passwords.generate_password() for _ in range(100)}
    assert len(made) == 100
    assert all(len(p) == 20 for p in made)


def test_generated_passwords_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # swaks and other command-line clients would read "-..." as an option.
    drawn = iter(["-leading-dash-xxxxxx", "-another-dash-xxxxxx", "fine-password-xxxxxx"])
    monkeypatch.setattr(passwords.secrets, "token_urlsafe", lambda _n: next(drawn))
    assert passwords.generate_password() == "fine-password-xxxxxx"


def test_totp_accepts_the_current_code_and_one_period_of_drift_only() -> None:
    secret = totp.new_secret()
    now = time.time()
    gen = pyotp.TOTP(secret)
    assert totp.verify(secret, gen.at(now)) is True
    assert totp.verify(secret, gen.at(now - 30)) is True  # one period of clock drift
    assert totp.verify(secret, gen.at(now - 90)) is False
    assert totp.verify(secret, "12345") is False
    assert totp.verify(secret, "abcdef") is False
    uri = totp.provisioning_uri(secret, "a@b.fr", issuer="MSSanté b.fr")
    assert uri == f"otpauth://totp/MSSant%C3%A9%20b.fr:a%40b.fr?secret={secret}&issuer=MSSant%C3%A9%20b.fr"
