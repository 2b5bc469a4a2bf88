"""The queue worker against a real store: exactly-once local delivery under lease takeover, restarts."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import cms as asn1_cms
from sqlalchemy import func, select, update

from certs.pki import TrustSpacePKI, write_bundle
from gateway.audit.events import AuditEvent
from gateway.audit.verify import query
from gateway.config import SmimePeer
from gateway.node import Node
from gateway.queue.retry import RetrySchedule
from gateway.queue.store import Claim, Envelope, Job, LeaseLost, Queue
from gateway.queue.worker import DeliveryWorker, Relay, Result
from gateway.smime import cms, mime
from gateway.smime.service import Smime
from gateway.smtp.client import Relayer
from gateway.store.mailstore import Mailstore, return_path
from gateway.store.messages import MessageStore, relay_receipt
from gateway.store.models import QueuedMessage, QueuedRecipient, StoredMessage, utcnow
from tests.conftest import DOMAIN, NodeDir, copy_node
from tests.dns import Zone, dnsmasq
from tests.smime.conftest import openssl

RCPT = f"boite@{DOMAIN}"


@pytest.fixture
async def node(template_node: NodeDir, tmp_path: Path) -> AsyncIterator[Node]:
    nd = copy_node(template_node, tmp_path / "node")
    async with Node(nd.cfg()) as n:
        await n.mailboxes.create(RCPT, "ORG")
        yield n


async def queued(node: Node, queue: Queue, *recipients: str, body: bytes = b"Subject: x\r\n\r\nx\r\n") -> str:
    """A message submitted by RCPT to `recipients`, queued; its queue id."""
    return await queue.enqueue(
        source="submission",
        sender=RCPT,
        recipients=list(recipients),
        body=body,
        local_domains=node.cfg.node.local_domains,
    )


async def stored(n: Node) -> int:
    async with n.db.read() as s:
        return int((await s.execute(select(func.count()).select_from(StoredMessage))).scalar_one())


async def test_a_worker_whose_lease_was_taken_over_does_not_deliver(node: Node) -> None:
    queue = Queue(node.db, node.kek)
    await queue.enqueue(
        source="submission",
        sender=RCPT,
        recipients=[RCPT],
        body=b"Subject: x\r\n\r\nx\r\n",
        local_domains=node.cfg.node.local_domains,
    )
    now = utcnow()
    slow = await queue.claim(owner="slow", lease=timedelta(seconds=1), now=now)
    fast = await queue.claim(owner="fast", lease=timedelta(seconds=60), now=now + timedelta(seconds=2))  # expired
    assert [j.recipient for j in fast.jobs] == [RCPT]
    async with node.db.write() as s:  # the slow worker's record is refused and rolled back
        with pytest.raises(LeaseLost):
            await queue.settle(s, slow.jobs[0], "delivered")
    worker = DeliveryWorker(node, queue, owner="fast")
    await worker._message(fast.jobs[0].envelope.queue_id, fast.jobs)
    assert await stored(node) == 1
    slow_worker = DeliveryWorker(node, queue, owner="slow")
    await slow_worker._deliver_local(slow.jobs[0], b"Subject: x\r\n\r\nx\r\n")  # too late: nothing happens
    assert await stored(node) == 1
    async with node.db.read() as s:  # the message left the queue with its last delivery
        assert (await s.execute(select(func.count()).select_from(QueuedMessage))).scalar_one() == 0


async def test_a_restarted_node_takes_back_its_leases_at_once(node: Node) -> None:
    queue = Queue(node.db, node.kek)
    await queue.enqueue(
        source="submission",
        sender=RCPT,
        recipients=[RCPT, f"x@{DOMAIN}"],
        body=b"a\r\n",
        local_domains=node.cfg.node.local_domains,
    )
    held = await queue.claim(owner="node1", lease=timedelta(minutes=5))
    assert len(held.jobs) == 2
    assert await queue.claim(owner="node1", lease=timedelta(minutes=5)) == type(held)()  # all leased
    assert await queue.release("node1") == 2
    async with node.db.read() as s:
        leased = (await s.execute(select(QueuedRecipient.lease_owner))).scalars().all()
    assert leased == [None, None]
    assert len((await queue.claim(owner="node1", lease=timedelta(minutes=5))).jobs) == 2


async def test_a_full_mailbox_defers_delivery_with_4_2_2(node: Node) -> None:
    body = b"Subject: gros\r\n\r\n" + b"x" * 1000 + b"\r\n"
    first = b"Subject: d\xc3\xa9j\xc3\xa0 l\xc3\xa0\r\n\r\nx\r\n"
    await MessageStore(node.mailboxes).deliver(RCPT, first)
    stored_size = len(return_path(RCPT) + body)  # as the final delivery writes it (RFC 5321 §4.4)
    await Mailstore(MessageStore(node.mailboxes)).set_quota(RCPT, stored_size + len(first) - 1)  # it alone fits
    queue = Queue(node.db, node.kek)
    queue_id = await queue.enqueue(
        source="submission", sender=RCPT, recipients=[RCPT], body=body, local_domains=node.cfg.node.local_domains
    )
    assert await DeliveryWorker(node, queue).run_once() == 1
    assert await stored(node) == 1  # the first message only
    [rcpt] = await queue.recipients(queue_id)
    assert (rcpt.status, rcpt.attempts, rcpt.last_error) == ("pending", 1, "smtp; 452 4.2.2 mailbox full")
    assert rcpt.next_attempt_at > utcnow() + timedelta(seconds=50)  # the schedule's first step: 1 minute
    await Mailstore(MessageStore(node.mailboxes)).set_quota(RCPT, stored_size + len(first))  # room made: retried
    assert await DeliveryWorker(node, queue).run_once(now=utcnow() + timedelta(minutes=2)) == 1
    assert await stored(node) == 2


async def test_a_message_larger_than_the_whole_quota_bounces_at_once_with_5_2_3(node: Node) -> None:
    """No room the owner makes will let it in: failed now, the DSN naming the size (not 4.4.7 after days)."""
    body = b"Subject: gros\r\n\r\n" + b"x" * 1000 + b"\r\n"
    await Mailstore(MessageStore(node.mailboxes)).set_quota(RCPT, len(body) - 1)
    sender = f"expediteur@{DOMAIN}"
    await node.mailboxes.create(sender, "ORG")
    queue = Queue(node.db, node.kek)
    await queue.enqueue(
        source="submission", sender=sender, recipients=[RCPT], body=body, local_domains=node.cfg.node.local_domains
    )
    worker = DeliveryWorker(node, queue)
    assert await worker.run_once() == 1
    [failed] = await query(node.audit_db, action="queue.failed")
    assert (failed["response"]["status"], failed["response"]["reason"]) == (
        "5.2.3",
        "smtp; 552 5.2.3 message larger than the mailbox quota",
    )
    assert await worker.run_once() == 1  # the DSN, delivered to the sender
    assert await stored(node) == 1
    async with node.db.read() as s:
        assert (await s.execute(select(func.count()).select_from(QueuedMessage))).scalar_one() == 0


async def test_a_local_delivery_wakes_the_mailbox_listeners(node: Node) -> None:
    queue = Queue(node.db, node.kek)
    with node.notices.listen(RCPT) as changed:
        await queue.enqueue(
            source="submission",
            sender=RCPT,
            recipients=[RCPT],
            body=b"Subject: x\r\n\r\nx\r\n",
            local_domains=node.cfg.node.local_domains,
        )
        assert not changed.is_set()
        assert await DeliveryWorker(node, queue).run_once() == 1
        assert changed.is_set()


async def test_a_relayed_message_queued_twice_is_stored_once_and_the_copy_settled(node: Node) -> None:
    """The worker's delivery takes the relay receipt the message was queued with (a relayed message
    queued when its mailbox was over quota, then sent again by the peer): the copy is settled, audited
    queue.duplicate, not stored. Submissions take none: the same message submitted twice is stored twice."""
    queue = Queue(node.db, node.kek)
    peer = "dr.durand@ch-peer.mssante.fr"

    async def enqueue(source: str, mid: str) -> str:
        return await queue.enqueue(
            source=source,
            sender=peer if source == "relay" else RCPT,
            recipients=[RCPT],
            body=f"Message-ID: {mid}\r\nSubject: x\r\n\r\nx\r\n".encode(),
            local_domains=node.cfg.node.local_domains,
            header_message_id=mid,
            receipt=relay_receipt(peer, mid, b"x") if source == "relay" else None,
        )

    first, second = await enqueue("relay", "<r@peer>"), await enqueue("relay", "<r@peer>")
    await enqueue("submission", "<s@here>")
    await enqueue("submission", "<s@here>")
    worker = DeliveryWorker(node, queue)
    assert await worker.run_once() == 4
    assert await stored(node) == 3
    assert await queue.list() == []
    dup = [(r["cid"], r["response"]) for r in await query(node.audit_db, action=AuditEvent.QUEUE_DUPLICATE)]
    delivered = [r["cid"] for r in await query(node.audit_db, action=AuditEvent.QUEUE_DELIVERED)]
    assert [response for _, response in dup] == [{"rcpt": RCPT, "message_id": "<r@peer>"}]
    assert dup[0][0] in (first, second)
    assert delivered.count(first) + delivered.count(second) == 1
    # A week on (`[smtp] duplicate_window`), the receipt is forgotten: the same message is new again.
    assert await worker.prune_receipts(now=utcnow() + timedelta(days=7, seconds=1)) == 1
    await enqueue("relay", "<r@peer>")
    assert await worker.run_once() == 1
    assert await stored(node) == 4


async def test_a_failed_pass_does_not_stop_the_worker(node: Node) -> None:
    """A pass that raises (the database restarting under it) is logged and the worker goes on: it used
    to end the worker's task, and the queue stopped draining with the node still up."""
    queue = Queue(node.db, node.kek)
    await queue.enqueue(
        source="submission", sender=RCPT, recipients=[RCPT], body=b"a\r\n", local_domains=node.cfg.node.local_domains
    )
    worker = DeliveryWorker(node, queue)
    real, failures = queue.claim, []

    async def flaky(**kwargs: Any) -> Claim:
        if not failures:
            failures.append(1)
            raise ConnectionError("the database restarts")
        return await real(**kwargs)

    queue.claim = flaky  # type: ignore[method-assign]
    with node.notices.listen(RCPT) as delivered:
        task = asyncio.create_task(worker.run())
        try:
            await asyncio.wait_for(delivered.wait(), 10)
        finally:
            task.cancel()
    assert failures == [1]
    assert await stored(node) == 1


