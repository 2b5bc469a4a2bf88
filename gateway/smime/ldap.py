"""LDAP certificate discovery, the last step of the DCDT order (domain brief §7): the servers named by
`_ldap._tcp.<domain>` SRV records, asked for the entry whose `mail` is the address, then the domain.

Implementation notes
- Server order, RFC 2782: lowest priority first; within one priority, a weighted random order (records
  of weight 0 first in the list, then the running-sum selection). A single record whose target is "."
  says the service is not offered there. Targets are resolved with the discovery's own resolver (the
  configured DNS servers), not the system's, and each of their addresses is tried.
- The first server that answers the searches is the answer, even an empty one; a server that cannot be
  reached, or answers with an error other than "no such base", gives way to the next. When every server
  failed, the step is unavailable (the caller defers, 4.x).
- The search (DCDT, Direct Applicability Statement §5.3): anonymous, plain LDAP (the certificates are
  public and judged on their own), each naming context of the root DSE as base (the root itself when it
  lists none), subtree, filter `(mail=<address>)` then `(mail=<domain>)`, the attributes
  `userSMIMECertificate` and `userCertificate`. A value is a DER or PEM certificate or a PKCS #7
  SignedData bag (RFC 2798's form of userSMIMECertificate, carrying its chain): the bag's CA certificates
  help build the path, its other certificates are candidates.
- Bounds, the records being a peer's to choose: at most LDAP_MAX_SERVERS servers, LDAP_MAX_ENTRIES
  entries a search, LDAP_MAX_VALUES certificates in all; connect and each reply within the discovery's
  timeout, the whole step within LDAP_DEADLINE; at most LDAP_MAX_OCTETS read from one server. ldap3
  buffers a whole BER message whatever length it announces, and its receive timeout bounds each read,
  not the exchange: the socket it reads from counts the octets and stops at the step's deadline, so a
  server streaming a huge answer, or dripping one, costs neither memory nor a thread past the step.
- A domain whose servers were tried and all failed as servers (no connection, no bind, no root DSE, or
  the deadline) is remembered for LDAP_DOWN_TTL seconds: its next searches are unavailable at once,
  without asking. Discovery is per recipient, one after the other: without it, a message to ten
  recipients of a domain whose directory accepts connections and never answers would hold its delivery
  for ten deadlines, and every message to that domain for as long. Not remembered: a failed SRV or
  address lookup (no server tried: DNS's trouble, maybe of this name only), and a server's error answer
  to one address's search. Unavailable defers (4.x) anyway; LDAP_DOWN_TTL is below the queue's first
  retry (1 minute, less its 10% jitter), which therefore asks again. An answer, even from a search that
  started before the failure, clears the memo. At most LDAP_DOWN_MAX domains are remembered.
- ldap3 (LGPL-3.0, pure Python) speaks the protocol; it is synchronous, so each server's exchange runs
  on a thread, bounded by its own socket timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import ldap3
import ldap3.core.exceptions
from asn1crypto import cms as asn1_cms
from cryptography import x509
from ldap3.utils.conv import escape_filter_chars

from gateway import lookups
from gateway.smime.cms import MALFORMED

LDAP_MAX_SERVERS = 4  # SRV targets (addresses) tried, in order
LDAP_MAX_ENTRIES = 10  # entries a search returns
LDAP_MAX_VALUES = 16  # certificates read from one server's answer
LDAP_DEADLINE = 12.0  # the whole step: every server tried
LDAP_GRACE = 1.0  # past the deadline, for a DNS lookup under way (each one's own timeout may be longer)
LDAP_DOWN_TTL = 30.0  # a domain whose servers all failed is not asked again for this long (module notes)
LDAP_DOWN_MAX = 1024  # domains remembered so
ATTRIBUTES = ("userSMIMECertificate", "userCertificate")
_ATTRIBUTE_NAMES = frozenset(a.lower() for a in ATTRIBUTES)
LDAP_MAX_BASES = 4  # naming contexts of the root DSE searched
LDAP_MAX_OCTETS = 1 << 20  # read from one server, every reply of the exchange together
NO_SUCH_OBJECT = 32  # RFC 4511 §4.1.9 resultCode noSuchObject: a naming context with nothing under it


@dataclass(frozen=True, slots=True)
class Target:
    """One SRV record of `_ldap._tcp.<domain>` (RFC 2782)."""

    host: str
    port: int
    priority: int
    weight: int


def srv_order(targets: Sequence[Target], uniform: Callable[[int], int] | None = None) -> list[Target]:
    """RFC 2782's order: by priority, and within one priority a weighted random order. `uniform(n)`
    draws an integer in [0, n] (random.randint(0, n) by default)."""
    draw = uniform or (lambda n: random.randint(0, n))  # noqa: S311 - load spreading, not a secret
    ordered: list[Target] = []
    for priority in sorted({t.priority for t in targets}):
        # "all those with weight 0 are placed at the beginning of the list"
        left = sorted((t for t in targets if t.priority == priority), key=lambda t: t.weight != 0)
        while left:
            pick = draw(sum(t.weight for t in left))
            running = 0
            for index, target in enumerate(left):
                running += target.weight
                if running >= pick:
                    ordered.append(left.pop(index))
                    break
    return ordered


def certificates_of(value: bytes) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    """(candidates, helpers) of one attribute value: a DER or PEM certificate, or a PKCS #7 SignedData
    whose CA certificates are helpers (a path to build) and the others candidates. ([], []) otherwise."""
    with contextlib.suppress(*MALFORMED):
        return [x509.load_der_x509_certificate(value)], []
    if b"-----BEGIN CERTIFICATE-----" in value:
        with contextlib.suppress(*MALFORMED):
            return list(x509.load_pem_x509_certificates(value)), []
        return [], []
    try:
        info = asn1_cms.ContentInfo.load(value, strict=True)
        if info["content_type"].native != "signed_data":
            return [], []
        carried = [
            x509.load_der_x509_certificate(choice.chosen.dump())
            for choice in info["content"]["certificates"] or []
            if choice.name == "certificate"
        ]
    except MALFORMED:
        return [], []
    candidates: list[x509.Certificate] = []
    helpers: list[x509.Certificate] = []
    for cert in carried:
        (helpers if _is_ca(cert) else candidates).append(cert)
    return candidates, helpers


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, *MALFORMED):
        return False


def escape(value: str) -> str:
    """RFC 4515 §3: an assertion value with `*`, `(`, `)`, `\\` and NUL escaped."""
    return escape_filter_chars(value)


@dataclass
class Answer:
    """What one server said: the entries' certificate values for the first filter that found any."""

    server: str  # ldap://address:port
    filter_index: int = -1  # which of the filters found values (-1: none)
    values: list[tuple[str, bytes]] = field(default_factory=list)  # (entry DN, attribute value)


