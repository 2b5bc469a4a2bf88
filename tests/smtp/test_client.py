"""The relay client against real SMTP servers on loopback.

Peers are aiosmtpd servers run in the test's event loop with TLS contexts from a test trust-space PKI
(`gateway.tls.server_context`, client certificates required and checked against the test root); the
relay finds them through a real DNS server (dnsmasq, tests.dns): `peer.test` has MX records
mx1.peer.test (preference 10, 127.0.0.2) and mx2.peer.test (20, 127.0.0.3), both on one port chosen per
test, so failing over from one MX to the next is the production path. Every Result is compared whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Session
from aiosmtpd.smtp import Envelope as ServerEnvelope
from cryptography import x509

from certs.pki import TrustSpacePKI, write_bundle
from gateway.config import Config
from gateway.queue.store import Envelope, Job
from gateway.queue.worker import Result
from gateway.smtp import client as client_module
from gateway.smtp.client import Relayer
from gateway.tls import server_context
from tests.dns import Dnsmasq, Zone, dnsmasq

OUR_HOST = "mail.ch-a.test"
MX1, MX1_IP = "mx1.peer.test", "127.0.0.2"
MX2, MX2_IP = "mx2.peer.test", "127.0.0.3"
SENDER = "claire.martin@ch-a.test"
ALICE, BOB, CAROL = "alice@peer.test", "bob@peer.test", "carol@peer.test"
QUEUED = "250 2.0.0 OK queued"


def make_body(size: int = 10 * 1024, *, eight_bit: bool = True) -> bytes:
    """A CRLF message of exactly `size` octets, with a line starting with a dot (dot-stuffing)."""
    text = "Compte rendu d'échographie" if eight_bit else "Compte rendu"
    head = (
        f"From: <{SENDER}>\r\nTo: <{ALICE}>, <{BOB}>\r\nSubject: {text}\r\nMessage-ID: <1@ch-a.test>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        f"{text}\r\n.a line starting with a dot\r\n"
    ).encode()
    lines = [head]
    n = 0
    while sum(map(len, lines)) + 80 < size:
        lines.append(f"ligne {n:05d} {'x' * 64}\r\n".encode())
        n += 1
    rest = size - sum(map(len, lines))
    lines.append(b"z" * (rest - 2) + b"\r\n")
    body = b"".join(lines)
    assert len(body) == size
    return body


BODY = make_body()


@dataclass(frozen=True)
class Bundle:
    fullchain: Path
    key: Path


@dataclass(frozen=True)
class Material:
    trust: Path  # the trust space's PKI directory
    root: Path
    foreign_root: Path
    ours: Bundle
    mx1: Bundle
    mx2: Bundle
    wrong_name: Bundle
    foreign_mx1: Bundle
    mx1_ip: Bundle


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Material:
    base = tmp_path_factory.mktemp("pki")
    trust = TrustSpacePKI.create(base / "trust", label="TEST TRUST", crl_base_url="http://crl.trust.test")
    foreign = TrustSpacePKI.create(base / "foreign", label="FOREIGN", crl_base_url="http://crl.foreign.test")

    def bundle(pki: TrustSpacePKI, host: str, name: str) -> Bundle:
        paths = write_bundle(pki.issue_server([host]), base / name, root=pki.root)
        return Bundle(paths["fullchain"], paths["key"])

    ours = bundle(trust, OUR_HOST, "ours")
    foreign_mx1 = bundle(foreign, MX1, "foreign-mx1")
    return Material(
        trust=trust.path,
        root=ours.fullchain.parent / "root.pem",
        foreign_root=foreign_mx1.fullchain.parent / "root.pem",
        ours=ours,
        mx1=bundle(trust, MX1, "mx1"),
        mx2=bundle(trust, MX2, "mx2"),
        wrong_name=bundle(trust, "other.peer.test", "wrong"),
        foreign_mx1=foreign_mx1,
        mx1_ip=bundle(trust, MX1_IP, "mx1-ip"),
    )


MANY = [(f"m{n}.many.test", [f"127.0.0.{10 + 2 * n}", f"127.0.0.{11 + 2 * n}"]) for n in range(12)]
ZONE = Zone(
    mx=[("peer.test", MX1, 10), ("peer.test", MX2, 20), ("dangling.test", "ghost.dangling.test", 10)]
    + [("many.test", host, 10 + n) for n, (host, _) in enumerate(MANY)],
    hosts=[(MX1, MX1_IP), (MX2, MX2_IP)] + [(host, ip) for host, ips in MANY for ip in ips],
    null_mx=["nullmx.test"],
)


@pytest.fixture(scope="module")
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dnsmasq]:
    with dnsmasq(ZONE, tmp_path_factory.mktemp("dns")) as server:
        yield server


@pytest.fixture
def port() -> int:
    """A TCP port free on both MX addresses (MX records carry no port: both servers share it)."""
    for _ in range(50):
        with socket.socket() as a, socket.socket() as b:
            a.bind((MX1_IP, 0))
            p = int(a.getsockname()[1])
            try:
                b.bind((MX2_IP, p))
            except OSError:
                continue
            return p
    raise RuntimeError("no common free port on 127.0.0.2 and 127.0.0.3")


# ----------------------------------------------------------------------------- peer servers


@dataclass
class Received:
    helo: str | None
    mail_from: str | None
    mail_options: list[str]
    rcpt_tos: list[str]
    content: bytes | None
    peer_dns_names: tuple[str, ...]
    tls_version: str | None


def _peer_names(session: Session) -> tuple[str, ...]:
    cert: Any = (session.ssl or {}).get("peercert") or {}
    return tuple(value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS")


@dataclass
class Peer:
    """An aiosmtpd handler recording what it is sent, answering as told."""

    rcpt_replies: dict[str, str] = field(default_factory=dict)
    mail_reply: str | None = None
    data_reply: str = QUEUED
    mail_lines: list[str] = field(default_factory=list)
    rcpts_seen: list[str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    mail_reply_once: str | None = None
    sessions: list[SMTP] = field(default_factory=list)  # every connection, in order
    quits: int = 0

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: ServerEnvelope, address: str, mail_options: list[str]
    ) -> str:
        if self.mail_reply_once is not None:
            reply, self.mail_reply_once = self.mail_reply_once, None
            return reply
        if self.mail_reply is not None:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: ServerEnvelope, address: str, rcpt_options: list[str]
    ) -> str:
        self.rcpts_seen.append(address)
        reply = self.rcpt_replies.get(address, "250 2.1.5 OK")
        if reply.startswith("2"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: ServerEnvelope) -> str:
        cipher = (session.ssl or {}).get("cipher")
        self.received.append(
            Received(
                helo=session.host_name,
                mail_from=envelope.mail_from,
                mail_options=list(envelope.mail_options),
                rcpt_tos=list(envelope.rcpt_tos),
                content=envelope.original_content,
                peer_dns_names=_peer_names(session),
                tls_version=cipher[1] if cipher else None,
            )
        )
        return self.data_reply


class RecordingSMTP(SMTP):
    """aiosmtpd's SMTP, keeping the MAIL command lines as received."""

    def __init__(self, handler: Peer, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.peer = handler
        handler.sessions.append(self)

    async def smtp_QUIT(self, arg: str) -> None:
        self.peer.quits += 1
        await super().smtp_QUIT(arg)

    async def smtp_MAIL(self, arg: str | None) -> None:
        self.peer.mail_lines.append(f"MAIL {arg}")
        await super().smtp_MAIL(arg)


def tls_for(bundle: Bundle, client_root: Path) -> ssl.SSLContext:
    """A peer operator's listener context: its certificate, client certificates required from `client_root`."""
    ctx = server_context(bundle.fullchain, bundle.key, client_ca=client_root, require_client_cert=True)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    return ctx


@contextlib.asynccontextmanager
async def serve(
    ip: str, port: int, handler: Peer, tls: ssl.SSLContext | None, *, name: str, **kwargs: Any
) -> AsyncIterator[Peer]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: RecordingSMTP(handler, hostname=name, tls_context=tls, require_starttls=tls is not None, **kwargs),
        ip,
        port,
    )
    try:
        yield handler
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def silent(ip: str, port: int) -> AsyncIterator[None]:
    """Accepts connections and never says a word."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(hold, ip, port)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


# ----------------------------------------------------------------------------- the relay side


def relayer(pki: Material, dns: Dnsmasq, port: int, **kwargs: Any) -> Relayer:
    settings: dict[str, Any] = {
        "trust_anchor": pki.root,
        "cert_chain": pki.ours.fullchain,
        "key": pki.ours.key,
        "helo_name": OUR_HOST,
        "resolver": dns.address,
        "port": port,
        "connect_timeout": 5.0,
        "command_timeout": 5.0,
        "data_timeout": 5.0,
        "dns_lifetime": 3.0,
    }
    settings.update(kwargs)
    return Relayer(**settings)


def envelope(sender: str = SENDER) -> Envelope:
    return Envelope("q0123", "submission", sender, SENDER, None, "<1@ch-a.test>", len(BODY), datetime.now(UTC))


def jobs(env: Envelope, *recipients: str) -> list[Job]:
    return [Job(i + 1, r, r.rsplit("@", 1)[1], False, 0, env, "test") for i, r in enumerate(recipients)]


async def relay(
    r: Relayer, *recipients: str, sender: str = SENDER, body: bytes = BODY, domain: str = "peer.test"
) -> list[Result]:
    env = envelope(sender)
    return await r(domain, env, jobs(env, *recipients), body)


def delivered(rcpt: str, host: str = MX1) -> Result:
    return Result(rcpt, True, False, "2.0.0", f"smtp; {QUEUED}", host)


# ----------------------------------------------------------------------------- tests


async def test_relays_a_10kb_message_to_two_recipients(pki: Material, dns_server: Dnsmasq, port: int) -> None:
    async with serve(MX1_IP, port, Peer(), tls_for(pki.mx1, pki.root), name=MX1) as peer:
        results = await relay(relayer(pki, dns_server, port), ALICE, BOB)
    assert results == [delivered(ALICE), delivered(BOB)]
    assert peer.received == [
        Received(
            helo=OUR_HOST,
            mail_from=SENDER,
            mail_options=["SIZE=10240", "BODY=8BITMIME"],
            rcpt_tos=[ALICE, BOB],
            content=BODY,
            peer_dns_names=(OUR_HOST,),
            tls_version="TLSv1.3",
        )
    ]
    assert peer.mail_lines == [f"MAIL FROM:<{SENDER}> SIZE=10240 BODY=8BITMIME"]


async def test_mixed_recipient_replies(pki: Material, dns_server: Dnsmasq, port: int) -> None:
    replies = {BOB: "450 mailbox busy", CAROL: "550 5.1.1 no such mailbox"}
    async with serve(MX1_IP, port, Peer(rcpt_replies=replies), tls_for(pki.mx1, pki.root), name=MX1) as peer:
        results = await relay(relayer(pki, dns_server, port), ALICE, BOB, CAROL)
    assert results == [
        delivered(ALICE),
        Result(BOB, False, False, "4.0.0", "smtp; 450 mailbox busy", MX1),
        Result(CAROL, False, True, "5.1.1", "smtp; 550 5.1.1 no such mailbox", MX1),
    ]
    assert peer.rcpts_seen == [ALICE, BOB, CAROL]
    assert [(r.rcpt_tos, r.content) for r in peer.received] == [([ALICE], BODY)]


async def test_no_recipient_accepted_sends_no_data(pki: Material, dns_server: Dnsmasq, port: int) -> None:
    replies = {ALICE: "550 5.1.1 no such mailbox", BOB: "452 4.2.2 mailbox full"}
    async with serve(MX1_IP, port, Peer(rcpt_replies=replies), tls_for(pki.mx1, pki.root), name=MX1) as peer:
        results = await relay(relayer(pki, dns_server, port), ALICE, BOB)
    assert results == [
        Result(ALICE, False, True, "5.1.1", "smtp; 550 5.1.1 no such mailbox", MX1),
        Result(BOB, False, False, "4.2.2", "smtp; 452 4.2.2 mailbox full", MX1),
    ]
    assert peer.received == []


async def test_data_refused_applies_to_accepted_recipients(pki: Material, dns_server: Dnsmasq, port: int) -> None:
    handler = Peer(rcpt_replies={BOB: "550 5.1.1 no such mailbox"}, data_reply="554 5.6.0 content refused")
    async with serve(MX1_IP, port, handler, tls_for(pki.mx1, pki.root), name=MX1):
        results = await relay(relayer(pki, dns_server, port), ALICE, BOB)
    assert results == [
        Result(ALICE, False, True, "5.6.0", "smtp; 554 5.6.0 content refused", MX1),
        Result(BOB, False, True, "5.1.1", "smtp; 550 5.1.1 no such mailbox", MX1),
    ]


@pytest.mark.parametrize(
    ("reply", "permanent", "status"),
    [("550 5.7.1 sender not allowed", True, "5.7.1"), ("451 4.3.0 try again later", False, "4.3.0")],
)
async def test_mail_from_refused_applies_to_all(
    pki: Material, dns_server: Dnsmasq, port: int, reply: str, permanent: bool, status: str
) -> None:
    async with serve(MX1_IP, port, Peer(mail_reply=reply), tls_for(pki.mx1, pki.root), name=MX1) as peer:
        results = await relay(relayer(pki, dns_server, port), ALICE, BOB)
    assert results == [Result(r, False, permanent, status, f"smtp; {reply}", MX1) for r in (ALICE, BOB)]
    assert peer.rcpts_seen == []
    assert peer.received == []


async def test_null_sender_is_relayed_as_empty_reverse_path(pki: Material, dns_server: Dnsmasq, port: int) -> None:
    body = make_body(4000, eight_bit=False)
    async with serve(MX1_IP, port, Peer(), tls_for(pki.mx1, pki.root), name=MX1) as peer:
        results = await relay(relayer(pki, dns_server, port), ALICE, sender="", body=body)
    assert results == [delivered(ALICE)]
    assert peer.mail_lines == ["MAIL FROM:<> SIZE=4000"]
    # aiosmtpd hands the null reverse-path to its handler as "<>".
    assert [(r.mail_from, r.rcpt_tos, r.content) for r in peer.received] == [("<>", [ALICE], body)]


async def test_message_over_the_peer_size_limit_fails_without_data(
    pki: Material, dns_server: Dnsmasq, port: int
) -> None:
    async with serve(MX1_IP, port, Peer(), tls_for(pki.mx1, pki.root), name=MX1, data_size_limit=5000) as peer:
        results = await relay(relayer(pki, dns_server, port), ALICE)
    diag = "smtp; 552 5.3.4 message of 10240 octets exceeds the 5000-octet limit of mx1.peer.test"
    assert results == [Result(ALICE, False, True, "5.3.4", diag, MX1)]
    assert peer.mail_lines == []


async def test_untrusted_certificate_then_next_mx(pki: Material, dns_server: Dnsmasq, port: int) -> None:
    async with (
        serve(MX1_IP, port, Peer(), tls_for(pki.foreign_mx1, pki.root), name=MX1) as first,
        serve(MX2_IP, port, Peer(), tls_for(pki.mx2, pki.root), name=MX2) as second,
    ):
        results = await relay(relayer(pki, dns_server, port), ALICE, BOB)
    assert results == [delivered(ALICE, MX2), delivered(BOB, MX2)]
    assert first.mail_lines == []
    assert [(r.rcpt_tos, r.content) for r in second.received] == [([ALICE, BOB], BODY)]


UNTRUSTED = "smtp; 451 4.7.5 TLS certificate of mx1.peer.test not trusted: unable to get local issuer certificate"


async def test_untrusted_certificate_everywhere_is_a_temporary_failure(
    pki: Material, dns_server: Dnsmasq, port: int
) -> None:
    # mx1 presents a certificate of another CA, mx2 refuses connections: the TLS failure, which got
    # further, is the one reported.
    async with serve(MX1_IP, port, Peer(), tls_for(pki.foreign_mx1, pki.root), name=MX1) as peer:
        results = await relay(relayer(pki, dns_server, port), ALICE, BOB)
    assert results == [Result(r, False, False, "4.7.5", UNTRUSTED, MX1) for r in (ALICE, BOB)]
    assert peer.mail_lines == []


async def test_the_furthest_failure_is_reported_even_from_a_backup(
    pki: Material, dns_server: Dnsmasq, port: int
) -> None:
    async with serve(MX2_IP, port, Peer(), tls_for(pki.wrong_name, pki.root), name=MX2) as peer:
        results = await relay(relayer(pki, dns_server, port), ALICE)
    diag = (
        "smtp; 451 4.7.5 TLS certificate of mx2.peer.test does not name it: "
        "Hostname mismatch, certificate is not valid for 'mx2.peer.test'."
    )
    assert results == [Result(ALICE, False, False, "4.7.5", diag, MX2)]
    assert peer.mail_lines == []


async def test_certificate_not_naming_the_host_is_refused(pki: Material, dns_server: Dnsmasq, port: int) -> None:
    # A static route to mx1.peer.test, whose certificate names other.peer.test (from the right CA).
    r = relayer(pki, dns_server, port, routes={"peer.test": f"{MX1}:{port}"})
    async with serve(MX1_IP, port, Peer(), tls_for(pki.wrong_name, pki.root), name=MX1) as peer:
        results = await relay(r, ALICE)
    diag = (
        "smtp; 451 4.7.5 TLS certificate of mx1.peer.test does not name it: "
        "Hostname mismatch, certificate is not valid for 'mx1.peer.test'."
    )
    assert results == [Result(ALICE, False, False, "4.7.5", diag, MX1)]
    assert peer.mail_lines == []


async def test_route_to_an_ip_address_checks_the_ip_san(pki: Material, dns_server: Dnsmasq, port: int) -> None:
    # `mssgw demo` routes to 127.0.0.1:port, and node certificates carry the listen address as iPAddress.
    r = relayer(pki, dns_server, port, routes={"peer.test": f"{MX1_IP}:{port}"})
    async with serve(MX1_IP, port, Peer(), tls_for(pki.mx1_ip, pki.root), name=MX1) as peer:
        results = await relay(r, ALICE)
    assert results == [delivered(ALICE, MX1_IP)]
    assert [x.rcpt_tos for x in peer.received] == [[ALICE]]
    async with serve(MX1_IP, port, Peer(), tls_for(pki.mx1, pki.root), name=MX1) as peer:
        results = await relay(r, ALICE)
    diag = (
        "smtp; 451 4.7.5 TLS certificate of 127.0.0.2 does not name it: "
        "IP address mismatch, certificate is not valid for '127.0.0.2'."
    )
    assert results == [Result(ALICE, False, False, "4.7.5", diag, MX1_IP)]
    assert peer.mail_lines == []


async def test_server_without_starttls_is_refused(pki: Material, dns_server: Dnsmasq, port: int) -> None:
    r = relayer(pki, dns_server, port, routes={"peer.test": f"{MX1}:{port}"})
    async with serve(MX1_IP, port, Peer(), None, name=MX1) as peer:
        results = await relay(r, ALICE, BOB)
    diag = "smtp; 451 4.7.4 mx1.peer.test does not offer STARTTLS"
    assert results == [Result(rcpt, False, False, "4.7.4", diag, MX1) for rcpt in (ALICE, BOB)]
    assert peer.mail_lines == []
    assert peer.received == []


async def test_connection_refused_then_next_mx(pki: Material, dns_server: Dnsmasq, port: int) -> None:
    async with serve(MX2_IP, port, Peer(), tls_for(pki.mx2, pki.root), name=MX2) as peer:
        results = await relay(relayer(pki, dns_server, port), ALICE)
    assert results == [delivered(ALICE, MX2)]
    assert [r.rcpt_tos for r in peer.received] == [[ALICE]]


async def test_every_connection_refused(pki: Material, dns_server: Dnsmasq, port: int) -> None:
    results = await relay(relayer(pki, dns_server, port), ALICE)
    diag = f"smtp; 451 4.4.1 connection to mx1.peer.test[127.0.0.2]:{port} refused"
    assert results == [Result(ALICE, False, False, "4.4.1", diag, MX1)]


async def test_at_most_five_addresses_are_tried_for_a_delivery(pki: Material, dns_server: Dnsmasq, port: int) -> None:
    """many.test names 12 MX hosts of two addresses each, every one closing the connection at once: the
    delivery tries 5 addresses (of the first three hosts, in preference order), then fails for now, rather
    than spend a connection and its timeouts on each of the 24 (records are the peer's to choose)."""
    tried: list[str] = []

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tried.append(writer.get_extra_info("sockname")[0])
        writer.close()

    servers = [await asyncio.start_server(hang_up, ip, port) for _, ips in MANY for ip in ips]
    try:
        results = await relay(relayer(pki, dns_server, port), "x@many.test", domain="many.test")
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()
    # hosts in preference order; a host's addresses in the order the DNS server gave them
    assert [sorted(tried[:2]), sorted(tried[2:4]), tried[4:]] in ([MANY[0][1], MANY[1][1], [ip]] for ip in MANY[2][1])
    assert [(r.ok, r.permanent, r.remote_mta) for r in results] == [(False, False, "m0.many.test")]


async def test_silent_server_times_out(pki: Material, dns_server: Dnsmasq, port: int) -> None:
    r = relayer(pki, dns_server, port, routes={"peer.test": f"{MX1}:{port}"}, command_timeout=0.5)
    async with silent(MX1_IP, port):
        results = await relay(r, ALICE)
    diag = f"smtp; 451 4.4.1 no greeting from mx1.peer.test[127.0.0.2]:{port} within 0.5 s"
    assert results == [Result(ALICE, False, False, "4.4.1", diag, MX1)]


async def test_peer_refusing_our_certificate(pki: Material, dns_server: Dnsmasq, port: int) -> None:
    # The peer only accepts client certificates of another trust space: ours is refused.
    r = relayer(pki, dns_server, port, routes={"peer.test": f"{MX1}:{port}"})
    async with serve(MX1_IP, port, Peer(), tls_for(pki.mx1, pki.foreign_root), name=MX1) as peer:
        results = await relay(r, ALICE)
    # The server's alert arrives before EHLO is sent (no detail left) or while its reply is awaited.
    lost = "smtp; 451 4.4.2 connection to mx1.peer.test lost after STARTTLS"
    assert results in (
        [Result(ALICE, False, False, "4.4.2", f"{lost} (the peer may have refused our client certificate)", MX1)],
        [Result(ALICE, False, False, "4.4.2", f"{lost}: TLSV1_ALERT_UNKNOWN_CA", MX1)],
    )
    assert peer.mail_lines == []


def crl_cache(trust: TrustSpacePKI, directory: Path, *cas: str) -> Path:
    """`directory` holding the current DER CRLs of `cas` only, as an external PKI's crl-cache/ does."""
    directory.mkdir(exist_ok=True)
    for ca in cas:
        (directory / f"{ca}.crl").write_bytes((trust.path / "crl" / f"{ca}.crl").read_bytes())
    return directory


REVOKED = "smtp; 451 4.7.5 TLS certificate of mx1.peer.test not trusted: certificate revoked"


async def test_a_peer_certificate_revoked_since_the_last_session_fails_the_next_handshake(
    pki: Material, dns_server: Dnsmasq, port: int, tmp_path: Path
) -> None:
    trust = TrustSpacePKI(pki.trust)
    issued = trust.issue_server([MX1])
    paths = write_bundle(issued, tmp_path / "mx1", root=trust.root)
    mx1 = Bundle(paths["fullchain"], paths["key"])
    crls = crl_cache(trust, tmp_path / "crl", "root", "organisations", "personnes")
    r = relayer(pki, dns_server, port, crl_dir=crls, reuse=30)
    async with serve(MX1_IP, port, Peer(), tls_for(mx1, pki.root), name=MX1) as peer:
        assert await relay(r, ALICE) == [delivered(ALICE)]  # valid until revoked; the session is kept
        trust.revoke(issued.serial, x509.ReasonFlags.key_compromise)
        trust.publish_crls()
        crl_cache(trust, crls, "organisations")  # the CRL fetched anew: the kept session is not used again
        assert await relay(r, BOB) == [Result(BOB, False, False, "4.7.5", REVOKED, MX1)]
        assert len(peer.sessions) == 2
        async with serve(MX2_IP, port, Peer(), tls_for(pki.mx2, pki.root), name=MX2) as backup:
            assert await relay(r, CAROL) == [delivered(CAROL, MX2)]  # mx2's certificate is not revoked
    assert [x.rcpt_tos for x in peer.received] == [[ALICE]]
    assert [x.rcpt_tos for x in backup.received] == [[CAROL]]


async def test_a_peer_certificate_whose_ca_has_no_crl_fails_closed(
    pki: Material, dns_server: Dnsmasq, port: int, tmp_path: Path
) -> None:
    # Only the root's CRL: mx1's issuing CA has none here, so its certificate cannot be judged.
    crls = crl_cache(TrustSpacePKI(pki.trust), tmp_path / "crl", "root")
    r = relayer(pki, dns_server, port, crl_dir=crls)
    async with serve(MX1_IP, port, Peer(), tls_for(pki.mx1, pki.root), name=MX1) as peer:
        results = await relay(r, ALICE)
    diag = "smtp; 451 4.7.5 TLS certificate of mx1.peer.test not trusted: unable to get certificate CRL"
    assert results == [Result(ALICE, False, False, "4.7.5", diag, MX1)]
    assert peer.mail_lines == []


async def test_a_crl_directory_without_crls_fails_closed_and_none_configured_checks_none(
    pki: Material, dns_server: Dnsmasq, port: int, tmp_path: Path
) -> None:
    # A configured directory still empty (crl-cache/ before its first fetch): no chain can be judged.
    r = relayer(pki, dns_server, port, crl_dir=tmp_path / "crl-cache")
    async with serve(MX1_IP, port, Peer(), tls_for(pki.mx1, pki.root), name=MX1) as peer:
        results = await relay(r, ALICE)
    diag = "smtp; 451 4.7.5 TLS certificate of mx1.peer.test not trusted: unable to get certificate CRL"
    assert results == [Result(ALICE, False, False, "4.7.5", diag, MX1)]
    assert peer.mail_lines == []
    # An external PKI naming no CRL source at all: the chain alone decides.
    r = relayer(pki, dns_server, port, crl_dir=None)
    async with serve(MX1_IP, port, Peer(), tls_for(pki.mx1, pki.root), name=MX1):
        assert await relay(r, ALICE) == [delivered(ALICE)]


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        (
            "nowhere.test",
            (True, "5.1.2", "smtp; 550 5.1.2 bad destination system: domain nowhere.test does not exist"),
        ),
        ("nullmx.test", (True, "5.1.10", "smtp; 556 5.1.10 domain nullmx.test accepts no mail (null MX)")),
    ],
)
async def test_routing_failures_become_results(
    pki: Material, dns_server: Dnsmasq, port: int, domain: str, expected: tuple[bool, str, str]
) -> None:
    permanent, status, diag = expected
    results = await relay(relayer(pki, dns_server, port), f"alice@{domain}", f"bob@{domain}", domain=domain)
    assert results == [Result(f"{r}@{domain}", False, permanent, status, diag, None) for r in ("alice", "bob")]


