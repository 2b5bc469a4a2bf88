"""A small TLS scanner for the tests: hand-made ClientHellos, and what the server answers to them.

Why not sslyze (issue 7 asks for it): every sslyze release pins `cryptography<47` (6.3.1, the newest,
needs `cryptography>=43,<47`; older ones pin older still), and this project runs on cryptography 50;
adding it to the `test` extra would downgrade the library the node itself uses. OpenSSL 3's `s_client`
cannot speak SSL 2.0 or 3.0 at all and refuses, on its side, TLS 1.0/1.1 and many suites unless told
otherwise, so a refusal it reports may not be the server's. So this module writes the ClientHello itself
(RFC 5246 §7.4.1.2, RFC 8446 §4.1.2; the SSL 2.0 CLIENT-HELLO of draft-hickman-netscape-ssl-00) and reads
only the server's first answer: a ServerHello (what it accepted), an alert, or a closed connection. That is
what sslyze's cipher-suite scans conclude from, too (sslyze 6.3.1, run once from a separate virtual
environment against a node, gave the same verdicts on all six listeners). `tests/security/test_tls_scan.py`
completes it with `openssl s_client` (whole handshakes, certificate verification, client renegotiation).

Cipher suites are enumerated by elimination: offer every code point of the registered ranges, note the
one the server picks, offer the rest again, until it refuses. When it refuses, none of the suites still
offered is acceptable to it, so the set found is exact; with server preference (`gateway.tls`) the order
found is the server's order of preference.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SSL3, TLS10, TLS11, TLS12, TLS13 = 0x0300, 0x0301, 0x0302, 0x0303, 0x0304
VERSION_NAMES = {0x0002: "SSLv2", SSL3: "SSLv3", TLS10: "TLSv1.0", TLS11: "TLSv1.1", TLS12: "TLSv1.2", TLS13: "TLSv1.3"}

# Every cipher suite the IANA registry assigns (TLS 1.0-1.2 and GOST/ECCPWD/ChaCha/PSK ranges), as whole
# ranges of code points so that nothing registered is missed; the signalling values are left out.
_SIGNALLING = {0x00FF, 0x5600}  # TLS_EMPTY_RENEGOTIATION_INFO_SCSV, TLS_FALLBACK_SCSV
LEGACY_SUITES: tuple[int, ...] = tuple(
    code
    for start in (0x0000, 0xC000, 0xC100, 0xCC00, 0xD000)
    for code in range(start, start + 0x100)
    if code not in _SIGNALLING
)
TLS13_SUITES: tuple[int, ...] = (0x1301, 0x1302, 0x1303, 0x1304, 0x1305)

# Names for the suites a report is likely to show (RFC 5289, RFC 7905, RFC 8446 §B.4); others as hex.
SUITE_NAMES = {
    0xC02F: "ECDHE-RSA-AES128-GCM-SHA256",
    0xC030: "ECDHE-RSA-AES256-GCM-SHA384",
    0xC027: "ECDHE-RSA-AES128-SHA256",
    0xC028: "ECDHE-RSA-AES256-SHA384",
    0xC013: "ECDHE-RSA-AES128-SHA",
    0xC014: "ECDHE-RSA-AES256-SHA",
    0xCCA8: "ECDHE-RSA-CHACHA20-POLY1305",
    0x009C: "AES128-GCM-SHA256",
    0x009D: "AES256-GCM-SHA384",
    0x002F: "AES128-SHA",
    0x0035: "AES256-SHA",
    0x1301: "TLS_AES_128_GCM_SHA256",
    0x1302: "TLS_AES_256_GCM_SHA384",
    0x1303: "TLS_CHACHA20_POLY1305_SHA256",
    0x1304: "TLS_AES_128_CCM_SHA256",
    0x1305: "TLS_AES_128_CCM_8_SHA256",
}


def suite_name(code: int) -> str:
    return SUITE_NAMES.get(code, f"0x{code:04X}")


# Extension numbers (IANA "TLS ExtensionType Values").
EXT_SERVER_NAME = 0x0000
EXT_SUPPORTED_GROUPS = 0x000A
EXT_EC_POINT_FORMATS = 0x000B
EXT_SIGNATURE_ALGORITHMS = 0x000D
EXT_SESSION_TICKET = 0x0023
EXT_SUPPORTED_VERSIONS = 0x002B
EXT_PSK_MODES = 0x002D
EXT_KEY_SHARE = 0x0033
EXT_RENEGOTIATION_INFO = 0xFF01

COMPRESSION_NULL, COMPRESSION_DEFLATE = 0, 1
ALERT_NAMES = {10: "unexpected_message", 40: "handshake_failure", 47: "illegal_parameter", 70: "protocol_version"}
ALERT_NAMES |= {
    71: "insufficient_security",
    80: "internal_error",
    86: "inappropriate_fallback",
    112: "unrecognized_name",
}

# Every group and signature scheme a server might want, so that only the version or suite can be refused.
_GROUPS = (0x001D, 0x0017, 0x0018, 0x0019, 0x001E, 0x0100, 0x0101, 0x0102)
_SIGNATURE_SCHEMES = (
    0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601, 0x0403, 0x0503, 0x0603, 0x0807, 0x0808,
    0x0809, 0x080A, 0x080B, 0x0201, 0x0203, 0x0202, 0x0402, 0x0502, 0x0602,
)  # fmt: skip


def _u8(data: bytes) -> bytes:
    return bytes((len(data),)) + data


def _u16(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def _u24(data: bytes) -> bytes:
    return struct.pack(">I", len(data))[1:] + data


def _ext(kind: int, data: bytes) -> bytes:
    return struct.pack(">H", kind) + _u16(data)


def _codes(values: Iterable[int]) -> bytes:
    return b"".join(struct.pack(">H", v) for v in values)


def client_hello(
    version: int,
    suites: Sequence[int],
    *,
    compression: Sequence[int] = (COMPRESSION_DEFLATE, COMPRESSION_NULL),
    server_name: str | None = None,
) -> bytes:
    """One TLS record holding a ClientHello for `version` (SSL3 to TLS13) offering `suites`.

    TLS 1.3 is offered the RFC 8446 way: legacy_version TLS 1.2, supported_versions [TLS 1.3], an X25519
    key share. Below 1.3 there is no supported_versions extension, so the server sees `version` as the
    client's highest. DEFLATE is offered before null compression (RFC 3749): a server that compresses
    (CRIME) would take it. SSL 3.0 hellos carry no extensions, like the clients of its time.
    """
    exts = b""
    if version >= TLS10:
        exts += _ext(EXT_SUPPORTED_GROUPS, _u16(_codes(_GROUPS)))
        exts += _ext(EXT_EC_POINT_FORMATS, _u8(b"\x00"))
        exts += _ext(EXT_SIGNATURE_ALGORITHMS, _u16(_codes(_SIGNATURE_SCHEMES)))
        exts += _ext(EXT_RENEGOTIATION_INFO, b"\x00")  # RFC 5746 §3.4: empty renegotiated_connection
        exts += _ext(EXT_SESSION_TICKET, b"")  # RFC 5077: a server issuing tickets answers with it
        if server_name:
            name = server_name.encode("ascii")
            exts += _ext(EXT_SERVER_NAME, _u16(b"\x00" + _u16(name)))
    if version == TLS13:
        share = X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        exts += _ext(EXT_SUPPORTED_VERSIONS, _u8(_codes([TLS13])))
        exts += _ext(EXT_KEY_SHARE, _u16(struct.pack(">H", 0x001D) + _u16(share)))
        exts += _ext(EXT_PSK_MODES, _u8(b"\x01"))
    if version == TLS13:
        compression = (COMPRESSION_NULL,)  # RFC 8446 §4.1.2: exactly one octet, zero
    legacy = min(version, TLS12)
    body = struct.pack(">H", legacy) + os.urandom(32) + _u8(os.urandom(32))
    body += _u16(_codes(suites)) + _u8(bytes(compression))
    if exts:
        body += _u16(exts)
    handshake = b"\x01" + _u24(body)
    record_version = SSL3 if version == SSL3 else TLS10
    return b"\x16" + struct.pack(">H", record_version) + _u16(handshake)


# SSL 2.0 CIPHER-KINDs (draft-hickman-netscape-ssl-00 appendix C).
SSL2_CIPHER_KINDS = (0x010080, 0x020080, 0x030080, 0x040080, 0x050080, 0x060040, 0x0700C0)


def ssl2_client_hello() -> bytes:
    """An SSL 2.0 CLIENT-HELLO (version 0x0002) with every SSL 2.0 cipher kind and a 16-octet challenge."""
    specs = b"".join(k.to_bytes(3, "big") for k in SSL2_CIPHER_KINDS)
    challenge = os.urandom(16)
    msg = b"\x01" + struct.pack(">HHHH", 0x0002, len(specs), 0, len(challenge)) + specs + challenge
    return struct.pack(">H", 0x8000 | len(msg)) + msg


# ---------------------------------------------------------------------------------------------- answers


@dataclass(frozen=True)
class ServerHello:
    version: int  # negotiated: supported_versions when present (TLS 1.3), else server_version
    suite: int
    compression: int
    extensions: dict[int, bytes] = field(default_factory=dict)

    @property
    def version_name(self) -> str:
        return VERSION_NAMES.get(self.version, f"0x{self.version:04X}")


@dataclass(frozen=True)
class Alert:
    level: int
    description: int

    @property
    def name(self) -> str:
        return ALERT_NAMES.get(self.description, str(self.description))


@dataclass(frozen=True)
class Closed:
    """The server closed (or reset) the connection without a handshake answer."""


@dataclass(frozen=True)
class Ssl2ServerHello:
    """An SSL 2.0 SERVER-HELLO: the server speaks SSL 2.0."""


Answer = ServerHello | Alert | Closed | Ssl2ServerHello


class ProbeError(AssertionError):
    """The probe could not conclude (no answer in time, a preamble refused, an unparsable answer)."""


def parse_server_hello(body: bytes) -> ServerHello:
    try:
        version = struct.unpack_from(">H", body, 0)[0]
        pos = 2 + 32
        pos += 1 + body[pos]
        suite = struct.unpack_from(">H", body, pos)[0]
        compression = body[pos + 2]
        pos += 3
        extensions: dict[int, bytes] = {}
        if pos < len(body):
            end = pos + 2 + struct.unpack_from(">H", body, pos)[0]
            pos += 2
            while pos < end:
                kind, size = struct.unpack_from(">HH", body, pos)
                extensions[kind] = body[pos + 4 : pos + 4 + size]
                pos += 4 + size
    except (struct.error, IndexError) as exc:
        raise ProbeError(f"unparsable ServerHello {body[:64].hex()}: {exc}") from None
    if EXT_SUPPORTED_VERSIONS in extensions:
        version = struct.unpack(">H", extensions[EXT_SUPPORTED_VERSIONS][:2])[0]
    return ServerHello(version, suite, compression, extensions)


class _Conn:
    """A TCP connection with a read buffer shared by the plaintext preamble and the TLS answer."""

    def __init__(self, port: int, timeout: float) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""

    def fill(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        except TimeoutError:
            raise ProbeError("no answer from the server in time") from None
        self.buffer += data
        return bool(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if not self.fill():
                raise ProbeError(f"connection closed during the preamble after {self.buffer[:200]!r}")
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def exactly(self, n: int) -> bytes | None:
        while len(self.buffer) < n:
            if not self.fill():
                return None
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def close(self) -> None:
        self.sock.close()


def _smtp_reply(conn: _Conn) -> tuple[int, list[bytes]]:
    lines = []
    while True:
        line = conn.line()
        lines.append(line)
        if line[3:4] != b"-":
            return int(line[:3]), lines


def starttls_smtp(conn: _Conn) -> None:
    """RFC 3207: greeting, EHLO, STARTTLS, 220."""
    code, lines = _smtp_reply(conn)
    if code != 220:
        raise ProbeError(f"SMTP greeting {lines}")
    conn.sock.sendall(b"EHLO probe.example\r\n")
    code, lines = _smtp_reply(conn)
    if code != 250 or not any(line[4:].upper() == b"STARTTLS" for line in lines):
        raise ProbeError(f"EHLO answer without STARTTLS: {lines}")
    conn.sock.sendall(b"STARTTLS\r\n")
    code, lines = _smtp_reply(conn)
    if code != 220:
        raise ProbeError(f"STARTTLS refused: {lines}")


def starttls_imap(conn: _Conn) -> None:
    """RFC 3501 §6.2.1: greeting, STARTTLS, tagged OK."""
    greeting = conn.line()
    if not greeting.startswith(b"* OK") or b"STARTTLS" not in greeting:
        raise ProbeError(f"IMAP greeting {greeting!r}")
    conn.sock.sendall(b"p1 STARTTLS\r\n")
    while True:
        line = conn.line()
        if line.startswith(b"p1 "):
            if not line.startswith(b"p1 OK"):
                raise ProbeError(f"STARTTLS refused: {line!r}")
            return


PREAMBLES = {"smtp": starttls_smtp, "imap": starttls_imap, None: None}


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    starttls: str | None  # "smtp", "imap" or None (TLS from the first octet)
    timeout: float = 10.0

    def probe(self, hello: bytes) -> Answer:
        """Send `hello` (after the STARTTLS preamble, if any) and classify the server's first answer."""
        conn = _Conn(self.port, self.timeout)
        try:
            preamble = PREAMBLES[self.starttls]
            if preamble is not None:
                preamble(conn)
            conn.sock.sendall(hello)
            return _answer(conn)
        finally:
            conn.close()


