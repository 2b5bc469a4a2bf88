"""gateway/imap/server.py: the service's stop, in process, on loopback."""

from __future__ import annotations

import asyncio
import ssl

from gateway.auth.lockout import Lockout
from gateway.imap.server import ImapService, start_imap
from gateway.node import Node
from tests.conftest import NodeDir

BYE = b"* BYE [UNAVAILABLE] This server is stopping: connect again\r\n"


def test_a_connection_served_after_the_stop_began_is_told_bye_at_once(node: NodeDir) -> None:
    """The instant between the stop's start and the listener's close: a connection the kernel had already
    accepted (its task or TLS handshake not yet run when stop() told the sessions) is greeted with BYE
    [UNAVAILABLE] (RFC 3501 §7.1.5, RFC 5530 §3) and closed, like the sessions stop() told, and is not
    among the sessions the stop waits for."""

    async def scenario() -> tuple[bytes, bytes, bytes, bytes]:
        async with Node(node.cfg()) as n:
            service = ImapService(n, ssl.create_default_context(), Lockout())
            listener = await start_imap(service, host="127.0.0.1", port=0, implicit_tls=False)
            try:
                before_r, before_w = await asyncio.open_connection("127.0.0.1", listener.port)
                greeting = await before_r.readline()
                stopping = asyncio.create_task(service.stop(grace=5))
                told = await asyncio.wait_for(before_r.readline(), 5)  # a session stop() told
                after_r, after_w = await asyncio.open_connection("127.0.0.1", listener.port)
                late = await asyncio.wait_for(after_r.readline(), 5)
                rest = await asyncio.wait_for(after_r.read(), 5)
                await asyncio.wait_for(stopping, 5)
                assert not service.sessions
                before_w.close()
                after_w.close()
            finally:
                listener.server.close()
                await listener.server.wait_closed()
            return greeting, told, late, rest

    greeting, told, late, rest = asyncio.run(scenario())
    assert greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ")
    assert (told, late, rest) == (BYE, BYE, b"")


def test_sessions_per_mailbox_are_counted_and_forgotten(node: NodeDir) -> None:
    """[imap] max_connections_per_user: a mailbox's last session gone, its key goes too (the counter kept one
    key per mailbox ever logged in, for the node's lifetime)."""

    async def scenario() -> None:
        async with Node(node.cfg()) as n:
            service = ImapService(n, ssl.create_default_context(), Lockout())
            cap = n.cfg.imap.max_connections_per_user
            assert all(service.per_user.admit("a@x.fr") for _ in range(cap))
            assert not service.per_user.admit("a@x.fr")
            assert service.per_user.admit("b@x.fr")
            for _ in range(cap):
                service.per_user.release("a@x.fr")
            assert dict(service.per_user.open) == {"b@x.fr": 1}
            service.per_user.release("b@x.fr")
            assert dict(service.per_user.open) == {}

    asyncio.run(scenario())
