"""CLOSE (RFC 3501 §6.4.2): expunge silently when read-write, then leave the folder."""

from __future__ import annotations

from gateway.audit.events import AuditEvent
from gateway.imap.commands import Reply
from gateway.imap.proto.command import Command
from gateway.imap.session import AUTH, Session
from gateway.store.mailstore import FolderGone


async def run(s: Session, cmd: Command) -> Reply:
    sel = s.selection
    assert sel is not None
    assert s.user is not None
    if not sel.read_only:
        try:
            gone = await s.service.mailstore.expunge(s.user, sel.folder.id)
        except FolderGone:
            gone = []  # deleted by another session meanwhile: nothing left to expunge, and the client leaves it
        if gone:
            s.node.notices.publish(s.user)  # other sessions' IDLE learns at once, as after EXPUNGE
            await s.audit(AuditEvent.IMAP_EXPUNGE, result="done", folder=sel.folder.name, uids=gone)
    s.selection, s.state = None, AUTH
    return None
