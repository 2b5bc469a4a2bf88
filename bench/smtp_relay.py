"""Benchmark of the SMTP path: submission at operator A, relay to B over mutual TLS, delivery into B's mailboxes.

    python bench/smtp_relay.py [--messages 2000] [--concurrency 8] [--size 10240] [--per-connection 0]
                               [--latency N [--latency-rate R] [--arrivals poisson|fixed] [--seed 1]]
                               [--processes per-operator|one] [--no-postfix] [--py-spy FILE] [--keep DIR]
                               [--json FILE]

Lays out the demo trust space (`mssgw demo init`) and serves it: by default each operator as its own
process, `mssgw serve -c DIR/<operator>/mssgw.toml`, as deployed (each node its own process, event loop
and databases; its operational log in DIR/log/<operator>.jsonl); with `--processes one`, both operators
in one process and one event loop (`mssgw demo run`). Then it measures, in this order and in this one run:

  (a) reference, when Postfix's tools are installed and this runs as root: `smtp-source` submitting the
      same number of messages of the same size with the same concurrency (one connection per session,
      `-d`) to a private Postfix instance on loopback, which relays them to `smtp-sink`
      (`relayhost = [127.0.0.1]:port`). The instance lives in a temporary directory of its own (config,
      queue, data, log), is started with `postfix -c DIR start` and stopped afterwards: the system's
      Postfix, if any, is never touched. Postfix queues each message durably (fsync before 250) but
      here speaks plain SMTP (smtp-source has no TLS nor AUTH) and hands messages to a sink, not to
      encrypted mailboxes: the reference is an MTA's relay machinery on the same machine.
  (b) mssgw: `--concurrency` clients (aiosmtplib) each open one submission connection to operator A
      (STARTTLS, AUTH PLAIN) and send their share of the messages over it (`--per-connection` caps the
      messages per connection; 0: no cap, like smtp-source -d), addressed to operator B's mailboxes;
      A queues each message durably, relays it to B over mutual TLS, B queues it durably and delivers
      it into the mailbox, encrypted at rest.
  (c) with `--latency N`, after (b), in the same trust space and servers, once both queues are empty:
      the submit-to-mailbox latency at half the peak rate. N messages are offered open loop at half
      (b)'s delivered rate (or `--latency-rate`): Poisson arrivals by default (exponential gaps of mean
      1/rate, seeded; `--arrivals fixed`: a message every 1/rate s). Each starts on schedule on a free
      submission connection of its sender (a new one is opened when all are busy, so that a slow reply
      never holds back the next message) and is timed from the moment the client wrote the end of DATA
      (<CRLF>.<CRLF>) to the moment an IMAP IDLE session on its recipient's INBOX at B, opened
      beforehand, was told `* N EXISTS`: what the recipient's client sees, through the server's real
      notification path, without a polling interval in the figure and without adding load per message
      (sequence numbers are mapped to messages afterwards from B's store, in UID order). Also given:
      the end of DATA to the row's write time in B's store, and to the 250 at A. p50/p99/max, the
      offered and achieved rates, and how late the open loop started messages against the schedule.

For each it prints the messages delivered, the wall time from the first connection to the last
delivery, the end-to-end rate (delivered messages per second), the submission rate (250 replies per
second until the last one), p50/p99 of the latency from submission to delivery (mssgw: from the
client's MAIL FROM to the row in B's `messages` table; Postfix: the `delay=` of its log, from queue
arrival to the sink's reply), the whole machine's CPU use over the run (in CPUs; other work on the
machine counts too: the machine line gives the load average at the start), and the ratio to Postfix.
Delivery at B is counted in B's database (`messages` rows carrying the benchmark's Message-IDs); the
mssgw servers' own CPU time per message (summed over their processes, without the S/MIME pools'
workers) is printed too. `--py-spy FILE` samples each mssgw process during (b) (needs py-spy:
`pip install py-spy`; with a process per operator, one file each, e.g. FILE relay.txt:
relay.operator-a.txt and relay.operator-b.txt). The exit status is 1 when a message was not
delivered. The issue's target for later is mssgw >= 1.0x Postfix; today the script only measures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import pty
import pwd
import random
import re
import secrets
import select
import shutil
import signal
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import aiosmtplib
from common import (  # bench/common.py
    cli_env,
    cores_busy,
    cpu_times,
    free_ports,
    gone,
    last_line,
    one_line,
    percentile,
    profiled_each,
    py_spy,
    self_cpu_seconds,
    wait_for_port,
)
from imap import Client as ImapClient  # bench/imap.py: the small IMAP client, for the IDLE observers

ROOT = Path(__file__).resolve().parents[1]
A, B = "hopital-a.mssante.test", "clinique-b.mssante.test"
SENDERS = (f"claire.martin@{A}", f"lucas.bernard@{A}")
RECIPIENTS = (f"paul.durand@{B}", f"accueil@{B}")
STALL_SECONDS = 120.0  # give up waiting for deliveries after this long without a new one
TARGET_RATIO = 1.0  # the later target: mssgw at least as fast as Postfix, end to end
SBIN = ("/usr/sbin", "/usr/lib/postfix/sbin", "/sbin")
POSTFIX_LABEL = "(a) smtp-source -> Postfix -> smtp-sink (reference)"
MSSGW_LABEL = "(b) mssgw: submission A -> relay -> mailbox B"
LATENCY_LABEL = "(c) mssgw open loop at half the peak rate: end of DATA -> mailbox B"


@dataclass
class Phase:
    label: str
    messages: int
    delivered: int
    seconds: float  # first connection to last delivery
    submit_seconds: float  # first connection to last 250
    latencies_ms: list[float] = field(default_factory=list)
    cpu_busy: float | None = None  # the whole machine's CPU use over the run, in cores
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else 0.0

    @property
    def submit_rate(self) -> float:
        return self.messages / self.submit_seconds if self.submit_seconds > 0 else 0.0

    def percentile(self, p: float) -> float | None:
        """Nearest-rank percentile of the latencies, in ms."""
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
        return ordered[rank - 1]


# -- machine -------------------------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a running process (Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tool(name: str) -> str | None:
    """A Postfix tool: on PATH, or in the sbin directories a non-root PATH may lack."""
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN))


def machine() -> dict[str, Any]:
    postconf = tool("postconf")
    postfix_version = None
    if postconf is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [postconf, "-d", "-h", "mail_version"], capture_output=True, text=True, timeout=30, check=False
            )
            postfix_version = out.stdout.strip() or None
    return {
        "cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "openssl": ssl.OPENSSL_VERSION.split()[1],
        "postfix": postfix_version,
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


# -- messages ------------------------------------------------------------------------------------


FILLER = b"Compte rendu de consultation: examen clinique, conclusions et conduite a tenir. " * 2


def message(i: int, sender: str, rcpt: str, tag: str, size: int) -> tuple[str, bytes]:
    """Message i: its Message-ID and exactly `size` octets of RFC 5322 text (CRLF lines of at most 78 octets)."""
    message_id = f"<bench-{tag}-{i:07d}@{A}>"
    head = (
        f"From: {sender}\r\nTo: {rcpt}\r\nSubject: Compte rendu {i}\r\nMessage-ID: {message_id}\r\n"
        f"Date: {datetime.now(UTC).strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode()
    body = bytearray()
    room = max(size - len(head), 2)
    while len(body) < room:
        left = room - len(body)
        n = min(78, left)
        if left - n == 1:  # never leave one octet: it cannot make a line
            n -= 1
        body += FILLER[: n - 2] + b"\r\n"
    return message_id, head + bytes(body)


Batch = list[tuple[str, str, bytes]]  # (recipient, Message-ID, message), all of one sender


def shares(n: int, size: int, tag: str, concurrency: int) -> list[tuple[str, Batch]]:
    """Message i goes to client i mod C, which authenticates as one sender; recipients alternate."""
    out: list[tuple[str, Batch]] = [(SENDERS[c % len(SENDERS)], []) for c in range(min(concurrency, n))]
    for i in range(n):
        sender, batch = out[i % len(out)]
        rcpt = RECIPIENTS[i % len(RECIPIENTS)]
        message_id, data = message(i, sender, rcpt, tag, size)
        batch.append((rcpt, message_id, data))
    return out


# -- (b) mssgw -----------------------------------------------------------------------------------


PROCESSES = ("per-operator", "one")  # --processes: each operator its own `mssgw serve`, or both in `mssgw demo run`
PROCESS_TEXT = {
    "per-operator": "one process per operator (mssgw serve)",
    "one": "both operators in one process (mssgw demo run)",
}


@dataclass
class TrustSpace:
    root: Path
    creds: dict[str, Any]
    procs: dict[str, subprocess.Popen[bytes]]  # by operator name, or {"demo": ...} with both in one process
    stderr_paths: dict[str, Path]  # the standard error of each, by the same names
    processes: str = "per-operator"  # how the operators are served: one of PROCESSES

    def operator(self, name: str) -> dict[str, Any]:
        return next(op for op in self.creds["operators"] if op["name"] == name)

    def password(self, address: str) -> str:
        for op in self.creds["operators"]:
            for m in op["mailboxes"]:
                if m["address"] == address:
                    return str(m["password"])
        raise KeyError(address)

    def database(self, name: str) -> Path:
        return self.root / name / "mssgw.db"

    @property
    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()}

    def alive(self) -> bool:
        """Every server process still running."""
        return all(proc.poll() is None for proc in self.procs.values())

    def exited(self) -> dict[str, Any] | None:
        """The first server process found stopped: its name, exit status and last line of standard error."""
        for name, proc in self.procs.items():
            status = proc.poll()
            if status is not None:
                return {"process": name, "status": status, "error": last_line(self.stderr_paths[name])}
        return None

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds of the server processes, summed (None when one cannot be read)."""
        total = 0.0
        for pid in self.pids.values():
            seconds = process_cpu_seconds(pid)
            if seconds is None:
                return None
            total += seconds
        return total


