"""A node stopping (SIGTERM) lets the work under way finish within `[node] stop_grace` (gateway/app.py):
a message being sent is accepted and then told 421; sessions between transactions or commands are told
at once; past the grace, what is left is cut with a 421 and nothing half-received is kept."""

from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
import time
import weakref
from collections.abc import Iterator

import pytest

from gateway.smtp.server import GatewaySMTP
from tests.conftest import NodeDir
from tests.smtp.conftest import DOCTOR, PASSWORD, SECRETARIAT, Gateway, provision, serve

SHUTTING_DOWN = b"4.3.2 mail.ch-test.mssante.fr Service shutting down, try again later"
BYE = b"* BYE [UNAVAILABLE] This server is stopping: connect again\r\n"


@pytest.fixture
def stopping(node: NodeDir) -> Iterator[Gateway]:
    provision(node)
    yield from serve(node, {"MSSGW_NODE__STOP_GRACE": "3"})


def stored(gw: Gateway, address: str) -> int:
    with sqlite3.connect(gw.node.data / "mssgw.db") as conn:
        return int(conn.execute("SELECT count(*) FROM messages WHERE address = ?", (address,)).fetchone()[0])


def half_sent(gw: Gateway, subject: str) -> tuple[object, bytes]:
    """A logged-in submission session inside DATA, half of a message sent."""
    client = gw.submission()
    assert client.mail(DOCTOR)[0] == 250
    assert client.rcpt(SECRETARIAT)[0] == 250
    assert client.docmd("DATA")[0] == 354
    head = f"From: {DOCTOR}\r\nTo: {SECRETARIAT}\r\nSubject: {subject}\r\nMessage-ID: <{subject}@test>\r\n\r\n"
    client.send(head.encode() + b"first half\r\n")
    return client, b"second half\r\n.\r\n"


def imap_logged_in(gw: Gateway) -> tuple[socket.socket, object]:
    sock = gw.tls().wrap_socket(socket.create_connection(("127.0.0.1", gw.port("imaps")), timeout=10))
    file = sock.makefile("rb")
    assert file.readline().startswith(b"* OK")
    sock.sendall(f'a1 LOGIN {DOCTOR} "{PASSWORD}"\r\n'.encode())
    assert file.readline().startswith(b"a1 OK")
    return sock, file


def test_a_message_under_way_is_accepted_then_told_and_idle_sessions_are_told_at_once(stopping: Gateway) -> None:
    gw = stopping
    sending, rest = half_sent(gw, "under-way")
    between = gw.submission()  # logged in, between transactions
    imap, imap_file = imap_logged_in(gw)
    gw.running.proc.send_signal(signal.SIGTERM)
    assert between.getreply() == (421, SHUTTING_DOWN)
    assert imap_file.readline() == BYE  # type: ignore[attr-defined]
    time.sleep(0.5)  # the node waits for the transaction under way
    assert gw.running.proc.poll() is None
    sending.send(rest)  # type: ignore[attr-defined]
    code, text = sending.getreply()  # type: ignore[attr-defined]
    assert code == 250, text
    assert sending.getreply() == (421, SHUTTING_DOWN)  # type: ignore[attr-defined]
    out, _ = gw.running.proc.communicate(timeout=30)
    assert gw.running.proc.returncode == 0, gw.running.stderr()
    assert out.strip() == "stopped"
    assert "Traceback" not in gw.running.stderr()
    assert stored(gw, SECRETARIAT) == 1
    imap.close()


def test_a_transaction_begun_before_the_stop_goes_on_to_its_end(stopping: Gateway) -> None:
    """MAIL accepted before the SIGTERM: RCPT, DATA and the message still go through, then the 421."""
    gw = stopping
    client = gw.submission()
    assert client.mail(DOCTOR)[0] == 250
    gw.running.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert client.rcpt(SECRETARIAT)[0] == 250
    message = f"From: {DOCTOR}\r\nTo: {SECRETARIAT}\r\nSubject: begun\r\n\r\nbody\r\n".encode()
    assert client.data(message)[0] == 250
    assert client.getreply() == (421, SHUTTING_DOWN)
    gw.running.proc.communicate(timeout=30)
    assert gw.running.proc.returncode == 0
    assert stored(gw, SECRETARIAT) == 1


def test_past_the_grace_a_transaction_is_cut_with_a_421_and_nothing_is_kept(stopping: Gateway) -> None:
    gw = stopping
    sending, _ = half_sent(gw, "never-finished")
    signalled = time.monotonic()
    gw.running.proc.send_signal(signal.SIGTERM)
    assert sending.getreply() == (421, SHUTTING_DOWN)  # type: ignore[attr-defined]
    waited = time.monotonic() - signalled
    assert 2.5 <= waited < 15, waited  # stop_grace = 3 (the upper bound: slow CI machines)
    out, _ = gw.running.proc.communicate(timeout=30)
    assert gw.running.proc.returncode == 0, gw.running.stderr()
    assert out.strip() == "stopped"
    assert stored(gw, SECRETARIAT) == 0


def test_no_new_connection_is_served_while_the_node_drains(stopping: Gateway) -> None:
    """The listeners close at the SIGTERM: a client arriving during the grace is refused at once, and
    the transaction under way still ends with its 250."""
    gw = stopping
    sending, rest = half_sent(gw, "draining")
    gw.running.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert gw.running.proc.poll() is None  # still draining: the half-sent message holds it
    assert {"submission", "submissions", "relay", "imap", "imaps", "https"} <= set(gw.running.ports)
    for port in sorted(gw.running.ports):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", gw.port(port)), timeout=5).close()
    sending.send(rest)  # type: ignore[attr-defined]
    assert sending.getreply()[0] == 250  # type: ignore[attr-defined]
    assert sending.getreply() == (421, SHUTTING_DOWN)  # type: ignore[attr-defined]
    gw.running.proc.communicate(timeout=30)
    assert gw.running.proc.returncode == 0
    assert stored(gw, SECRETARIAT) == 1


class _StoppingHandler:
    """What GatewaySMTP reads of its handler at connection time: the node began to stop."""

    stopping = True

    def __init__(self) -> None:
        self.live: weakref.WeakSet[GatewaySMTP] = weakref.WeakSet()


def test_a_connection_accepted_as_the_stop_begins_gets_421_at_its_first_command() -> None:
    """The instant between the stop's start and the listeners' close: a connection the kernel had
    already accepted is greeted, then told 421 at its first command (RFC 5321 §3.8), not served."""

    async def scenario() -> list[bytes]:
        handler = _StoppingHandler()
        server = await asyncio.get_running_loop().create_server(
            lambda: GatewaySMTP(handler, hostname="mail.ch-test.mssante.fr"), "127.0.0.1", 0
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        try:
            lines = [await reader.readline()]
            writer.write(b"EHLO client.example\r\n")
            lines.append(await reader.readline())
            lines.append(await asyncio.wait_for(reader.read(), 10))  # then the connection is closed
            assert not handler.live  # and no longer counted among the sessions the stop waits for
        finally:
            writer.close()
            server.close()
            await server.wait_closed()
        return lines

    greeting, reply, rest = asyncio.run(scenario())
    assert greeting.startswith(b"220 mail.ch-test.mssante.fr ")
    assert (reply, rest) == (b"421 " + SHUTTING_DOWN + b"\r\n", b"")
