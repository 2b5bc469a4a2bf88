"""SUBSCRIBE and UNSUBSCRIBE (RFC 3501 §6.3.6-7): one handler, the command name says which."""

from __future__ import annotations

from gateway.errors import NotFound
from gateway.imap.commands import Reply
from gateway.imap.commands.names import name_of, no_folder, said
from gateway.imap.proto.command import Command, MailboxArgs
from gateway.imap.session import No, Session
from gateway.store.mailstore import FolderLimit


async def run(s: Session, cmd: Command) -> Reply:
    assert isinstance(cmd.args, MailboxArgs)
    assert s.user is not None
    name = name_of(cmd.args.mailbox)
    try:
        await s.service.mailstore.subscribe(s.user, name, cmd.name == "SUBSCRIBE")
    except NotFound:
        raise no_folder(name) from None
    except FolderLimit as exc:
        raise No(said(exc), "LIMIT") from None
    return None
