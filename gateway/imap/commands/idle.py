"""IDLE (RFC 2177): report changes to the selected folder as they happen, until the client sends DONE.

A change made on this node (a delivery, another session's STORE/EXPUNGE/COPY/APPEND), or on another node
sharing the PostgreSQL database (LISTEN/NOTIFY), wakes the session at once (gateway.store.notify); changes
made elsewhere (an admin command) are found by the service's one look at every idling folder each
`imap.idle_check` seconds (ImapService.check_idle): an idle session costs no query of its own, which is
what lets one node hold 10,000 of them.
"""

from __future__ import annotations

import asyncio
import contextlib

from gateway.imap.commands import Reply
from gateway.imap.proto import serialize as ser
from gateway.imap.proto.command import Command
from gateway.imap.proto.parser import is_idle_done
from gateway.imap.session import SENT, Bad, Session


async def run(s: Session, cmd: Command) -> Reply:
    assert s.user is not None
    await s.send(ser.continuation("idling"))
    done = asyncio.create_task(s.read_line())
    s.wake.clear()
    s.service.idling.add(s)
    try:
        with s.node.notices.listen(s.user) as changed:
            while not done.done() and s.revoked is None:
                woken = [asyncio.create_task(changed.wait()), asyncio.create_task(s.wake.wait())]
                await asyncio.wait({done, *woken}, return_when=asyncio.FIRST_COMPLETED)
                for task in woken:
                    task.cancel()
                changed.clear()
                s.wake.clear()
                if done.done():
                    break  # DONE: what changed meanwhile is told at the next command (no burst of reads
                    # when thousands of sessions end IDLE at once, as a benchmark's do)
                if s.selection is not None and s.revoked is None:
                    await s.sync(expunges=True)
                    await s.flush()  # told now: the client is waiting, no tagged reply follows yet
        if s.revoked is not None:
            return SENT  # no tagged reply: the session ends with BYE (RFC 2177 §3 allows BYE during IDLE)
        line = done.result()
    finally:
        s.service.idling.discard(s)
        if not done.done():
            done.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await done
    if not is_idle_done(line):
        raise Bad("expected DONE to end IDLE")
    return None
