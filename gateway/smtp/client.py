"""Relay to peer operators: one SMTP transaction per remote domain, over mandatory, mutually authenticated TLS.

Implementation notes
- `Relayer` is the queue worker's `Relay`: `await relayer(domain, envelope, jobs, body)` returns one
  `Result` per job, in order. Targets come from `gateway.smtp.routes.resolve` (static route, else MX
  records by preference, else the implicit MX); each target's addresses (IPv4 first) are tried in turn,
  then the next target, until one server takes the transaction (RFC 5321 §5.1); at most MAX_ADDRESSES
  addresses of the first MAX_TARGETS targets, as the records are the peer's to choose. Host names (MX hosts
  and static routes alike) are resolved with `[queue].resolver` when it is set, else by the system
  (getaddrinfo, so /etc/hosts too); a route given as an IP address is used as is.
- STARTTLS is mandatory between operators (RFC 3207; MSSanté operator profile): aiosmtplib runs with
  `start_tls=True`, so a server that does not offer STARTTLS is never sent MAIL FROM (RFC 3207 §4 lets a
  client refuse to go on without TLS): 4.7.4 for that target, and the next target is tried.
- TLS context: `gateway.tls.client_context`, pinned to the trust-space root (never the system store),
  TLS 1.2+ with the MSSanté suites, presenting our certificate chain (mutual TLS: the peer checks it).
  Hostname checking is ON with `server_hostname` = the target host: the MX exchange name, the static
  route's host, or the domain itself for an implicit MX. The peer's certificate must therefore name that
  host in a dNSName (iPAddress for a route given as an IP address); a certificate naming only the mail
  domain, served by an MX host of another name, is refused. Every certificate of the peer's chain is
  checked against the node's current CRLs (`Config.crl_dir`, as the relay listener and S/MIME do; read
  again for each new session when they changed): a revoked one, or one whose CA has no current CRL
  there, fails the handshake. Failures of the certificate (not from our root, expired, revoked, name
  mismatch) or of the handshake are 4.7.5 (RFC 3463 X.7.5 cryptographic failure), and the next target
  is tried.
- Timeouts (RFC 5321 §4.5.3.2): TCP connect 30 s (the RFC sets none: an unreachable host should not
  hold a worker), then 5 minutes for the greeting, EHLO, STARTTLS, MAIL and RCPT replies
  (§4.5.3.2.1-3), and 10 minutes for the DATA exchange, whose final reply the RFC gives 10 minutes
  (§4.5.3.2.6: a shorter wait risks duplicate deliveries). All three are constructor arguments.
- Outcomes (RFC 3463 statuses; the enhanced code of the reply when it carries one whose class matches
  the reply code, else X.0.0 of the reply's class):
  * a failure before MAIL FROM (connection, TLS, greeting, EHLO) moves on to the next target; when all
    fail, every recipient gets a temporary failure with the diagnostic of the attempt that got furthest
    (ties: the most preferred target), e.g. "smtp; 451 4.7.5 TLS certificate of mx.x.fr not trusted:
    ...": a certificate problem at the primary MX says more than "connection refused" at a backup;
  * MAIL FROM 5xx: permanent for all; any other non-2xx: temporary for all (no other target is tried:
    the peer answered);
  * RCPT TO per recipient: 2xx accepted, 5xx permanent, anything else temporary; a 421 ends the
    session and applies to every recipient not yet decided;
  * DATA (only when a recipient was accepted): its reply applies to every accepted recipient;
  * a timeout or a lost connection once MAIL FROM was sent: 4.4.2 for every recipient not yet decided.
  Diagnostics are "smtp; <code> <text>" (RFC 3464 §2.3.6), the peer's reply on one line; remote_mta
  is the target host name.
- SIZE (RFC 1870): a message larger than the peer's announced limit fails permanently (5.3.4) without
  DATA; SIZE= is sent when announced. BODY=8BITMIME (RFC 6152) when the body has 8-bit octets and the
  peer announces it; SMTPUTF8 (RFC 6531) when an address is not ASCII: a peer without it cannot take
  that address (5.6.7).
- The body is sent as queued: aiosmtplib dot-stuffs it and would only rewrite bare CR or LF, which the
  listeners never let into the queue (SMTP smuggling checks), so the peer receives the queued bytes.
- Session reuse (as Postfix's connection cache): after a transaction whose DATA got a 250, the
  session is kept idle for `reuse` seconds (`[queue] relay_reuse`; 0: QUIT after each message) for the
  next message to the same host, address and port, so that a queue of messages to a peer costs one TLS
  handshake, not one each. A session serves for REUSE_AGE at most, and not past a change of the CRLs:
  the peer's certificate is judged again by a new handshake. A kept session that turns out closed or
  closing (the peer's idle timeout, its 421 at MAIL FROM, or a 503 for a transaction it still holds) is
  dropped and the message goes over a new one: nothing was sent.
  Sessions are QUIT when they expire and at `close()` (node stop).
- Nothing of the message content is ever logged: the operational log gets the domain, target host,
  address, status and reason of failed attempts, and counts of outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib
from aiosmtplib import SMTPResponse

from gateway.audit.oplog import get_logger
from gateway.config import Config
from gateway.queue.store import Envelope, Job
from gateway.queue.worker import Result
from gateway.smtp.routes import DNS_TIMEOUT, RouteError, Target, addresses, resolve
from gateway.tls import CrlContexts, client_context

CONNECT_TIMEOUT = 30.0
COMMAND_TIMEOUT = 300.0  # RFC 5321 §4.5.3.2.1-3: greeting, MAIL, RCPT: 5 minutes
DATA_TIMEOUT = 600.0  # RFC 5321 §4.5.3.2.6: DATA termination: 10 minutes
QUIT_TIMEOUT = 5.0  # the outcome is known: do not wait long for a polite goodbye
REUSE_AGE = 60.0  # seconds a relay session is reused at most (certificates are judged at its handshake)
REUSE_PER_HOST = 16  # idle sessions kept per host, address and port
MAX_TARGETS = 10  # MX hosts whose addresses are looked up for one delivery
MAX_ADDRESSES = 5  # addresses tried for one delivery, over all its targets (Postfix's smtp_mx_address_limit)

# How far an attempt got before it failed: the furthest failure is the one reported.
RESOLVE, CONNECT, GREETING, EHLO, STARTTLS, HANDSHAKE, SESSION = range(7)

_X509_V_ERR_HOSTNAME_MISMATCH = 62
_X509_V_ERR_IP_ADDRESS_MISMATCH = 64
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")
_UNSAFE_IN_PATH = re.compile(r"[\x00-\x20\x7f<>]")

log = get_logger(component="relay")


def status_of(code: int, text: str) -> str:
    """RFC 3463 status of a reply: its own enhanced code when present and of the same class, else X.0.0."""
    m = _ENHANCED.match(text)
    if m and m.group(1) == str(code)[:1]:
        return m.group(0)
    return f"{code // 100}.0.0" if code // 100 in (2, 4, 5) else "4.0.0"


def one_line(text: str) -> str:
    """A peer's reply text on one printable-ASCII line (it goes into a DSN header)."""
    return "".join(c if " " <= c <= "~" else "?" for c in " ".join(text.split()))


