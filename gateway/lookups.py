"""Blocking network calls (host name lookups, LDAP) in a thread pool of their own, and the HTTP client
settings of the node's fetches (IPKIX certificates, OCSP, JWKS), with the addresses they may reach.

Implementation notes
- Why a pool of our own: `getaddrinfo` blocks, and asyncio runs it in the loop's default executor
  (min(32, CPUs + 4) threads: 6 on 2 cores), which also runs SQLite's statements
  (gateway.store.sqlite_inline) and every `to_thread` call (password hashing, message rendering). A
  thread cannot be cancelled: when its caller's timeout fires it still waits for the system resolver
  (5 s a try, 2 tries a server). Six names under a silent DNS server (a peer's MX hosts, an IPKIX URL's
  host) then held every thread, and the node's database waited behind them. Here they have
  `LOOKUP_THREADS` threads: when those are taken the next lookups wait and time out, nothing else does.
  LDAP exchanges (ldap3 blocks too) have `LDAP_THREADS` of their own: a tarpitting directory server
  holds those, not the relay's address lookups.
- aiohttp resolves host names itself (its ThreadedResolver: the default executor again): our fetches
  give it `HttpResolver`, which uses the pool, or asks given DNS servers with dnspython when the node
  has them (`[smime] dns_servers`: the servers discovery asks for CERT records answer for the IPKIX
  hosts those records name).
- An IPKIX URL comes from a peer's DNS: followed blindly it could make the node send requests into its
  own network (SSRF: a database port, a cloud metadata address). `Reach` says which addresses a fetch
  may connect to (public ones, and the networks the operator adds, `[smime] allow_networks`); the resolver
  drops the others, and `checked_get` checks literal addresses and every redirection (aiohttp does not
  resolve an IP literal, so the resolver never sees one).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import aiohttp
import dns.asyncresolver
import dns.exception
import dns.resolver
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

T = TypeVar("T")

LOOKUP_THREADS = 8
LDAP_THREADS = 4  # LDAP exchanges (12 s each at worst): apart, so that they cannot hold the lookups up
MAX_REDIRECTS = 3

_POOLS = {"lookup": LOOKUP_THREADS, "ldap": LDAP_THREADS}
_pools: dict[str, ThreadPoolExecutor] = {}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _executor(pool: str) -> ThreadPoolExecutor:
    found = _pools.get(pool)
    if found is None:
        found = _pools[pool] = ThreadPoolExecutor(_POOLS[pool], thread_name_prefix=f"mssgw-{pool}")
    return found


async def blocking(fn: Callable[..., T], *args: Any, pool: str = "lookup") -> T:
    """`fn(*args)` in one of this module's pools: "lookup" (host names) or "ldap" (LDAP exchanges)."""
    return await asyncio.get_running_loop().run_in_executor(_executor(pool), partial(fn, *args))


async def getaddrinfo(host: str, port: int | None, *, family: int = 0, flags: int = 0) -> list[Any]:
    """The system's `getaddrinfo` (so /etc/hosts too) for TCP, in the lookup pool."""
    return await blocking(socket.getaddrinfo, host, port, family, socket.SOCK_STREAM, socket.IPPROTO_TCP, flags)


