"""The IMAP view of a local mailbox: folders, message metadata, flags, expunge, copy, move, append, quota.

Implementation notes
- Protocol code never sees SQL: the IMAP server (and later the web inbox) call these methods; sequence
  numbers are the session's business, the store speaks UIDs (RFC 3501 §2.3.1.1).
- Every change bumps the folder's HIGHESTMODSEQ and stamps the changed messages with it (RFC 7162 §3),
  under the folder row's lock, in one transaction. Expunges leave no tombstone: a session learns of them
  by comparing its UID list with `uids()` (QRESYNC, which would need them, is not offered).
- \\Recent (RFC 3501 §2.3.2): the folder keeps the highest UID already announced as recent; the session
  that selects it read-write takes every UID above it as \\Recent and moves the mark, so one session sees
  each message as recent. EXAMINE does not move it.
- COPY gives each copy a new message id, so its body is opened and sealed again (the AAD binds the id);
  MOVE keeps the row (and the sealed body) and only changes its folder, UID and modseq (RFC 6851).
- Folder names use "/" as hierarchy delimiter; INBOX is case-insensitive and cannot be deleted; renaming
  INBOX moves its messages to the new folder and leaves it empty (RFC 3501 §6.3.5).
- Subscriptions are names, not folders (RFC 3501 §6.3.6): a folder is subscribed when made (CREATE, and
  every level CREATE makes), DELETE leaves its name subscribed, RENAME moves the subscriptions of the name
  and of its inferiors to the new names (RFC 3501 says nothing; Dovecot does so). SUBSCRIBE needs a folder.
- Quota: the mailbox's `quota_bytes`, or the node default; APPEND and local delivery past it are refused
  (`QuotaExceeded`), COPY too. Usage is the sum of message sizes, as the client sees them, kept in
  `accounts.used_bytes` by triggers on `messages` (every insert and delete, whatever code makes it).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, TypeVar, cast

from sqlalchemy import Table, bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.errors import Conflict, MssgwError, NotFound, UsageError
from gateway.headers import field_value
from gateway.store.crypto import DataKey
from gateway.store.db import Statements
from gateway.store.messages import Delivered, MessageStore, QuotaCheck, body_aad
from gateway.store.models import Account, Folder, StoredMessage, Subscription, utcnow

DELIMITER = "/"
SYSTEM_FLAGS = frozenset({"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"})
COPY_BATCH = 256  # messages resealed and staged per transaction by COPY
COPY_BATCH_BYTES = 16 * 1024 * 1024  # octets of bodies per COPY batch (a larger message goes alone)
STAGED_STALE = timedelta(hours=1)  # staged copies older than this were left by an interrupted COPY
_IN_LIST = 500  # values per SQL IN list
_T = TypeVar("_T")
_MESSAGES = cast(Table, StoredMessage.__table__)


_UID_LIST = 500
"""Up to this many UIDs are looked up by list; more, and the folder's UIDs are read and filtered."""


def return_path(sender: str) -> bytes:
    """The Return-Path: field (RFC 5321 §4.4, RFC 5322 §3.6.7) a final delivery writes for an envelope
    sender; UTF-8 for an SMTPUTF8 one (RFC 6532). The sender comes from an SMTP command line, so it has no
    CR or LF; this guards the header block all the same."""
    if "\r" in sender or "\n" in sender:
        raise ValueError("an envelope sender cannot go in a Return-Path: field")
    return f"Return-Path: <{sender}>\r\n".encode()


class FolderGone(NotFound):
    """The folder a session has selected was deleted or renamed away by someone else."""


class FolderLimit(UsageError):
    """CREATE past the number of folders a mailbox may hold."""


class HasInferiors(UsageError):
    """DELETE of a name that is only a level of the hierarchy (\\Noselect) above other folders (RFC 3501 §6.3.4)."""


class QuotaExceeded(MssgwError):
    """The mailbox would go over its storage quota (RFC 9208 OVERQUOTA, SMTP 4.2.2); `larger` when the
    message alone is larger than the whole quota, so that no room made will ever let it in."""

    def __init__(self, text: str, *, larger: bool = False) -> None:
        super().__init__(text)
        self.larger = larger


@dataclass(frozen=True)
class FolderInfo:
    id: int
    name: str
    special_use: str | None
    uidvalidity: int
    uidnext: int
    highestmodseq: int


@dataclass(frozen=True)
class MessageMeta:
    id: str
    uid: int
    modseq: int
    flags: frozenset[str]
    internal_date: datetime
    size: int
    message_id: str | None = None  # the Message-ID header, for audit records


@dataclass(frozen=True)
class Selected:
    folder: FolderInfo
    messages: list[MessageMeta]  # by UID
    recent: frozenset[int]  # UIDs that are \Recent for this session


@dataclass(frozen=True)
class Status:
    messages: int
    recent: int
    unseen: int
    uidnext: int
    uidvalidity: int
    highestmodseq: int
    size: int


