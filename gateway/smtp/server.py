"""SMTP listeners of an operator node on aiosmtpd: submission (587 STARTTLS, 465 implicit TLS) and relay
from peer operators (25, STARTTLS + trust-space client certificate).

Implementation notes
- aiosmtpd runs inside the node's loop (`loop.create_server`, not `Controller`). Four quirks are
  handled here, in one place:
  * on an implicit-TLS listener aiosmtpd neither offers nor accepts AUTH (it only knows STARTTLS):
    `connection_made` marks the session as protected by TLS (aiosmtpd issues #274/#281);
  * its built-in replies carry no enhanced status codes: `push` rewrites them (RFC 2034, RFC 3463);
  * its built-in AUTH verifies credentials synchronously: the handler's `auth_PLAIN`/`auth_LOGIN`
    replace them and run argon2 in a thread;
  * its DATA awaits one `readuntil` per line (0.87 ms of CPU per 10 KB message, 0.87 s per 25 MB):
    `smtp_DATA` reads what arrived in chunks through gateway/smtp/data.py, with the same decisions,
    and audits a refused DATA (size, line length), which aiosmtpd answered without a trace.
- Order of checks (RFC 6409 §4): STARTTLS before anything but EHLO/HELO/NOOP/QUIT (530 5.7.0), AUTH
  only under TLS, MAIL only when authenticated (530 5.7.0), then identity policy on MAIL FROM,
  recipient policy on each RCPT TO, content and header identity on DATA.
- `250` after DATA is sent only once the message is committed: when every recipient is a local mailbox,
  straight into the mailboxes (one transaction, as the queue worker would deliver it, but without the
  queue's insert, claim, read back and settle); otherwise, or when a mailbox is over its quota (the
  queue retries then), into the queue with its envelope.
- Every refusal is audited with the verdict's event, the session id (`cid`), the principal and the
  client address; message content is never logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import functools
import logging
import re
import secrets
import ssl
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session, TLSSetupException, syntax
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from directory.addresses import domain_of
from gateway.audit.events import AuditEvent
from gateway.audit.oplog import get_logger
from gateway.auth import sasl_oauth
from gateway.auth.lockout import Lockout
from gateway.auth.oidc import TokenLogin, openid_configuration
from gateway.auth.service import CertificateLogin, PasswordLogin, Revoked
from gateway.errors import NotFound
from gateway.node import Node
from gateway.policy import identity, patients, recipients
from gateway.policy.verdict import Refusal, Reject, TempFail, Verdict
from gateway.proxy import PerAddress, ProxyServer, listen
from gateway.queue import mdn
from gateway.queue.dsn import needs_dsn
from gateway.queue.notices import Plan, Raced
from gateway.queue.store import Queue
from gateway.smime.inbound import Inbound, strip_results
from gateway.smime.service import Smime
from gateway.smtp import content
from gateway.smtp.data import DataReader, DataState
from gateway.store.db import Statements
from gateway.store.mailstore import Mailstore, QuotaExceeded
from gateway.store.messages import Delivered, MessageStore, relay_receipt
from gateway.store.patients import PatientRepository
from gateway.tls import RelayContexts, refusal_reason

log = get_logger(component="smtp")
P = ParamSpec("P")


class _NoLegacyLoginDataWarning(logging.Filter):
    """aiosmtpd fills its own deprecated `Session.login_data` at every AUTH and warns about it, once per
    login, on standard error: not something an operator can act on (this code never reads it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Session.login_data is deprecated")


logging.getLogger("mail.log").addFilter(_NoLegacyLoginDataWarning())
T = TypeVar("T")

# aiosmtpd's fixed replies reworded, or coded otherwise than by reply code (`GatewaySMTP._enhanced`).
_REWRITES: dict[str, str] = {
    "552 Error: Too much mail data": "552 5.3.4 Message size exceeds fixed maximum message size",
    "552 Error: message size exceeds fixed maximum message size": (
        "552 5.3.4 Message size exceeds fixed maximum message size"
    ),
    "500 Line too long (see RFC5321 4.5.3.1.6)": "500 5.5.2 Line too long (see RFC 5321 4.5.3.1.6)",
    "500 Error: strict ASCII mode": "500 5.6.7 Error: strict ASCII mode",
    "554 Command refused due to lack of security": "554 5.7.0 Command refused due to lack of security",
    "421 Too many connections": "421 4.7.0 Too many connections",
}

_DATA_REFUSALS = {  # aiosmtpd's own wording for these refusals, as push rewrites it
    DataState.TOO_LONG: _REWRITES["500 Line too long (see RFC5321 4.5.3.1.6)"],
    DataState.TOO_MUCH: _REWRITES["552 Error: Too much mail data"],
}
_AUDITS: set[asyncio.Task[None]] = set()  # audits started from callbacks, referenced until done
# A peer's message opened past [smtp] max_message_size (the relay listener takes its larger S/MIME form).
_TOO_BIG = Reject(552, "5.3.4", "Message size exceeds fixed maximum message size", AuditEvent.SMTP_CONTENT_REFUSED)


_RACES = 3
"""Times a peer's notice is judged again when another settled its message's row first (gateway.queue.notices)."""


def relay_size_limit(max_message_size: int) -> int:
    """What the relay listener takes and advertises (SIZE, RFC 1870): the S/MIME form of a message of
    `max_message_size` octets. Peers send it signed then encrypted (domain brief §7) in base64 lines of 76
    characters and CRLF, 4/3 x 78/76 of the signed message, plus the signature with its certificates, a
    key-transport entry per recipient and MIME headers (1 MiB is ample). Held to `max_message_size`
    alone, a message just under it, accepted at the sender's operator, bounced here. The opened message
    is held to `max_message_size` (RelayHandler.handle_DATA)."""
    return -(-max_message_size * 4 * 78 // (3 * 76)) + 1024 * 1024


def _spawn(audit: Awaitable[None]) -> None:
    """An audit record written from a protocol callback, which cannot await it."""
    task = asyncio.ensure_future(audit)
    _AUDITS.add(task)
    task.add_done_callback(_spawned_done)


async def settle_spawned_audits() -> None:
    """Wait for the audits `_spawn` started (the node stops: they are written before it says so)."""
    if _AUDITS:
        await asyncio.gather(*_AUDITS, return_exceptions=True)


def _spawned_done(task: asyncio.Task[None]) -> None:
    _AUDITS.discard(task)
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("smtp.audit_failed", error=f"{type(error).__name__}: {error}"[:300])


_READ_ALL = 1 << 62  # StreamReader.read(n): all that is buffered, up to n octets
# RFC 2034 §4 / RFC 3463: once ENHANCEDSTATUSCODES is advertised, every reply but the greeting, the
# positive answers to HELO and EHLO, and the 3xx continuations carries an enhanced code. Ours do; these are
# for aiosmtpd's own replies without one (NOOP's and RSET's 250 OK, QUIT's 221, STARTTLS's 220, VRFY's
# 252, EXPN's 502...), by reply code, as Postfix gives them.
_ENHANCED_CODE = re.compile(r"[245]\.\d{1,3}\.\d{1,3}(?: |$)")
_ENHANCED_BY_REPLY = {
    "235": "2.7.0",
    "421": "4.3.2",
    "451": "4.3.0",
    "454": "4.7.0",
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "552": "5.3.4",
    "553": "5.1.3",
    "555": "5.5.4",  # MAIL/RCPT parameters not recognised (RFC 5321 §4.1.1.11; RFC 3463 X.5.4)
}
_PARSER_REFUSALS = ("501", "552", "553", "555")  # aiosmtpd's refusals of MAIL and RCPT that are audited
_AUTH_REFUSALS = ("501", "504", "535")  # and of AUTH


class _ImplicitTLS:
    """Stands in for aiosmtpd's STARTTLS protocol object on a connection that began with TLS."""

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self._extra = {"ssl_object": transport.get_extra_info("ssl_object")}


class GatewaySMTP(SMTP):
    def __init__(
        self,
        handler: Any,
        *,
        implicit_tls: bool = False,
        client: tuple[str, int] | None = None,
        min_data_rate: int = 0,
        auth_line_limit: int | None = None,
        lifetime: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._lifetime = lifetime  # [smtp] session_lifetime (0: none)
        self._lifetime_timer: asyncio.TimerHandle | None = None
        self._expired = False  # past its lifetime: a 421 once the transaction under way is over
        # aiosmtpd's limits per command live in a dict shared by every instance (cleared by each new one):
        # this connection's own. `auth_line_limit`: RFC 4954 §4's 12,288 octets for an AUTH line, which a
        # bearer token needs (aiosmtpd reads every line under one limit, 1,001 octets, and AUTH's at 512).
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        self._auth_line_limit = auth_line_limit
        if auth_line_limit is not None:
            self.command_size_limits["AUTH"] = auth_line_limit
        self._min_data_rate = min_data_rate  # octets/s a DATA must average ([smtp] min_data_rate; 0: none)
        self._data_octets: int | None = None  # octets of the DATA being read, None outside one
        self._data_slow = False  # its time left has run below [smtp] timeout: it is being cut for its rate
        self._address: str | None = None  # the client's address, once counted against its listener's limit
        self._crowded = False  # refused for that limit: aiosmtpd never saw this connection
        self._tls_up = False  # STARTTLS's handshake completed (aiosmtpd's second connection_made)
        self._implicit_tls = implicit_tls
        self._client = client  # the real client when the connection came through a load balancer (PROXY)
        # MAIL/RCPT/AUTH being handled, for auditing aiosmtpd's refusals of it: (event, what to record, codes)
        self._command: tuple[AuditEvent, str, tuple[str, ...]] | None = None
        self._busy = False  # a command is being handled
        self._draining = False  # the node stops: a 421 once the transaction under way is over
        self._greeted = False  # the first reply, the greeting, carries no enhanced code (RFC 2034 §4)
        self._hello = False  # nor do the positive replies to HELO and EHLO
        self._groupable = False  # answering RSET, MAIL or RCPT: a reply RFC 2920 lets us hold back
        self._held = bytearray()  # replies held back, written with the next one
        self._smtp_methods = {
            name: self._draining_aware(method, name in _GROUPABLE) for name, method in self._smtp_methods.items()
        }

    def _cb_client_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super()._cb_client_connected(reader, writer)
        if self._auth_line_limit is not None:  # StreamReader has no public way to change its line limit
            reader._limit = max(reader._limit, self._auth_line_limit)  # type: ignore[attr-defined]

    def _draining_aware(
        self, method: Callable[[str], Awaitable[None]], groupable: bool
    ) -> Callable[[str], Awaitable[None]]:
        """Every command through one gate: while the node stops, a command outside a transaction is
        answered 421 (RFC 5321 §3.8: "after the server receives any command"), and so is the end of the
        transaction under way, once its reply is out (a DATA's 250: the message was accepted)."""

        @functools.wraps(method)  # keeps aiosmtpd's __smtp_syntax__ for HELP
        async def run(arg: str) -> None:
            if self._draining and not self.in_transaction:
                self.stopping(now=True)
                return
            self._busy, self._groupable = True, groupable
            try:
                await method(arg)
            finally:
                self._busy = self._groupable = False
            if self._draining and not self.in_transaction:
                self.stopping(now=True)
            elif self._expired and not self.in_transaction:
                self._expire(now=True)

        return run

    @property
    def in_transaction(self) -> bool:
        """Between an accepted MAIL and the end of its DATA (or RSET): a message on its way in."""
        return self.envelope is not None and self.envelope.mail_from is not None

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")  # as aiosmtpd's, for HELP
    async def smtp_MAIL(self, arg: str | None) -> None:
        if self.envelope is not None and self.envelope.mail_from == "":
            # The null reverse-path was accepted (relay: RFC 5321 §4.5.5); aiosmtpd tests the sender's
            # truth and would take this MAIL as the first one, keeping the recipients given so far.
            await self.push("503 Error: nested MAIL command")
            return
        self._command = (AuditEvent.SMTP_SENDER_REFUSED, arg or "", _PARSER_REFUSALS)
        try:
            await super().smtp_MAIL(arg)
        finally:
            self._command = None

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        envelope = self.envelope
        # After `MAIL FROM:<>` the sender is "" (the node's null sender), which aiosmtpd's RCPT takes for
        # "no MAIL yet" (503): bounces from peers would all be refused. It sees a sender for the check.
        null = envelope is not None and envelope.mail_from == ""
        self._command = (AuditEvent.SMTP_RECIPIENT_REFUSED, arg or "", _PARSER_REFUSALS)
        try:
            if null:
                assert envelope is not None
                envelope.mail_from = "<>"
            await super().smtp_RCPT(arg)
        finally:
            self._command = None
            if null:
                assert envelope is not None
                envelope.mail_from = ""

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        # RFC 4954 §4: aiosmtpd's own refusals (no or an unknown mechanism, a response that is not base64, a
        # cancelled exchange) are audited as failed logins. Only the mechanism is recorded: the initial
        # response holds the credentials.
        self._command = (AuditEvent.SMTP_AUTH_FAILED, (arg or "").split(" ", 1)[0][:20], _AUTH_REFUSALS)
        try:
            await super().smtp_AUTH(arg)
        finally:
            self._command = None

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """RFC 5321 §4.1.1.4: aiosmtpd's DATA, with its content read in chunks (gateway/smtp/data.py)
        instead of a readuntil per line; same checks, replies and hook, and a refused content is audited."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        data = DataReader(line_limit=self.line_length_limit, size_limit=self.data_size_limit)
        reader = self._reader
        rest: bytes | None = None
        received = 0
        # [smtp] timeout is client silence (RFC 5321 §4.5.3.2.5: per data block, as Postfix's smtpd_timeout),
        # not the whole DATA: aiosmtpd's one timer per command cut a 25 MB message off on an uplink under
        # 700 kbit/s. A client that is never silent that long must still average [smtp] min_data_rate:
        # the time left runs down with the clock and each octet adds 1/rate s, up to the timeout.
        timeout, rate, clock = self._timeout_duration, self._min_data_rate, self.loop.time
        left, last = timeout, clock()
        self._data_octets, self._data_slow = 0, False
        try:
            while rest is None:
                try:
                    # Everything buffered (bounded by the reader's flow control and one read of the transport).
                    chunk = await reader.read(_READ_ALL)
                except asyncio.CancelledError:  # the connection was lost or half-closed (aiosmtpd cancels)
                    self._writer.close()
                    raise
                if not chunk:  # EOF: aiosmtpd's eof_received is cancelling this handler
                    self._writer.close()
                    return
                received += len(chunk)
                self._data_octets = received
                if rate:
                    now = clock()
                    left = min(timeout, left - (now - last) + len(chunk) / rate)
                    last = now
                    self._data_slow = left < timeout
                    self._reset_timeout(max(left, 1e-3))  # 0 would mean aiosmtpd's default
                else:
                    self._reset_timeout()
                rest = data.feed(chunk)
        finally:
            self._data_octets = None
        # The rate's budget was for reading: handling the message, then the next command, get the whole
        # timeout again (a 421 while the message is being stored would have the client send it twice).
        self._reset_timeout()
        if rest and not reader.at_eof():
            # Pipelined commands after the end line (RFC 2920): back in the (now empty) buffer, in order.
            reader.feed_data(rest)
        if data.state is not DataState.NOMINAL:
            reply = _DATA_REFUSALS[data.state]
            # The transaction is over before anything can fail: if the audit cannot be written, the client
            # gets handle_exception's 451 and its next MAIL starts afresh (not on this envelope).
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            audit = getattr(self.event_handler, "audit", None)
            if audit is not None and self.session is not None:
                await audit(
                    AuditEvent.SMTP_CONTENT_REFUSED,
                    self.session,
                    result="refused",
                    reply=reply,
                    size=received - len(rest),  # the octets of DATA, end line included
                )
            await self.push(reply)
            return
        raw = data.content()
        self.envelope.content = self.envelope.original_content = raw
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        handler = self.event_handler
        if self._address is None and isinstance(handler, _Handler):  # not the second call, after STARTTLS
            address = str((self._client or transport.get_extra_info("peername") or ("",))[0])
            if not handler.per_address.admit(address):
                # Before aiosmtpd's own connection_made: no greeting, no session, no timer to undo.
                self._crowded = True
                reply = f"421 4.7.0 {self.hostname} Error: too many connections from {address}"
                assert isinstance(transport, asyncio.WriteTransport)
                transport.write(f"{reply}\r\n".encode())
                transport.close()
                _spawn(handler.crowded(address, reply))
                return
            self._address = address
        elif self._original_transport is not None:
            self._tls_up = True
        first = self._lifetime_timer is None and not self._tls_up
        super().connection_made(transport)
        if first and self._lifetime > 0:
            self._lifetime_timer = self.loop.call_later(self._lifetime, self._expire)
        live = getattr(self.event_handler, "live", None)
        if live is not None:
            live.add(self)
        if getattr(self.event_handler, "stopping", False):
            self._draining = True  # accepted as the node began to stop: its first command gets the 421
        if self._client is not None:
            assert self.session is not None  # aiosmtpd types peer as a str; it holds the peername tuple
            self.session.peer = self._client  # type: ignore[assignment]
        if self._implicit_tls and self._tls_protocol is None:
            marker = _ImplicitTLS(transport)
            self._tls_protocol = marker  # type: ignore[assignment]
            assert self.session is not None
            self.session.ssl = marker._extra

    def connection_lost(self, error: Exception | None) -> None:
        if self._crowded:
            return
        if self._lifetime_timer is not None:
            self._lifetime_timer.cancel()
        handler = self.event_handler
        if self._address is not None and isinstance(handler, _Handler):
            handler.per_address.release(self._address)
            self._address = None
        live = getattr(handler, "live", None)
        if live is not None:
            live.discard(self)
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        return False if self._crowded else super().eof_received()

    def stopping(self, *, now: bool = False) -> None:
        """The node stops: RFC 5321 §3.8, a 421 and the connection closed. A session between commands gets
        it at once; one handling a command or within a transaction gets it once that is over (`now`: the
        node's grace period is over, at once whatever it does: a transaction not yet answered 250 was not
        accepted, and the client sends it again, to another node behind a balancer)."""
        if not now and (self._busy or self.in_transaction):
            self._draining = True
            return
        self._close_with(f"421 4.3.2 {self.hostname} Service shutting down, try again later")

    def _close_with(self, reply: str) -> None:
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(self._release(reply))
            transport.close()
        live = getattr(self.event_handler, "live", None)
        if live is not None:  # told: not waited for (a TLS close can take long with a silent client)
            live.discard(self)

    def _expire(self, *, now: bool = False, grace: bool = False) -> None:
        """`[smtp] session_lifetime` is over (a client sending NOOP just within the timeout held its session,
        and its place among `max_connections_per_address`, for ever): RFC 5321 §3.8's 421, at once between
        commands, else once the command or transaction under way is over. A transaction still open one
        `[smtp] timeout` later is cut (not accepted: the client sends it again), unless a command is under
        way then (a DATA arriving at its rate, its message being stored): its own limits bound that one."""
        if grace and self._busy:
            self._lifetime_timer = self.loop.call_later(
                self._timeout_duration, functools.partial(self._expire, grace=True)
            )
            return
        if not now and not grace and (self._busy or self.in_transaction):
            if not self._expired:
                self._expired = True
                self._lifetime_timer = self.loop.call_later(
                    self._timeout_duration, functools.partial(self._expire, grace=True)
                )
            return
        self._expired = True
        transport = self.transport
        if not isinstance(transport, asyncio.WriteTransport) or transport.is_closing():
            return
        reply = f"421 4.4.2 {self.hostname} Error: session open for over {self._lifetime:g} s, connect again"
        self._close_with(reply)
        audit = getattr(self.event_handler, "audit", None)
        if audit is not None and self.session is not None:
            _spawn(audit(AuditEvent.SMTP_SESSION_EXPIRED, self.session, result="refused", reply=reply))

    def _timeout_cb(self) -> None:
        # RFC 5321 §4.5.3.2 lets a server drop an idle client; §3.8 asks it to say so with a 421 first.
        reply = f"421 4.4.2 {self.hostname} Error: timeout exceeded"
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(self._release(reply))
        audit = getattr(self.event_handler, "audit", None)
        if self._data_octets is not None and audit is not None and self.session is not None:
            # A message cut off on its way in: audited as the other refused contents (the handler's task is
            # about to be cancelled with the connection, so not awaited there).
            reason = "data rate below [smtp] min_data_rate" if self._data_slow else "client silent for [smtp] timeout"
            _spawn(
                audit(
                    AuditEvent.SMTP_CONTENT_REFUSED,
                    self.session,
                    result="refused",
                    reply=reply,
                    size=self._data_octets,
                    reason=reason,
                )
            )
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    async def smtp_STARTTLS(self, arg: str) -> None:
        # RFC 3207: a refused handshake (an untrusted or revoked client certificate...) ends the session;
        # audit why before aiosmtpd closes it.
        try:
            await super().smtp_STARTTLS(arg)
            if self._original_transport is not None and not self._tls_up:
                # The session's timer closed the connection mid-handshake: asyncio's SSLProtocol then
                # settles the handshake's waiter as a success, and tells us nothing of the lost
                # connection. aiosmtpd's handshake-failure path ends the session (and its count).
                raise TLSSetupException()
        except TLSSetupException as exc:
            hook = getattr(self.event_handler, "tls_refused", None)
            cause = exc.__cause__
            if hook is not None and self.session is not None and isinstance(cause, ssl.SSLError):
                await hook(self.session, cause)
            raise

    def _enhanced(self, status: str) -> str:
        """`status` with an enhanced code (RFC 2034 §4) where it needs one and has none."""
        if not self._greeted:
            self._greeted = True
            return status
        code, rest = status[:3], status[4:]
        exempt = code[0] not in "245" or status[3:4] not in (" ", "-") or (self._hello and code == "250")
        if exempt or _ENHANCED_CODE.match(rest):
            return status
        return f"{status[:4]}{_ENHANCED_BY_REPLY.get(code, code[0] + '.0.0')} {rest}"

    @contextlib.contextmanager
    def _answering_hello(self) -> Iterator[None]:
        self._hello = True
        try:
            yield
        finally:
            self._hello = False

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:
        with self._answering_hello():
            await super().smtp_HELO(hostname)

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        # aiosmtpd adds SIZE's and SMTPUTF8's octets to MAIL's limit at each EHLO: from the base each time, or
        # a client repeating EHLO would stretch MAIL lines towards the reader's (AUTH's) limit.
        self.command_size_limits.pop("MAIL", None)
        with self._answering_hello():
            await super().smtp_EHLO(hostname)

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            status = _REWRITES.get(status, status)
            if status.startswith("500 Error: command ") and status.endswith(" not recognized"):
                status = "500 5.5.1 " + status[4:]
            # Replies are ASCII (RFC 5321 §4.2); aiosmtpd would fail on anything else.
            status = status.replace("§", "section ").encode("ascii", "replace").decode()
            status = self._enhanced(status)
            # aiosmtpd's own refusals of MAIL/RCPT (source routes, bad paths, SIZE, unknown parameters) and
            # AUTH are audited too; the handler audits its own refusals itself.
            audit = getattr(self.event_handler, "audit", None)
            info = getattr(self.session, "mssgw", None)
            already = isinstance(info, SessionInfo) and info.audited_reply == status
            if already:
                assert isinstance(info, SessionInfo)
                info.audited_reply = None
            if self._command is not None and status[:3] in self._command[2] and audit is not None and not already:
                event, arg, _ = self._command
                await audit(event, self.session, result="refused", reply=status, command=arg[:300])
        # RFC 2920 §3.1: the replies to RSET, MAIL and RCPT may be held while the client's next command is
        # already buffered, so a group's replies leave in one write (one TLS record, one segment) with the
        # reply to its last command; any other reply, or no complete command waiting, sends them all.
        line = (status if isinstance(status, bytes) else status.encode("ascii")) + b"\r\n"
        buffered = getattr(self._reader, "_buffer", b"")  # StreamReader keeps no public view of it
        if self._groupable and b"\n" in buffered and len(self._held) < _HOLD_LIMIT:
            self._held += line
            return
        self._writer.write(self._release(line))
        await self._writer.drain()

    def _release(self, reply: str | bytes) -> bytes:
        """The held replies, then `reply` (a line; CRLF added to a str), as one write."""
        data = bytes(self._held) + (reply if isinstance(reply, bytes) else reply.encode("ascii") + b"\r\n")
        self._held.clear()
        return data


_GROUPABLE = frozenset({"RSET", "MAIL", "RCPT"})  # RFC 2920 §3.1: the replies a server may hold back
_HOLD_LIMIT = 4096  # held octets past which they are written anyway


def _extensions(responses: list[str]) -> list[str]:
    """aiosmtpd's EHLO reply with the extensions it leaves to us, before its last line (`250 HELP`).

    PIPELINING (RFC 2920): aiosmtpd already reads one command at a time from the stream and answers in
    order, DATA's reader hands what follows the end line back to it, and nothing ever discards buffered
    input except STARTTLS (RFC 3207 §4.2 requires that); the replies to a group's RSET, MAIL and RCPT
    commands leave with the reply to its last command (`GatewaySMTP.push`)."""
    return [*responses[:-1], "250-PIPELINING", "250-ENHANCEDSTATUSCODES", *responses[-1:]]


@dataclass
class SessionInfo:
    """What the gateway knows of one SMTP connection."""

    cid: str = field(default_factory=lambda: secrets.token_hex(8))
    client_ip: str = ""
    principal: identity.Principal | None = None
    tls_version: str | None = None
    cipher: str | None = None
    peer_name: str | None = None  # relay: the peer operator's first trust-list domain
    peer_domains: tuple[str, ...] = ()  # relay: its certificate's dNSNames that are on the trust list
    accepted: int = 0
    audited_reply: str | None = None  # the last refusal the handler audited itself


async def _sasl_response(server: SMTP, args: list[str]) -> bytes | AuthResult:
    """The client's first SASL message (RFC 4954 §4): the initial response (`=` is an empty one), or what it
    answers an empty 334; an AuthResult when there is none to take (bad base64, `*`: aiosmtpd answered)."""
    if len(args) > 1:
        try:
            return base64.b64decode(b"" if args[1] == "=" else args[1].encode(), validate=True)
        except binascii.Error:
            return AuthResult(success=False, handled=False, message="501 5.5.2 Can't decode base64")
    got = await server.challenge_auth("", encode_to_b64=False)
    return got if isinstance(got, bytes) else AuthResult(success=False, handled=True)


def _refused(session: Session, reply: str) -> AuthResult:
    """A refused AUTH whose audit record the handler wrote (GatewaySMTP.push must not write another)."""
    found = getattr(session, "mssgw", None)
    if isinstance(found, SessionInfo):
        found.audited_reply = reply
    return AuthResult(success=False, handled=False, message=reply)


def _ssl_object(session: Session) -> ssl.SSLObject | None:
    extra = session.ssl if isinstance(session.ssl, dict) else None
    found = (extra or {}).get("ssl_object")
    return found if isinstance(found, ssl.SSLObject | ssl.SSLSocket) else None  # type: ignore[return-value]


def _tls_facts(session: Session) -> tuple[str | None, str | None]:
    ssl_object = _ssl_object(session)
    if ssl_object is None:
        return None, None
    cipher = ssl_object.cipher()
    return ssl_object.version(), cipher[0] if cipher else None


def _unquote(path: str) -> str:
    return path[1:-1] if path.startswith("<") and path.endswith(">") else path


def smime_refusal(decision: Inbound) -> Refusal:
    """The SMTP refusal of an S/MIME decision (gateway.smime.inbound.REFUSALS), audited as smime.refused."""
    code, text = decision.reply
    status, _, words = text.partition(" ")
    kind = Reject if code >= 500 else TempFail
    return kind(code, status, words, AuditEvent.SMIME_REFUSED)


def _shielded(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """The coroutine runs to its end even if its caller is cancelled (the caller still sees the cancel)."""

    @functools.wraps(fn)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.shield(fn(*args, **kwargs))

    return run


class _Handler:
    """What both listeners share: session facts, auditing, refusals, local recipients, acceptance."""

    author_prefix = "smtp"

    def __init__(self, node: Node, queue: Queue, wake: Callable[[], None]) -> None:
        self.node = node
        self.queue = queue
        self.wake = wake
        self.cfg = node.cfg
        self.live: weakref.WeakSet[GatewaySMTP] = weakref.WeakSet()  # open sessions, told when the node stops
        self.stopping = False  # the node stops: sessions accepted from now on are told at their first command
        self.mailstore = Mailstore(MessageStore(node.mailboxes), default_quota=node.cfg.store.default_quota or None)
        self.per_address = PerAddress(node.cfg.smtp.max_connections_per_address)  # this listener's connections

    async def crowded(self, address: str, reply: str) -> None:
        response = self.per_address.refusal(address, reply)
        if response is not None:
            await self.node.audit.record(
                AuditEvent.SMTP_CONNECTION_REFUSED,
                author=f"{self.author_prefix}:{self.cfg.node.name}",
                peer=address,
                response=response,
            )

    def stop_sessions(self, now: bool = False) -> None:
        self.stopping = True
        for session in list(self.live):
            session.stopping(now=now)

    @property
    def open_sessions(self) -> int:
        return len(self.live)

    @staticmethod
    def info(session: Session) -> SessionInfo:
        found = getattr(session, "mssgw", None)
        if found is None:
            found = SessionInfo(client_ip=str((session.peer or ("",))[0]))
            session.mssgw = found  # type: ignore[attr-defined]
        assert isinstance(found, SessionInfo)
        return found

    async def audit(self, event: AuditEvent, session: Session, **response: Any) -> None:
        info = self.info(session)
        await self.node.audit.record(
            event,
            author=f"{self.author_prefix}:{self.cfg.node.name}",
            principal=info.principal.address if info.principal else info.peer_name,
            peer=info.client_ip,
            cid=info.cid,
            response=response,
        )

    async def tls_refused(self, session: Session, error: ssl.SSLError) -> None:
        await self.audit(AuditEvent.SMTP_TLS_REFUSED, session, result="refused", reason=refusal_reason(error))

    async def refuse(self, verdict: Refusal, session: Session, **facts: Any) -> str:
        await self.audit(verdict.event, session, result="refused", reply=verdict.smtp, **facts)
        self.info(session).audited_reply = verdict.smtp  # GatewaySMTP.push must not audit it again
        return verdict.smtp

    async def take_sender(
        self, verdict: Verdict, session: Session, envelope: Envelope, sender: str, options: list[str]
    ) -> str:
        """MAIL FROM: the refusal's reply, or the sender recorded and 250 (RFC 5321 §4.1.1.2)."""
        if isinstance(verdict, Refusal):
            return await self.refuse(verdict, session, mail_from=sender)
        envelope.mail_from = sender.lower()
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def take_recipient(
        self, verdict: Verdict, session: Session, envelope: Envelope, rcpt: str, options: list[str]
    ) -> str:
        """RCPT TO: the refusal's reply, or the recipient recorded and 250 (RFC 5321 §4.1.1.3)."""
        if isinstance(verdict, Refusal):
            return await self.refuse(verdict, session, rcpt=rcpt)
        envelope.rcpt_tos.append(rcpt.lower())
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def local_recipient(self, rcpt: str, count: int) -> Verdict:
        """A recipient in one of our domains must exist here and be active (550 5.1.1 / 550 5.2.1)."""
        state = await self.node.mailboxes.state(rcpt)
        facts = recipients.RecipientFacts(state.address, state.kind, state.active) if state and state.local else None
        return recipients.check_relay_recipient(
            rcpt,
            local_domains=self.cfg.node.local_domains,
            mailbox=facts,
            count=count,
            max_recipients=self.cfg.smtp.max_recipients,
        )

    def received(self, session: Session, envelope: Envelope, protocol: str, now: datetime) -> str:
        info = self.info(session)
        return content.received_header(
            from_helo=session.host_name or "unknown",
            from_ip=info.client_ip,
            by=self.cfg.smtp_hostname,
            protocol=protocol,
            tls_version=info.tls_version,
            cipher=info.cipher,
            queue_id=info.cid,
            for_rcpt=envelope.rcpt_tos[0] if len(envelope.rcpt_tos) == 1 else None,
            now=now,
        )

    @_shielded
    async def accept(
        self,
        session: Session,
        envelope: Envelope,
        source: str,
        body: bytes,
        headers: Any,
        *,
        parts: list[tuple[list[str], bytes]] | None = None,
        effects: Sequence[patients.Effect] = (),
        receipt: str | None = None,
        mdns: Mdns | None = None,
        tracking: Plan | None = None,
    ) -> str:
        """Commit the message durably, audit it, wake the worker, and only then answer 250. `parts`: when
        recipients get different forms of it, (recipients, body) each, queued together. `effects`: the
        patient rules' conversation changes, committed with it. `receipt`: a relayed message's
        (messages.relay_receipt), taken by each delivery. `mdns`: the notifications a peer's message gets,
        queued with it; `tracking`: a peer's notification's settlement, committed with it (Raced: another node
        settled it first). Shielded: a session cut (or a node stopping) in the middle still finishes what it
        began, the commit and its audit records."""
        info = self.info(session)
        assert envelope.mail_from is not None
        forms = [(rcpts, form) for rcpts, form in parts or [(envelope.rcpt_tos, body)] if rcpts]
        mdn_ids: list[str] = []

        async def alongside(s: AsyncSession | Statements, copies: set[str] | None) -> None:
            """Within the transaction that stores (`copies`: the recipients that already had it, by their relay
            receipt, and get no MDN again) or queues (None) the message."""
            mdn_ids.clear()  # a delivery rolled back before the queue took the message: its MDNs went with it
            if tracking is not None:
                await self.node.tracking.apply(s, tracking)
            if mdns is not None:
                notices = [
                    notice
                    for rcpt, (processed, dispatched) in mdns.by_recipient.items()
                    if copies is None or rcpt not in copies
                    for notice in (processed, dispatched if copies is not None else None)
                    if notice is not None
                ]
                for notice in notices:
                    mdn_ids.append(
                        await self.queue.enqueue_notice(
                            source="mdn",
                            to=mdns.to,
                            body=notice,
                            local_domains=self.cfg.node.local_domains,
                            peer=info.peer_name or info.client_ip,
                            session=s,
                        )
                    )

        delivered = await self.deliver_now(forms, envelope.mail_from, headers.message_id, effects, receipt, alongside)
        ids = [qid for qid, _ in delivered] if delivered is not None else []
        if delivered is None:
            async with self._transaction(effects) as s:
                await alongside(s, None)
                for rcpts, form in forms:
                    ids.append(
                        await self.queue.enqueue(
                            source=source,
                            sender=envelope.mail_from,
                            recipients=rcpts,
                            body=form,
                            local_domains=self.cfg.node.local_domains,
                            principal=info.principal.address if info.principal else None,
                            peer=info.peer_name or info.client_ip,
                            header_message_id=headers.message_id,
                            receipt=receipt,
                            final_notice=mdns is not None and mdns.final,
                            session=s,
                        )
                    )
        queue_id = " ".join(ids)
        info.accepted += 1
        # One audit batch (the log's group commit): accepted first, then what followed from it.
        records = [
            self.audit(
                AuditEvent.SMTP_MESSAGE_ACCEPTED,
                session,
                result="done",
                queue_id=queue_id,
                mail_from=envelope.mail_from,
                rcpt=list(envelope.rcpt_tos),
                size=len(body),
                message_id=headers.message_id,
                tls=info.tls_version,
            )
        ]
        for effect in effects:
            if isinstance(effect, patients.Close):
                records.append(
                    self.audit(
                        AuditEvent.PATIENT_CONVERSATION_CLOSED,
                        session,
                        result="done",
                        patient=effect.patient,
                        correspondent=effect.correspondent,
                        queue_id=queue_id,
                    )
                )
        for qid, done in delivered or []:
            for rcpt, where in done:
                # None: a peer's message this mailbox already got (relay receipt): acknowledged, stored once.
                stored = {} if where is None else {"folder": where.folder, "uid": where.uid}
                if where is not None:
                    self.node.notices.publish(rcpt)
                records.append(
                    self.audit(
                        AuditEvent.QUEUE_DUPLICATE if where is None else AuditEvent.QUEUE_DELIVERED,
                        session,
                        result="done",
                        queue_id=qid,
                        rcpt=rcpt,
                        **stored,
                        message_id=headers.message_id,
                    )
                )
        if mdn_ids:
            records.append(
                self.audit(
                    AuditEvent.MDN_QUEUED,
                    session,
                    result="done",
                    queue_id=queue_id,
                    mdn_queue_ids=list(mdn_ids),
                    to=mdns.to if mdns else None,
                    message_id=headers.message_id,
                )
            )
        if tracking is not None:
            records.append(
                self.audit(
                    AuditEvent.NOTICE_RECEIVED,
                    session,
                    result="done",
                    queue_id=queue_id,
                    original_message_id=tracking.original_message_id,
                    verdicts=tracking.verdicts,
                )
            )
        await asyncio.gather(*records)
        if mdn_ids:
            self.wake()
        if delivered is not None:
            return f"250 2.0.0 OK delivered as {queue_id}"
        self.wake()
        return f"250 2.0.0 OK queued as {queue_id}"

    @contextlib.asynccontextmanager
    async def _transaction(self, effects: Sequence[patients.Effect]) -> AsyncIterator[AsyncSession | Statements]:
        """The transaction that stores or queues an accepted message, with the patient rules' effects: those
        (rare) take the ORM; the rest is plain SQL (raw_writing: no ORM session per message)."""
        if not effects:
            async with self.node.db.raw_writing() as tx:
                yield tx
            return
        async with self.node.db.write() as s:
            await PatientRepository.apply(s, effects)
            yield s

    async def deliver_now(
        self,
        forms: list[tuple[list[str], bytes]],
        sender: str,
        message_id: str | None,
        effects: Sequence[patients.Effect],
        receipt: str | None = None,
        alongside: Callable[[AsyncSession | Statements, set[str] | None], Awaitable[None]] | None = None,
    ) -> list[tuple[str, list[tuple[str, Delivered | None]]]] | None:
        """Deliver into the local mailboxes in one transaction when every recipient is one: (an id in the
        queue's form, the recipients' deliveries) for each form; a delivery is None where the relay
        `receipt` shows the mailbox got the message already. None when the queue must take the message:
        a recipient elsewhere, a mailbox over its quota, disabled or gone since RCPT (the worker retries or
        bounces as it always did), or the delivery failed (the queue is tried next)."""
        local = self.cfg.node.local_domains
        wanted = [(i, r) for i, (rcpts, _) in enumerate(forms) for r in dict.fromkeys(r.lower() for r in rcpts)]
        if not all(domain_of(r) in local for _, r in wanted):
            return None
        # Mailboxes in address order: each delivery locks its folder and account rows, and two messages
        # to the same mailboxes in other orders would deadlock on PostgreSQL.
        wanted.sort(key=lambda pair: pair[1])
        done: list[list[tuple[str, Delivered | None]]] = [[] for _ in forms]
        try:
            async with self._transaction(effects) as s:
                if await self.node.mailboxes.deliverable(s, {r for _, r in wanted}) != {r for _, r in wanted}:
                    return None
                for i, r in wanted:
                    got = await self.mailstore.deliver_checked(s, r, forms[i][1], message_id, receipt, sender=sender)
                    done[i].append((r, got))
                if alongside is not None:
                    await alongside(s, {r for d in done for r, where in d if where is None})
        except (QuotaExceeded, NotFound):
            return None
        except DBAPIError as exc:  # rolled back: the queue, whose worker retries, gets the message
            log.warning("smtp.deliver_now_failed", error=type(exc).__name__)
            return None
        return [(secrets.token_hex(16), d) for d in done]

    async def handle_exception(self, error: Exception) -> str:
        """aiosmtpd's hook for an exception a command raised (the database failing, a bug): a temporary
        reply without internals, so the client keeps the message and tries again (RFC 5321 §4.2.5)."""
        if not isinstance(error, TLSSetupException):  # a refused handshake: audited, and nothing is said
            log.error("smtp.internal_error", error=f"{type(error).__name__}: {error}"[:300])
        return "451 4.3.0 Local error in processing, try again later"

    async def patient_rules(self, envelope: Envelope, headers: content.Headers, size: int) -> patients.Decision:
        """The exchange rules (domain brief §6) for this message, from the store's facts."""
        assert envelope.mail_from is not None
        if not envelope.mail_from and headers.from_:
            # A notification (null sender, from a peer) joins no conversation, but the rules judge its From:
            # author (bound to its signer): a null envelope sender must not let a patient write first, nor
            # anyone write to a patient who opposed messaging.
            decision = await self.node.patients.decide(headers.from_[0], envelope.rcpt_tos, headers, size)
            return patients.Decision(decision.verdict, decision.rule)
        return await self.node.patients.decide(envelope.mail_from, envelope.rcpt_tos, headers, size)


class SubmissionHandler(_Handler):
    """aiosmtpd handler for mail submitted by professionals' clients (RFC 6409)."""

    def __init__(
        self,
        node: Node,
        queue: Queue,
        lockout: Lockout,
        wake: Callable[[], None],
        smime: Smime | None = None,
        revoked: Revoked | None = None,
        tokens: TokenLogin | None = None,
    ) -> None:
        super().__init__(node, queue, wake)
        self.smime = smime
        self.login = PasswordLogin(node.mailboxes, lockout)
        self.certificates = CertificateLogin(node.mailboxes, lockout, revoked)
        self.tokens = tokens  # bearer-token logins (XOAUTH2, OAUTHBEARER), when [oidc] names a provider

    # -- RFC 4954 AUTH ----------------------------------------------------------------------------

    async def _login(self, server: SMTP, username: str, password: str) -> AuthResult:
        session = server.session
        assert session is not None
        info = self.info(session)
        outcome = await self.login.check(username, password, info.client_ip)
        if outcome.result == "locked":
            await self.audit(
                AuditEvent.SMTP_AUTH_LOCKED,
                session,
                result="refused",
                login=outcome.address,
                seconds=round(outcome.wait),
            )
            return _refused(session, f"454 4.7.0 Too many failed logins, try again in {int(outcome.wait) + 1} s")
        account = outcome.account
        if account is None:  # refused: audited, the client learns nothing more
            await self.audit(
                AuditEvent.SMTP_AUTH_FAILED,
                session,
                result="refused",
                login=outcome.address,
                reason=outcome.reason,
                locked_for=round(outcome.locked_for),
            )
            return _refused(session, "535 5.7.8 Authentication credentials invalid")
        info.principal = identity.Principal(account.address, account.kind, "password")
        await self.audit(AuditEvent.SMTP_AUTH_SUCCEEDED, session, result="done", mechanism="password")
        return AuthResult(success=True, auth_data=LoginPassword(account.address.encode(), b""))

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        # RFC 4616: [authzid] NUL authcid NUL passwd, base64, initial response allowed (RFC 4954 §4).
        raw = await _sasl_response(server, args)
        if isinstance(raw, AuthResult):
            return raw
        parts = raw.split(b"\0")
        if len(parts) != 3:
            return AuthResult(success=False, handled=False, message="501 5.5.2 Malformed PLAIN response")
        authzid, user, password = (p.decode("utf-8", "replace") for p in parts)
        if authzid and authzid.lower() != user.lower():
            assert server.session is not None
            await self.audit(
                AuditEvent.SMTP_AUTH_FAILED,
                server.session,
                result="refused",
                login=user[:254],
                authzid=authzid[:254],
                reason="authzid-not-allowed",
            )
            return _refused(server.session, "535 5.7.8 Authorization identity not allowed")
        return await self._login(server, user, password)

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        if len(args) > 1:
            try:
                user = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                return AuthResult(success=False, handled=False, message="501 5.5.2 Can't decode base64")
        else:
            got = await server.challenge_auth("Username:")
            if not isinstance(got, bytes):
                return AuthResult(success=False, handled=True)
            user = got
        password = await server.challenge_auth("Password:")
        if not isinstance(password, bytes):
            return AuthResult(success=False, handled=True)
        return await self._login(server, user.decode("utf-8", "replace"), password.decode("utf-8", "replace"))

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        # EXTERNAL only to a client that sent a certificate: clients that pick the first mechanism they
        # know (mbsync's default) would otherwise try it without one and give up.
        session.host_name = hostname
        ssl_object = _ssl_object(session)
        hidden = set() if self.tokens is not None else {"OAUTHBEARER", "XOAUTH2"}
        if ssl_object is None or not ssl_object.getpeercert(binary_form=True):
            hidden.add("EXTERNAL")
        return _extensions(
            [
                " ".join(m for m in r.split(" ") if m not in hidden) if r[4:].startswith("AUTH ") else r
                for r in responses
            ]
        )

    async def auth_EXTERNAL(self, server: SMTP, args: list[str]) -> AuthResult:
        # RFC 4422 App. A: the identity is the TLS client certificate (APP mailboxes); the optional
        # response is an authorization identity, which must then be the certificate's mailbox.
        session = server.session
        assert session is not None
        info = self.info(session)
        authzid = await _sasl_response(server, args)
        if isinstance(authzid, AuthResult):
            return authzid
        ssl_object = _ssl_object(session)
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        outcome = await self.certificates.check(der, info.client_ip, authzid.decode("utf-8", "replace"))
        if outcome.result == "locked":
            await self.audit(AuditEvent.SMTP_AUTH_LOCKED, session, result="refused", mechanism="EXTERNAL")
            return _refused(session, "454 4.7.0 Too many failed logins, try later")
        account = outcome.account
        if account is None:
            await self.audit(
                AuditEvent.SMTP_AUTH_FAILED,
                session,
                result="refused",
                mechanism="EXTERNAL",
                login=outcome.address or None,
                reason=outcome.reason,
            )
            return _refused(session, "535 5.7.8 Authentication credentials invalid")
        info.principal = identity.Principal(account.address, account.kind, "certificate")
        await self.audit(AuditEvent.SMTP_AUTH_SUCCEEDED, session, result="done", mechanism="certificate")
        return AuthResult(success=True, auth_data=LoginPassword(account.address.encode(), b""))

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._bearer(server, args, "XOAUTH2")

    async def auth_OAUTHBEARER(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._bearer(server, args, "OAUTHBEARER")

    async def _bearer(self, server: SMTP, args: list[str], mechanism: str) -> AuthResult:
        # RFC 7628 §4.3 (and Google's XOAUTH2): the client's message with the token, initial or after an
        # empty 334; a refused token gets the error JSON as a 334 challenge, the client's answer, then 535.
        session = server.session
        assert session is not None
        if self.tokens is None:  # not offered without [oidc] (handle_EHLO): answered as aiosmtpd does the unknown
            return AuthResult(success=False, handled=False, message="504 5.5.4 Unrecognized authentication type")
        info = self.info(session)
        raw = await _sasl_response(server, args)
        if isinstance(raw, AuthResult):
            return raw
        try:
            response = sasl_oauth.PARSERS[mechanism](raw)
        except ValueError as exc:
            await self.audit(
                AuditEvent.SMTP_AUTH_FAILED, session, result="refused", mechanism=mechanism, reason=f"malformed: {exc}"
            )
            return _refused(session, f"501 5.5.2 Malformed {mechanism} response")
        checked = await self.tokens.check(response.token, response.user, info.client_ip)
        outcome, facts = checked.outcome, checked.facts
        token = {"idnat": facts.identifier, "jti": facts.token_id} if facts is not None else {}
        if outcome.result == "locked":
            await self.audit(
                AuditEvent.SMTP_AUTH_LOCKED, session, result="refused", mechanism=mechanism, login=outcome.address
            )
            return _refused(session, f"454 4.7.0 Too many failed logins, try again in {int(outcome.wait) + 1} s")
        if outcome.result == "unavailable":  # the provider's keys could not be had: nobody's fault, try later
            await self.audit(
                AuditEvent.SMTP_AUTH_FAILED,
                session,
                result="failed",
                mechanism=mechanism,
                login=outcome.address or None,
                reason=outcome.reason,
            )
            return _refused(session, "454 4.7.0 Temporary authentication failure")  # RFC 4954 §6
        account = outcome.account
        if account is None:
            await self.audit(
                AuditEvent.SMTP_AUTH_FAILED,
                session,
                result="refused",
                mechanism=mechanism,
                login=outcome.address or None,
                reason=outcome.reason,
                locked_for=round(outcome.locked_for),
                **token,
            )
            error = sasl_oauth.error_challenge(
                mechanism, scope=self.cfg.oidc.scope, openid_configuration=openid_configuration(self.cfg.oidc)
            )
            if isinstance(server, GatewaySMTP):
                server._command = None  # audited above: aiosmtpd's 501 to a cancelled answer is not another refusal
            if not isinstance(await server.challenge_auth(error), bytes):
                return AuthResult(success=False, handled=True)  # '*' or bad base64: aiosmtpd has answered 501
            return _refused(session, "535 5.7.8 Authentication credentials invalid")
        info.principal = identity.Principal(account.address, account.kind, "token")
        await self.audit(AuditEvent.SMTP_AUTH_SUCCEEDED, session, result="done", mechanism=mechanism, **token)
        return AuthResult(success=True, auth_data=LoginPassword(account.address.encode(), b""))

    # -- RFC 5321 transaction -----------------------------------------------------------------------

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        info = self.info(session)
        info.tls_version, info.cipher = _tls_facts(session)
        if info.principal is None:
            return "530 5.7.0 Authentication required"
        sender = _unquote(address)
        state = await self.node.mailboxes.state(sender) if "@" in sender else None
        facts = identity.SenderFacts(**vars(state)) if state is not None else None
        verdict = identity.check_mail_from(info.principal, sender, facts)
        return await self.take_sender(verdict, session, envelope, sender, options)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        rcpt = _unquote(address)
        if "@" in rcpt and domain_of(rcpt) in self.cfg.node.local_domains:
            verdict = await self.local_recipient(rcpt, len(envelope.rcpt_tos))
        else:
            verdict = recipients.check_submission_recipient(
                rcpt,
                local_domains=self.cfg.node.local_domains,
                trusted_domains=await self.node.trust.domains(),
                count=len(envelope.rcpt_tos),
                max_recipients=self.cfg.smtp.max_recipients,
            )
        return await self.take_recipient(verdict, session, envelope, rcpt, options)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        info = self.info(session)
        assert info.principal is not None
        assert envelope.mail_from is not None
        raw = envelope.original_content or b""
        now = datetime.now(UTC)
        received = self.received(session, envelope, "ESMTPSA", now)
        prepared = content.prepare_submission(raw, received=received, message_id_domain=self.cfg.node.domain, now=now)
        if isinstance(prepared, Refusal):
            return await self.refuse(prepared, session, size=len(raw))
        body, headers = prepared
        verdict = identity.check_header_identity(info.principal, envelope.mail_from, headers.from_, headers.sender)
        if isinstance(verdict, Refusal):
            return await self.refuse(verdict, session, size=len(raw))
        rules = await self.patient_rules(envelope, headers, len(body))
        if isinstance(rules.verdict, Refusal):
            return await self.refuse(rules.verdict, session, rule=rules.rule, size=len(raw))
        if self.smime is not None:
            # End-to-end mode (issue 5): a message the author protected is checked now, not at the peer.
            checked = await self.smime.check_submission(raw, sender=envelope.mail_from, recipients=envelope.rcpt_tos)
            if checked is not None and not checked.ok:
                return await self.refuse(smime_refusal(checked), session, reason=checked.reason, size=len(raw))
            if checked is not None:
                await self.audit(
                    AuditEvent.SMIME_VERIFIED,
                    session,
                    result="done",
                    form="signed" if checked.signer is not None else "encrypted",
                    signer_serial=f"{checked.signer.serial_number:X}" if checked.signer else None,
                    mail_from=envelope.mail_from,
                )
        reply = await self.accept(session, envelope, "submission", body, headers, effects=rules.effects)
        if reply.startswith("250") and envelope.mail_from.lower() != info.principal.address.lower():
            # A delegate sent as an ORG mailbox: that mailbox is in use, though nobody logs in to it
            # (mailbox retention counts from its last use).
            await self.node.mailboxes.touch_login(envelope.mail_from)
        return reply


class RelayHandler(_Handler):
    """aiosmtpd handler for mail from peer operators (port 25, mutual TLS; RFC 5321, RFC 3207).

    The peer is identified by its TLS client certificate, verified in the handshake against the pinned
    root and the CRLs (see gateway.tls.RelayContexts); here its dNSNames must include a trust-list
    domain, the envelope sender must be in one of those domains, and every recipient must be an active
    local mailbox. No AUTH is offered: certificates are the only credential between operators.
    """

    author_prefix = "relay"

    def __init__(self, node: Node, queue: Queue, wake: Callable[[], None], smime: Smime | None = None) -> None:
        super().__init__(node, queue, wake)
        self.smime = smime  # `serve` always gives one: nothing from a peer is accepted unprotected

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return _extensions([r for r in responses if not r[4:].startswith("AUTH")])

    async def _identify(self, session: Session) -> Refusal | None:
        info = self.info(session)
        info.tls_version, info.cipher = _tls_facts(session)
        if info.peer_domains:
            return None
        ssl_object = _ssl_object(session)
        cert = ssl_object.getpeercert() if ssl_object is not None else None
        if not cert:
            return Reject(
                530, "5.7.0", "a trust-space client certificate is required (mutual TLS)", AuditEvent.SMTP_PEER_REFUSED
            )
        sans: Any = cert.get("subjectAltName", ())
        names = [str(v).lower() for k, v in sans if k == "DNS"]
        trusted = await self.node.trust.domains()
        on_list = tuple(n for n in names if n in trusted)
        if not on_list:
            shown = ", ".join(names[:5]) or "none"
            return Reject(
                550,
                "5.7.1",
                f"the client certificate names no domain of the trust list ({shown})",
                AuditEvent.SMTP_PEER_REFUSED,
            )
        info.peer_domains, info.peer_name = on_list, on_list[0]
        return None

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        refusal = await self._identify(session)
        if refusal is not None:
            return await self.refuse(refusal, session)
        sender = _unquote(address)
        verdict = recipients.check_relay_sender(sender, peer_domains=self.info(session).peer_domains)
        return await self.take_sender(verdict, session, envelope, sender, options)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        rcpt = _unquote(address)
        verdict = await self.local_recipient(rcpt, len(envelope.rcpt_tos))
        return await self.take_recipient(verdict, session, envelope, rcpt, options)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        received = self.received(session, envelope, "ESMTPS", datetime.now(UTC))
        prepared = content.prepare_relay(raw, received=received)
        if isinstance(prepared, Refusal):
            return await self.refuse(prepared, session, size=len(raw))
        if self.smime is not None:
            # Domain brief §7 "Receive": decrypt, verify, judge the signer, or refuse naming why (no receipt).
            assert envelope.mail_from is not None
            opened = await self.smime.open(raw, sender=envelope.mail_from, recipients=envelope.rcpt_tos)
            if not opened.ok:
                return await self.refuse(smime_refusal(opened), session, reason=opened.reason, size=len(raw))
            if len(opened.message) - len(opened.results) > self.cfg.smtp.max_message_size:
                return await self.refuse(_TOO_BIG, session, size=len(opened.message) - len(opened.results))
            assert opened.signer is not None
            await self.audit(
                AuditEvent.SMIME_VERIFIED,
                session,
                result="done",
                signer_serial=f"{opened.signer.serial_number:X}",
                binding=opened.binding,
                mail_from=envelope.mail_from,
            )
            # The inner message is what is stored: it passes the same content checks as a clear one.
            prepared = content.prepare_relay(opened.message, received=received)
            if isinstance(prepared, Refusal):
                return await self.refuse(prepared, session, size=len(opened.message))
            rules = await self.patient_rules(envelope, prepared[1], len(prepared[0]))
            if isinstance(rules.verdict, Refusal):
                return await self.refuse(rules.verdict, session, rule=rules.rule, size=len(raw))
            # A copy the peer sends again has the same inner message, whatever its signature and encryption;
            # our Authentication-Results field on top of it says when it was checked, so it is left out.
            receipt = relay_receipt(envelope.mail_from, prepared[1].message_id, opened.message[len(opened.results) :])
            keep = await self.node.mailboxes.keeping_smime(envelope.rcpt_tos)
            parts = None
            if keep:
                # Mailboxes read by end-to-end clients also get the S/MIME form, under the same verdict.
                kept = content.prepare_relay(opened.results + strip_results(raw, self.smime.host), received=received)
                assert not isinstance(kept, Refusal)  # the outer message passed these checks above
                inner = [r for r in envelope.rcpt_tos if r not in keep]
                parts = [(inner, prepared[0]), ([r for r in envelope.rcpt_tos if r in keep], kept[0])]
            return await self._take(session, envelope, prepared, rules.effects, receipt, parts)
        body, headers = prepared
        if len(raw) > self.cfg.smtp.max_message_size:  # a clear message: no S/MIME form to allow for
            return await self.refuse(_TOO_BIG, session, size=len(raw))
        rules = await self.patient_rules(envelope, headers, len(body))
        if isinstance(rules.verdict, Refusal):
            return await self.refuse(rules.verdict, session, rule=rules.rule, size=len(raw))
        assert envelope.mail_from is not None
        receipt = relay_receipt(envelope.mail_from, headers.message_id, raw)
        return await self._take(session, envelope, prepared, rules.effects, receipt, None)

    async def _take(
        self,
        session: Session,
        envelope: Envelope,
        prepared: tuple[bytes, content.Headers],
        effects: Sequence[patients.Effect],
        receipt: str | None,
        parts: list[tuple[list[str], bytes]] | None,
    ) -> str:
        """Accept a peer's checked message, with its delivery notifications (domain brief §7): a notification
        about one of our messages is judged by the tracking first (given to its sender, or dropped); any other
        message gets our MDNs, queued with it."""
        body, headers = prepared
        # Any envelope sender: some Direct implementations send their MDNs from the recipient's address.
        report = mdn.read_report(body)
        mdns = self._mdns(envelope, headers, body) if report is None else None
        peer_domains = self.info(session).peer_domains
        for _attempt in range(_RACES):
            tracking = (
                await self.node.tracking.plan(report, envelope.rcpt_tos, peer_domains, (self.cfg.node.patient,))
                if report
                else None
            )
            if report is not None and tracking is not None and not tracking.deliver:
                return await self._drop_notice(session, report, tracking)
            try:
                return await self.accept(
                    session,
                    envelope,
                    "relay",
                    body,
                    headers,
                    parts=parts,
                    effects=effects,
                    receipt=receipt,
                    mdns=mdns,
                    tracking=tracking,
                )
            except Raced:
                # A notice for the same message settled a row meanwhile (the peer's processed and dispatched
                # MDNs come together, on two sessions): rolled back, judged again from the rows as they are.
                continue
        return "451 4.3.0 Too many concurrent notices for this message, try again later"

    async def _drop_notice(self, session: Session, report: mdn.Report, plan: Plan) -> str:
        """A notice the sender must not get (intermediate, late, a duplicate): its rows move, it is not stored."""
        if plan.changes:
            with contextlib.suppress(Raced):
                async with self.node.db.raw_writing() as tx:
                    await self.node.tracking.apply(tx, plan)
        await self.audit(
            AuditEvent.NOTICE_DROPPED,
            session,
            result="done",
            kind=report.kind,
            original_message_id=report.original_message_id,
            verdicts=plan.verdicts,
        )
        return "250 2.0.0 OK notification recorded"

    def _mdns(self, envelope: Envelope, headers: content.Headers, body: bytes) -> Mdns | None:
        """Our processed MDN for each recipient of a peer's message, and the dispatched one when asked for
        (gateway.queue.mdn); none for a notification (null sender, RFC 8098 §2.1; a report, the caller's
        test), an automatic message (RFC 3834 §2: `Auto-Submitted` other than `no`) or a message whose
        Message-ID we cannot quote."""
        sender = envelope.mail_from
        if not self.cfg.queue.send_mdn or not sender or not needs_dsn(sender) or headers.message_id is None:
            return None
        if mdn.automatic(body):  # any multipart/report, readable or not; RFC 3834 automatic messages
            return None
        now = datetime.now(UTC)
        rcpts = list({r.lower(): r for r in envelope.rcpt_tos}.values())

        mid = headers.message_id

        def build(rcpt: str, disposition: mdn.Disposition) -> bytes:
            return mdn.build_mdn(
                reporting_ua=self.cfg.smtp_hostname,
                recipient=rcpt,
                to=sender,
                original_message_id=mid,
                disposition=disposition,
                message_id_domain=self.cfg.node.domain,
                now=now,
            )

        try:
            final = mdn.wants_final_delivery(headers.notification_options)
            notices = {r.lower(): (build(r, "processed"), build(r, "dispatched") if final else None) for r in rcpts}
            return Mdns(sender, notices, final)
        except ValueError as exc:  # a Message-ID or address an MDN cannot carry: the message still goes in
            log.warning("smtp.mdn_not_built", error=str(exc)[:200])
            return None


@dataclass(frozen=True)
class Mdns:
    """A peer's message's MDNs, from each of its recipients (lower-cased) to `to`, its envelope sender: the
    processed one, queued with it, and the dispatched one when `final` (asked for), queued with its delivery
    (here when delivered at once, else by the worker)."""

    to: str
    by_recipient: dict[str, tuple[bytes, bytes | None]]
    final: bool


@dataclass
class Listener:
    name: str
    server: asyncio.Server | ProxyServer
    sessions: _Handler | None = None  # SMTP: its open sessions, told (421) when the node stops

    @property
    def port(self) -> int:
        sock = self.server.sockets[0]
        return int(sock.getsockname()[1])


async def start_submission(
    node: Node,
    queue: Queue,
    tls: ssl.SSLContext,
    *,
    host: str,
    port: int,
    implicit_tls: bool,
    lockout: Lockout,
    wake: Callable[[], None],
    smime: Smime | None = None,
    revoked: Revoked | None = None,
    tokens: TokenLogin | None = None,
) -> Listener:
    handler = SubmissionHandler(node, queue, lockout, wake, smime, revoked, tokens)
    cfg = node.cfg

    def factory(client: tuple[str, int] | None) -> GatewaySMTP:
        return GatewaySMTP(
            handler,
            implicit_tls=implicit_tls,
            client=client,
            hostname=cfg.smtp_hostname,
            ident="mssgw ESMTP",
            data_size_limit=cfg.smtp.max_message_size,
            tls_context=None if implicit_tls else tls,
            require_starttls=not implicit_tls,
            auth_required=True,
            auth_require_tls=True,
            auth_exclude_mechanism=["CRAM-MD5"],
            auth_line_limit=sasl_oauth.MAX_RESPONSE,
            timeout=cfg.smtp.timeout,
            min_data_rate=cfg.smtp.min_data_rate,
            lifetime=cfg.smtp.session_lifetime,
            decode_data=False,
            enable_SMTPUTF8=False,
        )

    name = "submissions" if implicit_tls else "submission"
    server = await listen(node, name, factory, host=host, port=port, tls=tls if implicit_tls else None)
    return Listener(name, server, handler)


async def start_relay(
    node: Node,
    queue: Queue,
    contexts: RelayContexts,
    *,
    host: str,
    port: int,
    wake: Callable[[], None],
    smime: Smime | None,
) -> Listener:
    """The listener for peer operators: STARTTLS required, then a trust-space client certificate."""
    handler = RelayHandler(node, queue, wake, smime)
    cfg = node.cfg

    def factory(client: tuple[str, int] | None) -> GatewaySMTP:
        return GatewaySMTP(
            handler,
            client=client,
            hostname=cfg.smtp_hostname,
            ident="mssgw ESMTP",
            data_size_limit=relay_size_limit(cfg.smtp.max_message_size),
            tls_context=contexts.get(),  # per connection: picks up freshly published CRLs
            require_starttls=True,
            auth_required=False,
            auth_require_tls=True,
            auth_exclude_mechanism=["PLAIN", "LOGIN", "CRAM-MD5"],
            timeout=cfg.smtp.timeout,
            min_data_rate=cfg.smtp.min_data_rate,
            lifetime=cfg.smtp.session_lifetime,
            decode_data=False,
            enable_SMTPUTF8=False,
        )

    server = await listen(node, "relay", factory, host=host, port=port, tls=None)
    return Listener("relay", server, handler)