@dataclass(frozen=True)
class Reach:
    """The addresses a fetch may connect to: public ones (`is_global`, not multicast), and `extra` networks."""

    extra: tuple[Network, ...] = ()

    @classmethod
    def of(cls, networks: Sequence[str | Network]) -> Reach:
        return cls(tuple(ipaddress.ip_network(n, strict=False) for n in networks))

    def permits(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone index is not part of the address
        except ValueError:
            return False
        if any(ip in net for net in self.extra):
            return True
        if isinstance(ip, ipaddress.IPv6Address):
            if any(ip in net for net in _TUNNELS):
                return False  # Teredo, a local NAT64 prefix, site-local: where they lead is not known here
            # An IPv4 address inside (mapped, compatible, SIIT, 6to4, the well-known NAT64 prefix) is
            # where the connection ends up: judged as that one.
            inner = ip.ipv4_mapped or ip.sixtofour
            if inner is None and any(ip in net for net in _EMBEDDING):
                inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            if inner is not None:
                return self.permits(str(inner))
        return ip.is_global and not ip.is_multicast


_EMBEDDING = tuple(
    ipaddress.IPv6Network(n)
    for n in ("::/96", "::ffff:0:0:0/96", "64:ff9b::/96")  # IPv4-compatible, SIIT, NAT64 well-known (RFC 6052)
)
_TUNNELS = tuple(ipaddress.IPv6Network(n) for n in ("2001::/32", "64:ff9b:1::/48", "fec0::/10"))


class AddressRefused(OSError):
    """A host whose addresses are all outside what the fetch may reach."""


def _result(host: str, address: str, port: int, family: int) -> ResolveResult:
    return ResolveResult(
        hostname=host,
        host=address,
        port=port,
        family=family,
        proto=socket.IPPROTO_TCP,
        flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
    )


class HttpResolver(AbstractResolver):
    """aiohttp's host lookups for the node's fetches: in the lookup pool, or asked of `nameservers`
    (dnspython) when given; with a `reach`, the addresses outside it are dropped, and a host left with
    none raises AddressRefused."""

    def __init__(
        self, nameservers: Sequence[str] = (), *, port: int = 53, timeout: float = 5.0, reach: Reach | None = None
    ) -> None:
        self.reach = reach
        self._dns: dns.asyncresolver.Resolver | None = None
        if nameservers:
            self._dns = dns.asyncresolver.Resolver(configure=False)
            self._dns.nameservers = list(nameservers)
            self._dns.port = port
            self._dns.lifetime = timeout
            self._dns.timeout = min(timeout, 2.0)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._dns is None:
            infos = await getaddrinfo(host, port, family=family, flags=getattr(socket, "AI_ADDRCONFIG", 0))
            found = [(str(info[4][0]), int(info[0])) for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]
        else:
            found = await self._ask(host, family)
        allowed = [(a, f) for a, f in found if self.reach is None or self.reach.permits(a)]
        if found and not allowed:
            raise AddressRefused(f"{host} has no address this node may fetch from ({', '.join(a for a, _ in found)})")
        if not allowed:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} has no address")
        return [_result(host, a, port, f) for a, f in dict.fromkeys(allowed)]

    async def _ask(self, host: str, family: int) -> list[tuple[str, int]]:
        assert self._dns is not None
        kinds = [("A", socket.AF_INET), ("AAAA", socket.AF_INET6)]
        found: list[tuple[str, int]] = []
        for rdtype, fam in kinds:
            if family not in (0, fam):
                continue
            try:
                answer = await self._dns.resolve(host, rdtype, search=False)
            except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
                continue
            except dns.exception.DNSException as exc:
                raise socket.gaierror(socket.EAI_AGAIN, f"lookup of {host} failed: {type(exc).__name__}") from None
            found += [(rd.to_text(), fam) for rd in answer]
        return found

    async def close(self) -> None:
        pass


def session(timeout: float, resolver: AbstractResolver | None = None) -> aiohttp.ClientSession:
    """An HTTP client session for one fetch: `timeout` seconds in all, host names looked up by `resolver`
    (the lookup pool by default, never the default executor)."""
    connector = aiohttp.TCPConnector(resolver=resolver or HttpResolver())
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout))


@asynccontextmanager
async def checked_get(
    http: aiohttp.ClientSession, url: str, reach: Reach | None
) -> AsyncIterator[aiohttp.ClientResponse]:
    """GET `url`, following at most MAX_REDIRECTS redirections; with a `reach`, a URL (the first or a
    redirection) naming an address outside it raises AddressRefused before anything is sent there."""
    for _ in range(MAX_REDIRECTS + 1):
        target = URL(url)
        if reach is not None and target.host is not None and _literal(target.host) and not reach.permits(target.host):
            raise AddressRefused(f"{target.host} is not an address this node may fetch from")
        async with http.get(target, allow_redirects=False) as response:
            location = response.headers.get("Location")
            if response.status not in (301, 302, 303, 307, 308) or not location:
                yield response
                return
            url = str(response.url.join(URL(location)))
    raise aiohttp.TooManyRedirects(response.request_info, response.history)


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return True
