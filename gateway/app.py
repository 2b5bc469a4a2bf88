"""`mssgw serve`: run an operator node's listeners and background tasks in one event loop.

Implementation notes
- One process, one asyncio loop. Listeners bind to the configured address; port 0 picks a free port
  and the actual address is printed (`listening https://HOST:PORT`) once the node is ready, which the
  tests and the quickstart read.
- The node, not uvicorn, owns SIGINT/SIGTERM: the first stops listeners, writes a final audit record
  and checkpoint, and closes the databases.
- Periodic signed audit checkpoints run while serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable, Iterator

import uvicorn

from gateway.audit.events import AuditEvent
from gateway.config import Config
from gateway.node import Node
from gateway.tls import server_context
from gateway.web.health import health_app


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the node handles signals itself


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(512)
    sock.setblocking(False)
    return sock


async def serve(cfg: Config, *, announce: Callable[[str], None] = print, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    author = f"node:{cfg.node.name}"
    async with Node(cfg) as node:
        tls = server_context(cfg.path(cfg.pki.cert), cfg.path(cfg.pki.key))
        sock = _bind(cfg.listen.host, cfg.listen.https_port)
        host, port = sock.getsockname()[:2]
        web = _EmbeddedServer(
            uvicorn.Config(
                health_app(node),
                lifespan="off",
                log_config=None,
                access_log=False,
                server_header=False,
                ssl_context_factory=lambda _config, _default: tls,
            )
        )
        web_task = asyncio.create_task(web.serve(sockets=[sock]))
        while not web.started and not web_task.done():  # noqa: ASYNC110 (uvicorn exposes a flag, not an event)
            await asyncio.sleep(0.01)
        if web_task.done():
            await web_task  # raises what stopped it
        checkpoints = asyncio.create_task(node.audit.run_checkpoints(cfg.audit.checkpoint_interval))
        url = f"https://{host}:{port}" if ":" not in host else f"https://[{host}]:{port}"
        await node.audit.record(AuditEvent.NODE_STARTED, author=author, request={"https": url})
        await node.audit.checkpoint()
        announce(f"listening {url}")
        try:
            await stop.wait()
        finally:
            checkpoints.cancel()
            web.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await web_task
                await checkpoints
            await node.audit.record(AuditEvent.NODE_STOPPED, author=author)
            await node.audit.checkpoint()
            announce("stopped")
