"""RENAME (RFC 3501 §6.3.5): the folder, its inferiors and their subscriptions; INBOX moves its messages."""

from __future__ import annotations

from gateway.audit.events import AuditEvent
from gateway.errors import Conflict, NotFound, UsageError
from gateway.imap.commands import Reply
from gateway.imap.commands.names import name_of, no_folder, said
from gateway.imap.proto.command import Command, RenameArgs
from gateway.imap.session import No, Session


async def run(s: Session, cmd: Command) -> Reply:
    assert isinstance(cmd.args, RenameArgs)
    assert s.user is not None
    old, new = name_of(cmd.args.source), name_of(cmd.args.destination)
    try:
        await s.service.mailstore.rename_folder(s.user, old, new)
    except NotFound:
        raise no_folder(old) from None
    except Conflict as exc:
        raise No(said(exc), "ALREADYEXISTS") from None
    except UsageError as exc:
        raise No(said(exc), "CANNOT") from None
    await s.audit(AuditEvent.IMAP_FOLDER_RENAMED, result="done", folder=old, to=new)
    return None
