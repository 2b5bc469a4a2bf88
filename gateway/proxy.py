"""Listeners behind a load balancer: the PROXY protocol (HAProxy's proxy-protocol.txt, v1 and v2).

A connection from a configured load balancer (`listen.proxy_from`) must begin with a PROXY header naming
the real client; that address is then the session's peer everywhere (audit, lock-out, per-address
limits). Connections from other addresses are served as they are: a PROXY header from them is just an
unknown command, so nobody outside the load balancers can claim another address.

Implementation notes
- The header is parsed by aiosmtpd's `proxy_protocol.get_proxy` (both versions, TLVs), made for this
  job and already a dependency; only the reading is ours.
- The header must be read byte-exactly from the socket before the connection gets its transport: on
  an implicit-TLS listener the TLS ClientHello follows it, and bytes a stream reader had buffered past
  the header would be lost to the TLS layer. So a listener with load balancers accepts connections
  itself (`sock_accept`), reads the header with `sock_recv` of exactly the bytes it needs (v1 one byte
  at a time, at most 107), then hands the socket to asyncio (`connect_accepted_socket`, with TLS on an
  implicit-TLS listener) and the listener's protocol.
- A refused header (malformed, not PROXY, too slow) closes the connection without a reply, as the
  specification asks, and is audited (`proxy.refused`). `PROXY UNKNOWN` and v2 `LOCAL` (the balancer's
  own health checks) keep the balancer's address.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiosmtpd.proxy_protocol import AF, V2_CMD, ProxyData, get_proxy

from gateway.audit.events import AuditEvent
from gateway.audit.oplog import get_logger
from gateway.auth.lockout import client_address
from gateway.tls import refusal_reason

if TYPE_CHECKING:
    from gateway.node import Node

HEADER_TIMEOUT = 10.0
"""Seconds a load balancer has to send the header once connected."""
V1_MAX = 107
"""Longest v1 header, CRLF included (proxy-protocol.txt §2.1)."""

Address = tuple[str, int]


class ProxyRefused(Exception):
    """The connection's PROXY header is missing, malformed or incomplete."""


class _ExactReader:
    """aiosmtpd's AsyncReader over a socket, reading no byte past what is asked."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self.loop = loop
        self.sock = sock

    async def read(self, n: int = -1) -> bytes:
        return await self.loop.sock_recv(self.sock, n)

    async def readexactly(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            piece = await self.loop.sock_recv(self.sock, n - len(data))
            if not piece:
                raise ConnectionError("connection closed inside the PROXY header")
            data += piece
        return bytes(data)

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        assert separator == b"\n"
        data = bytearray()
        while not data.endswith(b"\n"):
            if len(data) >= V1_MAX:  # the signature's 5 bytes were read before: stays within 107
                raise ValueError("PROXY v1 header too long")
            data += await self.readexactly(1)
        return bytes(data)


def client_of(data: ProxyData, balancer: Address) -> Address:
    """The client a valid header names; the balancer itself for its health checks (LOCAL, UNKNOWN)."""
    if data.version == 2 and data.command == V2_CMD.LOCAL:
        return balancer
    if data.family not in (AF.INET, AF.INET6) or data.src_addr is None or data.src_port is None:
        return balancer
    # An IPv4 client of a balancer listening on IPv6 comes mapped in a TCP6 header: it is its IPv4 address.
    mapped = getattr(data.src_addr, "ipv4_mapped", None)
    return str(mapped or data.src_addr), int(data.src_port)


async def read_header(loop: asyncio.AbstractEventLoop, sock: socket.socket, balancer: Address) -> Address:
    """Read and check the PROXY header at the start of `sock`; the client's address, or ProxyRefused."""
    try:
        async with asyncio.timeout(HEADER_TIMEOUT):
            data = await get_proxy(_ExactReader(loop, sock))
    except TimeoutError:
        raise ProxyRefused("no PROXY header in time") from None
    except (OSError, asyncio.IncompleteReadError) as exc:
        raise ProxyRefused(f"connection lost in the PROXY header ({type(exc).__name__})") from None
    if not data.valid:
        raise ProxyRefused(data.error or "malformed PROXY header")
    return client_of(data, balancer)


Refused = Callable[[Address, str], Awaitable[None]]
"""Called with the balancer's address and the reason when a header is refused (the listener audits)."""

TlsRefused = Callable[[Address, ssl.SSLError], Awaitable[None]]
"""Called with the client and the error when an implicit-TLS handshake fails (the listener audits)."""


