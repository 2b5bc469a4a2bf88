"""SEARCH / UID SEARCH (RFC 3501 §6.4.4) with every RFC 3501 key, MODSEQ (RFC 7162 §3.1.5) and ESEARCH
results (RFC 4731). Text keys match case-insensitively on decoded text (CHARSET UTF-8 or US-ASCII).

Message bodies are opened only when a key needs them (header, text and sent-date keys); such a search
reads content and is audited like a FETCH of it (`imap.fetch.body`, with `search: true`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from gateway.audit.events import AuditEvent
from gateway.errors import NotFound
from gateway.imap.commands import Reply
from gateway.imap.message import ParsedMessage, header_fields, parse, text_for_search
from gateway.imap.message.search import SearchHeaders
from gateway.imap.proto import serialize as ser
from gateway.imap.proto.command import (
    AndKey,
    Command,
    DateKey,
    HeaderKey,
    KeywordKey,
    ModSeqKey,
    NotKey,
    OrKey,
    SearchArgs,
    SearchKey,
    SeqKey,
    SimpleKey,
    SizeKey,
    TextKey,
)
from gateway.imap.session import Selection, Session
from gateway.store.mailstore import MessageMeta

FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}


def needs_content(key: SearchKey) -> bool:
    if isinstance(key, TextKey | HeaderKey):
        return True
    if isinstance(key, DateKey):
        return key.name.startswith("SENT")
    if isinstance(key, NotKey):
        return needs_content(key.key)
    if isinstance(key, OrKey):
        return needs_content(key.left) or needs_content(key.right)
    if isinstance(key, AndKey):
        return any(needs_content(k) for k in key.keys)
    return False


@dataclass
class Candidate:
    meta: MessageMeta
    number: int
    recent: bool
    parsed: ParsedMessage | None = None
    _headers: SearchHeaders | None = field(default=None, repr=False)
    _text: str | None = field(default=None, repr=False)

    @property
    def headers(self) -> SearchHeaders:
        assert self.parsed is not None
        if self._headers is None:
            self._headers = header_fields(self.parsed)
        return self._headers

    @property
    def body_text(self) -> str:
        assert self.parsed is not None
        if self._text is None:
            self._text = text_for_search(self.parsed).casefold()
        return self._text


def _date_matches(name: str, when: dt.date, day: dt.date) -> bool:
    if name.endswith("BEFORE"):
        return when < day
    if name.endswith("ON"):
        return when == day
    return when >= day  # SINCE


def seq_members(key: SearchKey, sel: Selection, out: dict[int, frozenset[int]]) -> dict[int, frozenset[int]]:
    """The numbers (or UIDs) each sequence-set key names, by the key's id: worked out once per SEARCH, by
    bisection, rather than resolving (sorting) every range of the set again for each message."""
    if isinstance(key, SeqKey):
        existing = sel.uids if key.uid else range(1, len(sel.uids) + 1)
        out[id(key)] = frozenset(key.set.select(existing))
    elif isinstance(key, NotKey):
        seq_members(key.key, sel, out)
    elif isinstance(key, OrKey):
        seq_members(key.left, sel, out)
        seq_members(key.right, sel, out)
    elif isinstance(key, AndKey):
        for k in key.keys:
            seq_members(k, sel, out)
    return out


def matches(key: SearchKey, c: Candidate, sel: Selection, sets: dict[int, frozenset[int]]) -> bool:
    if isinstance(key, SimpleKey):
        name = key.name
        if name == "ALL":
            return True
        if name in FLAG_KEYS:
            flag, present = FLAG_KEYS[name]
            return (flag in c.meta.flags) == present
        if name == "RECENT":
            return c.recent
        if name == "OLD":
            return not c.recent
        if name == "NEW":
            return c.recent and "\\Seen" not in c.meta.flags
        return False
    if isinstance(key, KeywordKey):
        keyword = key.keyword.lower()  # without regard to case, as STORE (store.mailstore._changed_flags)
        return any(f.lower() == keyword for f in c.meta.flags) == key.present
    if isinstance(key, SizeKey):
        return c.meta.size > key.size if key.name == "LARGER" else c.meta.size < key.size
    if isinstance(key, SeqKey):
        return (c.meta.uid if key.uid else c.number) in sets[id(key)]
    if isinstance(key, ModSeqKey):
        return c.meta.modseq >= key.modseq
    if isinstance(key, DateKey):
        if key.name.startswith("SENT"):
            sent = c.headers.date
            return sent is not None and _date_matches(key.name, sent.date(), key.date)
        # RFC 3501 §6.4.4: the internal date, ignoring time and timezone
        return _date_matches(key.name, c.meta.internal_date.date(), key.date)
    if isinstance(key, TextKey):
        needle = key.value.casefold()
        if key.name == "BODY":
            return needle in c.body_text
        if key.name == "TEXT":
            return needle in c.headers.text.casefold() or needle in c.body_text
        value = {"FROM": c.headers.from_, "TO": c.headers.to, "CC": c.headers.cc, "BCC": c.headers.bcc}.get(
            key.name, c.headers.subject
        )
        return needle in value.casefold()
    if isinstance(key, HeaderKey):
        needle = key.value.casefold()
        return any(needle in v.casefold() for v in c.headers.get(key.field))
    if isinstance(key, NotKey):
        return not matches(key.key, c, sel, sets)
    if isinstance(key, OrKey):
        return matches(key.left, c, sel, sets) or matches(key.right, c, sel, sets)
    return all(matches(k, c, sel, sets) for k in key.keys)


async def run(s: Session, cmd: Command) -> Reply:
    sel = s.selection
    assert isinstance(cmd.args, SearchArgs)
    assert sel is not None
    assert s.user is not None
    args = cmd.args
    content = needs_content(args.key)
    sets = seq_members(args.key, sel, {})
    found: list[Candidate] = []
    read: list[int] = []
    for number, uid in enumerate(sel.uids, 1):
        meta = sel.meta[uid]
        c = Candidate(meta, number, uid in sel.recent)
        if content:
            try:
                c.parsed = parse(await s.service.mailstore.body(s.user, meta.id))
            except NotFound:
                # Expunged by another session, its EXPUNGE not yet sent here (RFC 3501 §7.4.1): no content
                # left to match (RFC 2180 §4.1), so it is not found.
                continue
            read.append(uid)
        if matches(args.key, c, sel, sets):
            found.append(c)
    if read:
        await s.audit(AuditEvent.IMAP_FETCH_BODY, result="done", folder=sel.folder.name, uids=read, search=True)
    values = [c.meta.uid if cmd.uid else c.number for c in found]
    modseq = max((c.meta.modseq for c in found), default=0) if _has_modseq(args.key) else None
    if modseq is not None:
        s.enable_condstore()  # RFC 7162 §3.1: SEARCH MODSEQ enables CONDSTORE
    if args.return_options is None:
        tail = f" (MODSEQ {modseq})" if modseq else ""
        s.untagged(("SEARCH " + " ".join(map(str, values))).rstrip() + tail)
        return None
    parts = [f'(TAG "{cmd.tag}")'] + (["UID"] if cmd.uid else [])
    opts = args.return_options
    if values and "MIN" in opts:
        parts.append(f"MIN {min(values)}")
    if values and "MAX" in opts:
        parts.append(f"MAX {max(values)}")
    if values and "ALL" in opts:
        parts.append(f"ALL {ser.sequence_set(values)}")
    if "COUNT" in opts:
        parts.append(f"COUNT {len(values)}")
    if modseq:
        parts.append(f"MODSEQ {modseq}")
    s.untagged("ESEARCH " + " ".join(parts))
    return None


def _has_modseq(key: SearchKey) -> bool:
    if isinstance(key, ModSeqKey):
        return True
    if isinstance(key, NotKey):
        return _has_modseq(key.key)
    if isinstance(key, OrKey):
        return _has_modseq(key.left) or _has_modseq(key.right)
    if isinstance(key, AndKey):
        return any(_has_modseq(k) for k in key.keys)
    return False
