"""Recipient certificate discovery (domain brief §7 "Certificate discovery", DCDT order; issue 5).

Implementation notes
- Steps, in order; the first one that finds any certificate ends the search:
  1. `local`: the S/MIME certificates registered to one of this operator's mailboxes
     (`MailboxRepository.smime_certificates`), without any DNS query;
  2. `published`: certificates published with the national directory data. The 31-column extraction
     (domain brief §3) carries none, so they come as files beside it (`[smime] published`: PEM/DER
     files or directories, as the directory's LDAP publishes `userSMIMECertificate`), indexed by their
     SAN: an rfc822Name equal to the address, else a dNSName equal to its domain;
  3. DNS CERT records (RFC 4398, RR type 37) at the address name, `@` replaced by `.` (RFC 4398 §2.3,
     DCDT: `alice.martin@ch-a.example` -> `alice.martin.ch-a.example.`, the local part's dots making
     labels), `dns-address`; then at the domain name, `dns-domain`.
  A local part that cannot be a DNS name (an empty label, a label over 63 octets, a name over 255)
  skips the address name; the domain is still asked.
  4. LDAP (gateway/smime/ldap.py): the servers of the domain's `_ldap._tcp` SRV records (priority, then
     weight), asked for the entry whose `mail` is the address, `ldap-address`, then the domain,
     `ldap-domain`. No SRV record is "nothing found"; servers named but none answering is `unavailable`.
- Record types: PKIX (1) holds a DER certificate; IPKIX (4) a URL, fetched here (http and https only,
  a few seconds, a size cap; DER or PEM). At most IPKIX_MAX URLs per name are fetched, together, within
  one IPKIX_DEADLINE for the step (the others are `url-skipped`): the records are the peer's to choose,
  and the queue worker waits for them. A URL that cannot be fetched at all (a host that is not a valid
  name) is `url-refused`; anything else a fetch raises is `url-failed`, never an exception out of `find`.
  Other types (SPKI, PGP, URI ...) are not certificates for S/MIME and count as nothing found.
- A found certificate counts when `TrustStore.check(cert, others, [address])` accepts it: trusted path
  (the step's other certificates and the configured intermediates may complete it), unrevoked,
  emailProtection, keyEncipherment and an RSA key of 2048 bits or more (what our key transport can use:
  an EC certificate is refused for that recipient alone, not at encryption for the whole message), and
  bound to the recipient (rfc822Name = address, or dNSName = domain).
  Found-but-invalid drops the recipient: no fallback to a later step (DCDT "found but not used").
  Every invalid certificate is reported with one reason from `REASONS`.
- DNS never raises out of `find`: NXDOMAIN and an empty answer are "nothing here"; SERVFAIL, REFUSED,
  a timeout or an unreachable server are `unavailable` (the caller defers: 4.x), distinct from
  `no-certificate` and `invalid` (5.x). An IPKIX URL that times out or answers 5xx is `unavailable`
  too when no other certificate of the step is valid (the certificate behind it may be the good one).
  Such a URL is not fetched again for IPKIX_DOWN_TTL (30 s, below the queue's first retry): a domain's
  IPKIX record names one URL for all its recipients, and a host that never answers would otherwise cost
  each of them the step's deadline. An answer of any kind clears it.
  So is a step whose only rejections are `no-revocation-info`: our CRLs are missing or stale, ours to fix
  (the inbound side answers 451 4.7.5 for the same condition), not the recipient's (5.7.5).
- Answers over 512 octets: the resolver sends no EDNS (dnspython's default with explicit servers), the
  server sets TC, and dnspython's resolver asks again over TCP by itself (resolver.py `query_result`:
  `Truncated` -> `retry_with_tcp`); tests/smime/test_discovery.py checks it against dnsmasq.
- Results are cached per address (lower-cased): usable certificates for `ttl` seconds (never past the
  earliest notAfter among them), `no-certificate`, `invalid` and `bad-address` for at most
  `NEGATIVE_TTL`; `unavailable` is never cached per address, but the LDAP step remembers a domain whose
  servers all failed for LDAP_DOWN_TTL (gateway/smime/ldap.py notes). The resolver keeps no cache of its own. New CRLs
  (`TrustStore.set_crls`) empty the cache: its results were judged with the old ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from pathlib import Path

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
from cryptography import x509

from gateway import lookups
from gateway.config import SmimeSection
from gateway.lookups import AddressRefused, HttpResolver, Reach
from gateway.smime.cms import MALFORMED
from gateway.smime.ldap import (
    LDAP_DEADLINE,
    LDAP_DOWN_TTL,
    FailureMemo,
    LdapFinder,
    Unavailable,
    certificates_of,
    escape,
    lookup,
)
from gateway.smime.trust import REASONS as TRUST_REASONS
from gateway.smime.trust import RECIPIENT, TrustStore, read_capped

CERT_PKIX = 1  # RFC 4398 §2.1: an X.509 certificate, DER
CERT_IPKIX = 4  # RFC 4398 §2.1: the URL of an X.509 data object
NEGATIVE_TTL = 300.0
FETCH_TIMEOUT = 5.0
FETCH_LIMIT = 64 * 1024
IPKIX_DEADLINE = 8.0  # every IPKIX URL of one step, fetched together
IPKIX_MAX = 4  # IPKIX records read at one name; the others are skipped
IPKIX_DOWN_TTL = LDAP_DOWN_TTL  # a URL that failed for now is not fetched again for this long (module notes)
CACHE_SIZE = 10_000

REASONS = {
    **{k: v.replace("signer's ", "") for k, v in TRUST_REASONS.items() if k != "sender-mismatch"},
    "address-mismatch": "the certificate is not bound to the recipient address",
    "unparsable": "the record does not hold an X.509 certificate",
    "url-refused": "the IPKIX URL is not an http or https URL",
    "url-failed": "the IPKIX URL answered with an error",
    "url-too-large": "the object at the IPKIX URL is too large",
    "url-skipped": f"more than {IPKIX_MAX} IPKIX records at the name: this one was not fetched",
}


class Outcome(StrEnum):
    FOUND = "found"  # usable certificates
    NO_CERTIFICATE = "no-certificate"  # no step found any: 5.x
    INVALID = "invalid"  # the answering step found only unusable ones: the recipient is dropped, 5.x
    UNAVAILABLE = "unavailable"  # DNS (or an IPKIX URL) failed for now: defer, 4.x
    BAD_ADDRESS = "bad-address"  # not local@domain with a valid domain name: 5.x


class Step(StrEnum):
    LOCAL = "local"
    PUBLISHED = "published"
    DNS_ADDRESS = "dns-address"
    DNS_DOMAIN = "dns-domain"
    LDAP_ADDRESS = "ldap-address"
    LDAP_DOMAIN = "ldap-domain"


@dataclass(frozen=True)
class Rejected:
    """One found certificate (or record) that cannot be used, and why."""

    source: str  # "local", the DNS name, the IPKIX URL, or the LDAP server and entry
    reason: str  # a key of REASONS
    certificate: x509.Certificate | None = None

    @property
    def text(self) -> str:
        return REASONS.get(self.reason, "")


@dataclass(frozen=True)
class Found:
    """What discovery concluded for one recipient."""

    address: str
    outcome: Outcome
    step: Step | None = None  # the step that answered (FOUND, INVALID, and UNAVAILABLE from a URL)
    certificates: tuple[x509.Certificate, ...] = ()  # usable ones, in record order
    rejected: tuple[Rejected, ...] = ()
    detail: str = ""  # UNAVAILABLE / BAD_ADDRESS: what failed

    @property
    def temporary(self) -> bool:
        return self.outcome is Outcome.UNAVAILABLE


class FetchError(Exception):
    """An IPKIX URL gave nothing usable: `reason` is a REASONS key, or "" when it may work later."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


