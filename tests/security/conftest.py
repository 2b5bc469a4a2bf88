"""One running node for the security tests (every listener on loopback, the SMTP tests' mailboxes and
trust list), a peer operator's certificate for the relay port, and small clients.

Nodes are started by `serve` below rather than tests.smtp.conftest.serve: a serving node writes its
operational log (a line per audit record) to standard error, and these tests make thousands of records;
a pipe nobody reads fills up at 64 KiB and the node's event loop then blocks on the write. Here standard
error goes to a file beside the node's data (kept for post-mortems).
"""

from __future__ import annotations

import base64
import contextlib
import smtplib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from certs.pki import TrustSpacePKI, write_bundle
from tests.conftest import NodeDir, copy_node
from tests.smtp.conftest import PEER, Gateway, RawSMTP, provision, serve

# Small enough that an oversize message costs little to send; the other limits are the defaults.
MAX_MESSAGE_SIZE = 1_000_000
SETTINGS = {"MSSGW_SMTP__MAX_MESSAGE_SIZE": str(MAX_MESSAGE_SIZE)}


@pytest.fixture(scope="package")
def gw(template_node: NodeDir, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    node = copy_node(template_node, tmp_path_factory.mktemp("security") / "node")
    provision(node)
    yield from serve(node, SETTINGS)


@pytest.fixture(scope="package")
def peer_cert(gw: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A peer operator's TLS certificate (trust-listed domain) from the trust-space PKI: fullchain.pem, key.pem."""
    out = tmp_path_factory.mktemp("peer")
    write_bundle(TrustSpacePKI(gw.node.data / "pki").issue_server([PEER, f"mx.{PEER}"]), out, name="peer", root=None)
    return out


def relay_client(gw: Gateway, cert: Path | None, *, helo: str = f"mx.{PEER}") -> smtplib.SMTP:
    """A peer's session on the relay port, after STARTTLS, presenting `cert` (a bundle directory) if given."""
    client = smtplib.SMTP("127.0.0.1", gw.port("relay"), timeout=30)
    client.ehlo(helo)
    ctx = gw.tls()
    if cert is not None:
        ctx.load_cert_chain(cert / "fullchain.pem", cert / "key.pem")
    client.starttls(context=ctx)
    client.ehlo(helo)
    return client


class Wire(RawSMTP):
    """A byte-exact SMTP client on any SMTP listener of the node, once TLS is up: submission (STARTTLS),
    submissions (TLS from the first octet), relay (STARTTLS, presenting the peer's certificate)."""

    def __init__(self, gw: Gateway, listener: str, *, cert: Path | None = None, helo: str = "wire.example") -> None:
        ctx = gw.tls()
        if cert is not None:
            ctx.load_cert_chain(cert / "fullchain.pem", cert / "key.pem")
        sock = socket.create_connection(("127.0.0.1", gw.port(listener)), timeout=30)
        if listener == "submissions":
            sock = ctx.wrap_socket(sock)
        self.sock = sock  # type: ignore[assignment]  (plain until STARTTLS)
        self.file = sock.makefile("rb")
        self.expect(220)
        if listener != "submissions":
            self.command(f"EHLO {helo}")
            assert self.command("STARTTLS")[0] == 220
            self.sock = ctx.wrap_socket(sock)
            self.file = self.sock.makefile("rb")
        code, self.features = self.command(f"EHLO {helo}")
        assert code == 250, self.features

    def login(self, user: str, password: str) -> None:
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        assert self.command(f"AUTH PLAIN {token}") == (235, "2.7.0 Authentication successful")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            super().close()