async def test_a_worker_woken_as_it_is_cancelled_stops(node: Node) -> None:
    """The node's stop cancels the worker; a wake at that very moment must not swallow the cancellation
    (Python 3.11's wait_for returned the woken event's result instead, and the node waited forever)."""
    worker = DeliveryWorker(node, Queue(node.db, node.kek))
    task = asyncio.create_task(worker.run())
    for _ in range(100):  # until it waits for work
        await asyncio.sleep(0.01)
        if worker._wake.is_set() is False and task.get_stack()[-1].f_code.co_name == "wait":
            break
    worker.wake()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=5)
    assert done == {task}
    assert task.cancelled()


async def test_a_stopped_worker_finishes_its_batch_and_ends(node: Node) -> None:
    """`stop()` (the node's SIGTERM): the batch under way is delivered, then `run` returns by itself."""
    queue = Queue(node.db, node.kek)
    worker = DeliveryWorker(node, queue)
    with node.notices.listen(RCPT) as delivered:
        await queue.enqueue(
            source="submission",
            sender=RCPT,
            recipients=[RCPT],
            body=b"a\r\n",
            local_domains=node.cfg.node.local_domains,
        )
        real = queue.claim

        async def stop_during(**kwargs: Any) -> Claim:
            worker.stop()  # asked to stop as this message is claimed: it is handled all the same
            return await real(**kwargs)

        queue.claim = stop_during  # type: ignore[method-assign]
        task = asyncio.create_task(worker.run())
        done, _ = await asyncio.wait([task], timeout=10)
        assert done == {task}
        assert task.result() is None  # ended, not cancelled
        assert delivered.is_set()
    assert await stored(node) == 1


