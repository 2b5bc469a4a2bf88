"""A TLS scan of every listener of a running node: only TLS 1.2 and 1.3, exactly the allowed suites, no
compression, secure renegotiation only (and none initiated by the client), no session tickets, the
node's own certificate.

The scanner is tests/security/tls_probe.py (hand-made ClientHellos; why not sslyze: its docstring), whose
verdicts are checked against a permissive `openssl s_server` in `test_the_probes_see_what_a_permissive_server_accepts`;
`openssl s_client` completes it with whole handshakes (chain verified against the pinned root) and a
client-initiated renegotiation. The whole scan takes about a second: every listener is scanned fully.
"""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.tls import MSSANTE_TLS12_CIPHERS
from tests.security import tls_probe
from tests.security.tls_probe import (
    EXT_RENEGOTIATION_INFO,
    EXT_SESSION_TICKET,
    TLS12,
    TLS13,
    Alert,
    Closed,
    Scan,
    ServerHello,
    Target,
)
from tests.smtp.conftest import Gateway

# name -> STARTTLS dialect (None: TLS from the first octet)
LISTENERS = {
    "submission": "smtp",
    "submissions": None,
    "relay": "smtp",
    "imap": "imap",
    "imaps": None,
    "https": None,
}
# The MSSanté suites for TLS 1.2 (gateway/tls.py, Référentiel #2), by IANA code point (RFC 5289), in the
# server's order of preference; pinned here so that a change of policy shows up in this test too.
EXPECTED_TLS12 = [0xC030, 0xC02F, 0xC028, 0xC027]
# TLS 1.3: OpenSSL's default suites (all AEAD); CCM and CCM_8 are not enabled.
EXPECTED_TLS13 = {0x1301, 0x1302, 0x1303}