async def test_built_from_the_node_config(pki: Material, dns_server: Dnsmasq, port: int, tmp_path: Path) -> None:
    cfg = Config(
        node={"domain": "ch-a.test"},
        pki={"trust_anchor": pki.root, "cert": pki.ours.fullchain, "key": pki.ours.key},
        queue={"routes": {"peer.test": f"{MX1}:{port}"}, "resolver": dns_server.address},
        base_dir=tmp_path,
    )
    r = Relayer(cfg)
    assert (r.helo_name, r.routes, r.resolver, r.port) == (
        OUR_HOST,
        {"peer.test": f"{MX1}:{port}"},
        dns_server.address,
        25,
    )
    assert (r.connect_timeout, r.command_timeout, r.data_timeout) == (30.0, 300.0, 600.0)
    async with serve(MX1_IP, port, Peer(), tls_for(pki.mx1, pki.root), name=MX1) as peer:
        results = await relay(r, ALICE)
    assert results == [delivered(ALICE)]
    assert [(x.helo, x.peer_dns_names) for x in peer.received] == [(OUR_HOST, (OUR_HOST,))]


async def test_mx_host_without_address_is_a_temporary_failure(pki: Material, dns_server: Dnsmasq, port: int) -> None:
    results = await relay(relayer(pki, dns_server, port), "alice@dangling.test", domain="dangling.test")
    diag = "smtp; 451 4.4.4 unable to route: host ghost.dangling.test does not exist"
    assert results == [Result("alice@dangling.test", False, False, "4.4.4", diag, "ghost.dangling.test")]


