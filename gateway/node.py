"""An opened operator node: configuration, databases (migrated), audit log, keys, repositories.

Admin commands and `mssgw serve` both work through a Node, so they share one way of opening the store
and one audit log. Secrets (the KEK) are loaded only when a command needs them.
"""

from __future__ import annotations

from types import TracebackType

from gateway.audit.checkpoint import CheckpointSigner
from gateway.audit.log import AUDIT_HEAD, AUDIT_MIGRATIONS, AuditLog
from gateway.config import Config
from gateway.queue.notices import Notices
from gateway.store.crypto import KeyEncryptionKey, load_kek
from gateway.store.db import Database
from gateway.store.directory import DirectoryRepository
from gateway.store.mailboxes import MailboxRepository
from gateway.store.notify import MailboxNotices
from gateway.store.patients import PatientRepository
from gateway.store.trust import TrustRepository


class Node:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.db = Database(cfg.db_url(cfg.store.url))
        self.audit_db = Database(cfg.db_url(cfg.store.audit_url), AUDIT_MIGRATIONS, AUDIT_HEAD)
        self._kek: KeyEncryptionKey | None = None
        self._signer: CheckpointSigner | None = None
        self.audit = AuditLog(self.audit_db, cfg.node.name, None)
        self.notices = MailboxNotices()  # mailbox changed: wakes this node's IMAP IDLE sessions
        self.tracking = Notices(self.db)  # messages relayed to peers, waiting for their delivery notice

    async def open(self) -> Node:
        await self.db.migrate()
        await self.audit_db.migrate()
        self.audit.signer = self.signer
        return self

    @property
    def signer(self) -> CheckpointSigner:
        if self._signer is None:
            self._signer = CheckpointSigner.load(self.cfg.path(self.cfg.audit.checkpoint_key), self.cfg.base_dir)
        return self._signer

    @property
    def kek(self) -> KeyEncryptionKey:
        if self._kek is None:
            s = self.cfg.store
            self._kek = load_kek(
                s.kek.get_secret_value() if s.kek else None,
                self.cfg.path(s.kek_file) if s.kek_file else None,
                self.cfg.base_dir,
                [v.get_secret_value() for v in s.previous_keks],
                [self.cfg.path(p) for p in s.previous_kek_files],
            )
        return self._kek

    @property
    def directory(self) -> DirectoryRepository:
        return DirectoryRepository(self.db)

    @property
    def mailboxes(self) -> MailboxRepository:
        return MailboxRepository(self.db, self.kek)

    @property
    def patients(self) -> PatientRepository:
        return PatientRepository(self.db, self._kek or self.kek)

    @property
    def trust(self) -> TrustRepository:
        return TrustRepository(self.db)

    def is_local_domain(self, domain: str) -> bool:
        return domain.lower() in self.cfg.node.local_domains

    async def close(self) -> None:
        await self.audit.flush()
        await self.db.close()
        await self.audit_db.close()

    async def __aenter__(self) -> Node:
        return await self.open()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
