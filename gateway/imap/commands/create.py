"""CREATE (RFC 3501 §6.3.3): superior levels made as needed; LIMIT past `[store] max_folders`."""

from __future__ import annotations

from gateway.audit.events import AuditEvent
from gateway.errors import Conflict, UsageError
from gateway.imap.commands import Reply
from gateway.imap.commands.names import name_of, said
from gateway.imap.proto.command import Command, MailboxArgs
from gateway.imap.session import No, Session
from gateway.store.mailstore import FolderLimit


async def run(s: Session, cmd: Command) -> Reply:
    assert isinstance(cmd.args, MailboxArgs)
    assert s.user is not None
    name = name_of(cmd.args.mailbox)
    try:
        folder = await s.service.mailstore.create_folder(s.user, name)
    except Conflict as exc:
        raise No(said(exc), "ALREADYEXISTS") from None
    except FolderLimit as exc:  # RFC 5530 §3: LIMIT, "a server-imposed limit"
        raise No(said(exc), "LIMIT") from None
    except UsageError as exc:
        raise No(said(exc), "CANNOT") from None
    await s.audit(AuditEvent.IMAP_FOLDER_CREATED, result="done", folder=folder.name)
    return None