def _stop(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    """SIGTERM every process still running, then wait up to 60 s for each before killing it."""
    running = [proc for proc in procs.values() if proc.poll() is None]
    for proc in running:
        proc.send_signal(signal.SIGTERM)
    for proc in running:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def _await_ready(proc: subprocess.Popen[bytes], ready: Callable[[str], bool], count: int) -> bool:
    """Read proc's standard output until `count` lines satisfy ready(line); False when it ends first."""
    assert proc.stdout is not None
    seen = 0
    for raw in proc.stdout:
        if ready(raw.decode(errors="replace").strip()):
            seen += 1
            if seen == count:
                return True
    return False


@contextlib.contextmanager
def trust_space(workdir: Path, processes: str = "per-operator") -> Iterator[TrustSpace]:
    """The demo trust space, laid out afresh and served until the block ends.

    per-operator: one `mssgw serve -c DIR/<operator>/mssgw.toml` each, as deployed (each its own node:
    process, event loop, databases), their operational logs in DIR/log/<operator>.jsonl; one: both in
    `mssgw demo run DIR` (one process, one event loop, the log in DIR/log/mssgw.jsonl).
    """
    root = workdir / "trust-space"
    if (root / "credentials.json").exists():
        shutil.rmtree(root)  # a previous run's demo, kept with --keep
    init = subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "demo", "init", str(root)],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    if init.returncode != 0:
        raise SystemExit(f"mssgw demo init failed ({init.returncode}):\n{init.stderr}")
    creds = json.loads((root / "credentials.json").read_text(encoding="utf-8"))
    cli = [sys.executable, "-m", "gateway.cli.main"]
    # name -> (argv, extra environment, lines saying "ready" to wait for, how to tell them)
    servers: dict[str, tuple[list[str], dict[str, str], int, Callable[[str], bool]]]
    if processes == "one":
        servers = {"demo": ([*cli, "demo", "run", str(root)], {}, len(creds["operators"]), _demo_ready)}
    else:
        servers = {
            config.parent.name: (
                [*cli, "serve", "-c", str(config)],
                # What `demo run` does for its operators: the operational log in a file, not on stderr.
                {"MSSGW_AUDIT__LOG_FILE": str(root / "log" / f"{config.parent.name}.jsonl")},
                1,
                _serve_ready,
            )
            for config in sorted(root.glob("*/mssgw.toml"))
        }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    stderr_paths = {
        name: workdir / ("mssgw-demo-run.stderr" if processes == "one" else f"mssgw-{name}.stderr") for name in servers
    }
    with contextlib.ExitStack() as files:
        try:
            for name, (argv, extra, _, _) in servers.items():
                stderr = files.enter_context(stderr_paths[name].open("wb"))
                procs[name] = subprocess.Popen(
                    argv, stdout=subprocess.PIPE, stderr=stderr, env={**cli_env(), **extra}, cwd=ROOT
                )
            for name, (_, _, count, ready) in servers.items():
                proc = procs[name]
                if not _await_ready(proc, ready, count):
                    proc.wait(timeout=30)
                    tail = stderr_paths[name].read_text(encoding="utf-8", errors="replace")[-3000:]
                    raise SystemExit(f"mssgw {name} stopped before it was ready ({proc.returncode}):\n{tail}")
            for proc in procs.values():
                # Keep reading its standard output so that it never blocks on a full pipe.
                assert proc.stdout is not None
                threading.Thread(target=proc.stdout.read, daemon=True).start()
            yield TrustSpace(root, creds, procs, stderr_paths, processes)
        finally:
            _stop(procs)


