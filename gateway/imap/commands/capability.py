"""CAPABILITY (RFC 3501 §6.1.1): the list depends on the state and on TLS (ImapService.capabilities)."""

from __future__ import annotations

from gateway.imap.commands import Reply
from gateway.imap.proto.command import Command
from gateway.imap.session import Session


async def run(s: Session, cmd: Command) -> Reply:
    s.untagged("CAPABILITY " + " ".join(s.service.capabilities(s)))
    return None
