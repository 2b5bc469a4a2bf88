"""`mssgw queue list|show|retry|delete` as a subprocess, on messages queued for a peer that is not running."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import update

from gateway.node import Node
from gateway.queue.mdn import Outcome, Report
from gateway.queue.notices import Notices
from gateway.queue.store import Queue
from gateway.store.models import QueuedMessage, QueuedRecipient, TrackedNotice
from tests.conftest import DOMAIN, CLIResult, NodeDir

T = TypeVar("T")

SENDER = f"claire.martin@{DOMAIN}"
REMOTE = ["bob@clinique-b.mssante.fr", "carol@clinique-b.mssante.fr"]
MESSAGE_ID = f"<20250602.abc@{DOMAIN}>"
MARKER = "CORPS-CONFIDENTIEL-7f3a9c"
BODY = (
    f"From: {SENDER}\r\nTo: bob@clinique-b.mssante.fr\r\nMessage-ID: {MESSAGE_ID}\r\n"
    f"Subject: compte rendu\r\n\r\nPatient DUPONT : {MARKER}\r\n"
).encode()
ERROR = "421 4.4.2 mx.clinique-b.mssante.fr: connection timed out"
UNKNOWN = "0123456789abcdef0123456789abcdef"


def on_node(node: NodeDir, fn: Callable[[Node], Awaitable[T]]) -> T:
    async def run() -> T:
        async with Node(node.cfg()) as n:
            return await fn(n)

    return asyncio.run(run())


def enqueue(node: NodeDir, recipients: list[str] = REMOTE) -> str:
    async def go(n: Node) -> str:
        return await Queue(n.db, n.kek).enqueue(
            source="submission",
            sender=SENDER,
            recipients=recipients,
            body=BODY,
            local_domains=n.cfg.node.local_domains,
            principal=SENDER,
            header_message_id=MESSAGE_ID,
        )

    return on_node(node, go)


def set_message(node: NodeDir, queue_id: str, **values: Any) -> None:
    async def go(n: Node) -> None:
        async with n.db.write() as s:
            await s.execute(update(QueuedMessage).where(QueuedMessage.id == queue_id).values(**values))

    on_node(node, go)


def set_recipient(node: NodeDir, recipient: str, **values: Any) -> None:
    async def go(n: Node) -> None:
        async with n.db.write() as s:
            await s.execute(update(QueuedRecipient).where(QueuedRecipient.recipient == recipient).values(**values))

    on_node(node, go)


def db_rows(node: NodeDir, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(node.data / "mssgw.db") as conn:
        return conn.execute(sql).fetchall()


def next_attempts(node: NodeDir, queue_id: str) -> dict[str, datetime]:
    async def go(n: Node) -> dict[str, datetime]:
        return {r.recipient: r.next_attempt_at for r in await Queue(n.db, n.kek).recipients(queue_id)}

    return on_node(node, go)


def queue_audit(node: NodeDir) -> list[tuple[str, str, str]]:
    rows = node.cli("audit", "search", "--event", "admin.queue.", "--json").json()
    assert isinstance(rows, list)
    return [(r["action"], r["request"].get("id", ""), r["response"]["result"]) for r in rows]


def assert_no_body(*results: CLIResult) -> None:
    for r in results:
        assert MARKER not in r.out
        assert MARKER not in r.err
        assert "DUPONT" not in r.out + r.err


def test_empty_queue(node: NodeDir) -> None:
    r = node.cli("queue", "list")
    assert (r.code, r.out, r.err) == (0, "(none)\n", "")
    assert node.cli("queue", "list", "--json").json() == []
    assert queue_audit(node) == [("admin.queue.listed", "", "done")] * 2


def test_a_queued_message_is_listed_and_shown_without_its_body(node: NodeDir) -> None:
    queue_id = enqueue(node)
    assert len(BODY) == 187
    now = datetime.now(UTC).replace(microsecond=0)
    created = now - timedelta(hours=3, seconds=30)
    later = now + timedelta(hours=2, minutes=1)
    updated = now - timedelta(minutes=5)
    set_message(node, queue_id, created_at=created)
    set_recipient(node, REMOTE[0], attempts=2, last_error=ERROR, next_attempt_at=later, updated_at=updated)
    set_recipient(node, REMOTE[1], next_attempt_at=created, updated_at=created)

    listed = node.cli("queue", "list")
    assert listed.code == 0, listed.err
    assert listed.out.splitlines() == [
        f"{'id':32}  age  sender                            size  recipient                    status   attempts"
        "  next_attempt  last_error",
        f"{queue_id}  3h   {SENDER}  187   {REMOTE[0]}    pending  2         in 2h         {ERROR}",
        f"{'':32}                                               {REMOTE[1]}  pending  0         due",
    ]
    as_json = node.cli("queue", "list", "--json")
    assert as_json.json() == [
        {
            "id": queue_id,
            "source": "submission",
            "sender": SENDER,
            "size": len(BODY),
            "created_at": created.isoformat(),
            "recipients": [
                {
                    "recipient": REMOTE[0],
                    "status": "pending",
                    "attempts": 2,
                    "next_attempt_at": later.isoformat(),
                    "last_error": ERROR,
                },
                {
                    "recipient": REMOTE[1],
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": created.isoformat(),
                    "last_error": None,
                },
            ],
        }
    ]

    shown = node.cli("queue", "show", queue_id.upper(), "--json")
    assert shown.code == 0, shown.err
    assert shown.json() == {
        "id": queue_id,
        "source": "submission",
        "sender": SENDER,
        "principal": SENDER,
        "peer": None,
        "header_message_id": MESSAGE_ID,
        "size": len(BODY),
        "created_at": created.isoformat(),
        "recipients": [
            {
                "recipient": REMOTE[0],
                "domain": "clinique-b.mssante.fr",
                "local": False,
                "status": "pending",
                "attempts": 2,
                "next_attempt_at": later.isoformat(),
                "last_error": ERROR,
                "lease_owner": None,
                "lease_until": None,
                "updated_at": updated.isoformat(),
            },
            {
                "recipient": REMOTE[1],
                "domain": "clinique-b.mssante.fr",
                "local": False,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": created.isoformat(),
                "last_error": None,
                "lease_owner": None,
                "lease_until": None,
                "updated_at": created.isoformat(),
            },
        ],
    }
    text = node.cli("queue", "show", queue_id)
    assert text.out.splitlines() == [
        f"id: {queue_id}",
        "source: submission",
        f"sender: {SENDER}",
        f"principal: {SENDER}",
        "peer: ",
        f"message-id: {MESSAGE_ID}",
        f"size: {len(BODY)}",
        f"created: {created.isoformat()} (3h ago)",
        "recipients:",
        "recipient                    local  status   attempts  next_attempt  leased_by  last_error",
        f"{REMOTE[0]}    no     pending  2         in 2h                    {ERROR}",
        f"{REMOTE[1]}  no     pending  0         due",
    ]
    assert_no_body(listed, as_json, shown, text)
    assert queue_audit(node) == [
        ("admin.queue.listed", "", "done"),
        ("admin.queue.listed", "", "done"),
        ("admin.queue.shown", queue_id.upper(), "done"),
        ("admin.queue.shown", queue_id, "done"),
    ]


def test_a_long_error_is_cut_in_the_table_and_whole_in_json(node: NodeDir) -> None:
    queue_id = enqueue(node, REMOTE[:1])
    long_error = "451 4.7.0 " + "x" * 200
    set_recipient(node, REMOTE[0], last_error=long_error + "\r\n")
    r = node.cli("queue", "list")
    assert r.out.splitlines()[1].endswith("  451 4.7.0 " + "x" * 49 + "…")
    assert node.cli("queue", "show", queue_id, "--json").json()["recipients"][0]["last_error"] == (  # type: ignore[index]
        long_error + "\r\n"
    )


def test_retry_makes_pending_recipients_due_now(node: NodeDir) -> None:
    queue_id = enqueue(node, [*REMOTE, f"dave@{DOMAIN}"])
    later = datetime.now(UTC) + timedelta(hours=1)
    set_recipient(node, REMOTE[0], next_attempt_at=later, attempts=1, last_error=ERROR)
    set_recipient(node, REMOTE[1], next_attempt_at=later, attempts=1, lease_owner="w1", lease_until=later)
    set_recipient(node, f"dave@{DOMAIN}", status="delivered", next_attempt_at=later)

    before = datetime.now(UTC)
    r = node.cli("queue", "retry", queue_id)
    after = datetime.now(UTC)
    assert (r.code, r.out, r.err) == (0, f"{queue_id}: 2 pending recipients due now\n", "")
    due = next_attempts(node, queue_id)
    assert before <= due[REMOTE[0]] <= after
    assert before <= due[REMOTE[1]] <= after
    assert due[f"dave@{DOMAIN}"] == later  # a final recipient is left alone
    # A lease held is a worker delivering now: it stays its own, or the recipient would be sent twice.
    assert db_rows(node, "SELECT recipient, lease_owner FROM queue_recipients WHERE lease_owner IS NOT NULL") == [
        (REMOTE[1], "w1")
    ]
    assert db_rows(node, "SELECT recipient, attempts FROM queue_recipients ORDER BY id") == [
        (REMOTE[0], 1),
        (REMOTE[1], 1),
        (f"dave@{DOMAIN}", 0),
    ]
    assert node.cli("queue", "retry", queue_id, "--json").json() == {"id": queue_id, "due_now": 2}
    set_recipient(node, REMOTE[0], status="relayed")
    set_recipient(node, REMOTE[1], status="failed")
    r = node.cli("queue", "retry", queue_id)
    assert r.out == f"{queue_id}: no pending recipient\n"
    assert_no_body(r)
    assert queue_audit(node) == [("admin.queue.retried", queue_id, "done")] * 3


def test_delete_needs_yes_then_removes_the_message_and_its_recipients(node: NodeDir) -> None:
    queue_id = enqueue(node)
    kept = enqueue(node, ["erin@clinique-b.mssante.fr"])
    r = node.cli("queue", "delete", queue_id)
    assert (r.code, r.out) == (2, "")
    assert r.err == (
        f"mssgw: deleting queued message {queue_id} abandons its pending recipients without a DSN:"
        " add --yes to confirm\n"
    )
    assert db_rows(node, "SELECT count(*) FROM queue_recipients") == [(3,)]
    set_recipient(node, REMOTE[1], status="relayed")
    r = node.cli("queue", "delete", queue_id, "--yes")
    assert (r.code, r.out, r.err) == (
        0,
        f"{queue_id} deleted from the queue (1 pending recipient abandoned, no DSN sent)\n",
        "",
    )
    assert db_rows(node, "SELECT id FROM queue_messages") == [(kept,)]
    assert db_rows(node, "SELECT message_id FROM queue_recipients") == [(kept,)]
    r = node.cli("queue", "delete", kept, "--yes", "--json")
    assert r.json() == {"id": kept, "deleted": True, "pending_abandoned": 1}
    assert db_rows(node, "SELECT count(*) FROM queue_messages") == [(0,)]
    assert db_rows(node, "SELECT count(*) FROM queue_recipients") == [(0,)]
    assert node.cli("queue", "list").out == "(none)\n"
    audit = node.cli("audit", "search", "--event", "admin.queue.deleted", "--json")
    assert_no_body(r, audit)
    rows = audit.json()
    assert isinstance(rows, list)
    assert [(row["request"], row["response"]) for row in rows] == [
        (
            {"id": queue_id, "yes": False},
            {
                "result": "refused",
                "reason": f"deleting queued message {queue_id} abandons its pending recipients without a DSN:"
                " add --yes to confirm",
            },
        ),
        ({"id": queue_id, "yes": True}, {"result": "done", "id": queue_id, "pending_abandoned": 1}),
        ({"id": kept, "yes": True}, {"result": "done", "id": kept, "pending_abandoned": 1}),
    ]


def test_unknown_ids_are_refused_and_audited(node: NodeDir) -> None:
    enqueue(node)
    for argv in (["show", UNKNOWN], ["retry", UNKNOWN], ["delete", UNKNOWN, "--yes"], ["show", "nope", "--json"]):
        r = node.cli("queue", *argv)
        assert (r.code, r.out) == (2, ""), argv
        assert r.err == f"mssgw: no queued message {argv[1]}\n", argv
    assert db_rows(node, "SELECT count(*) FROM queue_messages") == [(1,)]
    assert queue_audit(node) == [
        ("admin.queue.shown", UNKNOWN, "refused"),
        ("admin.queue.retried", UNKNOWN, "refused"),
        ("admin.queue.deleted", UNKNOWN, "refused"),
        ("admin.queue.shown", "nope", "refused"),
    ]
    text = node.cli("audit", "search", "--event", "admin.queue.")
    assert [(line.split()[2], line.split()[-1]) for line in text.out.splitlines()[1:]] == [
        ("admin.queue.shown", "refused"),
        ("admin.queue.retried", "refused"),
        ("admin.queue.deleted", "refused"),
        ("admin.queue.shown", "refused"),
    ]


# -- mssgw queue notices: messages relayed to peers and their delivery notifications ----------------------

OTHER_ID = f"<20250601.xyz@{DOMAIN}>"
PEER = "clinique-b.mssante.fr"


def track(node: NodeDir, message_id: str, recipients: list[str], created: datetime, *, dispatched: bool) -> None:
    async def go(n: Node) -> None:
        await Notices(n.db).track(
            sender=SENDER,
            message_id=message_id,
            recipients=recipients,
            queue_id=UNKNOWN,
            final_delivery=dispatched,
            wait=timedelta(hours=1),
            now=created,
        )

    on_node(node, go)


def notice(node: NodeDir, message_id: str, recipient: str, outcome: Outcome, at: datetime) -> None:
    """A peer's MDN about `recipient` judged and applied as the relay handler does (gateway.queue.notices)."""

    async def go(n: Node) -> None:
        tracking = Notices(n.db)
        plan = await tracking.plan(Report("mdn", message_id, ((recipient, outcome),)), [SENDER], [PEER])
        async with n.db.raw_writing() as tx:
            await tracking.apply(tx, plan, at)

    on_node(node, go)


