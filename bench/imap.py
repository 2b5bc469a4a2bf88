"""Benchmark of the IMAP server: logins, APPEND and FETCH of 10 KB messages, and the memory of idle IDLE sessions.

    python bench/imap.py [--clients 8] [--messages 500] [--logins 200] [--idle 10000] [--reference-idle N]
                         [--idle-ramp 1800] [--size 10240]
                         [--no-dovecot] [--py-spy FILE] [--keep DIR] [--json FILE]

Lays out the demo trust space (`mssgw demo init`) and serves its operator A alone (`mssgw serve`: one
process, one event loop), then drives, in this order and in this one run, the same load generator
(a small asyncio IMAP client of this script, over implicit TLS, one command at a time per connection)
against:

  (a) reference, when Dovecot is installed (`dovecot`, `doveadm`) and this runs as root: a private
      Dovecot instance on a loopback port. It lives in a temporary directory of its own (config, base
      and state directories, log, maildirs), is started with `dovecot -c CONF` and stopped with
      `doveadm -c CONF stop` afterwards: the system's Dovecot and its configuration are never touched.
      Same users as mssgw, with argon2id hashes made by mssgw's own hasher (same parameters) in a
      passwd-file, no authentication cache; implicit TLS with the node's certificate; maildir, fsync of
      each saved message (the default `mail_fsync = optimized`); imap-login in Dovecot's
      high-performance mode (a process per CPU, each proxying many TLS connections: its default of a
      process per connection caps concurrent TLS sessions at 100), one imap process per session (the
      default).
  (b) mssgw: operator A's implicit-TLS listener (993-style). LOGIN runs the same argon2id check (in
      threads), bodies are sealed with the mailbox's key (AES-256-GCM) in SQLite (synchronous=FULL),
      and every login, logout, APPEND and content FETCH writes an audit record before the reply.

For each server, four phases, each timed from its first command to its last reply:

  (1) logins: `--logins` sessions, `--clients` at a time: connect + TLS + LOGIN + LOGOUT each;
  (2) APPEND: `--clients` sessions (logged in beforehand, not timed) append `--messages` messages of
      `--size` octets to INBOX between them (LITERAL+), and note the UIDs (APPENDUID);
  (3) FETCH: the same sessions SELECT INBOX (not timed) and `UID FETCH uid BODY.PEEK[]` each message
      they appended, one at a time; every answer is compared with the octets appended;
  (4) idle: `--idle` sessions opened `--clients` at a time (connect, TLS, LOGIN, SELECT INBOX, IDLE)
      and held (by default, `--idle-logins cheap`, the users' hashes are first swapped on both servers
      for argon2id ones of the smallest cost: an idle session's memory does not depend on its login's,
      and 10,000 logins at full cost take an hour on 2 cores); the server's memory is read before and
      once every session is idling (mssgw: VmRSS of
      its process; Dovecot: the sum over its processes of VmRSS, which counts shared pages once per
      process, and of Pss, which splits them), and the server's CPU use over `--idle-seconds` seconds
      of idleness; then each session ends IDLE (DONE) and must get its OK, and logs out.
      `--reference-idle N` opens N on Dovecot instead (a process per session: 10,000 take about 6 GB);
      per-session figures compare.

For each phase it prints the operations completed, seconds, operations per second, the ratio to
Dovecot, p50/p99 of the latency of one operation, the whole machine's CPU use (in CPUs; other work on
the machine counts too: the machine line gives the load average at the start) and the server's CPU per
operation (Dovecot: every process of the instance, reaped ones included); the load generator's own CPU
is printed too, so that one can see it is not the bottleneck. The sessions log in as the demo
mailboxes of operator A in turn; mssgw's per-mailbox and per-address connection limits are raised for
the run (`MSSGW_IMAP__MAX_CONNECTIONS_PER_USER`, `..._PER_ADDRESS`), as are Dovecot's
(`mail_max_userip_connections`, process and client limits), and the open-files limit of this process
(inherited by both servers) is raised to its hard limit. `--py-spy FILE` samples the mssgw process
during phases 1-3. The exit status is 1 when anything failed: a login refused, an APPEND without its
UID, a FETCH returning other octets, an idle session not established or not answering DONE.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import pwd
import re
import resource
import shutil
import signal
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import (  # bench/common.py
    cli_env,
    cores_busy,
    cpu_times,
    free_ports,
    gone,
    last_line,
    one_line,
    profiled,
    py_spy,
    self_cpu_seconds,
    wait_for_port,
)

ROOT = Path(__file__).resolve().parents[1]
A = "hopital-a.mssante.test"
OPERATOR = "operator-a"
SBIN = ("/usr/sbin", "/usr/bin", "/sbin")
OP_TIMEOUT = 300.0  # one operation (an argon2 login behind thousands of others may wait long)
IDLE_SETTLE = 2.0  # seconds between the last session entering IDLE and the memory reading
PHASES = ("login", "APPEND", "FETCH")
DOVECOT, MSSGW = "dovecot", "mssgw"
LABELS = {DOVECOT: "(a) Dovecot", MSSGW: "(b) mssgw"}
MAX_ERRORS = 5  # error texts kept per phase (all are counted)


# -- machine -------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (field 3 onwards), or None when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def process_cpu_seconds(pid: int, *, children: bool = False) -> float | None:
    """User + system CPU seconds of a running process (all its threads; with `children`, also the
    children it has reaped)."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def process_tree(root: int) -> list[int]:
    """root and every process descending from it (Linux /proc)."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                parent[int(entry.name)] = int(fields[1])
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, ppid in parent.items() if ppid in frontier]
        tree += frontier
    return [pid for pid in tree if pid in parent]


def tree_cpu_seconds(root: int) -> float | None:
    """CPU seconds of a process tree so far: live processes, and the children each has reaped."""
    total = [process_cpu_seconds(pid, children=True) for pid in process_tree(root)]
    return sum(t for t in total if t is not None) if total else None


def memory_kb(pid: int) -> tuple[int, int] | None:
    """(VmRSS, Pss) of a process in KB; Pss is 0 when smaps_rollup is unreadable."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    if m is None:
        return None  # a kernel thread or a zombie
    pss = 0
    with contextlib.suppress(OSError):
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text(encoding="ascii", errors="replace")
        p = re.search(r"^Pss:\s+(\d+) kB", rollup, re.MULTILINE)
        pss = int(p.group(1)) if p else 0
    return int(m.group(1)), pss