def canonical(name: str) -> str:
    """INBOX in any case is INBOX (RFC 3501 §5.1); other names are case-sensitive."""
    if name.upper() == "INBOX":
        return "INBOX"
    if name.upper().startswith("INBOX" + DELIMITER):
        return "INBOX" + name[5:]
    return name


def check_name(name: str) -> str:
    name = canonical(name)
    parts = name.split(DELIMITER)
    if not name or len(name.encode()) > 255:
        raise UsageError("folder names are 1 to 255 octets")
    if any(not p for p in parts):
        raise UsageError(f"empty hierarchy level in {name!r}")
    if any(c in name for c in "*%\r\n\0") or not name.isprintable():
        raise UsageError(f"folder names cannot contain wildcards or control characters: {name!r}")
    return name


def _message_id(body: bytes) -> str | None:
    """The Message-ID header of a message, unfolded, for audit records (None when absent or unreadable)."""
    value = field_value(body, b"message-id")
    if value is None:
        return None
    value = " ".join(value.split())[:250]
    return value if value.isprintable() and value else None


def _flags(text: str) -> frozenset[str]:
    return frozenset(text.split())


def _text(flags: Iterable[str]) -> str:
    """Flags as stored: sorted, a keyword given twice in two cases once (the first spelling in sort order)."""
    seen: dict[str, str] = {}
    for f in sorted(set(flags)):
        seen.setdefault(f.lower(), f)
    return " ".join(seen.values())


def _changed_flags(
    current: frozenset[str], wanted: frozenset[str], mode: Literal["add", "remove", "replace"]
) -> frozenset[str]:
    """`current` after STORE's change. Keywords compare without regard to case, as Dovecot and Cyrus do
    (system flags arrive in their canonical case from the parser): a keyword a message has keeps its
    spelling, so "+FLAGS ($label1)" on a message with $Label1 changes nothing, and "-FLAGS ($LABEL1)"
    removes it."""
    given = {f.lower() for f in wanted}
    if mode == "remove":
        return frozenset(f for f in current if f.lower() not in given)
    kept = frozenset(f for f in current if f.lower() in given) if mode == "replace" else current
    have = {f.lower() for f in kept}
    return kept | {f for f in wanted if f.lower() not in have}


def _meta(m: StoredMessage) -> MessageMeta:
    assert m.uid is not None
    return MessageMeta(
        m.id, m.uid, m.modseq, _flags(m.flags), m.internal_date or m.created_at, m.size, m.header_message_id
    )


def _info(f: Folder) -> FolderInfo:
    return FolderInfo(f.id, f.name, f.special_use, f.uidvalidity, f.uidnext, f.highestmodseq)


@dataclass(frozen=True)
class _ToCopy:
    id: str
    uid: int
    size: int
    flags: str
    internal_date: datetime | None
    header_message_id: str | None


