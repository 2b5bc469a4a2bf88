"""NOOP and CHECK (RFC 3501 §6.1.2, §6.4.1): nothing to do but the sync that follows every command
(every change is already committed, so CHECK has nothing to flush)."""

from __future__ import annotations

from gateway.imap.commands import Reply
from gateway.imap.proto.command import Command
from gateway.imap.session import Session


async def run(s: Session, cmd: Command) -> Reply:
    return None  # the session's sync after the command is the point (RFC 3501 §6.1.2)
