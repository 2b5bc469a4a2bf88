"""NAMESPACE (RFC 2342)."""

from __future__ import annotations

from gateway.imap.commands import Reply
from gateway.imap.proto.command import Command
from gateway.imap.session import Session


async def run(s: Session, cmd: Command) -> Reply:
    s.untagged(b'NAMESPACE (("" "/")) NIL NIL')  # one personal namespace, no shared ones (RFC 2342 §5)
    return None
