"""LOGOUT (RFC 3501 §6.1.3): BYE, then the tagged OK, then the connection closes."""

from __future__ import annotations

from gateway.imap.commands import Reply
from gateway.imap.proto import serialize as ser
from gateway.imap.proto.command import Command
from gateway.imap.session import LOGOUT, Session


async def run(s: Session, cmd: Command) -> Reply:
    s.write(ser.untagged_status("BYE", "mssgw logging out"))
    s.state = LOGOUT
    return "LOGOUT completed"