def tree_memory(root: int) -> dict[str, Any]:
    """Memory of a process tree: processes, sum of VmRSS (KB), sum of Pss (KB), and processes by name."""
    rss = pss = 0
    names: dict[str, int] = {}
    for pid in process_tree(root):
        mem = memory_kb(pid)
        if mem is None:
            continue
        rss, pss = rss + mem[0], pss + mem[1]
        with contextlib.suppress(OSError):
            name = Path(f"/proc/{pid}/comm").read_text(encoding="utf-8", errors="replace").strip()
            names[name] = names.get(name, 0) + 1
    return {"processes": sum(names.values()), "rss_kb": rss, "pss_kb": pss, "by_name": names}


def tool(name: str) -> str | None:
    """A Dovecot tool: on PATH, or in the sbin directories a non-root PATH may lack."""
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN))


def dovecot_version() -> str | None:
    exe = tool("dovecot")
    if exe is None:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30, check=False)
        return out.stdout.split()[0] if out.stdout.split() else None
    return None


def machine() -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {
        "cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "openssl": ssl.OPENSSL_VERSION.split()[1],
        "dovecot": dovecot_version(),
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "open_files_limit": soft,
        "open_files_hard_limit": hard,
    }


def raise_open_files(wanted: int) -> int:
    """Raise this process's open-files limit (servers started later inherit it) towards `wanted`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- messages ------------------------------------------------------------------------------------


FILLER = b"Compte rendu de consultation: examen clinique, conclusions et conduite a tenir. " * 2


def message(i: int, sender: str, rcpt: str, tag: str, size: int) -> bytes:
    """Message i: exactly `size` octets of RFC 5322 text (CRLF lines of at most 78 octets)."""
    head = (
        f"From: {sender}\r\nTo: {rcpt}\r\nSubject: Compte rendu {i}\r\nMessage-ID: <bench-{tag}-{i:07d}@{A}>\r\n"
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
    return head + bytes(body)


# -- the load generator: a small IMAP client -----------------------------------------------------


class ImapError(Exception):
    """A reply other than the expected OK, a malformed answer, or a connection gone."""


_LITERAL = re.compile(rb"\{(\d+)\}\r\n\Z")
_APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")


def _quote(text: str) -> bytes:
    return b'"' + text.encode().replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


class Client:
    """One IMAP connection over implicit TLS, one command at a time: just what the benchmark needs.

    A response is a list of parts: lines (ending in CRLF) and the literals that follow lines ending
    in {n}. Kept minimal on purpose, so that the load generator costs little CPU beside the servers.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.count = 0

    @classmethod
    async def connect(cls, port: int, tls: ssl.SSLContext) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls, limit=2**20)
        client = cls(reader, writer)
        greeting = await client.read_response()
        if not greeting[0].startswith(b"* OK"):
            writer.close()
            raise ImapError(f"greeting: {greeting[0][:200]!r}")
        return client

    async def read_response(self) -> list[bytes]:
        parts: list[bytes] = []
        while True:
            line = await self.reader.readline()
            if not line.endswith(b"\n"):
                raise ImapError("the server closed the connection")
            parts.append(line)
            m = _LITERAL.search(line)
            if m is None:
                return parts
            parts.append(await self.reader.readexactly(int(m.group(1))))

    async def command(self, text: bytes, literal: bytes | None = None) -> tuple[list[list[bytes]], bytes]:
        """Send a command (with a LITERAL+ literal when given); (untagged responses, tagged OK line)."""
        self.count += 1
        tag = b"b%d" % self.count
        if literal is None:
            self.writer.write(tag + b" " + text + b"\r\n")
        else:
            self.writer.write(b"%s %s {%d+}\r\n%s\r\n" % (tag, text, len(literal), literal))
        return await self.tagged(tag, text)

    async def tagged(self, tag: bytes, text: bytes) -> tuple[list[list[bytes]], bytes]:
        untagged: list[list[bytes]] = []
        while True:
            parts = await self.read_response()
            if parts[0].startswith(tag + b" "):
                status = parts[0][len(tag) + 1 :]
                if not status.startswith(b"OK"):
                    verb = text.split(b" ", 2)[:2] if text.startswith(b"UID") else text.split(b" ", 1)[:1]
                    raise ImapError(f"{b' '.join(verb).decode()}: {status.strip()[:200].decode(errors='replace')}")
                return untagged, status
            untagged.append(parts)

    async def login(self, user: str, password: str) -> None:
        await self.command(b"LOGIN " + _quote(user) + b" " + _quote(password))

    async def logout(self) -> None:
        await self.command(b"LOGOUT")
        self.close()

    async def append(self, data: bytes) -> int:
        _, status = await self.command(b"APPEND INBOX", data)
        m = _APPENDUID.search(status)
        if m is None:
            raise ImapError(f"APPEND: no APPENDUID in {status.strip()[:200]!r}")
        return int(m.group(2))

    async def fetch_body(self, uid: int) -> bytes:
        untagged, _ = await self.command(b"UID FETCH %d BODY.PEEK[]" % uid)
        for parts in untagged:
            if b" FETCH (" in parts[0] and re.search(rb"\bUID %d\b" % uid, b"".join(parts[::2])):
                for i, part in enumerate(parts[:-1]):
                    if i % 2 == 0 and part.endswith(b"}\r\n") and b"BODY[] {" in part:
                        return parts[i + 1]
        raise ImapError(f"UID FETCH {uid}: no BODY[] in the answer")

    async def idle(self) -> bytes:
        """Start IDLE; returns its tag once the server's continuation came."""
        self.count += 1
        tag = b"b%d" % self.count
        self.writer.write(tag + b" IDLE\r\n")
        while True:
            parts = await self.read_response()
            if parts[0].startswith(b"+"):
                return tag
            if parts[0].startswith(tag + b" "):
                raise ImapError(f"IDLE: {parts[0][len(tag) + 1 :].strip()[:200].decode(errors='replace')}")

    async def done(self, tag: bytes) -> None:
        self.writer.write(b"DONE\r\n")
        await self.tagged(tag, b"IDLE")

    def close(self) -> None:
        self.writer.transport.abort()


