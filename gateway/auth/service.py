"""Password logins for every protocol (SMTP AUTH, IMAP LOGIN/AUTHENTICATE): one lock-out, one check.

Implementation notes
- The lock-out is consulted before anything else, so a locked-out guesser costs no argon2 and learns
  nothing; SMTP and IMAP share the node's one `Lockout`, so switching protocol does not reset it.
- Unknown account, account without a password, disabled mailbox and wrong password are one outcome
  (`refused`): the protocol replies the same for all of them; only the audit record says which.
- argon2 runs in a thread (`verify_async`): the event loop keeps serving other sessions.
- Auditing is the caller's: each protocol has its own events and session facts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gateway.auth.lockout import Lockout
from gateway.auth.passwords import verify_async
from gateway.store.mailboxes import Credentials, MailboxRepository


@dataclass(frozen=True)
class LoginOutcome:
    result: Literal["ok", "locked", "refused"]
    address: str  # as given, lower-cased
    account: Credentials | None = None  # set when ok
    wait: float = 0.0  # locked: seconds until the next attempt is considered
    locked_for: float = 0.0  # refused: the lock this failure started (0 below the threshold)
    reason: str = ""  # refused: unknown-account | no-password | mailbox-disabled | bad-password (audit only)


class PasswordLogin:
    def __init__(self, mailboxes: MailboxRepository, lockout: Lockout) -> None:
        self.mailboxes = mailboxes
        self.lockout = lockout

    async def check(self, username: str, password: str, client_ip: str) -> LoginOutcome:
        address = username.strip().lower()
        keys = (Lockout.account_key(address), Lockout.client_key(client_ip))
        wait = self.lockout.locked_for(*keys)
        if wait:
            return LoginOutcome("locked", address, wait=wait)
        account = await self.mailboxes.credentials(address)
        if account is None:
            reason = "unknown-account"
        elif account.password_hash is None:
            reason = "no-password"
        elif not account.active:
            reason = "mailbox-disabled"
        elif not await verify_async(account.password_hash, password):
            reason = "bad-password"
        else:
            self.lockout.success(*keys)
            await self.mailboxes.touch_login(account.address)
            return LoginOutcome("ok", address, account=account)
        return LoginOutcome("refused", address, locked_for=self.lockout.failure(*keys), reason=reason)
