"""Message bodies at rest in a mailbox's folders, sealed with the mailbox's data key (AES-256-GCM).

The associated data is "<address>\\0<message id>", so a body copied to another row or mailbox does not
open. Delivery takes the folder's next UID and modseq in the same transaction as the insert, so a
message is either fully delivered (visible with its UID) or not at all.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from gateway.errors import NotFound
from gateway.store.db import bound_list
from gateway.store.folders import allocate_uid
from gateway.store.mailboxes import MailboxRepository
from gateway.store.models import Account, StoredMessage, utcnow

_MESSAGES = cast(Table, StoredMessage.__table__)
_INSERT = insert(_MESSAGES)
_ACCOUNT = select(Account.data_key, Account.used_bytes, Account.quota_bytes).where(
    Account.address == bindparam("b_address")
)


def body_aad(address: str, message_id: str) -> bytes:
    return f"{address}\0{message_id}".encode()


@dataclass(frozen=True)
class Delivered:
    id: str
    folder: str
    uid: int
    modseq: int
    uidvalidity: int


QuotaCheck = Callable[[int, int | None], None]
"""Called with the mailbox's (bytes used, quota_bytes column) before a delivery; raises to refuse it."""


class MessageStore:
    def __init__(self, mailboxes: MailboxRepository) -> None:
        self.mailboxes = mailboxes
        self.db = mailboxes.db

    async def deliver(
        self,
        address: str,
        body: bytes,
        *,
        folder: str = "INBOX",
        flags: str = "",
        internal_date: datetime | None = None,
        header_message_id: str | None = None,
        session: AsyncSession | AsyncConnection | None = None,
        quota: QuotaCheck | None = None,
    ) -> Delivered:
        """Store `body` in `folder`; inside `session` when given (it commits with the caller's changes).
        `quota` sees the mailbox's usage first (read with its key, in the same statement)."""
        address = address.lower()
        message_id = secrets.token_hex(16)
        now = utcnow()
        async with contextlib.AsyncExitStack() as stack:
            s = session if session is not None else await stack.enter_async_context(self.db.write())
            # Core statements in the caller's transaction: this is every delivery's and APPEND's path.
            account = (await s.execute(_ACCOUNT, {"b_address": address})).first()
            if account is None:
                raise NotFound(f"no local mailbox {address}")
            folder_id, uid, modseq, uidvalidity = await allocate_uid(s, address, folder)
            if quota is not None:  # after the folder is known to exist (APPEND: TRYCREATE before OVERQUOTA)
                quota(int(account.used_bytes), account.quota_bytes)
            sealed = self.mailboxes.kek.unwrap(account.data_key, address).seal(body, body_aad(address, message_id))
            await s.execute(
                _INSERT,  # parameters, not .values(): no statement to build and key for the cache each time
                {
                    "id": message_id,
                    "address": address,
                    "folder_id": folder_id,
                    "uid": uid,
                    "modseq": modseq,
                    "flags": flags,
                    "internal_date": internal_date or now,
                    "header_message_id": header_message_id,
                    "size": len(body),
                    "body": sealed,
                    "created_at": now,
                },
            )
        return Delivered(message_id, folder, uid, modseq, uidvalidity)

    async def put(self, address: str, body: bytes) -> str:
        """Deliver to INBOX; returns the stored message's id."""
        return (await self.deliver(address, body)).id

    async def get(self, address: str, message_id: str) -> bytes:
        address = address.lower()
        rows = await self.db.rows(  # one statement: the body and the key that opens it
            "SELECT m.body, a.data_key FROM messages m JOIN accounts a ON a.address = m.address"
            " WHERE m.id = :id AND m.address = :address",
            {"id": message_id, "address": address},
        )
        if not rows:
            raise NotFound(f"no message {message_id} in {address}")
        body, wrapped = rows[0]
        return self.mailboxes.kek.unwrap(wrapped, address).open(body, body_aad(address, message_id))

    async def get_many(self, address: str, message_ids: Sequence[str]) -> dict[str, bytes]:
        """The bodies of those of `message_ids` still stored, by id (one statement; keep the list short).
        By id, not by folder and UID: SQLite may give a deleted folder's id to a new one."""
        address = address.lower()
        marks, params = bound_list("m", message_ids)
        params["address"] = address
        sql = (
            "SELECT m.id, m.body, a.data_key"  # noqa: S608 (placeholders only: the ids are bound)
            " FROM messages m JOIN accounts a ON a.address = m.address"
            f" WHERE m.address = :address AND m.id IN ({marks})"
        )
        rows = await self.db.rows(sql, params)
        if not rows:
            return {}
        key = self.mailboxes.kek.unwrap(rows[0][2], address)
        return {str(mid): key.open(body, body_aad(address, mid)) for mid, body, _ in rows}