# -- phases --------------------------------------------------------------------------------------


@dataclass
class Target:
    """A server under test, as the load generator sees it."""

    name: str  # DOVECOT or MSSGW
    port: int
    users: list[tuple[str, str]]  # (login, password), used in turn
    cpu: Callable[[], float | None]  # the server's CPU seconds so far
    memory: Callable[[], dict[str, Any]]  # the server's memory now
    alive: Callable[[], bool]
    cheapen_logins: Callable[[], None] | None = None  # swap the users' hashes for cheap ones (idle phase)

    def user(self, i: int) -> tuple[str, str]:
        return self.users[i % len(self.users)]


@dataclass
class Phase:
    server: str
    operation: str
    attempted: int
    done: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    cpu_busy: float | None = None
    server_cpu_seconds: float | None = None
    client_cpu_seconds: float = 0.0
    failures: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{LABELS[self.server]} {self.operation}" + (" (reference)" if self.server == DOVECOT else "")

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, p: float) -> float | None:
        """Nearest-rank percentile of the latencies, in ms."""
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
        return ordered[rank - 1]

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        if len(self.errors) < MAX_ERRORS:
            text = str(exc) or type(exc).__name__
            self.errors.append(text if isinstance(exc, ImapError) else f"{type(exc).__name__}: {text}")


