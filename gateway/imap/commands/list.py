"""LIST and LSUB (RFC 3501 §6.3.8-9; RFC 5258 selection and return options; SPECIAL-USE RFC 6154;
CHILDREN RFC 3348): one handler, the command name says which."""

from __future__ import annotations

from gateway.imap.commands import Reply
from gateway.imap.commands.names import name_of, wire
from gateway.imap.proto import serialize as ser
from gateway.imap.proto.command import Command, ListArgs
from gateway.imap.session import Bad, Session
from gateway.store.mailstore import DELIMITER

MAX_PATTERN = 1024


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


async def run(s: Session, cmd: Command) -> Reply:
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
