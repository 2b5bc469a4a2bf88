"""STARTTLS (RFC 3501 §6.2.1): upgrade the connection; nothing sent in clear after it is kept."""

from __future__ import annotations

import ssl

from gateway.audit.events import AuditEvent
from gateway.imap.commands import Reply
from gateway.imap.proto import serialize as ser
from gateway.imap.proto.command import Command
from gateway.imap.proto.framing import CommandReader
from gateway.imap.session import SENT, Bad, Closed, Session


async def run(s: Session, cmd: Command) -> Reply:
    if s.tls:
        raise Bad("TLS is already active")
    if s.frames.pending:
        # Commands pipelined behind STARTTLS were sent in clear: refuse to act on them (RFC 3207 §6 class).
        raise Bad("commands after STARTTLS must wait for TLS")
    await s.send(ser.tagged(cmd.tag, "OK", "Begin TLS negotiation now"))
    try:
        await s.writer.start_tls(s.service.tls)
    except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
        await s.audit(AuditEvent.IMAP_TLS_REFUSED, result="refused", reason=type(exc).__name__)
        raise Closed from None
    s.tls = True
    s.frames = CommandReader(max_literal=s.service.cfg.smtp.max_message_size)
    return SENT