def _answer(conn: _Conn) -> Answer:
    head = conn.exactly(5)
    if head is None:
        if conn.buffer[:1] and conn.buffer[0] & 0x80 and conn.buffer[2:3] == b"\x04":
            return Ssl2ServerHello()
        if conn.buffer:
            raise ProbeError(f"short answer {conn.buffer.hex()}")
        return Closed()
    if head[0] & 0x80 and head[2] == 0x04:  # SSL 2.0 record header, SERVER-HELLO
        return Ssl2ServerHello()
    kind, _version, length = struct.unpack(">BHH", head)
    record = conn.exactly(length)
    if record is None:
        raise ProbeError(f"record of {length} octets cut short after {head.hex()}")
    if kind == 0x15 and len(record) >= 2:
        return Alert(record[0], record[1])
    if kind == 0x16 and record[:1] == b"\x02":
        size = int.from_bytes(record[1:4], "big")
        body = record[4 : 4 + size]
        while len(body) < size:  # a ServerHello split over records (legal, never seen from OpenSSL)
            more_head = conn.exactly(5)
            if more_head is None:
                raise ProbeError("ServerHello cut short")
            more = conn.exactly(struct.unpack(">H", more_head[3:5])[0])
            if more is None:
                raise ProbeError("ServerHello cut short")
            body += more[: size - len(body)]
        return parse_server_hello(body)
    raise ProbeError(f"unexpected first record {head.hex()} {record[:32].hex()}")