# ----------------------------------------------------------------------------- kept sessions


async def test_a_session_carries_the_next_messages_then_quits_at_close(
    pki: Material, dns_server: Dnsmasq, port: int
) -> None:
    async with serve(MX1_IP, port, Peer(), tls_for(pki.mx1, pki.root), name=MX1) as peer:
        r = relayer(pki, dns_server, port, reuse=5.0)
        got = [await relay(r, ALICE), await relay(r, BOB), await relay(r, CAROL)]
        assert got == [[delivered(ALICE)], [delivered(BOB)], [delivered(CAROL)]]
        assert [m.rcpt_tos for m in peer.received] == [[ALICE], [BOB], [CAROL]]
        assert len(peer.sessions) == 1  # one connection, one TLS handshake
        assert peer.quits == 0
        await r.close()
        assert peer.quits == 1


async def test_no_reuse_is_a_session_per_message(pki: Material, dns_server: Dnsmasq, port: int) -> None:
    async with serve(MX1_IP, port, Peer(), tls_for(pki.mx1, pki.root), name=MX1) as peer:
        r = relayer(pki, dns_server, port, reuse=0)
        assert [await relay(r, ALICE), await relay(r, BOB)] == [[delivered(ALICE)], [delivered(BOB)]]
        assert (len(peer.sessions), peer.quits) == (2, 2)


