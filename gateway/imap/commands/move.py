"""MOVE / UID MOVE (RFC 6851): COPY's transfer with move semantics; COPYUID in an untagged OK before the
EXPUNGEs (§4.3), which the sync after the command sends."""

from __future__ import annotations

from gateway.imap.commands import Reply
from gateway.imap.commands.copy import transfer
from gateway.imap.proto.command import Command
from gateway.imap.session import No, Session


async def run(s: Session, cmd: Command) -> Reply:
    assert s.selection is not None
    if s.selection.read_only:
        raise No("the folder is read-only (EXAMINE)", "READ-ONLY")
    done = await transfer(s, cmd, move=True)
    if isinstance(done, tuple):
        s.untagged(f"OK [{done[0]}] Moved")
    return None
