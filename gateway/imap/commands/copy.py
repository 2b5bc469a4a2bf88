"""COPY / UID COPY (RFC 3501 §6.4.7), answering COPYUID (RFC 4315 §3); `transfer` is shared with MOVE."""

from __future__ import annotations

from gateway.audit.events import AuditEvent
from gateway.errors import NotFound
from gateway.imap.commands import Reply
from gateway.imap.commands.names import name_of
from gateway.imap.proto import serialize as ser
from gateway.imap.proto.command import Command, CopyArgs
from gateway.imap.session import No, Session
from gateway.store.mailstore import FolderGone, QuotaExceeded


async def run(s: Session, cmd: Command) -> Reply:
    return await transfer(s, cmd, move=False)


async def transfer(s: Session, cmd: Command, *, move: bool) -> Reply:
    """Copy, or move, the messages named to the folder named; the COPYUID code, or None when nothing matched."""
    sel = s.selection
    assert isinstance(cmd.args, CopyArgs)
    assert sel is not None
    assert s.user is not None
    target = name_of(cmd.args.mailbox)
    uids = sel.resolve(cmd.args.sequence_set, uid=cmd.uid)
    try:
        validity, pairs = await s.service.mailstore.copy(s.user, sel.folder.id, uids, target, move=move)
    except FolderGone:
        raise  # the selected folder itself: the session ends (gateway.imap.session)
    except NotFound:
        raise No(f"no folder {target}", "TRYCREATE") from None
    except QuotaExceeded:
        raise No("the mailbox is over its quota", "OVERQUOTA") from None
    if not pairs:
        return None
    s.node.notices.publish(s.user)  # other sessions' IDLE learns at once
    await s.audit(
        AuditEvent.IMAP_MOVE if move else AuditEvent.IMAP_COPY,
        result="done",
        folder=sel.folder.name,
        to=target,
        uids=[a for a, _ in pairs],
    )
    code = f"COPYUID {validity} {ser.sequence_set(a for a, _ in pairs)} {ser.sequence_set(b for _, b in pairs)}"
    return (code, f"{'UID ' if cmd.uid else ''}{cmd.name} completed")