async def test_a_kept_session_closed_by_the_peer_is_replaced(pki: Material, dns_server: Dnsmasq, port: int) -> None:
    async with serve(MX1_IP, port, Peer(), tls_for(pki.mx1, pki.root), name=MX1) as peer:
        r = relayer(pki, dns_server, port, reuse=5.0)
        assert await relay(r, ALICE) == [delivered(ALICE)]
        assert peer.sessions[0].transport is not None
        peer.sessions[0].transport.close()  # the peer's idle timeout, a restart
        await asyncio.sleep(0.1)
        assert await relay(r, BOB) == [delivered(BOB)]
        assert [m.rcpt_tos for m in peer.received] == [[ALICE], [BOB]]  # each once
        assert len(peer.sessions) == 2
        await r.close()


@pytest.mark.parametrize(
    "reply",
    [
        "421 4.3.2 This server is stopping",
        # a peer that still holds a transaction open answers MAIL with 503
        "503 5.5.1 Error: nested MAIL command",
    ],
)
async def test_a_kept_session_answering_421_or_503_is_replaced(
    pki: Material, dns_server: Dnsmasq, port: int, reply: str
) -> None:
    """The message goes on a new session, sent once."""
    async with serve(MX1_IP, port, Peer(), tls_for(pki.mx1, pki.root), name=MX1) as peer:
        r = relayer(pki, dns_server, port, reuse=5.0)
        assert await relay(r, ALICE) == [delivered(ALICE)]
        peer.mail_reply_once = reply
        assert await relay(r, BOB) == [delivered(BOB)]
        assert peer.mail_lines == [f"MAIL FROM:<{SENDER}> SIZE=10240 BODY=8BITMIME"] * 3
        assert [m.rcpt_tos for m in peer.received] == [[ALICE], [BOB]]
        assert len(peer.sessions) == 2
        await r.close()


