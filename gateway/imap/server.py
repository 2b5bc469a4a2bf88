"""IMAP listeners (143 STARTTLS, 993 implicit TLS) inside the node's event loop, and what sessions share.

Implementation notes
- asyncio streams; STARTTLS upgrades the stream in place (`StreamWriter.start_tls`, RFC 3501 §6.2.1),
  and anything the client pipelined after STARTTLS is discarded with the plaintext buffer (the
  command-injection attack of RFC 3207 §6 / CVE-2011-0411 class).
- Capabilities are announced in the greeting and after login (RFC 3501 §7.1, design rule): before TLS
  on 143, LOGINDISABLED and no AUTH= mechanism (RFC 3501 §6.2.3, RFC 8314).
- Connection limits per client address (at accept) and per mailbox (at login) keep one client from
  taking every slot.
- A mailbox disabled (or deleted) by an admin command, possibly in another process, loses its sessions:
  one query every `[imap] account_check` seconds for every logged-in mailbox of the node, rather than a
  query per session, so 10,000 idle sessions cost one small query, not 10,000.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable

from gateway.audit.events import AuditEvent
from gateway.audit.oplog import get_logger
from gateway.auth.lockout import Lockout
from gateway.auth.oidc import TokenLogin
from gateway.auth.service import CertificateLogin, PasswordLogin, Revoked
from gateway.config import Config
from gateway.imap.proto import serialize as ser
from gateway.imap.session import AUTH, BYE, NOT_AUTH, SELECTED, Session
from gateway.node import Node
from gateway.proxy import PerAddress, listen
from gateway.smtp.server import Listener
from gateway.store.mailstore import Mailstore
from gateway.store.messages import MessageStore

# RFC 2177 / the issue: IDLE sessions learn of changes within a second. This node's own changes, and
# other nodes' on PostgreSQL (NOTIFY), wake them at once (gateway.store.notify); others (admin commands)
# are found by check_idle's look every `imap.idle_check` seconds.

# Offered once authenticated, each implemented in gateway/imap/commands/ (docs/rfc-status.md).
AUTHENTICATED_CAPABILITIES = (
    "IMAP4rev1",
    "LITERAL+",
    "SASL-IR",
    "ID",
    "ENABLE",
    "IDLE",
    "NAMESPACE",
    "UNSELECT",
    "UIDPLUS",
    "MOVE",
    "CHILDREN",
    "SPECIAL-USE",
    "CONDSTORE",
    "ESEARCH",
)


async def _every(seconds: Callable[[], float], job: Callable[[], Awaitable[None]], what: str) -> None:
    while True:
        await asyncio.sleep(seconds())
        try:
            await job()
        except Exception as exc:  # a database hiccup must not stop the watch
            get_logger(component="imap").warning(f"{what} failed", error=type(exc).__name__)


_CROWDED = "Too many connections from your address"


class ImapService:
    """What every IMAP session of this node shares: the node, the store, the login check, the limits."""

    def __init__(
        self,
        node: Node,
        tls: ssl.SSLContext,
        lockout: Lockout,
        revoked: Revoked | None = None,
        tokens: TokenLogin | None = None,
    ) -> None:
        self.node = node
        self.cfg: Config = node.cfg
        self.tls = tls
        self.login = PasswordLogin(node.mailboxes, lockout)
        self.certificates = CertificateLogin(node.mailboxes, lockout, revoked)
        self.tokens = tokens  # bearer-token logins (XOAUTH2, OAUTHBEARER), when [oidc] names a provider
        self.mailstore = Mailstore(
            MessageStore(node.mailboxes),
            default_quota=node.cfg.store.default_quota or None,
            max_folders=node.cfg.store.max_folders,
        )
        self.per_user = PerAddress(node.cfg.imap.max_connections_per_user, str)  # per mailbox, not address
        self.per_address = PerAddress(node.cfg.imap.max_connections_per_address)
        self.sessions: set[Session] = set()
        self.stopping = False  # the node stops: a connection served from now on is told BYE at once
        self.idling: set[Session] = set()  # in IDLE: woken by check_idle when another process changes a folder

    async def watch(self) -> None:
        """The service's background looks, for the node's lifetime: end the sessions of mailboxes that are
        no longer active, and wake IDLE sessions whose folder changed outside this node's notices (admin
        commands, other processes), with one query for all of them rather than one per session."""
        await asyncio.gather(
            _every(lambda: self.cfg.imap.account_check, self.check_accounts, "account check"),
            _every(lambda: self.cfg.imap.idle_check, self.check_idle, "idle check"),
        )

    async def stop(self, grace: float = 5.0) -> None:
        """End every session with BYE [UNAVAILABLE] (a running command finishes first), waiting up to `grace`
        seconds: clients learn the node is stopping instead of seeing their connection cut."""
        self.stopping = True
        for session in list(self.sessions):
            await session.revoke("node-stopping")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                while self.sessions:  # noqa: ASYNC110 (sessions leave the set as they end)
                    await asyncio.sleep(0.05)

    async def check_accounts(self) -> None:
        users = {s.user for s in self.sessions if s.user is not None and s.state in (AUTH, SELECTED)}
        if not users:
            return
        gone = users - await self.node.mailboxes.active_among(users)
        for session in [s for s in self.sessions if s.user in gone]:
            await session.revoke("mailbox-disabled")

    async def check_idle(self) -> None:
        watched = [(s, s.selection) for s in self.idling if s.selection is not None]
        if not watched:
            return
        current = await self.mailstore.modseqs({sel.folder.id for _, sel in watched})
        for session, sel in watched:
            if current.get(sel.folder.id) != sel.highestmodseq:  # changed, or deleted (the sync says BYE)
                session.wake.set()

    def capabilities(self, session: Session) -> list[str]:
        if session.state in (AUTH, SELECTED):
            return [*AUTHENTICATED_CAPABILITIES, f"APPENDLIMIT={self.cfg.smtp.max_message_size}"]
        caps = ["IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE"]
        if session.tls:
            caps.append("AUTH=PLAIN")
            if session.client_certificate() is not None:  # else clients like mbsync try it and give up
                caps.append("AUTH=EXTERNAL")
            if self.tokens is not None:
                caps += ["AUTH=OAUTHBEARER", "AUTH=XOAUTH2"]
        else:
            caps += ["STARTTLS", "LOGINDISABLED"]
        return caps

    def greeting(self, session: Session) -> bytes:
        caps = " ".join(self.capabilities(session))
        return ser.untagged_status("OK", f"{self.cfg.smtp_hostname} mssgw IMAP4rev1 ready", f"CAPABILITY {caps}")

    async def serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        tls: bool,
        client: tuple[str, int] | None = None,
    ) -> None:
        session = Session(self, reader, writer, tls=tls, client=client)
        # A connection accepted as the stop began (the listener closed, its task or TLS handshake not yet
        # run when stop() told the sessions): a BYE greeting (RFC 3501 §7.1.5), as the others get.
        refusal: bytes | None = None
        crowded = False
        if self.stopping:
            code, text = BYE["node-stopping"]
            refusal = ser.untagged_status("BYE", text, code)
        elif not self.per_address.admit(session.client_ip):
            refusal = ser.untagged_status("BYE", _CROWDED)
            crowded = True
        if refusal is not None:
            writer.write(refusal)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()
            response = self.per_address.refusal(session.client_ip, f"* BYE {_CROWDED}") if crowded else None
            if response is not None:
                event = AuditEvent.IMAP_CONNECTION_REFUSED
                await self.node.audit.record(event, author="imap", peer=session.client_ip, response=response)
            return
        self.sessions.add(session)
        try:
            await session.run()
        finally:
            self.sessions.discard(session)
            self.per_address.release(session.client_ip)
            if session.user is not None and session.state != NOT_AUTH:
                self.per_user.release(session.user)


async def start_imap(service: ImapService, *, host: str, port: int, implicit_tls: bool) -> Listener:
    def protocol(client: tuple[str, int] | None) -> asyncio.StreamReaderProtocol:
        # What asyncio.start_server builds for each connection, with the client a load balancer named.
        reader = asyncio.StreamReader(limit=2**20)

        async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await service.serve(reader, writer, tls=implicit_tls, client=client)

        return asyncio.StreamReaderProtocol(reader, connected)

    name = "imaps" if implicit_tls else "imap"
    tls = service.tls if implicit_tls else None
    return Listener(name, await listen(service.node, name, protocol, host=host, port=port, tls=tls))