# -- S/MIME before every relay (gateway.smime.outbound through the node's Smime) ------------------------


@pytest.mark.parametrize(
    ("peer_options", "kind", "cipher", "transport"),
    [
        ({}, "enveloped_data", "aes256_cbc", "rsaes_oaep"),  # the defaults
        ({"oaep": False, "gcm": True}, "authenticated_enveloped_data", "aes256_gcm", "rsaes_pkcs1v15"),
    ],
)
async def test_a_relay_is_signed_and_encrypted_and_a_recipient_without_certificate_fails_alone(
    template_node: NodeDir, tmp_path: Path, peer_options: dict[str, bool], kind: str, cipher: str, transport: str
) -> None:
    nd = copy_node(template_node, tmp_path / "node")
    pki = TrustSpacePKI(nd.data / "pki")
    peer = "cabinet-c.mssante.fr"
    sender, known, unknown = f"claire@{DOMAIN}", f"dr.petit@{peer}", f"inconnu@{peer}"
    petit = write_bundle(pki.issue_address(known), tmp_path / "petit", name="petit", root=pki.root)
    published = tmp_path / "published"
    published.mkdir()
    shutil.copyfile(petit["cert"], published / "petit.pem")  # what the national directory publishes
    with dnsmasq(Zone(local=(peer,)), tmp_path) as dns:  # DNS knows no CERT record for the other one
        cfg = nd.cfg()
        cfg.smime = cfg.smime.model_copy(
            update={
                "published": [published],
                "dns_servers": ["127.0.0.1"],
                "dns_port": dns.port,
                "workers": 0,
                "peers": {peer: SmimePeer(**peer_options)},  # [smime.peers."cabinet-c.mssante.fr"]
            }
        )
        async with Node(cfg) as node:
            await node.mailboxes.create(sender, "ORG")
            mine = pki.issue_address(sender)
            await node.mailboxes.add_certificate(sender, mine.certificate, "smime", key=mine.key, chain=mine.chain)
            sent: list[tuple[str, list[str], bytes]] = []

            async def relay(domain: str, env: Envelope, jobs: Sequence[Job], body: bytes) -> list[Result]:
                sent.append((domain, [j.recipient for j in jobs], body))
                return [Result(j.recipient, True, remote_mta=f"mx.{peer}") for j in jobs]

            smime = Smime(node)
            queue = Queue(node.db, node.kek)
            plain = f"From: {sender}\r\nTo: {known}, {unknown}\r\nSubject: Bilan\r\n\r\nBilan joint.\r\n".encode()
            queue_id = await queue.enqueue(
                source="submission",
                sender=sender,
                recipients=[known, unknown],
                body=plain,
                local_domains=node.cfg.node.local_domains,
            )
            worker = DeliveryWorker(node, queue, relay=relay, smime=smime)
            assert await worker.run_once() == 2
            [(domain, rcpts, body)] = sent
            assert (domain, rcpts) == (peer, [known])
            await node.audit.flush()
            outcomes = {
                r["response"]["rcpt"]: (r["action"], r["response"].get("reason"))
                for r in await query(node.audit_db, action="queue.")
                if r["cid"] == queue_id and "rcpt" in r["response"]
            }
            assert outcomes == {
                known: ("queue.relayed", None),
                unknown: ("queue.failed", "smtp; 550 5.7.5 no certificate found for the recipient (S/MIME required)"),
            }
            # The DSN reaches the sender with the reason; the relayed bytes are what openssl opens.
            assert await worker.run_once() == 1
            async with node.db.read() as s:
                [dsn_id] = (await s.execute(select(StoredMessage.id))).scalars().all()
            dsn = (await MessageStore(node.mailboxes).get(sender, dsn_id)).decode()
            assert f"Final-Recipient: rfc822; {unknown}\r\nAction: failed\r\nStatus: 5.7.5\r\n" in dsn
            assert "Diagnostic-Code: smtp; 550 5.7.5 no certificate found for the recipient" in dsn
            await node.audit.flush()
            refused = [
                r for r in await query(node.audit_db, action=AuditEvent.SMIME_RECIPIENT_REFUSED) if r["cid"] == queue_id
            ]
            assert [(r["response"]["rcpt"], r["response"]["status"]) for r in refused] == [(unknown, "5.7.5")]
            smime.close()
    assert body.startswith(f"From: {sender}\r\nTo: {known}, {unknown}\r\nMIME-Version: 1.0\r\n".encode())
    assert b"Subject" not in body.split(b"\r\n\r\n", 1)[0]  # protected inside, not shown outside
    opened = openssl("cms", "-decrypt", "-recip", petit["cert"], "-inkey", petit["key"], data=body)
    verified = openssl("cms", "-verify", "-CAfile", petit["root"], "-purpose", "smimesign", data=opened)
    assert verified.replace(b"\r\n", b"\n").endswith(b"Subject: Bilan\n\nBilan joint.\n")
    # The peer's options chose the content encryption and the key transport of every entry.
    envelope = cms.describe(mime.envelope_der(body))
    assert (envelope.kind, envelope.content_algorithm, len(envelope.recipients)) == (kind, cipher, 2)
    info = asn1_cms.ContentInfo.load(mime.envelope_der(body))
    assert {ri.chosen["key_encryption_algorithm"]["algorithm"].native for ri in info["content"]["recipient_infos"]} == {
        transport
    }