async def test_a_session_whose_data_was_refused_is_not_kept(pki: Material, dns_server: Dnsmasq, port: int) -> None:
    refusing = Peer(data_reply="451 4.3.0 try again later")
    async with serve(MX1_IP, port, refusing, tls_for(pki.mx1, pki.root), name=MX1) as peer:
        r = relayer(pki, dns_server, port, reuse=5.0)
        diag = "smtp; 451 4.3.0 try again later"
        assert await relay(r, ALICE) == [Result(ALICE, False, False, "4.3.0", diag, MX1)]
        assert peer.quits == 1  # ended, not kept
        peer.data_reply = QUEUED
        assert await relay(r, BOB) == [delivered(BOB)]
        assert len(peer.sessions) == 2
        await r.close()


async def test_a_421_on_a_new_session_is_the_result(pki: Material, dns_server: Dnsmasq, port: int) -> None:
    async with serve(MX1_IP, port, Peer(), tls_for(pki.mx1, pki.root), name=MX1) as peer:
        r = relayer(pki, dns_server, port, reuse=5.0)
        peer.mail_reply_once = "421 4.3.2 This server is stopping"
        diag = "smtp; 421 4.3.2 This server is stopping"
        assert await relay(r, ALICE) == [Result(ALICE, False, False, "4.3.2", diag, MX1)]
        assert len(peer.sessions) == 1
        await r.close()


