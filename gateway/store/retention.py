"""Mailbox retention: a hosted mailbox unused for `[retention] inactive_after` is deleted, its owner warned.

Implementation notes
- Domain brief §8: delete a mailbox after at most a year without login, after warning its owner. A login is
  any successful authentication (SMTP, IMAP, the web inbox, a TLS client certificate), and a message a
  delegate sends as an ORG mailbox counts as its use: each writes `accounts.last_login_at` and clears
  `retention_warned_at`. A mailbox that never logged in counts from its creation.
- `run` is what `mssgw retention run` does (a daily timer, deploy/). A mailbox idle for
  `inactive_after - warn_before - RETENTION_SLACK` gets a notice in its INBOX (the only channel the
  operator has to its owner) and `retention_warned_at`; it is deleted once that notice is `warn_before`
  old and there has still been no login. The slack (3 days) absorbs the daily run's time and a missed
  run, so the deletion comes before `inactive_after` (the rule's "at most a year"). It never comes
  earlier than `warn_before` after the warning, even for a mailbox found long idle (the first run, a
  restored backup).
- Each step is its own transaction and re-checks its conditions there: the warning is recorded once, and
  only if the mailbox is still idle (two nodes running at once deliver one notice; a login since the
  listing gets none); a login between the listing and the deletion keeps the mailbox. A warning older
  than the last login counts for nothing. One mailbox's failure is logged and audited, and the run goes
  on. Each warning and deletion is audited
  (`retention.mailbox.warned`, `retention.mailbox.deleted`), the mailbox as principal.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, or_, select

from gateway.audit.events import AuditEvent
from gateway.audit.oplog import get_logger
from gateway.config import RETENTION_SLACK
from gateway.store.mailboxes import MailboxRepository
from gateway.store.messages import MessageStore
from gateway.store.models import Account, Mailbox

if TYPE_CHECKING:
    from gateway.audit.log import AuditLog
    from gateway.config import Config


@dataclass(frozen=True)
class Idle:
    """A hosted mailbox the rule concerns now."""

    address: str
    kind: str
    idle_since: datetime  # its last login, or its creation
    warned_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "kind": self.kind,
            "idle_since": self.idle_since.isoformat(),
            "warned_at": self.warned_at.isoformat() if self.warned_at else None,
        }


@dataclass
class RunResult:
    warned: list[Idle]
    deleted: list[Idle]
    waiting: list[Idle]  # warned, and the notice not yet `warn_before` old
    failed: list[Idle]  # the step failed (logged, audited): tried again at the next run


class Retention:
    def __init__(self, cfg: Config, mailboxes: MailboxRepository, audit: AuditLog) -> None:
        self.cfg = cfg
        self.mailboxes = mailboxes
        self.audit = audit
        self.inactive_after = cfg.retention.inactive_after_delta
        self.warn_before = cfg.retention.warn_before_delta
        # Idle this long, a mailbox is warned; deleted warn_before later: before inactive_after, whatever the
        # runs' times.
        self.warn_after = self.inactive_after - self.warn_before - RETENTION_SLACK
        self.log = get_logger(component="retention", node=cfg.node.name)

    async def idle(self, now: datetime) -> list[Idle]:
        """Every hosted mailbox idle long enough to be warned, or warned already, in address order."""
        cutoff = now - self.warn_after
        stmt = (
            select(
                Account.address, Mailbox.kind, Account.last_login_at, Account.created_at, Account.retention_warned_at
            )
            .join(Mailbox, Mailbox.address == Account.address)
            .where(
                or_(
                    Account.retention_warned_at.is_not(None),
                    Account.last_login_at <= cutoff,
                    and_(Account.last_login_at.is_(None), Account.created_at <= cutoff),
                )
            )
            .order_by(Account.address)
        )
        async with self.mailboxes.db.read() as s:
            rows = (await s.execute(stmt)).all()
        found = [Idle(r[0], r[1], r[2] or r[3], r[4]) for r in rows]
        # A warning older than the last login is no warning (see clear_stale_warnings).
        return [
            replace(mb, warned_at=None) if mb.warned_at is not None and mb.warned_at < mb.idle_since else mb
            for mb in found
        ]

    async def run(self, now: datetime | None = None, *, dry_run: bool = False) -> RunResult:
        now = now or datetime.now(UTC)
        out = RunResult([], [], [], [])
        if not dry_run:
            await self.mailboxes.clear_stale_warnings()
        for mb in await self.idle(now):
            if mb.warned_at is None:
                if mb.idle_since > now - self.warn_after:
                    continue  # a stale warning's mailbox, in use again
                step, done = "warn", out.warned
            elif mb.warned_at + self.warn_before > now:
                out.waiting.append(mb)
                continue
            else:
                step, done = "delete", out.deleted
            if dry_run:
                done.append(mb)
                continue
            try:
                if await (self._warn(mb, now) if step == "warn" else self._delete(mb, now)):
                    done.append(mb)
            except Exception as exc:  # one mailbox's trouble (a key no longer configured) must not stop the rest
                self.log.error("retention step failed", address=mb.address, step=step, error=type(exc).__name__)
                event = AuditEvent.RETENTION_WARNED if step == "warn" else AuditEvent.RETENTION_DELETED
                await self.audit.record(
                    event,
                    author="retention",
                    principal=mb.address,
                    response={"result": "failed", "error": type(exc).__name__},
                )
                out.failed.append(mb)
        return out

    async def _warn(self, mb: Idle, now: datetime) -> bool:
        deadline = now + self.warn_before
        store = MessageStore(self.mailboxes)
        async with self.mailboxes.db.write() as s:
            if not await self.mailboxes.warn_inactive(s, mb.address, now, now - self.warn_after):
                return False  # warned meanwhile (another node's run), or logged in since the listing
            delivered = await store.deliver(mb.address, notice(self.cfg, mb, deadline, now), session=s)
        await self.audit.record(
            AuditEvent.RETENTION_WARNED,
            author="retention",
            principal=mb.address,
            response={
                "result": "done",
                "idle_since": mb.idle_since.isoformat(),
                "deletion_after": deadline.isoformat(),
                "folder": delivered.folder,
                "uid": delivered.uid,
            },
        )
        return True

    async def _delete(self, mb: Idle, now: datetime) -> bool:
        deleted = await self.mailboxes.delete_inactive(
            mb.address, idle_by=now - self.warn_after - self.warn_before, warned_by=now - self.warn_before
        )
        if deleted:
            await self.audit.record(
                AuditEvent.RETENTION_DELETED,
                author="retention",
                principal=mb.address,
                response={"result": "done", "idle_since": mb.idle_since.isoformat(), "warned_at": str(mb.warned_at)},
            )
        return deleted


def _day(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%d/%m/%Y")


def notice(cfg: Config, mb: Idle, deadline: datetime, now: datetime) -> bytes:
    """The warning delivered into the mailbox, in French like the rest of what users read."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = Address("Messagerie sécurisée", "postmaster", cfg.node.domain)
    msg["To"] = mb.address
    msg["Subject"] = f"Votre boîte aux lettres sera supprimée après le {_day(deadline)} faute de connexion"
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid("retention", domain=cfg.node.domain)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no automatic reply to this
    msg.set_content(
        "Bonjour,\n\n"
        f"Aucune connexion à la boîte aux lettres {mb.address} n'a eu lieu depuis le {_day(mb.idle_since)}.\n"
        "Une boîte aux lettres de messagerie sécurisée de santé inutilisée pendant "
        f"{_days(cfg.retention.inactive_after_delta)} est supprimée, avec tous ses messages.\n\n"
        f"Celle-ci le sera après le {_day(deadline)} (UTC), sauf si vous vous y connectez d'ici là :\n"
        "une seule connexion, depuis votre logiciel de messagerie ou la messagerie en ligne, suffit à la "
        "conserver.\n\n"
        f"-- \n{cfg.smtp_hostname} (message automatique, merci de ne pas y répondre)\n",
        charset="utf-8",
        cte="quoted-printable",
    )
    return msg.as_bytes()


def _days(delta: timedelta) -> str:
    return "un an" if delta.days in (365, 366) else f"{delta.days} jours"
