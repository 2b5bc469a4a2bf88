"""Where mail for a remote domain goes: static routes, then MX records, then the domain's own address.

Implementation notes
- A static route (`[queue].routes`, exact domain, case-insensitive) wins over DNS: development, tests
  and private links between operators. Its value is "host:port", "host" (default port) or "[v6]:port".
- Otherwise MX records are looked up with dnspython's asynchronous resolver, against the configured
  resolver ("ip" or "ip:port"; "" = the system's /etc/resolv.conf) and ordered by preference, lowest
  first; records of equal preference are shuffled, so load spreads over them (RFC 5321 §5.1).
- Null MX (RFC 7505 §3): a single MX record whose exchange is the root "." means the domain accepts no
  mail: a permanent failure, 5.1.10 (RFC 7505 §4.1, reply code 556 of RFC 7504). A "." mixed with real
  exchanges is not a null MX and is dropped as unusable.
- No MX record at all: the domain itself is the implicit MX with preference 0 (RFC 5321 §5.1), if it
  has an address (A or AAAA); without one the domain cannot receive mail: permanent, 5.4.4 (RFC 3463
  X.4.4 unable to route).
- The domain does not exist (NXDOMAIN): permanent, 5.1.2 (RFC 3463 X.1.2 bad destination system).
  A timeout, SERVFAIL or REFUSED answer, or no usable resolver configuration: temporary, 4.4.3
  (RFC 3463 X.4.3 directory server failure), retried by the queue. A malformed static route is a
  temporary 4.3.5 (system incorrectly configured): the operator fixes the configuration, the queue
  keeps the mail meanwhile.
- `addresses` gives the IP addresses of one target host with the same resolver (IPv4 first, then
  IPv6), so MX hosts served by a private resolver are reached without touching the system's; with the
  system resolver the operating system's own lookup (getaddrinfo, /etc/hosts included) is used.
- Errors are typed (`RouteError` and its subclasses) and carry `permanent`, `status` (RFC 3463) and
  `text`; `diagnostic` renders them as a DSN Diagnostic-Code ("smtp; 556 5.1.10 ...").
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.rdata
import dns.rdatatype
import dns.resolver
from dns.rdtypes.ANY.MX import MX

from gateway import lookups

DNS_TIMEOUT = 10.0
"""Seconds a whole lookup (all retries) may take before the destination counts as temporarily unreachable."""

Via = Literal["route", "mx", "a"]


@dataclass(frozen=True)
class Target:
    """One host to try, in order: `preference` is the MX preference (0 for routes and implicit MX)."""

    host: str
    port: int
    preference: int
    via: Via


class RouteError(Exception):
    """No target could be determined for a domain (or a host has no usable address)."""

    def __init__(self, permanent: bool, status: str, text: str) -> None:
        super().__init__(f"{status} {text}")
        self.permanent = permanent
        self.status = status
        self.text = text

    @property
    def code(self) -> int:
        """The SMTP reply code standing for this failure in a DSN."""
        return 451 if not self.permanent else 550

    @property
    def diagnostic(self) -> str:
        return f"smtp; {self.code} {self.status} {self.text}"


class NullMX(RouteError):
    """RFC 7505: the domain publishes a null MX and accepts no mail."""

    def __init__(self, domain: str) -> None:
        super().__init__(True, "5.1.10", f"domain {domain} accepts no mail (null MX)")

    @property
    def code(self) -> int:
        return 556  # RFC 7504 §3, as RFC 7505 §4.1 asks


class NoSuchDomain(RouteError):
    """NXDOMAIN: the destination domain does not exist."""

    def __init__(self, domain: str) -> None:
        super().__init__(True, "5.1.2", f"bad destination system: domain {domain} does not exist")


class NoMailHost(RouteError):
    """The domain exists but has neither MX nor address records."""

    def __init__(self, domain: str) -> None:
        super().__init__(True, "5.4.4", f"unable to route: domain {domain} has no MX and no address record")


class NoAddress(RouteError):
    """A target host does not exist or has no address record (the next target may still do)."""

    def __init__(self, host: str, *, exists: bool) -> None:
        what = "has no address" if exists else "does not exist"
        super().__init__(True, "5.4.4", f"unable to route: host {host} {what}")


class LookupFailed(RouteError):
    """The DNS could not answer now (timeout, SERVFAIL, REFUSED): try again later."""

    def __init__(self, text: str) -> None:
        super().__init__(False, "4.4.3", text)


class BadRoute(RouteError):
    """A static route (or the resolver setting) cannot be parsed."""

    def __init__(self, text: str) -> None:
        super().__init__(False, "4.3.5", text)


def _normalize(domain: str) -> str:
    return domain.strip().rstrip(".").lower()


def split_host_port(value: str, default_port: int) -> tuple[str, int]:
    """Parse "host", "host:port", "[v6]" or "[v6]:port"; a bare IPv6 address is taken whole. ValueError if malformed."""
    value = value.strip()
    if not value:
        raise ValueError("empty address")
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ValueError(f"unclosed '[' in {value!r}")
        host, rest = value[1:end], value[end + 1 :]
        ipaddress.IPv6Address(host)
        if not rest:
            return host, default_port
        if not rest.startswith(":"):
            raise ValueError(f"unexpected {rest!r} after ']' in {value!r}")
        port_text = rest[1:]
    elif value.count(":") > 1:
        ipaddress.IPv6Address(value)  # a bare IPv6 address, no port
        return value, default_port
    elif ":" in value:
        host, port_text = value.split(":")
    else:
        return value, default_port
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad host or port in {value!r}")
    return host, int(port_text)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


_resolvers: dict[tuple[str, float], dns.asyncresolver.Resolver] = {}


def make_resolver(resolver: str = "", *, lifetime: float = DNS_TIMEOUT) -> dns.asyncresolver.Resolver:
    """A dnspython resolver for "ip[:port]" ("" = the system's configuration); cached per setting."""
    key = (resolver, lifetime)
    cached = _resolvers.get(key)
    if cached is not None:
        return cached
    if resolver:
        try:
            host, port = split_host_port(resolver, 53)
            ipaddress.ip_address(host)
        except ValueError as exc:
            raise BadRoute(f"bad DNS resolver setting {resolver!r}: {exc}") from None
        r = dns.asyncresolver.Resolver(configure=False)
        r.nameservers = [host]
        r.port = port
    else:
        try:
            r = dns.asyncresolver.Resolver()
        except dns.resolver.NoResolverConfiguration as exc:
            raise LookupFailed(f"no DNS resolver configured on this system: {exc}") from None
    r.lifetime = lifetime
    r.timeout = min(lifetime, 2.0)  # per try: a lost UDP datagram is retried within the lifetime
    _resolvers[key] = r
    return r


def _failure_text(exc: dns.resolver.NoNameservers) -> str:
    answers = []
    for error in exc.kwargs.get("errors") or []:
        what = error[3] if len(error) > 3 else None
        answers.append(what if isinstance(what, str) else type(what).__name__)
    return "/".join(dict.fromkeys(answers)) or "no answer"


async def _query(r: dns.asyncresolver.Resolver, name: str, rdtype: str) -> list[dns.rdata.Rdata] | None:
    """Records of `rdtype` at `name`; None when the name exists without such records (NoAnswer)."""
    try:
        answer = await r.resolve(name, rdtype, search=False)
    except dns.resolver.NoAnswer:
        return None
    except dns.resolver.NXDOMAIN:
        raise NoSuchDomain(name) from None
    except dns.resolver.NoNameservers as exc:
        raise LookupFailed(f"DNS lookup of {rdtype} records of {name} failed: {_failure_text(exc)}") from None
    except dns.exception.Timeout:
        raise LookupFailed(f"DNS lookup of {rdtype} records of {name} timed out after {r.lifetime:g} s") from None
    except dns.exception.DNSException as exc:
        raise LookupFailed(f"DNS lookup of {rdtype} records of {name} failed: {exc}") from None
    return list(answer)


async def resolve(
    domain: str,
    *,
    routes: Mapping[str, str],
    resolver: str = "",
    port: int = 25,
    lifetime: float = DNS_TIMEOUT,
    rng: random.Random | None = None,
) -> list[Target]:
    """The hosts to try for `domain`, in order; raises a RouteError when there are none (see the notes)."""
    domain = _normalize(domain)
    for key, value in routes.items():
        if _normalize(key) == domain:
            try:
                host, route_port = split_host_port(value, port)
            except ValueError as exc:
                raise BadRoute(f"bad static route for {domain}: {exc}") from None
            return [Target(host.lower(), route_port, 0, "route")]

    r = make_resolver(resolver, lifetime=lifetime)
    records = await _query(r, domain, "MX")
    if records is None:
        # RFC 5321 §5.1: no MX, the domain itself is the implicit MX, if it has an address.
        if await _query(r, domain, "A") is None and await _query(r, domain, "AAAA") is None:
            raise NoMailHost(domain)
        return [Target(domain, port, 0, "a")]

    exchanges = [
        (rec.preference, rec.exchange.to_text(omit_final_dot=True).lower()) for rec in records if isinstance(rec, MX)
    ]
    if len(exchanges) == 1 and exchanges[0][1] in ("", "."):
        raise NullMX(domain)
    usable = [(p, h) for p, h in exchanges if h not in ("", ".")]
    if not usable:
        raise NullMX(domain)

    shuffle = rng.shuffle if rng is not None else random.shuffle
    by_preference: dict[int, list[str]] = {}
    for p, h in usable:
        hosts = by_preference.setdefault(p, [])
        if h not in hosts:
            hosts.append(h)
    targets: list[Target] = []
    for p in sorted(by_preference):
        group = by_preference[p]
        shuffle(group)  # RFC 5321 §5.1: equal preferences in random order
        targets.extend(Target(h, port, p, "mx") for h in group)
    return targets


async def addresses(host: str, *, resolver: str = "", lifetime: float = DNS_TIMEOUT) -> list[str]:
    """IP addresses of a target host: IPv4 first, then IPv6; raises a RouteError when it has none."""
    if _is_ip(host):
        return [host]
    if not resolver:
        try:
            async with asyncio.timeout(lifetime):  # not wait_for: 3.11's can swallow a cancellation
                infos = await lookups.getaddrinfo(host, None)  # its own threads, not the database's
        except TimeoutError:
            raise LookupFailed(f"address lookup of {host} timed out after {lifetime:g} s") from None
        except socket.gaierror as exc:
            if exc.errno == socket.EAI_NONAME:
                raise NoAddress(host, exists=False) from None
            if exc.errno == getattr(socket, "EAI_NODATA", None):
                raise NoAddress(host, exists=True) from None
            raise LookupFailed(f"address lookup of {host} failed: {exc.strerror}") from None
        found = [str(info[4][0]) for info in infos]
        v4 = [a for a in found if ":" not in a]
        v6 = [a for a in found if ":" in a]
        return list(dict.fromkeys(v4 + v6))
    r = make_resolver(resolver, lifetime=lifetime)
    found = []
    for rdtype in ("A", "AAAA"):
        try:
            records = await _query(r, host, rdtype)
        except NoSuchDomain:
            raise NoAddress(host, exists=False) from None
        found += [rec.to_text() for rec in records or []]
    if not found:
        raise NoAddress(host, exists=True)
    return found


__all__ = [
    "DNS_TIMEOUT",
    "BadRoute",
    "LookupFailed",
    "NoAddress",
    "NoMailHost",
    "NoSuchDomain",
    "NullMX",
    "RouteError",
    "Target",
    "Via",
    "addresses",
    "make_resolver",
    "resolve",
    "split_host_port",
]
