"""DELETE (RFC 3501 §6.3.4): a parent with inferiors stays a \\Noselect level; never the selected folder."""

from __future__ import annotations

from gateway.audit.events import AuditEvent
from gateway.errors import NotFound, UsageError
from gateway.imap.commands import Reply
from gateway.imap.commands.names import name_of, no_folder, said
from gateway.imap.proto.command import Command, MailboxArgs
from gateway.imap.session import No, Session
from gateway.store.mailstore import HasInferiors


async def run(s: Session, cmd: Command) -> Reply:
    assert isinstance(cmd.args, MailboxArgs)
    assert s.user is not None
    name = name_of(cmd.args.mailbox)
    if s.selection is not None:
        try:
            target = await s.service.mailstore.folder(s.user, name)
        except NotFound:
            target = None  # let the store say why (no such name, or only a level above other folders)
        if target is not None and target.id == s.selection.folder.id:  # by id: it may have been renamed
            raise No("cannot delete the selected folder", "INUSE")
    try:
        deleted = await s.service.mailstore.delete_folder(s.user, name)
    except NotFound:
        raise no_folder(name) from None
    except HasInferiors as exc:  # RFC 3501 §6.3.4; the code is RFC 9051's (§7.1)
        raise No(said(exc), "HASCHILDREN") from None
    except UsageError as exc:
        raise No(said(exc), "CANNOT") from None
    # The messages deleted with it are on record, as an EXPUNGE's are (their UIDs die with the folder: the
    # Message-IDs say which they were).
    await s.audit(
        AuditEvent.IMAP_FOLDER_DELETED,
        result="done",
        folder=name,
        uids=[uid for uid, _ in deleted],
        message_ids=[message_id for _, message_id in deleted],
    )
    return None
