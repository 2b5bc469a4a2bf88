"""`mssgw serve`: run an operator node's listeners and background tasks in one event loop.

Implementation notes
- One process, one asyncio loop: HTTPS (the patient web inbox, /healthz), SMTP submission (587, 465),
  the queue worker, periodic audit checkpoints. Listeners bind to the configured address; port 0 picks
  a free port. Each listener's address is printed (`listening NAME HOST:PORT`), then `ready`: the tests
  and the quickstart read them.
- The node, not uvicorn, owns SIGINT/SIGTERM: the first closes the listeners, lets the work under way
  finish within `[node] stop_grace` (SMTP transactions, IMAP commands, the queue worker's batch, web
  requests; sessions between them are told 421 / BYE at once), cuts what is left, writes a final audit
  record and checkpoint, and closes the databases.
- Periodic signed audit checkpoints run while serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator

import h11
import uvicorn

from gateway.audit import oplog
from gateway.audit.events import AuditEvent
from gateway.auth.lockout import Lockout
from gateway.auth.oidc import token_login
from gateway.config import Config
from gateway.errors import ConfigError, SecretKeyError
from gateway.imap.server import ImapService, start_imap
from gateway.node import Node
from gateway.proxy import Address, ProxyServer, listen
from gateway.queue.store import Queue
from gateway.queue.worker import DeliveryWorker
from gateway.smime.service import Smime
from gateway.smtp.client import Relayer
from gateway.smtp.server import Listener, settle_spawned_audits, start_relay, start_submission
from gateway.store.logins import LoginRecords
from gateway.store.notify import PgNoticeBridge
from gateway.tls import RelayContexts, server_context, shrink_asyncio_tls_buffers
from gateway.web.health import health_app
from gateway.web.inbox import web_app

Listen = Callable[[Callable[[Address | None], asyncio.BaseProtocol]], Awaitable["asyncio.Server | ProxyServer"]]


class _EmbeddedServer(uvicorn.Server):
    """uvicorn serving the node's web app on a listener of the node's (gateway.proxy.listen): behind load
    balancers it reads their PROXY headers like the mail listeners, so the web inbox's audit records,
    lock-out and limits see the patient's address, not the balancer's."""

    def __init__(self, config: uvicorn.Config, listen: Listen, request_timeout: float) -> None:
        super().__init__(config)
        self._listen = listen
        self._request_timeout = request_timeout

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the node handles signals itself

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn's own startup, but for the listener: its protocol for each connection, told the client.
        await self.lifespan.startup()
        config = self.config

        def protocol(client: Address | None) -> asyncio.BaseProtocol:
            made: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )
            if client is not None:
                _tell_client(made, client)
            _bound_requests(made, self._request_timeout)
            return made

        self.servers = [await self._listen(protocol)]  # type: ignore[list-item]
        self.started = True


def _tell_client(protocol: asyncio.Protocol, client: Address) -> None:
    """uvicorn's HTTP protocols read the peer from the socket when connected and keep it as `client`,
    which becomes the ASGI scope's "client" (request.client): set it to the one the PROXY header named."""
    connected = protocol.connection_made

    def connection_made(transport: asyncio.BaseTransport) -> None:
        connected(transport)
        protocol.client = client  # type: ignore[attr-defined]

    protocol.connection_made = connection_made  # type: ignore[method-assign]


def _bound_requests(protocol: asyncio.Protocol, seconds: float) -> None:
    """Close the connection of a client that has not sent a whole request `seconds` after the connection
    or the end of the previous response. uvicorn's h11 protocol (the one installed: no httptools) times
    only the wait after a response, and any octet cancels that: a client sending nothing, or a header or
    a body an octet at a time, would hold its connection and task for ever. A request the application is
    still answering is not cut: the check comes back later."""
    loop = asyncio.get_running_loop()
    timer: asyncio.TimerHandle | None = None
    connected, lost = protocol.connection_made, protocol.connection_lost
    completed = protocol.on_response_complete  # type: ignore[attr-defined]

    def arm() -> None:
        nonlocal timer
        if timer is not None:
            timer.cancel()
        timer = loop.call_later(seconds, expire)

    def expire() -> None:
        transport = getattr(protocol, "transport", None)
        if transport is None or transport.is_closing():
            return
        cycle = getattr(protocol, "cycle", None)
        conn = getattr(protocol, "conn", None)
        answering = cycle is not None and not cycle.response_complete
        if answering and conn is not None and conn.their_state in (h11.DONE, h11.MUST_CLOSE):
            arm()  # the whole request came: the application's answer is not the client's delay
            return
        transport.close()

    def connection_made(transport: asyncio.BaseTransport) -> None:
        connected(transport)
        arm()

    def on_response_complete() -> None:
        completed()
        arm()

    def connection_lost(exc: Exception | None) -> None:
        if timer is not None:
            timer.cancel()
        lost(exc)

    protocol.connection_made = connection_made  # type: ignore[method-assign]
    protocol.connection_lost = connection_lost  # type: ignore[method-assign]
    protocol.on_response_complete = on_response_complete  # type: ignore[attr-defined]


