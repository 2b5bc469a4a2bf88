"""The PROXY protocol from configured load balancers (gateway/proxy.py).

The header reader is tested over socket pairs (what it leaves unread matters as much as what it reads);
the listeners with a real `mssgw serve` whose only load balancer is 127.0.0.1: other clients connect
from 127.0.0.2 (also loopback on Linux), and the audit log shows which address each session was given.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import smtplib
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from gateway import proxy
from gateway.audit import oplog
from gateway.node import Node
from gateway.proxy import Address, ProxyRefused, listen, read_header
from tests.conftest import DOMAIN, NodeDir
from tests.test_serve import Running, start_node

SIG = b"\r\n\r\n\x00\r\nQUIT\n"
BALANCER = ("127.0.0.1", 40000)


def v2(command: int, family: int, addresses: bytes) -> bytes:
    """A PROXY v2 header: version 2 with `command` (0 LOCAL, 1 PROXY), `family` byte (0x11 TCP4, 0x21 TCP6)."""
    return SIG + bytes([0x20 | command, family]) + struct.pack("!H", len(addresses)) + addresses


def v2_tcp4(src: str, sport: int, dst: str = "127.0.0.1", dport: int = 587) -> bytes:
    addrs = ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed + struct.pack("!HH", sport, dport)
    return v2(1, 0x11, addrs)


def v2_tcp6(src: str, sport: int, dst: str = "::1", dport: int = 993) -> bytes:
    addrs = ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed + struct.pack("!HH", sport, dport)
    return v2(1, 0x21, addrs)


async def _read(sent: list[bytes], *, close: bool = False) -> tuple[tuple[str, int] | Exception, bytes]:
    """Feed `sent` (in separate writes) to read_header; its outcome and the bytes it left in the socket."""
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        for piece in sent:
            b.sendall(piece)
            await asyncio.sleep(0.01)
        if close:
            b.shutdown(socket.SHUT_WR)
        outcome: tuple[str, int] | Exception
        try:
            outcome = await read_header(loop, a, BALANCER)
        except ProxyRefused as exc:
            outcome = exc
        b.shutdown(socket.SHUT_WR) if not close else None
        rest = b""
        while chunk := await loop.sock_recv(a, 4096):
            rest += chunk
        return outcome, rest
    finally:
        a.close()
        b.close()


async def test_v1_gives_the_client_and_leaves_what_follows() -> None:
    outcome, rest = await _read([b"PROXY TCP4 203.0.113.7 127.0.0.1 51000 587\r\nEHLO x\r\n"])
    assert outcome == ("203.0.113.7", 51000)
    assert rest == b"EHLO x\r\n"


async def test_v1_tcp6_split_over_several_writes() -> None:
    outcome, rest = await _read([b"PRO", b"XY TCP6 2001:db8::7 ::1 ", b"4242 993\r", b"\n\x16\x03\x01"])
    assert outcome == ("2001:db8::7", 4242)
    assert rest == b"\x16\x03\x01"  # a TLS ClientHello's first bytes: untouched, for the TLS layer


async def test_v2_tcp4_and_tcp6() -> None:
    hello = b"\x16\x03\x01\x02\x00\x01"
    outcome, rest = await _read([v2_tcp4("198.51.100.9", 61000) + hello])
    assert outcome == ("198.51.100.9", 61000)
    assert rest == hello
    outcome, rest = await _read([v2_tcp6("2001:db8::42", 1234)[:20], v2_tcp6("2001:db8::42", 1234)[20:]])
    assert outcome == ("2001:db8::42", 1234)
    assert rest == b""


async def test_an_ipv4_client_in_a_tcp6_header_is_its_ipv4_address() -> None:
    """A balancer listening on IPv6 (HAProxy's `bind :::587 v4v6`) names IPv4 clients by their mapped
    address in TCP6 headers; Python 3.11 spells it ::ffff:c000:20a, which neither the audit log's reader
    nor the per-address limits related to 192.0.2.10."""
    outcome, _ = await _read([v2_tcp6("::ffff:192.0.2.10", 4321)])
    assert outcome == ("192.0.2.10", 4321)
    outcome, _ = await _read([b"PROXY TCP6 ::ffff:192.0.2.10 ::1 4321 587\r\n"])
    assert outcome == ("192.0.2.10", 4321)


async def test_health_checks_keep_the_balancer_address() -> None:
    outcome, _ = await _read([v2(0, 0x00, b"")])  # LOCAL: the balancer's own check
    assert outcome == BALANCER
    outcome, _ = await _read([b"PROXY UNKNOWN\r\n"])
    assert outcome == BALANCER


@pytest.mark.parametrize(
    ("sent", "reason"),
    [
        ([b"EHLO client.example\r\n"], "PROXY unrecognized signature"),
        ([b"PROXY TCP4 203.0.113.7 127.0.0.1 51000\r\n"], "PROXY exception: pop from an empty deque"),
        ([b"PROXY TCP4 999.0.113.7 127.0.0.1 51000 587\r\n"], "PROXYv1 address malformed"),
        ([b"PROXY TCP4 203.0.113.7 127.0.0.1 051000 587\r\n"], "PROXYv1 port malformed"),
        ([b"PROXY TCP4 203.0.113.7 127.0.0.1 51000 587 x\r\n"], "PROXYv1 unrecognized extraneous data"),
        ([b"PROXY TCP4 " + b"1" * 120 + b"\r\n"], "PROXY exception: PROXY v1 header too long"),
        ([b"PROXY TCP4 203.0.113.7 127.0.0.1 51000 587\n"], "PROXYv1 malformed"),  # LF without CR
        ([SIG + b"\x31\x11\x00\x0c" + b"\x00" * 12], "PROXYv2 illegal version"),
        ([SIG + b"\x21\x11\x00\x04" + b"\x00" * 4], "PROXYv2 truncated address"),  # TCP4, 4 address bytes
    ],
)
async def test_malformed_headers_are_refused(sent: list[bytes], reason: str) -> None:
    outcome, _ = await _read(sent, close=True)
    assert isinstance(outcome, ProxyRefused)
    assert str(outcome) == reason


async def test_a_header_cut_short_is_refused() -> None:
    outcome, _ = await _read([v2_tcp4("198.51.100.9", 61000)[:20]], close=True)
    assert isinstance(outcome, ProxyRefused)
    outcome, _ = await _read([b"PROX"], close=True)
    assert isinstance(outcome, ProxyRefused)
    assert "connection lost in the PROXY header" in str(outcome)


async def test_a_silent_balancer_is_refused_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proxy, "HEADER_TIMEOUT", 0.2)
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        started = time.monotonic()
        with pytest.raises(ProxyRefused, match="no PROXY header in time"):
            await read_header(loop, a, BALANCER)
        assert time.monotonic() - started < 2
    finally:
        a.close()
        b.close()


# -- listeners -------------------------------------------------------------------------------------------

PASSWORD = "Horse-Battery-Staple-42"
DOCTOR = f"claire.martin@{DOMAIN}"


@pytest.fixture
def behind(node: NodeDir) -> Iterator[Running]:
    r = node.cli(
        "mailbox", "add", DOCTOR, "--type", "PER", "--idnat", "810000000009", "--password-stdin", input=PASSWORD + "\n"
    )
    assert r.code == 0, r.err
    running = start_node(node, env={"MSSGW_LISTEN__PROXY_FROM": '["127.0.0.1"]'})
    yield running
    if running.proc.poll() is None:
        running.proc.kill()
        running.proc.wait()


LISTENERS = ("submission", "relay", "imap", "imaps", "https")


def connect(port: int, *, source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def smtp_over(sock: socket.socket) -> tuple[smtplib.SMTP, int, bytes]:
    client = smtplib.SMTP()
    client.sock = sock
    client._host = "127.0.0.1"  # type: ignore[attr-defined]  (smtplib's connect() sets it; STARTTLS uses it)
    code, msg = client.getreply()
    return client, code, msg


def audit(node: NodeDir, event: str) -> list[dict[str, object]]:
    found = node.cli("audit", "search", "--event", event, "--json").json()
    assert isinstance(found, list)
    return found


def tls_client(node: NodeDir) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(node.data / "pki-root.pem"))
    ctx.check_hostname = False  # 127.0.0.1; the chain is still verified
    return ctx


def test_submission_through_the_balancer_sees_the_real_client(behind: Running) -> None:
    sock = connect(behind.ports["submission"], source="127.0.0.1")
    sock.sendall(b"PROXY TCP4 203.0.113.7 127.0.0.1 51000 587\r\n")
    client, code, _ = smtp_over(sock)
    assert code == 220
    client.ehlo("client.example")
    client.starttls(context=tls_client(behind.node))
    client.ehlo("client.example")
    with pytest.raises(smtplib.SMTPAuthenticationError) as exc:
        client.login(DOCTOR, "wrong password")
    assert exc.value.smtp_code == 535
    client.close()
    failed = audit(behind.node, "smtp.auth.failed")
    assert [e["peer"] for e in failed] == ["203.0.113.7"] * 2  # smtplib tries PLAIN, then LOGIN


def test_imaps_through_the_balancer_v2_then_tls(behind: Running) -> None:
    sock = connect(behind.ports["imaps"], source="127.0.0.1")
    sock.sendall(v2_tcp6("2001:db8::7", 4242))  # the ClientHello follows at once
    with tls_client(behind.node).wrap_socket(sock) as tls:
        assert tls.recv(4096).startswith(b"* OK [CAPABILITY IMAP4rev1")
        tls.sendall(f'a1 LOGIN {DOCTOR} "wrong password"\r\n'.encode())
        assert tls.recv(4096).startswith(b"a1 NO [AUTHENTICATIONFAILED]")
        tls.sendall(f'a2 LOGIN {DOCTOR} "{PASSWORD}"\r\n'.encode())
        assert tls.recv(4096).startswith(b"a2 OK")
    failed = audit(behind.node, "imap.login.failed")
    assert [e["peer"] for e in failed] == ["2001:db8::7"]
    ok = audit(behind.node, "imap.login.succeeded")
    assert [e["peer"] for e in ok] == ["2001:db8::7"]


def test_a_balancer_connection_without_header_is_closed_and_audited(behind: Running) -> None:
    for name in LISTENERS:
        sock = connect(behind.ports[name], source="127.0.0.1")
        sock.sendall(b"EHLO client.example\r\n")
        try:
            got = sock.recv(4096)
        except ConnectionResetError:  # closed with our unread bytes in its buffer: a reset
            got = b""
        assert got == b""  # closed, not a word (proxy-protocol.txt: no reply)
        sock.close()
    refused = audit(behind.node, "proxy.refused")
    assert [(e["peer"], e["response"]["listener"], e["response"]["reason"]) for e in refused] == [  # type: ignore[index]
        ("127.0.0.1", name, "PROXY unrecognized signature") for name in LISTENERS
    ]


def test_others_are_served_as_they_are_and_cannot_claim_an_address(behind: Running) -> None:
    sock = connect(behind.ports["submission"], source="127.0.0.2")
    client, code, _ = smtp_over(sock)
    assert code == 220  # greeted at once: no header expected from this address
    code, msg = client.docmd("PROXY TCP4 203.0.113.7 127.0.0.1 51000 587")
    assert (code, msg) == (530, b"5.7.0 Must issue a STARTTLS command first")  # a command like any other
    client.ehlo("client.example")
    client.starttls(context=tls_client(behind.node))
    client.ehlo("client.example")
    with pytest.raises(smtplib.SMTPAuthenticationError):
        client.login(DOCTOR, "wrong password")
    client.close()
    with connect(behind.ports["imap"], source="127.0.0.2") as raw:
        assert raw.recv(4096).startswith(b"* OK [CAPABILITY IMAP4rev1")
    assert [e["peer"] for e in audit(behind.node, "smtp.auth.failed")] == ["127.0.0.2"] * 2
    assert audit(behind.node, "proxy.refused") == []


def test_health_checks_of_the_balancer_are_served(behind: Running) -> None:
    sock = connect(behind.ports["submission"], source="127.0.0.1")
    sock.sendall(v2(0, 0x00, b""))
    client, code, msg = smtp_over(sock)
    assert code == 220
    assert msg.startswith(b"mail.ch-test.mssante.fr")
    assert client.quit()[0] == 221


def test_submissions_through_the_balancer_header_then_tls(behind: Running) -> None:
    sock = connect(behind.ports["submissions"], source="127.0.0.1")
    sock.sendall(b"PROXY TCP4 192.0.2.55 127.0.0.1 33000 465\r\n")
    tls = tls_client(behind.node).wrap_socket(sock)
    client, code, _ = smtp_over(tls)
    assert code == 220
    client.ehlo("client.example")
    with pytest.raises(smtplib.SMTPAuthenticationError):
        client.login(DOCTOR, "wrong password")
    client.close()
    assert [e["peer"] for e in audit(behind.node, "smtp.auth.failed")] == ["192.0.2.55"] * 2


def post_without_csrf(tls: ssl.SSLSocket) -> bytes:
    """A login form without its CSRF token: refused (403) and audited web.refused with the client's address."""
    body = b"address=x"
    tls.sendall(
        b"POST /connexion HTTP/1.1\r\nHost: mail.ch-test.mssante.fr\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    got = b""
    while chunk := tls.recv(65536):
        got += chunk
    return got


def test_https_through_the_balancer_v2_then_tls(behind: Running) -> None:
    sock = connect(behind.ports["https"], source="127.0.0.1")
    sock.sendall(v2_tcp4("198.51.100.9", 5555, dport=443))  # the ClientHello follows at once
    with tls_client(behind.node).wrap_socket(sock) as tls:
        assert post_without_csrf(tls).startswith(b"HTTP/1.1 403 ")
    direct = connect(behind.ports["https"], source="127.0.0.2")  # not a balancer: served with its own address
    with tls_client(behind.node).wrap_socket(direct) as tls:
        assert post_without_csrf(tls).startswith(b"HTTP/1.1 403 ")
    # A balancer that sends no header to 443 yet (HAProxy configurations before this version): its TLS
    # is served, under its own address, so that nodes can be upgraded before the balancers.
    with tls_client(behind.node).wrap_socket(connect(behind.ports["https"], source="127.0.0.1")) as tls:
        assert post_without_csrf(tls).startswith(b"HTTP/1.1 403 ")
    refused = audit(behind.node, "web.refused")
    assert [(e["peer"], e["response"]["reason"]) for e in refused] == [  # type: ignore[index]
        ("198.51.100.9", "csrf"),
        ("127.0.0.2", "csrf"),
        ("127.0.0.1", "csrf"),
    ]
    # The balancer's health check (v2 LOCAL) gets /healthz.
    sock = connect(behind.ports["https"], source="127.0.0.1")
    sock.sendall(v2(0, 0x00, b""))
    with tls_client(behind.node).wrap_socket(sock) as tls:
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert tls.recv(4096).startswith(b"HTTP/1.1 200 ")
    assert audit(behind.node, "proxy.refused") == []


def test_failed_implicit_tls_handshakes_are_audited_health_checks_are_not(node: NodeDir) -> None:
    """Without balancers too, 465, 993 and 443 go through ProxyServer: a handshake that fails for a TLS
    reason is audited under the listener's event; a TCP check that connects and closes is not."""
    running = start_node(node)
    try:
        for name in ("submissions", "imaps", "https"):
            connect(running.ports[name], source="127.0.0.2").close()  # a TCP health check
            sock = connect(running.ports[name], source="127.0.0.2")
            sock.sendall(b"a1 LOGIN not tls\r\n")  # clear text where a ClientHello belongs
            assert sock.recv(100) in (b"", b"\x15\x03\x01\x00\x02\x02\x46")  # closed (an alert at most)
            sock.close()
            with tls_client(node).wrap_socket(connect(running.ports[name], source="127.0.0.2")):
                pass  # and a good handshake
            sock = connect(running.ports[name], source="127.0.0.2")
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")  # refused again within the minute: counted, not recorded
            assert sock.recv(100) in (b"", b"\x15\x03\x01\x00\x02\x02\x46")
            sock.close()
        time.sleep(0.5)  # the audit record follows the close
        got = [
            (r["author"], r["peer"], r["response"])
            for event in ("smtp.tls.refused", "imap.tls.refused", "web.tls.refused")
            for r in audit(node, event)
        ]
        assert got == [
            (f"{name}:node1", "127.0.0.2", {"result": "refused", "listener": name, "reason": "WRONG_VERSION_NUMBER"})
            for name in ("submissions", "imaps", "https")
        ]
    finally:
        running.proc.kill()
        running.proc.wait()


def test_the_quieter_records_an_address_once_a_minute_and_counts_the_rest() -> None:
    now = [1000.0]
    quieter = proxy.Quieter(60.0, max_addresses=2, clock=lambda: now[0])
    assert quieter.admit("192.0.2.1") == (True, 0)
    assert quieter.admit("192.0.2.1") == (False, 0)
    assert quieter.admit("192.0.2.1") == (False, 0)
    assert quieter.admit("192.0.2.2") == (True, 0)  # another address has its own minute
    now[0] += 59.9
    assert quieter.admit("192.0.2.1") == (False, 0)
    now[0] += 0.1
    assert quieter.admit("192.0.2.1") == (True, 3)  # the three refusals since the last record
    assert quieter.admit("192.0.2.1") == (False, 0)
    now[0] += 61
    # Full (two addresses): those quiet for a minute are forgotten, their counts with them.
    assert quieter.admit("192.0.2.3") == (True, 0)
    assert quieter.admit("192.0.2.1") == (True, 0)


def test_per_address_counts_caps_and_forgets() -> None:
    limits = proxy.PerAddress(2)
    assert [limits.admit("192.0.2.1") for _ in range(3)] == [True, True, False]
    assert limits.admit("192.0.2.2")  # another address has its own count
    limits.release("192.0.2.1")
    assert limits.admit("192.0.2.1")  # a freed slot
    limits.release("192.0.2.2")
    assert dict(limits.open) == {"192.0.2.1": 2}  # no key for an address with nothing open
    reply = "421 4.7.0 too many"
    assert limits.refusal("192.0.2.1", reply) == {"result": "refused", "reply": reply, "limit": 2}
    assert limits.refusal("192.0.2.1", reply) is None  # within the minute: counted, not recorded


@pytest.mark.parametrize("tls", [False, True])
async def test_accepted_connections_have_nagle_off(tmp_path: Path, tls: bool) -> None:
    """Replies written in several pieces (a FETCH's literal, then the tagged OK) leave at once: with
    Nagle on, the last piece waits for the client's delayed ACK (40 ms a command on Linux)."""
    from gateway.tls import server_context
    from tests.test_tls import self_signed

    seen: list[int] = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    context = server_context(*self_signed(tmp_path)) if tls else None
    server = proxy.ProxyServer(proxy.bind("127.0.0.1", 0), lambda _client: Probe(), lambda _ip: False, None, context)  # type: ignore[arg-type]
    server.start()
    plain = await asyncio.get_running_loop().create_server(Probe, sock=proxy.bind("127.0.0.1", 0))
    try:
        for port in (server.sockets[0].getsockname()[1], plain.sockets[0].getsockname()[1]):
            client = ssl.create_default_context() if tls and port == server.sockets[0].getsockname()[1] else None
            if client is not None:
                client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
            _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
            writer.close()
        for _ in range(100):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.01)
        assert len(seen) == 2
        assert all(seen), seen
    finally:
        server.close()
        plain.close()


SPRAY_SETTINGS = {
    "MSSGW_LISTEN__PROXY_FROM": '["127.0.0.1"]',
    "MSSGW_AUTH__LOCKOUT_THRESHOLD": "2",
    "MSSGW_AUTH__LOCKOUT_WIDE_THRESHOLD": "4",
    "MSSGW_AUTH__LOCKOUT_BASE_DELAY": "60",
}


def imaps_login_from(running: Running, client: str, user: str, password: str) -> bytes:
    """LOGIN over 993 through the balancer for `client` (a PROXY v1 header): the tagged reply."""
    family = "TCP6" if ":" in client else "TCP4"
    sock = connect(running.ports["imaps"], source="127.0.0.1")
    sock.sendall(f"PROXY {family} {client} {'::1' if ':' in client else '127.0.0.1'} 40000 993\r\n".encode())
    with tls_client(running.node).wrap_socket(sock) as tls:
        assert tls.recv(4096).startswith(b"* OK [CAPABILITY IMAP4rev1")
        tls.sendall(f'a1 LOGIN {user} "{password}"\r\n'.encode())
        return tls.recv(4096).rstrip(b"\r\n")


def test_one_ipv6_subscriber_spraying_from_every_address_of_its_64_is_locked(node: NodeDir) -> None:
    """An IPv6 subscriber holds a /64 at least (2^64 addresses): counted per address, one guesser spraying
    accounts from a new address each time met no per-address limit at all. A /64 counts as one client."""
    r = node.cli(
        "mailbox", "add", DOCTOR, "--type", "PER", "--idnat", "810000000009", "--password-stdin", input=PASSWORD + "\n"
    )
    assert r.code == 0, r.err
    running = start_node(node, env=SPRAY_SETTINGS)
    try:
        failed = b"a1 NO [AUTHENTICATIONFAILED] Authentication failed"
        for n in range(4):  # the wide threshold: 4 accounts, each from another address of 2001:db8:1:2::/64
            got = imaps_login_from(running, f"2001:db8:1:2::{n + 1:x}", f"user{n}@{DOMAIN}", "wrong password")
            assert got == failed
        got = imaps_login_from(running, "2001:db8:1:2:aaaa:bbbb:cccc:dddd", f"user9@{DOMAIN}", "wrong password")
        assert re.fullmatch(rb"a1 NO \[UNAVAILABLE\] Too many failed logins, try again in 6[01] s", got)
        # Another subscriber's /64 is not concerned: the doctor logs in from there.
        assert imaps_login_from(running, "2001:db8:1:3::1", DOCTOR, PASSWORD).startswith(b"a1 OK ")
    finally:
        running.proc.kill()
        running.proc.wait()
    locked = audit(node, "imap.login.locked")
    assert [e["peer"] for e in locked] == ["2001:db8:1:2:aaaa:bbbb:cccc:dddd"]  # the audit keeps the address


def test_one_ipv6_subscriber_meets_one_connection_limit_over_its_64(node: NodeDir) -> None:
    """The per-address connection caps (Postfix's smtpd_client_connection_count_limit, IMAP's) counted each
    IPv6 address apart: one subscriber could hold 50 connections from each of its 2^64 addresses."""
    running = start_node(
        node,
        env={
            "MSSGW_LISTEN__PROXY_FROM": '["127.0.0.1"]',
            "MSSGW_SMTP__MAX_CONNECTIONS_PER_ADDRESS": "2",
            "MSSGW_IMAP__MAX_CONNECTIONS_PER_ADDRESS": "2",
        },
    )
    held: list[socket.socket] = []
    try:
        for n in (1, 2):
            sock = connect(running.ports["submission"], source="127.0.0.1")
            sock.sendall(f"PROXY TCP6 2001:db8:1:2::{n} ::1 40000 587\r\n".encode())
            assert sock.recv(4096).startswith(b"220 ")
            held.append(sock)
            sock = connect(running.ports["imap"], source="127.0.0.1")
            sock.sendall(f"PROXY TCP6 2001:db8:1:2::{n} ::1 40000 143\r\n".encode())
            assert sock.recv(4096).startswith(b"* OK ")
            held.append(sock)
        sock = connect(running.ports["submission"], source="127.0.0.1")
        sock.sendall(b"PROXY TCP6 2001:db8:1:2::3 ::1 40000 587\r\n")
        refused = b"421 4.7.0 mail.ch-test.mssante.fr Error: too many connections from 2001:db8:1:2::3\r\n"
        assert sock.recv(4096) == refused
        sock.close()
        sock = connect(running.ports["imap"], source="127.0.0.1")
        sock.sendall(b"PROXY TCP6 2001:db8:1:2::3 ::1 40000 143\r\n")
        assert sock.recv(4096).startswith(b"* BYE ")
        sock.close()
        sock = connect(running.ports["submission"], source="127.0.0.1")  # another subscriber is served
        sock.sendall(b"PROXY TCP6 2001:db8:1:3::1 ::1 40000 587\r\n")
        assert sock.recv(4096).startswith(b"220 ")
        held.append(sock)
    finally:
        for sock in held:
            sock.close()
        running.proc.kill()
        running.proc.wait()


@pytest.mark.parametrize("balanced", [False, True], ids=["asyncio", "proxy"])
async def test_a_failing_protocol_factory_is_logged(
    node: NodeDir, tmp_path: Path, balanced: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncio drops a protocol factory's exception silently outside its debug mode: the listener logs it,
    on asyncio's own server and on the PROXY-protocol one alike."""
    log_file = tmp_path / "ops.jsonl"
    saved = structlog.get_config()
    state = (oplog._stream, oplog._printer, oplog._level)
    oplog.configure(log_file)

    def failing(client: Address | None) -> asyncio.BaseProtocol:
        raise RuntimeError("no session for you")

    if balanced:
        monkeypatch.setenv("MSSGW_LISTEN__PROXY_FROM", '["127.0.0.1"]')
    cfg = node.cfg()
    try:
        async with Node(cfg) as n:
            server = await listen(n, "imap", failing, host="127.0.0.1", port=0, tls=None)
            try:
                port = server.sockets[0].getsockname()[1]
                _reader, writer = await asyncio.open_connection("127.0.0.1", port)
                if balanced:
                    writer.write(b"PROXY TCP4 192.0.2.9 127.0.0.1 40000 143\r\n")
                    await writer.drain()
                for _ in range(200):
                    if "listener.protocol_failed" in log_file.read_text():
                        break
                    await asyncio.sleep(0.01)
                writer.close()
            finally:
                server.close()
    finally:
        assert oplog._stream is not None
        oplog._stream.close()
        oplog._stream, oplog._printer, oplog._level = state
        structlog.configure(**saved)
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    failed = [line for line in lines if line["event"] == "listener.protocol_failed"]
    assert [(f["component"], f["node"], f["error"]) for f in failed] == [
        ("imap", cfg.node.name, "RuntimeError: no session for you")
    ]
