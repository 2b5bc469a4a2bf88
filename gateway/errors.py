"""Typed errors that carry a one-line reason fit to show an operator or a client.

Each protocol or command boundary maps these to its own reply (exit code and message for the CLI,
SMTP/IMAP codes later); anything else escaping a boundary is a bug and is reported as such.
"""

from __future__ import annotations


class MssgwError(Exception):
    """Base of every expected failure; `str(exc)` is the precise one-line reason. `audit_reason`, when
    given, is what the audit log keeps instead: the reason shown to the operator may quote personal data
    (a patient's birth name or date) that the audit log must not hold."""

    def __init__(self, *args: object, audit_reason: str | None = None) -> None:
        super().__init__(*args)
        self.audit_reason = audit_reason


class ConfigError(MssgwError):
    """The configuration is missing or invalid."""


class UsageError(MssgwError):
    """A command was given bad input (bad address, unknown mailbox, invalid identifier...)."""


class NotFound(UsageError):
    """The named object does not exist."""


class Conflict(UsageError):
    """The object already exists or its state forbids the change."""


class SecretKeyError(MssgwError):
    """A key is missing, unreadable, or stored unsafely."""
