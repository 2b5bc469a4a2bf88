"""Nodes under continuous submission, SIGKILLed at random moments and restarted (issue 3, issue 7).

On SQLite one node; on PostgreSQL two nodes of one operator share the database, and each kill takes
one of them (at random) down while the other keeps serving clients and takes over the killed node's
leased work once the lease ends.

Afterwards every message that got a `250` is in each of its recipients' INBOX exactly once, a message
that got no reply is delivered at most once (to all its recipients or to none), every delivered body is
whole and byte-identical to what was sent, INBOX UIDs are strictly increasing, every acknowledged
message was audited before its `250`, and the audit log verifies.

Kills are of three kinds, in a seeded random order with seeded delays: while a client streams a large
body in DATA (or waits for the reply after it), just after a `250` (the worker is delivering that message),
and at a random moment. Set MSSGW_CRASH_SEED to replay a schedule (thread timing still varies).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.audit.events import AuditEvent
from gateway.node import Node
from gateway.queue.store import Queue
from gateway.queue.worker import DeliveryWorker
from gateway.store.mailstore import return_path
from gateway.store.messages import MessageStore
from gateway.store.models import StoredMessage
from tests.conftest import NodeDir, copy_node, run_cli
from tests.pg import PostgresCluster
from tests.reliability.harness import (
    DOCTOR,
    LEASE,
    NURSE,
    Kill,
    Ledger,
    Parties,
    Submitter,
    Supervisor,
    check_delivered,
    make_message,
    provision,
    queue_state,
    read_store,
    second_node,
    wait_for_empty_queue,
)

CLIENTS = 2
MODES = ("data", "delivery", "random")


def _seed() -> int:
    return int(os.environ.get("MSSGW_CRASH_SEED") or random.SystemRandom().randrange(1, 10**6))


def _wait_for_moment(mode: str, supervisor: Supervisor, ledger: Ledger, rng: random.Random) -> None:
    if mode == "random":  # counted from the start: may fall while clients log in or leases are recovered
        time.sleep(rng.uniform(0, 1.5))
        return
    # Let the node serve for a while first: clients log in again (argon2) after each restart.
    assert ledger.wait_for_ack(supervisor.incarnation, timeout=20), "the restarted node acknowledges nothing"
    time.sleep(rng.uniform(0.3, 1.0))
    if mode == "data":  # a client is streaming a large body, or waiting for the reply to it
        ledger.data_started.clear()
        ledger.data_started.wait(5)
        time.sleep(rng.uniform(0, 0.04))
    elif mode == "delivery":  # a 250 was just sent: the worker was woken and is delivering
        ledger.acknowledged.clear()
        ledger.acknowledged.wait(5)
        time.sleep(rng.uniform(0, 0.02))


@dataclass
class Setup:
    """What a crash run drives: the nodes (by operator), which of them take submissions, where mail lands."""

    label: str
    supervisors: list[Supervisor]  # every node: each kill takes one of them
    submit: list[Supervisor]  # the nodes clients submit to
    sender: NodeDir  # the operator that acknowledges (its audit has smtp.message.accepted)
    receiver: NodeDir  # the operator whose mailboxes get the messages
    parties: Parties


def one_operator(template: NodeDir, tmp_path: Path, pg: PostgresCluster | None) -> Setup:
    node = copy_node(template, tmp_path / "node")
    if pg is None:
        provision(node)
        nodes = [Supervisor(node, tmp_path / "serve.stderr")]
        label = "SQLite, 1 node"
    else:
        store, audit = pg.create_database("crash_store"), pg.create_database("crash_audit")
        provision(node, store_url=pg.url(store), audit_url=pg.url(audit))
        nodes = [
            Supervisor(node, tmp_path / "node1.stderr"),
            Supervisor(node, tmp_path / "node2.stderr", second_node(node), "node2"),
        ]
        label = "PostgreSQL, 2 nodes"
    return Setup(label, nodes, nodes, node, node, Parties())


def two_operators(tmp_path: Path) -> Setup:
    """`mssgw demo init`: operator A's doctor writes to two professionals of operator B; every message
    is signed and encrypted at A, relayed over mutual TLS, decrypted and verified at B."""
    root = tmp_path / "demo"
    made = run_cli("demo", "init", root, "--json", timeout=300)
    assert made.code == 0, made.err
    creds = json.loads((root / "credentials.json").read_text())
    a, b = creds["operators"]
    nodes = {}
    for op in (a, b):
        nd = NodeDir(Path(op["config"]).parent, root / "secrets" / op["name"])
        text = nd.config.read_text()
        edited = re.sub(r"(?m)^lease = \d+$", f"lease = {LEASE}", text)
        # B down refuses A's relays (4.4.1): retried within seconds here, not minutes.
        edited = re.sub(r'(?m)^retry_schedule = ".*"$', 'retry_schedule = "1s,2s"', edited)
        assert edited.count(f"lease = {LEASE}") == 1
        assert edited.count('retry_schedule = "1s,2s"') == 1
        nd.config.write_text(edited)
        nodes[op["name"]] = nd
    doctor = next(m for m in a["mailboxes"] if m["type"] == "PER")
    peers = [m["address"] for m in b["mailboxes"] if m["type"] in ("PER", "ORG")][:2]
    assert len(peers) == 2, b["mailboxes"]
    sa = Supervisor(nodes[a["name"]], tmp_path / "a.stderr", name="A")
    sb = Supervisor(nodes[b["name"]], tmp_path / "b.stderr", name="B")
    parties = Parties(sender=doctor["address"], password=doctor["password"], first=peers[0], second=peers[1])
    return Setup("two operators, S/MIME relay, SQLite", [sa, sb], [sa], nodes[a["name"]], nodes[b["name"]], parties)


def crash_run(setup: Setup, kills: int, capsys: pytest.CaptureFixture[str]) -> None:
    seed = _seed()
    rng = random.Random(seed)
    ledger = Ledger(seed, setup.parties)
    stop = threading.Event()
    clients = [Submitter(f"submitter-{i}", setup.submit, ledger, stop) for i in range(CLIENTS)]
    modes = [MODES[i % len(MODES)] for i in range(kills)]
    rng.shuffle(modes)
    log: list[Kill] = []
    nodes = list({id(s.node): s.node for s in setup.supervisors}.values())
    started = time.monotonic()
    try:
        for s in setup.supervisors:
            s.start()
        for c in clients:
            c.start()
        for mode in modes:
            supervisor = rng.choice(setup.supervisors)
            served = supervisor if supervisor in setup.submit else rng.choice(setup.submit)
            _wait_for_moment(mode, served, ledger, rng)
            in_data = ledger.in_data
            uptime = supervisor.kill()
            queued, leased = queue_state(supervisor.node)
            log.append(Kill(supervisor.name, mode, uptime, in_data, queued, leased))
            time.sleep(rng.uniform(0.05, 0.4))
            supervisor.start()
        for s in setup.submit:
            assert ledger.wait_for_ack(s.incarnation, timeout=20), f"{s.name} acknowledges nothing after restarts"
        time.sleep(1.0)  # the last incarnations serve clients too
        stop.set()
        for c in clients:
            c.join(timeout=60)
            assert not c.is_alive(), f"{c.name} is stuck"
            assert c.crash is None, f"{c.name} failed: {c.crash!r}"
        for nd in nodes:  # the sender's queue first: the receiver's fills from it
            wait_for_empty_queue(nd, setup.supervisors, timeout=LEASE + 60)
        for s in setup.supervisors:
            assert s.stop() == 0, f"unclean stop; see {s.stderr_path}"
    finally:
        stop.set()
        for s in setup.supervisors:
            if s.alive():
                s.kill()
    elapsed = time.monotonic() - started

    assert len(log) == kills
    assert not ledger.refused, ledger.refused[:5]
    assert ledger.acked, "no message was acknowledged"
    for nd in nodes:
        listed = nd.cli("queue", "list", "--json")
        assert listed.code == 0, listed.err
        assert listed.json() == []
    view = read_store(setup.receiver, setup.parties.mailboxes)
    accepted = view.accepted if setup.sender is setup.receiver else read_store(setup.sender, ()).accepted

    # Every stored message is whole, is one we sent, to one of its recipients, byte for byte; UIDs only grow.
    by_marker = {m.marker: m for m in ledger.sent.values()}
    copies: Counter[tuple[str, str]] = Counter()
    unaudited = 0
    for address, rows in view.inbox.items():
        uids = [uid for uid, _ in rows]
        assert all(a < b for a, b in itertools.pairwise(uids)), f"{address}: UIDs {uids}"
        assert not uids or uids[-1] < view.uidnext[address]
        for uid, raw in rows:
            got = check_delivered(raw)
            sent = by_marker.get(got.marker)
            assert sent is not None, f"{address} UID {uid}: {got.marker} was never sent"
            assert address in sent.recipients, f"{address} UID {uid}: {got.marker} was not for this mailbox"
            assert got.body_sha256 == sent.body_sha256, f"{address} UID {uid}: {got.marker} body changed"
            copies[(address, got.marker)] += 1
            audits = view.delivered_audits[(address, uid)]
            assert audits <= 1, f"{address} UID {uid} audited as delivered {audits} times"
            unaudited += audits == 0
    lost, doubled, partial = [], [], []
    for number, msg in sorted(ledger.sent.items()):
        counts = [copies[(r, msg.marker)] for r in msg.recipients]
        if any(c > 1 for c in counts):
            doubled.append((msg.marker, counts))
        if number in ledger.acked and counts != [1] * len(counts):
            lost.append((msg.marker, counts))
        elif len(set(counts)) > 1:  # unacknowledged: delivered to all its recipients or to none
            partial.append((msg.marker, counts))
    assert not lost, f"acknowledged but not delivered exactly once: {lost[:10]}"
    assert not doubled, f"delivered more than once: {doubled[:10]}"
    assert not partial, f"delivered to some recipients only: {partial[:10]}"
    not_audited = [ledger.sent[n].marker for n, qid in ledger.acked.items() if accepted.get(qid) != 1]
    assert not not_audited, f"acknowledged without exactly one smtp.message.accepted record: {not_audited[:10]}"
    for nd in nodes:
        verified = nd.cli("audit", "verify")
        assert verified.code == 0, verified.out + verified.err

    delivered_messages = {marker for (_, marker) in copies}
    unacked_delivered = sum(
        1 for n, m in ledger.sent.items() if n not in ledger.acked and m.marker in delivered_messages
    )
    with capsys.disabled():
        print(
            f"\ncrash test (seed {seed}, {setup.label}): {kills} kills in {elapsed:.1f} s; "
            f"{len(ledger.sent)} messages sent ({sum(m.size for m in ledger.sent.values()) / 1e6:.1f} MB), "
            f"{len(ledger.acked)} acknowledged, {len(delivered_messages)} delivered "
            f"({sum(copies.values())} mailbox copies; {unacked_delivered} of them unacknowledged), "
            f"{ledger.connection_errors} client connection errors, "
            f"{unaudited} deliveries without their queue.delivered record"
        )
        for i, k in enumerate(log, 1):
            print(
                f"  kill {i:2d}: {k.node} {k.mode:8s} after {k.uptime:4.2f} s up, {k.in_data} in DATA, "
                f"{k.queued} queued, {k.leased} leased"
            )


class Killed(BaseException):
    """The worker's process dies here."""


