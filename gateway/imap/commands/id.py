"""ID (RFC 2971)."""

from __future__ import annotations

from gateway.imap.commands import Reply
from gateway.imap.proto.command import Command
from gateway.imap.session import Session


async def run(s: Session, cmd: Command) -> Reply:
    # RFC 2971 §3.2: the server's identity; the client's is not recorded (it may identify the user).
    s.untagged(b'ID ("name" "mssgw" "vendor" "mssgw")')
    return None
