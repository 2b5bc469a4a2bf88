"""Password hashing with argon2id (argon2-cffi), verified off the event loop.

Implementation notes
- argon2-cffi's RFC 9106 "low memory" profile (t=3, m=64 MiB, p=4) is the default; the hash string
  carries its parameters, so hashes made before the parameters change keep verifying (`needs_rehash`
  tells which ones are older; they are replaced when their owner sets a new password).
- Hashing and verification cost tens of milliseconds of CPU: async callers use `hash_async` /
  `verify_async`, which run in a worker thread (argon2 releases the GIL), never on the loop.
- Passwords are never logged and never stored in clear; there are no default passwords: a mailbox
  without a password cannot log in with one.
"""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from gateway.errors import UsageError

_HASHER = PasswordHasher()
MIN_LENGTH = 12
MAX_LENGTH = 1024


def check_password_policy(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise UsageError(f"the password must be at least {MIN_LENGTH} characters long")
    if len(password) > MAX_LENGTH:
        raise UsageError(f"the password must be at most {MAX_LENGTH} characters long")
    if password != password.strip() or any(ord(c) < 32 for c in password):
        raise UsageError("the password must not start or end with spaces nor hold control characters")


def hash_password(password: str) -> str:
    check_password_policy(password)
    return _HASHER.hash(password)


def verify_password(hashed: str, password: str) -> bool:
    try:
        return _HASHER.verify(hashed, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(hashed: str) -> bool:
    return _HASHER.check_needs_rehash(hashed)


async def hash_async(password: str) -> str:
    return await asyncio.to_thread(hash_password, password)


async def verify_async(hashed: str, password: str) -> bool:
    return await asyncio.to_thread(verify_password, hashed, password)


def generate_password() -> str:
    """A random password for demo accounts and `--generate-password` (about 120 bits). Never starting with
    "-": command-line clients (swaks, as the README shows) would take it for an option."""
    while (password := secrets.token_urlsafe(15)).startswith("-"):
        pass
    return password