class Unavailable(Exception):
    """DNS failed for now, or no LDAP server of the domain could be asked: the recipient is deferred."""


async def lookup(
    resolver: dns.asyncresolver.Resolver, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> dns.rrset.RRset | None:
    """The records of `rdtype` at `name`; None for NXDOMAIN or no answer. SERVFAIL, REFUSED, a timeout or
    an unreachable server raise Unavailable (discovery's CERT lookups and this step's SRV and addresses)."""
    try:
        answer = await resolver.resolve(name, rdtype, raise_on_no_answer=False, search=False)
    except dns.resolver.NXDOMAIN:
        return None
    except dns.resolver.NoNameservers as exc:  # SERVFAIL, REFUSED, unreachable from every server
        raise Unavailable(f"{name}: no server answered ({exc})") from None
    except dns.exception.Timeout:
        raise Unavailable(f"{name}: DNS timeout") from None
    except (dns.exception.DNSException, OSError) as exc:
        raise Unavailable(f"{name}: {type(exc).__name__} {exc}".rstrip()) from None
    return answer.rrset


class _Bounded:
    """The socket ldap3 reads a server's replies from, refusing to read past `limit` octets in all or past
    the monotonic time `end`: ldap3 itself would buffer any announced length, for as long as each read
    comes within its receive timeout. Everything else is the socket's own."""

    def __init__(self, sock: socket.socket, limit: int, end: float) -> None:
        self._sock, self._left, self._end = sock, limit, end

    def recv(self, size: int) -> bytes:
        if time.monotonic() >= self._end:
            raise TimeoutError("the step's deadline passed during the answer")
        data = self._sock.recv(size)
        self._left -= len(data)
        if self._left < 0:
            raise OSError(f"the answer passed {LDAP_MAX_OCTETS} octets")
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _ask(host: str, port: int, filters: Sequence[str], timeout: float, end: float, served: list[bool]) -> Answer:
    """One server's answer (on a thread): the root DSE's naming contexts, then each filter in turn until
    one finds certificate values. Raises OSError or an ldap3 exception when the server fails, sends more
    than LDAP_MAX_OCTETS or is still answering at `end` (time.monotonic()). `served` is set once the
    server has answered its root DSE: an error after that is its answer to these searches."""
    # Referrals are not followed: ldap3 would, to any host a peer's server names, past the address check
    # (gateway.lookups.Reach) and outside the octet bound and the deadline.
    server = ldap3.Server(
        host, port=port, connect_timeout=timeout, get_info=ldap3.NONE, allowed_referral_hosts=[("", False)]
    )
    url = f"ldap://{host}:{port}" if ":" not in host else f"ldap://[{host}]:{port}"
    answer = Answer(url)
    # ldap3 packs receive_timeout into SO_RCVTIMEO as whole seconds
    conn = ldap3.Connection(
        server, receive_timeout=math.ceil(timeout), read_only=True, raise_exceptions=False, auto_referrals=False
    )
    try:
        conn.open(read_server_info=False)
        conn.socket = _Bounded(conn.socket, LDAP_MAX_OCTETS, end)
        if not conn.bind():
            raise ldap3.core.exceptions.LDAPBindError(f"anonymous bind refused: {conn.result.get('description')}")
        conn.search("", "(objectClass=*)", search_scope=ldap3.BASE, attributes=["namingContexts"], size_limit=1)
        if conn.result.get("result") != 0:
            raise ldap3.core.exceptions.LDAPOperationResult(f"root DSE: {conn.result.get('description')}")
        bases = [str(b) for e in conn.response or [] for b in e.get("attributes", {}).get("namingContexts", [])]
        served.append(True)
        for index, flt in enumerate(filters):
            for base in bases[:LDAP_MAX_BASES] or [""]:
                conn.search(
                    base,
                    flt,
                    search_scope=ldap3.SUBTREE,
                    attributes=list(ATTRIBUTES),
                    size_limit=LDAP_MAX_ENTRIES,
                    time_limit=max(1, int(timeout)),
                )
                code = conn.result.get("result")
                # 4 sizeLimitExceeded: the entries returned so far are used
                if code not in (0, 4, NO_SUCH_OBJECT):
                    raise ldap3.core.exceptions.LDAPOperationResult(f"search: {conn.result.get('description')}")
                for entry in conn.response or []:
                    if entry.get("type") != "searchResEntry":
                        continue
                    raw = entry.get("raw_attributes", {})
                    for name in raw:
                        if name.split(";", 1)[0].lower() in _ATTRIBUTE_NAMES:
                            answer.values += [(str(entry.get("dn", "")), bytes(v)) for v in raw[name]]
            if answer.values:
                answer.filter_index = index
                del answer.values[LDAP_MAX_VALUES:]
                return answer
        return answer
    finally:
        with contextlib.suppress(Exception):
            conn.unbind()


class FailureMemo:
    """Temporary failures remembered for `ttl` seconds, by key (a domain, a URL): what a peer's tarpit
    costs once, not once per recipient (module notes). At most `size` keys: the lapsed ones go first,
    then the oldest."""

    def __init__(self, ttl: float, clock: Callable[[], float], *, again: str, size: int = LDAP_DOWN_MAX) -> None:
        self.ttl = ttl
        self.clock = clock
        self.again = again  # what is not done meanwhile, for the detail: "asked", "fetched"
        self.size = size
        self._failed: dict[str, tuple[float, float, str]] = {}  # key -> (failed at, until, what failed)

    def recall(self, key: str) -> str | None:
        """The remembered failure of `key`, with its age, while it lasts."""
        got = self._failed.get(key)
        if got is None:
            return None
        now = self.clock()
        failed, until, detail = got
        if now >= until:
            del self._failed[key]
            return None
        return f"{detail} [{now - failed:.0f} s ago; not {self.again} again for {until - now:.0f} s]"

    def remember(self, key: str, detail: str) -> None:
        if self.ttl <= 0:
            return
        now = self.clock()
        if key not in self._failed and len(self._failed) >= self.size:
            for k in [k for k, (_, until, _) in self._failed.items() if until <= now] or [next(iter(self._failed))]:
                del self._failed[k]
        self._failed[key] = (now, now + self.ttl, detail)

    def forget(self, key: str | None = None) -> None:
        if key is None:
            self._failed.clear()
        else:
            self._failed.pop(key, None)

    def __len__(self) -> int:
        return len(self._failed)


@dataclass
class _Attempt:
    """What one search met: its failures (the detail), the servers tried, and whether one of them
    answered these searches with an error, which is not a server down (the memo, module notes)."""

    failures: list[str] = field(default_factory=list)
    servers: int = 0
    refused: bool = False

    @property
    def servers_down(self) -> bool:
        return self.servers > 0 and not self.refused


class LdapFinder:
    """The LDAP step for one discovery: SRV lookup, server order, the searches."""

    def __init__(
        self,
        resolver: dns.asyncresolver.Resolver,
        *,
        timeout: float = 5.0,
        deadline: float = LDAP_DEADLINE,
        uniform: Callable[[int], int] | None = None,
        reach: lookups.Reach | None = None,
        down_ttl: float = LDAP_DOWN_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.resolver = resolver
        self.reach = reach  # the addresses a peer's SRV records may send us to (None: any)
        self.timeout = timeout
        self.deadline = deadline
        self.uniform = uniform
        self.down = FailureMemo(down_ttl, clock, again="asked")  # domains whose servers all failed

    async def search(self, domain: dns.name.Name, filters: Sequence[str]) -> Answer | None:
        """The first answering server's answer; None when the domain names no LDAP server.
        Raises Unavailable when it names some and none answered, or the step outlasts its deadline
        (by LDAP_GRACE at most: the lookups of SRV records and addresses count too), and at once while
        such a failure of the domain is remembered (module notes)."""
        key = domain.to_text(omit_final_dot=True).lower()
        remembered = self.down.recall(key)
        if remembered is not None:
            raise Unavailable(remembered)
        end = time.monotonic() + self.deadline
        attempt = _Attempt()
        try:
            async with asyncio.timeout(self.deadline + LDAP_GRACE):
                answer = await self._search(domain, filters, end, attempt)
        except TimeoutError:
            late = f"no LDAP server answered within {self.deadline:g} s"
            self._failed(key, late + "".join(f"; {f}" for f in attempt.failures), attempt.servers_down)
        except Unavailable as exc:
            self._failed(key, str(exc), attempt.servers_down)
        self.down.forget(key)
        return answer

    def _failed(self, key: str, detail: str, remember: bool) -> NoReturn:
        if remember:
            self.down.remember(key, detail)
        raise Unavailable(detail) from None

    def forget(self) -> None:
        """Ask every domain again at its next search."""
        self.down.forget()

    async def _search(
        self, domain: dns.name.Name, filters: Sequence[str], end: float, attempt: _Attempt
    ) -> Answer | None:
        targets = await self._targets(domain)
        if not targets:
            return None
        failures = attempt.failures
        for target in srv_order(targets, self.uniform):
            if attempt.servers >= LDAP_MAX_SERVERS or time.monotonic() >= end:
                break
            for address in await self._addresses(target.host, failures):
                if attempt.servers >= LDAP_MAX_SERVERS or time.monotonic() >= end:
                    break
                attempt.servers += 1
                served: list[bool] = []
                try:
                    return await asyncio.wait_for(
                        lookups.blocking(_ask, address, target.port, filters, self.timeout, end, served, pool="ldap"),
                        max(0.001, end - time.monotonic()),
                    )
                except (OSError, TimeoutError, ldap3.core.exceptions.LDAPException, *MALFORMED) as exc:
                    if served and isinstance(exc, ldap3.core.exceptions.LDAPOperationResult):
                        attempt.refused = True  # its error answer to these searches: the server is up
                    failures.append(f"{target.host} ({address}:{target.port}): {type(exc).__name__} {exc}".rstrip())
        raise Unavailable("no LDAP server answered: " + ("; ".join(failures) or "none could be reached"))

    async def _targets(self, domain: dns.name.Name) -> list[Target]:
        name = dns.name.from_text("_ldap._tcp", origin=None).concatenate(domain)
        answer = await lookup(self.resolver, name, dns.rdatatype.SRV)
        if answer is None:
            return []
        targets = [Target(rd.target.to_text(), rd.port, rd.priority, rd.weight) for rd in answer]
        # RFC 2782: 'A Target of "." means that the service is decidedly not available at this domain.'
        return [t for t in targets if t.host != "."]

    async def _addresses(self, host: str, failures: list[str]) -> list[str]:
        found: list[str] = []
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            try:
                answer = await lookup(self.resolver, dns.name.from_text(host), rdtype)
            except Unavailable as exc:
                failures.append(str(exc))
                continue
            found += [rd.address for rd in answer or []]
        if not found:
            failures.append(f"{host}: no address")
        refused = [a for a in found if self.reach is not None and not self.reach.permits(a)]
        if refused:
            failures.append(f"{host}: not an address this node may reach ({', '.join(refused)})")
        return [a for a in found if a not in refused]


__all__ = [
    "LDAP_DEADLINE",
    "LDAP_DOWN_TTL",
    "LDAP_MAX_OCTETS",
    "LDAP_MAX_SERVERS",
    "Answer",
    "FailureMemo",
    "LdapFinder",
    "Target",
    "Unavailable",
    "certificates_of",
    "escape",
    "lookup",
    "srv_order",
]