def notices_audit(node: NodeDir) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    rows = node.cli("audit", "search", "--event", "admin.queue.notices_listed", "--json").json()
    assert isinstance(rows, list)
    return [(r["request"], r["response"]) for r in rows]


def test_notices_lists_tracked_recipients_newest_first_and_filters(node: NodeDir) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    recent, old = now - timedelta(minutes=14, seconds=30), now - timedelta(hours=2)  # half-minutes: no rounding edge
    track(node, MESSAGE_ID, REMOTE, recent, dispatched=True)
    track(node, OTHER_ID, REMOTE[:1], old, dispatched=False)
    notice(node, MESSAGE_ID, REMOTE[1], "processed", recent + timedelta(minutes=1))  # dispatched asked: held back
    notice(node, OTHER_ID, REMOTE[0], "dispatched", old + timedelta(minutes=2))
    empty = node.cli("queue", "notices", "--message-id", "none@x")
    assert (empty.code, empty.out, empty.err) == (0, "(none)\n", "")

    listed = node.cli("queue", "notices")
    assert listed.code == 0, listed.err
    assert listed.out.splitlines() == [
        f"age  {'sender':{len(SENDER)}}  {'message_id':{len(MESSAGE_ID)}}  {'recipient':{len(REMOTE[1])}}"
        "  state      outcome     deadline",
        f"14m  {SENDER}  {MESSAGE_ID}  {REMOTE[1]}  processed  {'':10}  in 45m",
        f"14m  {SENDER}  {MESSAGE_ID}  {REMOTE[0]:{len(REMOTE[1])}}  waiting    {'':10}  in 45m",
        f"2h   {SENDER}  {OTHER_ID}  {REMOTE[0]:{len(REMOTE[1])}}  done       dispatched",
    ]
    as_json = node.cli("queue", "notices", "--message-id", OTHER_ID, "--json").json()
    assert as_json == [
        {
            "sender": SENDER,
            "message_id": OTHER_ID,
            "recipient": REMOTE[0],
            "queue_id": UNKNOWN,
            "dispatched_asked": False,
            "state": "done",
            "outcome": "dispatched",
            "deadline": (old + timedelta(hours=1)).isoformat(),
            "created_at": old.isoformat(),
            "settled_at": (old + timedelta(minutes=2)).isoformat(),
        }
    ]
    waiting = node.cli("queue", "notices", "--waiting", "--sender", SENDER.upper(), "--json").json()
    assert isinstance(waiting, list)
    assert [(w["recipient"], w["state"], w["dispatched_asked"]) for w in waiting] == [
        (REMOTE[1], "processed", True),
        (REMOTE[0], "waiting", True),
    ]
    bare = node.cli("queue", "notices", "--message-id", MESSAGE_ID.strip("<>"), "--limit", "1", "--json").json()
    assert isinstance(bare, list)
    assert [(b["message_id"], b["recipient"]) for b in bare] == [(MESSAGE_ID, REMOTE[1])]
    assert node.cli("queue", "notices", "--sender", f"dave@{DOMAIN}").out == "(none)\n"

    async def past_deadline(n: Node) -> None:
        async with n.db.write() as s:
            row = (TrackedNotice.recipient == REMOTE[0]) & (TrackedNotice.message_id == MESSAGE_ID)
            await s.execute(update(TrackedNotice).where(row).values(deadline=now - timedelta(minutes=5)))

    on_node(node, past_deadline)
    overdue = node.cli("queue", "notices", "--waiting")
    assert overdue.out.splitlines()[2] == (
        f"14m  {SENDER}  {MESSAGE_ID}  {REMOTE[0]:{len(REMOTE[1])}}  waiting    {'':7}  overdue 5m"
    )
    assert notices_audit(node)[:2] == [
        (
            {"sender": None, "message_id": "none@x", "waiting": False, "limit": 100},
            {"result": "done", "results": 0},
        ),
        ({"sender": None, "message_id": None, "waiting": False, "limit": 100}, {"result": "done", "results": 3}),
    ]