class Meter:
    """The machine's, the server's and the load generator's CPU over a phase, and its wall time."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.machine0, self.server0, self.self0 = cpu_times(), target.cpu(), self_cpu_seconds()
        self.t0 = time.perf_counter()

    def stop(self, phase: Phase) -> None:
        phase.seconds = time.perf_counter() - self.t0
        server1 = self.target.cpu()
        phase.cpu_busy = cores_busy(self.machine0, cpu_times())
        phase.client_cpu_seconds = self_cpu_seconds() - self.self0
        if self.server0 is not None and server1 is not None:
            phase.server_cpu_seconds = server1 - self.server0


async def timed(phase: Phase, op: Awaitable[Any]) -> Any:
    """Run one operation, note its latency when it succeeds, count it as failed otherwise."""
    t0 = time.perf_counter()
    try:
        result = await asyncio.wait_for(op, OP_TIMEOUT)
    except (ImapError, OSError, ssl.SSLError, EOFError, asyncio.IncompleteReadError, TimeoutError) as exc:
        phase.failed(exc)
        return None
    phase.latencies_ms.append((time.perf_counter() - t0) * 1000)
    phase.done += 1
    return result


async def login_phase(target: Target, tls: ssl.SSLContext, logins: int, clients: int) -> Phase:
    phase = Phase(target.name, "login", logins)

    async def session(i: int) -> None:
        user, password = target.user(i)
        client = await Client.connect(target.port, tls)
        try:
            await client.login(user, password)
            await client.logout()
        finally:
            client.close()

    async def worker(c: int) -> None:
        for i in range(c, logins, clients):
            await timed(phase, session(i))

    meter = Meter(target)
    await asyncio.gather(*(worker(c) for c in range(min(clients, logins))))
    meter.stop(phase)
    return phase


async def mail_phases(
    target: Target, tls: ssl.SSLContext, n: int, size: int, clients: int, tag: str
) -> tuple[Phase, Phase]:
    """APPEND then FETCH: each client appends its share of the messages, then reads each one back."""
    append, fetch = Phase(target.name, "APPEND", n), Phase(target.name, "FETCH", n)
    count = min(clients, n)
    sessions: list[Client | None] = [None] * count
    shares = [list(range(c, n, count)) for c in range(count)]
    sent: list[dict[int, bytes]] = [{} for _ in range(count)]  # per client: UID -> octets appended

    async def open_session(c: int) -> None:
        user, password = target.user(c)
        client = await Client.connect(target.port, tls)
        try:
            await client.login(user, password)
        except BaseException:
            client.close()
            raise
        sessions[c] = client

    opened = await asyncio.gather(*(open_session(c) for c in range(count)), return_exceptions=True)
    for exc in opened:
        if isinstance(exc, BaseException):
            append.failed(exc)

    async def appender(c: int) -> None:
        client = sessions[c]
        if client is None:
            return
        user, _ = target.user(c)
        for i in shares[c]:
            data = message(i, user, user, tag, size)
            uid = await timed(append, client.append(data))
            if uid is not None:
                if uid in sent[c]:
                    append.failed(ImapError(f"APPEND: UID {uid} given twice"))
                sent[c][uid] = data

    meter = Meter(target)
    await asyncio.gather(*(appender(c) for c in range(count)))
    meter.stop(append)

    async def select(c: int) -> None:
        client = sessions[c]
        if client is not None:
            try:
                await asyncio.wait_for(client.command(b"SELECT INBOX"), OP_TIMEOUT)
            except (ImapError, OSError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError) as exc:
                fetch.failed(exc)
                client.close()
                sessions[c] = None

    await asyncio.gather(*(select(c) for c in range(count)))

    async def reader(c: int) -> None:
        client = sessions[c]
        if client is None:
            return
        for uid, data in sent[c].items():
            got = await timed(fetch, client.fetch_body(uid))
            if got is not None and got != data:
                fetch.done -= 1
                fetch.latencies_ms.pop()
                fetch.failed(ImapError(f"UID FETCH {uid}: {len(got)} octets differ from the {len(data)} appended"))

    meter = Meter(target)
    await asyncio.gather(*(reader(c) for c in range(count)))
    meter.stop(fetch)
    fetch.failures += n - sum(len(s) for s in sent)  # messages never appended were never read back

    async def close(c: int) -> None:
        client = sessions[c]
        if client is not None:
            with contextlib.suppress(ImapError, OSError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError):
                await asyncio.wait_for(client.logout(), 30)
            client.close()

    await asyncio.gather(*(close(c) for c in range(count)))
    return append, fetch


@dataclass
class Idle:
    server: str
    attempted: int
    established: int = 0
    answered_done: int = 0
    seconds: float = 0.0  # to open them all
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    idle_cpu_busy: float | None = None  # the server's CPU use while every session idles, in CPUs
    cpu_busy: float | None = None
    server_cpu_seconds: float | None = None  # while opening them
    client_cpu_seconds: float = 0.0
    client_rss_kb: tuple[int, int] | None = None  # the load generator's VmRSS before and after
    budget: float = 0.0  # seconds allowed for opening them
    gave_up: bool = False  # the budget ran out before every session was open
    latencies_ms: list[float] = field(default_factory=list)  # connect to IDLE's continuation, per session
    opened_at: list[float] = field(default_factory=list)  # seconds from the start of the phase
    failures: int = 0
    errors: list[str] = field(default_factory=list)

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        if len(self.errors) < MAX_ERRORS:
            text = str(exc) or type(exc).__name__
            self.errors.append(text if isinstance(exc, ImapError) else f"{type(exc).__name__}: {text}")


async def idle_phase(
    target: Target, tls: ssl.SSLContext, count: int, clients: int, window: float, budget: float
) -> Idle:
    """Open `count` IDLE sessions, `clients` at a time, for at most `budget` seconds; measure; end them."""
    idle = Idle(target.name, count, budget=budget)
    if count == 0:
        return idle
    held: list[tuple[Client, bytes]] = []
    next_index = 0
    own0 = memory_kb(os.getpid())
    idle.before = target.memory()
    t_start = time.perf_counter()

    async def open_one(i: int) -> None:
        user, password = target.user(i)
        client = await Client.connect(target.port, tls)
        try:
            await client.login(user, password)
            await client.command(b"SELECT INBOX")
            tag = await client.idle()
        except BaseException:
            client.close()
            raise
        held.append((client, tag))

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            i, next_index = next_index, next_index + 1
            t0 = time.perf_counter()
            try:
                await asyncio.wait_for(open_one(i), OP_TIMEOUT)
            except (ImapError, OSError, ssl.SSLError, EOFError, asyncio.IncompleteReadError, TimeoutError) as exc:
                idle.failed(exc)
                continue
            now = time.perf_counter()
            idle.latencies_ms.append((now - t0) * 1000)
            idle.opened_at.append(now - t_start)

    meter = Meter(target)
    workers = [asyncio.create_task(worker()) for _ in range(min(clients, count))]
    _, late = await asyncio.wait(workers, timeout=budget)
    for task in late:  # the ramp budget ran out: sessions being opened are abandoned, the rest never tried
        task.cancel()
    if late:
        await asyncio.gather(*late, return_exceptions=True)
        idle.gave_up = True
    shadow = Phase(target.name, "idle", count)
    meter.stop(shadow)
    idle.seconds, idle.cpu_busy = shadow.seconds, shadow.cpu_busy
    idle.server_cpu_seconds, idle.client_cpu_seconds = shadow.server_cpu_seconds, shadow.client_cpu_seconds
    idle.established = len(held)
    try:
        await asyncio.sleep(IDLE_SETTLE)
        idle.after = target.memory()
        own1 = memory_kb(os.getpid())
        idle.client_rss_kb = (own0[0], own1[0]) if own0 and own1 else None
        cpu0, t0 = target.cpu(), time.perf_counter()
        await asyncio.sleep(window)
        cpu1, t1 = target.cpu(), time.perf_counter()
        if cpu0 is not None and cpu1 is not None:
            idle.idle_cpu_busy = (cpu1 - cpu0) / (t1 - t0)

        async def done(client: Client, tag: bytes) -> bool:
            try:
                await asyncio.wait_for(client.done(tag), OP_TIMEOUT)
            except (ImapError, OSError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError) as exc:
                idle.failed(exc)
                return False
            return True

        answers = await asyncio.gather(*(done(c, t) for c, t in held))
        idle.answered_done = sum(answers)

        async def leave(client: Client) -> None:
            try:
                await asyncio.wait_for(client.logout(), OP_TIMEOUT)
            except (ImapError, OSError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError) as exc:
                idle.failed(exc)

        # LOGOUT, not a dropped connection: each session ends before the server stops (an abandoned one
        # the server has not yet seen closed is ended by the stop, a race in the audit counts).
        await asyncio.gather(*(leave(c) for (c, _), ok in zip(held, answers, strict=True) if ok))
    finally:
        for client, _ in held:
            client.close()
    return idle


async def drive(target: Target, tls: ssl.SSLContext, args: argparse.Namespace, profile: Any = None) -> dict[str, Any]:
    tag = os.urandom(4).hex()
    idle_count = idle_sessions(args, target.name)
    with profile if profile is not None else contextlib.nullcontext():
        login = await login_phase(target, tls, args.logins, args.clients)
        append, fetch = await mail_phases(target, tls, args.messages, args.size, args.clients, tag)
    if idle_count and args.idle_logins == "cheap" and target.cheapen_logins is not None:
        target.cheapen_logins()
    idle = await idle_phase(target, tls, idle_count, args.clients, args.idle_seconds, args.idle_ramp)
    return {"phases": [login, append, fetch], "idle": idle, "alive": target.alive()}


# -- (b) mssgw -----------------------------------------------------------------------------------


@dataclass
class Node:
    root: Path  # the demo trust space
    creds: dict[str, Any]
    proc: subprocess.Popen[bytes]
    port: int  # implicit TLS
    stderr_path: Path

    def users(self) -> list[tuple[str, str]]:
        op = next(o for o in self.creds["operators"] if o["name"] == OPERATOR)
        return [(str(m["address"]), str(m["password"])) for m in op["mailboxes"]]


def demo_init(workdir: Path) -> tuple[Path, dict[str, Any]]:
    """The demo trust space (once per run: its mailboxes are the users of both servers)."""
    root = workdir / "trust-space"
    if (root / "credentials.json").exists():
        shutil.rmtree(root)  # a previous run's, kept with --keep
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
    return root, json.loads((root / "credentials.json").read_text(encoding="utf-8"))


def cheap_hash(password: str) -> str:
    """An argon2id hash with the smallest parameters (t=1, 1 MiB, p=1): for the idle phase only, whose
    sessions' memory does not depend on what their login cost."""
    from argon2 import PasswordHasher

    return PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(password)


def idle_sessions(args: argparse.Namespace, server: str) -> int:
    """Idle sessions to open on a server: --idle, or --reference-idle for Dovecot when given."""
    if server == DOVECOT and args.reference_idle is not None:
        return int(args.reference_idle)
    return int(args.idle)


def connection_limit(args: argparse.Namespace) -> int:
    """Concurrent connections each server must accept from 127.0.0.1 (with room for the probes)."""
    return max(int(args.idle), int(args.reference_idle or 0)) + 2 * int(args.clients) + 100