async def test_a_slow_batch_keeps_its_leases_while_it_works(node: Node) -> None:
    """A relay slower than the lease: the worker renews, so no other worker can take the recipient over,
    and the outcome is recorded by the worker that did the work."""
    queue = Queue(node.db, node.kek)
    await queue.enqueue(
        source="submission",
        sender=RCPT,
        recipients=["someone@ch-peer.mssante.fr"],
        body=b"Subject: x\r\n\r\nx\r\n",
        local_domains=node.cfg.node.local_domains,
    )
    taken: list[int] = []

    async def slow_relay(domain: str, env: Envelope, jobs: Sequence[Job], body: bytes) -> list[Result]:
        for _ in range(6):  # 2.4 s of relaying against a lease of 0.6 s: another worker keeps asking
            await asyncio.sleep(0.4)
            taken.append(len((await queue.claim(owner="other", lease=timedelta(seconds=60))).jobs))
        return [Result(j.recipient, ok=True, remote_mta="mx.ch-peer.mssante.fr") for j in jobs]

    worker = DeliveryWorker(node, queue, relay=slow_relay, owner="slow")
    worker.lease = timedelta(seconds=0.6)
    assert await worker.run_once() == 1
    assert taken == [0] * 6
    assert await queue.list() == []
    relayed = await query(node.audit_db, action="queue.relayed")
    assert [r["author"] for r in relayed] == ["queue:slow"]


async def test_a_tarpitting_peer_holds_only_its_own_recipients(template_node: NodeDir, tmp_path: Path) -> None:
    """A peer that accepts connections and never answers (each reply could take 5 minutes): `run` keeps
    delivering the rest, a message queued after it included, and claims no more of that domain than
    `domain_in_flight`. The relay is the node's real client; `run` used to wait for its batch's slowest
    message, so the local message waited for the peer's timeouts."""
    nd = copy_node(template_node, tmp_path / "node")
    cfg = nd.cfg()
    cfg.queue = cfg.queue.model_copy(update={"domain_in_flight": 2})
    accepted: list[asyncio.StreamWriter] = []

    async def tarpit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await reader.read()

    server = await asyncio.start_server(tarpit, "127.0.0.1", 0)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connection refused
    routes = {
        "lent.mssante.fr": f"127.0.0.1:{server.sockets[0].getsockname()[1]}",
        "ferme.mssante.fr": f"127.0.0.1:{closed.getsockname()[1]}",
    }
    slow = [f"r{n}@lent.mssante.fr" for n in range(3)]
    async with Node(cfg) as node:
        await node.mailboxes.create(RCPT, "ORG")
        queue = Queue(node.db, node.kek)
        relayer = Relayer(cfg, routes=routes)
        worker = DeliveryWorker(node, queue, relay=relayer, owner="n1")

        for rcpt in slow:
            await queued(node, queue, rcpt)
        task = asyncio.create_task(worker.run())
        try:
            for _ in range(500):  # until both relay sessions wait for the peer's greeting
                await asyncio.sleep(0.01)
                if len(accepted) == 2:
                    break
            with node.notices.listen(RCPT) as delivered:
                await queued(node, queue, RCPT)
                refused = await queued(node, queue, "x@ferme.mssante.fr")
                worker.wake()
                await asyncio.wait_for(delivered.wait(), 10)
            for _ in range(500):  # the refused peer's recipient is deferred meanwhile too
                await asyncio.sleep(0.01)
                if (await queue.recipients(refused))[0].attempts:
                    break
            [deferred] = await queue.recipients(refused)
            assert (deferred.status, deferred.attempts, deferred.lease_owner) == ("pending", 1, None)
            assert deferred.last_error == f"smtp; 451 4.4.1 connection to [127.0.0.1]:{closed.getsockname()[1]} refused"
            assert await stored(node) == 1
            assert len(accepted) == 2  # the third message to the tarpit is not even claimed
            async with node.db.read() as s:
                rows = await s.execute(select(QueuedRecipient).where(QueuedRecipient.domain == "lent.mssante.fr"))
                owners = sorted((r.lease_owner or "") for r in rows.scalars())
            assert owners == ["", "n1", "n1"]
        finally:
            task.cancel()
            await asyncio.wait([task])
            await relayer.close()
            closed.close()
            for writer in accepted:
                writer.close()
            server.close()