LocalCertificates = Callable[[str], Awaitable[Sequence[x509.Certificate]]]
Fetcher = Callable[[str], Awaitable[bytes]]


async def fetch_ipkix(
    url: str,
    *,
    seconds: float = FETCH_TIMEOUT,
    limit: int = FETCH_LIMIT,
    resolver: HttpResolver | None = None,
    reach: Reach | None = None,
) -> bytes:
    """The object at an IPKIX URL: http(s) only, `seconds` in all, at most `limit` octets; host names
    looked up by `resolver`, and with a `reach` only the addresses it permits (gateway.lookups)."""
    import aiohttp  # a dependency of pyhanko-certvalidator

    if not url.lower().startswith(("http://", "https://")):
        raise FetchError("url-refused", url)
    try:
        async with (
            lookups.session(seconds, resolver or HttpResolver(reach=reach)) as http,
            lookups.checked_get(http, url, reach) as response,
        ):
            if response.status >= 500 or response.status == 429:
                raise FetchError("", f"{url}: HTTP {response.status}")
            if response.status != 200:
                raise FetchError("url-failed", f"{url}: HTTP {response.status}")
            if response.content_length is not None and response.content_length > limit:
                raise FetchError("url-too-large", f"{url}: {response.content_length} octets")
            body = await read_capped(response.content, limit)
            if body is None:
                raise FetchError("url-too-large", f"{url}: over {limit} octets")
    except (aiohttp.NonHttpUrlClientError, aiohttp.InvalidURL, UnicodeError, ValueError) as exc:
        # UnicodeError: the host cannot be IDNA-encoded (an empty or over-long label, http://a..b/)
        raise FetchError("url-refused", f"{url}: {exc}") from None
    except AddressRefused as exc:  # a literal address, or a redirection to one
        raise FetchError("url-refused", f"{url}: {exc}") from None
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, AddressRefused):  # a host name: its addresses, from the resolver
            raise FetchError("url-refused", f"{url}: {exc.os_error}") from None
        raise FetchError("", f"{url}: {type(exc).__name__} {exc}".rstrip()) from None
    except aiohttp.TooManyRedirects:
        raise FetchError("url-failed", f"{url}: too many redirections") from None
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise FetchError("", f"{url}: {type(exc).__name__} {exc}".rstrip()) from None
    return body