@contextlib.contextmanager
def mssgw_node(workdir: Path, root: Path, creds: dict[str, Any], limit: int) -> Iterator[Node]:
    """`mssgw serve` of operator A, with its IMAP connection limits raised to `limit`."""
    config = next(Path(o["config"]) for o in creds["operators"] if o["name"] == OPERATOR)
    env = cli_env()
    env["MSSGW_IMAP__MAX_CONNECTIONS_PER_USER"] = str(limit)
    env["MSSGW_IMAP__MAX_CONNECTIONS_PER_ADDRESS"] = str(limit)
    stderr_path = workdir / "mssgw-serve.stderr"
    stderr = stderr_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli.main", "serve", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        ports: dict[str, int] = {}
        ready = False
        for raw in proc.stdout:
            line = raw.decode(errors="replace").strip()
            if line == "ready":
                ready = True
                break
            m = re.fullmatch(r"listening (\S+) \S+:(\d+)", line)
            if m:
                ports[m.group(1)] = int(m.group(2))
        if not ready or "imaps" not in ports:
            proc.wait(timeout=30)
            stderr.flush()
            tail = stderr_path.read_text(encoding="utf-8", errors="replace")[-3000:]
            raise SystemExit(f"mssgw serve stopped before it was ready ({proc.returncode}):\n{tail}")
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # never block on a full pipe
        yield Node(root, creds, proc, ports["imaps"], stderr_path)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        stderr.close()


