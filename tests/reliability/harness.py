"""Crash harness: nodes run and SIGKILLed by the test, SMTP submitters that survive it, and the checks after.

- On SQLite one node; on PostgreSQL two nodes of the operator share the database (`second_node`), and a
  kill takes one of them down while the other goes on serving and takes over its leases.
- `Supervisor` runs `mssgw serve` as a child process (stdout read up to `ready` for the listeners' ports,
  standard error appended to a file for post-mortems), kills it with SIGKILL and starts it again; every
  start has new ports, so clients ask a supervisor (a node at random) for its submission port at each connection.
- `Submitter` threads send numbered messages over STARTTLS + AUTH, streaming DATA in chunks (so that a kill
  can land inside DATA), and record a message as acknowledged only when its `250` arrives.
- Each message is generated from its number and the run's seed: its marker is in the Subject and the body,
  the body (1 KB to ~200 KB) ends with a checksum line and an end line, and the test keeps the SHA-256 of
  the exact body bytes, which the gateway must deliver unchanged.
- The checks read the store and the audit log directly (the nodes are stopped by then): INBOX UIDs and
  decrypted bodies, the queue, and the audit records of accepted messages and deliveries.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email
import email.policy
import hashlib
import json
import math
import random
import re
import signal
import smtplib
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import IO

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.conftest import DOMAIN, NodeDir

PASSWORD = "Horse-Battery-Staple-42"
DOCTOR = f"claire.martin@{DOMAIN}"
NURSE = f"lucas.bernard@{DOMAIN}"
MAILBOXES = (DOCTOR, NURSE)


@dataclass(frozen=True)
class Parties:
    """Who sends (and logs in with what) and the two mailboxes messages go to (`second` most often)."""

    sender: str = DOCTOR
    password: str = PASSWORD
    first: str = DOCTOR
    second: str = NURSE

    @property
    def mailboxes(self) -> tuple[str, str]:
        return self.first, self.second


LEASE = 2
"""Queue lease (s) in the crash node's config: a recipient claimed by a killed node is due again after it."""

MIN_SIZE, MAX_SIZE = 1024, 200 * 1024
CHUNK = 16 * 1024
QUEUED = re.compile(r"(?:queued|delivered) as ([0-9a-f]{32})")


def provision(node: NodeDir, *, store_url: str | None = None, audit_url: str | None = None) -> None:
    """The two mailboxes the crash test uses, and a configuration fit for it (on PostgreSQL when given URLs)."""
    if store_url is not None:
        assert audit_url is not None
        text = node.config.read_text()
        edited = re.sub(r'(?m)^url = ".*"$', f'url = "{store_url}"', text)
        edited = re.sub(r'(?m)^audit_url = ".*"$', f'audit_url = "{audit_url}"', edited)
        assert edited.count(store_url) == 1
        assert edited.count(audit_url) == 1
        node.config.write_text(edited)
    for argv in (
        ["mailbox", "add", DOCTOR, "--type", "PER", "--idnat", "810000000009", "--last-name", "MARTIN"],
        ["mailbox", "add", NURSE, "--type", "PER", "--idnat", "810000000017"],
    ):
        r = node.cli(*argv, "--password-stdin", input=PASSWORD + "\n")
        assert r.code == 0, r.err
    text = node.config.read_text()
    # A short lease, so that recipients claimed by a killed node are taken again within the test; the
    # operational log in a file, not on a pipe nobody reads while the node runs.
    edited = re.sub(r"(?m)^lease = \d+$", f"lease = {LEASE}", text)
    edited = re.sub(r"(?m)^# log_file = ", "log_file = ", edited)
    assert edited.count(f"lease = {LEASE}") == 1
    assert '\nlog_file = "' in edited
    node.config.write_text(edited)


def second_node(node: NodeDir, name: str = "node2") -> Path:
    """The configuration of another node of the same operator (same data directory, keys and database)."""
    text = node.config.read_text()
    edited = re.sub(r'(?m)^name = "node1"$', f'name = "{name}"', text)
    edited = re.sub(r'(?m)^log_file = "(.*)\.jsonl"$', rf'log_file = "\1-{name}.jsonl"', edited)
    assert edited.count(f'name = "{name}"') == 1
    assert f'-{name}.jsonl"' in edited
    path = node.data / f"{name}.toml"
    path.write_text(edited)
    return path


# -- messages -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    number: int
    marker: str
    recipients: tuple[str, ...]
    data: bytes  # what the client sends (header block and body, CRLF line ends)
    body_sha256: str  # of the body bytes after the header block

    @property
    def size(self) -> int:
        return len(self.data)


