"""TOTP second factor (RFC 6238, pyotp): enrolment secrets and verification.

The seed is sealed with the node's KEK before it is stored (it is a shared secret, as good as a
password); the otpauth URI is shown once, at enrolment, and never logged.
"""

from __future__ import annotations

import pyotp

DIGITS = 6
PERIOD = 30


def new_secret() -> str:
    return str(pyotp.random_base32())


def provisioning_uri(secret: str, address: str, issuer: str) -> str:
    return str(pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD).provisioning_uri(name=address, issuer_name=issuer))


def verify(secret: str, code: str, *, valid_window: int = 1) -> bool:
    """True if `code` is valid now, accepting one period of clock drift either way."""
    code = code.strip()
    if len(code) != DIGITS or not code.isdigit():
        return False
    return bool(pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD).verify(code, valid_window=valid_window))
