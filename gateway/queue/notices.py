"""Implementation notes: the sending side of delivery notifications (domain brief §7): each message relayed
to a peer is tracked per recipient until its sender has had exactly one final notice.

- `track` records (sender, Message-ID, recipient) when the worker relays a message of one of our users, with a
  deadline `[queue] notice_timeout` away (Direct's reference implementation waits one hour) and whether the
  sender asked for the dispatched MDN (`Disposition-Notification-Options`, gateway.queue.mdn). The same
  message relayed twice (a lease lost, another node relaying it again) leaves its row as it is. Another
  message sent with that Message-ID (a client sending it again after the timeout DSN or a failure) starts
  a row settled by `timeout` or `failed` over: waiting, with its own deadline. A row still waiting, or
  settled by a positive notice, stays: the sender had that notice, and a peer that drops the copy as a
  duplicate would send no other (a timeout DSN for a delivered message). The timeout sweep settles a row
  only while it is still the one it read (queue id, deadline passed).
- A peer's notification (gateway.queue.mdn.read_report) is judged per recipient by `judge`:
  * processed: final when the dispatched MDN was not asked for; otherwise it only moves the row on, and the
    sender is not told (the dispatched MDN, or the timeout, will be the final notice);
  * dispatched, or a DSN's delivered/relayed/expanded: final, positive;
  * failed (an MDN's failed type, error modifier, deleted or denied; a DSN's failed): final, negative;
  * a DSN's delayed: not final, not given (the sender would get two notices);
  * a row already settled: late or a duplicate, dropped (audited); but a failure after a final processed MDN
    is given: processed said the peer's operator took the message, the failure says it never reached the
    mailbox (a quota, a mailbox closed meanwhile), and the sender must not be left believing it arrived;
  * displayed (a person's read receipt) or anything unknown, or a message we do not track, or an outcome
    for a recipient outside the reporting peer's domains (`foreign`: it settles nothing): delivered as it
    came. A notification is never dropped unless this table says its sender already had one.
- The final notice and the row's settlement commit together: the row is settled inside the transaction that
  stores the notice (a conditional UPDATE, so two nodes taking two notices for one message at once give one).
- `due` lists rows past their deadline; the worker settles each as `timeout` and queues a failure DSN to the
  sender in the same transaction.
- Rows are forgotten `[smtp] duplicate_window` after they were created (default 7 days), with the receipts.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from gateway.queue.mdn import Outcome, Report
from gateway.store.db import Database, Statements, bound_list, utc_datetime
from gateway.store.models import utcnow

Verdict = Literal["given", "intermediate", "late", "passthrough", "untracked", "foreign", "quiet"]
POSITIVE: tuple[Outcome, ...] = ("processed", "dispatched", "delivered")

_TRACK = (
    "INSERT INTO notice_tracking (sender, message_id, recipient, queue_id, final_delivery, state, deadline,"
    " created_at) VALUES (:sender, :message_id, :recipient, :queue_id, :final_delivery, 'waiting', :deadline,"
    " :now) ON CONFLICT (sender, message_id, recipient) DO UPDATE SET queue_id = excluded.queue_id,"
    " final_delivery = excluded.final_delivery, state = 'waiting', outcome = NULL, deadline = excluded.deadline,"
    " created_at = excluded.created_at, settled_at = NULL WHERE notice_tracking.queue_id <> excluded.queue_id"
    " AND notice_tracking.state = 'done' AND notice_tracking.outcome IN ('timeout', 'failed')"
)
_COLUMNS = (
    "id, sender, message_id, recipient, queue_id, final_delivery, state, outcome, deadline, created_at, settled_at"
)
_TIMEOUT = (
    "UPDATE notice_tracking SET state = 'done', outcome = 'timeout', settled_at = :now WHERE id = :id"
    " AND state = :expected AND coalesce(outcome, '') = :expected_outcome AND queue_id = :queue_id"
    " AND deadline < :now RETURNING id"
)
_SETTLE = (
    "UPDATE notice_tracking SET state = :state, outcome = coalesce(:outcome, outcome),"
    " settled_at = coalesce(:settled, settled_at) WHERE id = :id AND state = :expected"
    " AND coalesce(outcome, '') = :expected_outcome"
    " RETURNING id"
)


@dataclass(frozen=True)
class Tracked:
    id: int
    sender: str
    message_id: str
    recipient: str
    queue_id: str
    final_delivery: bool
    state: str
    outcome: str | None
    deadline: datetime
    created_at: datetime
    settled_at: datetime | None = None


@dataclass(frozen=True)
class Change:
    """One row moved by a notice: from `expected` to `state`, `outcome` recorded when it is final."""

    id: int
    expected: str
    state: str
    outcome: str | None
    expected_outcome: str | None = None


@dataclass
class Plan:
    """What to do with a peer's notification: deliver it or not, the rows it moves, and each recipient's
    verdict (for the audit record)."""

    deliver: bool
    changes: list[Change] = field(default_factory=list)
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    original_message_id: str | None = None


class Raced(Exception):
    """Another node settled a row this notice was to settle: it is late after all."""


def judge(state: str, settled_by: str | None, final_delivery: bool, outcome: Outcome) -> tuple[Verdict, str | None]:
    """The verdict on one recipient's outcome for a tracked row in `state` (settled by the outcome
    `settled_by`, if done), and the row's next state."""
    if outcome in ("displayed", "other"):
        return "passthrough", None
    if state == "done":
        if settled_by == "processed" and outcome == "failed":
            return "given", "done"  # a correction: processed only said the peer took it, not that it arrived
        return "late", None
    if outcome == "delayed":
        return "intermediate", None
    if outcome == "processed" and final_delivery:
        return ("intermediate", "processed") if state == "waiting" else ("late", None)
    return "given", "done"