def _demo_ready(line: str) -> bool:
    return line.endswith(": ready")  # `demo run` prefixes each operator's lines with its name


def _serve_ready(line: str) -> bool:
    return line == "ready"


async def submit_all(
    space: TrustSpace, work: list[tuple[str, Batch]], per_connection: int
) -> tuple[dict[str, float], float, float]:
    """Send each client's batch to operator A's submission port, the clients concurrently.

    Returns the time of each message's MAIL FROM by Message-ID, the start, and the time of the last 250.
    """
    port = space.operator("operator-a")["ports"]["submission"]
    tls = ssl.create_default_context(cafile=space.creds["trust_anchor"])
    tls.check_hostname = False  # connecting to 127.0.0.1; the chain is still verified
    started: dict[str, float] = {}
    last_ack = 0.0

    async def client(sender: str, batch: Batch) -> None:
        nonlocal last_ack
        cap = per_connection or len(batch)
        for first in range(0, len(batch), cap):
            smtp = aiosmtplib.SMTP(
                hostname="127.0.0.1", port=port, tls_context=tls, start_tls=True, local_hostname="bench.client.test"
            )
            await smtp.connect()
            await smtp.login(sender, space.password(sender))
            for rcpt, message_id, data in batch[first : first + cap]:
                started[message_id] = time.time()
                refused, _reply = await smtp.sendmail(sender, [rcpt], data)
                if refused:
                    raise RuntimeError(f"{message_id} refused: {refused}")
                last_ack = max(last_ack, time.time())
            await smtp.quit()

    t0 = time.time()
    await asyncio.gather(*(client(sender, batch) for sender, batch in work))
    return started, t0, last_ack