@dataclass
class ProxyServer:
    """A listening socket that reads PROXY headers from load balancers, then serves like asyncio's Server.

    `protocol(client)` makes the listener's protocol for a connection whose client is `client` (the
    real one when it came through a balancer). Offers what Listener uses of asyncio.Server. Implicit-TLS
    listeners use it without balancers too: asyncio's server ends a failed handshake unseen, this one
    tells `tls_refused` (a TLS error; not a client that merely closed, as a TCP health check does).
    """

    sock: socket.socket
    protocol: Callable[[Address], asyncio.BaseProtocol]
    is_balancer: Callable[[str], bool]
    refused: Refused
    tls: ssl.SSLContext | None = None  # implicit TLS, started after the header
    optional: bool = False
    """A balancer's connection may also begin with TLS itself (a handshake record, 0x16): served with the
    balancer's address. The HTTPS listener's, so that nodes can be upgraded before the balancers send
    headers to 443 (HAProxy configurations of earlier versions passed it without one)."""
    tls_refused: TlsRefused | None = None
    _task: asyncio.Task[None] | None = None
    _conns: set[asyncio.Task[None]] | None = None

    @property
    def sockets(self) -> list[socket.socket]:
        return [self.sock]

    def start(self) -> None:
        self.sock.setblocking(False)
        self._conns = set()
        self._task = asyncio.get_running_loop().create_task(self._accept())

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._conns is not None
        while True:
            try:
                conn, peer = await loop.sock_accept(self.sock)
            except OSError:  # EMFILE, ECONNABORTED...: the listener goes on
                await asyncio.sleep(0.1)
                continue
            task = loop.create_task(self._connection(conn, (str(peer[0]), int(peer[1]))))
            self._conns.add(task)
            task.add_done_callback(self._conns.discard)

    async def _connection(self, conn: socket.socket, peer: Address) -> None:
        loop = asyncio.get_running_loop()
        client = peer
        try:
            if self.is_balancer(peer[0]) and not (self.optional and await _tls_first(loop, conn)):
                try:
                    client = await read_header(loop, conn, peer)
                except ProxyRefused as exc:
                    conn.close()
                    await self.refused(peer, str(exc))
                    return
            await loop.connect_accepted_socket(lambda: self.protocol(client), conn, ssl=self.tls)
        except ssl.SSLError as exc:
            conn.close()
            if self.tls_refused is not None and not isinstance(exc, ssl.SSLEOFError):
                with contextlib.suppress(Exception):  # the audit log reports its own failures
                    await self.tls_refused(client, exc)
        except (OSError, TimeoutError):  # reset, closed or silent during the handshake: nothing to say
            conn.close()
        except Exception:  # a protocol factory's bug (`listen` logs it): this connection only, no task error
            conn.close()
        except BaseException:  # cancelled at close(): the socket goes too
            conn.close()
            raise

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for task in self._conns or ():
            task.cancel()
        self.sock.close()

    async def wait_closed(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def _tls_first(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bool:
    """Whether the connection's first byte, once sent, opens a TLS handshake record (RFC 8446 §5.1: content
    type 22), looked at without reading it; False when nothing comes in time (the header's reader then
    refuses the connection as usual)."""
    readable: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(sock.fileno(), ready)
    try:
        async with asyncio.timeout(HEADER_TIMEOUT):
            await readable
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(sock.fileno())
    try:
        return sock.recv(1, socket.MSG_PEEK) == b"\x16"
    except OSError:
        return False


class Quieter:
    """At most one audit record per client address per `quiet` seconds for a listener's refused
    handshakes: an internet scanner hammering 443 must not fill the audit log. `admit(address)` says
    whether to record now, and how many refusals of that address went unrecorded since its last record.
    Memory is bounded: past `max_addresses`, addresses quiet for longer than `quiet` are forgotten."""

    def __init__(
        self, quiet: float = 60.0, *, max_addresses: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.quiet, self.max_addresses, self.clock = quiet, max_addresses, clock
        self._last: dict[str, float] = {}
        self._unrecorded: dict[str, int] = {}

    def admit(self, address: str) -> tuple[bool, int]:
        now = self.clock()
        last = self._last.get(address)
        if last is not None and now - last < self.quiet:
            self._unrecorded[address] = self._unrecorded.get(address, 0) + 1
            return False, 0
        unrecorded = self._unrecorded.pop(address, 0)
        if last is None and len(self._last) >= self.max_addresses:
            for stale in [a for a, t in self._last.items() if now - t >= self.quiet]:
                del self._last[stale]
                self._unrecorded.pop(stale, None)
        self._last[address] = now
        return True, unrecorded

    def response(self, address: str, response: dict[str, object]) -> dict[str, object] | None:
        """`response` to record now, with the count of this address's unrecorded refusals since its last
        record, or None to record nothing."""
        record, unrecorded = self.admit(address)
        if not record:
            return None
        return {**response, "unrecorded": unrecorded} if unrecorded else response


class PerAddress:
    """A listener's open connections per client address, at most `limit` each (Postfix's
    smtpd_client_connection_count_limit; IMAP's per-address cap; IMAP's sessions per mailbox, keyed by the
    mailbox: `key` the identity). An IPv6 client counts as its /64, as in the lock-out. `admit` counts a
    new connection or refuses it; `release` uncounts it (no key is kept for an address with none open);
    `refusal` is the audit response for a refused one, once a minute per address at most (Quieter), else
    None."""

    def __init__(self, limit: int, key: Callable[[str], str] = client_address) -> None:
        self.limit = limit
        self.key = key  # a client address counts as lockout.client_address says (an IPv6 client: its /64)
        self.open: Counter[str] = Counter()
        self._quieter = Quieter()

    def admit(self, address: str) -> bool:
        key = self.key(address)
        if self.open[key] >= self.limit:
            return False
        self.open[key] += 1
        return True

    def release(self, address: str) -> None:
        key = self.key(address)
        self.open[key] -= 1
        if self.open[key] <= 0:
            del self.open[key]

    def refusal(self, address: str, reply: str) -> dict[str, object] | None:
        response = {"result": "refused", "reply": reply, "limit": self.limit}
        return self._quieter.response(self.key(address), response)


TLS_REFUSED = {"imaps": AuditEvent.IMAP_TLS_REFUSED, "https": AuditEvent.WEB_TLS_REFUSED}
"""The audit event of a failed handshake per implicit-TLS listener; submissions': smtp.tls.refused."""


async def listen(
    node: Node,
    name: str,
    protocol: Callable[[Address | None], asyncio.BaseProtocol],
    *,
    host: str,
    port: int,
    tls: ssl.SSLContext | None,
    optional: bool = False,
) -> asyncio.Server | ProxyServer:
    """A listener: asyncio's own server for a plain one without load balancers, else a ProxyServer
    (`optional`: see ProxyServer), which also audits failed implicit-TLS handshakes. Bound alike either
    way (`bind`: IPv4 clients too on "::", a backlog of 1024).

    `protocol(client)` gets None on asyncio's server (the transport's peer is the client). Its exceptions
    are logged (`listener.protocol_failed`): asyncio drops them silently outside its debug mode."""
    log = get_logger(component=name, node=node.cfg.node.name)

    def guarded(client: Address | None) -> asyncio.BaseProtocol:
        try:
            return protocol(client)
        except Exception as exc:
            log.error("listener.protocol_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            raise

    if not node.cfg.listen.proxy_from and tls is None:
        loop = asyncio.get_running_loop()
        return await loop.create_server(lambda: guarded(None), sock=bind(host, port), ssl=tls)
    author = f"{name}:{node.cfg.node.name}"

    async def refused(balancer: Address, reason: str) -> None:
        await node.audit.record(
            AuditEvent.PROXY_REFUSED,
            author=author,
            peer=balancer[0],
            response={"result": "refused", "listener": name, "reason": reason},
        )

    quieter = Quieter()

    async def tls_refused(client: Address, exc: ssl.SSLError) -> None:
        response = quieter.response(client[0], {"result": "refused", "listener": name, "reason": refusal_reason(exc)})
        if response is None:
            return
        await node.audit.record(
            TLS_REFUSED.get(name, AuditEvent.SMTP_TLS_REFUSED), author=author, peer=client[0], response=response
        )

    server = ProxyServer(bind(host, port), guarded, node.cfg.listen.is_proxy, refused, tls, optional, tls_refused)
    server.start()
    return server


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket as asyncio's create_server makes one (SO_REUSEADDR, IPv6 when the host is)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, as getaddrinfo gives it to create_server: accepted sockets inherit it, and asyncio
    # sets TCP_NODELAY only on sockets whose proto says TCP. With proto 0, Nagle held the tagged OK behind
    # a FETCH's literal until the client's delayed ACK: 40 ms a command (165 FETCH/s instead of ~1,500).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    return sock
