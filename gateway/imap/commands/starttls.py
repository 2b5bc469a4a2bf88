"""STARTTLS (RFC 3501 §6.2.1): upgrade the connection; nothing sent in clear after it is kept."""

from __future__ import annotations

import ssl

from gateway.audit.events import AuditEvent
from gateway.imap.commands import Reply
from gateway.imap.proto import serialize as ser
from gateway.imap.proto.command import Command
from gateway.imap.session import SENT, Bad, Closed, Session
from gateway.tls import refusal_reason


async def run(s: Session, cmd: Command) -> Reply:
    if s.tls:
        raise Bad("TLS is already active")
    if s.frames.pending or s.buffered():
        # Commands pipelined behind STARTTLS were sent in clear: refuse to act on them (RFC 3207 §6 class).
        raise Bad("commands after STARTTLS must wait for TLS")
    await s.send(ser.tagged(cmd.tag, "OK", "Begin TLS negotiation now"))
    if s.buffered():  # clear text arrived while the OK was sent (CVE-2011-0411 class): it must never run
        await s.audit(AuditEvent.IMAP_TLS_REFUSED, result="refused", reason="clear text after STARTTLS")
        raise Closed
    try:
        await s.writer.start_tls(s.service.tls)
    except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
        await s.audit(AuditEvent.IMAP_TLS_REFUSED, result="refused", reason=refusal_reason(exc))
        raise Closed from None
    # No check after the handshake: from start_tls on, what the stream buffers was decrypted (a TLS 1.3
    # client sends its first command with its Finished). Nothing can slip in before: start_tls pauses
    # reading before its first await, and the OK above was already drained.
    s.tls = True
    s.frames = s.new_reader()
    return SENT
