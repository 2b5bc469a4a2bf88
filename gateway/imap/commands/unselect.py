"""UNSELECT (RFC 3691): leave the folder, never expunge."""

from __future__ import annotations

from gateway.imap.commands import Reply
from gateway.imap.proto.command import Command
from gateway.imap.session import AUTH, Session


async def run(s: Session, cmd: Command) -> Reply:
    s.selection, s.state = None, AUTH
    return None
