"""Two `mssgw serve` nodes of one operator on one PostgreSQL database (issue 7).

The idle look (`imap.idle_check`) is set to a minute, so an IDLE session learns of a delivery within
seconds only through a notice: the other node's travels over LISTEN/NOTIFY.
"""

from __future__ import annotations

import asyncio
import re
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from gateway.node import Node
from gateway.queue.store import Queue
from tests.conftest import NodeDir
from tests.pg import PostgresCluster
from tests.reliability.harness import DOCTOR, LEASE, NURSE, PASSWORD, Supervisor, provision, second_node


@pytest.fixture
def two_nodes(node: NodeDir, pg_cluster: PostgresCluster, tmp_path: Path) -> Iterator[list[Supervisor]]:
    store, audit = pg_cluster.create_database("scale_store"), pg_cluster.create_database("scale_audit")
    provision(node, store_url=pg_cluster.url(store), audit_url=pg_cluster.url(audit))
    text = node.config.read_text()
    assert text.count("\nidle_check = 1.0\n") == 1
    node.config.write_text(text.replace("\nidle_check = 1.0\n", "\nidle_check = 60\n"))
    nodes = [
        Supervisor(node, tmp_path / "node1.stderr"),
        Supervisor(node, tmp_path / "node2.stderr", second_node(node), "node2"),
    ]
    try:
        for s in nodes:
            s.start()
        yield nodes
    finally:
        for s in nodes:
            if s.alive():
                s.kill()
        pg_cluster.drop_database(store)
        pg_cluster.drop_database(audit)


def tls(node: NodeDir) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(node.data / "pki-root.pem"))
    ctx.check_hostname = False  # 127.0.0.1; the chain is still verified
    return ctx


class Idler:
    """A raw IMAPS session (imaplib has no IDLE before Python 3.14) idling on INBOX."""

    def __init__(self, node: NodeDir, port: int) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = tls(node).wrap_socket(raw)
        self.file = self.sock.makefile("rb")
        assert self.file.readline().startswith(b"* OK")
        self.command(b"a1", f'LOGIN {NURSE} "{PASSWORD}"'.encode())
        self.command(b"a2", b"SELECT INBOX")
        self.sock.sendall(b"a3 IDLE\r\n")
        assert self.file.readline() == b"+ idling\r\n"

    def command(self, tag: bytes, text: bytes) -> list[bytes]:
        self.sock.sendall(tag + b" " + text + b"\r\n")
        lines = []
        while not (line := self.file.readline()).startswith(tag + b" "):
            lines.append(line)
        assert line.startswith(tag + b" OK"), line
        return lines

    def exists(self, timeout: float) -> bytes:
        """The next EXISTS response (RECENT and FETCH lines skipped), or what ended the wait."""
        self.sock.settimeout(timeout)
        while (line := self.file.readline()).endswith((b" RECENT\r\n", b")\r\n")):
            pass
        return line

    def close(self) -> None:
        self.sock.sendall(b"DONE\r\n")
        self.sock.close()


def submit(node: NodeDir, port: int, subject: str) -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.starttls(context=tls(node))
        client.login(DOCTOR, PASSWORD)
        message = f"From: {DOCTOR}\r\nTo: {NURSE}\r\nSubject: {subject}\r\n\r\nbody\r\n"
        assert client.mail(DOCTOR)[0] == 250
        assert client.rcpt(NURSE)[0] == 250
        code, reply = client.data(message.encode())
    assert code == 250, reply
    found = re.search(r"(?:queued|delivered) as ([0-9a-f]{32})", reply.decode())
    assert found
    return found.group(1)


def test_idle_on_each_node_wakes_when_either_delivers(two_nodes: list[Supervisor]) -> None:
    node = two_nodes[0].node
    one, two = two_nodes
    idlers = [Idler(node, one.ports["imaps"]), Idler(node, two.ports["imaps"])]
    try:
        for n, sender in enumerate((one, two, two), 1):
            started = time.monotonic()
            submit(node, sender.ports["submission"], f"scale-out {n}")
            for idler in idlers:
                assert idler.exists(timeout=10) == f"* {n} EXISTS\r\n".encode()
            # Within a few seconds whichever node delivered: far below the minute of the idle look.
            assert time.monotonic() - started < 8
    finally:
        for idler in idlers:
            idler.close()
    # Each node delivered what it accepted (local recipients: at acceptance), and the other's IDLE
    # sessions heard of it: the audit log names the node of each delivery.
    for s in two_nodes:
        assert s.stop() == 0
    assert [e["author"] for e in _deliveries(node)] == ["smtp:node1", "smtp:node2", "smtp:node2"]


def test_work_claimed_by_a_dead_node_is_delivered_by_the_other_after_its_lease(two_nodes: list[Supervisor]) -> None:
    one, two = two_nodes
    node = one.node
    one.kill()
    two.kill()
    body = b"From: " + DOCTOR.encode() + b"\r\nTo: " + NURSE.encode() + b"\r\nSubject: orphan\r\n\r\nbody\r\n"

    async def leave_a_claim() -> float:
        # What node 1 leaves when it dies mid-delivery: a recipient claimed under its name.
        async with Node(node.cfg()) as n:
            queue = Queue(n.db, n.kek)
            await queue.enqueue(
                source="submission",
                sender=DOCTOR,
                recipients=[NURSE],
                body=body,
                local_domains=n.cfg.node.local_domains,
                principal=DOCTOR,
            )
            claim = await queue.claim(owner="node1", lease=timedelta(seconds=LEASE))
            assert len(claim.jobs) == 1
            return time.time()

    claimed_at = asyncio.run(leave_a_claim())
    two.start()  # node 2 frees only its own leases at start: node 1's must run out first
    deadline = time.monotonic() + 20
    while not (delivered := _deliveries(node)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [e["author"] for e in delivered] == ["queue:node2"]
    at = datetime.fromisoformat(str(delivered[0]["ts"])).timestamp()
    assert at >= claimed_at + LEASE - 0.5  # not before node 1's lease ran out
    assert node.cli("queue", "list", "--json").json() == []


def _deliveries(node: NodeDir) -> list[dict[str, object]]:
    found = node.cli("audit", "search", "--event", "queue.delivered", "--json").json()
    assert isinstance(found, list)
    return found


def test_a_second_node_of_the_same_name_is_refused(two_nodes: list[Supervisor]) -> None:
    """Leases are held under the node's name: a second `node1` would free the first one's at start."""
    node = two_nodes[0].node
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "serve", "-c", str(node.config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "a node named 'node1' is already serving from this database: give each node its own [node] name" in (
        proc.stderr
    )
    assert two_nodes[0].alive()
