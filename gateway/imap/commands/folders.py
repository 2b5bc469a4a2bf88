"""CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST, LSUB (RFC 3501 §6.3.3-9), with SPECIAL-USE
(RFC 6154) and CHILDREN (RFC 3348) attributes. Names are modified UTF-7 on the wire (RFC 3501 §5.1.3)."""

from __future__ import annotations

from gateway.audit.events import AuditEvent
from gateway.errors import Conflict, NotFound, UsageError
from gateway.imap.commands import Reply
from gateway.imap.proto import serialize as ser
from gateway.imap.proto import utf7
from gateway.imap.proto.command import Command, ListArgs, MailboxArgs, RenameArgs
from gateway.imap.session import Bad, No, Session
from gateway.store.mailstore import DELIMITER

MAX_PATTERN = 1024


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
    if s.selection is not None:
        try:
            target = await s.service.mailstore.folder(s.user, name)
        except NotFound:
            raise No(f"no folder {name}", "NONEXISTENT") from None
        if target.id == s.selection.folder.id:  # by id: the folder may have been renamed since SELECT
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


def matches(pattern: str, name: str) -> bool:
    """RFC 3501 §6.3.8: `*` matches anything, `%` anything but the hierarchy delimiter.

    A table over (pattern, name) positions, linear in each: a regular expression built from the pattern
    backtracks exponentially in the number of wildcards ("*a*a*a*ab" froze the node for seconds).
    """
    row = [True] + [False] * len(name)
    for c in pattern:
        nxt = [False] * (len(name) + 1)
        if c == "*":
            seen = False
            for j in range(len(name) + 1):
                seen = seen or row[j]
                nxt[j] = seen
        elif c == "%":
            for j in range(len(name) + 1):
                nxt[j] = row[j] or (j > 0 and nxt[j - 1] and name[j - 1] != DELIMITER)
        else:
            for j in range(1, len(name) + 1):
                nxt[j] = row[j - 1] and name[j - 1] == c
        row = nxt
    return row[-1]


def pattern(reference: str, mailbox: str) -> str:
    """The full pattern, INBOX spelled as stored (it is case-insensitive, RFC 3501 §5.1)."""
    full = reference + mailbox
    if len(full) > MAX_PATTERN:
        raise Bad(f"LIST pattern longer than {MAX_PATTERN} characters")
    return "INBOX" + full[5:] if full[:5].upper() == "INBOX" else full


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
    parents = {n.rsplit(DELIMITER, 1)[0] for n in names if DELIMITER in n}
    subscribed_only = lsub or "SUBSCRIBED" in args.select_options
    special_only = "SPECIAL-USE" in args.select_options
    show_special = special_only or "SPECIAL-USE" in args.return_options or not args.extended
    for f in folders:
        if not any(matches(p, f.name) for p in patterns):
            continue
        if (subscribed_only and not f.subscribed) or (special_only and not f.special_use):
            continue
        attrs: list[str] = []
        if not lsub:
            children = f.name in parents
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