def delivered_at(db: Path, tag: str) -> dict[str, float]:
    """Message-ID -> delivery time (the `created_at` of its row in B's messages table) of this run's messages."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
        rows = conn.execute(
            "SELECT header_message_id, created_at FROM messages WHERE header_message_id LIKE ?",
            (f"<bench-{tag}-%",),
        ).fetchall()
    return {mid: datetime.fromisoformat(at).replace(tzinfo=UTC).timestamp() for mid, at in rows}


def count_delivered(db: Path, tag: str) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
        got = conn.execute(
            "SELECT count(*) FROM messages WHERE header_message_id LIKE ?", (f"<bench-{tag}-%",)
        ).fetchone()
    return int(got[0])


def queue_left(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
        return int(conn.execute("SELECT count(*) FROM queue_recipients").fetchone()[0])


def wait_for(count: Any, target: int, stall: float = STALL_SECONDS, alive: Any = None) -> int:
    """Poll count() until it reaches target, until it has not moved for `stall` seconds, or until alive() is false."""
    got, last_change, last = 0, time.monotonic(), -1
    while True:
        got = int(count())
        if got >= target or (alive is not None and not alive()):
            return got
        now = time.monotonic()
        if got != last:
            last, last_change = got, now
        elif now - last_change > stall:
            return got
        time.sleep(0.1)


@dataclass(frozen=True)
class LatencyPlan:
    """The open-loop phase (c): how many messages, at what rate (None: half the closed-loop rate), how spaced."""

    messages: int
    rate: float | None = None
    arrivals: str = "poisson"  # poisson | fixed
    seed: int = 1
    connections: int = 4


def run_mssgw(
    workdir: Path,
    n: int,
    size: int,
    concurrency: int,
    per_connection: int,
    profile: Path | None = None,
    latency: LatencyPlan | None = None,
    processes: str = "per-operator",
) -> tuple[Phase, dict[str, Any] | None]:
    """(b) the closed-loop phase, then, in the same trust space and servers, (c) the open-loop phase if asked."""
    tag = secrets.token_hex(4)
    work = shares(n, size, tag, concurrency)
    open_loop_result: dict[str, Any] | None = None
    with trust_space(workdir, processes) as space:
        db_b = space.database("operator-b")
        with profiled_each(space.pids, profile):
            cpu0, server0, self0 = cpu_times(), space.cpu_seconds(), self_cpu_seconds()
            started, t0, last_ack = asyncio.run(submit_all(space, work, per_connection))
            got = wait_for(lambda: count_delivered(db_b, tag), n, alive=space.alive)
            if got >= n:
                # B delivers at acceptance, before its 250: A's settling of the last messages can trail
                # B's mailbox count by a moment, and belongs to the measured work.
                wait_drained(space, timeout=30.0)
            cpu1, server1, self1 = cpu_times(), space.cpu_seconds(), self_cpu_seconds()
        exited = space.exited()
        times = delivered_at(db_b, tag)
        left_a, left_b = queue_left(space.database("operator-a")), queue_left(db_b)
        end = max(times.values(), default=last_ack)
        peak = got / (end - t0) if end > t0 and got else None
        if latency is not None and exited is None and (latency.rate or peak):
            rate = latency.rate or (peak or 0.0) / 2
            open_loop_result = run_latency(
                space, latency.messages, size, rate, peak, latency.arrivals, latency.seed, latency.connections
            )
            exited = space.exited()
    server_cpu = server1 - server0 if server0 is not None and server1 is not None else None
    phase = Phase(
        label=MSSGW_LABEL,
        messages=n,
        delivered=got,
        seconds=end - t0,
        submit_seconds=last_ack - t0,
        latencies_ms=[(at - started[mid]) * 1000 for mid, at in times.items() if mid in started],
        cpu_busy=cores_busy(cpu0, cpu1),
        notes={
            "processes": space.processes,
            "server_processes": len(space.procs),
            "server_cpu_seconds": round(server_cpu, 2) if server_cpu is not None else None,
            "server_cpu_ms_per_message": round(server_cpu * 1000 / got, 2) if server_cpu and got else None,
            "client_cpu_seconds": round(self1 - self0, 2),
            "queue_left": {"operator-a": left_a, "operator-b": left_b},
            "server_exited": exited,
        },
    )
    return phase, open_loop_result


# -- (c) mssgw, open loop: submit-to-mailbox latency at half the peak rate -----------------------


@dataclass
class Sent:
    """One message of the open-loop phase, as its client saw it (time.time() seconds)."""

    recipient: str
    scheduled: float  # when the schedule said to start sending it
    started: float  # when a connection was free and MAIL FROM went out
    data_end: float  # when the client wrote the end of DATA (<CRLF>.<CRLF>)
    acked: float  # when the 250 came back


class Submitter:
    """An authenticated submission connection of one sender, sending one message at a time."""

    def __init__(self, smtp: aiosmtplib.SMTP, sender: str) -> None:
        self.smtp, self.sender = smtp, sender

    @classmethod
    async def open(cls, space: TrustSpace, tls: ssl.SSLContext, sender: str) -> Submitter:
        port = space.operator("operator-a")["ports"]["submission"]
        smtp = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=port, tls_context=tls, start_tls=True, local_hostname="bench.client.test"
        )
        await smtp.connect()
        await smtp.login(sender, space.password(sender))
        return cls(smtp, sender)

    async def send(self, rcpt: str, data: bytes) -> tuple[float, float]:
        """MAIL, RCPT, DATA; (when the end of DATA was written, when its 250 came)."""
        await self.smtp.mail(self.sender)
        await self.smtp.rcpt(rcpt)
        protocol = self.smtp.protocol
        assert protocol is not None
        ends: list[float] = []
        write = protocol.write

        def stamped(octets: bytes) -> None:  # aiosmtplib writes the whole dot-terminated message at once
            write(octets)
            if octets.endswith(b"\r\n.\r\n"):
                ends.append(time.time())

        protocol.write = stamped  # type: ignore[method-assign]
        try:
            await self.smtp.data(data)
        finally:
            del protocol.write  # the class's method again
        acked = time.time()
        return (ends[0] if ends else acked), acked

    async def close(self) -> None:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await asyncio.wait_for(self.smtp.quit(), 10)
        self.smtp.close()


class IdleObserver:
    """An IMAP IDLE session on a recipient's INBOX at operator B: the time each `* N EXISTS` arrives."""

    def __init__(self, client: ImapClient, tag: bytes, base: int) -> None:
        self.client, self.tag, self.base = client, tag, base
        self.exists: list[tuple[int, float]] = []  # (messages in INBOX, when the server said so)
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, port: int, tls: ssl.SSLContext, user: str, password: str) -> IdleObserver:
        client = await ImapClient.connect(port, tls)
        await client.login(user, password)
        untagged, _ = await client.command(b"SELECT INBOX")
        base = max((int(m.group(1)) for p in untagged if (m := _EXISTS.match(p[0]))), default=0)
        return cls(client, await client.idle(), base)

    @property
    def count(self) -> int:
        return self.exists[-1][0] if self.exists else self.base

    async def _read(self) -> None:
        while True:
            parts = await self.client.read_response()
            m = _EXISTS.match(parts[0])
            if m:
                self.exists.append((int(m.group(1)), time.time()))
                self.changed.set()
            elif parts[0].startswith(self.tag + b" "):
                return

    async def reach(self, count: int) -> None:
        """Until the INBOX holds `count` messages as far as this session was told."""
        while self.count < count and not self.task.done():
            self.changed.clear()
            await self.changed.wait()

    def seen_at(self, seq: int) -> float | None:
        """When the session was first told of message number `seq` (the INBOX's seq-th message)."""
        return next((at for n, at in self.exists if n >= seq), None)

    async def stop(self) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, TimeoutError, RuntimeError):
            self.client.writer.write(b"DONE\r\n")
            await asyncio.wait_for(asyncio.shield(self.task), 30)
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task
        self.client.close()


_EXISTS = re.compile(rb"\* (\d+) EXISTS\r\n")


def schedule(n: int, rate: float, arrivals: str, seed: int) -> list[float]:
    """Send offsets in seconds: fixed spacing 1/rate, or Poisson arrivals (exponential gaps of mean 1/rate)."""
    rng = random.Random(seed)
    offsets, t = [], 0.0
    for _ in range(n):
        offsets.append(t)
        t += rng.expovariate(rate) if arrivals == "poisson" else 1 / rate
    return offsets


