"""Verdicts: what every policy function returns, and how a server turns one into a reply.

Implementation notes
- A policy is a pure function of facts it is given (no I/O): it returns `Accept`, `TempFail` or
  `Reject`. The server maps a refusal to its protocol reply (SMTP: `code enhanced text`) and records
  the verdict's audit event with its reason; policies never talk to the network or the audit log.
- SMTP codes follow RFC 5321 §4.2 and enhanced codes RFC 3463 (e.g. 550 5.7.1 delivery not
  authorised, 550 5.1.1 unknown mailbox, 550 5.2.1 mailbox disabled, 535 5.7.8 bad credentials).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.audit.events import AuditEvent


@dataclass(frozen=True, slots=True)
class Accept:
    """Go ahead."""


@dataclass(frozen=True, slots=True)
class Refusal:
    code: int  # RFC 5321 reply code
    enhanced: str  # RFC 3463 enhanced status code, e.g. "5.7.1"
    text: str  # precise, one line, safe to show the client
    event: AuditEvent  # what to audit

    def __post_init__(self) -> None:
        if not 400 <= self.code < 600 or self.enhanced[0] != str(self.code)[0]:
            raise ValueError(f"inconsistent reply {self.code} {self.enhanced}")
        if "\r" in self.text or "\n" in self.text:
            raise ValueError("reply text must be one line")

    @property
    def smtp(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"


@dataclass(frozen=True, slots=True)
class TempFail(Refusal):
    """Try again later (4xx)."""


@dataclass(frozen=True, slots=True)
class Reject(Refusal):
    """Refused for good (5xx)."""


Verdict = Accept | TempFail | Reject

ACCEPT = Accept()