def diagnostic(code: int, text: str) -> str:
    return f"smtp; {code} {one_line(text)}".rstrip()


@dataclass(frozen=True)
class _Failure:
    """One attempt that ended before MAIL FROM: the next address or target is tried."""

    stage: int
    host: str
    status: str
    text: str

    @property
    def diagnostic(self) -> str:
        return f"smtp; 451 {self.status} {self.text}"


class _Stale(Exception):
    """A kept session could not start a transaction: nothing was sent, a new session takes the message."""


@dataclass
class _Session:
    smtp: aiosmtplib.SMTP
    opened: float
    idle_since: float = 0.0
    tls: ssl.SSLContext | None = None  # the context of its handshake: another one means newer CRLs


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__
    if isinstance(cause, ssl.SSLError):
        return f": {cause.reason or cause}"
    if isinstance(cause, OSError) and cause.strerror:
        return f": {cause.strerror}"
    return ""


class Relayer:
    """Relays queued messages to peer operators (see the module notes). Build it once per node."""

    def __init__(
        self,
        cfg: Config | None = None,
        *,
        trust_anchor: Path | None = None,
        cert_chain: Path | None = None,
        key: Path | None = None,
        helo_name: str | None = None,
        routes: Mapping[str, str] | None = None,
        resolver: str | None = None,
        port: int = 25,
        connect_timeout: float = CONNECT_TIMEOUT,
        command_timeout: float = COMMAND_TIMEOUT,
        data_timeout: float = DATA_TIMEOUT,
        dns_lifetime: float = DNS_TIMEOUT,
        reuse: float | None = None,
        crl_dir: Path | None = None,
    ) -> None:
        """Settings from `cfg` (pki, queue.routes, queue.resolver, smtp_hostname, crl_dir); explicit
        arguments win."""
        if cfg is not None:
            crl_dir = crl_dir or cfg.crl_dir
            trust_anchor = trust_anchor or cfg.path(cfg.pki.trust_anchor)
            cert_chain = cert_chain or cfg.path(cfg.pki.cert)
            key = key or cfg.path(cfg.pki.key)
            helo_name = helo_name or cfg.smtp_hostname
            routes = routes if routes is not None else cfg.queue.routes
            resolver = resolver if resolver is not None else cfg.queue.resolver
            reuse = reuse if reuse is not None else cfg.queue.relay_reuse
        if trust_anchor is None or cert_chain is None or key is None or not helo_name:
            raise ValueError("Relayer needs a config, or trust_anchor, cert_chain, key and helo_name")
        if not helo_name.isascii() or not helo_name.isprintable() or " " in helo_name:
            raise ValueError(f"bad EHLO name {helo_name!r}")
        anchor, chain, private = trust_anchor, cert_chain, key

        def build() -> ssl.SSLContext:
            ctx = client_context(anchor, cert_chain=chain, key=private)
            ctx.check_hostname = True  # the peer's certificate must name the host we connect to
            ctx.verify_mode = ssl.CERT_REQUIRED
            return ctx

        self.tls = CrlContexts(build, crl_dir)  # each new session: the CRLs as they are now
        self.tls.get()  # bad TLS material is a ConfigError now, not at the first relay
        self.helo_name = helo_name
        self.routes: Mapping[str, str] = dict(routes or {})
        self.resolver = resolver or ""
        self.port = port
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.data_timeout = data_timeout
        self.dns_lifetime = dns_lifetime
        self.reuse = reuse or 0.0
        self._idle: dict[tuple[str, str, int], list[_Session]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()

    async def __call__(self, domain: str, envelope: Envelope, jobs: Sequence[Job], body: bytes) -> list[Result]:
        recipients = [job.recipient for job in jobs]
        if not recipients:
            return []
        try:
            targets = await resolve(
                domain, routes=self.routes, resolver=self.resolver, port=self.port, lifetime=self.dns_lifetime
            )
        except RouteError as exc:
            log.warning("relay.no_route", domain=domain, cid=envelope.queue_id, status=exc.status, reason=exc.text)
            return [Result(r, False, exc.permanent, exc.status, exc.diagnostic, None) for r in recipients]

        failures: list[_Failure] = []
        tried = 0
        for target in targets[:MAX_TARGETS]:
            if tried >= MAX_ADDRESSES:
                break
            try:
                ips = await addresses(target.host, resolver=self.resolver, lifetime=self.dns_lifetime)
            except RouteError as exc:
                failures.append(_Failure(RESOLVE, target.host, "4" + exc.status[1:], exc.text))
                continue
            for ip in ips[: MAX_ADDRESSES - tried]:
                tried += 1
                try:
                    outcome = await self._attempt(target, ip, envelope.sender, recipients, body)
                except Exception as exc:  # a bug or an unforeseen library error must not stop the queue worker
                    log.exception("relay.attempt_error", domain=domain, cid=envelope.queue_id, host=target.host)
                    text = f"internal error relaying to {target.host}: {type(exc).__name__}"
                    outcome = _Failure(RESOLVE, target.host, "4.3.0", text)
                if isinstance(outcome, _Failure):
                    log.info(
                        "relay.attempt_failed",
                        domain=domain,
                        cid=envelope.queue_id,
                        host=target.host,
                        address=ip,
                        port=target.port,
                        status=outcome.status,
                        reason=outcome.text,
                    )
                    failures.append(outcome)
                    continue
                log.info(
                    "relay.session",
                    domain=domain,
                    cid=envelope.queue_id,
                    host=target.host,
                    address=ip,
                    accepted=sum(r.ok for r in outcome),
                    temporary=sum(not r.ok and not r.permanent for r in outcome),
                    permanent=sum(r.permanent for r in outcome),
                )
                return outcome
        furthest = max(failures, key=lambda f: f.stage)  # max() keeps the first of equal stages
        return [Result(r, False, False, furthest.status, furthest.diagnostic, furthest.host) for r in recipients]

    async def _connect(self, ip: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(self.connect_timeout):  # not wait_for: 3.11's can swallow a cancellation
                await asyncio.get_running_loop().sock_connect(sock, (ip, port))
        except BaseException:
            sock.close()
            raise
        return sock

    async def _attempt(
        self, target: Target, ip: str, sender: str, recipients: list[str], body: bytes
    ) -> list[Result] | _Failure:
        host = target.host
        key = (host, ip, target.port)
        while (kept := self._take(key)) is not None:
            reusable = False
            try:
                results, reusable = await self._transaction(kept.smtp, host, sender, recipients, body, kept=True)
            except _Stale:
                continue
            finally:
                if not self._keep(key, kept, reusable):
                    self._dispose(kept)
            return results
        where = f"{host}[{ip}]:{target.port}" if host != ip else f"[{ip}]:{target.port}"
        try:
            sock = await self._connect(ip, target.port)
        except TimeoutError:
            return _Failure(CONNECT, host, "4.4.1", f"no answer from {where} within {self.connect_timeout:g} s")
        except ConnectionRefusedError:
            return _Failure(CONNECT, host, "4.4.1", f"connection to {where} refused")
        except OSError as exc:
            return _Failure(CONNECT, host, "4.4.1", f"cannot connect to {where}: {exc.strerror or exc}")
        tls = self.tls.get()
        try:
            smtp = aiosmtplib.SMTP(
                hostname=host,  # the TLS server name: hostname checking is on
                sock=sock,  # connected above, within the connect timeout; aiosmtplib owns it from here
                local_hostname=self.helo_name,
                start_tls=True,  # STARTTLS is mandatory between operators
                tls_context=tls,
                timeout=self.command_timeout,
            )
        except BaseException:
            sock.close()
            raise
        session = _Session(smtp, time.monotonic(), tls=tls)
        reusable = False
        try:
            failure = await self._open(smtp, host, where)
            if failure is not None:
                return failure
            results, reusable = await self._transaction(smtp, host, sender, recipients, body)
            return results
        finally:
            if not self._keep(key, session, reusable):
                await self._quit(smtp)

    # -- kept sessions --------------------------------------------------------------------------

    def _take(self, key: tuple[str, str, int]) -> _Session | None:
        """The most recently used live session kept for this host, address and port."""
        kept = self._idle.get(key)
        now = time.monotonic()
        while kept:
            session = kept.pop()
            if session.smtp.is_connected and not self._expired(session, now):
                return session
            self._dispose(session)
        return None

    def _expired(self, session: _Session, now: float) -> bool:
        """Idle too long, open too long, or opened before the CRLs last changed (its peer is judged again)."""
        return (
            now - session.idle_since >= self.reuse
            or now - session.opened >= REUSE_AGE
            or session.tls is not self.tls.get()
        )

    def _keep(self, key: tuple[str, str, int], session: _Session, reusable: bool) -> bool:
        """Whether the session was kept for the next message to the host (else the caller ends it)."""
        if not reusable or self.reuse <= 0 or not session.smtp.is_connected:
            return False
        now = time.monotonic()
        session.idle_since = now
        kept = self._idle.setdefault(key, [])
        if len(kept) >= REUSE_PER_HOST or self._expired(session, now):
            return False
        kept.append(session)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self.reuse, self._sweep)
        return True

    def _sweep(self) -> None:
        self._sweeper = None
        now = time.monotonic()
        for key, kept in list(self._idle.items()):
            live = [s for s in kept if not self._expired(s, now) and s.smtp.is_connected]
            for session in kept:
                if session not in live:
                    self._dispose(session)
            if live:
                self._idle[key] = live
            else:
                del self._idle[key]
        if self._idle:
            soonest = min(s.idle_since for kept in self._idle.values() for s in kept)
            delay = max(0.05, soonest + self.reuse - now)
            self._sweeper = asyncio.get_running_loop().call_later(delay, self._sweep)

    def _dispose(self, session: _Session) -> None:
        """QUIT (briefly) and close, without holding up the caller."""
        task = asyncio.get_running_loop().create_task(self._quit(session.smtp))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _quit(self, smtp: aiosmtplib.SMTP) -> None:
        try:
            if smtp.is_connected:
                with contextlib.suppress(Exception):
                    await smtp.quit(timeout=min(QUIT_TIMEOUT, self.command_timeout))
        finally:
            smtp.close()

    async def close(self) -> None:
        """End every kept session (node stop)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for kept in self._idle.values():
            for session in kept:
                self._dispose(session)
        self._idle.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def _open(self, smtp: aiosmtplib.SMTP, host: str, where: str) -> _Failure | None:
        """Greeting, EHLO, STARTTLS, TLS handshake and EHLO again (RFC 3207 §4.2); a _Failure if any fails."""
        try:
            await smtp.connect()
        except (aiosmtplib.SMTPException, OSError) as exc:
            return self._setup_failure(exc, host, where)
        t = self.command_timeout
        try:
            await smtp.ehlo()  # knowledge from before TLS is discarded (RFC 3207 §4.2)
        except aiosmtplib.SMTPHeloError as exc:
            text = f"{host} refused EHLO after STARTTLS: {exc.code} {one_line(exc.message)}"
            return _Failure(SESSION, host, "4.5.0", text)
        except aiosmtplib.SMTPTimeoutError:
            return _Failure(SESSION, host, "4.4.2", f"{host} did not answer EHLO within {t:g} s")
        except (aiosmtplib.SMTPException, OSError) as exc:
            # A peer refusing our certificate lands here: with TLS 1.3 the client's handshake is over
            # before the server has judged its certificate, and the alert may come before EHLO is read.
            cause = _cause(exc) or " (the peer may have refused our client certificate)"
            return _Failure(SESSION, host, "4.4.2", f"connection to {host} lost after STARTTLS{cause}")
        return None

    def _setup_failure(self, exc: Exception, host: str, where: str) -> _Failure:
        """What went wrong in aiosmtplib's connect(): greeting, EHLO, STARTTLS or the TLS handshake."""
        t = self.command_timeout
        if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
            return _Failure(GREETING, host, "4.3.2", f"{host} refused service: {exc.code} {one_line(exc.message)}")
        if isinstance(exc, aiosmtplib.SMTPConnectTimeoutError):
            return _Failure(GREETING, host, "4.4.1", f"no greeting from {where} within {t:g} s")
        if isinstance(exc, aiosmtplib.SMTPConnectError):
            return _Failure(GREETING, host, "4.4.2", f"{where} closed the connection before its greeting")
        if isinstance(exc, aiosmtplib.SMTPHeloError):
            return _Failure(EHLO, host, "4.5.0", f"{host} refused EHLO: {exc.code} {one_line(exc.message)}")
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            return _Failure(STARTTLS, host, "4.7.4", f"{host} refused STARTTLS: {exc.code} {one_line(exc.message)}")
        if isinstance(exc, ssl.SSLCertVerificationError):
            if exc.verify_code in (_X509_V_ERR_HOSTNAME_MISMATCH, _X509_V_ERR_IP_ADDRESS_MISMATCH):
                text = f"TLS certificate of {host} does not name it: {exc.verify_message}"
            else:
                text = f"TLS certificate of {host} not trusted: {exc.verify_message}"
            return _Failure(HANDSHAKE, host, "4.7.5", text)
        if isinstance(exc, ssl.SSLError):
            return _Failure(HANDSHAKE, host, "4.7.5", f"TLS handshake with {host} failed: {exc.reason or exc}")
        if isinstance(exc, aiosmtplib.SMTPTimeoutError):
            return _Failure(STARTTLS, host, "4.4.2", f"{host} did not answer within {t:g} s before TLS was established")
        if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
            text = f"connection to {host} lost before TLS was established{_cause(exc)}"
            return _Failure(STARTTLS, host, "4.4.2", text)
        if type(exc) is aiosmtplib.SMTPException:  # aiosmtplib's "STARTTLS extension not supported by server"
            return _Failure(STARTTLS, host, "4.7.4", f"{host} does not offer STARTTLS")
        if isinstance(exc, OSError):
            return _Failure(STARTTLS, host, "4.4.2", f"connection to {host} failed: {exc.strerror or exc}")
        return _Failure(STARTTLS, host, "4.4.2", f"session with {host} failed: {exc}")

    async def _transaction(
        self, smtp: aiosmtplib.SMTP, host: str, sender: str, recipients: list[str], body: bytes, *, kept: bool = False
    ) -> tuple[list[Result], bool]:
        """The recipients' results, and whether the session may carry another transaction (DATA got a
        250). On a `kept` session, a MAIL FROM that meets a closed connection or a
        421 raises _Stale: nothing was sent."""
        results: list[Result | None] = [None] * len(recipients)

        def from_reply(i: int, reply: SMTPResponse) -> Result:
            ok = 200 <= reply.code < 300
            permanent = not ok and reply.code >= 500
            status = status_of(reply.code, reply.message)
            return Result(recipients[i], ok, permanent, status, diagnostic(reply.code, reply.message), host)

        def everyone(status: str, text: str, *, permanent: bool, code: int) -> list[Result]:
            diag = f"smtp; {code} {status} {text}"
            return [r or Result(recipients[i], False, permanent, status, diag, host) for i, r in enumerate(results)]

        ext = smtp.esmtp_extensions
        options: list[str] = []
        if "size" in ext:
            limit = int(ext["size"]) if ext["size"].strip().isdigit() else 0
            if limit and len(body) > limit:
                text = f"message of {len(body)} octets exceeds the {limit}-octet limit of {host}"
                return everyone("5.3.4", text, permanent=True, code=552), False
            options.append(f"SIZE={len(body)}")
        if "8bitmime" in ext and not body.isascii():
            options.append("BODY=8BITMIME")
        utf8 = "smtputf8" in ext
        if not sender.isascii() and not utf8:
            text = f"{host} does not support SMTPUTF8, needed for the sender address"
            return everyone("5.6.7", text, permanent=True, code=553), False
        if utf8 and not all(a.isascii() for a in (sender, *recipients)):
            options.append("SMTPUTF8")
        if _UNSAFE_IN_PATH.search(sender):
            return everyone("5.1.7", "sender address cannot be sent in MAIL FROM", permanent=True, code=553), False

        command = "MAIL FROM"
        try:
            try:
                reply = await smtp.execute_command(
                    b"MAIL", b"FROM:<" + sender.encode() + b">", *(o.encode("ascii") for o in options)
                )
            except (aiosmtplib.SMTPServerDisconnected, OSError) as exc:
                if kept:
                    raise _Stale from exc
                raise
            if kept and reply.code in (421, 503):  # closing, or a transaction the peer still holds open
                raise _Stale
            if not 200 <= reply.code < 300:
                return [from_reply(i, reply) for i in range(len(recipients))], False
            accepted: list[int] = []
            for i, rcpt in enumerate(recipients):
                if not rcpt.isascii() and not utf8:
                    text = f"{host} does not support SMTPUTF8, needed for this recipient address"
                    results[i] = Result(rcpt, False, True, "5.6.7", f"smtp; 553 5.6.7 {text}", host)
                    continue
                if _UNSAFE_IN_PATH.search(rcpt):
                    diag = "smtp; 553 5.1.3 recipient address cannot be sent in RCPT TO"
                    results[i] = Result(rcpt, False, True, "5.1.3", diag, host)
                    continue
                command = "RCPT TO"
                reply = await smtp.execute_command(b"RCPT", b"TO:<" + rcpt.encode() + b">")
                if reply.code == 421:  # the server is closing the session: nobody else gets through
                    return [r or from_reply(j, reply) for j, r in enumerate(results)], False
                if 200 <= reply.code < 300:
                    accepted.append(i)
                else:
                    results[i] = from_reply(i, reply)
            reusable = False
            if accepted:
                command = "DATA"
                try:
                    reply = await smtp.data(body, timeout=self.data_timeout)
                except aiosmtplib.SMTPDataError as exc:
                    reply = SMTPResponse(exc.code, exc.message)
                for i in accepted:
                    results[i] = from_reply(i, reply)
                # Kept only after a 250: a DATA refused before 354 leaves the peer's transaction open
                # (RFC 5321 §4.1.1.4), and a 421 closes the session.
                reusable = 200 <= reply.code < 300
        except aiosmtplib.SMTPTimeoutError:
            t = self.data_timeout if command == "DATA" else self.command_timeout
            return everyone(
                "4.4.2", f"{host} did not answer {command} within {t:g} s", permanent=False, code=451
            ), False
        except (aiosmtplib.SMTPException, OSError) as exc:
            text = f"connection to {host} lost during {command}{_cause(exc)}"
            return everyone("4.4.2", text, permanent=False, code=451), False
        final = [r for r in results if r is not None]
        assert len(final) == len(recipients)  # every recipient was refused, or accepted and given DATA's reply
        return final, reusable


__all__ = ["COMMAND_TIMEOUT", "CONNECT_TIMEOUT", "DATA_TIMEOUT", "Relayer", "diagnostic", "status_of"]
