"""`mssgw queue ...`: messages accepted and not yet delivered to every recipient.

Only envelopes and delivery states are shown, never a body: the queue holds health data.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from gateway.audit.events import AuditEvent
from gateway.cli.base import Command, Context, Outcome, table
from gateway.cli.mailbox import local_address
from gateway.errors import UsageError
from gateway.queue.notices import Notices
from gateway.queue.store import Queue
from gateway.store.models import utcnow

ERROR_WIDTH = 60
"""Last errors longer than this are cut in the text tables (`--json` has them whole)."""


def _queue(ctx: Context) -> Queue:
    return Queue(ctx.node.db, ctx.node.kek)


def _id(args: argparse.Namespace) -> str:
    return str(args.id).strip().lower()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _span(seconds: float) -> str:
    """A duration in its largest whole unit: 45s, 12m, 3h, 2d."""
    s = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def _next_attempt(status: str, when: datetime, now: datetime) -> str:
    if status != "pending":
        return ""
    delay = (when - now).total_seconds()
    return "due" if delay <= 0 else f"in {_span(delay)}"


def _error(text: str | None) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= ERROR_WIDTH else text[: ERROR_WIDTH - 1] + "…"


def _sender(sender: str) -> str:
    return sender or "<>"


async def list_(ctx: Context, args: argparse.Namespace) -> Outcome:
    messages = await _queue(ctx).list()
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for m in messages:
        for i, r in enumerate(m["recipients"]):
            first = i == 0
            rows.append(
                {
                    "id": m["id"] if first else "",
                    "age": _span((now - datetime.fromisoformat(m["created_at"])).total_seconds()) if first else "",
                    "sender": _sender(m["sender"]) if first else "",
                    "size": m["size"] if first else "",
                    "recipient": r["recipient"],
                    "status": r["status"],
                    "attempts": r["attempts"],
                    "next_attempt": _next_attempt(r["status"], datetime.fromisoformat(r["next_attempt_at"]), now),
                    "last_error": _error(r["last_error"]),
                }
            )
    columns = ["id", "age", "sender", "size", "recipient", "status", "attempts", "next_attempt", "last_error"]
    return Outcome(messages, table(rows, columns), audit={"results": len(messages)})


async def show(ctx: Context, args: argparse.Namespace) -> Outcome:
    queue = _queue(ctx)
    env = await queue.envelope(_id(args))
    recipients = await queue.recipients(env.queue_id)
    data: dict[str, Any] = {
        "id": env.queue_id,
        "source": env.source,
        "sender": env.sender,
        "principal": env.principal,
        "peer": env.peer,
        "header_message_id": env.header_message_id,
        "size": env.size,
        "created_at": env.created_at.isoformat(),
        "recipients": [
            {
                "recipient": r.recipient,
                "domain": r.domain,
                "local": r.local,
                "status": r.status,
                "attempts": r.attempts,
                "next_attempt_at": r.next_attempt_at.isoformat(),
                "last_error": r.last_error,
                "lease_owner": r.lease_owner,
                "lease_until": r.lease_until.isoformat() if r.lease_until else None,
                "updated_at": r.updated_at.isoformat(),
            }
            for r in recipients
        ],
    }
    now = utcnow()
    lines = [
        f"id: {env.queue_id}",
        f"source: {env.source}",
        f"sender: {_sender(env.sender)}",
        f"principal: {env.principal or ''}",
        f"peer: {env.peer or ''}",
        f"message-id: {env.header_message_id or ''}",
        f"size: {env.size}",
        f"created: {env.created_at.isoformat()} ({_span((now - env.created_at).total_seconds())} ago)",
        "recipients:",
    ]
    rows = [
        {
            "recipient": r.recipient,
            "local": "yes" if r.local else "no",
            "status": r.status,
            "attempts": r.attempts,
            "next_attempt": _next_attempt(r.status, r.next_attempt_at, now),
            "leased_by": r.lease_owner if r.lease_until is not None and r.lease_until > now else "",
            "last_error": _error(r.last_error),
        }
        for r in recipients
    ]
    lines.append(table(rows, ["recipient", "local", "status", "attempts", "next_attempt", "leased_by", "last_error"]))
    return Outcome(
        data,
        "\n".join(lines).rstrip(),
        audit={"id": env.queue_id, "recipients": len(recipients)},
    )


async def retry(ctx: Context, args: argparse.Namespace) -> Outcome:
    queue_id = _id(args)
    due = await _queue(ctx).retry_now(queue_id)
    text = f"{queue_id}: {_plural(due, 'pending recipient')} due now" if due else f"{queue_id}: no pending recipient"
    return Outcome({"id": queue_id, "due_now": due}, text, audit={"id": queue_id, "due_now": due})


async def delete(ctx: Context, args: argparse.Namespace) -> Outcome:
    queue_id = _id(args)
    if not args.yes:
        raise UsageError(
            f"deleting queued message {queue_id} abandons its pending recipients without a DSN: add --yes to confirm"
        )
    pending = await _queue(ctx).delete(queue_id)
    text = f"{queue_id} deleted from the queue ({_plural(pending, 'pending recipient')} abandoned, no DSN sent)"
    return Outcome(
        {"id": queue_id, "deleted": True, "pending_abandoned": pending},
        text,
        audit={"id": queue_id, "pending_abandoned": pending},
    )


NOTICES_MAX = 10_000
"""Most tracked rows `mssgw queue notices` shows at once."""


def _message_id(value: str) -> str:
    """A Message-ID as tracked: `<left@right>`; the brackets may be left out on the command line."""
    text = value.strip()
    inner = text[1:-1] if text.startswith("<") and text.endswith(">") else text
    if not inner or any(c.isspace() or c in "<>" for c in inner) or not inner.isprintable():
        raise UsageError(f"invalid Message-ID {value!r}: expected <left@right> without spaces")
    return f"<{inner}>"


def _notice_deadline(state: str, deadline: datetime, now: datetime) -> str:
    if state == "done":
        return ""
    left = (deadline - now).total_seconds()
    return f"in {_span(left)}" if left > 0 else f"overdue {_span(-left)}"


async def notices(ctx: Context, args: argparse.Namespace) -> Outcome:
    """Messages relayed to peers and their delivery notifications, per recipient (gateway.queue.notices)."""
    if not 1 <= args.limit <= NOTICES_MAX:
        raise UsageError(f"--limit must be between 1 and {NOTICES_MAX}")
    sender = local_address(ctx, args.sender) if args.sender is not None else None
    message_id = _message_id(args.message_id) if args.message_id is not None else None
    tracking = Notices(ctx.node.db)
    found = await tracking.find(sender=sender, message_id=message_id, waiting=args.waiting, limit=args.limit)
    now = utcnow()
    data = [
        {
            "sender": t.sender,
            "message_id": t.message_id,
            "recipient": t.recipient,
            "queue_id": t.queue_id,
            "dispatched_asked": t.final_delivery,
            "state": t.state,
            "outcome": t.outcome,
            "deadline": t.deadline.isoformat(),
            "created_at": t.created_at.isoformat(),
            "settled_at": t.settled_at.isoformat() if t.settled_at else None,
        }
        for t in found
    ]
    rows = [
        {
            "age": _span((now - t.created_at).total_seconds()),
            "sender": t.sender,
            "message_id": t.message_id,
            "recipient": t.recipient,
            "state": t.state,
            "outcome": t.outcome or "",
            "deadline": _notice_deadline(t.state, t.deadline, now),
        }
        for t in found
    ]
    columns = ["age", "sender", "message_id", "recipient", "state", "outcome", "deadline"]
    return Outcome(data, table(rows, columns), audit={"results": len(found)})


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    grp = sub.add_parser("queue", help="the delivery queue").add_subparsers(required=True, metavar="ACTION")
    p = grp.add_parser("list", parents=[common], help="queued messages and their recipients' states")
    p.set_defaults(_command=Command(AuditEvent.QUEUE_LISTED, list_))
    p = grp.add_parser("show", parents=[common], help="one queued message's envelope and recipients (never its body)")
    p.add_argument("id", help="queue id (from `mssgw queue list`)")
    p.set_defaults(_command=Command(AuditEvent.QUEUE_SHOWN, show))
    p = grp.add_parser("retry", parents=[common], help="make a message's pending recipients due now")
    p.add_argument("id", help="queue id")
    p.set_defaults(_command=Command(AuditEvent.QUEUE_RETRIED, retry))
    p = grp.add_parser("delete", parents=[common], help="remove a message from the queue (no delivery, no DSN)")
    p.add_argument("id", help="queue id")
    p.add_argument("--yes", action="store_true", help="confirm")
    p.set_defaults(_command=Command(AuditEvent.QUEUE_DELETED, delete))
    p = grp.add_parser(
        "notices", parents=[common], help="messages relayed to peers and their delivery notifications, newest first"
    )
    p.add_argument("--sender", help="only this sender's messages")
    p.add_argument("--message-id", help="only this Message-ID (angle brackets optional)")
    p.add_argument("--waiting", action="store_true", help="only recipients still waiting for their final notice")
    p.add_argument("--limit", type=int, default=100, help=f"at most this many rows (1-{NOTICES_MAX}, default 100)")
    p.set_defaults(_command=Command(AuditEvent.QUEUE_NOTICES_LISTED, notices))
