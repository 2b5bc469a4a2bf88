"""FETCH and UID FETCH (RFC 3501 §6.4.5, §7.4.2), with CHANGEDSINCE and MODSEQ (RFC 7162 §3.1.4).

Bodies are opened only when an item needs them; each message whose content is returned is audited
(`imap.fetch.body`: folder, UID, Message-ID), and a non-PEEK body fetch sets \\Seen (read-write only).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

from gateway.audit.events import AuditEvent
from gateway.errors import NotFound
from gateway.imap.commands import Reply
from gateway.imap.message.fetch import SectionSpec, bodystructure, envelope, parse, partial, section
from gateway.imap.proto import serialize as ser
from gateway.imap.proto.command import BodySection, Command, FetchArgs, FetchAtt
from gateway.imap.session import No, Session

NEEDS_BODY = {FetchAtt.ENVELOPE, FetchAtt.BODY, FetchAtt.BODYSTRUCTURE, FetchAtt.RFC822, FetchAtt.RFC822_HEADER}
NEEDS_BODY |= {FetchAtt.RFC822_TEXT}
SETS_SEEN = {FetchAtt.RFC822, FetchAtt.RFC822_TEXT}
PREFETCH_COUNT = 50
PREFETCH_BYTES = 4 << 20
"""A FETCH of content for at most this many messages and octets reads them with its presence check (one
statement); a bigger one checks presence, then reads each body as it is sent (memory stays one body)."""


OFF_LOOP = 64 << 10
"""ENVELOPE and BODY/BODYSTRUCTURE of a message larger than this are worked out in a worker thread."""


async def _structure(size: int, make: Callable[[], bytes]) -> bytes:
    # They parse addresses octet by octet in Python, up to ~2 s a megabyte (a message/rfc822 part with a
    # header of megabytes of addresses): on the loop, every session of the node would wait that long.
    return make() if size <= OFF_LOOP else await asyncio.to_thread(make)


def _literal(data: bytes) -> bytes:
    # RFC 3501 §9: a literal cannot hold NUL; as Dovecot does, send 0x80 in its place (SMTP refuses NUL,
    # but an APPENDed message may hold one).
    return ser.literal(data.replace(b"\0", b"\x80"))


async def run(s: Session, cmd: Command) -> Reply:
    sel = s.selection
    assert isinstance(cmd.args, FetchArgs)
    assert sel is not None
    assert s.user is not None
    args = cmd.args
    uids = sel.resolve(args.sequence_set, uid=cmd.uid)
    items = list(args.items)
    if cmd.uid and FetchAtt.UID not in items:
        items.insert(0, FetchAtt.UID)  # RFC 3501 §6.4.8
    if args.changed_since is not None or FetchAtt.MODSEQ in items:
        s.enable_condstore()  # RFC 7162 §3.1: a CONDSTORE-enabling command
    if sel.condstore:  # RFC 7162 §3.1: every FETCH response carries UID and MODSEQ from then on
        if FetchAtt.UID not in items:
            items.append(FetchAtt.UID)
        if FetchAtt.MODSEQ not in items:
            items.append(FetchAtt.MODSEQ)
    if args.changed_since is not None:
        uids = [u for u in uids if sel.meta[u].modseq > args.changed_since]
    content = any(isinstance(i, BodySection) or i in NEEDS_BODY for i in items)
    seen = not sel.read_only and any((isinstance(i, BodySection) and not i.peek) or i in SETS_SEEN for i in items)
    box = s.service.mailstore
    gone: set[int] = set()
    read: dict[int, bytes] | None = None  # bodies read with the presence check, for a few small messages
    if content and uids:
        # RFC 2180 §4.1.3, RFC 5530 §3: a message another session expunged (its EXPUNGE not yet sent here,
        # RFC 3501 §7.4.1) has no content left: the others are returned, then NO [EXPUNGEISSUED].
        if len(uids) == 1 or (len(uids) <= PREFETCH_COUNT and sum(sel.meta[u].size for u in uids) <= PREFETCH_BYTES):
            by_id = await box.bodies(s.user, [sel.meta[u].id for u in uids])
            read = {u: by_id[sel.meta[u].id] for u in uids if sel.meta[u].id in by_id}
            present = set(read)
        else:
            present = set(await box.uids(sel.folder.id, uids))
        gone = {u for u in uids if u not in present}
        uids = [u for u in uids if u in present]
    if seen:
        unseen = [u for u in uids if "\\Seen" not in sel.meta[u].flags]
        if unseen:
            changed, _ = await box.store_flags(s.user, sel.folder.id, unseen, "add", ["\\Seen"])
            for m in changed:
                sel.meta[m.uid] = m
            if FetchAtt.FLAGS not in items:
                items.append(FetchAtt.FLAGS)  # RFC 3501 §6.4.5: the \Seen change is reported
    if content and uids:
        # Recorded before any content leaves: a client that disconnects half-way is still on record.
        await s.audit(
            AuditEvent.IMAP_FETCH_BODY,
            result="done",
            folder=sel.folder.name,
            uids=uids,
            message_ids=[sel.meta[u].message_id for u in uids],
        )
    for uid in uids:
        meta = sel.meta[uid]
        try:
            if not content:
                parsed = None
            elif read is not None:
                parsed = parse(read.pop(uid))
            else:
                parsed = parse(await box.body(s.user, meta.id))
        except NotFound:  # expunged by another session since the check above
            gone.add(uid)
            continue
        out: list[tuple[bytes | str, bytes]] = []
        for item in items:
            if isinstance(item, BodySection):
                assert parsed is not None
                sec = item.section
                spec = SectionSpec(sec.part, sec.text.value if sec.text else None, sec.fields)
                data = section(parsed, spec)
                if item.partial is not None:
                    data = partial(data, item.partial.start, item.partial.count)
                out.append((ser.body_section_label(item), _literal(data) if data else b'""'))
            elif item == FetchAtt.FLAGS:
                out.append(("FLAGS", ser.flag_list(s.flags_of(meta))))
            elif item == FetchAtt.UID:
                out.append(("UID", b"%d" % uid))
            elif item == FetchAtt.INTERNALDATE:
                out.append(("INTERNALDATE", ser.date_time(meta.internal_date)))
            elif item == FetchAtt.RFC822_SIZE:
                out.append(("RFC822.SIZE", b"%d" % meta.size))
            elif item == FetchAtt.MODSEQ:
                out.append(("MODSEQ", b"(%d)" % meta.modseq))
            else:
                assert parsed is not None
                if item == FetchAtt.ENVELOPE:
                    out.append(("ENVELOPE", await _structure(meta.size, functools.partial(envelope, parsed))))
                elif item in (FetchAtt.BODY, FetchAtt.BODYSTRUCTURE):
                    extensible = item == FetchAtt.BODYSTRUCTURE
                    make = functools.partial(bodystructure, parsed, extensible=extensible)
                    out.append((item.value, await _structure(meta.size, make)))
                elif item == FetchAtt.RFC822:
                    out.append(("RFC822", _literal(parsed.raw)))
                elif item == FetchAtt.RFC822_HEADER:
                    out.append(("RFC822.HEADER", _literal(section(parsed, SectionSpec(text="HEADER")))))
                elif item == FetchAtt.RFC822_TEXT:
                    out.append(("RFC822.TEXT", _literal(section(parsed, SectionSpec(text="TEXT")))))
        s.write(ser.fetch_response(sel.seq(uid), out))  # written out past OUT_BUFFER (Session.write)
        await s.writer.drain()  # a slow reader holds this FETCH back, not the node's memory
    if gone:
        raise No("Some of the requested messages no longer exist", "EXPUNGEISSUED")
    return None
