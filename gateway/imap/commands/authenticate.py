"""AUTHENTICATE PLAIN (RFC 3501 §6.2.2, RFC 4616), with an initial response (SASL-IR, RFC 4959)."""

from __future__ import annotations

from gateway.audit.events import AuditEvent
from gateway.imap.commands import Reply
from gateway.imap.commands.login import authenticated
from gateway.imap.proto import serialize as ser
from gateway.imap.proto.command import AuthenticateArgs, Command
from gateway.imap.proto.parser import parse_sasl_response
from gateway.imap.session import Bad, No, Session


async def run(s: Session, cmd: Command) -> Reply:
    assert isinstance(cmd.args, AuthenticateArgs)
    if cmd.args.mechanism != "PLAIN":
        raise No(f"mechanism {cmd.args.mechanism} is not supported", "CANNOT")
    if not s.tls:
        await s.audit(AuditEvent.IMAP_LOGIN_FAILED, result="refused", reason="no-tls")
        raise No("authentication requires TLS", "PRIVACYREQUIRED")
    response = cmd.args.initial_response
    if response is None:
        await s.send(ser.continuation_data(b""))
        response = parse_sasl_response(await s.read_line())
        if response is None:
            raise Bad("authentication cancelled")
    parts = response.split(b"\0")
    if len(parts) != 3:
        raise Bad("PLAIN expects authzid NUL authcid NUL password")
    authzid, authcid, password = (p.decode("utf-8", "replace") for p in parts)
    if authzid and authzid.lower() != authcid.lower():
        await s.audit(AuditEvent.IMAP_LOGIN_FAILED, result="refused", login=authcid.lower(), reason="authzid")
        raise No("cannot act as another user", "AUTHORIZATIONFAILED")
    return await authenticated(s, authcid, password, "PLAIN")