async def open_loop(
    space: TrustSpace, work: list[tuple[str, str, bytes]], offsets: list[float], connections: int
) -> tuple[dict[str, Sent], dict[str, IdleObserver], dict[str, Any]]:
    """Send work[i] = (sender, recipient, message) at start + offsets[i], whatever the earlier ones are doing.

    A message takes a free connection of its sender (opening a new one, counted, when none is free: a
    late reply never delays the next message's start), and each recipient's INBOX at B is watched by an
    IDLE session opened beforehand. Returns the client-side times by Message-ID, the observers, and counts.
    """
    tls = ssl.create_default_context(cafile=space.creds["trust_anchor"])
    tls.check_hostname = False
    imaps_b = space.operator("operator-b")["ports"]["imaps"]
    observers = {
        rcpt: await IdleObserver.start(imaps_b, tls, rcpt, space.password(rcpt))
        for rcpt in sorted({rcpt for _, rcpt, _ in work})
    }
    free: dict[str, list[Submitter]] = {sender: [] for sender, _, _ in work}
    senders = list(free)
    for c in range(connections):  # opened before the clock starts
        sender = senders[c % len(senders)]
        free[sender].append(await Submitter.open(space, tls, sender))
    opened_late = 0
    sent: dict[str, Sent] = {}
    errors: list[str] = []
    loop = asyncio.get_running_loop()
    start_loop, start_wall = loop.time() + 0.5, time.time() + 0.5

    async def one(i: int) -> None:
        nonlocal opened_late
        sender, rcpt, data = work[i]
        await asyncio.sleep(max(0.0, start_loop + offsets[i] - loop.time()))
        started = time.time()
        try:
            if free[sender]:
                conn = free[sender].pop()
            else:
                opened_late += 1
                conn = await Submitter.open(space, tls, sender)
            data_end, acked = await conn.send(rcpt, data)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            if len(errors) < 5:
                errors.append(f"message {i}: {type(exc).__name__}: {exc}")
            return
        free[sender].append(conn)
        message_id = re.search(rb"^Message-ID: (<[^>]+>)", data, re.MULTILINE)
        assert message_id is not None
        sent[message_id.group(1).decode()] = Sent(rcpt, start_wall + offsets[i], started, data_end, acked)

    await asyncio.gather(*(one(i) for i in range(len(work))))
    for conns in free.values():
        for conn in conns:
            await conn.close()
    return sent, observers, {"connections": connections, "opened_late": opened_late, "errors": errors}


def mailbox_rows(db: Path, address: str) -> list[tuple[str | None, float]]:
    """(Message-ID, row written) of each message of address's INBOX at B, in UID order: the i-th is seq i+1."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
        rows = conn.execute(
            "SELECT m.header_message_id, m.created_at FROM messages m JOIN folders f ON f.id = m.folder_id "
            "WHERE m.address = ? AND f.name = 'INBOX' ORDER BY m.uid",
            (address,),
        ).fetchall()
    return [(mid, datetime.fromisoformat(at).replace(tzinfo=UTC).timestamp()) for mid, at in rows]


def wait_drained(space: TrustSpace, timeout: float = STALL_SECONDS) -> bool:
    """Wait until both operators' queues are empty (the closed-loop phase's tail), so the phases do not overlap."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if queue_left(space.database("operator-a")) == 0 and queue_left(space.database("operator-b")) == 0:
            return True
        time.sleep(0.2)
    return False


def _stats(values: list[float]) -> dict[str, float | None]:
    p50, p99 = percentile(values, 50), percentile(values, 99)
    return {
        "p50_ms": round(p50, 1) if p50 is not None else None,
        "p99_ms": round(p99, 1) if p99 is not None else None,
        "max_ms": round(max(values), 1) if values else None,
        "mean_ms": round(sum(values) / len(values), 1) if values else None,
    }


def run_latency(
    space: TrustSpace, n: int, size: int, rate: float, peak: float | None, arrivals: str, seed: int, connections: int
) -> dict[str, Any]:
    """(c): n messages offered open-loop at `rate` per second; per message, the end of DATA to the mailbox."""
    drained = wait_drained(space)
    tag = secrets.token_hex(4)
    work: list[tuple[str, str, bytes]] = []
    for i in range(n):
        sender, rcpt = SENDERS[i % len(SENDERS)], RECIPIENTS[i % len(RECIPIENTS)]
        work.append((sender, rcpt, message(i, sender, rcpt, tag, size)[1]))
    offsets = schedule(n, rate, arrivals, seed)
    db_b = space.database("operator-b")
    server0, cpu0 = space.cpu_seconds(), cpu_times()

    async def go() -> tuple[dict[str, Sent], dict[str, dict[int, float]], dict[str, int], dict[str, Any]]:
        sent, observers, info = await open_loop(space, work, offsets, connections)
        # Every message acknowledged: wait (without blocking the observers' loop) for them to reach B.
        await asyncio.to_thread(wait_for, lambda: count_delivered(db_b, tag), len(sent), alive=space.alive)
        # Then the last EXISTS: an IDLE session is told at once of a local delivery, else within seconds.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                for rcpt, o in observers.items():
                    await o.reach(o.base + sum(1 for s in sent.values() if s.recipient == rcpt))
        seen: dict[str, dict[int, float]] = {}
        for rcpt, o in observers.items():
            await o.stop()
            seen[rcpt] = {seq: at for seq in range(o.base + 1, o.count + 1) if (at := o.seen_at(seq)) is not None}
        return sent, seen, {r: o.base for r, o in observers.items()}, info

    sent, seen, bases, info = asyncio.run(go())
    server1, cpu1 = space.cpu_seconds(), cpu_times()
    submit_ms, store_ms, mailbox_ms, late_ms = [], [], [], []
    observed = in_store = 0
    for rcpt in RECIPIENTS:
        for seq, (mid, written) in enumerate(mailbox_rows(db_b, rcpt), start=1):
            s = sent.get(mid or "")
            if s is None:
                continue  # the closed-loop phase's, or not this run's
            in_store += 1
            store_ms.append((written - s.data_end) * 1000)
            at = seen.get(rcpt, {}).get(seq)
            if at is not None and seq > bases.get(rcpt, 0):
                observed += 1
                mailbox_ms.append((at - s.data_end) * 1000)
    for s in sent.values():
        submit_ms.append((s.acked - s.data_end) * 1000)
        late_ms.append(max(0.0, s.started - s.scheduled) * 1000)
    ends = sorted(s.data_end for s in sent.values())
    span = ends[-1] - ends[0] if len(ends) > 1 else 0.0
    seen_all = sorted(at for per in seen.values() for at in per.values())
    server_cpu = server1 - server0 if server0 is not None and server1 is not None else None
    return {
        "label": LATENCY_LABEL,
        "messages": n,
        "acknowledged": len(sent),
        "delivered": in_store,
        "observed": observed,
        "arrivals": arrivals,
        "seed": seed,
        "peak_rate": round(peak, 2) if peak is not None else None,
        "offered_rate": round(rate, 3),
        "achieved_rate": round((len(ends) - 1) / span, 3) if span > 0 else None,  # ends of DATA per second
        "delivered_rate": round(len(seen_all) / (seen_all[-1] - ends[0]), 3) if seen_all and ends else None,
        "seconds": round(span, 2),
        "mailbox": _stats(mailbox_ms),  # end of DATA -> the recipient's IDLE session told (* N EXISTS)
        "store": _stats(store_ms),  # end of DATA -> the message's row written at B
        "submit": _stats(submit_ms),  # end of DATA -> 250 at A
        "start_late": _stats(late_ms),  # schedule -> MAIL FROM (a connection was free, or a new one open)
        "queues_drained_before": drained,
        "server_cpu_ms_per_message": round(server_cpu * 1000 / in_store, 1) if server_cpu and in_store else None,
        "cpu_busy_cores": round(c, 2) if (c := cores_busy(cpu0, cpu1)) is not None else None,
        **info,
    }


