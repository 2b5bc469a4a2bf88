"""EXPUNGE (RFC 3501 §6.4.3) and UID EXPUNGE (RFC 4315 §2.1): the untagged EXPUNGEs come from the sync."""

from __future__ import annotations

from gateway.audit.events import AuditEvent
from gateway.imap.commands import Reply
from gateway.imap.proto.command import Command, ExpungeArgs
from gateway.imap.session import No, Session


async def run(s: Session, cmd: Command) -> Reply:
    sel = s.selection
    assert sel is not None
    assert s.user is not None
    if sel.read_only:
        raise No("the folder is read-only (EXAMINE)", "READ-ONLY")
    uids = sel.resolve(cmd.args.sequence_set, uid=True) if isinstance(cmd.args, ExpungeArgs) else None
    gone = await s.service.mailstore.expunge(s.user, sel.folder.id, uids)
    if gone:
        s.node.notices.publish(s.user)
        await s.audit(AuditEvent.IMAP_EXPUNGE, result="done", folder=sel.folder.name, uids=gone)
    return None
