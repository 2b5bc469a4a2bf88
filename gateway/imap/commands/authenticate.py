"""AUTHENTICATE PLAIN (RFC 3501 §6.2.2, RFC 4616), EXTERNAL (RFC 4422 App. A: the TLS client certificate
of an APP mailbox), and OAUTHBEARER (RFC 7628) and XOAUTH2 (the identity provider's access tokens,
gateway/auth/oidc.py, when [oidc] names one), with an initial response (SASL-IR, RFC 4959)."""

from __future__ import annotations

import contextlib

from gateway.audit.events import AuditEvent
from gateway.auth import sasl_oauth
from gateway.auth.oidc import openid_configuration
from gateway.imap.commands import Reply
from gateway.imap.commands.login import authenticated, open_session
from gateway.imap.proto import serialize as ser
from gateway.imap.proto.command import AuthenticateArgs, Command
from gateway.imap.proto.parser import ParseError, parse_sasl_response
from gateway.imap.session import Bad, No, Session


async def run(s: Session, cmd: Command) -> Reply:
    assert isinstance(cmd.args, AuthenticateArgs)
    mechanisms = ("PLAIN", "EXTERNAL", *(sasl_oauth.MECHANISMS if s.service.tokens is not None else ()))
    if cmd.args.mechanism not in mechanisms:
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
    if cmd.args.mechanism == "EXTERNAL":
        return await external(s, response.decode("utf-8", "replace"))
    if cmd.args.mechanism in sasl_oauth.PARSERS:
        return await bearer(s, cmd.args.mechanism, response)
    parts = response.split(b"\0")
    if len(parts) != 3:
        raise Bad("PLAIN expects authzid NUL authcid NUL password")
    authzid, authcid, password = (p.decode("utf-8", "replace") for p in parts)
    if authzid and authzid.lower() != authcid.lower():
        await s.audit(AuditEvent.IMAP_LOGIN_FAILED, result="refused", login=authcid.lower(), reason="authzid")
        raise No("cannot act as another user", "AUTHORIZATIONFAILED")
    return await authenticated(s, authcid, password, "PLAIN")


async def external(s: Session, authzid: str) -> Reply:
    outcome = await s.service.certificates.check(s.client_certificate(), s.client_ip, authzid)
    if outcome.result == "locked":
        await s.audit(AuditEvent.IMAP_LOGIN_LOCKED, result="refused", mechanism="EXTERNAL")
        raise No(f"Too many failed logins, try again in {int(outcome.wait) + 1} s", "UNAVAILABLE")
    if outcome.account is None:
        await s.audit(
            AuditEvent.IMAP_LOGIN_FAILED,
            result="refused",
            mechanism="EXTERNAL",
            login=outcome.address or None,
            reason=outcome.reason,
        )
        raise No("Authentication failed", "AUTHENTICATIONFAILED")
    return await open_session(s, outcome.account, "EXTERNAL")


async def bearer(s: Session, mechanism: str, response: bytes) -> Reply:
    """RFC 7628 §3.2 (and XOAUTH2): a refused token gets the error JSON as a challenge; whatever the client
    answers, the login has failed."""
    tokens = s.service.tokens
    assert tokens is not None
    try:
        message = sasl_oauth.PARSERS[mechanism](response)
    except ValueError as exc:
        await s.audit(AuditEvent.IMAP_LOGIN_FAILED, result="refused", mechanism=mechanism, reason=f"malformed: {exc}")
        raise Bad(f"malformed {mechanism} response") from None
    checked = await tokens.check(message.token, message.user, s.client_ip)
    outcome, facts = checked.outcome, checked.facts
    token = {"idnat": facts.identifier, "jti": facts.token_id} if facts is not None else {}
    if outcome.result == "locked":
        await s.audit(AuditEvent.IMAP_LOGIN_LOCKED, result="refused", mechanism=mechanism, login=outcome.address)
        raise No(f"Too many failed logins, try again in {int(outcome.wait) + 1} s", "UNAVAILABLE")
    if outcome.result == "unavailable":  # the provider's keys could not be had: nobody's fault, try later
        await s.audit(
            AuditEvent.IMAP_LOGIN_FAILED,
            result="failed",
            mechanism=mechanism,
            login=outcome.address or None,
            reason=outcome.reason,
        )
        raise No("Temporary authentication failure, try again later", "UNAVAILABLE")
    if outcome.account is None:
        await s.audit(
            AuditEvent.IMAP_LOGIN_FAILED,
            result="refused",
            mechanism=mechanism,
            login=outcome.address or None,
            reason=outcome.reason,
            locked_for=round(outcome.locked_for),
            **token,
        )
        cfg = s.service.cfg.oidc
        error = sasl_oauth.error_challenge(mechanism, scope=cfg.scope, openid_configuration=openid_configuration(cfg))
        await s.send(ser.continuation_data(error))
        with contextlib.suppress(ParseError):  # its answer (RFC 7628 §3.2.3: %x01) changes nothing
            parse_sasl_response(await s.read_line())
        raise No("Authentication failed", "AUTHENTICATIONFAILED")
    return await open_session(s, outcome.account, mechanism, **token)