# -- (a) Postfix ---------------------------------------------------------------------------------


def run_tty(argv: list[str], timeout: float = 120) -> tuple[int, str]:
    """Run a Postfix command with a terminal on stderr: only then does it print its errors (else: syslog)."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    finally:
        os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer has gone
                    data = b""
                if data:
                    chunks.append(data)
                    continue
                break
            if proc.poll() is not None:  # a daemon it started may hold the terminal: do not wait for EOF
                break
            if time.monotonic() > deadline:
                proc.kill()
                break
    finally:
        os.close(master)
    code = proc.wait(timeout=30)
    return code, b"".join(chunks).decode(errors="replace").replace("\r\n", "\n").strip()


class SinkCounter:
    """Reads smtp-sink's running counter (`-c`: "sess=N quit=N mesg=N" per event, CR-separated)."""

    def __init__(self, stream: IO[bytes], target: int) -> None:
        self.count = 0
        self.reached_at: float | None = None
        self.target = target
        self._stream = stream
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        pending = b""
        while True:
            data = self._stream.read1(65536)  # type: ignore[attr-defined]
            if not data:
                return
            now = time.time()
            pending += data
            *done, pending = re.split(rb"[\r\n]", pending)
            for item in done:
                m = re.search(rb"mesg=(\d+)", item)
                if m:
                    self.count = max(self.count, int(m.group(1)))
                    if self.reached_at is None and self.count >= self.target:
                        self.reached_at = now


def postfix_unavailable() -> str | None:
    missing = [name for name in ("postfix", "smtp-source", "smtp-sink") if tool(name) is None]
    if missing:
        return (
            f"{', '.join(missing)} not installed (Debian: DEBIAN_FRONTEND=noninteractive apt-get install -y postfix, "
            "with postfix/main_mailer_type preseeded to 'No configuration')"
        )
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "starting a private Postfix instance needs root (its master process runs as root)"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "no 'postfix' user on this system (mail_owner of the private instance)"
    return None


