"""Queue workers: deliver local recipients to their mailbox, relay the others, retry, bounce with a DSN.

Implementation notes
- A worker claims due recipients with a lease (see gateway.queue.store), handles each message's
  recipients, and records every outcome; each step is audited (delivered, relayed, deferred, failed,
  DSN sent), never with content.
- Local delivery is exactly once: the mailbox insert (with its UID) and the recipient's "delivered"
  state commit in one transaction. If the worker dies before that commit, nothing was delivered and
  the recipient becomes due again when its lease expires. The leases of the recipients under way are
  renewed every third of the lease, so a delivery slower than one lease is not taken over while alive.
- Each claimed message is a task of its own, and its domains are relayed side by side; the worker claims
  more whenever some of `[queue] in_flight` is free, at most `domain_in_flight` recipients for one domain.
  A tarpitting peer (each reply just within its timeout) then holds only its own recipients: before, a
  batch waited for its slowest message, and with it all of the node's outbound and local mail.
- A temporary failure is retried on the configured schedule; when the next attempt would fall past
  the maximum age, or on a permanent failure, the recipient is failed and the sender gets one RFC 3464
  DSN per message covering every recipient that failed in that pass (never for a null sender).
- Workers wake when a message is queued on this node, and poll otherwise (other nodes' messages).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from gateway.audit.events import AuditEvent
from gateway.audit.oplog import get_logger
from gateway.node import Node
from gateway.queue import mdn
from gateway.queue.dsn import RecipientStatus, build_dsn, header_block, needs_dsn
from gateway.queue.notices import Tracked
from gateway.queue.retry import RetrySchedule, parse_duration
from gateway.queue.store import Envelope, Job, LeaseLost, Queue
from gateway.smime.cms import CmsError
from gateway.smime.outbound import Protected
from gateway.store.mailstore import Mailstore, QuotaExceeded
from gateway.store.messages import MessageStore
from gateway.store.models import utcnow

if TYPE_CHECKING:
    from gateway.smime.service import Smime


@dataclass(frozen=True)
class Result:
    """What happened to one recipient in one attempt."""

    recipient: str
    ok: bool
    permanent: bool = False
    status: str = "2.0.0"  # RFC 3463
    diagnostic: str | None = None  # e.g. "smtp; 550 5.1.1 no such mailbox"
    remote_mta: str | None = None


def _held(_job: Job) -> None:
    """`run_once`: a batch's leases are given back when it is done, nothing to do at each deferral."""


PRUNE_EVERY = 3600.0
"""Seconds between prunings of old relay receipts."""
NOTICE_SWEEP = 5.0
"""Seconds between looks for relayed messages whose delivery notice is overdue."""

Relay = Callable[[str, Envelope, Sequence[Job], bytes], Awaitable[list[Result]]]
"""Sends one message to the recipients of one remote domain; one Result per job, in order."""


