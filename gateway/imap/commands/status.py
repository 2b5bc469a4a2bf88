"""STATUS (RFC 3501 §6.3.10), with HIGHESTMODSEQ (RFC 7162 §3.1.8)."""

from __future__ import annotations

from gateway.errors import NotFound
from gateway.imap.commands import Reply
from gateway.imap.commands.names import name_of, no_folder, wire
from gateway.imap.proto.command import Command, StatusArgs, StatusItem
from gateway.imap.session import Session


async def run(s: Session, cmd: Command) -> Reply:
    assert isinstance(cmd.args, StatusArgs)
    assert s.user is not None
    name = name_of(cmd.args.mailbox)
    try:
        st = await s.service.mailstore.status(s.user, name)
    except NotFound:
        raise no_folder(name) from None
    values = {
        StatusItem.MESSAGES: st.messages,
        StatusItem.RECENT: st.recent,
        StatusItem.UIDNEXT: st.uidnext,
        StatusItem.UIDVALIDITY: st.uidvalidity,
        StatusItem.UNSEEN: st.unseen,
        StatusItem.HIGHESTMODSEQ: st.highestmodseq,
    }
    if StatusItem.HIGHESTMODSEQ in cmd.args.items:
        s.enable_condstore()  # RFC 7162 §3.1
    items = " ".join(f"{item.value} {values[item]}" for item in cmd.args.items)
    s.untagged(b"STATUS " + wire(name) + b" (" + items.encode() + b")")
    return None
