"""CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST, LSUB (RFC 3501 §6.3.3-9), with SPECIAL-USE
(RFC 6154) and CHILDREN (RFC 3348) attributes. Names are modified UTF-7 on the wire (RFC 3501 §5.1.3)."""

from __future__ import annotations

import re

from gateway.audit.events import AuditEvent
from gateway.errors import Conflict, NotFound, UsageError
from gateway.imap.commands import Reply
from gateway.imap.proto import serialize as ser
from gateway.imap.proto import utf7
from gateway.imap.proto.command import Command, ListArgs, MailboxArgs, RenameArgs
from gateway.imap.session import Bad, No, Session
from gateway.store.mailstore import DELIMITER


def name_of(wire: str) -> str:
    """A folder name as stored (Unicode) from its wire form."""
    try:
        return utf7.decode(wire)
    except ValueError as exc:
        raise Bad(f"invalid mailbox name: {exc}") from None


def wire(name: str) -> bytes:
    return ser.mailbox(utf7.encode(name))


async def create(s: Session, cmd: Command) -> Reply:
    assert isinstance(cmd.args, MailboxArgs)
    assert s.user is not None
    name = name_of(cmd.args.mailbox)
    try:
        folder = await s.service.mailstore.create_folder(s.user, name)
    except Conflict as exc:
        raise No(str(exc), "ALREADYEXISTS") from None
    except UsageError as exc:
        raise No(str(exc), "CANNOT") from None
    await s.audit(AuditEvent.IMAP_FOLDER_CREATED, result="done", folder=folder.name)
    return None


async def delete(s: Session, cmd: Command) -> Reply:
    assert isinstance(cmd.args, MailboxArgs)
    assert s.user is not None
    name = name_of(cmd.args.mailbox)
    if s.selection is not None and s.selection.folder.name == name:
        raise No("cannot delete the selected folder", "INUSE")
    try:
        await s.service.mailstore.delete_folder(s.user, name)
    except NotFound:
        raise No(f"no folder {name}", "NONEXISTENT") from None
    except UsageError as exc:
        raise No(str(exc), "CANNOT") from None
    await s.audit(AuditEvent.IMAP_FOLDER_DELETED, result="done", folder=name)
    return None


async def rename(s: Session, cmd: Command) -> Reply:
    assert isinstance(cmd.args, RenameArgs)
    assert s.user is not None
    old, new = name_of(cmd.args.source), name_of(cmd.args.destination)
    try:
        await s.service.mailstore.rename_folder(s.user, old, new)
    except NotFound:
        raise No(f"no folder {old}", "NONEXISTENT") from None
    except Conflict as exc:
        raise No(str(exc), "ALREADYEXISTS") from None
    except UsageError as exc:
        raise No(str(exc), "CANNOT") from None
    await s.audit(AuditEvent.IMAP_FOLDER_RENAMED, result="done", folder=old, to=new)
    return None


async def subscribe(s: Session, cmd: Command) -> Reply:
    assert isinstance(cmd.args, MailboxArgs)
    assert s.user is not None
    name = name_of(cmd.args.mailbox)
    try:
        await s.service.mailstore.subscribe(s.user, name, cmd.name == "SUBSCRIBE")
    except NotFound:
        raise No(f"no folder {name}", "NONEXISTENT") from None
    return None


def pattern(reference: str, mailbox: str) -> re.Pattern[str]:
    """RFC 3501 §6.3.8: `*` matches anything, `%` anything but the delimiter; INBOX is case-insensitive."""
    full = reference + mailbox

    def rx(text: str) -> str:
        return "".join(".*" if c == "*" else f"[^{DELIMITER}]*" if c == "%" else re.escape(c) for c in text)

    if full[:5].upper() == "INBOX":
        return re.compile("(?i:INBOX)" + rx(full[5:]) + r"\Z")
    return re.compile(rx(full) + r"\Z")


async def list_(s: Session, cmd: Command) -> Reply:
    assert isinstance(cmd.args, ListArgs)
    assert s.user is not None
    args = cmd.args
    lsub = cmd.name == "LSUB"
    if not lsub and len(args.patterns) == 1 and args.patterns[0] == "" and not args.extended:
        s.untagged(b'LIST (\\Noselect) "/" ""')  # RFC 3501 §6.3.8: the hierarchy delimiter
        return None
    folders = await s.service.mailstore.folders(s.user)
    names = {f.name for f in folders}
    reference = name_of(args.reference)
    patterns = [pattern(reference, name_of(p)) for p in args.patterns]
    subscribed_only = lsub or "SUBSCRIBED" in args.select_options
    special_only = "SPECIAL-USE" in args.select_options
    show_special = special_only or "SPECIAL-USE" in args.return_options or not args.extended
    for f in folders:
        if not any(p.match(f.name) for p in patterns):
            continue
        if (subscribed_only and not f.subscribed) or (special_only and not f.special_use):
            continue
        attrs: list[str] = []
        if not lsub:
            children = any(n.startswith(f.name + DELIMITER) for n in names)
            attrs.append("\\HasChildren" if children else "\\HasNoChildren")
            if show_special and f.special_use:
                attrs.append(f.special_use)
            asked = "SUBSCRIBED" in args.select_options or "SUBSCRIBED" in args.return_options
            if asked and f.subscribed:
                attrs.append("\\Subscribed")
        s.untagged(
            (b"LSUB " if lsub else b"LIST ") + ser.paren_list(a.encode() for a in attrs) + b' "/" ' + wire(f.name)
        )
    return None
