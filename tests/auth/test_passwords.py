"""argon2id passwords and TOTP codes."""

from __future__ import annotations

import time

import pyotp
import pytest

from gateway.auth import passwords, totp
from gateway.errors import UsageError


async def test_hash_and_verify_off_the_loop() -> None:
    hashed = await passwords.hash_async("correct horse battery staple")
    assert hashed.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert await passwords.verify_async(hashed, "correct horse battery staple") is True
    assert await passwords.verify_async(hashed, "correct horse battery stapler") is False
    assert passwords.verify_password("not-a-hash", "x") is False
    assert passwords.needs_rehash(hashed) is False


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