def make_message(seed: int, number: int, parties: Parties | None = None) -> Message:
    p = parties or Parties()
    rng = random.Random(f"{seed}/{number}")
    marker = f"CRASH-{seed}-{number:06d}"
    roll = rng.random()
    recipients = (p.second,) if roll < 0.7 else (p.first,) if roll < 0.85 else (p.second, p.first)
    size = int(math.exp(rng.uniform(math.log(MIN_SIZE), math.log(MAX_SIZE))))
    text = base64.b64encode(rng.randbytes(size * 3 // 4)).decode()
    payload = [text[i : i + 76] for i in range(0, len(text), 76)]
    digest = hashlib.sha256("\n".join(payload).encode()).hexdigest()
    body_lines = [f"marker: {marker}", *payload, f"checksum: sha256 {digest}", f"end: {marker}"]
    body = ("\r\n".join(body_lines) + "\r\n").encode()
    headers = (
        f"From: Claire MARTIN <{p.sender}>\r\n"
        f"To: {', '.join(recipients)}\r\n"
        f"Subject: crash test {marker}\r\n"
        f"Date: {formatdate(localtime=False)}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
    ).encode()
    return Message(number, marker, recipients, headers + body, hashlib.sha256(body).hexdigest())


@dataclass(frozen=True)
class Delivered:
    marker: str
    body_sha256: str


def check_delivered(raw: bytes) -> Delivered:
    """Parse a delivered message and check that it is whole; raises AssertionError otherwise."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert not msg.defects, msg.defects
    subject = str(msg["Subject"] or "")
    found = re.fullmatch(r"crash test (CRASH-\d+-\d{6})", subject)
    assert found, f"unexpected Subject {subject!r}"
    marker = found.group(1)
    assert msg["Received"] is not None, f"{marker}: no Received: field"
    assert msg["Message-ID"] is not None, f"{marker}: no Message-ID: field"
    _, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"{marker}: no header/body separator"
    lines = body.decode("ascii").split("\r\n")
    assert lines[-1] == "", f"{marker}: body does not end with CRLF (truncated?)"
    lines = lines[:-1]
    assert len(lines) >= 3, f"{marker}: body too short ({len(body)} bytes)"
    assert lines[0] == f"marker: {marker}", f"{marker}: first body line {lines[0][:80]!r}"
    assert lines[-1] == f"end: {marker}", f"{marker}: last body line {lines[-1][:80]!r} (truncated?)"
    digest = hashlib.sha256("\n".join(lines[1:-2]).encode()).hexdigest()
    assert lines[-2] == f"checksum: sha256 {digest}", f"{marker}: checksum mismatch (partial or corrupted body)"
    return Delivered(marker, hashlib.sha256(body).hexdigest())


# -- the node under test --------------------------------------------------------------------------------


@dataclass
class Kill:
    node: str
    mode: str
    uptime: float  # seconds the node had served before the kill
    in_data: int  # client transactions between DATA and its reply at the moment of the kill
    queued: int  # queue rows left by the killed node
    leased: int  # recipients it held under lease (claimed, being delivered)


class Supervisor:
    """Starts, kills and restarts one `mssgw serve` process; clients read the current port from it."""

    def __init__(self, node: NodeDir, stderr_path: Path, config: Path | None = None, name: str = "node1") -> None:
        self.node = node
        self.config = config or node.config
        self.name = name
        self.stderr_path = stderr_path
        self.cond = threading.Condition()
        self.proc: subprocess.Popen[str] | None = None
        self.ports: dict[str, int] = {}
        self.generation = 0
        self.started_at = 0.0
        self._stderr: IO[str] | None = None

    def start(self) -> None:
        assert self.proc is None
        self._stderr = self.stderr_path.open("a")
        self._stderr.write(f"--- start {self.generation + 1}\n")
        self._stderr.flush()
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli.main", "serve", "-c", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        assert proc.stdout is not None
        ports: dict[str, int] = {}
        for line in proc.stdout:
            line = line.strip()
            if line == "ready":
                break
            kind, name, where = line.split(" ")
            assert kind == "listening", line
            ports[name] = int(where.rsplit(":", 1)[1])
        else:
            proc.wait(timeout=30)
            raise AssertionError(f"the node stopped before it was ready; see {self.stderr_path}")
        with self.cond:
            self.proc, self.ports = proc, ports
            self.generation += 1
            self.started_at = time.monotonic()
            self.cond.notify_all()

    def _detach(self) -> subprocess.Popen[str]:
        with self.cond:
            proc, self.proc, self.ports = self.proc, None, {}
        assert proc is not None
        return proc

    def _close(self, proc: subprocess.Popen[str]) -> None:
        if proc.stdout is not None:
            proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def kill(self) -> float:
        """SIGKILL the node; returns how long it had been serving."""
        uptime = time.monotonic() - self.started_at
        proc = self._detach()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL, proc.returncode
        self._close(proc)
        return uptime

    def stop(self) -> int:
        """SIGTERM: the clean way out; returns the exit status."""
        proc = self._detach()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            self._close(proc)
        return code

    def alive(self) -> bool:
        with self.cond:
            return self.proc is not None and self.proc.poll() is None

    @property
    def incarnation(self) -> tuple[str, int]:
        return self.name, self.generation

    def submission_port(self, timeout: float) -> tuple[tuple[str, int], int] | None:
        """(incarnation, port) of the running node, waiting up to `timeout` for one."""
        with self.cond:
            if self.cond.wait_for(lambda: self.proc is not None, timeout):
                return self.incarnation, self.ports["submission"]
        return None


def count(node: NodeDir, sql: str) -> int:
    """One count straight from the node's store, SQLite or PostgreSQL."""
    url = node.cfg().db_url(node.cfg().store.url)
    if url.startswith("sqlite"):
        with sqlite3.connect(node.data / "mssgw.db", timeout=10) as db:
            return int(db.execute(sql).fetchone()[0])

    async def ask() -> int:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                return int(await conn.scalar(text(sql)) or 0)
        finally:
            await engine.dispose()

    return asyncio.run(ask())


def queue_state(node: NodeDir) -> tuple[int, int]:
    """(queued messages, recipients under lease) straight from the store."""
    queued = count(node, "SELECT count(*) FROM queue_messages")
    leased = count(node, "SELECT count(*) FROM queue_recipients WHERE status = 'pending' AND lease_owner IS NOT NULL")
    return queued, leased


# -- clients --------------------------------------------------------------------------------------------


@dataclass
class Ledger:
    """What the clients did, shared between threads."""

    seed: int
    parties: Parties = field(default_factory=Parties)
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_number: int = 0
    sent: dict[int, Message] = field(default_factory=dict)  # DATA started
    acked: dict[int, str] = field(default_factory=dict)  # number -> queue id from the 250
    refused: list[str] = field(default_factory=list)  # any other final reply from a live node
    connection_errors: int = 0
    in_data: int = 0
    data_started: threading.Event = field(default_factory=threading.Event)
    acknowledged: threading.Event = field(default_factory=threading.Event)
    acks_by_generation: Counter[tuple[str, int]] = field(default_factory=Counter)  # by node incarnation
    served: threading.Condition = field(default_factory=threading.Condition)

    def ack(self, number: int, queue_id: str, generation: tuple[str, int]) -> None:
        with self.lock:
            self.acked[number] = queue_id
        with self.served:
            self.acks_by_generation[generation] += 1
            self.served.notify_all()
        self.acknowledged.set()

    def wait_for_ack(self, generation: tuple[str, int], timeout: float) -> bool:
        """Wait until the node incarnation `generation` (name, start number) has acknowledged a message."""
        with self.served:
            return self.served.wait_for(lambda: self.acks_by_generation[generation] > 0, timeout)

    def take(self) -> Message:
        with self.lock:
            self.next_number += 1
            number = self.next_number
        return make_message(self.seed, number, self.parties)


class Refused(Exception):
    pass


class Submitter(threading.Thread):
    def __init__(self, name: str, supervisors: list[Supervisor], ledger: Ledger, stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self.supervisors = supervisors  # the nodes of the operator: each connection goes to one at random
        self.ledger = ledger
        self.halt = stop
        self.client: smtplib.SMTP | None = None
        self.generation: tuple[str, int] = ("", 0)  # the node incarnation the client is connected to
        self.rng = random.Random(name)
        self.tls = ssl.create_default_context(cafile=str(supervisors[0].node.data / "pki-root.pem"))
        self.tls.check_hostname = False  # 127.0.0.1; the chain is still verified
        self.crash: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                self._one()
        except BaseException as exc:  # reported by the test
            self.crash = exc
        finally:
            self._drop()

    def _drop(self) -> None:
        if self.client is not None:
            with contextlib.suppress(OSError):
                self.client.close()
            self.client = None

    def _connect(self) -> smtplib.SMTP | None:
        order = self.rng.sample(self.supervisors, len(self.supervisors))
        found = next((f for f in (s.submission_port(timeout=0) for s in order) if f is not None), None)
        if found is None:
            found = order[0].submission_port(timeout=0.5)
        if found is None:
            return None
        self.generation, port = found
        client = smtplib.SMTP("127.0.0.1", port, timeout=20)
        try:
            client.ehlo("crash.example")
            client.starttls(context=self.tls)
            client.ehlo("crash.example")
            client.login(self.ledger.parties.sender, self.ledger.parties.password)
        except BaseException:
            client.close()
            raise
        return client

    def _one(self) -> None:
        ledger = self.ledger
        try:
            if self.client is None:
                self.client = self._connect()
                if self.client is None:
                    return
            msg = ledger.take()
            self._send(self.client, msg)
            if len(self.supervisors) > 1 and self.rng.random() < 0.25:
                self._drop()  # connect again, to a node at random: a restarted node gets clients back
        except Refused as exc:
            with ledger.lock:
                ledger.refused.append(str(exc))
            self._drop()
        except (OSError, smtplib.SMTPException):
            with ledger.lock:
                ledger.connection_errors += 1
            self._drop()
            time.sleep(0.05)

    def _send(self, client: smtplib.SMTP, msg: Message) -> None:
        ledger = self.ledger
        code, reply = client.mail(ledger.parties.sender)
        if code != 250:
            raise Refused(f"MAIL: {code} {reply!r}")
        for rcpt in msg.recipients:
            code, reply = client.rcpt(rcpt)
            if code != 250:
                raise Refused(f"RCPT {rcpt}: {code} {reply!r}")
        client.putcmd("data")
        code, reply = client.getreply()
        if code != 354:
            raise Refused(f"DATA: {code} {reply!r}")
        with ledger.lock:
            ledger.sent[msg.number] = msg
            ledger.in_data += 1
        try:
            if msg.size > 2 * CHUNK:
                ledger.data_started.set()
            data = re.sub(rb"(?m)^\.", b"..", msg.data)
            for i in range(0, len(data), CHUNK):
                client.send(data[i : i + CHUNK])
                time.sleep(0.002)  # DATA lasts long enough for a kill to land inside it
            client.send(b".\r\n")
            code, reply = client.getreply()
        finally:
            with ledger.lock:
                ledger.in_data -= 1
        if code != 250:
            raise Refused(f"end of DATA for {msg.marker}: {code} {reply!r}")
        queued = QUEUED.search(reply.decode())
        assert queued, reply
        ledger.ack(msg.number, queued.group(1), self.generation)


# -- after the run --------------------------------------------------------------------------------------


@dataclass
class StoreView:
    inbox: dict[str, list[tuple[int, bytes]]]  # address -> (uid, body) by UID
    uidnext: dict[str, int]
    queue: list[dict[str, object]]
    accepted: dict[str, int]  # queue id -> smtp.message.accepted records
    delivered_audits: Counter[tuple[str, int]]  # (recipient, uid) -> queue.delivered records


def read_store(node: NodeDir, mailboxes: tuple[str, ...] = MAILBOXES) -> StoreView:
    from sqlalchemy import select

    from gateway.audit.models import AuditRecord
    from gateway.node import Node
    from gateway.queue.store import Queue
    from gateway.store.messages import MessageStore
    from gateway.store.models import Folder, StoredMessage

    async def read() -> StoreView:
        async with Node(node.cfg()) as n:
            store = MessageStore(n.mailboxes)
            inbox: dict[str, list[tuple[int, bytes]]] = {}
            uidnext: dict[str, int] = {}
            for address in mailboxes:
                async with n.db.read() as s:
                    rows = (
                        await s.execute(
                            select(StoredMessage.uid, StoredMessage.id)
                            .join(Folder, Folder.id == StoredMessage.folder_id)
                            .where(Folder.address == address, Folder.name == "INBOX")
                            .order_by(StoredMessage.uid, StoredMessage.id)
                        )
                    ).all()
                    uidnext[address] = (
                        await s.execute(select(Folder.uidnext).where(Folder.address == address, Folder.name == "INBOX"))
                    ).scalar_one()
                inbox[address] = [(int(uid), await store.get(address, mid)) for uid, mid in rows]
            queue = await Queue(n.db, n.kek).list()
            accepted: dict[str, int] = Counter()
            delivered: Counter[tuple[str, int]] = Counter()
            async with n.audit_db.read() as s:
                records = (
                    await s.execute(
                        select(AuditRecord.action, AuditRecord.response).where(
                            AuditRecord.action.in_(("smtp.message.accepted", "queue.delivered"))
                        )
                    )
                ).all()
            for action, response in records:
                facts = json.loads(response)
                if action == "smtp.message.accepted":
                    accepted[facts["queue_id"]] += 1
                else:
                    delivered[(facts["rcpt"], int(facts["uid"]))] += 1
            return StoreView(inbox, uidnext, queue, dict(accepted), delivered)

    return asyncio.run(read())


def wait_for_empty_queue(node: NodeDir, supervisors: list[Supervisor], timeout: float) -> None:
    """Poll the store until the running nodes have delivered everything (leases of killed nodes included)."""
    deadline = time.monotonic() + timeout
    while True:
        assert all(s.alive() for s in supervisors), "a node died while draining the queue"
        left = count(node, "SELECT count(*) FROM queue_messages")
        if left == 0:
            return
        if time.monotonic() > deadline:
            shown = node.cli("queue", "list", "--json")
            raise AssertionError(f"{left} messages still queued after {timeout} s:\n{shown.out[:4000]}")
        time.sleep(0.2)