def test_notices_refuses_bad_options(node: NodeDir) -> None:
    for argv, error in (
        (["--limit", "0"], "--limit must be between 1 and 10000"),
        (["--limit", "10001"], "--limit must be between 1 and 10000"),
        (
            ["--sender", "bob@clinique-b.mssante.fr"],
            f"bob@clinique-b.mssante.fr is not in a domain of this node ({DOMAIN}, patient.{DOMAIN})",
        ),
        (["--sender", "claire.martin"], "invalid address 'claire.martin': the address has no '@'"),
        (["--message-id", "a b@c"], "invalid Message-ID 'a b@c': expected <left@right> without spaces"),
        (["--message-id", "<>"], "invalid Message-ID '<>': expected <left@right> without spaces"),
    ):
        r = node.cli("queue", "notices", *argv)
        assert (r.code, r.out, r.err) == (2, "", f"mssgw: {error}\n"), argv
    r = node.cli("queue", "notices", "--limit", "many")
    assert r.code == 2
    assert r.err.endswith("error: argument --limit: invalid int value: 'many'\n")
    assert [response for _, response in notices_audit(node)] == [
        {"result": "refused", "reason": "--limit must be between 1 and 10000"},
        {"result": "refused", "reason": "--limit must be between 1 and 10000"},
        {
            "result": "refused",
            "reason": f"bob@clinique-b.mssante.fr is not in a domain of this node ({DOMAIN}, patient.{DOMAIN})",
        },
        {"result": "refused", "reason": "invalid address 'claire.martin': the address has no '@'"},
        {"result": "refused", "reason": "invalid Message-ID 'a b@c': expected <left@right> without spaces"},
        {"result": "refused", "reason": "invalid Message-ID '<>': expected <left@right> without spaces"},
    ]
