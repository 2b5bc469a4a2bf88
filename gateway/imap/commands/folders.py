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
from gateway.store.mailstore import DELIMITER, FolderLimit, HasInferiors

MAX_PATTERN = 1024


def name_of(wire: str) -> str:
    """A folder name as stored (Unicode) from its wire form."""
    try:
        return utf7.decode(wire)
    except ValueError as exc:
        raise Bad(f"invalid mailbox name: {exc}") from None


def wire(name: str) -> bytes:
    return ser.mailbox(utf7.encode(name))


def shown(name: str) -> str:
    """A folder name inside a response text: its wire form, quoted when it must be. Response texts are 7-bit
    (RFC 3501 §9 `TEXT-CHAR`): "Résultats" is shown "R&AOk-sultats", as the client named it."""
    text = wire(name)
    return text.decode("ascii") if b"\r" not in text else ascii(name)


def said(exc: Exception) -> str:
    """The store's message for a response text, its folder names (and any other non-ASCII) in modified UTF-7."""
    return utf7.encode(str(exc))


def no_folder(name: str) -> No:
    return No(f"no folder {shown(name)}", "NONEXISTENT")


async def create(s: Session, cmd: Command) -> Reply:
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


async def delete(s: Session, cmd: Command) -> Reply:
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
        await s.service.mailstore.delete_folder(s.user, name)
    except NotFound:
        raise no_folder(name) from None
    except HasInferiors as exc:  # RFC 3501 §6.3.4; the code is RFC 9051's (§7.1)
        raise No(said(exc), "HASCHILDREN") from None
    except UsageError as exc:
        raise No(said(exc), "CANNOT") from None
    await s.audit(AuditEvent.IMAP_FOLDER_DELETED, result="done", folder=name)
    return None


async def rename(s: Session, cmd: Command) -> Reply:
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


async def subscribe(s: Session, cmd: Command) -> Reply:
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


def levels(name: str) -> list[str]:
    """The names above a folder in the hierarchy: "a/b/c" → "a", "a/b"."""
    parts = name.split(DELIMITER)
    return [DELIMITER.join(parts[:i]) for i in range(1, len(parts))]


async def list_(s: Session, cmd: Command) -> Reply:
    """LIST and LSUB. Besides the folders, the levels of the hierarchy above them that are not folders (a
    deleted parent, a parent never created) are names too: they answer a pattern ending in "%" with
    \\Noselect, as RFC 3501 §6.3.8 asks, so every folder stays reachable level by level; "*" lists only the
    folders (RFC 3501 §6.3.4, the second example: after DELETE foo, `LIST "" *` gives foo.bar alone and
    `LIST "" %` gives foo \\Noselect).

    Subscriptions are names, with or without a folder (RFC 3501 §6.3.6: DELETE leaves the name subscribed).
    LSUB (§6.3.9) returns every subscribed name that matches, one without a folder as \\Noselect (as Dovecot
    does), and answers "%" with a level that is not subscribed but has a subscribed name below it, as
    \\Noselect. LIST (SUBSCRIBED) returns a subscribed name without a folder as \\NonExistent (RFC 5258 §3.4),
    with \\HasChildren when folders lie below it."""
    assert isinstance(cmd.args, ListArgs)
    assert s.user is not None
    args = cmd.args
    lsub = cmd.name == "LSUB"
    if not lsub and len(args.patterns) == 1 and args.patterns[0] == "" and not args.extended:
        s.untagged(b'LIST (\\Noselect) "/" ""')  # RFC 3501 §6.3.8: the hierarchy delimiter
        return None
    reference = name_of(args.reference)
    patterns = [pattern(reference, name_of(p)) for p in args.patterns]
    folders = {f.name: f for f in await s.service.mailstore.folders(s.user)}
    subscribed = await s.service.mailstore.subscriptions(s.user)
    above = {level for name in folders for level in levels(name)}  # names with inferiors
    subscribed_above = {level for name in subscribed for level in levels(name)}
    subscribed_only = lsub or "SUBSCRIBED" in args.select_options
    special_only = "SPECIAL-USE" in args.select_options
    show_special = special_only or "SPECIAL-USE" in args.return_options or not args.extended
    asked_subscribed = "SUBSCRIBED" in args.select_options or "SUBSCRIBED" in args.return_options
    names = folders.keys() | above
    if subscribed_only:  # subscribed names without a folder; for LSUB "%", the levels above subscribed names
        names |= subscribed | subscribed_above if lsub else subscribed
    for name in sorted(names):
        matching = [p for p in patterns if matches(p, name)]
        if not matching:
            continue
        f = folders.get(name)
        level_only = any(p.endswith("%") for p in matching)  # a level of hierarchy answers "%" only
        attrs: list[str] = []
        if lsub:
            if name in subscribed:
                if f is None:
                    attrs.append("\\Noselect")
            elif level_only and name in subscribed_above:
                attrs.append("\\Noselect")
            else:
                continue
        elif f is None:
            if subscribed_only and name in subscribed and not special_only:
                attrs.append("\\NonExistent")
                if name in above:
                    attrs.append("\\HasChildren")
            elif not level_only or subscribed_only or special_only:
                continue
            else:
                attrs += ["\\Noselect", "\\HasChildren"]
            if asked_subscribed and name in subscribed:
                attrs.append("\\Subscribed")
        else:
            if (subscribed_only and name not in subscribed) or (special_only and not f.special_use):
                continue
            attrs.append("\\HasChildren" if name in above else "\\HasNoChildren")
            if show_special and f.special_use:
                attrs.append(f.special_use)
            if asked_subscribed and name in subscribed:
                attrs.append("\\Subscribed")
        s.untagged((b"LSUB " if lsub else b"LIST ") + ser.paren_list(a.encode() for a in attrs) + b' "/" ' + wire(name))
    return None