@pytest.mark.parametrize("limits", [{"in_flight": 2}, {"domain_in_flight": 2}])
async def test_a_backlog_larger_than_in_flight_is_claimed_as_messages_finish(
    template_node: NodeDir, tmp_path: Path, limits: dict[str, int]
) -> None:
    """Two under way at most (in all, or for the one domain), and a poll every 30 s: each finished message
    makes room, and the worker claims the next at once rather than at the next poll."""
    nd = copy_node(template_node, tmp_path / "node")
    cfg = nd.cfg()
    cfg.queue = cfg.queue.model_copy(update={**limits, "poll_interval": 30.0})
    async with Node(cfg) as node:
        await node.mailboxes.create(RCPT, "ORG")
        queue = Queue(node.db, node.kek)
        for n in range(7):
            await queued(node, queue, RCPT, body=f"Subject: {n}\r\n\r\nx\r\n".encode())
        claimed: list[int] = []
        real = queue.claim

        async def counted(**kwargs: Any) -> Claim:
            claim = await real(**kwargs)
            claimed.append(len(claim.jobs))
            return claim

        queue.claim = counted  # type: ignore[method-assign]
        worker = DeliveryWorker(node, queue)
        task = asyncio.create_task(worker.run())
        try:
            for _ in range(1000):
                await asyncio.sleep(0.01)
                if await stored(node) == 7:
                    break
            assert await stored(node) == 7
            assert await queue.list() == []
        finally:
            worker.stop()
            await asyncio.wait_for(task, 10)
    assert max(claimed) == 2
    assert sum(claimed) == 7


async def test_a_message_s_domains_are_relayed_side_by_side(node: Node) -> None:
    """One message for a slow peer and a quick one: the quick one's recipient is relayed (and recorded)
    while the slow one still waits; they used to be relayed one domain after the other."""
    queue = Queue(node.db, node.kek)
    qid = await queued(node, queue, "a@lent.mssante.fr", "b@vif.mssante.fr")
    release = asyncio.Event()

    async def relay(domain: str, env: Envelope, jobs: Sequence[Job], body: bytes) -> list[Result]:
        if domain == "lent.mssante.fr":
            await release.wait()
        return [Result(j.recipient, True, remote_mta=f"mx.{domain}") for j in jobs]

    worker = DeliveryWorker(node, queue, relay=relay)
    task = asyncio.create_task(worker.run_once())
    statuses: dict[str, str] = {}
    for _ in range(500):
        await asyncio.sleep(0.01)
        statuses = {r.recipient: r.status for r in await queue.recipients(qid)}
        if statuses.get("b@vif.mssante.fr") == "relayed":
            break
    assert statuses == {"a@lent.mssante.fr": "pending", "b@vif.mssante.fr": "relayed"}
    release.set()
    assert await task == 2
    assert await queue.list() == []


async def test_a_domain_s_deferral_is_recorded_while_another_domain_of_the_message_waits(node: Node) -> None:
    """One message for a slow peer and one that answers 451: the second's recipient is deferred (its retry
    scheduled, its lease given back, audited) while the first still waits; it used to be recorded only
    once every domain of the message was done."""
    queue = Queue(node.db, node.kek)
    qid = await queued(node, queue, "a@lent.mssante.fr", "b@tard.mssante.fr")
    release = asyncio.Event()

    async def relay(domain: str, env: Envelope, jobs: Sequence[Job], body: bytes) -> list[Result]:
        if domain == "lent.mssante.fr":
            await release.wait()
            return [Result(j.recipient, True, remote_mta=f"mx.{domain}") for j in jobs]
        return [Result(j.recipient, False, status="4.4.1", diagnostic="smtp; 451 4.4.1 plus tard") for j in jobs]

    worker = DeliveryWorker(node, queue, relay=relay, owner="n1")
    worker.schedule = RetrySchedule.parse("15m", max_age=timedelta(days=5))
    task = asyncio.create_task(worker.run_once())
    rows: dict[str, tuple[Any, ...]] = {}
    for _ in range(500):
        await asyncio.sleep(0.01)
        rows = {r.recipient: (r.status, r.attempts, r.lease_owner, r.last_error) for r in await queue.recipients(qid)}
        if rows["b@tard.mssante.fr"][1] == 1:
            break
    assert rows == {
        "a@lent.mssante.fr": ("pending", 0, "n1", None),
        "b@tard.mssante.fr": ("pending", 1, None, "smtp; 451 4.4.1 plus tard"),
    }
    await node.audit.flush()
    [deferred] = await query(node.audit_db, action="queue.deferred")
    assert (deferred["response"]["rcpt"], deferred["response"]["retry_in"]) == ("b@tard.mssante.fr", 900)
    assert not task.done()
    release.set()
    assert await task == 2
    rows = {r.recipient: (r.status, r.attempts, r.lease_owner) for r in await queue.recipients(qid)}
    assert rows == {"a@lent.mssante.fr": ("relayed", 1, None), "b@tard.mssante.fr": ("pending", 1, None)}


