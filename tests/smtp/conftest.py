"""A running node with provisioned mailboxes, and SMTP clients to talk to it."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import DOMAIN, NodeDir, copy_node
from tests.test_serve import Running, start_node

PASSWORD = "Horse-Battery-Staple-42"
DOCTOR = f"claire.martin@{DOMAIN}"
NURSE = f"lucas.bernard@{DOMAIN}"
SECRETARIAT = f"secretariat@{DOMAIN}"
DISABLED = f"ancien@{DOMAIN}"
APP = f"dpi@{DOMAIN}"
PEER = "clinique-b.mssante.fr"


def provision(node: NodeDir) -> None:
    for argv in (
        ["mailbox", "add", DOCTOR, "--type", "PER", "--idnat", "810000000009", "--last-name", "MARTIN"],
        ["mailbox", "add", NURSE, "--type", "PER", "--idnat", "810000000017"],
        ["mailbox", "add", SECRETARIAT, "--type", "ORG"],
        ["mailbox", "add", DISABLED, "--type", "ORG"],
        ["mailbox", "add", APP, "--type", "APP"],
    ):
        r = node.cli(*argv, "--password-stdin", input=PASSWORD + "\n")
        assert r.code == 0, r.err
    # The doctor's address-bound S/MIME certificate: the node keeps its key to sign and decrypt as her.
    for address in (DOCTOR, NURSE):
        r = node.cli("pki", "issue-address", address, "--out", node.data / "smime" / address)
        assert r.code == 0, r.err
    for argv in (
        ["mailbox", "delegate", SECRETARIAT, DOCTOR],
        ["mailbox", "disable", DISABLED],
        ["trust", "add-domain", PEER],
    ):
        r = node.cli(*argv)
        assert r.code == 0, r.err


@dataclass
class Gateway:
    running: Running
    node: NodeDir
    root: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root = self.node.data / "pki-root.pem"

    def port(self, name: str) -> int:
        return self.running.ports[name]

    def tls(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.root))
        ctx.check_hostname = False  # tests connect to 127.0.0.1; the chain is still verified
        return ctx

    def submission(self, *, starttls: bool = True, login: str | None = DOCTOR) -> smtplib.SMTP:
        client = smtplib.SMTP("127.0.0.1", self.port("submission"), timeout=30)
        client.ehlo("client.example")
        if starttls:
            client.starttls(context=self.tls())
            client.ehlo("client.example")
        if login:
            client.login(login, PASSWORD)
        return client

    def submissions(self, *, login: str | None = DOCTOR) -> smtplib.SMTP_SSL:
        client = smtplib.SMTP_SSL("127.0.0.1", self.port("submissions"), timeout=30, context=self.tls())
        client.ehlo("client.example")
        if login:
            client.login(login, PASSWORD)
        return client


def serve(node: NodeDir, env: dict[str, str] | None = None) -> Iterator[Gateway]:
    running = start_node(node, env)
    try:
        yield Gateway(running, node)
    finally:
        if running.proc.poll() is None:
            running.proc.terminate()
            running.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def gateway(template_node: NodeDir, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    node = copy_node(template_node, tmp_path_factory.mktemp("smtp") / "node")
    provision(node)
    yield from serve(node)


class RawSMTP:
    """A byte-exact SMTP client over TLS (after STARTTLS), for dialogues smtplib will not produce."""

    def __init__(self, gw: Gateway) -> None:
        plain = socket.create_connection(("127.0.0.1", gw.port("submission")), timeout=30)
        self.file = plain.makefile("rb")
        self.expect(220)
        plain.sendall(b"EHLO raw.example\r\n")
        self.expect(250)
        plain.sendall(b"STARTTLS\r\n")
        self.expect(220)
        self.sock = gw.tls().wrap_socket(plain)
        self.file = self.sock.makefile("rb")
        self.send(b"EHLO raw.example\r\n")
        self.expect(250)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> tuple[int, str]:
        lines = []
        while True:
            line = self.file.readline().decode()
            if not line:
                return 0, "connection closed"
            lines.append(line[4:].rstrip("\r\n"))
            if line[3:4] != "-":
                return int(line[:3]), "\n".join(lines)

    def expect(self, code: int) -> str:
        got, text = self.reply()
        assert got == code, (got, text)
        return text

    def command(self, line: str) -> tuple[int, str]:
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.sock.close()


def inbox(node: NodeDir, address: str) -> list[bytes]:
    """The bodies in `address`'s INBOX, by UID, decrypted through the store as the IMAP server will."""
    from sqlalchemy import select

    from gateway.node import Node
    from gateway.store.messages import MessageStore
    from gateway.store.models import Folder, StoredMessage

    async def read() -> list[bytes]:
        async with Node(node.cfg()) as n:
            store = MessageStore(n.mailboxes)
            async with n.db.read() as s:
                ids = (
                    (
                        await s.execute(
                            select(StoredMessage.id)
                            .join(Folder, Folder.id == StoredMessage.folder_id)
                            .where(Folder.address == address, Folder.name == "INBOX")
                            .order_by(StoredMessage.uid)
                        )
                    )
                    .scalars()
                    .all()
                )
            return [await store.get(address, i) for i in ids]

    return asyncio.run(read())


def wait_for_message(node: NodeDir, address: str, marker: bytes, timeout: float = 20) -> bytes:
    """The first message in `address`'s INBOX containing `marker`, once the queue has delivered it."""
    deadline = time.monotonic() + timeout
    while True:
        for body in inbox(node, address):
            if marker in body:
                return body
        if time.monotonic() > deadline:
            raise AssertionError(f"no message with {marker!r} in {address} after {timeout} s")
        time.sleep(0.2)