# ---------------------------------------------------------------------------------------------- scans


def refused(answer: Answer) -> bool:
    return isinstance(answer, Alert | Closed)


def accepted_suites(target: Target, version: int, candidates: Sequence[int], *, limit: int = 64) -> list[int]:
    """Every suite of `candidates` the server accepts at `version`, in the order it chose them."""
    remaining = list(candidates)
    found: list[int] = []
    for _ in range(limit):
        if not remaining:
            return found
        answer = target.probe(client_hello(version, remaining))
        if refused(answer):
            return found
        if not isinstance(answer, ServerHello) or answer.version != version or answer.suite not in remaining:
            raise ProbeError(f"{target.name}: offered {VERSION_NAMES[version]} and got {answer}")
        found.append(answer.suite)
        remaining.remove(answer.suite)
    raise ProbeError(f"{target.name}: more than {limit} suites accepted at {VERSION_NAMES[version]}")


@dataclass
class Scan:
    """What one listener accepts."""

    target: Target
    versions: dict[str, Answer] = field(default_factory=dict)  # version name -> answer to a hello offering all
    suites: dict[str, list[int]] = field(default_factory=dict)  # accepted version name -> suites, by preference


def scan(target: Target) -> Scan:
    """Each protocol version offered alone with every suite, then the suites of each accepted version."""
    result = Scan(target)
    result.versions["SSLv2"] = target.probe(ssl2_client_hello())
    for version in (SSL3, TLS10, TLS11, TLS12):
        result.versions[VERSION_NAMES[version]] = target.probe(client_hello(version, LEGACY_SUITES))
    result.versions["TLSv1.3"] = target.probe(client_hello(TLS13, TLS13_SUITES))
    for version, candidates in ((TLS12, LEGACY_SUITES), (TLS13, TLS13_SUITES)):
        if isinstance(result.versions[VERSION_NAMES[version]], ServerHello):
            result.suites[VERSION_NAMES[version]] = accepted_suites(target, version, candidates)
    return result