class Notices:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def track(
        self,
        *,
        sender: str,
        message_id: str,
        recipients: Sequence[str],
        queue_id: str,
        final_delivery: bool,
        wait: timedelta,
        now: datetime | None = None,
    ) -> None:
        """Start waiting for the recipients' notices (a row already there stays, but for another message
        with that Message-ID after a timeout or a failure: it starts over, module notes)."""
        if not recipients:
            return  # nothing relayed (and an empty executemany is an error on PostgreSQL)
        now = now or utcnow()
        async with self.db.raw_writing() as tx:
            await tx.execute(
                _TRACK,
                [
                    {
                        "sender": sender.lower(),
                        "message_id": message_id,
                        "recipient": r.lower(),
                        "queue_id": queue_id,
                        "final_delivery": final_delivery,
                        "deadline": now + wait,
                        "now": now,
                    }
                    for r in recipients
                ],
            )

    async def _rows(self, where: str, params: dict[str, object]) -> list[Tracked]:
        rows = await self.db.rows(
            f"SELECT {_COLUMNS} FROM notice_tracking WHERE {where}",  # noqa: S608 (this module's clauses; values bound)
            params,
        )
        return [
            Tracked(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                bool(r[5]),
                r[6],
                r[7],
                utc_datetime(r[8]),
                utc_datetime(r[9]),
                None if r[10] is None else utc_datetime(r[10]),
            )
            for r in rows
        ]

    async def plan(
        self, report: Report, senders: Sequence[str], peer_domains: Collection[str], quiet: Collection[str] = ()
    ) -> Plan:
        """How to treat `report`, a notification addressed to `senders` (the envelope's local recipients) by the
        peer serving `peer_domains`. A peer reports on its own recipients only: an outcome for another
        operator's recipient (a peer that got the same message, trying to settle or silence that operator's
        notice) moves nothing, and the report is delivered as it came. Senders in the `quiet` domains (the
        patients': their web inbox shows the conversation, not receipts) are given failures only: a positive
        notice settles their row as for anyone, and is not delivered (`quiet`)."""
        quiet_senders = bool(senders) and all(s.rpartition("@")[2].lower() in quiet for s in senders)
        domains = {d.lower().rstrip(".") for d in peer_domains}
        recipients = [r for r, _ in report.outcomes if r.rpartition("@")[2] in domains]
        smarks, sparams = bound_list("s", [s.lower() for s in senders])
        rmarks, rparams = bound_list("r", recipients)
        rows = (
            await self._rows(
                f"message_id = :mid AND sender IN ({smarks}) AND recipient IN ({rmarks})",
                {"mid": report.original_message_id, **sparams, **rparams},
            )
            if recipients and senders
            else []
        )
        plan = Plan(deliver=False, original_message_id=report.original_message_id)
        for recipient, outcome in report.outcomes:
            if recipient not in recipients:
                plan.verdicts[recipient] = "foreign"
                plan.deliver = True
                continue
            tracked = [row for row in rows if row.recipient == recipient]
            if not tracked:
                verdict: Verdict = "passthrough" if outcome in ("displayed", "other") else "untracked"
                if verdict == "untracked" and quiet_senders and outcome in POSITIVE:
                    verdict = "quiet"
                plan.verdicts[recipient] = verdict
                plan.deliver = plan.deliver or verdict != "quiet"
                continue
            for row in tracked:
                verdict, state = judge(row.state, row.outcome, row.final_delivery, outcome)
                if verdict == "given" and outcome in POSITIVE and row.sender.rpartition("@")[2] in quiet:
                    verdict = "quiet"
                plan.verdicts[recipient] = verdict
                if verdict in ("given", "passthrough"):
                    plan.deliver = True
                if state is not None:
                    plan.changes.append(
                        Change(row.id, row.state, state, outcome if state == "done" else None, row.outcome)
                    )
        return plan

    async def apply(self, tx: AsyncSession | Statements, plan: Plan, now: datetime | None = None) -> None:
        """Move the plan's rows within `tx`; Raced when one was moved meanwhile (by another node)."""
        now = now or utcnow()
        async with self.db.joined(tx) as t:
            for change in plan.changes:
                moved = await t.execute(
                    _SETTLE,
                    {
                        "id": change.id,
                        "expected": change.expected,
                        "expected_outcome": change.expected_outcome or "",
                        "state": change.state,
                        "outcome": change.outcome,
                        "settled": now if change.state == "done" else None,
                    },
                )
                if not moved:
                    raise Raced(change.id)

    async def settle_timeout(self, tx: AsyncSession | Statements, row: Tracked, now: datetime | None = None) -> bool:
        """Settle `row` as timed out within `tx`; False when a notice settled it first, or it was started
        over since it was read (a message sent again with its Message-ID)."""
        params = {
            "id": row.id,
            "expected": row.state,
            "expected_outcome": row.outcome or "",
            "queue_id": row.queue_id,
            "now": now or utcnow(),
        }
        async with self.db.joined(tx) as t:
            return bool(await t.execute(_TIMEOUT, params))

    async def due(self, now: datetime | None = None, limit: int = 100) -> list[Tracked]:
        """Rows whose deadline passed without a final notice, oldest deadline first."""
        return await self._rows(
            "state IN ('waiting', 'processed') AND deadline < :now ORDER BY deadline, id LIMIT :limit",
            {"now": now or utcnow(), "limit": limit},
        )

    async def prune(self, before: datetime) -> int:
        """Forget rows created before `before`; how many."""
        async with self.db.raw_writing() as tx:
            gone = await tx.execute(
                "DELETE FROM notice_tracking WHERE created_at < :before RETURNING 1", {"before": before}
            )
            return len(gone)

    async def find(
        self,
        *,
        sender: str | None = None,
        message_id: str | None = None,
        waiting: bool = False,
        limit: int = 100,
    ) -> list[Tracked]:
        """Tracked rows for an operator's look (`mssgw queue notices`), newest first: of one sender, one
        Message-ID, still waiting for their final notice (`waiting`), at most `limit`."""
        clauses = ["1 = 1"]
        params: dict[str, object] = {"limit": limit}
        if sender is not None:
            clauses.append("sender = :sender")
            params["sender"] = sender.lower()
        if message_id is not None:
            clauses.append("message_id = :mid")
            params["mid"] = message_id
        if waiting:
            clauses.append("state IN ('waiting', 'processed')")
        where = " AND ".join(clauses)
        return await self._rows(f"{where} ORDER BY created_at DESC, id DESC LIMIT :limit", params)

    async def state(self, sender: str, message_id: str, recipient: str) -> tuple[str, str | None] | None:
        """(state, outcome) of one tracked row (tests, and an operator's look from Python)."""
        rows = await self.db.rows(
            "SELECT state, outcome FROM notice_tracking WHERE sender = :s AND message_id = :m AND recipient = :r",
            {"s": sender.lower(), "m": message_id, "r": recipient.lower()},
        )
        return (rows[0][0], rows[0][1]) if rows else None