def test_a_finished_message_leaves_the_queue_with_its_last_delivery(template_node: NodeDir, tmp_path: Path) -> None:
    """A death right after the last recipient's delivery commit leaves no finished message in the queue.

    Found by the crash test: the message row (and its sealed body) was removed by a later, separate
    transaction, so a SIGKILL in between left it queued for good, every recipient delivered. Now the
    delivery that settles the last recipient retires the message in the same transaction.
    """
    node = copy_node(template_node, tmp_path / "node")
    provision(node)
    body = make_message(0, 1).data

    async def run() -> tuple[list[dict[str, object]], list[int]]:
        async with Node(node.cfg()) as n:
            queue = Queue(n.db, n.kek)
            await queue.enqueue(
                source="submission",
                sender=DOCTOR,
                recipients=[NURSE, DOCTOR],
                body=body,
                local_domains=n.cfg.node.local_domains,
                principal=DOCTOR,
            )

            worker = DeliveryWorker(n, queue)
            audit = worker._audit
            deliveries = 0

            async def die_after_last(event: AuditEvent, *args: object, **kwargs: object) -> None:
                # The audit record is the first thing after each delivery commit: dying at the second
                # one is dying right after the last recipient's delivery committed.
                nonlocal deliveries
                deliveries += event == AuditEvent.QUEUE_DELIVERED
                if deliveries == 2:
                    raise Killed
                await audit(event, *args, **kwargs)  # type: ignore[arg-type]

            worker._audit = die_after_last  # type: ignore[method-assign]
            assert await worker.run_once() == 2  # both recipients claimed; the death ends the pass
            left = await Queue(n.db, n.kek).list()
            store = MessageStore(n.mailboxes)
            async with n.db.read() as s:
                ids = (await s.execute(select(StoredMessage.id, StoredMessage.address))).all()
            sizes = [len(await store.get(address, mid)) for mid, address in ids]
            return left, sizes

    left, sizes = asyncio.run(run())
    assert left == []
    stored = len(return_path(DOCTOR) + body)  # as the final delivery writes it (RFC 5321 §4.4)
    assert sizes == [stored, stored]


@pytest.fixture(params=["sqlite", "postgresql"])
def cluster(request: pytest.FixtureRequest) -> PostgresCluster | None:
    """None for one node on SQLite; the test PostgreSQL server for two nodes sharing a database."""
    return request.getfixturevalue("pg_cluster") if request.param == "postgresql" else None


def test_sigkill_under_submission_loses_and_duplicates_nothing(
    template_node: NodeDir, tmp_path: Path, capsys: pytest.CaptureFixture[str], cluster: PostgresCluster | None
) -> None:
    crash_run(one_operator(template_node, tmp_path, cluster), kills=3, capsys=capsys)


def test_sigkill_across_two_operators_loses_and_duplicates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    crash_run(two_operators(tmp_path), kills=3, capsys=capsys)


@pytest.mark.slow
def test_twenty_sigkills_under_submission(
    template_node: NodeDir, tmp_path: Path, capsys: pytest.CaptureFixture[str], cluster: PostgresCluster | None
) -> None:
    crash_run(one_operator(template_node, tmp_path, cluster), kills=20, capsys=capsys)


@pytest.mark.slow
def test_twenty_sigkills_across_two_operators(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    crash_run(two_operators(tmp_path), kills=20, capsys=capsys)
