"""DNS servers for tests, on loopback only.

`Dnsmasq` runs Debian's dnsmasq (package dnsmasq-base, installed by tests/run.sh) as a subprocess on
127.0.0.1 and an unprivileged port, serving exactly the records a test declares in a `Zone`:
MX records with preferences (`--mx-host`), addresses (`--host-record`), TXT and SRV records, a null MX as a raw
RR (`--dns-rr=NAME,15,000000`: preference 0, exchange the root name, RFC 7505), NXDOMAIN for any other
name under the `local` domains (`--local`), REFUSED for names elsewhere (no upstream server), and
forwarding of chosen domains to another server (`--server=/domain/ip#port`), and any other record as
raw RDATA (`rr`: `--dns-rr=NAME,RRTYPE,HEX`, e.g. CERT records, type 37). `Dnsmasq.queries()` reads
the queries back from its log, with the transport: dnsmasq answers TCP in a forked child, whose
process id in the log line is not the server's.

dnsmasq cannot be told to answer SERVFAIL nor to stay silent, so `servfail_server` (answers every query
with SERVFAIL, built on dnspython's message codec) and `silent_server` (receives and never answers)
stand in for a broken and an unreachable DNS server.

When dnsmasq is missing the tests using it are skipped, unless CI or MSSGW_REQUIRE_POSTGRES (set by
tests/run.sh once it has installed the Debian packages) is set: then it is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

APT_PACKAGE = "dnsmasq-base"


def require_binary(name: str, package: str) -> str:
    """Path of a server binary of Debian's `package` (on PATH or in /usr/sbin, /sbin); skips the test (or
    fails it where the packages are required: CI, tests/run.sh) when it is not installed."""
    found = shutil.which(name) or next(
        (p for d in ("/usr/sbin", "/sbin") if os.access(p := f"{d}/{name}", os.X_OK)), None
    )
    if found:
        return found
    reason = f"{name} not found: install it with `apt-get install -y {package}`"
    if os.environ.get("CI") or os.environ.get("MSSGW_REQUIRE_POSTGRES"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def dnsmasq_binary() -> str:
    return require_binary("dnsmasq", APT_PACKAGE)


@dataclass(frozen=True)
class Zone:
    """What the server answers."""

    mx: Sequence[tuple[str, str, int]] = ()
    """(domain, exchange, preference)."""
    hosts: Sequence[tuple[str, str]] = ()
    """(name, IPv4 or IPv6 address)."""
    null_mx: Sequence[str] = ()
    txt: Sequence[tuple[str, str]] = ()
    local: Sequence[str] = ("test",)
    """Domains answered from this data only: any other name under them is NXDOMAIN."""
    forward: Sequence[tuple[str, str, int]] = ()
    """(domain, server address, port): queries for the domain are forwarded there."""
    rr: Sequence[tuple[str, int, bytes]] = ()
    """(name, RR type number, RDATA in wire form): served as is."""
    srv: Sequence[tuple[str, str, int, int, int]] = ()
    """(name, target, port, priority, weight): SRV records (RFC 2782)."""

    def arguments(self) -> list[str]:
        args = [f"--local=/{d}/" for d in self.local]
        args += [f"--mx-host={domain},{exchange},{pref}" for domain, exchange, pref in self.mx]
        args += [f"--host-record={name},{address}" for name, address in self.hosts]
        args += [f"--dns-rr={name},15,000000" for name in self.null_mx]
        args += [f"--txt-record={name},{text}" for name, text in self.txt]
        args += [f"--server=/{domain}/{ip}#{port}" for domain, ip, port in self.forward]
        args += [f"--dns-rr={name},{rrtype},{rdata.hex()}" for name, rrtype, rdata in self.rr]
        args += [f"--srv-host={name},{target},{port},{prio},{weight}" for name, target, port, prio, weight in self.srv]
        return args


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (dnsmasq listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free loopback port for the DNS server")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s: a test server (dnsmasq, slapd) stopped for good."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


_QUERY_LINE = re.compile(r"dnsmasq\[(?P<pid>\d+)\]: query\[(?P<type>[A-Z0-9]+)\] (?P<name>\S+) from ")


@dataclass(frozen=True)
class Query:
    """One query in dnsmasq's log: type ("CERT", "MX" ...), name (no final dot), whether over TCP."""

    type: str
    name: str
    tcp: bool


@dataclass
class Dnsmasq:
    """A running dnsmasq; `address` is what `[queue].resolver` takes."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    host: str = field(default="127.0.0.1")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def queries(self) -> list[Query]:
        """The queries received so far, in order."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            match = _QUERY_LINE.match(line)
            if match:
                found.append(Query(match["type"], match["name"], int(match["pid"]) != self.proc.pid))
        return found

    def stop(self) -> None:
        stop_process(self.proc)

    @classmethod
    def start(cls, zone: Zone, workdir: Path) -> Dnsmasq:
        binary = dnsmasq_binary()
        workdir.mkdir(parents=True, exist_ok=True)
        last_log = ""
        for _ in range(5):
            port = _free_port()
            log = workdir / f"dnsmasq-{port}.log"
            argv = [
                binary,
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                f"--port={port}",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                "--cache-size=0",
                "--pid-file=",
                "--log-queries",
                "--log-facility=-",
                *zone.arguments(),
            ]
            with log.open("wb") as out:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
            server = cls(proc, port, log)
            if server._wait_ready():
                return server
            server.stop()
            last_log = log.read_text(errors="replace")
            if "Address already in use" not in last_log:
                break
        raise RuntimeError(f"dnsmasq did not start:\n{last_log}")

    def _wait_ready(self, timeout: float = 10.0) -> bool:
        """True once the server answers a query (any answer), False if it exited first."""
        probe = dns.message.make_query("ready.invalid.", "A")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                dns.query.udp(probe, self.host, port=self.port, timeout=0.2)
            except (dns.exception.Timeout, OSError):
                continue
            return True
        return False


@contextlib.contextmanager
def dnsmasq(zone: Zone, workdir: Path) -> Iterator[Dnsmasq]:
    server = Dnsmasq.start(zone, workdir)
    try:
        yield server
    finally:
        server.stop()


class _Responder(asyncio.DatagramProtocol):
    def __init__(self, rcode: dns.rcode.Rcode | None) -> None:
        self.rcode = rcode
        self.queries = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.queries += 1
        if self.rcode is None or self.transport is None:
            return  # silent: the client times out
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        response.set_rcode(self.rcode)
        self.transport.sendto(response.to_wire(), addr)


@contextlib.asynccontextmanager
async def _udp_responder(rcode: dns.rcode.Rcode | None) -> AsyncIterator[tuple[str, _Responder]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(lambda: _Responder(rcode), local_addr=("127.0.0.1", 0))
    try:
        yield f"127.0.0.1:{transport.get_extra_info('sockname')[1]}", protocol
    finally:
        transport.close()


def servfail_server() -> contextlib.AbstractAsyncContextManager[tuple[str, _Responder]]:
    """A UDP DNS server on loopback answering SERVFAIL to everything: (address, responder)."""
    return _udp_responder(dns.rcode.SERVFAIL)


def silent_server() -> contextlib.AbstractAsyncContextManager[tuple[str, _Responder]]:
    """A UDP socket on loopback that receives queries and never answers: (address, responder)."""
    return _udp_responder(None)
