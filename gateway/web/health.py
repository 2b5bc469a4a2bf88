"""The node's HTTPS health endpoint (ASGI), served by uvicorn inside the node's event loop.

`GET /healthz` answers 200 with the node's name, domains, version and audit state when the databases
answer, 503 otherwise. Everything else is 404 (405 for other methods on /healthz). Responses carry
no-store and nosniff headers; there is nothing else to serve yet.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from gateway.node import Node

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_HEADERS = [
    (b"content-type", b"application/json"),
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"strict-transport-security", b"max-age=31536000"),
]


def _version() -> str:
    try:
        return version("mssgw")
    except PackageNotFoundError:
        return "unknown"


async def _reply(send: Send, status: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]] | None = None) -> None:
    data = json.dumps(body, sort_keys=True).encode()
    headers = [*_HEADERS, (b"content-length", str(len(data)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def health_app(node: Node) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # uvicorn runs with lifespan="off"
            return
        if scope["path"] != "/healthz":
            await _reply(send, 404, {"error": "not found"})
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _reply(send, 405, {"error": "method not allowed"}, [(b"allow", b"GET, HEAD")])
            return
        try:
            size = await node.audit.size()
            cp = await node.audit.latest_checkpoint()
            await node.db.current_revision()
        except Exception:
            await _reply(send, 503, {"status": "unavailable"})
            return
        await _reply(
            send,
            200,
            {
                "status": "ok",
                "node": node.cfg.node.name,
                "domain": node.cfg.node.domain,
                "domains": node.cfg.node.local_domains,
                "version": _version(),
                "audit": {"records": size, "last_checkpoint": cp.as_dict() if cp else None},
            },
        )

    return app
