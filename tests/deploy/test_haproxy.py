"""deploy/haproxy.cfg: HAProxy accepts it, its backends are the two-node example's listeners, and, run in
front of a real node (addresses moved to loopback), its health checks pass through the PROXY protocol and
the node sees the client's own address. Skipped where HAProxy is not installed (Debian package haproxy)."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import ImapSection, SmtpSection, load_config
from tests.conftest import NodeDir
from tests.test_serve import Running, start_node

ROOT = Path(__file__).resolve().parents[2]
CFG = ROOT / "deploy" / "haproxy.cfg"
HAPROXY = shutil.which("haproxy") or (shutil.which("haproxy", path="/usr/sbin:/sbin"))
needs_haproxy = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (Debian package haproxy)")

# HAProxy frontend/backend name -> (public port, the node's listener behind it, PROXY protocol v2 sent).
SERVICES = {
    "relay": (25, "relay", True),
    "submission": (587, "submission", True),
    "submissions": (465, "submissions", True),
    "imap": (143, "imap", True),
    "imaps": (993, "imaps", True),
    "https": (443, "https", True),
}


def sections() -> dict[str, list[str]]:
    """'global', 'defaults', 'frontend NAME', 'backend NAME' -> their lines (comments and blanks dropped)."""
    out: dict[str, list[str]] = {}
    current = ""
    for raw in CFG.read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip() if not raw.lstrip().startswith("tcp-check") else raw.rstrip()
        if not line.strip() or raw.lstrip().startswith("#"):
            continue
        if not line.startswith(" "):
            current = " ".join(line.split())
            out[current] = []
        else:
            out[current].append(" ".join(line.split()))
    return out


def seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h)?", value).groups()  # type: ignore[union-attr]
    return int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 0.001}[unit]


@needs_haproxy
def test_haproxy_accepts_the_file_without_warnings() -> None:
    assert HAPROXY is not None
    result = subprocess.run(
        [HAPROXY, "-c", "-dW", "-f", str(CFG)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Configuration file is valid" in result.stdout + result.stderr


def test_frontends_backends_and_servers_are_the_two_nodes_listeners() -> None:
    s = sections()
    assert set(s) == {"global", "defaults"} | {
        f"{kind} {name}" for name in SERVICES for kind in ("frontend", "backend")
    }
    defaults = s["defaults"]
    assert "mode tcp" in defaults
    assert "balance leastconn" in defaults
    nodes = {n: load_config(ROOT / "deploy" / "examples" / "two-nodes" / f"{n}.toml") for n in ("node1", "node2")}
    for name, (public, listener, proxied) in SERVICES.items():
        assert s[f"frontend {name}"][0] == f"bind :{public}"
        assert f"default_backend {name}" in s[f"frontend {name}"]
        servers = [line for line in s[f"backend {name}"] if line.startswith("server ")]
        expected = []
        for node, cfg in nodes.items():
            port = cfg.listen.https_port if listener == "https" else getattr(cfg.listen, f"{listener}_port")
            assert port == public
            words = ["server", node, f"{cfg.listen.host}:{port}"]
            words += ["send-proxy-v2", "check"] if proxied else ["check"]
            if listener in ("submissions", "imaps", "https"):
                words += ["check-ssl", "verify", "none"]
            expected.append(" ".join(words))
        assert servers == expected


def test_health_checks_look_for_each_protocol_s_greeting() -> None:
    s = sections()
    for name in ("relay", "submission", "submissions"):
        assert [line for line in s[f"backend {name}"] if line.startswith(("option", "tcp-check"))] == [
            "option tcp-check",
            "tcp-check expect rstring ^220",
            "tcp-check send QUIT\\r\\n",
            "tcp-check expect rstring ^221",
        ]
    for name in ("imap", "imaps"):
        assert [line for line in s[f"backend {name}"] if line.startswith(("option", "tcp-check"))] == [
            "option tcp-check",
            "tcp-check expect rstring ^\\*\\ OK",
            "tcp-check send a1\\ LOGOUT\\r\\n",
            "tcp-check expect rstring ^\\*\\ BYE",
        ]
    assert [line for line in s["backend https"] if line.startswith(("option", "http-check"))] == [
        "option httpchk",
        "http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host mail.ch-exemple.mssante.fr",
        "http-check expect status 200",
    ]


def test_timeouts_outlast_the_node_s_own() -> None:
    s = sections()

    def timeout(section: str, which: str) -> float:
        for part in (s[section], s["defaults"]):
            for line in part:
                if line.startswith(f"timeout {which} "):
                    return seconds(line.split()[-1])
        raise AssertionError(f"no timeout {which} for {section}")

    autologout = ImapSection.model_fields["autologout"].default
    smtp = SmtpSection.model_fields["timeout"].default
    assert (autologout, smtp) == (1800.0, 300.0)
    for name in ("imap", "imaps"):
        assert timeout(f"frontend {name}", "client") == timeout(f"backend {name}", "server") == 35 * 60
        assert timeout(f"frontend {name}", "client") > autologout  # IDLE: the node logs out first
    for name in ("relay", "submission", "submissions"):
        assert timeout(f"frontend {name}", "client") == timeout(f"backend {name}", "server") == 6 * 60
        assert timeout(f"frontend {name}", "client") > smtp


# -- HAProxy in front of a real node -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loopback_config(node: Running, tmp: Path) -> tuple[str, dict[str, int]]:
    """deploy/haproxy.cfg with: node1 -> the running node, node2 -> a closed port, frontends on free loopback
    ports, checks every 300 ms, and the process settings of a test (no chroot, user, daemon; a private stats
    socket; logs on stdout; maxconn within the test's file limit). Nothing else changes."""
    fronts: dict[str, int] = {}
    closed = free_port()
    out: list[str] = []
    section = ""
    for line in CFG.read_text().splitlines():
        words = line.split()
        if line and not line.startswith((" ", "#")):
            section = words[0]
            name = words[1] if len(words) > 1 else ""
        if (
            section == "global"
            and words
            and words[0] in ("log", "chroot", "stats", "user", "group", "daemon", "maxconn")
        ):
            if words[0] == "log":
                out.append("    log stdout format raw local0")
            elif words[:2] == ["stats", "socket"]:
                out.append(f"    stats socket {tmp / 'admin.sock'} mode 600 level admin")
            elif words[0] == "maxconn":
                out.append("    maxconn 1000")
            continue
        if section == "frontend" and words[:1] == ["bind"]:
            fronts[name] = free_port()
            line = f"    bind 127.0.0.1:{fronts[name]}"
        elif section == "backend" and words[:1] == ["server"]:
            listener = SERVICES[name][1]
            port = node.ports[listener] if words[1] == "node1" else closed
            line = line.replace(words[2], f"127.0.0.1:{port}")
        elif words[:1] == ["default-server"]:
            line = line.replace("inter 5s", "inter 300ms")
        out.append(line)
    return "\n".join(out) + "\n", fronts


@pytest.fixture
def behind_haproxy(node: NodeDir, tmp_path: Path) -> Iterator[tuple[Running, dict[str, int], Path]]:
    assert HAPROXY is not None
    running = start_node(node, env={"MSSGW_LISTEN__PROXY_FROM": '["127.0.0.1"]'})
    text, fronts = loopback_config(running, tmp_path)
    (tmp_path / "haproxy.cfg").write_text(text)
    with (tmp_path / "haproxy.log").open("w") as log:
        proxy = subprocess.Popen([HAPROXY, "-db", "-f", str(tmp_path / "haproxy.cfg")], stdout=log, stderr=log)
    try:
        yield running, fronts, tmp_path
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait()


def servers_state(sock_path: Path) -> dict[tuple[str, str], tuple[str, str]]:
    """(backend, server) -> (status, last check status) from the stats socket's `show stat`."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(sock_path))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
    return {
        (r["pxname"], r["svname"]): (r["status"], r["check_status"].lstrip("* "))
        for r in rows
        if r["svname"] in ("node1", "node2")
    }


@needs_haproxy
def test_in_front_of_a_node(behind_haproxy: tuple[Running, dict[str, int], Path]) -> None:
    running, fronts, tmp = behind_haproxy
    wanted = {}
    for name in SERVICES:
        wanted[(name, "node1")] = ("UP", "L7OK")  # the protocol's greeting (or /healthz 200) came back
        wanted[(name, "node2")] = ("DOWN", "L4CON")  # nothing listens there
    deadline = time.monotonic() + 30
    state: dict[tuple[str, str], tuple[str, str]] = {}
    while time.monotonic() < deadline:
        if (tmp / "admin.sock").exists():
            state = servers_state(tmp / "admin.sock")
            if state == wanted:
                break
        time.sleep(0.2)
    assert state == wanted, (tmp / "haproxy.log").read_text()[-3000:]

    # A client from 127.0.0.2 through the IMAP frontend: the node records that address, not the balancer's.
    with socket.create_connection(("127.0.0.1", fronts["imap"]), timeout=10, source_address=("127.0.0.2", 0)) as c:
        assert c.recv(200).startswith(b"* OK ")
        c.sendall(b"a1 LOGIN nobody@ch-test.mssante.fr wrong\r\n")
        assert c.recv(200).startswith(b"a1 NO ")
    with socket.create_connection(("127.0.0.1", fronts["submission"]), timeout=10) as c:
        assert c.recv(200).startswith(b"220 ")
    result = running.node.cli("audit", "search", "--event", "imap.login.failed", "--json")
    assert result.code == 0, result.err
    assert [r["peer"] for r in json.loads(result.out)] == ["127.0.0.2"]
    # And through the HTTPS frontend (TLS after the header): a login form without its CSRF token.
    ctx = ssl.create_default_context(cafile=str(running.node.data / "pki-root.pem"))
    ctx.check_hostname = False
    web = http.client.HTTPSConnection(
        "127.0.0.1", fronts["https"], timeout=10, context=ctx, source_address=("127.0.0.2", 0)
    )
    web.request("POST", "/connexion", body="address=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert web.getresponse().status == 403
    web.close()
    result = running.node.cli("audit", "search", "--event", "web.refused", "--json")
    assert [(r["peer"], r["response"]["reason"]) for r in json.loads(result.out)] == [("127.0.0.2", "csrf")]
    # The health checks' PROXY headers (v2 LOCAL) were all accepted: not one connection refused.
    result = running.node.cli("audit", "search", "--event", "proxy.", "--json")
    assert json.loads(result.out) == []


def test_haproxy_is_there_where_run_sh_installs_it() -> None:
    # tests/run.sh installs haproxy where it can (as root, with apt; it then sets MSSGW_REQUIRE_POSTGRES):
    # there the tests above must not be skipped.
    if os.geteuid() == 0 and shutil.which("apt-get") and os.environ.get("MSSGW_REQUIRE_POSTGRES"):
        assert HAPROXY is not None, "tests/run.sh should have installed haproxy"