def openssl_code(name: str) -> int:
    """The IANA code point of an OpenSSL cipher name (`openssl ciphers -V`)."""
    out = subprocess.run(
        ["openssl", "ciphers", "-V", name], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    found = re.search(r"0x([0-9A-F]{2}),0x([0-9A-F]{2}) - " + re.escape(name) + r"\s", out)
    assert found is not None, out
    return int(found[1] + found[2], 16)


@pytest.fixture(scope="module")
def scans(gw: Gateway) -> dict[str, Scan]:
    targets = [Target(name, gw.port(name), dialect) for name, dialect in LISTENERS.items()]
    started = time.monotonic()
    with ThreadPoolExecutor(len(targets)) as pool:
        done = dict(zip(LISTENERS, pool.map(tls_probe.scan, targets), strict=True))
    assert time.monotonic() - started < 30, "the scan is meant to take seconds"
    return done


def test_the_policy_file_names_the_expected_suites() -> None:
    assert [openssl_code(name) for name in MSSANTE_TLS12_CIPHERS] == EXPECTED_TLS12
    # Forward secrecy (ECDHE), RSA certificates, AES with GCM or a SHA-2 MAC: nothing weaker is allowed.
    assert all(re.fullmatch(r"ECDHE-RSA-AES(128|256)-(GCM-)?SHA(256|384)", name) for name in MSSANTE_TLS12_CIPHERS)


@pytest.mark.parametrize("listener", LISTENERS)
def test_only_tls12_and_tls13_are_accepted(scans: dict[str, Scan], listener: str) -> None:
    versions = scans[listener].versions
    for old in ("SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1"):
        assert isinstance(versions[old], Alert | Closed), (old, versions[old])
    assert isinstance(versions["TLSv1.2"], ServerHello)
    assert versions["TLSv1.2"].version == TLS12
    assert isinstance(versions["TLSv1.3"], ServerHello)
    assert versions["TLSv1.3"].version == TLS13


@pytest.mark.parametrize("listener", LISTENERS)
def test_tls12_suites_are_exactly_the_allowed_ones_in_order(scans: dict[str, Scan], listener: str) -> None:
    # Every code point of the registered ranges was offered: the server took these, then refused the rest.
    assert scans[listener].suites["TLSv1.2"] == EXPECTED_TLS12


@pytest.mark.parametrize("listener", LISTENERS)
def test_tls13_suites(scans: dict[str, Scan], listener: str) -> None:
    assert set(scans[listener].suites["TLSv1.3"]) == EXPECTED_TLS13


@pytest.mark.parametrize("listener", LISTENERS)
def test_no_compression_secure_renegotiation_no_tickets(scans: dict[str, Scan], listener: str) -> None:
    hello = scans[listener].versions["TLSv1.2"]
    assert isinstance(hello, ServerHello)
    assert hello.compression == tls_probe.COMPRESSION_NULL  # DEFLATE was offered first (CRIME)
    assert hello.extensions.get(EXT_RENEGOTIATION_INFO) == b"\x00"  # RFC 5746 §3.6: empty, secure
    assert EXT_SESSION_TICKET not in hello.extensions  # offered; gateway/tls.py sets OP_NO_TICKET


# -- openssl s_client: whole handshakes, the certificate, renegotiation ---------------------------------


# Listeners that greet first once TLS is up (the greeting of the STARTTLS ones was read before it).
GREETING = {"submissions": "220 ", "imaps": "* OK "}


def s_client(gw: Gateway, listener: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`openssl s_client` to a listener (STARTTLS where it needs it); `stdin` is typed once the session
    is ready, after the greeting where there is one (a renegotiation racing the greeting would fail on
    the client's side, for the wrong reason)."""
    dialect = LISTENERS[listener]
    starttls = ["-starttls", dialect, "-name", "probe.example"] if dialect == "smtp" else []
    starttls = ["-starttls", "imap"] if dialect == "imap" else starttls
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{gw.port(listener)}", "-CAfile", str(gw.root)]
    proc = subprocess.Popen(
        [*argv, "-verify_hostname", "localhost", *starttls, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    seen = []
    if listener in GREETING and stdin:
        for line in proc.stdout:
            seen.append(line)
            if line.startswith(GREETING[listener]):
                break
    try:
        out, err = proc.communicate(stdin, timeout=30)
    finally:
        proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(seen) + out, err)


@pytest.mark.parametrize("listener", LISTENERS)
def test_openssl_tls12_handshake_verifies_and_client_renegotiation_is_refused(gw: Gateway, listener: str) -> None:
    # "R" at the start of a line makes s_client renegotiate (TLS 1.2); gateway/tls.py sets OP_NO_RENEGOTIATION.
    done = s_client(gw, listener, "-tls1_2", stdin="R\n")
    out = done.stdout
    assert "Verify return code: 0 (ok)" in out, out + done.stderr
    assert re.search(r"Cipher is ECDHE-RSA-AES256-GCM-SHA384\n", out), out  # the server's first choice
    assert "Secure Renegotiation IS supported" in out
    assert "Compression: NONE" in out
    assert "RENEGOTIATING" in done.stderr, done.stderr  # s_client tried...
    assert "no renegotiation" in done.stderr, done.stderr  # ...and got the no_renegotiation alert (RFC 5746 §4.2)
    # The relay asks for a client certificate (mutual TLS between operators); so do the mail client
    # listeners (APP mailboxes, SASL EXTERNAL), optionally; the web inbox does not.
    assert ("Requested Signature Algorithms" in out) is (listener != "https")


@pytest.mark.parametrize("listener", LISTENERS)
def test_openssl_tls13_handshake_verifies(gw: Gateway, listener: str) -> None:
    done = s_client(gw, listener, "-tls1_3")
    assert "Verify return code: 0 (ok)" in done.stdout, done.stdout + done.stderr
    assert "New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384" in done.stdout


@pytest.mark.parametrize("listener", LISTENERS)
@pytest.mark.parametrize("version", ["-tls1", "-tls1_1"])
def test_openssl_old_versions_fail_at_the_server(gw: Gateway, listener: str, version: str) -> None:
    # SECLEVEL=0 lets OpenSSL 3 offer TLS 1.0/1.1 at all: the failure is then the server's, not the client's.
    done = s_client(gw, listener, version, "-cipher", "ALL:@SECLEVEL=0")
    assert done.returncode != 0
    assert "no protocols available" not in done.stderr
    assert "no ciphers available" not in done.stderr
    assert "Cipher is (NONE)" in done.stdout, done.stdout


def _plain_socket(gw: Gateway, listener: str) -> socket.socket:
    """A connection ready for the TLS handshake (after STARTTLS where the listener needs it)."""
    conn = tls_probe._Conn(gw.port(listener), 10)
    preamble = tls_probe.PREAMBLES[LISTENERS[listener]]
    if preamble is not None:
        preamble(conn)
    assert conn.buffer == b""
    return conn.sock


@pytest.mark.parametrize("listener", LISTENERS)
def test_the_certificate_is_the_nodes(gw: Gateway, listener: str) -> None:
    own = x509.load_pem_x509_certificate((gw.node.data / "tls" / "cert.pem").read_bytes())
    ctx = ssl.create_default_context(cafile=str(gw.root))  # the pinned trust-space root, hostname checked
    with ctx.wrap_socket(_plain_socket(gw, listener), server_hostname="mail.ch-test.mssante.fr") as tls:
        der = tls.getpeercert(binary_form=True)
        assert tls.version() == "TLSv1.3"
    assert der == own.public_bytes(serialization.Encoding.DER)


# -- the probes themselves ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def permissive(gw: Gateway) -> Iterator[int]:
    """`openssl s_server` accepting TLS 1.0 to 1.3 and every suite OpenSSL has (SECLEVEL=0), with the node's key."""
    tls = gw.node.data / "tls"
    proc = subprocess.Popen(
        [
            "openssl",
            "s_server",
            "-www",
            "-accept",
            "127.0.0.1:0",
            "-cert",
            str(tls / "cert.pem"),
            "-key",
            str(tls / "key.pem"),
            "-cipher",
            "ALL:@SECLEVEL=0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("ACCEPT "):
                yield int(line.rsplit(":", 1)[1])
                break
        else:
            raise AssertionError("openssl s_server did not start")
    finally:
        proc.kill()
        proc.wait()


def test_the_probes_see_what_a_permissive_server_accepts(permissive: int, tmp_path: Path) -> None:
    """The same hellos that the node refuses are accepted by a server that allows them: the refusals the
    scan reports are the node's, not the probes'. (No SSL 3.0 server exists to check that probe
    against: OpenSSL 3 has no SSL 3.0; it answers the SSL 3.0 hello with an alert, as the node may.)"""
    target = Target("openssl", permissive, None)
    found = tls_probe.scan(target)
    for version, number in (("TLSv1.0", 0x0301), ("TLSv1.1", 0x0302), ("TLSv1.2", TLS12), ("TLSv1.3", TLS13)):
        answer = found.versions[version]
        assert isinstance(answer, ServerHello), (version, answer)
        assert answer.version == number, (version, answer)
    assert isinstance(found.versions["SSLv3"], Alert | Closed)
    tls12 = found.suites["TLSv1.2"]
    assert set(EXPECTED_TLS12) < set(tls12)  # more than the node: CBC-SHA1, non-ECDHE, CHACHA20...
    assert {0x002F, 0x009C, 0xCCA8} <= set(tls12), [tls_probe.suite_name(c) for c in tls12]
    assert EXT_SESSION_TICKET in found.versions["TLSv1.2"].extensions  # type: ignore[union-attr]