def postfix_config(base: Path, smtpd_port: int, sink_port: int, concurrency: int) -> Path:
    """A private instance's main.cf and master.cf in base/etc; queue, data and log under base."""
    etc, queue, data = base / "etc", base / "queue", base / "data"
    for d in (etc, queue, data):
        d.mkdir(parents=True, exist_ok=True)
    shutil.chown(data, user="postfix")  # the master's lock file and the caches live there
    main = f"""\
# Private Postfix instance of bench/smtp_relay.py: loopback only, relays everything to smtp-sink.
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = postfix-reference.bench.test
mydomain = bench.test
myorigin = $mydomain
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
relay_domains = {B}
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:{sink_port}
default_transport = error:the benchmark relays only to {B}
smtp_dns_support_level = disabled
default_process_limit = {max(20, 2 * concurrency + 4)}
maillog_file = {base / "maillog"}
maillog_file_prefixes = {base}
biff = no
"""
    master = f"""\
127.0.0.1:{smtpd_port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""
    (etc / "main.cf").write_text(main, encoding="ascii")
    (etc / "master.cf").write_text(master, encoding="ascii")
    return etc


@dataclass
class PostfixInstance:
    smtpd_port: int
    sink: SinkCounter
    maillog: Path
    master_pid: int | None


def _fatal_lines(maillog: Path) -> str:
    with contextlib.suppress(OSError):
        lines = maillog.read_text(encoding="utf-8", errors="replace").splitlines()
        return "; ".join(line.split(": ", 1)[-1] for line in lines if "fatal:" in line or "error:" in line)
    return ""


@contextlib.contextmanager
def postfix_instance(keep: Path, concurrency: int, target: int) -> Iterator[PostfixInstance]:
    """A private Postfix on loopback relaying to smtp-sink; stopped (and the sink too) on the way out.

    It runs from a directory of its own under the system's temporary directory (Postfix's unprivileged
    processes must be able to reach their queue and data directories, which a private work directory
    may not allow); its configuration and log are copied to `keep` afterwards, then it is removed.
    """
    postfix, sink = tool("postfix"), tool("smtp-sink")
    assert postfix is not None
    assert sink is not None
    base = Path(tempfile.mkdtemp(prefix="mssgw-bench-postfix-"))
    base.chmod(0o755)  # the postfix user must traverse it (it holds no secret)
    smtpd_port, sink_port = free_ports(2)
    etc = postfix_config(base, smtpd_port, sink_port, concurrency)
    maillog = base / "maillog"
    sink_proc = subprocess.Popen(
        [sink, "-c", "-u", "postfix", f"127.0.0.1:{sink_port}", "256"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    started = False
    master_pid: int | None = None
    try:
        assert sink_proc.stdout is not None
        counter = SinkCounter(sink_proc.stdout, target)
        if not wait_for_port(sink_port, 10):
            raise PostfixError(f"smtp-sink did not listen on 127.0.0.1:{sink_port}")
        code, out = run_tty([postfix, "-c", str(etc), "check"])
        if code != 0:
            raise PostfixError(f"postfix check failed: {one_line(out) or code}")
        code, out = run_tty([postfix, "-c", str(etc), "start"])
        started = True
        master_pid = _read_pid(base / "queue" / "pid" / "master.pid")
        if code != 0 or not wait_for_port(smtpd_port, 20):
            why = one_line(out) or f"exit status {code}"
            raise PostfixError(f"postfix start failed: {why}; {_fatal_lines(maillog)}".rstrip("; "))
        yield PostfixInstance(smtpd_port, counter, maillog, master_pid)
    finally:
        if started:
            master_pid = master_pid or _read_pid(base / "queue" / "pid" / "master.pid")
            run_tty([postfix, "-c", str(etc), "stop"], timeout=60)
            if master_pid is not None and not gone(master_pid, 20):
                run_tty([postfix, "-c", str(etc), "abort"], timeout=60)
                if not gone(master_pid, 10):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(master_pid, signal.SIGKILL)
        sink_proc.terminate()
        try:
            sink_proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sink_proc.kill()
            sink_proc.wait(timeout=10)
        with contextlib.suppress(OSError):
            shutil.copytree(etc, keep / "etc", dirs_exist_ok=True)
            if maillog.exists():
                shutil.copy2(maillog, keep / "maillog")
        shutil.rmtree(base, ignore_errors=True)


class PostfixError(Exception):
    pass


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="ascii").split()[0])
    except (OSError, ValueError, IndexError):
        return None


_DELAY = re.compile(r" delay=([\d.]+), .* status=sent ")


def postfix_delays(maillog: Path, target: int, timeout: float = 15) -> list[float]:
    """The `delay=` (seconds) of each message Postfix delivered, from its log (written asynchronously)."""
    deadline = time.monotonic() + timeout
    delays: list[float] = []
    while True:
        with contextlib.suppress(OSError):
            delays = [
                float(m.group(1)) for m in map(_DELAY.search, maillog.read_text(errors="replace").splitlines()) if m
            ]
        if len(delays) >= target or time.monotonic() > deadline:
            return delays
        time.sleep(0.2)


def run_postfix(keep: Path, n: int, size: int, concurrency: int) -> Phase:
    source = tool("smtp-source")
    assert source is not None
    keep.mkdir(parents=True, exist_ok=True)
    with postfix_instance(keep, concurrency, n) as instance:
        argv = [
            source,
            "-s", str(concurrency),
            "-m", str(n),
            "-l", str(size),
            "-d",  # one connection per session for all its messages
            "-M", "bench.client.test",
            "-f", SENDERS[0],
            "-t", RECIPIENTS[0],
            f"127.0.0.1:{instance.smtpd_port}",
        ]  # fmt: skip
        cpu0 = cpu_times()
        t0 = time.time()
        sent = subprocess.run(argv, capture_output=True, text=True, timeout=3600, check=False)
        last_ack = time.time()
        if sent.returncode != 0:
            raise PostfixError(f"smtp-source failed ({sent.returncode}): {one_line(sent.stderr or sent.stdout)}")
        got = wait_for(lambda: instance.sink.count, n)
        end = instance.sink.reached_at or time.time()
        cpu1 = cpu_times()
        delays = postfix_delays(instance.maillog, n)
    return Phase(
        label=POSTFIX_LABEL,
        messages=n,
        delivered=got,
        seconds=end - t0,
        submit_seconds=last_ack - t0,
        latencies_ms=[d * 1000 for d in delays],
        cpu_busy=cores_busy(cpu0, cpu1),
        notes={"logged_sent": len(delays), "master_pid": instance.master_pid},
    )


# -- report --------------------------------------------------------------------------------------


def phase_dict(p: Phase, reference: Phase | None) -> dict[str, Any]:
    p50, p99 = p.percentile(50), p.percentile(99)
    return {
        "label": p.label,
        "messages": p.messages,
        "delivered": p.delivered,
        "seconds": round(p.seconds, 3),
        "messages_per_second": round(p.rate, 1),
        "submit_seconds": round(p.submit_seconds, 3),
        "submitted_per_second": round(p.submit_rate, 1),
        "latency_p50_ms": round(p50, 1) if p50 is not None else None,
        "latency_p99_ms": round(p99, 1) if p99 is not None else None,
        "cpu_busy_cores": round(p.cpu_busy, 2) if p.cpu_busy is not None else None,
        "ratio": round(p.rate / reference.rate, 3) if reference is not None and reference.rate else None,
        **p.notes,
    }


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    host = machine()
    reference: Phase | None = None
    why_not = "skipped (--no-postfix)" if args.no_postfix else postfix_unavailable()
    if why_not is None:
        try:
            reference = run_postfix(workdir / "postfix", args.messages, args.size, args.concurrency)
        except (PostfixError, OSError, subprocess.SubprocessError) as exc:
            why_not = f"could not run: {exc}"
    plan = (
        LatencyPlan(args.latency, args.latency_rate, args.arrivals, args.seed, args.latency_connections)
        if args.latency
        else None
    )
    mssgw, latency = run_mssgw(
        workdir, args.messages, args.size, args.concurrency, args.per_connection, args.py_spy, plan, args.processes
    )
    phases = [p for p in (reference, mssgw) if p is not None]
    ratio = mssgw.rate / reference.rate if reference is not None and reference.rate else None
    submit_ratio = (
        mssgw.submit_rate / reference.submit_rate if reference is not None and reference.submit_rate else None
    )
    return {
        "messages": args.messages,
        "size": args.size,
        "concurrency": args.concurrency,
        "per_connection": args.per_connection,
        "processes": args.processes,
        "machine": host,
        "postfix": {"ran": reference is not None, "reason": why_not},
        "phases": [phase_dict(p, reference) for p in phases],
        "mssgw": phase_dict(mssgw, reference),
        "ratio": round(ratio, 3) if ratio is not None else None,
        "submit_ratio": round(submit_ratio, 3) if submit_ratio is not None else None,
        "latency": latency,
        "all_delivered": all(p.delivered == p.messages for p in phases)
        and (plan is None or (latency is not None and latency["delivered"] == latency["messages"])),
    }


def _ms(value: float | None) -> str:
    return f"{value:.0f}" if value is not None else "-"


def report(result: dict[str, Any]) -> str:
    m = result["machine"]
    per = result["per_connection"]
    out = [
        f"smtp relay benchmark: {result['messages']:,} messages of {result['size']:,} bytes, "
        f"{result['concurrency']} concurrent clients, "
        + (f"up to {per:,} messages per connection" if per else "one connection each")
        + f"; mssgw: {PROCESS_TEXT[result.get('processes', 'one')]}",
        f"machine: {m['usable_cpus']} usable CPUs ({m['cpus']} in all), {m['platform']}, Python {m['python']}, "
        f"SQLite {m['sqlite']}, OpenSSL {m['openssl']}, Postfix {m['postfix'] or 'not installed'}, "
        f"load average {m['load_average']} at start",
        f"{'path':<52}{'delivered':>10}{'seconds':>9}{'msg/s':>8}{'submit/s':>10}{'x Postfix':>11}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'CPUs busy':>11}",
    ]
    for p in result["phases"]:
        ratio = f"{p['ratio']:.2f}" if p["ratio"] is not None else "-"
        cpu = f"{p['cpu_busy_cores']:.1f}" if p["cpu_busy_cores"] is not None else "-"
        out.append(
            f"{p['label']:<52}{p['delivered']:>10,}{p['seconds']:>9.2f}{p['messages_per_second']:>8,.1f}"
            f"{p['submitted_per_second']:>10,.1f}{ratio:>11}{_ms(p['latency_p50_ms']):>9}"
            f"{_ms(p['latency_p99_ms']):>9}{cpu:>11}"
        )
    if not result["postfix"]["ran"]:
        out.append(f"Postfix reference: {result['postfix']['reason']}")
    s = result["mssgw"]
    servers = (
        "server process (both operators, one event loop)"
        if s.get("processes", "one") == "one"
        else f"server processes (one per operator, {s['server_processes']} summed)"
    )
    out.append(
        f"mssgw: {servers} {s['server_cpu_seconds']} s CPU "
        f"({s['server_cpu_ms_per_message']} ms per message), load generator {s['client_cpu_seconds']} s CPU; "
        f"left in queues: A {s['queue_left']['operator-a']}, B {s['queue_left']['operator-b']}"
    )
    if s["server_exited"] is not None:
        x = s["server_exited"]
        out.append(f"mssgw server {x['process']} stopped early (exit status {x['status']}): {x['error']}")
    if result["ratio"] is not None:
        met = "met" if result["ratio"] >= TARGET_RATIO else "not met"
        out.append(
            f"ratio mssgw/Postfix: {result['ratio']:.2f} end to end, {result['submit_ratio']:.2f} submission "
            f"(later target >= {TARGET_RATIO:.1f}: {met})"
        )
    lat = result.get("latency")
    if lat is not None:
        out.append(latency_report(lat))
    out.append("delivered: " + ("all" if result["all_delivered"] else "INCOMPLETE"))
    return "\n".join(out)


def latency_report(lat: dict[str, Any]) -> str:
    def trio(d: dict[str, float | None]) -> str:
        return "/".join(_ms(d[k]) for k in ("p50_ms", "p99_ms", "max_ms"))

    peak = f"{lat['peak_rate']:.2f}/s closed loop" if lat["peak_rate"] is not None else "given"
    achieved = f"{lat['achieved_rate']:.2f}/s" if lat["achieved_rate"] is not None else "-"
    line = (
        f"{lat['label']}: {lat['delivered']:,} of {lat['messages']:,} delivered, {lat['observed']:,} seen by IDLE; "
        f"offered {lat['offered_rate']:.2f}/s ({lat['arrivals']} arrivals; peak {peak}), achieved {achieved}; "
        f"p50/p99/max ms: to mailbox (IDLE told) {trio(lat['mailbox'])}, to the stored row {trio(lat['store'])}, "
        f"to 250 {trio(lat['submit'])}; start late {trio(lat['start_late'])}; "
        f"{lat['connections']} connections + {lat['opened_late']} opened when all were busy"
    )
    if lat["errors"]:
        line += "; errors: " + "; ".join(lat["errors"])
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages to send (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients (default: %(default)s)")
    parser.add_argument("--size", type=int, default=10240, help="message size in bytes (default: %(default)s)")
    parser.add_argument(
        "--per-connection",
        type=int,
        default=0,
        metavar="N",
        help="mssgw clients reconnect after N messages (default: 0, one connection for all, like smtp-source -d)",
    )
    parser.add_argument(
        "--latency",
        type=int,
        default=0,
        metavar="N",
        help="then (c): N messages open loop at half the closed-loop rate, each timed from the end of DATA to "
        "the recipient's IMAP IDLE session being told (default: 0, not run)",
    )
    parser.add_argument(
        "--latency-rate", type=float, metavar="R", help="(c) at R messages/s instead of half the closed-loop rate"
    )
    parser.add_argument(
        "--arrivals",
        choices=("poisson", "fixed"),
        default="poisson",
        help="(c): exponential gaps of mean 1/rate, or a message every 1/rate s (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=1, help="(c): the Poisson schedule's seed (default: %(default)s)")
    parser.add_argument(
        "--latency-connections",
        type=int,
        default=4,
        metavar="C",
        help="(c): submission connections opened beforehand; more are opened when all are busy (default: %(default)s)",
    )
    parser.add_argument(
        "--processes",
        choices=PROCESSES,
        default="per-operator",
        help="serve each operator as its own process (`mssgw serve -c`, as deployed), or both in one process "
        "and event loop (`mssgw demo run`) (default: %(default)s)",
    )
    parser.add_argument("--no-postfix", action="store_true", help="skip the Postfix reference")
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="FILE",
        help="profile the mssgw processes with py-spy during the closed-loop run: FILE.svg (flame graph), "
        "FILE.json (speedscope) or another name (collapsed stacks); one file per process, named after its "
        "operator before the suffix (FILE relay.svg: relay.operator-a.svg, ...), when there are several",
    )
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="work in DIR and keep the files (default: a temporary one)"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON to FILE")
    args = parser.parse_args(argv)
    if args.messages < 1:
        parser.error("--messages must be positive")
    if args.concurrency < 1:
        parser.error("--concurrency must be positive")
    if args.size < 1024:
        parser.error("--size must be at least 1024")
    if args.per_connection < 0:
        parser.error("--per-connection must be 0 or positive")
    if args.latency < 0:
        parser.error("--latency must be 0 or positive")
    if args.latency_rate is not None and args.latency_rate <= 0:
        parser.error("--latency-rate must be positive")
    if args.latency_connections < 1:
        parser.error("--latency-connections must be positive")
    if args.py_spy is not None:
        if py_spy() is None:
            parser.error("--py-spy needs py-spy (pip install py-spy)")
        args.py_spy = args.py_spy.resolve()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = run(args, args.keep.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="mssgw-bench-") as tmp:
            result = run(args, Path(tmp))
    print(report(result), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0 if result["all_delivered"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
