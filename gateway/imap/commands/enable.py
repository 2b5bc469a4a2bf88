"""ENABLE (RFC 5161): CONDSTORE only (RFC 7162 §3.1)."""

from __future__ import annotations

from gateway.imap.commands import Reply
from gateway.imap.proto.command import Command, EnableArgs
from gateway.imap.session import Session

ENABLEABLE = frozenset({"CONDSTORE"})


async def run(s: Session, cmd: Command) -> Reply:
    assert isinstance(cmd.args, EnableArgs)
    now = [c for c in cmd.args.capabilities if c in ENABLEABLE and c not in s.enabled]
    s.enabled.update(now)
    if "CONDSTORE" in now and s.selection is not None:
        s.selection.condstore = True
    s.untagged(("ENABLED " + " ".join(now)).rstrip())
    return None
