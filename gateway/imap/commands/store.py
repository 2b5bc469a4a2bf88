"""STORE and UID STORE (RFC 3501 §6.4.6), with UNCHANGEDSINCE (RFC 7162 §3.1.3)."""

from __future__ import annotations

from typing import Literal

from gateway.imap.commands import Reply
from gateway.imap.proto import serialize as ser
from gateway.imap.proto.command import Command, StoreArgs, StoreMode
from gateway.imap.session import No, Session

MODES: dict[StoreMode, Literal["add", "remove", "replace"]] = {
    StoreMode.ADD: "add",
    StoreMode.REMOVE: "remove",
    StoreMode.REPLACE: "replace",
}


async def run(s: Session, cmd: Command) -> Reply:
    sel = s.selection
    assert isinstance(cmd.args, StoreArgs)
    assert sel is not None
    assert s.user is not None
    if sel.read_only:
        raise No("the folder is read-only (EXAMINE)", "READ-ONLY")
    args = cmd.args
    uids = sel.resolve(args.sequence_set, uid=cmd.uid)
    if args.unchanged_since is not None:
        s.enable_condstore()  # RFC 7162 §3.1: a CONDSTORE-enabling command
    flags = list(args.flags)
    wanted = {f.lower() for f in flags if not f.startswith("\\")}
    if wanted:
        # Keywords compare without regard to case (store.mailstore._changed_flags): one the folder already
        # holds takes its spelling there, so every message of the folder shows one spelling, as in Dovecot.
        # The look stops once each keyword asked for is found (a large folder is not walked for nothing).
        spelled: dict[str, str] = {}
        for meta in sel.meta.values():
            for f in meta.flags:
                if f.lower() in wanted and f.lower() not in spelled:
                    spelled[f.lower()] = f
            if len(spelled) == len(wanted):
                break
        flags = [spelled.get(f.lower(), f) for f in flags]
    changed, refused = await s.service.mailstore.store_flags(
        s.user, sel.folder.id, uids, MODES[args.mode], flags, unchanged_since=args.unchanged_since
    )
    for m in changed:
        sel.meta[m.uid] = m
    if changed:
        s.node.notices.publish(s.user)  # other sessions' IDLE learns at once
    changed_uids = {m.uid for m in changed}
    for uid in uids:
        if uid in refused or uid not in sel.meta:
            continue
        if not args.silent:
            # RFC 3501 §6.4.6: the new flags, as a FETCH would give them, changed or not
            s.untagged(s.flags_response(sel.meta[uid], with_uid=cmd.uid))
        elif sel.condstore and uid in changed_uids:
            # RFC 7162 §3.2: .SILENT still reports the new MODSEQ (with the UID), not the flags
            s.untagged(b"%d FETCH (UID %d MODSEQ (%d))" % (sel.seq(uid), uid, sel.meta[uid].modseq))
    if refused:
        numbers = sorted(refused) if cmd.uid else sorted(sel.seq(u) for u in refused)
        return (f"MODIFIED {ser.sequence_set(numbers)}", "Conditional STORE failed for some messages")
    return None
