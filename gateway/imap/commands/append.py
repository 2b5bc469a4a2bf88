"""APPEND (RFC 3501 §6.3.11) answering APPENDUID (RFC 4315 §3); the size limit is APPENDLIMIT (RFC 7889),
enforced by the framing before the literal is read (TOOBIG), the quota by the store (OVERQUOTA). The
header block is bounded as SMTP bounds it (`MAX_HEADER_BYTES`): FETCH, SEARCH and the web inbox parse a
message's header on the node's loop, and megabytes of it would stall every session."""

from __future__ import annotations

from gateway.audit.events import AuditEvent
from gateway.errors import NotFound
from gateway.imap.commands import Reply
from gateway.imap.commands.names import name_of
from gateway.imap.proto.command import AppendArgs, Command
from gateway.imap.session import No, Session
from gateway.smtp.content import MAX_HEADER_BYTES
from gateway.store.mailstore import QuotaExceeded


async def run(s: Session, cmd: Command) -> Reply:
    assert isinstance(cmd.args, AppendArgs)
    assert s.user is not None
    args = cmd.args
    name = name_of(args.mailbox)
    if not args.message:
        raise No("an empty message cannot be appended")
    if len(args.message) > MAX_HEADER_BYTES:
        head = args.message[: MAX_HEADER_BYTES + 2]
        if b"\r\n\r\n" not in head and b"\n\n" not in head:  # an APPENDed message may end lines in LF alone
            raise No(f"header block larger than {MAX_HEADER_BYTES} octets refused", "LIMIT")
    try:
        validity, uid = await s.service.mailstore.append(
            s.user, name, args.message, flags=args.flags, internal_date=args.internal_date
        )
    except NotFound:
        raise No(f"no folder {name}", "TRYCREATE") from None
    except QuotaExceeded:
        raise No("the mailbox is over its quota", "OVERQUOTA") from None
    await s.audit(AuditEvent.IMAP_APPEND, result="done", folder=name, uid=uid, size=len(args.message))
    s.node.notices.publish(s.user)
    return (f"APPENDUID {validity} {uid}", "APPEND completed")
