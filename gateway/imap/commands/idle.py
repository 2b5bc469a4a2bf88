"""IDLE (RFC 2177): report changes to the selected folder as they happen, until the client sends DONE.

A delivery on this node wakes the session at once (gateway.store.notify); changes made elsewhere
(another node, an admin command) are found by looking again every `POLL` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib

from gateway.imap.commands import Reply
from gateway.imap.proto import serialize as ser
from gateway.imap.proto.command import Command
from gateway.imap.proto.parser import is_idle_done
from gateway.imap.session import Bad, Session

POLL = 1.0


async def run(s: Session, cmd: Command) -> Reply:
    assert s.user is not None
    await s.send(ser.continuation("idling"))
    done = asyncio.create_task(s.read_line())
    try:
        with s.node.notices.listen(s.user) as changed:
            while not done.done():
                wake = asyncio.create_task(changed.wait())
                await asyncio.wait({done, wake}, timeout=POLL, return_when=asyncio.FIRST_COMPLETED)
                wake.cancel()
                changed.clear()
                if s.selection is not None:
                    await s.sync(expunges=True)
        line = done.result()
    finally:
        if not done.done():
            done.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await done
    if not is_idle_done(line):
        raise Bad("expected DONE to end IDLE")
    return None
