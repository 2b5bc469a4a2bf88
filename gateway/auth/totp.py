"""TOTP second factor (RFC 6238, pyotp): enrolment secrets and verification.

The seed is sealed with the node's KEK before it is stored (it is a shared secret, as good as a
password); the otpauth URI is shown once, at enrolment, and never logged.
"""

from __future__ import annotations

import hmac
import re
import time
from datetime import UTC, datetime

import pyotp

DIGITS = 6
PERIOD = 30
_CODE = re.compile(rf"[0-9]{{{DIGITS}}}")


def new_secret() -> str:
    return str(pyotp.random_base32())


def provisioning_uri(secret: str, address: str, issuer: str) -> str:
    return str(pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD).provisioning_uri(name=address, issuer_name=issuer))


def verify(secret: str, code: str, *, valid_window: int = 1) -> bool:
    """True if `code` is valid now, accepting one period of clock drift either way."""
    return matched_step(secret, code, valid_window=valid_window) is not None


def matched_step(secret: str, code: str, *, valid_window: int = 1, now: float | None = None) -> int | None:
    """The RFC 6238 time step whose code `code` is, within `valid_window` steps of now; None if none is.

    The step is what makes a code single-use (RFC 6238 §5.2): once a step's code is accepted, that
    step and the earlier ones are spent for the account."""
    code = code.strip()
    # ASCII digits only: str.isdigit() also accepts other scripts' digits ("١٢٣٤٥٦"), which compare_digest
    # refuses with a TypeError, after the password has matched (an oracle, and a failure never counted).
    if not _CODE.fullmatch(code):
        return None
    otp = pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD)
    current = otp.timecode(datetime.fromtimestamp(time.time() if now is None else now, UTC))
    for step in range(current - valid_window, current + valid_window + 1):
        if hmac.compare_digest(otp.generate_otp(step), code):
            return step
    return None
