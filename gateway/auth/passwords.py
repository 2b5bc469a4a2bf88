"""Password hashing with argon2id (argon2-cffi), verified with libsodium (PyNaCl) off the event loop.

Implementation notes
- argon2-cffi's RFC 9106 "low memory" profile (t=3, m=64 MiB, p=4) is the default; the hash string
  carries its parameters, so hashes made before the parameters change keep verifying (`needs_rehash`
  tells which ones are older; they are replaced when their owner sets a new password).
- Hashing and verification cost tens of milliseconds of CPU: async callers use `hash_async` /
  `verify_async`, which run in a worker thread (argon2 releases the GIL), never on the loop.
- Verification goes to libsodium whenever it can check the hash: argon2-cffi's bundled libargon2 costs
  1.6–1.8× more CPU for the same check (one p=4 hash on this project's 2-core machines: 230 ms of CPU
  with its four threads, 200 ms with one, against 130–145 ms for libsodium's AVX2 code), and logins are
  CPU-bound: 8.4 against 12.6–14.7 verifications/s with two threads (`tests/auth/test_passwords.py`
  checks that both libraries agree). Hashes libsodium does not take (argon2i/d, other versions, salts
  under 8 bytes, digests under 16, strings of 128 bytes or more) go to argon2-cffi. Hashing stays with
  argon2-cffi, so stored hashes and `needs_rehash` do not change. Every hash this project makes goes to
  libsodium, the refusals' dummy hash included, so an unknown account takes as long as a known one; a
  hash of another kind (imported, argon2i) would take longer through argon2-cffi and stand out.
  libsodium runs a hash's lanes on one thread: on an idle machine with many cores a single login waits
  longer than with argon2-cffi's threads (~130 ms here), but a busy node serves more logins.
- Passwords are never logged and never stored in clear; there are no default passwords: a mailbox
  without a password cannot log in with one.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Literal

import nacl.exceptions
from argon2 import PasswordHasher, Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from nacl.bindings import crypto_pwhash_str_verify

from gateway.errors import UsageError

_HASHER = PasswordHasher()
MIN_LENGTH = 12
MAX_LENGTH = 1024


def policy_violation(password: str) -> Literal["short", "long", "spaces"] | None:
    """What the password policy refuses in `password`, if anything (each caller words it for its users)."""
    if len(password) < MIN_LENGTH:
        return "short"
    if len(password) > MAX_LENGTH:
        return "long"
    if password != password.strip() or any(ord(c) < 32 for c in password):
        return "spaces"
    return None


def check_password_policy(password: str) -> None:
    violation = policy_violation(password)
    if violation == "short":
        raise UsageError(f"the password must be at least {MIN_LENGTH} characters long")
    if violation == "long":
        raise UsageError(f"the password must be at most {MAX_LENGTH} characters long")
    if violation == "spaces":
        raise UsageError("the password must not start or end with spaces nor hold control characters")


def hash_password(password: str) -> str:
    check_password_policy(password)
    return _HASHER.hash(password)


def verify_password(hashed: str, password: str) -> bool:
    if not hashed.isascii() or "\0" in hashed:  # no hash has either; both libraries stop a C string at NUL
        return False
    try:
        if _sodium_takes(hashed):
            try:
                return crypto_pwhash_str_verify(hashed.encode("ascii"), password.encode("utf-8"))
            except nacl.exceptions.InvalidkeyError:  # libsodium's one answer for "no"
                return False
        return _HASHER.verify(hashed, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _sodium_takes(hashed: str) -> bool:
    """Whether libsodium verifies this hash as argon2-cffi would: it answers a malformed hash and a wrong
    password alike, so it only gets well-formed argon2id v1.3 strings within its own bounds."""
    if len(hashed) >= 128:  # crypto_pwhash_STRBYTES, NUL included
        return False
    try:
        p = extract_parameters(hashed)
    except InvalidHashError:
        return False
    return p.type is Type.ID and p.version == 19 and p.salt_len >= 8 and p.hash_len >= 16


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
