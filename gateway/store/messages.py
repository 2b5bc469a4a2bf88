"""Message bodies at rest, sealed with their mailbox's data key (AES-256-GCM).

The associated data is "<address>\\0<message id>", so a body copied to another row or mailbox does not
open. Folders, flags and UIDs come with the IMAP mailbox model; this is the storage they build on.
"""

from __future__ import annotations

import secrets

from sqlalchemy import select

from gateway.errors import NotFound
from gateway.store.mailboxes import MailboxRepository
from gateway.store.models import StoredMessage, utcnow


def _aad(address: str, message_id: str) -> bytes:
    return f"{address}\0{message_id}".encode()


class MessageStore:
    def __init__(self, mailboxes: MailboxRepository) -> None:
        self.mailboxes = mailboxes
        self.db = mailboxes.db

    async def put(self, address: str, body: bytes) -> str:
        address = address.lower()
        key = await self.mailboxes.data_key(address)
        message_id = secrets.token_hex(16)
        sealed = key.seal(body, _aad(address, message_id))
        async with self.db.write() as s:
            s.add(StoredMessage(id=message_id, address=address, size=len(body), body=sealed, created_at=utcnow()))
        return message_id

    async def get(self, address: str, message_id: str) -> bytes:
        address = address.lower()
        async with self.db.read() as s:
            row = (
                await s.execute(
                    select(StoredMessage).where(StoredMessage.id == message_id, StoredMessage.address == address)
                )
            ).scalar_one_or_none()
        if row is None:
            raise NotFound(f"no message {message_id} in {address}")
        key = await self.mailboxes.data_key(address)
        return key.open(row.body, _aad(address, message_id))