async def test_idle_sessions_end_after_the_reuse_time(pki: Material, dns_server: Dnsmasq, port: int) -> None:
    async with serve(MX1_IP, port, Peer(), tls_for(pki.mx1, pki.root), name=MX1) as peer:
        r = relayer(pki, dns_server, port, reuse=0.3)
        assert await relay(r, ALICE) == [delivered(ALICE)]
        await asyncio.sleep(1.0)
        assert peer.quits == 1  # the sweep said goodbye
        assert await relay(r, BOB) == [delivered(BOB)]
        assert len(peer.sessions) == 2
        await r.close()


async def test_a_session_is_not_reused_past_its_age(
    pki: Material, dns_server: Dnsmasq, port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "REUSE_AGE", 0.3)
    async with serve(MX1_IP, port, Peer(), tls_for(pki.mx1, pki.root), name=MX1) as peer:
        r = relayer(pki, dns_server, port, reuse=5.0)
        assert await relay(r, ALICE) == [delivered(ALICE)]
        await asyncio.sleep(0.4)
        assert await relay(r, BOB) == [delivered(BOB)]
        assert len(peer.sessions) == 2  # the certificate is judged again by a new handshake
        assert peer.quits == 1
        await r.close()
        assert peer.quits == 2


async def test_sessions_are_kept_per_host(pki: Material, dns_server: Dnsmasq, port: int) -> None:
    """A session kept with the backup MX is not used once the primary answers again."""
    async with serve(MX2_IP, port, Peer(), tls_for(pki.mx2, pki.root), name=MX2) as two:
        r = relayer(pki, dns_server, port, reuse=5.0)
        assert await relay(r, ALICE) == [delivered(ALICE, MX2)]  # mx1 refuses connections: mx2
        async with serve(MX1_IP, port, Peer(), tls_for(pki.mx1, pki.root), name=MX1) as one:
            assert await relay(r, BOB) == [delivered(BOB)]  # mx1 first, on a new session
            assert await relay(r, CAROL) == [delivered(CAROL)]  # mx1's kept session
            assert (len(one.sessions), len(two.sessions)) == (1, 1)
            assert [m.rcpt_tos for m in one.received] == [[BOB], [CAROL]]
            await r.close()
            assert (one.quits, two.quits) == (1, 1)