def audit_counts(db: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
        rows = conn.execute("SELECT action, count(*) FROM audit_records WHERE action LIKE 'imap.%' GROUP BY action")
        return {str(action): int(n) for action, n in rows}


def run_mssgw(
    workdir: Path, root: Path, creds: dict[str, Any], tls: ssl.SSLContext, args: argparse.Namespace
) -> dict[str, Any]:
    with mssgw_node(workdir, root, creds, connection_limit(args)) as node:
        pid = node.proc.pid

        def memory() -> dict[str, Any]:
            mem = memory_kb(pid)
            rss, pss = mem if mem is not None else (0, 0)
            return {"processes": 1 if mem else 0, "rss_kb": rss, "pss_kb": pss, "by_name": {"mssgw": 1}}

        def cheapen() -> None:
            db = node.root / OPERATOR / "mssgw.db"
            with contextlib.closing(sqlite3.connect(db, timeout=60)) as conn, conn:
                for user, password in node.users():
                    update = "UPDATE accounts SET password_hash = ? WHERE address = ?"
                    conn.execute(update, (cheap_hash(password), user))

        target = Target(
            MSSGW,
            node.port,
            node.users(),
            cpu=lambda: process_cpu_seconds(pid),
            memory=memory,
            alive=lambda: node.proc.poll() is None,
            cheapen_logins=cheapen,
        )
        out = asyncio.run(drive(target, tls, args, profiled(pid, args.py_spy)))
        exited = node.proc.poll()
        out["server_exited"] = None if exited is None else {"status": exited, "error": last_line(node.stderr_path)}
        out["pid"] = pid
    out["audit"] = audit_counts(root / OPERATOR / "audit.db")
    return out


# -- (a) Dovecot ---------------------------------------------------------------------------------


class DovecotError(Exception):
    pass


def dovecot_unavailable() -> str | None:
    missing = [name for name in ("dovecot", "doveadm") if tool(name) is None]
    if missing or not Path("/usr/lib/dovecot/imap").exists():
        return (
            f"{', '.join(missing) or 'imap'} not installed (Debian: apt-get install -y dovecot-imapd, then keep "
            "the system service disabled: the benchmark runs a private instance)"
        )
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "starting a private Dovecot instance needs root (its master process runs as root)"
    for user in ("dovecot", "dovenull", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"no {user!r} user on this system (needed by the private instance)"
    return None


def dovecot_config(base: Path, port: int, cert: Path, key: Path, limit: int, cpus: int) -> Path:
    """A private instance's dovecot.conf in base: loopback, implicit TLS, passwd-file, maildir under base."""
    mail = pwd.getpwnam("nobody")
    conf = f"""\
# Private Dovecot instance of bench/imap.py: loopback only, its own directories; the system's untouched.
instance_name = mssgw-bench-dovecot
base_dir = {base}/run
state_dir = {base}/state
listen = 127.0.0.1
protocols = imap
log_path = {base}/dovecot.log
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain login
auth_cache_size = 0
passdb {{
  driver = passwd-file
  args = scheme=ARGON2ID username_format=%u {base}/passwd
}}
userdb {{
  driver = static
  args = uid={mail.pw_uid} gid={mail.pw_gid} home={base}/mail/%u
}}
mail_location = maildir:{base}/mail/%u/Maildir
mail_uid = {mail.pw_uid}
mail_gid = {mail.pw_gid}
first_valid_uid = 1
mail_max_userip_connections = {limit}
default_client_limit = {limit}
default_vsz_limit = 1G
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {port}
    ssl = yes
  }}
  # High-performance mode: long-lived login processes, each proxying many TLS sessions.
  service_count = 0
  process_min_avail = {cpus}
  client_limit = {limit}
}}
service imap {{
  process_limit = {limit}
}}
service anvil {{
  client_limit = {limit + 100}
}}
service auth {{
  client_limit = {limit + 100}
}}
"""
    path = base / "dovecot.conf"
    path.write_text(conf, encoding="ascii")
    return path


@dataclass
class DovecotInstance:
    port: int
    master_pid: int
    log: Path
    passwd: Path


@contextlib.contextmanager
def dovecot_instance(
    keep: Path, cert: Path, key: Path, users: list[tuple[str, str]], limit: int
) -> Iterator[DovecotInstance]:
    """A private Dovecot on loopback; stopped on the way out, its directory removed (config and log kept).

    It runs from a directory of its own under the system's temporary directory (its unprivileged
    processes must reach the maildirs, which a private work directory may not allow).
    """
    from gateway.auth.passwords import hash_password  # mssgw's own hasher: the same argon2id parameters

    dovecot, doveadm = tool("dovecot"), tool("doveadm")
    assert dovecot is not None
    assert doveadm is not None
    base = Path(tempfile.mkdtemp(prefix="mssgw-bench-dovecot-"))
    base.chmod(0o755)  # its unprivileged processes must traverse it (it holds no secret but hashes)
    mail = pwd.getpwnam("nobody")
    (base / "mail").mkdir()
    os.chown(base / "mail", mail.pw_uid, mail.pw_gid)
    passwd = base / "passwd"
    passwd.write_text("".join(f"{u}:{{ARGON2ID}}{hash_password(p)}\n" for u, p in users), encoding="utf-8")
    passwd.chmod(0o600)
    shutil.chown(passwd, user="dovecot")  # read by the auth process, which runs as the dovecot user
    (port,) = free_ports(1)
    conf = dovecot_config(base, port, cert, key, limit, os.cpu_count() or 1)
    log = base / "dovecot.log"
    started = False
    master_pid: int | None = None
    try:
        check = subprocess.run(
            [dovecot, "-c", str(conf), "-n"], capture_output=True, text=True, timeout=60, check=False
        )
        if check.returncode != 0:
            raise DovecotError(f"dovecot -n refused the configuration: {one_line(check.stderr)}")
        with (base / "start.stderr").open("w+", encoding="utf-8") as err:
            # The master detaches: its standard output must not be a pipe this process waits on.
            start = subprocess.run(
                [dovecot, "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=err, stderr=err, timeout=60, check=False
            )
            err.seek(0)
            start_errors = err.read()
        started = True
        master_pid = _read_pid(base / "run" / "master.pid", 20)
        if start.returncode != 0 or master_pid is None or not wait_for_port(port, 30):
            why = one_line(start_errors) or f"exit status {start.returncode}"
            raise DovecotError(f"dovecot did not start: {why}; {_fatal_lines(log)}".rstrip("; "))
        yield DovecotInstance(port, master_pid, log, passwd)
    finally:
        if started:
            master_pid = master_pid or _read_pid(base / "run" / "master.pid", 1)
            subprocess.run(
                [doveadm, "-c", str(conf), "stop"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=120,
                check=False,
            )
            if master_pid is not None and not gone(master_pid, 60):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(master_pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy2(conf, keep / "dovecot.conf")
            if log.exists():
                shutil.copy2(log, keep / "dovecot.log")
        shutil.rmtree(base, ignore_errors=True)


def _read_pid(path: Path, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(path.read_text(encoding="ascii").split()[0])
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)


def _fatal_lines(log: Path) -> str:
    with contextlib.suppress(OSError):
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        return "; ".join(line for line in lines if "Fatal:" in line or "Error:" in line)[:2000]
    return ""


def run_dovecot(
    keep: Path, root: Path, creds: dict[str, Any], tls: ssl.SSLContext, args: argparse.Namespace
) -> dict[str, Any]:
    tls_dir = root / OPERATOR / "tls"
    users = next(
        [(str(m["address"]), str(m["password"])) for m in o["mailboxes"]]
        for o in creds["operators"]
        if o["name"] == OPERATOR
    )
    with dovecot_instance(keep, tls_dir / "fullchain.pem", tls_dir / "key.pem", users, connection_limit(args)) as d:

        def cheapen() -> None:  # passwd-file is read again when it changes (no auth cache here)
            d.passwd.write_text("".join(f"{u}:{{ARGON2ID}}{cheap_hash(p)}\n" for u, p in users), encoding="utf-8")

        target = Target(
            DOVECOT,
            d.port,
            users,
            cpu=lambda: tree_cpu_seconds(d.master_pid),
            memory=lambda: tree_memory(d.master_pid),
            alive=lambda: _alive(d.master_pid),
            cheapen_logins=cheapen,
        )
        out = asyncio.run(drive(target, tls, args))
        out["master_pid"] = d.master_pid
        out["server_exited"] = None if out["alive"] else {"status": None, "error": _fatal_lines(d.log)}
    return out


# -- report --------------------------------------------------------------------------------------


def _round(value: float | None, digits: int) -> float | None:
    return round(value, digits) if value is not None else None


def phase_dict(p: Phase, reference: Phase | None) -> dict[str, Any]:
    p50, p99 = p.percentile(50), p.percentile(99)
    return {
        "label": p.label,
        "server": p.server,
        "operation": p.operation,
        "attempted": p.attempted,
        "done": p.done,
        "failures": p.failures,
        "errors": p.errors,
        "seconds": round(p.seconds, 3),
        "per_second": round(p.rate, 1),
        "latency_p50_ms": _round(p50, 2),
        "latency_p99_ms": _round(p99, 2),
        "cpu_busy_cores": _round(p.cpu_busy, 2),
        "server_cpu_seconds": _round(p.server_cpu_seconds, 2),
        "server_cpu_ms_per_operation": _round(
            p.server_cpu_seconds * 1000 / p.done if p.server_cpu_seconds is not None and p.done else None, 2
        ),
        "client_cpu_seconds": round(p.client_cpu_seconds, 2),
        "ratio": round(p.rate / reference.rate, 3) if reference is not None and reference.rate else None,
    }


def _rate_between(times: list[float], start: float, end: float) -> float | None:
    """Sessions opened per second between two instants of the phase."""
    return sum(1 for t in times if start <= t < end) / (end - start) if end > start else None


def idle_dict(i: Idle) -> dict[str, Any]:
    grew_rss = i.after.get("rss_kb", 0) - i.before.get("rss_kb", 0) if i.after else None
    grew_pss = i.after.get("pss_kb", 0) - i.before.get("pss_kb", 0) if i.after else None
    per = i.established or None
    p50 = Phase(i.server, "idle", 0, latencies_ms=i.latencies_ms).percentile(50)
    p99 = Phase(i.server, "idle", 0, latencies_ms=i.latencies_ms).percentile(99)
    minute = min(60.0, i.seconds)
    return {
        "server": i.server,
        "attempted": i.attempted,
        "established": i.established,
        "answered_done": i.answered_done,
        "failures": i.failures,
        "errors": i.errors,
        "ramp_budget_seconds": i.budget,
        "gave_up": i.gave_up,
        "seconds_to_open": round(i.seconds, 2),
        "opened_per_second": round(i.established / i.seconds, 1) if i.seconds else None,
        "opened_per_second_first_minute": _round(_rate_between(i.opened_at, 0.0, minute), 2),
        "opened_per_second_last_minute": _round(_rate_between(i.opened_at, i.seconds - minute, i.seconds), 2),
        "open_latency_p50_ms": _round(p50, 1),
        "open_latency_p99_ms": _round(p99, 1),
        "before": i.before,
        "after": i.after,
        "rss_growth_mb": round(grew_rss / 1024, 1) if grew_rss is not None else None,
        "pss_growth_mb": round(grew_pss / 1024, 1) if grew_pss is not None else None,
        "rss_kb_per_connection": round(grew_rss / per, 1) if grew_rss is not None and per else None,
        "pss_kb_per_connection": round(grew_pss / per, 1) if grew_pss is not None and per else None,
        "idle_server_cpu_busy": _round(i.idle_cpu_busy, 3),
        "cpu_busy_cores_while_opening": _round(i.cpu_busy, 2),
        "server_cpu_seconds_while_opening": _round(i.server_cpu_seconds, 2),
        "client_cpu_seconds_while_opening": round(i.client_cpu_seconds, 2),
        "client_rss_kb": list(i.client_rss_kb) if i.client_rss_kb else None,
    }


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    open_files = raise_open_files(2 * connection_limit(args) + 1000)
    host = machine()
    root, creds = demo_init(workdir)
    tls = ssl.create_default_context(cafile=creds["trust_anchor"])
    tls.check_hostname = False  # connecting to 127.0.0.1; the chain is still verified
    reference: dict[str, Any] | None = None
    why_not = "skipped (--no-dovecot)" if args.no_dovecot else dovecot_unavailable()
    if why_not is None:
        try:
            reference = run_dovecot(workdir / "dovecot", root, creds, tls, args)
        except (DovecotError, OSError, subprocess.SubprocessError) as exc:
            why_not = f"could not run: {exc}"
    mssgw = run_mssgw(workdir, root, creds, tls, args)
    phases: list[dict[str, Any]] = []
    for i in range(len(PHASES)):
        ref: Phase | None = reference["phases"][i] if reference is not None else None
        if ref is not None:
            phases.append(phase_dict(ref, ref))
        phases.append(phase_dict(mssgw["phases"][i], ref))
    idles = [idle_dict(r["idle"]) for r in (reference, mssgw) if r is not None and r["idle"].attempted]
    failures = [p for p in phases if p["failures"] or p["done"] != p["attempted"]]
    failures += [i for i in idles if i["failures"] or i["answered_done"] != i["attempted"]]
    ratios = {p["operation"]: p["ratio"] for p in phases if p["server"] == MSSGW}
    servers = [r for r in (reference, mssgw) if r is not None]
    return {
        "clients": args.clients,
        "messages": args.messages,
        "size": args.size,
        "logins": args.logins,
        "idle": args.idle,
        "reference_idle": idle_sessions(args, DOVECOT) if reference is not None else None,
        "open_files_limit": open_files,
        "machine": host,
        "dovecot": {
            "ran": reference is not None,
            "reason": why_not,
            "master_pid": reference["master_pid"] if reference is not None else None,
        },
        "phases": phases,
        "idle_sessions": idles,
        "ratio": ratios if reference is not None else None,
        "mssgw": {
            "server_exited": mssgw["server_exited"],
            "audit_records": mssgw["audit"],
            "server_cpu_seconds": round(sum(p["server_cpu_seconds"] or 0 for p in phases if p["server"] == MSSGW), 2),
        },
        "load_generator_cpu_seconds": round(
            sum(p["client_cpu_seconds"] for p in phases) + sum(i["client_cpu_seconds_while_opening"] for i in idles), 2
        ),
        "all_ok": not failures and all(s["server_exited"] is None for s in servers),
    }


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _mb(kb: int) -> str:
    return f"{kb / 1024:,.1f}"


def report(result: dict[str, Any]) -> str:
    m = result["machine"]
    out = [
        f"imap benchmark: {result['clients']} concurrent clients, {result['logins']:,} logins, "
        f"{result['messages']:,} messages of {result['size']:,} bytes (APPEND, then UID FETCH BODY.PEEK[]), "
        f"{result['idle']:,} idle IDLE sessions"
        + (
            f" ({result['reference_idle']:,} on Dovecot)"
            if result["reference_idle"] is not None and result["reference_idle"] != result["idle"]
            else ""
        )
        + "; implicit TLS, LOGIN, one command at a time per connection",
        f"machine: {m['usable_cpus']} usable CPUs ({m['cpus']} in all), {m['platform']}, Python {m['python']}, "
        f"SQLite {m['sqlite']}, OpenSSL {m['openssl']}, Dovecot {m['dovecot'] or 'not installed'}, "
        f"load average {m['load_average']} at start, open files limit {result['open_files_limit']:,}",
        f"{'operation':<34}{'done':>7}{'seconds':>9}{'op/s':>8}{'x Dovecot':>11}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'CPUs busy':>11}{'server CPU ms/op':>18}",
    ]
    for p in result["phases"]:
        ratio = f"{p['ratio']:.2f}" if p["ratio"] is not None else "-"
        cpu = f"{p['cpu_busy_cores']:.1f}" if p["cpu_busy_cores"] is not None else "-"
        per_op = p["server_cpu_ms_per_operation"]
        out.append(
            f"{p['label']:<34}{p['done']:>7,}{p['seconds']:>9.2f}{p['per_second']:>8,.1f}{ratio:>11}"
            f"{_ms(p['latency_p50_ms']):>9}{_ms(p['latency_p99_ms']):>9}{cpu:>11}"
            f"{(f'{per_op:.2f}' if per_op is not None else '-'):>18}"
        )
    if not result["dovecot"]["ran"]:
        out.append(f"Dovecot reference: {result['dovecot']['reason']}")
    if result["idle_sessions"]:
        out.append(
            f"{'idle IDLE sessions':<34}{'open':>7}{'seconds':>9}{'open/s':>8}{'last min':>10}{'p99 ms':>9}"
            f"{'RSS MB':>9}{'KB/sess':>9}{'PSS MB':>9}{'KB/sess':>9}{'CPUs idle':>11}"
        )
    for i in result["idle_sessions"]:
        label = LABELS[i["server"]] + " idle" + (" (reference)" if i["server"] == DOVECOT else "")
        a = i["after"] or {}

        def num(value: float | None, fmt: str = ",.1f") -> str:
            return format(value, fmt) if value is not None else "-"

        out.append(
            f"{label:<34}{i['established']:>7,}{i['seconds_to_open']:>9.1f}{num(i['opened_per_second']):>8}"
            f"{num(i['opened_per_second_last_minute']):>10}{_ms(i['open_latency_p99_ms']):>9}"
            f"{(_mb(a['rss_kb']) if a else '-'):>9}{num(i['rss_kb_per_connection'], ',.0f'):>9}"
            f"{(_mb(a['pss_kb']) if a else '-'):>9}{num(i['pss_kb_per_connection'], ',.0f'):>9}"
            f"{num(i['idle_server_cpu_busy'], '.2f'):>11}"
        )
    for i in result["idle_sessions"]:
        b, a = i["before"], i["after"] or {}
        opened = f"{i['established']:,} of {i['attempted']:,} sessions open"
        if i["gave_up"]:
            opened += f" when the {i['ramp_budget_seconds']:,.0f} s budget for opening them ran out"
        first, last = i["opened_per_second_first_minute"], i["opened_per_second_last_minute"]
        line = (
            f"{LABELS[i['server']]} idle: {opened} (opening {first if first is not None else '-'}/s in the first "
            f"minute, {last if last is not None else '-'}/s in the last), {i['answered_done']:,} answered DONE; "
            f"memory before: {b['processes']:,} process{'es' if b['processes'] != 1 else ''}, "
            f"RSS {_mb(b['rss_kb'])} MB, PSS {_mb(b['pss_kb'])} MB"
        )
        if a and i["server"] == DOVECOT:
            procs = ", ".join(f"{n:,} {k}" for k, n in sorted(a["by_name"].items(), key=lambda kv: -kv[1])[:3])
            line += f"; after: {a['processes']:,} processes ({procs}, ...), RSS summed over them"
        out.append(line)
    out.append(
        "each side: (a) Dovecot: private instance, passwd-file with the same argon2id hashes, no auth cache, "
        "maildir (fsync on save), imap-login high-performance mode, one imap process per session; "
        "(b) mssgw: one node, one process and event loop, argon2id in threads, SQLite (synchronous=FULL), "
        "bodies sealed at rest (AES-256-GCM), an audit record per login, logout, APPEND and content FETCH"
        if result["dovecot"]["ran"]
        else "mssgw: one node, one process and event loop, argon2id in threads, SQLite (synchronous=FULL), "
        "bodies sealed at rest (AES-256-GCM), an audit record per login, logout, APPEND and content FETCH"
    )
    s = result["mssgw"]
    audit = s["audit_records"]
    out.append(
        f"mssgw: server process {s['server_cpu_seconds']} s CPU over the timed phases; audit records: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(audit.items()))
        + f"; load generator {result['load_generator_cpu_seconds']} s CPU in all"
    )
    if s["server_exited"] is not None:
        out.append(
            f"mssgw server stopped early (exit status {s['server_exited']['status']}): {s['server_exited']['error']}"
        )
    if result["ratio"] is not None:
        out.append(
            "ratio mssgw/Dovecot: " + ", ".join(f"{k} {v:.2f}" for k, v in result["ratio"].items() if v is not None)
        )
    errors = [
        f"{LABELS[p['server']]} {p.get('operation', 'idle')}: {e}"
        for p in [*result["phases"], *result["idle_sessions"]]
        for e in p["errors"]
    ]
    out.extend(f"error: {e}" for e in errors[:10])
    out.append("result: " + ("all ok" if result["all_ok"] else "FAILED"))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default: %(default)s)")
    parser.add_argument("--messages", type=int, default=500, help="messages to APPEND and FETCH (default: %(default)s)")
    parser.add_argument("--logins", type=int, default=200, help="login sessions (default: %(default)s)")
    parser.add_argument("--idle", type=int, default=10000, help="idle IDLE sessions, 0 for none (default: %(default)s)")
    parser.add_argument(
        "--reference-idle",
        type=int,
        metavar="N",
        help="idle IDLE sessions on Dovecot, when not --idle (its sessions are a process each: 10,000 take "
        "about 6 GB); the per-session figures are compared",
    )
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds over which the servers' CPU use with every session idle is measured (default: %(default)s)",
    )
    parser.add_argument(
        "--idle-ramp",
        type=float,
        default=1800.0,
        metavar="S",
        help="seconds allowed for opening the idle sessions, per server (default: %(default)s)",
    )
    parser.add_argument(
        "--idle-logins",
        choices=("cheap", "same"),
        default="cheap",
        help="before the idle phase, give the users argon2id hashes of the smallest cost on both servers "
        "(cheap: 10,000 sessions open in minutes, not an hour) or keep them (default: %(default)s)",
    )
    parser.add_argument("--size", type=int, default=10240, help="message size in bytes (default: %(default)s)")
    parser.add_argument("--no-dovecot", action="store_true", help="skip the Dovecot reference")
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="FILE",
        help="profile the mssgw process with py-spy during the login, APPEND and FETCH phases: FILE.svg "
        "(flame graph), FILE.json (speedscope) or another name (collapsed stacks)",
    )
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="work in DIR and keep the files (default: a temporary one)"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON to FILE")
    args = parser.parse_args(argv)
    if args.clients < 1:
        parser.error("--clients must be positive")
    if args.messages < 1:
        parser.error("--messages must be positive")
    if args.logins < 1:
        parser.error("--logins must be positive")
    if args.idle < 0:
        parser.error("--idle must be 0 or positive")
    if args.reference_idle is not None and args.reference_idle < 0:
        parser.error("--reference-idle must be 0 or positive")
    if args.idle_ramp <= 0:
        parser.error("--idle-ramp must be positive")
    if args.idle_seconds <= 0:
        parser.error("--idle-seconds must be positive")
    if args.size < 1024:
        parser.error("--size must be at least 1024")
    if args.py_spy is not None:
        if py_spy() is None:
            parser.error("--py-spy needs py-spy (pip install py-spy)")
        args.py_spy = args.py_spy.resolve()
    sys.path.insert(0, str(ROOT))  # the Dovecot reference hashes passwords with this checkout's hasher
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = run(args, args.keep.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="mssgw-bench-imap-") as tmp:
            result = run(args, Path(tmp))
    print(report(result), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0 if result["all_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
