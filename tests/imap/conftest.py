"""A running node with its IMAP listeners, fresh mailboxes per test, and clients to talk to it."""

from __future__ import annotations

import asyncio
import imaplib
import re
import secrets
import socket
import ssl
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from gateway.auth.passwords import hash_password
from gateway.node import Node
from gateway.store.mailstore import Mailstore
from gateway.store.messages import MessageStore
from tests.conftest import DOMAIN, NodeDir, copy_node
from tests.smtp.conftest import PASSWORD, Gateway, serve

T0 = datetime(2026, 3, 2, 9, 15, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def imap_gw(template_node: NodeDir, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    node = copy_node(template_node, tmp_path_factory.mktemp("imap") / "node")
    yield from serve(node)


def run(node: NodeDir, job: object) -> object:
    async def go() -> object:
        async with Node(node.cfg()) as n:
            return await job(n)  # type: ignore[operator]

    return asyncio.run(go())


@dataclass
class Box:
    """A fresh mailbox of the running node, and ways to fill it from outside the server."""

    gw: Gateway
    address: str

    def put(self, raw: bytes, folder: str = "INBOX", flags: Iterable[str] = (), when: datetime = T0) -> int:
        async def job(n: Node) -> int:
            box = Mailstore(MessageStore(n.mailboxes))
            return (await box.append(self.address, folder, raw, flags=flags, internal_date=when))[1]

        return int(run(self.gw.node, job))  # type: ignore[call-overload]

    def login(self, *, tls: str = "starttls") -> imaplib.IMAP4:
        client = connect(self.gw, tls=tls)
        client.login(self.address, PASSWORD)
        return client

    def raw(self) -> Raw:
        """A byte-exact client, after STARTTLS, logged in as this mailbox."""
        raw = Raw(self.gw)
        reply = raw.command("l", f'LOGIN {self.address} "{PASSWORD}"')
        assert reply[-1].startswith(b"l OK"), reply
        return raw

    def selected(self, folder: str = "INBOX") -> Raw:
        """`raw()` with `folder` selected read-write."""
        raw = self.raw()
        assert raw.command("s", f"SELECT {folder}")[-1] == b"s OK [READ-WRITE] SELECT completed"
        return raw


@pytest.fixture
def box(imap_gw: Gateway) -> Box:
    address = f"boite-{secrets.token_hex(4)}@{DOMAIN}"

    async def job(n: Node) -> None:
        await n.mailboxes.create(address, "ORG", service="Tests IMAP", password_hash=hash_password(PASSWORD))

    run(imap_gw.node, job)
    return Box(imap_gw, address)


def uidvalidity(raw: Raw, name: str) -> int:
    """The UIDVALIDITY of folder `name`, by STATUS."""
    reply = raw.command("uv", f"STATUS {name} (UIDVALIDITY)")
    found = re.fullmatch(rb"\* STATUS \S+ \(UIDVALIDITY (\d+)\)", reply[0])
    assert found is not None, reply
    return int(found[1])


def tls_context(gw: Gateway) -> ssl.SSLContext:
    return gw.tls()


def connect(gw: Gateway, *, tls: str = "starttls") -> imaplib.IMAP4:
    if tls == "implicit":
        return imaplib.IMAP4_SSL("127.0.0.1", gw.port("imaps"), ssl_context=gw.tls(), timeout=30)
    client = imaplib.IMAP4("127.0.0.1", gw.port("imap"), timeout=30)
    if tls == "starttls":
        client.starttls(ssl_context=gw.tls())
    return client


def message(n: int = 1, subject: str | None = None, body: str = "Compte rendu de consultation.") -> bytes:
    return (
        f"From: Dr Claire Martin <claire.martin@{DOMAIN}>\r\n"
        f"To: secretariat@{DOMAIN}\r\n"
        f"Subject: {subject or f'message {n}'}\r\n"
        f"Date: Mon, 02 Mar 2026 10:15:30 +0100\r\n"
        f"Message-ID: <m{n}.{secrets.token_hex(3)}@{DOMAIN}>\r\n"
        "\r\n"
        f"{body}\r\n"
    ).encode()


class Raw:
    """A byte-exact IMAP client (after STARTTLS, or in clear), for dialogues imaplib will not produce."""

    def __init__(self, gw: Gateway, *, tls: bool = True) -> None:
        plain = socket.create_connection(("127.0.0.1", gw.port("imap")), timeout=30)
        self.sock: socket.socket = plain
        self.file = plain.makefile("rb")
        self.greeting = self.line()
        if tls:
            self.send(b"t0 STARTTLS\r\n")
            assert self.line() == b"t0 OK Begin TLS negotiation now"
            self.sock = gw.tls().wrap_socket(plain)
            self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        return self.file.readline().rstrip(b"\r\n")

    def until(self, tag: bytes) -> list[bytes]:
        """Lines up to and including the tagged one."""
        out = []
        while True:
            raw = self.file.readline()
            if not raw:  # closed (an empty line inside a literal is b"\r\n", not this)
                out.append(b"")
                return out
            line = raw.rstrip(b"\r\n")
            out.append(line)
            if line.startswith(tag + b" "):
                return out

    def command(self, tag: str, text: str) -> list[bytes]:
        self.send(f"{tag} {text}\r\n".encode())
        return self.until(tag.encode())

    def close(self) -> None:
        self.sock.close()
