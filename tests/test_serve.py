"""`mssgw serve`: the node runs, answers over TLS with the trust-space policy, and stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from certs.pki import TrustSpacePKI
from gateway.tls import client_context
from tests.conftest import DOMAIN, NodeDir


@dataclass
class Running:
    proc: subprocess.Popen[str]
    ports: dict[str, int]
    node: NodeDir
    stderr_path: Path

    @property
    def port(self) -> int:
        return self.ports["https"]

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def start_node(node: NodeDir, env: dict[str, str] | None = None) -> Running:
    """Run `mssgw serve` (settings overridable through MSSGW_* variables) up to `ready`.

    Its standard error goes to a file: a pipe nobody reads after `ready` fills at 64 KiB and then blocks
    the node's event loop on its next log line (found by tests/security: every listener stopped answering).
    """
    stderr_path = node.data / "serve.stderr"
    with stderr_path.open("a") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli.main", "serve", "-c", str(node.config)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, **(env or {})},
        )
    assert proc.stdout is not None
    ports: dict[str, int] = {}
    for line in proc.stdout:
        line = line.strip()
        if line == "ready":
            return Running(proc, ports, node, stderr_path)
        kind, name, where = line.split(" ")
        assert kind == "listening", line
        host, port = where.rsplit(":", 1)
        assert host == "127.0.0.1"
        ports[name] = int(port)
    proc.wait(timeout=30)
    raise AssertionError("the node stopped before it was ready: " + stderr_path.read_text(errors="replace"))


@pytest.fixture
def served(node: NodeDir) -> Iterator[Running]:
    running = start_node(node)
    yield running
    if running.proc.poll() is None:
        running.proc.kill()
        running.proc.wait()


def curl(r: Running, path: str, *extra: str, host: str = "127.0.0.1") -> tuple[int, str]:
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--cacert",
            str(r.node.data / "pki-root.pem"),
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            *extra,
            f"https://{host}:{r.port}{path}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    body, _, code = out.stdout.rpartition("\n")
    return int(code), body


def s_client(r: Running, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{r.port}", "-CAfile", str(r.node.data / "pki-root.pem"), *args],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_healthz_over_tls_verified_against_the_pinned_root(served: Running) -> None:
    code, body = curl(served, "/healthz")
    assert code == 200
    health = json.loads(body)
    assert health["status"] == "ok"
    assert health["domain"] == DOMAIN
    assert health["domains"] == [DOMAIN, f"patient.{DOMAIN}"]
    assert health["audit"]["records"] >= 4  # init (3) + node.started
    # The certificate names localhost too, and curl checks the name against it.
    code, _ = curl(served, "/healthz", "--resolve", f"localhost:{served.port}:127.0.0.1", host="localhost")
    assert code == 200


def test_other_paths_and_methods(served: Running) -> None:
    assert curl(served, "/") == (303, "")  # the patient inbox: to the login page without a session
    status, page = curl(served, "/nulle-part")
    assert status == 404
    assert '<p class="error" role="alert">Cette page n&#39;existe pas.</p>' in page
    assert curl(served, "/healthz", "-X", "POST") == (405, '{"error": "method not allowed"}')


def test_tls_policy_only_tls12_and_13_with_the_mssante_suites(served: Running) -> None:
    assert s_client(served, "-tls1_1").returncode != 0
    ok12 = s_client(served, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")
    assert ok12.returncode == 0, ok12.stderr
    assert "Cipher is ECDHE-RSA-AES128-GCM-SHA256" in ok12.stdout
    assert "Verify return code: 0 (ok)" in ok12.stdout
    for outside in ("AES128-GCM-SHA256", "ECDHE-RSA-CHACHA20-POLY1305", "ECDHE-RSA-AES128-SHA"):
        refused = s_client(served, "-tls1_2", "-cipher", outside)
        assert refused.returncode != 0, outside
    ok13 = s_client(served, "-tls1_3")
    assert ok13.returncode == 0
    assert "TLSv1.3" in ok13.stdout


def test_sigterm_stops_cleanly_and_is_audited(served: Running) -> None:
    served.proc.send_signal(signal.SIGTERM)
    out, _ = served.proc.communicate(timeout=30)
    err = served.stderr()
    assert served.proc.returncode == 0, err
    assert out.strip() == "stopped"
    events = served.node.cli("audit", "search", "--event", "node.", "--json").json()
    assert [e["action"] for e in events] == ["node.started", "node.stopped"]  # type: ignore[union-attr]
    assert events[0]["author"] == "node:node1"  # type: ignore[index]
    assert served.node.cli("audit", "verify").code == 0


def test_outbound_context_trusts_only_the_pinned_root(served: Running, tmp_path: Path) -> None:
    import socket
    import ssl

    pinned = client_context(served.node.data / "pki-root.pem")
    with (
        socket.create_connection(("127.0.0.1", served.port), timeout=10) as raw,
        pinned.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    other = TrustSpacePKI.create(tmp_path / "other", label="other.test", crl_base_url="http://crl.other.test")
    foreign = tmp_path / "foreign-root.pem"
    foreign.write_bytes(other.root.public_bytes(serialization.Encoding.PEM))
    with (
        socket.create_connection(("127.0.0.1", served.port), timeout=10) as raw,
        pytest.raises(ssl.SSLCertVerificationError) as exc,
    ):
        client_context(foreign).wrap_socket(raw, server_hostname="localhost")
    assert exc.value.verify_message == "unable to get local issuer certificate"


def test_every_listener_is_announced(served: Running) -> None:
    assert sorted(served.ports) == ["https", "imap", "imaps", "relay", "submission", "submissions"]
    assert len(set(served.ports.values())) == 6
    started = served.node.cli("audit", "search", "--event", "node.started", "--json").json()[0]  # type: ignore[index]
    assert started["request"] == {name: f"127.0.0.1:{port}" for name, port in served.ports.items()}


def test_sigterm_tells_open_sessions_before_it_stops(served: Running) -> None:
    """SMTP sessions get a 421 (RFC 5321 section 3.8) and IMAP sessions a BYE [UNAVAILABLE] (RFC 5530):
    clients know to connect again, here or to another node, instead of seeing their connection cut."""
    import smtplib
    import socket
    import ssl

    ctx = ssl.create_default_context(cafile=str(served.node.data / "pki-root.pem"))
    ctx.check_hostname = False
    smtp = smtplib.SMTP("127.0.0.1", served.ports["submission"], timeout=10)
    assert smtp.ehlo("client.example")[0] == 250
    imap = ctx.wrap_socket(socket.create_connection(("127.0.0.1", served.ports["imaps"]), timeout=10))
    imap_file = imap.makefile("rb")
    assert imap_file.readline().startswith(b"* OK")
    idle = ctx.wrap_socket(socket.create_connection(("127.0.0.1", served.ports["imaps"]), timeout=10))
    idle_file = idle.makefile("rb")
    assert idle_file.readline().startswith(b"* OK")
    idle.sendall(b"a1 NOOP\r\n")
    assert idle_file.readline() == b"a1 OK NOOP completed\r\n"
    served.proc.send_signal(signal.SIGTERM)
    assert smtp.getreply() == (421, b"4.3.2 mail.ch-test.mssante.fr Service shutting down, try again later")
    assert imap_file.readline() == b"* BYE [UNAVAILABLE] This server is stopping: connect again\r\n"
    assert idle_file.readline() == b"* BYE [UNAVAILABLE] This server is stopping: connect again\r\n"
    out, _ = served.proc.communicate(timeout=30)
    err = served.stderr()
    assert served.proc.returncode == 0, err
    assert out.strip() == "stopped"
    assert "Traceback" not in err, err[-3000:]
    assert "Exception in callback" not in err
    for sock in (imap, idle):
        sock.close()