async def test_a_recipient_deferred_and_claimed_again_keeps_its_lease_after_its_first_message_ends(
    node: Node,
) -> None:
    """Under `run`: b@tard is deferred (retry in 1 s) while its message's other domain still waits, claimed
    again when due and relayed slowly by a second task. When the first task ends, b's lease must still be
    renewed for the second: the first used to drop it from what the worker holds, the lease lapsed, and b
    was claimed and relayed a third time alongside the second attempt."""
    queue = Queue(node.db, node.kek)
    await queued(node, queue, "a@lent.mssante.fr", "b@tard.mssante.fr")
    release = asyncio.Event()
    calls: list[str] = []

    async def relay(domain: str, env: Envelope, jobs: Sequence[Job], body: bytes) -> list[Result]:
        calls.append(domain)
        if domain == "lent.mssante.fr":
            await release.wait()
        elif calls.count(domain) == 1:
            return [Result(j.recipient, False, status="4.4.1", diagnostic="smtp; 451 4.4.1 plus tard") for j in jobs]
        else:
            await asyncio.sleep(30)  # a slow second attempt
        return [Result(j.recipient, True, remote_mta=f"mx.{domain}") for j in jobs]

    worker = DeliveryWorker(node, queue, relay=relay, owner="n1")
    worker.schedule = RetrySchedule.parse("1s", max_age=timedelta(days=5))
    worker.lease = timedelta(seconds=2)
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(100):
            await asyncio.sleep(0.1)
            if calls.count("tard.mssante.fr") == 2:
                break
        assert calls == ["lent.mssante.fr", "tard.mssante.fr", "tard.mssante.fr"]
        release.set()  # the first task ends while the second still relays b
        await asyncio.sleep(6)  # three leases: without renewal b would be claimed again
        assert calls == ["lent.mssante.fr", "tard.mssante.fr", "tard.mssante.fr"]
    finally:
        worker.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_relay_that_raises_leaves_the_message_s_other_recipients_recorded(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    """One domain's relay raises (a bug, the database away): the other domain is relayed and the local
    recipient delivered, both recorded; the failed domain's recipient stays pending under its lease, to
    be tried again, and the error is logged with its domain."""
    queue = Queue(node.db, node.kek)
    qid = await queued(node, queue, RCPT, "a@boum.mssante.fr", "b@vif.mssante.fr")

    async def relay(domain: str, env: Envelope, jobs: Sequence[Job], body: bytes) -> list[Result]:
        if domain == "boum.mssante.fr":
            raise RuntimeError("a bug in the relay")
        return [Result(j.recipient, True, remote_mta=f"mx.{domain}") for j in jobs]

    worker = DeliveryWorker(node, queue, relay=relay, owner="n1")
    assert await worker.run_once() == 3
    rows = {r.recipient: (r.status, r.attempts, r.lease_owner) for r in await queue.recipients(qid)}
    assert rows == {
        RCPT: ("delivered", 1, None),
        "a@boum.mssante.fr": ("pending", 0, "n1"),
        "b@vif.mssante.fr": ("relayed", 1, None),
    }
    assert await stored(node) == 1
    logged = capsys.readouterr()
    assert "queue message failed" in logged.out + logged.err
    assert "domain=boum.mssante.fr" in logged.out + logged.err
    assert "RuntimeError: a bug in the relay" in logged.out + logged.err


async def test_run_keeps_the_leases_of_what_is_under_way(node: Node) -> None:
    """The same under `run`: a relay slower than the lease, and a message claimed while it goes on; the one
    keeper renews both, so another worker takes neither over."""
    queue = Queue(node.db, node.kek)

    await queued(node, queue, "a@lent.mssante.fr")
    taken: list[int] = []
    release = asyncio.Event()

    async def slow_relay(domain: str, env: Envelope, jobs: Sequence[Job], body: bytes) -> list[Result]:
        await release.wait()
        return [Result(j.recipient, ok=True, remote_mta=f"mx.{domain}") for j in jobs]

    worker = DeliveryWorker(node, queue, relay=slow_relay, owner="slow")
    worker.lease = timedelta(seconds=0.6)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(0.3)
        await queued(node, queue, "b@lent.mssante.fr")  # claimed by the running worker, beside the first
        worker.wake()
        for _ in range(6):  # 2.4 s against a lease of 0.6 s
            await asyncio.sleep(0.4)
            taken.append(len((await queue.claim(owner="other", lease=timedelta(seconds=60))).jobs))
        release.set()
        for _ in range(200):
            await asyncio.sleep(0.02)
            if not await queue.list():
                break
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
    assert taken == [0] * 6
    assert await queue.list() == []
    relayed = await query(node.audit_db, action="queue.relayed")
    assert sorted((r["response"]["rcpt"], r["author"]) for r in relayed) == [
        ("a@lent.mssante.fr", "queue:slow"),
        ("b@lent.mssante.fr", "queue:slow"),
    ]


REMOTE = "quelquun@ch-pair.mssante.fr"


async def queued_for_peer(node: Node, queue: Queue) -> str:
    return await queued(node, queue, REMOTE)


def relaying(status: str, diagnostic: str, *, permanent: bool) -> Relay:
    async def relay(domain: str, env: Envelope, jobs: Sequence[Job], body: bytes) -> list[Result]:
        return [Result(j.recipient, False, permanent, status, diagnostic, "mx.ch-pair.mssante.fr") for j in jobs]

    return relay


async def test_queue_retry_during_a_relay_does_not_send_it_twice(node: Node) -> None:
    """`mssgw queue retry` while a worker relays the message: the worker's lease stays its own, so its
    `relayed` is recorded and the next pass finds nothing (freeing the lease had it relayed again)."""
    queue = Queue(node.db, node.kek)
    qid = await queued_for_peer(node, queue)
    sent: list[str] = []

    async def relay(domain: str, env: Envelope, jobs: Sequence[Job], body: bytes) -> list[Result]:
        if not sent:
            assert await queue.retry_now(qid) == 1  # the operator, while the peer is being sent the message
        sent.extend(j.recipient for j in jobs)
        return [Result(j.recipient, True, remote_mta="mx.ch-pair.mssante.fr") for j in jobs]

    worker = DeliveryWorker(node, queue, relay=relay)
    assert await worker.run_once() == 1
    assert await worker.run_once() == 0
    assert sent == [REMOTE]
    assert len(await query(node.audit_db, action="queue.relayed")) == 1


async def test_queue_retry_makes_a_deferred_recipient_due_at_once(node: Node) -> None:
    queue = Queue(node.db, node.kek)
    qid = await queued_for_peer(node, queue)
    worker = DeliveryWorker(node, queue, relay=relaying("4.4.1", "smtp; 451 4.4.1 plus tard", permanent=False))
    assert await worker.run_once() == 1
    assert await worker.run_once() == 0  # deferred
    assert await queue.retry_now(qid) == 1
    assert await worker.run_once() == 1
    [r] = await queue.recipients(qid)
    assert (r.status, r.attempts) == ("pending", 2)


async def test_a_deferral_of_days_is_audited_in_whole_seconds(node: Node) -> None:
    queue = Queue(node.db, node.kek)
    await queued_for_peer(node, queue)
    worker = DeliveryWorker(node, queue, relay=relaying("4.4.1", "smtp; 451 4.4.1 plus tard", permanent=False))
    worker.schedule = RetrySchedule.parse("1d", max_age=timedelta(days=5))
    await worker.run_once()
    [record] = await query(node.audit_db, action="queue.deferred")
    assert record["response"]["retry_in"] == 86400  # timedelta.seconds said 0


async def test_a_message_queued_by_a_node_whose_clock_is_ahead_is_deferred(node: Node) -> None:
    """Another node's clock 2 s ahead: the message's age is negative here; it counts as 0, and the
    temporary failure is recorded and scheduled (it raised, leaving the recipient leased and uncounted)."""
    queue = Queue(node.db, node.kek)
    qid = await queued_for_peer(node, queue)
    async with node.db.write() as s:
        await s.execute(
            update(QueuedMessage).where(QueuedMessage.id == qid).values(created_at=utcnow() + timedelta(seconds=2))
        )
    worker = DeliveryWorker(node, queue, relay=relaying("4.4.1", "smtp; 451 4.4.1 plus tard", permanent=False))
    await worker.run_once()
    [r] = await queue.recipients(qid)
    assert (r.status, r.attempts, r.lease_owner) == ("pending", 1, None)
    assert r.last_error == "smtp; 451 4.4.1 plus tard"


async def test_a_dsn_that_cannot_be_built_still_fails_the_recipient(node: Node) -> None:
    """A DSN the builder refuses (here a reporting MTA the configuration now refuses at load, set behind its
    back): the recipient is failed all the same and the refusal audited; left pending, it was claimed and
    relayed again every lease, for ever."""
    object.__setattr__(node.cfg.smtp, "hostname", "mx_1.ch-test.mssante.fr")
    queue = Queue(node.db, node.kek)
    await queued_for_peer(node, queue)
    worker = DeliveryWorker(node, queue, relay=relaying("5.1.1", "smtp; 550 5.1.1 inconnu", permanent=True))
    assert await worker.run_once() == 1
    async with node.db.read() as s:
        assert (await s.execute(select(func.count()).select_from(QueuedMessage))).scalar_one() == 0
    assert await worker.run_once(now=utcnow() + timedelta(minutes=10)) == 0
    [record] = await query(node.audit_db, action="queue.failed")
    assert record["response"]["status"] == "5.1.1"
    assert "is not a DNS host name" in record["response"]["dsn_error"]
    assert await query(node.audit_db, action="queue.dsn.sent") == []


async def bodies(n: Node, address: str) -> list[bytes]:
    """`address`'s stored messages, opened, oldest first."""
    async with n.db.read() as s:
        ids = (
            (
                await s.execute(
                    select(StoredMessage.id).where(StoredMessage.address == address).order_by(StoredMessage.id)
                )
            )
            .scalars()
            .all()
        )
    got = await MessageStore(n.mailboxes).get_many(address, list(ids))
    return [got[i] for i in ids]


def relayed_ok() -> Relay:
    async def relay(domain: str, env: Envelope, jobs: Sequence[Job], body: bytes) -> list[Result]:
        return [Result(j.recipient, True, remote_mta="mx.ch-pair.mssante.fr") for j in jobs]

    return relay


async def test_a_relayed_message_without_its_notice_in_time_gets_one_failure_dsn(node: Node) -> None:
    """Domain brief §7: the sending side waits `[queue] notice_timeout` for the peer's notice, then tells the
    sender once (4.4.7) in the transaction that settles the tracking; a notice after that is late."""
    queue = Queue(node.db, node.kek)
    body = b"Message-ID: <cr.9@here>\r\nSubject: x\r\n\r\nx\r\n"
    await queue.enqueue(
        source="submission",
        sender=RCPT,
        recipients=[REMOTE],
        body=body,
        local_domains=node.cfg.node.local_domains,
        header_message_id="<cr.9@here>",
    )
    worker = DeliveryWorker(node, queue, relay=relayed_ok())
    assert await worker.run_once() == 1
    [tracked] = await query(node.audit_db, action=AuditEvent.NOTICE_TRACKED)
    assert tracked["response"] == {"rcpts": [REMOTE], "message_id": "<cr.9@here>", "final_delivery": False}
    assert await node.tracking.state(RCPT, "<cr.9@here>", REMOTE) == ("waiting", None)
    assert await worker.expire_notices() == 0  # not overdue yet
    later = utcnow() + timedelta(hours=1, seconds=1)
    assert await worker.expire_notices(later) == 1
    assert await worker.expire_notices(later) == 0  # settled once
    assert await node.tracking.state(RCPT, "<cr.9@here>", REMOTE) == ("done", "timeout")
    [timeout] = await query(node.audit_db, action=AuditEvent.NOTICE_TIMEOUT)
    assert timeout["principal"] == RCPT
    assert {k: timeout["response"][k] for k in ("rcpt", "message_id", "waited_for")} == {
        "rcpt": REMOTE,
        "message_id": "<cr.9@here>",
        "waited_for": "processed",
    }
    assert await worker.run_once() == 1  # the DSN, delivered to the sender
    [dsn] = await bodies(node, RCPT)
    assert f"Final-Recipient: rfc822; {REMOTE}\r\nAction: failed\r\nStatus: 4.4.7\r\n".encode() in dsn
    unfolded = dsn.replace(b"\r\n ", b" ")
    assert b"Diagnostic-Code: x-mssgw; no delivery notification from the recipient's operator within 1h\r\n" in unfolded
    assert b"Message-ID: <cr.9@here>\r\n" in dsn  # the headers part names the message
    assert b"From: Postmaster <MAILER-DAEMON@" in dsn
    # Notifications are not tracked (no notice about a notice), nor what the peer answers with none (a read
    # receipt, an automatic reply), nor a message without a Message-ID.
    for source, mid, head in (
        ("dsn", "<d@here>", b""),
        ("mdn", "<m@here>", b""),
        ("submission", None, b""),
        ("submission", "<lu@here>", b"Content-Type: Multipart/Report; report-type=disposition-notification\r\n"),
        ("submission", "<auto@here>", b"Auto-Submitted: auto-replied\r\n"),
    ):
        await queue.enqueue(
            source=source,
            sender="" if source != "submission" else RCPT,
            recipients=[REMOTE],
            body=head + b"Subject: n\r\n\r\nn\r\n",
            local_domains=node.cfg.node.local_domains,
            header_message_id=mid,
        )
    assert await worker.run_once() == 5
    assert len(await query(node.audit_db, action=AuditEvent.NOTICE_TRACKED)) == 1


async def test_a_peers_message_asking_for_it_gets_a_dispatched_mdn_with_its_delivery(node: Node) -> None:
    """Queued when it came (here by hand), a peer's message asking for Direct's final delivery notice gets
    our dispatched MDN queued in the delivery's transaction; one that does not ask gets none."""
    queue = Queue(node.db, node.kek)
    peer = "dr.durand@ch-peer.mssante.fr"
    for n, final in enumerate((True, False)):
        # The request is read from the inner message when it came (a mailbox keeping the S/MIME form is queued
        # the outer one, which does not carry it): the header alone asks nothing here.
        await queue.enqueue(
            source="relay",
            sender=peer,
            recipients=[RCPT],
            body=f"Message-ID: <r{n}@peer>\r\nDisposition-Notification-Options: X-DIRECT-FINAL-DESTINATION-DELIVERY"
            "=optional,true\r\nSubject: x\r\n\r\nx\r\n".encode(),
            local_domains=node.cfg.node.local_domains,
            header_message_id=f"<r{n}@peer>",
            final_notice=final,
        )
    worker = DeliveryWorker(node, queue)
    assert await worker.run_once() == 2
    [queued] = await query(node.audit_db, action=AuditEvent.MDN_QUEUED)
    assert queued["response"]["rcpt"] == RCPT
    assert queued["response"]["dispatched"] is True
    [mdn_id] = queued["response"]["mdn_queue_ids"]
    [entry] = [m for m in await queue.list() if m["id"] == mdn_id]
    assert (entry["source"], entry["sender"], [r["recipient"] for r in entry["recipients"]]) == ("mdn", "", [peer])
    notice = await queue.body(mdn_id)
    assert f"From: {RCPT}\r\nTo: {peer}\r\n".encode() in notice
    assert (
        b"Original-Message-ID: <r0@peer>\r\nDisposition: automatic-action/MDN-sent-automatically; dispatched\r\n"
        in notice
    )
