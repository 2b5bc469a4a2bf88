"""LOGIN (RFC 3501 §6.2.3): refused before TLS (LOGINDISABLED), then the node's password check and lock-out."""

from __future__ import annotations

from gateway.audit.events import AuditEvent
from gateway.imap.commands import Reply
from gateway.imap.proto.command import Command, LoginArgs
from gateway.imap.proto.framing import DEFAULT_MAX_LINE
from gateway.imap.session import AUTH, No, Session
from gateway.store.mailboxes import Credentials


async def authenticated(s: Session, username: str, password: str, mechanism: str) -> Reply:
    """The check shared by LOGIN and AUTHENTICATE PLAIN: moves the session to the authenticated state."""
    outcome = await s.service.login.check(username, password, s.client_ip)
    if outcome.result == "locked":
        await s.audit(
            AuditEvent.IMAP_LOGIN_LOCKED, result="refused", login=outcome.address, seconds=round(outcome.wait)
        )
        raise No(f"Too many failed logins, try again in {int(outcome.wait) + 1} s", "UNAVAILABLE")
    if outcome.account is None:
        await s.audit(
            AuditEvent.IMAP_LOGIN_FAILED,
            result="refused",
            login=outcome.address,
            reason=outcome.reason,
            locked_for=round(outcome.locked_for),
        )
        raise No("Authentication failed", "AUTHENTICATIONFAILED")  # RFC 5530: the same for every cause
    return await open_session(s, outcome.account, mechanism)


async def open_session(s: Session, account: Credentials, mechanism: str, **facts: str | None) -> Reply:
    """An authenticated account: check the per-mailbox session limit, then enter the authenticated state."""
    service = s.service
    if not service.per_user.admit(account.address):
        await s.audit(AuditEvent.IMAP_LOGIN_FAILED, result="refused", login=account.address, reason="too-many-sessions")
        raise No("Too many sessions for this mailbox", "LIMIT")
    s.user, s.user_kind, s.state = account.address, account.kind, AUTH
    s.frames.max_literal = service.cfg.smtp.max_message_size  # APPEND's limit from now on
    s.frames.max_line = DEFAULT_MAX_LINE  # a bearer token's long line was for AUTHENTICATE only
    s.frames.max_command = max(s.frames.max_command, service.cfg.smtp.max_message_size + 65536)
    await s.audit(AuditEvent.IMAP_LOGIN_SUCCEEDED, result="done", mechanism=mechanism, **facts)
    return ("CAPABILITY " + " ".join(service.capabilities(s)), "Logged in")


async def run(s: Session, cmd: Command) -> Reply:
    assert isinstance(cmd.args, LoginArgs)
    if not s.tls:
        await s.audit(AuditEvent.IMAP_LOGIN_FAILED, result="refused", login=cmd.args.userid.lower(), reason="no-tls")
        raise No("LOGIN is disabled before STARTTLS", "PRIVACYREQUIRED")
    return await authenticated(s, cmd.args.userid, cmd.args.password, "LOGIN")