class DeliveryWorker:
    def __init__(
        self,
        node: Node,
        queue: Queue,
        *,
        relay: Relay | None = None,
        smime: Smime | None = None,
        owner: str | None = None,
    ) -> None:
        self.node = node
        self.queue = queue
        self.relay = relay
        self.smime = smime  # `serve` always gives one: nothing leaves for a peer unprotected
        self.cfg = node.cfg
        self.local = node.cfg.node.local_domains
        self.owner = owner or node.cfg.node.name
        self.store = MessageStore(node.mailboxes)
        self.mailstore = Mailstore(self.store, default_quota=node.cfg.store.default_quota or None)
        q = node.cfg.queue
        self.schedule = RetrySchedule.parse(q.retry_schedule, max_age=parse_duration(q.max_age), jitter=0.1)
        self.lease = timedelta(seconds=q.lease)
        self._wake = asyncio.Event()
        self._stopping = False
        self._log = get_logger(component="queue", node=self.owner)
        self._domain_limits: dict[str, asyncio.Semaphore] = {}
        self._more = False  # `run`'s last claim left due recipients behind

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Finish the messages under way, claim no more, then end `run` (the node stops; claimed recipients
        not handled by then stay leased to this node until it starts again or the lease runs out)."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Deliver until stopped. Messages are handled as tasks of their own, and due recipients are claimed
        whenever some of `[queue] in_flight` is free (at most `domain_in_flight` for one domain): a peer that
        answers slowly holds its own recipients, never the rest of the node's mail."""
        # Leases this node held when it last stopped died with that process: take them back now rather
        # than after they expire.
        await self.queue.release(self.owner)
        held: dict[int, str] = {}  # recipient id -> domain, for every recipient under way
        tasks: set[asyncio.Task[None]] = set()
        keeper = asyncio.create_task(self._keep_leases(held.keys()))
        pruned = swept = -PRUNE_EVERY
        try:
            while not self._stopping:
                # Cleared before looking: a wake (a message queued, one finished) during the look is kept.
                self._wake.clear()
                try:
                    if time.monotonic() - pruned >= PRUNE_EVERY:
                        pruned = time.monotonic()
                        await self.prune_receipts()
                    if time.monotonic() - swept >= NOTICE_SWEEP:
                        swept = time.monotonic()
                        await self.expire_notices()
                    handled = await self._fill(held, tasks)
                except Exception as exc:  # the database away for a moment (a restart, a lock): the worker goes on
                    # The first line only: SQLAlchemy's next ones quote the statement and its parameters.
                    self._log.error(
                        "queue pass failed", error=f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"[:300]
                    )
                    handled = 0
                if not handled and not self._stopping:
                    # Not wait_for: Python 3.11's returns the event's result and drops a cancellation that
                    # arrives as the event is set (a wake at stop), and the node would wait for it forever.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.cfg.queue.poll_interval):
                            await self._wake.wait()
            if tasks:
                await asyncio.wait(tasks)
        finally:
            # Cancelled (the node's stop grace is over): what is under way keeps its leases, taken back at
            # the next start or by another node once they expire. Waited for, so that `run` ends only once
            # nothing of it uses the database any more.
            keeper.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(keeper, *tasks, return_exceptions=True)

    async def _fill(self, held: dict[int, str], tasks: set[asyncio.Task[None]]) -> int:
        """Claim what the free capacity allows and start a task per message; returns how many recipients."""
        q = self.cfg.queue
        free = q.in_flight - len(held)
        if free <= 0:
            self._more = True  # a message queued meanwhile waits for room: the next completion claims it
            return 0
        claim = await self.queue.claim(
            owner=self.owner, lease=self.lease, limit=free, held=Counter(held.values()), domain_cap=q.domain_in_flight
        )
        self._more = claim.more
        for job in claim.jobs:
            held[job.recipient_id] = job.domain
        for qid, jobs in claim.by_message().items():
            task = asyncio.create_task(self._handled(qid, jobs, held))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        return len(claim.jobs)

    async def _handled(self, queue_id: str, jobs: list[Job], held: dict[int, str]) -> None:
        mine = {job.recipient_id for job in jobs}  # the leases this task holds

        def released(job: Job) -> None:
            # Deferred (or its lease lost) while the message's other domains go on: no longer ours to renew
            # or count, and once due again another task may claim it, which this one must then leave alone.
            if job.recipient_id in mine:
                mine.discard(job.recipient_id)
                held.pop(job.recipient_id, None)
                if self._more:
                    self._wake.set()

        try:
            await self._message(queue_id, jobs, released)
        except Exception as exc:
            self._failed(queue_id, exc)
        finally:
            for recipient_id in mine:
                held.pop(recipient_id, None)
            if self._more:  # room for what the last claim left; a message queued since wakes by itself
                self._wake.set()

    def _failed(self, queue_id: str, exc: BaseException, *, domain: str | None = None) -> None:
        # One message's trouble (deleted meanwhile, a bug) must not stop the others: its leases expire and
        # it is retried; the error is logged without content.
        where = {"domain": domain} if domain is not None else {}
        self._log.error("queue message failed", queue_id=queue_id, error=f"{type(exc).__name__}: {exc}", **where)

    async def prune_receipts(self, now: datetime | None = None) -> int:
        """Forget relay receipts older than `[smtp] duplicate_window` (every node does it: idempotent), and
        the notice tracking of messages relayed before it (or before twice the notice timeout, if longer)."""
        now = now or utcnow()
        keep = max(self.cfg.smtp.duplicate_window_delta, 2 * self.cfg.queue.notice_timeout_delta)
        await self.node.tracking.prune(now - keep)
        return await self.store.prune_receipts(now - self.cfg.smtp.duplicate_window_delta)

    async def expire_notices(self, now: datetime | None = None) -> int:
        """Settle the relayed messages whose final notice is overdue (domain brief §7): each sender gets a
        failure DSN, queued in the transaction that settles the row, so a notice arriving meanwhile (on
        this node or another) and the timeout never both reach the sender. Returns how many."""
        now = now or utcnow()
        settled = 0
        for row in await self.node.tracking.due(now):
            built = self._timeout_dsn(row, now)
            dsn, dsn_error = (None, built) if isinstance(built, str) else (built, None)
            dsn_id = None
            async with self.node.db.raw_writing() as tx:
                if not await self.node.tracking.settle_timeout(tx, row, now):
                    continue
                if dsn is not None:
                    dsn_id = await self.queue.enqueue_notice(
                        source="dsn", to=row.sender, body=dsn, local_domains=self.local, peer=row.queue_id, session=tx
                    )
            settled += 1
            await self.node.audit.record(
                AuditEvent.NOTICE_TIMEOUT,
                author=f"queue:{self.owner}",
                principal=row.sender,
                cid=row.queue_id,
                response={
                    "rcpt": row.recipient,
                    "message_id": row.message_id,
                    "waited_for": "dispatched" if row.state == "processed" else "processed",
                    "dsn_queue_id": dsn_id,
                    **({"dsn_error": dsn_error} if dsn_error else {}),
                },
            )
        if settled:
            self.wake()
        return settled

    def _timeout_dsn(self, row: Tracked, now: datetime) -> bytes | str:
        """The failure DSN for an overdue notice (4.4.7, delivery time expired), or why it cannot be built."""
        waited = self.cfg.queue.notice_timeout
        if row.state == "processed":
            what = f"the recipient's operator took the message, but did not confirm its delivery within {waited}"
        else:
            what = f"no delivery notification from the recipient's operator within {waited}"
        try:
            return build_dsn(
                reporting_mta=self.cfg.smtp_hostname,
                from_address=f"MAILER-DAEMON@{self.cfg.node.domain}",
                original_envelope_id=None,
                sender=row.sender,
                recipients=[
                    RecipientStatus(
                        recipient=row.recipient,
                        action="failed",
                        status="4.4.7",
                        diagnostic=f"x-mssgw; {what}",
                        last_attempt=now,
                    )
                ],
                # The body is gone: the headers that name the message, rebuilt from the tracking.
                original_headers=f"Message-ID: {row.message_id}\r\nTo: <{row.recipient}>\r\n".encode(),
                arrival=row.created_at,
                message_id_domain=self.cfg.node.domain,
                now=now,
            )
        except ValueError as exc:
            self._log.error("dsn not built", queue_id=row.queue_id, error=str(exc))
            return str(exc)

    async def run_once(self, now: datetime | None = None) -> int:
        """Claim one batch and handle all of it before returning (tests, and tools that want a pass to
        end); returns how many recipients were handled. `run` does not wait for a batch's slowest."""
        claim = await self.queue.claim(owner=self.owner, lease=self.lease, limit=100, now=now)
        if not claim.jobs:
            return 0
        groups = claim.by_message()
        keeper = asyncio.create_task(self._keep_leases([j.recipient_id for j in claim.jobs]))
        try:
            outcomes = await asyncio.gather(
                *(self._message(qid, jobs) for qid, jobs in groups.items()), return_exceptions=True
            )
        finally:
            keeper.cancel()
        for qid, outcome in zip(groups, outcomes, strict=True):
            if isinstance(outcome, Exception):
                self._failed(qid, outcome)
        return len(claim.jobs)

    async def _keep_leases(self, ids: Collection[int]) -> None:
        """Renew the leases of the recipients under way (`ids` as it is at each round) every third of the
        lease: slow relays may take longer than one lease, and an expired lease lets another node deliver
        again."""
        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            try:
                await self.queue.renew(self.owner, list(ids), self.lease)
            except Exception as exc:  # a database hiccup: the next round tries again
                self._log.warning("lease renewal failed", error=type(exc).__name__)

    async def _audit(self, event: AuditEvent, env: Envelope, **response: object) -> None:
        await self.node.audit.record(
            event,
            author=f"queue:{self.owner}",
            principal=env.principal,
            peer=env.peer,
            cid=env.queue_id,
            response=response,
        )

    async def _message(self, queue_id: str, jobs: list[Job], released: Callable[[Job], None] = _held) -> None:
        env = jobs[0].envelope
        body = await self.queue.body(queue_id)
        local = [(job, await self._deliver_local(job, body)) for job in jobs if job.local]
        failed = await self._settle(env, local, released)
        remote: dict[str, list[Job]] = {}
        for job in (j for j in jobs if not j.local):
            remote.setdefault(job.domain, []).append(job)

        async def relay(domain: str, group: list[Job]) -> list[tuple[Job, RecipientStatus]]:
            outcome = await self._relay(domain, env, group, body)
            # Deferred as soon as its domain is done, not when the message's slowest peer is: retried on
            # time, and its lease given back.
            return await self._settle(env, list(zip(group, outcome, strict=True)), released)

        # Each domain at its own pace: a slow peer does not hold up the others. One whose relay raised (a
        # bug, the database away) is logged and left to its leases; the others' outcomes are recorded.
        settled = await asyncio.gather(*(relay(d, group) for d, group in remote.items()), return_exceptions=True)
        for domain, outcome in zip(remote, settled, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome  # a cancellation: the whole message stops
                self._failed(queue_id, outcome, domain=domain)
                continue
            failed += outcome
        if failed:  # one DSN for the message's failed recipients, whatever their domain
            await self._fail(env, body, failed)

    async def _settle(
        self, env: Envelope, results: list[tuple[Job, Result]], released: Callable[[Job], None] = _held
    ) -> list[tuple[Job, RecipientStatus]]:
        """Defer the temporary failures of `results` (each deferred one `released`: its lease given back);
        returns the recipients that failed for good (the delivered and relayed ones were recorded with their
        delivery)."""
        failed: list[tuple[Job, RecipientStatus]] = []
        now = utcnow()
        for job, res in results:
            if res.ok:
                continue
            # Another node's clock may run a little ahead of ours: a message it queued is not from the future.
            age = max(now - env.created_at, timedelta(0))
            retry = None if res.permanent else self.schedule.next_delay(job.attempts + 1, age=age)
            if retry is not None:
                try:
                    await self.queue.mark(job, "pending", error=res.diagnostic, retry_at=now + retry)
                except LeaseLost:
                    released(job)
                    continue  # another worker has it now: nothing to record
                released(job)
                await self._audit(
                    AuditEvent.QUEUE_DEFERRED,
                    env,
                    rcpt=job.recipient,
                    reason=res.diagnostic,
                    retry_in=int(retry.total_seconds()),
                )
                continue
            status = res.status if res.permanent else "4.4.7"  # RFC 3463: delivery time expired
            failed.append(
                (
                    job,
                    RecipientStatus(
                        recipient=job.recipient,
                        action="failed",
                        status=status,
                        diagnostic=res.diagnostic,
                        remote_mta=res.remote_mta,
                        last_attempt=now,
                    ),
                )
            )
        return failed

    async def _fail(self, env: Envelope, body: bytes, failed: list[tuple[Job, RecipientStatus]]) -> None:
        """Fail the recipients and queue the sender's DSN in one transaction: never one without the other."""
        dsn, dsn_error = None, None
        if needs_dsn(env.sender):
            try:
                dsn = build_dsn(
                    reporting_mta=self.cfg.smtp_hostname,
                    # From: at the node's domain, not the host: a DSN for a peer's sender crosses signed
                    # with the domain's certificate, and the peer binds a null sender's From: to its dNSName.
                    from_address=f"MAILER-DAEMON@{self.cfg.node.domain}",
                    original_envelope_id=None,
                    sender=env.sender,
                    recipients=[st for _, st in failed],
                    original_headers=header_block(body),
                    arrival=env.created_at,
                    message_id_domain=self.cfg.node.domain,
                )
            except ValueError as exc:
                # The recipients fail all the same: left pending, they would be claimed and tried again
                # every lease, for ever, and never given up.
                dsn_error = str(exc)
                self._log.error("dsn not built", queue_id=env.queue_id, error=dsn_error)
        try:
            async with self.node.db.raw_writing() as s:
                for job, st in failed:
                    await self.queue.settle(s, job, "failed", error=st.diagnostic)
                dsn_id = (
                    await self.queue.enqueue_notice(
                        source="dsn", to=env.sender, body=dsn, local_domains=self.local, peer=env.queue_id, session=s
                    )
                    if dsn is not None
                    else None
                )
        except LeaseLost:
            return  # another worker holds these recipients now and will conclude
        extra = {"dsn_error": dsn_error} if dsn_error is not None else {}
        for job, st in failed:
            await self._audit(
                AuditEvent.QUEUE_FAILED, env, rcpt=job.recipient, status=st.status, reason=st.diagnostic, **extra
            )
        if dsn_id is not None:
            await self._audit(
                AuditEvent.QUEUE_DSN_SENT,
                env,
                to=env.sender,
                dsn_queue_id=dsn_id,
                rcpts=[j.recipient for j, _ in failed],
            )
            self.wake()

    async def _deliver_local(self, job: Job, body: bytes) -> Result:
        state = await self.node.mailboxes.state(job.recipient)
        if state is None or not state.local:
            return Result(job.recipient, False, True, "5.1.1", "smtp; 550 5.1.1 no such mailbox")
        if not state.active:
            return Result(job.recipient, False, True, "5.2.1", "smtp; 550 5.2.1 mailbox disabled")
        env = job.envelope
        dispatched = self._dispatched(job.recipient, env)
        mdn_id = None
        try:
            async with self.node.db.raw_writing() as s:
                delivered = await self.mailstore.deliver_checked(
                    s, job.recipient, body, env.header_message_id, env.receipt, sender=env.sender
                )
                await self.queue.settle(s, job, "delivered")
                if delivered is not None and dispatched is not None:
                    mdn_id = await self.queue.enqueue_notice(
                        source="mdn",
                        to=env.sender,
                        body=dispatched,
                        local_domains=self.local,
                        peer=env.queue_id,
                        session=s,
                    )
        except LeaseLost:  # rolled back: the worker that holds the lease now delivers it, once
            return Result(job.recipient, True)
        except QuotaExceeded as exc:
            if exc.larger:  # RFC 3463 X.2.3: no room the owner makes will let it in; bounced now, saying so
                return Result(
                    job.recipient, False, True, "5.2.3", "smtp; 552 5.2.3 message larger than the mailbox quota"
                )
            # RFC 3463 X.2.2: temporary, the owner may make room before the message expires
            return Result(job.recipient, False, False, "4.2.2", "smtp; 452 4.2.2 mailbox full")
        if delivered is None:  # a peer's message this mailbox already got: settled, stored once
            await self._audit(AuditEvent.QUEUE_DUPLICATE, env, rcpt=job.recipient, message_id=env.header_message_id)
            return Result(job.recipient, True)
        self.node.notices.publish(job.recipient)
        await self._audit(
            AuditEvent.QUEUE_DELIVERED,
            env,
            rcpt=job.recipient,
            folder=delivered.folder,
            uid=delivered.uid,
            message_id=env.header_message_id,
        )
        if mdn_id is not None:
            await self._audit(
                AuditEvent.MDN_QUEUED, env, rcpt=job.recipient, mdn_queue_ids=[mdn_id], to=env.sender, dispatched=True
            )
            self.wake()
        return Result(job.recipient, True)

    def _dispatched(self, recipient: str, env: Envelope) -> bytes | None:
        """The dispatched MDN a peer's message gets once in `recipient`'s mailbox, when its sender asked for
        it (`final_notice`, decided when it came: the relay handler's `_mdns`); None otherwise, or when no MDN
        can quote it."""
        if env.source != "relay" or not env.final_notice or not self.cfg.queue.send_mdn:
            return None
        if not env.sender or env.header_message_id is None:
            return None
        try:
            return mdn.build_mdn(
                reporting_ua=self.cfg.smtp_hostname,
                recipient=recipient,
                to=env.sender,
                original_message_id=env.header_message_id,
                disposition="dispatched",
                message_id_domain=self.cfg.node.domain,
            )
        except ValueError as exc:
            self._log.warning("mdn not built", queue_id=env.queue_id, error=str(exc)[:200])
            return None

    async def _track(self, env: Envelope, jobs: Sequence[Job], body: bytes) -> None:
        """Wait for the notices of a message of ours just relayed (gateway.queue.notices); not for a
        notification or an automatic message (no notice answers those) nor a message without a Message-ID an
        MDN can quote."""
        if env.source in ("dsn", "mdn") or not env.sender or not needs_dsn(env.sender):
            return
        fields = mdn.head(body)  # parsed once for both questions
        if env.header_message_id is None or not jobs or mdn.automatic(fields):
            return  # a read receipt or an automatic reply: the peer answers it with no notice
        try:
            mdn.check_message_id(env.header_message_id)
        except ValueError:
            return
        final = mdn.wants_final_delivery(mdn.header_value(fields, "Disposition-Notification-Options"))
        await self.node.tracking.track(
            sender=env.sender,
            message_id=env.header_message_id,
            recipients=[j.recipient for j in jobs],
            queue_id=env.queue_id,
            final_delivery=final,
            wait=self.cfg.queue.notice_timeout_delta,
        )
        await self._audit(
            AuditEvent.NOTICE_TRACKED,
            env,
            rcpts=[j.recipient for j in jobs],
            message_id=env.header_message_id,
            final_delivery=final,
        )

    async def _protect(self, domain: str, env: Envelope, jobs: Sequence[Job], body: bytes) -> Protected | list[Result]:
        """Sign and encrypt for the peer (gateway.smime.outbound); every refusal audited with its reason."""
        assert self.smime is not None
        try:
            protected = await self.smime.protect(
                body, sender=env.sender, recipients=[j.recipient for j in jobs], domain=domain
            )
        except CmsError as exc:  # our own key or certificate cannot sign: nothing the sender can change
            text = f"cannot sign or encrypt the message ({exc.reason}: {exc})"
            await self._audit(AuditEvent.SMIME_REFUSED, env, result="refused", reason=exc.reason, domain=domain)
            return [Result(j.recipient, False, True, "5.7.5", f"smtp; 550 5.7.5 {text}") for j in jobs]
        for refused in protected.refused:
            await self._audit(
                AuditEvent.SMIME_RECIPIENT_REFUSED,
                env,
                result="refused",
                rcpt=refused.recipient,
                status=refused.status,
                reason=refused.diagnostic,
            )
        if protected.message is not None:
            await self._audit(
                AuditEvent.SMIME_PROTECTED,
                env,
                result="done",
                rcpts=protected.recipients,
                signer_serial=protected.signer_serial,
                size=len(protected.message),
            )
        return protected

    async def _relay(self, domain: str, env: Envelope, jobs: Sequence[Job], body: bytes) -> list[Result]:
        if self.relay is None:
            return [Result(j.recipient, False, False, "4.4.1", "smtp; 451 4.4.1 no relay configured") for j in jobs]
        early: dict[str, Result] = {}  # recipients S/MIME could not protect for
        going, message = list(jobs), body
        if self.smime is not None:
            protected = await self._protect(domain, env, jobs, body)
            if isinstance(protected, list):
                return protected
            for refused in protected.refused:
                code = 550 if refused.permanent else 451
                early[refused.recipient] = Result(
                    refused.recipient,
                    False,
                    refused.permanent,
                    refused.status,
                    f"smtp; {code} {refused.status} {refused.diagnostic}",
                )
            going = [j for j in jobs if j.recipient not in early]
            message = protected.message or b""
        results: list[Result] = []
        if going:
            limit = self._domain_limits.setdefault(domain, asyncio.Semaphore(self.cfg.queue.domain_concurrency))
            async with limit:
                results = await self.relay(domain, env, going, message)
        relayed = {job.recipient: res for job, res in zip(going, results, strict=True)}
        results = [early.get(j.recipient) or relayed[j.recipient] for j in jobs]
        # Tracked before the relay is recorded: a crash in between relays again, and the tracking stays one row.
        await self._track(env, [j for j, res in zip(jobs, results, strict=True) if res.ok], body)
        for job, res in zip(jobs, results, strict=True):
            if res.ok:
                with contextlib.suppress(LeaseLost):  # already relayed: the other worker's retry is the duplicate
                    await self.queue.mark(job, "relayed")
                await self._audit(AuditEvent.QUEUE_RELAYED, env, rcpt=job.recipient, remote_mta=res.remote_mta)
        return results
