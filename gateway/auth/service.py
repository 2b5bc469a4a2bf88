"""Password logins for every protocol (SMTP AUTH, IMAP LOGIN/AUTHENTICATE): one lock-out, one check.

Implementation notes
- The lock-out is consulted before anything else, so a locked-out guesser costs no argon2 and learns
  nothing; SMTP and IMAP share the node's one `Lockout`, so switching protocol does not reset it. It is
  keyed so that a stranger's guesses cannot lock a user out of their usual addresses (see lockout.py).
- Unknown account, account without a password, disabled mailbox, wrong password and a patient (who
  reads in the web inbox with a second factor, never over SMTP or IMAP) are one outcome (`refused`):
  the protocol replies the same for all of them; only the audit record says which.
- argon2 runs in a thread (`verify_async`): the event loop keeps serving other sessions.
- Auditing is the caller's: each protocol has its own events and session facts.
- Certificate logins (SASL EXTERNAL, RFC 4422 App. A) are for APP mailboxes: the TLS handshake has
  already checked the chain against the pinned root and the CRLs; here the certificate must be one
  registered to the mailbox for TLS (`mssgw pki issue-app` registers it), and the mailbox active.
  A failed certificate login counts against the client address in the lock-out.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from cryptography import x509

from gateway.auth import totp
from gateway.auth.lockout import Lockout
from gateway.auth.passwords import hash_password, verify_async
from gateway.store.mailboxes import Credentials, MailboxRepository


@functools.cache
def _dummy_hash() -> str:
    """An argon2 hash of a random password, to spend the same time on refusals that match no account."""
    return hash_password(secrets.token_urlsafe(24))


@dataclass(frozen=True)
class LoginOutcome:
    result: Literal["ok", "locked", "refused", "unavailable"]  # unavailable: not judged now (token logins)
    address: str  # as given, lower-cased
    account: Credentials | None = None  # set when ok
    wait: float = 0.0  # locked: seconds until the next attempt is considered
    locked_for: float = 0.0  # refused: the lock this failure started (0 below the threshold)
    reason: str = ""  # refused: unknown-account | no-password | mailbox-disabled | bad-password | patient-web-only


class PasswordLogin:
    """Password logins for SMTP and IMAP; `PatientLogin` adds the web inbox's second factor to the same
    mechanism (turns per account, lock-out first, argon2 on every path)."""

    def __init__(self, mailboxes: MailboxRepository, lockout: Lockout) -> None:
        self.mailboxes = mailboxes
        self.lockout = lockout
        self._turns: dict[str, tuple[asyncio.Lock, int]] = {}  # account -> (its lock, attempts holding it)

    async def check(self, username: str, password: str, client_ip: str) -> LoginOutcome:
        return await self._in_turn(username.strip().lower(), password, "", client_ip)

    async def _in_turn(self, address: str, password: str, code: str, client_ip: str) -> LoginOutcome:
        # Attempts on one account take turns: parallel guesses cannot all pass the lock-out check before
        # the first failure is counted. Different accounts (many users behind one address) stay parallel.
        lock, users = self._turns.get(address, (asyncio.Lock(), 0))
        self._turns[address] = (lock, users + 1)
        try:
            async with lock:
                return await self._check(address, password, code, client_ip)
        finally:
            lock, users = self._turns[address]
            if users == 1:
                del self._turns[address]
            else:
                self._turns[address] = (lock, users - 1)

    async def _check(self, address: str, password: str, code: str, client_ip: str) -> LoginOutcome:
        wait = await self.lockout.wait(address, client_ip)
        if wait:
            return LoginOutcome("locked", address, wait=wait)
        account = await self.mailboxes.credentials(address)
        # argon2 runs on every path, so a refusal takes as long for an unknown account as for a known one.
        hashed = account.password_hash if account is not None and account.password_hash else _dummy_hash()
        matches = await verify_async(hashed, password)
        reason = await self._refusal(account, matches, code)
        if reason is None:
            assert account is not None
            self.lockout.success(address, client_ip)
            await self.mailboxes.touch_login(account.address)
            return LoginOutcome("ok", address, account=account)
        return LoginOutcome("refused", address, locked_for=self.lockout.failure(address, client_ip), reason=reason)

    async def _refusal(self, account: Credentials | None, matches: bool, code: str) -> str | None:
        """Why this login is refused (audit only), or None."""
        if account is None:
            return "unknown-account"
        if account.password_hash is None:
            return "no-password"
        if not account.active:
            return "mailbox-disabled"
        if not matches:
            return "bad-password"
        if account.kind == "PAT":
            return "patient-web-only"  # a patient logs in to the web inbox, with a second factor, only
        return None


Revoked = Callable[[x509.Certificate], "bool | None"]
"""Whether the current CRLs revoke a certificate (None: no current CRL of its issuer): CrlContexts.revoked."""


class CertificateLogin:
    def __init__(self, mailboxes: MailboxRepository, lockout: Lockout, revoked: Revoked | None = None) -> None:
        self.mailboxes = mailboxes
        self.lockout = lockout
        self.revoked = revoked

    async def check(self, der: bytes | None, client_ip: str, authzid: str = "") -> LoginOutcome:
        wait = await self.lockout.wait(None, client_ip)
        if wait:
            return LoginOutcome("locked", authzid.lower(), wait=wait)
        if der is None:
            return LoginOutcome("refused", authzid.lower(), reason="no-certificate")
        found = await self.mailboxes.certificate_holder(hashlib.sha256(der).hexdigest())
        address = found[0].address if found is not None else authzid.lower()
        if found is None or found[1] != "tls":
            reason = "unregistered-certificate"
        elif found[0].kind != "APP":
            reason = "not-an-app-mailbox"
        elif authzid and authzid.lower() != found[0].address:
            reason = "authzid"
        elif not found[0].active:
            reason = "mailbox-disabled"
        elif self.revoked is not None and (verdict := self.revoked(x509.load_der_x509_certificate(der))) is not False:
            # The handshake checked it, unless it resumed a session from before the latest CRL.
            reason = "certificate-revoked" if verdict else "no-current-crl"
        else:
            await self.mailboxes.touch_login(found[0].address)
            return LoginOutcome("ok", found[0].address, account=found[0])
        return LoginOutcome("refused", address, locked_for=self.lockout.failure(None, client_ip), reason=reason)


class PatientLogin(PasswordLogin):
    """The patient web inbox's login: password and TOTP code, both required, one lock-out (domain brief §6).

    Same mechanism as `PasswordLogin` (turns, lock-out first, argon2 on every path, one refusal for every
    cause), other rules: a PAT account only, enrolled, and the second factor; a code of a time step already
    used for this account, or of an earlier one, is refused (RFC 6238 §5.2), on every node.
    """

    async def check(self, username: str, password: str, code: str, client_ip: str) -> LoginOutcome:  # type: ignore[override]
        return await self._in_turn(username.strip().lower(), password, code, client_ip)

    async def _refusal(self, account: Credentials | None, matches: bool, code: str) -> str | None:
        if account is None:
            return "unknown-account"
        if account.kind != "PAT":
            return "not-a-patient"
        secret = await self.mailboxes.totp_secret(account.address)
        if account.password_hash is None or secret is None:
            return "not-enrolled"
        if not account.active:
            return "mailbox-disabled"
        if not matches:
            return "bad-password"
        step = totp.matched_step(secret, code)
        if step is None:
            return "bad-code"
        if not await self.mailboxes.use_totp_step(account.address, step):
            return "code-replayed"  # on this node or another: the step is spent in the shared store
        return None