def _chunks(items: Sequence[_T], size: int) -> Iterable[list[_T]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def _batches(rows: Sequence[_ToCopy], count: int, octets: int) -> Iterable[list[_ToCopy]]:
    """Consecutive runs of at most `count` messages and `octets` octets (a larger message alone)."""
    part: list[_ToCopy] = []
    size = 0
    for r in rows:
        if part and (len(part) >= count or size + r.size > octets):
            yield part
            part, size = [], 0
        part.append(r)
        size += r.size
    if part:
        yield part


def _reseal(key: DataKey, address: str, bodies: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """(new id, body sealed for it) for each (source id, sealed body): the AAD names the row's id."""
    out = []
    for source_id, blob in bodies:
        copy_id = secrets.token_hex(16)
        out.append((copy_id, key.seal(key.open(blob, body_aad(address, source_id)), body_aad(address, copy_id))))
    return out


def _int_octets(value: int) -> int:
    """Octets SQLite takes for an integer in a row (file format 4: 0 and 1 take none)."""
    if value in (0, 1):
        return 0
    for octets, bound in ((1, 1 << 7), (2, 1 << 15), (3, 1 << 23), (4, 1 << 31), (6, 1 << 47)):
        if -bound <= value < bound:
            return octets
    return 8


class Mailstore:
    def __init__(self, messages: MessageStore, *, default_quota: int | None = None, max_folders: int = 1000) -> None:
        self.store = messages
        self.db = messages.db
        self.default_quota = default_quota
        self.max_folders = max_folders  # a client looping on CREATE must not grow LIST and the store without end
        # nor on CREATE and DELETE: a deleted folder's name stays subscribed until UNSUBSCRIBE
        self.max_subscriptions = 2 * max_folders

    # -- folders ---------------------------------------------------------------------------------

    async def folders(self, address: str) -> list[FolderInfo]:
        async with self.db.read() as s:
            rows = (await s.execute(select(Folder).where(Folder.address == address).order_by(Folder.name))).scalars()
            return [_info(f) for f in rows]

    async def folder(self, address: str, name: str) -> FolderInfo:
        async with self.db.read() as s:
            return _info(await self._folder(s, address, name))

    @staticmethod
    async def _folder(s: AsyncSession, address: str, name: str, *, lock: bool = False) -> Folder:
        q = select(Folder).where(Folder.address == address, Folder.name == canonical(name))
        folder = (await s.execute(q.with_for_update() if lock else q)).scalar_one_or_none()
        if folder is None:
            raise NotFound(f"no folder {canonical(name)}")
        return folder

    async def create_folder(self, address: str, name: str) -> FolderInfo:
        name = check_name(name.rstrip(DELIMITER))  # RFC 3501 §6.3.3: a trailing delimiter is a hint
        async with self.db.write() as s:
            existing = (
                await s.execute(select(Folder.id).where(Folder.address == address, Folder.name == name))
            ).first()
            if existing is not None:
                raise Conflict(f"folder {name} already exists")
            # RFC 3501 §6.3.3: create the superior names the new one needs ("a/b/c" makes "a" and "a/b").
            parts = name.split(DELIMITER)
            wanted = [DELIMITER.join(parts[:i]) for i in range(1, len(parts) + 1)]
            have = set(
                (
                    await s.execute(select(Folder.name).where(Folder.address == address, Folder.name.in_(wanted)))
                ).scalars()
            )
            count = (await s.execute(select(func.count(Folder.id)).where(Folder.address == address))).scalar() or 0
            if count + len(set(wanted) - have) > self.max_folders:
                raise FolderLimit(f"a mailbox holds at most {self.max_folders} folders")
            await self._check_subscriptions(s, address, [each for each in wanted if each not in have])
            uidvalidity = await self._uidvalidity(s, address)
            folder = None
            for each in wanted:
                if each in have:
                    continue
                folder = Folder(
                    address=address,
                    name=each,
                    uidvalidity=uidvalidity,
                    uidnext=1,
                    highestmodseq=1,
                    recent_uid=0,
                )
                s.add(folder)
            await self._subscribe(s, address, [each for each in wanted if each not in have])
            await s.flush()
            assert folder is not None
            assert folder.name == name
            return _info(folder)

    @staticmethod
    async def _uidvalidity(s: AsyncSession, address: str) -> int:
        # RFC 3501 §2.3.1.1: a name reused after DELETE or RENAME must get a greater UIDVALIDITY.
        highest = (await s.execute(select(func.max(Folder.uidvalidity)).where(Folder.address == address))).scalar()
        return max(int(time.time()), (highest or 0) + 1)

    async def delete_folder(self, address: str, name: str) -> list[tuple[int, str | None]]:
        """Delete a folder and its messages; (UID, Message-ID) of each message deleted, for the audit record.
        Its inferiors stay: the name lives on as a level of the hierarchy (\\Noselect, computed from their
        names) until they go too (RFC 3501 §6.3.4)."""
        name = canonical(name)
        if name == "INBOX":
            raise UsageError("INBOX cannot be deleted")
        async with self.db.write() as s:
            q = select(Folder).where(Folder.address == address, Folder.name == name).with_for_update()
            folder = (await s.execute(q)).scalar_one_or_none()
            if folder is None:
                if any(n.startswith(name + DELIMITER) for n in await self._names(s, address)):
                    raise HasInferiors(f'Name "{name}" has inferior hierarchical names')
                raise NotFound(f"no folder {name}")
            uidvalidity = folder.uidvalidity
            held = select(StoredMessage.uid, StoredMessage.header_message_id).where(
                StoredMessage.folder_id == folder.id
            )
            deleted = [(int(r.uid), r.header_message_id) for r in await s.execute(held.order_by(StoredMessage.uid))]
            await s.execute(delete(StoredMessage).where(StoredMessage.folder_id == folder.id))
            await s.delete(folder)
            await s.flush()
            left = (await s.execute(select(func.max(Folder.uidvalidity)).where(Folder.address == address))).scalar()
        # RFC 3501 §2.3.1.1: a folder made again under this name must get a greater UIDVALIDITY. `_uidvalidity`
        # takes the clock or the highest value left; when the deleted folder held the highest one, the clock
        # must first pass it (at most a second, unless many folders were created within the last seconds).
        if (left or 0) < uidvalidity:
            wait = uidvalidity + 1 - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        return deleted

    @staticmethod
    async def _names(s: AsyncSession, address: str) -> list[str]:
        return list((await s.execute(select(Folder.name).where(Folder.address == address))).scalars())

    async def rename_folder(self, address: str, old: str, new: str) -> None:
        """Rename a folder and its inferiors; a name that is only a level of the hierarchy (\\Noselect) above
        other folders renames them (RFC 3501 §6.3.5). INBOX is special: its messages move, it stays."""
        old, new = canonical(old), check_name(new)
        async with self.db.write() as s:
            q = select(Folder).where(Folder.address == address, Folder.name == old).with_for_update()
            source = (await s.execute(q)).scalar_one_or_none()
            if source is None and not any(n.startswith(old + DELIMITER) for n in await self._names(s, address)):
                raise NotFound(f"no folder {old}")
            taken = (await s.execute(select(Folder.id).where(Folder.address == address, Folder.name == new))).first()
            if taken is not None:
                raise Conflict(f"folder {new} already exists")
            # INBOX's inferiors do not move with it (RFC 3501 §6.3.5), so "INBOX/Old" is a fine new name
            if old != "INBOX" and new.startswith(old + DELIMITER):
                raise UsageError(f"cannot rename {old} into itself")
            if source is not None and old == "INBOX":
                # RFC 3501 §6.3.5: the messages move to a new folder; INBOX stays, empty.
                target = Folder(
                    address=address,
                    name=new,
                    uidvalidity=await self._uidvalidity(s, address),
                    uidnext=1,
                    highestmodseq=1,
                    recent_uid=0,
                )
                s.add(target)
                await self._subscribe(s, address, [new])
                await s.flush()
                rows = (
                    await s.execute(
                        select(StoredMessage).where(StoredMessage.folder_id == source.id).order_by(StoredMessage.uid)
                    )
                ).scalars()
                for m in list(rows):
                    m.folder_id, m.uid, m.modseq = target.id, target.uidnext, target.highestmodseq + 1
                    target.uidnext += 1
                    target.highestmodseq += 1
                source.highestmodseq += 1
                return
            # Children compared in Python: SQL LIKE would read "_" and "%" as wildcards and ignore case.
            everyone = (await s.execute(select(Folder).where(Folder.address == address))).scalars().all()
            children = [f for f in everyone if f.name.startswith(old + DELIMITER)]
            names = {f.name for f in everyone}
            clash = [new + c.name[len(old) :] for c in children if new + c.name[len(old) :] in names]
            if clash:
                raise Conflict(f"folder {clash[0]} already exists")
            uidvalidity = await self._uidvalidity(s, address)
            for f in [source, *children] if source is not None else children:
                f.name = new + f.name[len(old) :]
                f.uidvalidity = uidvalidity  # the UIDs under the new name belong to a "new" folder for clients
            # The subscriptions of the name and of every name below it (folder or not) move along; a new name
            # already subscribed (a folder deleted there, its subscription kept) stays so.
            subs = await self._subscriptions(s, address)
            moved = [n for n in subs if n == old or n.startswith(old + DELIMITER)]
            if moved:
                for part in _chunks(moved, _IN_LIST):
                    await s.execute(
                        delete(Subscription).where(Subscription.address == address, Subscription.name.in_(part))
                    )
                s.add_all(
                    Subscription(address=address, name=name)
                    for name in {new + n[len(old) :] for n in moved} - (subs - set(moved))
                )

    async def subscribe(self, address: str, name: str, subscribed: bool) -> None:
        """SUBSCRIBE needs an existing folder (RFC 3501 §6.3.6 lets the server check; Dovecot does); UNSUBSCRIBE
        of any name succeeds, a folder's or not (deleted since, never made): the name is not in the list, as
        asked."""
        name = canonical(name)
        async with self.db.write() as s:
            if subscribed:
                await self._folder(s, address, name)
                await self._check_subscriptions(s, address, [name])
                await self._subscribe(s, address, [name])
            else:
                await s.execute(delete(Subscription).where(Subscription.address == address, Subscription.name == name))

    async def subscriptions(self, address: str) -> set[str]:
        """The subscribed names, folders or not (RFC 3501 §6.3.6)."""
        async with self.db.read() as s:
            return await self._subscriptions(s, address)

    @staticmethod
    async def _subscriptions(s: AsyncSession, address: str) -> set[str]:
        return set((await s.execute(select(Subscription.name).where(Subscription.address == address))).scalars())

    async def _check_subscriptions(self, s: AsyncSession, address: str, names: list[str]) -> None:
        """Raise FolderLimit if subscribing these names would take the list past `max_subscriptions`."""
        subs = await self._subscriptions(s, address)
        if len(subs | set(names)) > self.max_subscriptions:
            raise FolderLimit(
                f"a mailbox keeps at most {self.max_subscriptions} subscriptions: unsubscribe deleted folders"
            )

    @staticmethod
    async def _subscribe(s: AsyncSession, address: str, names: list[str]) -> None:
        """Subscribe these names, those not subscribed yet."""
        if not names:
            return
        q = select(Subscription.name).where(Subscription.address == address, Subscription.name.in_(names))
        have = set((await s.execute(q)).scalars())
        s.add_all(Subscription(address=address, name=name) for name in dict.fromkeys(names) if name not in have)

    # -- reading ---------------------------------------------------------------------------------

    async def select(self, address: str, name: str, *, read_write: bool) -> Selected:
        """The folder and its messages; a read-write select takes the \\Recent ones for this session."""
        if read_write:
            async with self.db.write() as s:
                folder = await self._folder(s, address, name, lock=True)
                messages = await self._messages(s, folder.id)
                recent = frozenset(m.uid for m in messages if m.uid > folder.recent_uid)
                folder.recent_uid = folder.uidnext - 1
                return Selected(_info(folder), messages, recent)
        async with self.db.read() as s:  # EXAMINE: the same \\Recent, without taking it (RFC 3501 §6.3.2)
            folder = await self._folder(s, address, name)
            messages = await self._messages(s, folder.id)
            return Selected(_info(folder), messages, frozenset(m.uid for m in messages if m.uid > folder.recent_uid))

    async def claim_recent(self, address: str, folder_id: int, upto: int) -> frozenset[int]:
        """For a read-write session that learns of new messages up to UID `upto`: those that are \\Recent for
        it (and for no other session from now on, RFC 3501 §2.3.2). Only up to `upto`: a message delivered
        since the session's snapshot stays \\Recent for whichever session announces it first."""
        async with self.db.write() as s:
            folder = await self._locked(s, address, folder_id)
            q = select(StoredMessage.uid).where(
                StoredMessage.folder_id == folder_id,
                StoredMessage.uid > folder.recent_uid,
                StoredMessage.uid <= upto,
            )
            recent = frozenset(int(u) for u in (await s.execute(q)).scalars() if u is not None)
            folder.recent_uid = max(folder.recent_uid, upto)
            return recent

    @staticmethod
    async def _messages(s: AsyncSession, folder_id: int, since_modseq: int | None = None) -> list[MessageMeta]:
        q = select(StoredMessage).where(StoredMessage.folder_id == folder_id)
        if since_modseq is not None:
            q = q.where(StoredMessage.modseq > since_modseq)
        return [_meta(m) for m in (await s.execute(q.order_by(StoredMessage.uid))).scalars()]

    async def changes(self, address: str, folder_id: int, since_modseq: int) -> tuple[FolderInfo, list[MessageMeta]]:
        """The folder now and the messages changed or added after `since_modseq` (for NOOP, IDLE)."""
        async with self.db.read() as s:
            folder = (
                await s.execute(select(Folder).where(Folder.id == folder_id, Folder.address == address))
            ).scalar_one_or_none()
            if folder is None:
                raise FolderGone("the selected folder no longer exists")
            return _info(folder), await self._messages(s, folder_id, since_modseq)

    async def modseqs(self, folder_ids: Iterable[int]) -> dict[int, int]:
        """HIGHESTMODSEQ of each of these folders that still exists (one look for every IDLE session)."""
        wanted, found = sorted(set(folder_ids)), {}
        async with self.db.read() as s:
            for i in range(0, len(wanted), 500):  # SQLite's bound-parameter limit
                q = select(Folder.id, Folder.highestmodseq).where(Folder.id.in_(wanted[i : i + 500]))
                found.update({int(r.id): int(r.highestmodseq) for r in (await s.execute(q)).all()})
        return found

    async def uids(self, folder_id: int, among: Sequence[int] | None = None) -> list[int]:
        """The folder's UIDs in order; with `among`, only those of them (one indexed look for a few)."""
        q = select(StoredMessage.uid).where(StoredMessage.folder_id == folder_id).order_by(StoredMessage.uid)
        if among is not None and len(among) <= _UID_LIST:
            q = q.where(StoredMessage.uid.in_(among))
        async with self.db.reading() as conn:
            found = [int(u) for u in (await conn.execute(q)).scalars() if u is not None]
        if among is not None and len(among) > _UID_LIST:
            wanted = set(among)
            found = [u for u in found if u in wanted]
        return found

    async def status(self, address: str, name: str) -> Status:
        async with self.db.read() as s:
            folder = await self._folder(s, address, name)
            rows = (
                await s.execute(
                    select(StoredMessage.uid, StoredMessage.flags, StoredMessage.size).where(
                        StoredMessage.folder_id == folder.id
                    )
                )
            ).all()
        return Status(
            messages=len(rows),
            recent=sum(1 for r in rows if r.uid > folder.recent_uid),
            unseen=sum(1 for r in rows if "\\Seen" not in _flags(r.flags)),
            uidnext=folder.uidnext,
            uidvalidity=folder.uidvalidity,
            highestmodseq=folder.highestmodseq,
            size=sum(r.size for r in rows),
        )

    async def body(self, address: str, message_id: str) -> bytes:
        return await self.store.get(address, message_id)

    async def bodies(self, address: str, message_ids: Sequence[str]) -> dict[str, bytes]:
        """The bodies of those of `message_ids` (at most _UID_LIST) still stored: presence and content in
        one look."""
        if not message_ids or len(message_ids) > _UID_LIST:
            raise ValueError(f"1 to {_UID_LIST} messages at a time")
        return await self.store.get_many(address, message_ids)

    async def modseq(self, address: str, folder_id: int) -> int:
        """The folder's HIGHESTMODSEQ: every command's look for changes, one statement."""
        rows = await self.db.rows(
            "SELECT highestmodseq FROM folders WHERE id = :id AND address = :address",
            {"id": folder_id, "address": address},
        )
        if not rows:
            raise FolderGone("the selected folder no longer exists")
        return int(rows[0][0])

    # -- changing --------------------------------------------------------------------------------

    async def store_flags(
        self,
        address: str,
        folder_id: int,
        uids: Sequence[int],
        mode: Literal["add", "remove", "replace"],
        flags: Iterable[str],
        *,
        unchanged_since: int | None = None,
    ) -> tuple[list[MessageMeta], list[int]]:
        """Change flags; returns (messages whose flags changed, UIDs refused by UNCHANGEDSINCE, RFC 7162 §3.2)."""
        wanted = frozenset(flags)
        async with self.db.write() as s:
            folder = await self._locked(s, address, folder_id)
            rows: list[StoredMessage] = []
            # In chunks: `STORE 1:*` over a large folder names more UIDs than a statement may bind
            # (PostgreSQL: 32,767); sorted, so that modseqs still go up with the UIDs.
            for some in _chunks(sorted(set(uids)), _IN_LIST):
                q = select(StoredMessage).where(StoredMessage.folder_id == folder_id, StoredMessage.uid.in_(some))
                rows += (await s.execute(q.order_by(StoredMessage.uid))).scalars()
            changed: list[MessageMeta] = []
            refused: list[int] = []
            for m in rows:
                assert m.uid is not None
                if unchanged_since is not None and m.modseq > unchanged_since:
                    refused.append(m.uid)
                    continue
                current = _flags(m.flags)
                new = _changed_flags(current, wanted, mode)
                if new == current:
                    continue
                folder.highestmodseq += 1
                m.flags, m.modseq = _text(new), folder.highestmodseq
                changed.append(_meta(m))
            return changed, refused

    @staticmethod
    async def _locked(s: AsyncSession, address: str, folder_id: int) -> Folder:
        folder = (
            await s.execute(select(Folder).where(Folder.id == folder_id, Folder.address == address).with_for_update())
        ).scalar_one_or_none()
        if folder is None:
            raise FolderGone("the selected folder no longer exists")
        return folder

    async def expunge(self, address: str, folder_id: int, uids: Sequence[int] | None = None) -> list[int]:
        """Remove the \\Deleted messages (only those among `uids` when given: UID EXPUNGE); their UIDs."""
        async with self.db.write() as s:
            folder = await self._locked(s, address, folder_id)
            q = select(StoredMessage.id, StoredMessage.uid, StoredMessage.flags).where(
                StoredMessage.folder_id == folder_id
            )
            # In chunks, as store_flags: UID EXPUNGE may name more UIDs than a statement may bind.
            queries = (
                [q] if uids is None else [q.where(StoredMessage.uid.in_(some)) for some in _chunks(uids, _IN_LIST)]
            )
            gone = [
                (r.id, int(r.uid))
                for one in queries
                for r in (await s.execute(one)).all()
                if "\\Deleted" in _flags(r.flags)
            ]
            for some_gone in _chunks(gone, _IN_LIST):
                await s.execute(delete(StoredMessage).where(StoredMessage.id.in_([i for i, _ in some_gone])))
            if gone:
                folder.highestmodseq += 1
            return sorted(u for _, u in gone)

    async def copy(
        self,
        address: str,
        folder_id: int,
        uids: Sequence[int],
        target: str,
        *,
        move: bool = False,
        batch: int = COPY_BATCH,
        batch_bytes: int = COPY_BATCH_BYTES,
    ) -> tuple[int, list[tuple[int, int]]]:
        """Copy (or move) messages to `target`; returns its UIDVALIDITY and (source UID, new UID) pairs.

        A copy is all or nothing (RFC 3501 §6.4.7) without holding the writer lock, or every body in memory,
        for the whole of it. The copies are resealed (their AAD names their new id) in batches of at most
        `batch` messages and `batch_bytes` octets, outside the writer lock, and inserted one batch per short
        write transaction *staged*: no folder (`folder_id` NULL), so no session, STATUS or SELECT sees them,
        while the quota, which counts every row of the mailbox, does: each batch is checked against the usage
        of that moment, staged copies included, so two copies or an APPEND cannot together overrun it. One
        last short transaction gives the staged rows their folder, UIDs and modseqs at once: other sessions
        see the whole set or nothing, and the UIDs are taken then, above anything appended meanwhile
        (strictly ascending, RFC 3501 §2.3.1.1). Any failure (quota, the destination or the source folder
        gone, a cancelled task) deletes the staged rows; rows a crash leaves staged are swept by a later copy
        of the mailbox once `STAGED_STALE` old. A source message expunged (or moved away) while the copy runs
        and before its batch is read is not copied and has no COPYUID pair.

        Why staging rather than inserting visible rows and deleting them on failure: sessions would see the
        first batches appear and vanish (EXISTS then EXPUNGE), and UIDs taken batch by batch could interleave
        with an APPEND's. Why the padded flags: SQLite rewrites a whole row, body included, when an UPDATE
        changes its length, but writes only the changed pages when the length stays the same; the staged row
        carries its predicted UID and modseq and flags padded by the octets its folder id will take, so the
        final UPDATE leaves every body page as it is (measured in tests/store/test_mailstore_copy.py; a wrong
        prediction only costs that rewrite). PostgreSQL keeps large bodies out of line (TOAST) anyway.
        """
        if move:
            return await self._move(address, folder_id, uids, target)
        wanted = sorted(set(uids))
        async with self.db.read() as s:  # what to copy: metadata only, no bodies
            if await self._source(s, address, folder_id) is None:
                raise FolderGone("the selected folder no longer exists")
            dest = await self._folder(s, address, target)
            dest_id, uidvalidity = dest.id, dest.uidvalidity
            rows: list[_ToCopy] = []
            for some in _chunks(wanted, _IN_LIST):
                meta = (
                    select(
                        StoredMessage.id,
                        StoredMessage.uid,
                        StoredMessage.size,
                        StoredMessage.flags,
                        StoredMessage.internal_date,
                        StoredMessage.header_message_id,
                    )
                    .where(StoredMessage.folder_id == folder_id, StoredMessage.uid.in_(some))
                    .order_by(StoredMessage.uid)
                )
                rows += [
                    _ToCopy(r.id, int(r.uid), r.size, r.flags, r.internal_date, r.header_message_id)
                    for r in await s.execute(meta)
                ]
            await self.check_quota(s, address, sum(r.size for r in rows))  # fail early; each batch checks again
            next_uid, next_modseq = dest.uidnext, dest.highestmodseq + 1
        if not rows:
            return uidvalidity, []
        key = await self.store.mailboxes.data_key(address)
        staged: list[tuple[str, _ToCopy]] = []  # (copy id, source), in source UID order
        try:
            for part in _batches(rows, batch, batch_bytes):
                async with self.db.read() as s:  # the bodies of one batch; a message gone since is skipped
                    read = select(StoredMessage.id, StoredMessage.body).where(
                        StoredMessage.id.in_([r.id for r in part]), StoredMessage.folder_id == folder_id
                    )
                    bodies = {b.id: b.body for b in await s.execute(read)}
                found = [r for r in part if r.id in bodies]
                sealed = await asyncio.to_thread(_reseal, key, address, [(r.id, bodies.pop(r.id)) for r in found])
                now = utcnow()
                values: list[dict[str, object]] = []
                for r, (copy_id, blob) in zip(found, sealed, strict=True):
                    n = len(staged) + len(values)
                    values.append(
                        {
                            "id": copy_id,
                            "address": address,
                            "folder_id": None,
                            "uid": next_uid + n,  # predictions (see above): the final UPDATE sets the real ones
                            "modseq": next_modseq + n,
                            "flags": r.flags + " " * _int_octets(dest_id),
                            "internal_date": r.internal_date,
                            "header_message_id": r.header_message_id,
                            "size": r.size,
                            "body": blob,
                            "created_at": now,
                        }
                    )
                first = not staged
                staged += [(copy_id, r) for (copy_id, _), r in zip(sealed, found, strict=True)]  # before: see except
                async with self.db.write() as s:
                    if first:  # rows an interrupted copy left staged long ago
                        await s.execute(
                            delete(StoredMessage).where(
                                StoredMessage.address == address,
                                StoredMessage.folder_id.is_(None),
                                StoredMessage.created_at < now - STAGED_STALE,
                            )
                        )
                    await self.check_quota(s, address, sum(r.size for r in found))
                    if values:
                        await s.execute(insert(_MESSAGES), values)
                del values, sealed
            if not staged:
                return uidvalidity, []
            async with self.db.write() as s:  # the copies appear, all at once
                await self._locked(s, address, folder_id)  # a source deleted meanwhile ends the session: no copy
                dest = await self._folder(s, address, target, lock=True)
                if (dest.id, dest.uidvalidity) != (dest_id, uidvalidity):  # SQLite may reuse a deleted folder's id
                    raise NotFound(f"no folder {canonical(target)}")
                pairs: list[tuple[int, int]] = []
                params = []
                for copy_id, source in staged:
                    uid = dest.uidnext
                    dest.uidnext += 1
                    dest.highestmodseq += 1
                    params.append(
                        {"b_id": copy_id, "b_uid": uid, "b_modseq": dest.highestmodseq, "b_flags": source.flags}
                    )
                    pairs.append((source.uid, uid))
                table = _MESSAGES
                await s.execute(
                    update(table)
                    .where(table.c.id == bindparam("b_id"), table.c.folder_id.is_(None))
                    .values(
                        folder_id=dest_id,
                        uid=bindparam("b_uid"),
                        modseq=bindparam("b_modseq"),
                        flags=bindparam("b_flags"),
                    ),
                    params,
                )
                return dest.uidvalidity, pairs
        except BaseException:  # including cancellation: the rows staged (or perhaps staged) go
            if staged:
                await asyncio.shield(self._unstage(address, [i for i, _ in staged]))
            raise

    async def _unstage(self, address: str, ids: list[str]) -> None:
        """Delete the staged rows of a copy that failed."""
        async with self.db.write() as s:
            for part in _chunks(ids, _IN_LIST):
                await s.execute(
                    delete(StoredMessage).where(
                        StoredMessage.address == address, StoredMessage.id.in_(part), StoredMessage.folder_id.is_(None)
                    )
                )

    @staticmethod
    async def _source(s: AsyncSession, address: str, folder_id: int) -> int | None:
        q = select(Folder.id).where(Folder.id == folder_id, Folder.address == address)
        return (await s.execute(q)).scalar_one_or_none()

    async def _move(
        self, address: str, folder_id: int, uids: Sequence[int], target: str
    ) -> tuple[int, list[tuple[int, int]]]:
        """MOVE keeps each row (and its sealed body) and changes its folder, UID and modseq (RFC 6851): one
        transaction, the bodies never loaded."""
        wanted = sorted(set(uids))
        async with self.db.write() as s:
            source = await self._locked(s, address, folder_id)
            dest = await self._folder(s, address, target, lock=True)
            rows: list[tuple[str, int]] = []
            for part in _chunks(wanted, _IN_LIST):
                q = (
                    select(StoredMessage.id, StoredMessage.uid)
                    .where(StoredMessage.folder_id == folder_id, StoredMessage.uid.in_(part))
                    .order_by(StoredMessage.uid)
                )
                rows += [(r.id, int(r.uid)) for r in await s.execute(q)]
            pairs: list[tuple[int, int]] = []
            params = []
            for row_id, source_uid in rows:
                uid = dest.uidnext
                dest.uidnext += 1
                dest.highestmodseq += 1
                params.append({"b_id": row_id, "b_uid": uid, "b_modseq": dest.highestmodseq})
                pairs.append((source_uid, uid))
            if rows:
                table = _MESSAGES
                await s.execute(
                    update(table)
                    .where(table.c.id == bindparam("b_id"))
                    .values(folder_id=dest.id, uid=bindparam("b_uid"), modseq=bindparam("b_modseq")),
                    params,
                )
                source.highestmodseq += 1
            return dest.uidvalidity, pairs

    async def append(
        self, address: str, name: str, body: bytes, *, flags: Iterable[str] = (), internal_date: datetime | None = None
    ) -> tuple[int, int]:
        """Store a message a client appends; returns (UIDVALIDITY, UID) for APPENDUID (RFC 4315)."""
        message_id = _message_id(body)
        delivered = await self.store.deliver(  # its own raw_writing() transaction
            address,
            body,
            folder=canonical(name),
            flags=_text(flags),
            internal_date=internal_date,
            header_message_id=message_id,
            quota=self._quota_check(address, len(body)),
        )
        return delivered.uidvalidity, delivered.uid

    async def append_within(
        self, s: AsyncSession, address: str, name: str, body: bytes, *, flags: Iterable[str] = ()
    ) -> Delivered:
        """`append` inside the caller's transaction `s` (it commits with the caller's changes). The quota is
        checked before anything is written, so a QuotaExceeded leaves `s` as it was (deliver's own check
        comes after the folder's UID is taken)."""
        await self.check_quota(s, address, len(body))
        return await self.store.deliver(
            address, body, folder=canonical(name), flags=_text(flags), header_message_id=_message_id(body), session=s
        )

    # -- quota -----------------------------------------------------------------------------------

    async def usage(self, address: str) -> tuple[int, int | None]:
        """(bytes used, quota in bytes or None for no limit)."""
        async with self.db.read() as s:
            return await self._usage(s, address)

    async def _usage(self, s: AsyncSession, address: str) -> tuple[int, int | None]:
        # used_bytes is kept by triggers on every insert and delete of a message (migration 0009).
        row = (
            await s.execute(select(Account.used_bytes, Account.quota_bytes).where(Account.address == address))
        ).first()
        used, quota = (row[0], row[1]) if row is not None else (0, None)
        return int(used), quota if quota is not None else self.default_quota

    async def deliver_checked(
        self,
        s: AsyncSession | Statements,
        address: str,
        body: bytes,
        header_message_id: str | None,
        receipt: str | None = None,
        *,
        sender: str,
    ) -> Delivered | None:
        """Deliver into INBOX within `s`, or raise QuotaExceeded: the queue worker's and the SMTP
        listeners' delivery, the final delivery of RFC 5321 §4.4, which puts the envelope's `sender` ("" for
        the null sender) in a Return-Path: field at the top. With a relay `receipt`
        (messages.relay_receipt): None, storing nothing, when that mailbox already got the message."""
        if receipt is not None and not await self.store.first_receipt(self.db.statements(s), address, receipt):
            return None
        body = return_path(sender) + body
        return await self.store.deliver(
            address, body, header_message_id=header_message_id, session=s, quota=self._quota_check(address, len(body))
        )

    async def check_quota(self, s: AsyncSession, address: str, adding: int) -> None:
        """Raise QuotaExceeded if `adding` more bytes would take the mailbox past its quota."""
        used, quota = await self._usage(s, address)
        self._over(address, used, quota, adding)

    def _quota_check(self, address: str, adding: int) -> QuotaCheck:
        """The check for a delivery of `adding` bytes, made on the usage read with the mailbox's key."""
        return lambda used, quota: self._over(address, used, quota if quota is not None else self.default_quota, adding)

    @staticmethod
    def _over(address: str, used: int, quota: int | None, adding: int) -> None:
        if quota is not None and used + adding > quota:
            text = f"mailbox {address} is over its quota ({used + adding} > {quota} octets)"
            raise QuotaExceeded(text, larger=adding > quota)

    async def set_quota(self, address: str, quota: int | None) -> None:
        async with self.db.write() as s:
            await s.execute(update(Account).where(Account.address == address).values(quota_bytes=quota))
