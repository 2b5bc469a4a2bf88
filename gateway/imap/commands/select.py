"""SELECT and EXAMINE (RFC 3501 §6.3.1-2), with CONDSTORE (RFC 7162 §3.1.8)."""

from __future__ import annotations

from gateway.errors import NotFound
from gateway.imap.commands import Reply
from gateway.imap.commands.names import name_of, no_folder
from gateway.imap.proto import serialize as ser
from gateway.imap.proto.command import Command, SelectArgs
from gateway.imap.session import AUTH, SELECTED, Selection, Session
from gateway.store.mailstore import SYSTEM_FLAGS


async def run(s: Session, cmd: Command) -> Reply:
    assert isinstance(cmd.args, SelectArgs)
    assert s.user is not None
    read_write = cmd.name == "SELECT"
    name = name_of(cmd.args.mailbox)  # a BAD name is a syntax error: the selection stays, as for any BAD
    if s.selection is not None:  # RFC 3501 §6.3.1: deselect first, without expunging; RFC 7162 §3.2.11
        s.selection, s.state = None, AUTH
        s.untagged("OK [CLOSED] Previous mailbox closed")
    try:
        selected = await s.service.mailstore.select(s.user, name, read_write=read_write)
    except NotFound:
        raise no_folder(name) from None
    if cmd.args.condstore:
        s.enable_condstore()  # RFC 7162 §3.1: a CONDSTORE parameter enables it for the connection
    condstore = "CONDSTORE" in s.enabled
    sel = Selection(
        folder=selected.folder,
        read_only=not read_write,
        recent=set(selected.recent),
        highestmodseq=selected.folder.highestmodseq,
        condstore=condstore,
    )
    sel.load(selected.messages)
    keywords = sorted({f for m in selected.messages for f in m.flags} - SYSTEM_FLAGS)  # every spelling held
    flags = [*sorted(SYSTEM_FLAGS), *keywords]
    s.untagged(b"FLAGS " + ser.flag_list(flags))
    s.untagged(f"{len(sel.uids)} EXISTS")
    s.untagged(f"{len(sel.recent)} RECENT")
    unseen = [i for i, uid in enumerate(sel.uids, 1) if "\\Seen" not in sel.meta[uid].flags]
    if unseen:
        s.untagged(f"OK [UNSEEN {unseen[0]}] First unseen")
    s.untagged(f"OK [UIDVALIDITY {sel.folder.uidvalidity}] UIDs valid")
    s.untagged(f"OK [UIDNEXT {sel.folder.uidnext}] Predicted next UID")
    if read_write:
        s.untagged(b"OK [PERMANENTFLAGS " + ser.flag_list([*flags, "\\*"]) + b"] Flags permitted")
    else:
        s.untagged(b"OK [PERMANENTFLAGS ()] Read-only folder")
    if condstore:
        s.untagged(f"OK [HIGHESTMODSEQ {sel.folder.highestmodseq}] Highest")
    s.selection, s.state = sel, SELECTED
    return ("READ-WRITE" if read_write else "READ-ONLY", f"{cmd.name} completed")