async def _drained(count: Callable[[], int], grace: float) -> None:
    """Wait until `count()` is 0, `grace` seconds at most."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(grace):
            while count():  # noqa: ASYNC110 (sessions leave as they end; no event to wait on)
                await asyncio.sleep(0.05)


async def serve(cfg: Config, *, announce: Callable[[str], None] = print, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    shrink_asyncio_tls_buffers()
    loop = asyncio.get_running_loop()
    oplog.log_loop_errors(loop)
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    author = f"node:{cfg.node.name}"
    async with Node(cfg) as node, node.db.exclusive(f"node:{cfg.node.name}") as alone:
        # Nodes sharing a database are told apart by name (queue leases are theirs): a second node of the
        # same name would free the first one's leases at start and deliver its work twice.
        if not alone:
            raise ConfigError(
                f"a node named {cfg.node.name!r} is already serving from this database: "
                "give each node its own [node] name"
            )
        # A wrong KEK must not serve: mail queued meanwhile would be sealed under it (lost once the right key
        # is back) and every local delivery would fail. A mailbox's data key is the one proof stored.
        if unopened := await node.mailboxes.unopened_keys():
            kek = node.kek
            raise SecretKeyError(
                f"the key-encryption key {kek.key_id} (and previous keys: {', '.join(kek.previous_ids) or 'none'})"
                " does not open the data keys of "
                + ", ".join(f"{n} mailbox{'es' if n > 1 else ''}, wrapped by {k}" for k, n in unopened.items())
                + ": give that key as [store] kek_file or in previous_kek_files"
            )
        tls = server_context(cfg.path(cfg.pki.cert), cfg.path(cfg.pki.key))
        queue = Queue(node.db, node.kek)
        smime = Smime(node)
        relayer = Relayer(cfg)
        worker = DeliveryWorker(node, queue, relay=relayer, smime=smime)
        lockout = Lockout(
            threshold=cfg.auth.lockout_threshold,
            wide_threshold=cfg.auth.lockout_wide_threshold,
            base_delay=cfg.auth.lockout_base_delay,
            max_delay=cfg.auth.lockout_max_delay,
        )
        tokens = token_login(cfg.oidc, cfg.path, node.mailboxes, lockout)
        logins = LoginRecords(node.db)
        await logins.load(lockout)  # a restart does not forgive a guesser
        web = _EmbeddedServer(
            uvicorn.Config(
                web_app(node, queue, worker.wake, lockout, health_app(node)),
                lifespan="off",
                log_config=None,
                access_log=False,
                server_header=False,
                proxy_headers=False,  # the client's address comes from PROXY headers, never X-Forwarded-For
                timeout_graceful_shutdown=math.ceil(cfg.node.stop_grace),  # requests under way finish, within the grace
                ssl_context_factory=lambda _config, _default: tls,
            ),
            lambda protocol: listen(
                node, "https", protocol, host=cfg.listen.host, port=cfg.listen.https_port, tls=tls, optional=True
            ),
            cfg.web.request_timeout,
        )
        web_task = asyncio.create_task(web.serve())
        while not web.started and not web_task.done():  # noqa: ASYNC110 (uvicorn exposes a flag, not an event)
            await asyncio.sleep(0.01)
        if web_task.done():
            await web_task  # raises what stopped it
        host, port = web.servers[0].sockets[0].getsockname()[:2]
        listeners: list[Listener] = []
        contexts = RelayContexts(
            cfg.path(cfg.pki.cert), cfg.path(cfg.pki.key), cfg.path(cfg.pki.trust_anchor), cfg.crl_dir
        )
        # Mail clients may present a certificate (APP mailboxes, SASL EXTERNAL): requested, never required,
        # checked in the handshake against the root and the current CRLs.
        clients = RelayContexts(
            cfg.path(cfg.pki.cert), cfg.path(cfg.pki.key), cfg.path(cfg.pki.trust_anchor), cfg.crl_dir
        )
        clients_tls = clients.live()
        for port_, implicit in ((cfg.listen.submission_port, False), (cfg.listen.submissions_port, True)):
            if port_ is not None:
                listeners.append(
                    await start_submission(
                        node,
                        queue,
                        clients_tls,
                        host=cfg.listen.host,
                        port=port_,
                        implicit_tls=implicit,
                        lockout=lockout,
                        wake=worker.wake,
                        smime=smime,
                        revoked=clients.revoked,
                        tokens=tokens,
                    )
                )
        if cfg.listen.relay_port is not None:
            listeners.append(
                await start_relay(
                    node,
                    queue,
                    contexts,
                    host=cfg.listen.host,
                    port=cfg.listen.relay_port,
                    wake=worker.wake,
                    smime=smime,
                )
            )
        imap = ImapService(node, clients_tls, lockout, clients.revoked, tokens)
        for port_, implicit in ((cfg.listen.imap_port, False), (cfg.listen.imaps_port, True)):
            if port_ is not None:
                listeners.append(await start_imap(imap, host=cfg.listen.host, port=port_, implicit_tls=implicit))
        delivering = asyncio.create_task(worker.run())
        keeping = asyncio.create_task(logins.keep(lockout))  # stopped last: it writes what is left
        tasks = [
            asyncio.create_task(node.audit.run_checkpoints(cfg.audit.checkpoint_interval)),
            delivering,
            asyncio.create_task(imap.watch()),
            asyncio.create_task(smime.keep_dev_crls()),
            asyncio.create_task(smime.keep_crls()),
        ]
        if not node.db.is_sqlite:  # several nodes may share the database: their notices cross over
            bridge = PgNoticeBridge(node.db, node.notices, lockout)  # and lock-out events
            tasks.append(asyncio.create_task(bridge.run()))
            with contextlib.suppress(TimeoutError):  # else it keeps trying; the idle look covers meanwhile
                async with asyncio.timeout(10):
                    await bridge.connected.wait()
        shown = f"[{host}]" if ":" in host else host
        endpoints = {"https": f"{shown}:{port}", **{ln.name: f"{shown}:{ln.port}" for ln in listeners}}
        await node.audit.record(AuditEvent.NODE_STARTED, author=author, request=endpoints)
        await node.audit.checkpoint()
        for name, where in endpoints.items():
            announce(f"listening {name} {where}")
        announce("ready")
        try:
            await stop.wait()
        finally:
            for ln in listeners:
                ln.server.close()
            # Work under way finishes within the grace period: SMTP transactions (421 after their reply),
            # IMAP commands (BYE [UNAVAILABLE] after theirs), the queue worker's batch, web requests.
            # Sessions between transactions or commands are told at once. Clients connect again, to
            # another node behind a balancer.
            smtp = [ln.sessions for ln in listeners if ln.sessions is not None]
            for handler in smtp:
                handler.stop_sessions()
            worker.stop()
            web.should_exit = True
            grace = cfg.node.stop_grace
            await asyncio.gather(
                imap.stop(grace=grace),
                _drained(lambda: sum(h.open_sessions for h in smtp), grace),
                asyncio.wait([delivering], timeout=grace),
            )
            for handler in smtp:
                handler.stop_sessions(now=True)  # the grace is over: whatever is left is cut, with a 421
            for t in tasks:
                t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await web_task
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            for ln in listeners:
                await ln.server.wait_closed()
            keeping.cancel()  # after the last login attempt (web requests, cut sessions): its final write
            with contextlib.suppress(asyncio.CancelledError):
                await keeping
            await relayer.close()  # QUIT to the peers' kept sessions
            smime.close()
            await settle_spawned_audits()  # refusals and cut DATAs audited from protocol callbacks
            await node.audit.record(AuditEvent.NODE_STOPPED, author=author)
            await node.audit.checkpoint()
            announce("stopped")