def _load(data: bytes) -> x509.Certificate | None:
    # MALFORMED, not ValueError alone: x509.InvalidVersion (a version field other than v1-v3) is not one.
    with contextlib.suppress(*MALFORMED):
        return x509.load_der_x509_certificate(data)
    if b"-----BEGIN CERTIFICATE-----" in data:
        with contextlib.suppress(*MALFORMED):
            return x509.load_pem_x509_certificate(data)
    return None


def cert_names(address: str) -> tuple[dns.name.Name | None, dns.name.Name] | None:
    """(address name or None when the local part cannot be one, domain name); None for a bad address."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not domain:
        return None
    try:
        domain_name = dns.name.from_text(domain.lower().rstrip(".") + ".")
    except (dns.exception.DNSException, UnicodeError, ValueError):
        return None
    if len(domain_name.labels) < 2:  # the root alone
        return None
    try:
        address_name: dns.name.Name | None = dns.name.Name([label.encode() for label in local.split(".")]).concatenate(
            domain_name
        )
    except (dns.exception.DNSException, UnicodeError, ValueError):
        address_name = None
    return address_name, domain_name


class Discovery:
    """Finds the certificates to encrypt to for a recipient address."""

    def __init__(
        self,
        trust: TrustStore,
        *,
        local: LocalCertificates | None = None,
        published: LocalCertificates | None = None,
        nameservers: Sequence[str] = (),
        port: int = 53,
        ttl: float = 3600.0,
        negative_ttl: float = NEGATIVE_TTL,
        timeout: float = 5.0,
        intermediates: Sequence[x509.Certificate] = (),
        fetch: Fetcher | None = None,
        allow_networks: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
        use_dns: bool = True,
        ipkix_deadline: float = IPKIX_DEADLINE,
        use_ldap: bool = True,
        ldap_deadline: float = LDAP_DEADLINE,
        ldap_down_ttl: float = LDAP_DOWN_TTL,
        ipkix_down_ttl: float = IPKIX_DOWN_TTL,
        srv_uniform: Callable[[int], int] | None = None,
    ) -> None:
        self.trust = trust
        self.use_dns = use_dns  # False: the local and published steps only (the reference client without --dns)
        self.local = local
        self.published = published
        self.ttl = ttl
        self.negative_ttl = min(negative_ttl, ttl)
        self.intermediates = list(intermediates)
        # A peer's DNS names the IPKIX hosts: asked of the same servers, and only public addresses (and
        # the operator's `allow_networks`) fetched from.
        self.reach = Reach.of(allow_networks)
        self.fetch = fetch or partial(
            fetch_ipkix,
            resolver=HttpResolver(nameservers, port=port, timeout=timeout, reach=self.reach),
            reach=self.reach,
        )
        self.ipkix_deadline = ipkix_deadline
        self.ipkix_down = FailureMemo(ipkix_down_ttl, clock, again="fetched")  # URLs that failed for now
        self.clock = clock
        self.resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        if nameservers:
            self.resolver.nameservers = list(nameservers)
        self.resolver.port = port
        self.resolver.lifetime = timeout
        self.resolver.timeout = min(timeout, 2.0)
        self.ldap = (
            LdapFinder(
                self.resolver,
                timeout=timeout,
                deadline=ldap_deadline,
                uniform=srv_uniform,
                reach=self.reach,
                down_ttl=ldap_down_ttl,
                clock=clock,
            )
            if use_ldap
            else None
        )
        self._cache: dict[str, tuple[float, Found]] = {}
        self._crls = trust.crls  # the lists the cached results were judged with

    @classmethod
    def from_config(
        cls,
        section: SmimeSection,
        trust: TrustStore,
        *,
        local: LocalCertificates | None = None,
        published: LocalCertificates | None = None,
        intermediates: Sequence[x509.Certificate] = (),
    ) -> Discovery:
        return cls(
            trust,
            local=local,
            published=published,
            nameservers=section.dns_servers,
            port=section.dns_port,
            ttl=section.discovery_ttl,
            intermediates=intermediates,
            use_ldap=section.ldap,
            allow_networks=section.allow_networks,
        )

    async def find(self, address: str) -> Found:
        key = address.strip().lower()
        now = self.clock()
        if self.trust.crls is not self._crls:  # new CRLs (TrustStore.set_crls): judge everything again
            self._crls = self.trust.crls
            self._cache.clear()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = await self._discover(address.strip())
        ttl = self._ttl(found)
        if ttl > 0:
            if len(self._cache) >= CACHE_SIZE:
                self._evict(now)
            self._cache[key] = (now + ttl, found)
        return found

    def forget(self, address: str | None = None) -> None:
        """Drop the cached result of one address, or all of them (and the LDAP step's memo of domains
        whose servers failed)."""
        if address is None:
            self._cache.clear()
            self.ipkix_down.forget()
            if self.ldap is not None:
                self.ldap.forget()
        else:
            self._cache.pop(address.strip().lower(), None)

    def _ttl(self, found: Found) -> float:
        if found.outcome is Outcome.UNAVAILABLE:
            return 0.0
        if found.outcome is not Outcome.FOUND:
            return self.negative_ttl
        now = dt.datetime.now(dt.UTC)
        left = min((c.not_valid_after_utc - now).total_seconds() for c in found.certificates)
        return max(0.0, min(self.ttl, left))

    def _evict(self, now: float) -> None:
        for key in [k for k, (expires, _) in self._cache.items() if expires <= now]:
            del self._cache[key]
        while len(self._cache) >= CACHE_SIZE:
            del self._cache[next(iter(self._cache))]  # the oldest entry

    async def _discover(self, address: str) -> Found:
        names = cert_names(address)
        if names is None:
            return Found(address, Outcome.BAD_ADDRESS, detail="not local-part@domain with a valid domain name")
        for step, source in ((Step.LOCAL, self.local), (Step.PUBLISHED, self.published)):
            if source is not None:
                certs = list(await source(address))
                if certs:
                    return await self._judge(address, step, [(step.value, c) for c in certs], [])
        address_name, domain_name = names
        if not self.use_dns:
            return Found(address, Outcome.NO_CERTIFICATE)
        steps = [(Step.DNS_ADDRESS, address_name), (Step.DNS_DOMAIN, domain_name)]
        for step, name in steps:
            if name is None:
                continue
            try:
                records = await self._cert_records(name)
            except Unavailable as exc:
                return Found(address, Outcome.UNAVAILABLE, detail=str(exc))
            if records:
                return await self._records(address, step, name, records)
        if self.ldap is not None:
            return await self._ldap(address, domain_name)
        return Found(address, Outcome.NO_CERTIFICATE)

    async def _ldap(self, address: str, domain: dns.name.Name) -> Found:
        """Step 4: the first LDAP server of the domain that answers, for the address, else the domain."""
        filters = [f"(mail={escape(address)})", f"(mail={escape(domain.to_text(omit_final_dot=True))})"]
        try:
            answer = await self.ldap.search(domain, filters) if self.ldap is not None else None
        except Unavailable as exc:
            return Found(address, Outcome.UNAVAILABLE, detail=str(exc))
        if answer is None or not answer.values:
            return Found(address, Outcome.NO_CERTIFICATE)
        step = Step.LDAP_ADDRESS if answer.filter_index == 0 else Step.LDAP_DOMAIN
        certs: list[tuple[str, x509.Certificate]] = []
        helpers: list[x509.Certificate] = []
        rejected: list[Rejected] = []
        for dn, value in answer.values:
            source = f"{answer.server}/{dn}"
            candidates, chain = certificates_of(value)
            if not candidates and not chain:
                rejected.append(Rejected(source, "unparsable"))
            certs += [(source, c) for c in candidates]
            helpers += chain
        return await self._judge(address, step, certs, rejected, helpers)

    async def _cert_records(self, name: dns.name.Name) -> list[tuple[int, bytes]]:
        """(certificate type, certificate field) of the PKIX and IPKIX records at `name`, in answer order."""
        rrset = await lookup(self.resolver, name, dns.rdatatype.CERT)
        return [
            (rd.certificate_type, rd.certificate)
            for rd in rrset or []
            if rd.certificate_type in (CERT_PKIX, CERT_IPKIX)
        ]

    async def _fetch_all(self, urls: list[str]) -> list[bytes | BaseException]:
        """The objects at the first IPKIX_MAX `urls`, fetched together within IPKIX_DEADLINE seconds in
        all: a URL still unanswered then is a TimeoutError, like one that timed out alone."""
        tasks = [asyncio.ensure_future(self.fetch(url)) for url in urls[:IPKIX_MAX]]
        if not tasks:
            return []
        _, late = await asyncio.wait(tasks, timeout=self.ipkix_deadline)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        return [TimeoutError() if t in late else (t.exception() or t.result()) for t in tasks]

    async def _records(self, address: str, step: Step, name: dns.name.Name, records: list[tuple[int, bytes]]) -> Found:
        source = name.to_text()
        certs: list[tuple[str, x509.Certificate]] = []
        rejected: list[Rejected] = []
        pending: list[str] = []  # IPKIX URLs that failed for now
        urls = [data.decode("utf-8", "replace").strip() for kind, data in records if kind == CERT_IPKIX]
        first = list(dict.fromkeys(urls))[:IPKIX_MAX]  # the others are skipped
        remembered = {u: r for u in first if (r := self.ipkix_down.recall(u)) is not None}
        asking = [u for u in first if u not in remembered]
        fetched = dict(zip(asking, await self._fetch_all(asking), strict=True))
        for kind, data in records:
            if kind == CERT_PKIX:
                cert = _load(data)
                if cert is None:
                    rejected.append(Rejected(source, "unparsable"))
                else:
                    certs.append((source, cert))
                continue
            url = data.decode("utf-8", "replace").strip()
            if url in remembered:
                pending.append(remembered[url])
                continue
            result = fetched.get(url)
            if result is None:
                rejected.append(Rejected(url, "url-skipped"))
                continue
            temporary = None
            if isinstance(result, FetchError) and not result.reason:
                temporary = str(result)
            elif isinstance(result, TimeoutError):
                temporary = f"{url}: no answer within {self.ipkix_deadline:g} s"
            if temporary is not None:
                self.ipkix_down.remember(url, temporary)
                pending.append(temporary)
                continue
            self.ipkix_down.forget(url)
            if isinstance(result, FetchError):
                rejected.append(Rejected(url, result.reason))
                continue
            if isinstance(result, BaseException):
                # A fetch that raised anything else (a safety net: a peer's record must not make find() raise)
                rejected.append(Rejected(url, "url-failed"))
                continue
            cert = _load(result)
            if cert is None:
                rejected.append(Rejected(url, "unparsable"))
            else:
                certs.append((url, cert))
        found = await self._judge(address, step, certs, rejected)
        if found.outcome is Outcome.INVALID and pending:
            return Found(address, Outcome.UNAVAILABLE, step, rejected=found.rejected, detail="; ".join(pending))
        return found

    async def _judge(
        self,
        address: str,
        step: Step,
        certs: list[tuple[str, x509.Certificate]],
        rejected: list[Rejected],
        helpers: Sequence[x509.Certificate] = (),
    ) -> Found:
        usable: list[x509.Certificate] = []
        found = [c for _, c in certs]
        for source, cert in certs:
            # The configured intermediates first: path building takes a bounded number of candidates
            # (trust.path_candidates), and what a peer's records carry must not crowd them out.
            others = self.intermediates + [c for c in found if c is not cert] + list(helpers)
            verdict = await self.trust.check(cert, others, [address], purpose=RECIPIENT)
            if verdict.ok:
                usable.append(cert)
            else:
                reason = "address-mismatch" if verdict.reason == "sender-mismatch" else verdict.reason
                rejected.append(Rejected(source, reason, cert))
        if not usable and rejected and all(r.reason == "no-revocation-info" for r in rejected):
            # Our CRLs are missing or stale: ours to fix, and the same certificate will do once they
            # come; temporary (4.7.5) as inbound says of a signer, and never cached.
            detail = "no current revocation list for the recipient's certificate"
            return Found(address, Outcome.UNAVAILABLE, step, rejected=tuple(rejected), detail=detail)
        outcome = Outcome.FOUND if usable else Outcome.INVALID
        return Found(address, outcome, step, tuple(usable), tuple(rejected))


class PublishedCertificates:
    """Certificates published with the national directory data: PEM or DER files, or directories of
    them, indexed by SAN and re-read when a file or directory changes (checked at most every `every` s)."""

    def __init__(
        self, paths: Sequence[Path], *, every: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.paths = list(paths)
        self.every = every
        self.clock = clock
        self._stamp: tuple[tuple[str, float, int], ...] | None = None
        self._checked = -every
        self._by_address: dict[str, list[x509.Certificate]] = {}
        self._by_domain: dict[str, list[x509.Certificate]] = {}

    def _files(self) -> list[Path]:
        out: list[Path] = []
        for path in self.paths:
            if path.is_dir():
                out += sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            elif path.is_file():
                out.append(path)
        return out

    def _refresh(self) -> None:
        now = self.clock()
        if now - self._checked < self.every:
            return
        self._checked = now
        files = self._files()
        stamp = tuple((str(p), p.stat().st_mtime, p.stat().st_size) for p in files)
        if stamp == self._stamp:
            return
        by_address: dict[str, list[x509.Certificate]] = {}
        by_domain: dict[str, list[x509.Certificate]] = {}
        for path in files:
            for cert in load_certificates(path.read_bytes()):
                try:
                    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                except x509.ExtensionNotFound:
                    continue
                for email in {e.lower() for e in san.get_values_for_type(x509.RFC822Name)}:
                    by_address.setdefault(email, []).append(cert)
                for domain in {d.lower().rstrip(".") for d in san.get_values_for_type(x509.DNSName)}:
                    by_domain.setdefault(domain, []).append(cert)
        self._by_address, self._by_domain, self._stamp = by_address, by_domain, stamp

    async def __call__(self, address: str) -> Sequence[x509.Certificate]:
        """The address-bound certificates published for `address`, else the domain-bound ones."""
        self._refresh()
        address = address.strip().lower()
        return self._by_address.get(address) or self._by_domain.get(address.rpartition("@")[2], [])


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle, or the one DER certificate; [] when there is none."""
    if b"-----BEGIN CERTIFICATE-----" in data:
        with contextlib.suppress(*MALFORMED):
            return x509.load_pem_x509_certificates(data)
        return []
    cert = _load(data)
    return [cert] if cert is not None else []


__all__ = [
    "CERT_IPKIX",
    "CERT_PKIX",
    "REASONS",
    "Discovery",
    "FetchError",
    "Found",
    "Outcome",
    "PublishedCertificates",
    "Rejected",
    "Step",
    "cert_names",
    "fetch_ipkix",
    "load_certificates",
]
