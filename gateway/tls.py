"""TLS contexts of every listener and outbound connection: one policy, the trust space's.

Implementation notes
- TLS 1.2 and 1.3 only. TLS 1.2 cipher suites are exactly the four ECDHE-RSA-AES suites of the
  MSSanté client-operator profile (Référentiel #2); TLS 1.3 suites are OpenSSL's defaults (all AEAD).
- No compression (CRIME), no renegotiation, server cipher preference, no session tickets (stateless
  tickets would outlive key rotation; session resumption is not worth it for mail sessions).
- Mutual TLS (operator relay, APP mailboxes) verifies client certificates against the pinned
  trust-space root only, never the system store: the trust space is private.
"""

from __future__ import annotations

import ssl
import stat
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.audit.oplog import get_logger
from gateway.errors import ConfigError

log = get_logger(component="tls")

MSSANTE_TLS12_CIPHERS = (
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES256-SHA384",
    "ECDHE-RSA-AES128-SHA256",
)


# asyncio's TLS transport gives every connection a read buffer of 256 KiB (asyncio.sslproto.SSLProtocol
# .max_size in CPython 3.11), zero-filled and so resident: 2.5 GB for 10,000 idle IMAP sessions. 32 KiB
# holds two full TLS records; bulk reads only take a few more loop turns. Measured in bench/imap.py.
ASYNCIO_TLS_BUFFER = 32 * 1024


def shrink_asyncio_tls_buffers() -> None:
    """Make the read buffer of every asyncio TLS connection opened from now on ASYNCIO_TLS_BUFFER bytes."""
    from asyncio import sslproto

    if getattr(sslproto.SSLProtocol, "max_size", 0) > ASYNCIO_TLS_BUFFER:
        sslproto.SSLProtocol.max_size = ASYNCIO_TLS_BUFFER


def _harden(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(":".join(MSSANTE_TLS12_CIPHERS))
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= ssl.OP_NO_TICKET
    return ctx


def server_context(
    cert_chain: Path, key: Path, *, client_ca: Path | None = None, require_client_cert: bool = False
) -> ssl.SSLContext:
    """A listener's context; `cert_chain` is the certificate followed by its intermediates."""
    ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    # TLS 1.3 resumption would skip the client certificate's check against newer CRLs (OpenSSL's
    # tickets are stateful under OP_NO_TICKET, so still issued): none is issued.
    ctx.num_tickets = 0
    try:
        ctx.load_cert_chain(cert_chain, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS certificate {cert_chain} / key {key}: {exc}") from None
    if client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the trust anchor {client_ca}: {exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


CRL_SUFFIXES = (".pem", ".crl", ".der")

CrlStamp = tuple[tuple[str, float, int], ...]


def crl_stamp(directory: Path | None) -> CrlStamp:
    """What changes when a CRL file of `directory` is added, replaced or removed (names, mtimes, sizes)."""
    if directory is None:
        return ()
    stamp: list[tuple[str, float, int]] = []
    try:
        names = sorted(p for p in directory.iterdir() if p.suffix.lower() in CRL_SUFFIXES)
    except OSError:  # no such directory (yet): no CRLs
        return ()
    for path in names:
        try:
            st = path.stat()
        except OSError:  # removed since it was listed
            continue
        if stat.S_ISREG(st.st_mode):
            stamp.append((str(path), st.st_mtime, st.st_size))
    return tuple(stamp)


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """A CRL in PEM or DER (ValueError when it is neither)."""
    return x509.load_pem_x509_crl(data) if b"-----BEGIN X509 CRL-----" in data else x509.load_der_x509_crl(data)


CrlRead = tuple[list[x509.CertificateRevocationList], list[tuple[str, str]]]
_read_cache: dict[CrlStamp, CrlRead] = {}


def read_crls(stamp: CrlStamp) -> CrlRead:
    """The CRLs of the files in `stamp` (PEM or DER), each once, and (path, error) for unreadable files.

    A directory may hold one CRL in both encodings (the development PKI writes both), and crl-cache/
    holds DER: both are read, duplicates dropped. A node's contexts (relay in, relay out, clients) and
    its S/MIME trust store all read the same directory when it changes: the last reads are kept, by
    stamp, so that a trust space's CRLs of several MB are parsed once, not four times."""
    if stamp in _read_cache:
        return _read_cache[stamp]
    read = _read(stamp)
    if len(_read_cache) >= 4:
        _read_cache.pop(next(iter(_read_cache)))
    _read_cache[stamp] = read
    return read


def _read(stamp: CrlStamp) -> CrlRead:
    crls: list[x509.CertificateRevocationList] = []
    seen: set[bytes] = set()
    errors: list[tuple[str, str]] = []
    for name, _, _ in stamp:
        try:
            crl = load_crl(Path(name).read_bytes())
        except (OSError, ValueError) as exc:
            errors.append((name, str(exc)))
            continue
        der = crl.public_bytes(serialization.Encoding.DER)
        if der not in seen:
            seen.add(der)
            crls.append(crl)
    return crls, errors


def add_crls(ctx: ssl.SSLContext, crls: Sequence[x509.CertificateRevocationList]) -> None:
    """Check every certificate of a peer's chain against `crls` (VERIFY_CRL_CHECK_CHAIN).

    Fails closed as the S/MIME checks do (pyhanko-certvalidator's hard-fail): a chain certificate whose
    CA has no CRL here, or only an expired one, fails the handshake; with no CRL at all, every chain
    does. The ssl module loads CRLs only from a PEM file (cadata takes certificates only), hence the
    temporary file; CRLs are public."""
    if crls:
        with tempfile.NamedTemporaryFile(prefix="mssgw-crls-", suffix=".pem") as bundle:
            bundle.write(b"".join(crl.public_bytes(serialization.Encoding.PEM) for crl in crls))
            bundle.flush()
            ctx.load_verify_locations(cafile=bundle.name)
    ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN


class CrlContexts:
    """A TLS context built by `build` with the current CRLs of `crl_dir`, rebuilt when a CRL file changes.

    `get()` is called for each new connection (the relay listener) or session (the relay client), so
    a freshly published or fetched CRL applies to the next handshake; the files are looked at (one
    stat each) on every call, read only when they changed. With a directory configured, CRLs are
    checked even while it holds none (crl-cache/ before its first fetch): every chain fails until they
    come. With none (`crl_dir` None: an external PKI naming no CRL source), no CRL is checked.
    A new context also has an empty TLS session cache: no session from before a CRL change resumes."""

    def __init__(self, build: Callable[[], ssl.SSLContext], crl_dir: Path | None) -> None:
        self.build, self.crl_dir = build, crl_dir
        self._stamp: CrlStamp | None = None
        self._ctx: ssl.SSLContext | None = None
        self.crls: list[x509.CertificateRevocationList] = []  # those of the current context

    def revoked(self, certificate: x509.Certificate) -> bool | None:
        """Whether the current CRLs revoke `certificate`: None when its issuer has no current CRL here
        (or no directory is configured: then False). For a certificate whose TLS session may have been
        resumed, so not checked in the handshake (TLS 1.2 session ids: no ssl API turns them off)."""
        if self.crl_dir is None:
            return False
        self.get()
        now = datetime.now(UTC)
        current = [
            crl
            for crl in self.crls
            if crl.issuer == certificate.issuer and (crl.next_update_utc is None or crl.next_update_utc > now)
        ]
        if not current:
            return None
        return any(crl.get_revoked_certificate_by_serial_number(certificate.serial_number) for crl in current)

    def get(self) -> ssl.SSLContext:
        stamp = crl_stamp(self.crl_dir)
        if self._ctx is None or stamp != self._stamp:
            crls, errors = read_crls(stamp)
            for path, error in errors:
                log.warning("tls.crl_unreadable", path=path, error=error)
            try:
                ctx = self.build()
                if self.crl_dir is not None:
                    add_crls(ctx, crls)
            except (ConfigError, OSError, ssl.SSLError) as exc:
                if self._ctx is None:
                    raise
                # Called for each connection: one bad rebuild must not refuse them all. Logged, and not
                # tried again until the CRL files change.
                log.warning("tls.context_not_rebuilt", error=str(exc))
                self._stamp = stamp
                return self._ctx
            self._ctx, self._stamp, self.crls = ctx, stamp, crls
        return self._ctx

    def live(self) -> ssl.SSLContext:
        """One context for a listener that keeps the one it was given (asyncio's implicit TLS servers,
        STARTTLS sessions): each handshake moves, at its ClientHello, to the context with the current
        CRLs. That switch is what `SSLContext.sni_callback` is documented for; it runs for every
        ClientHello, with or without a server name. OpenSSL copies the verification flags at SSL_new,
        from this first context, and keeps the session cache there: a resumed TLS 1.2 session is not
        checked again, hence `revoked()` where a certificate is taken for a login."""
        first = self.get()

        def switch(conn: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _ctx: ssl.SSLContext) -> None:
            current = self.get()
            if current is not first:
                conn.context = current

        first.sni_callback = switch
        return first


class RelayContexts(CrlContexts):
    """TLS contexts for the operator relay listener, with the node's current CRLs (see CrlContexts).

    The client certificate is requested and, when sent, verified against the pinned root with the
    CRLs of every CA in its chain (`add_crls`). An untrusted or revoked certificate ends the handshake
    with the matching TLS alert; a missing one is left to the SMTP layer, which refuses the transaction
    with a precise reply.
    """

    def __init__(self, cert_chain: Path, key: Path, trust_anchor: Path, crl_dir: Path | None) -> None:
        super().__init__(
            lambda: server_context(cert_chain, key, client_ca=trust_anchor, require_client_cert=False), crl_dir
        )


def refusal_reason(exc: BaseException) -> str:
    """Why a handshake failed, for the audit record: OpenSSL's verification message for a refused
    certificate ("certificate revoked", "unable to get certificate CRL"), else its reason code
    ("WRONG_VERSION_NUMBER"), else the kind of error (a reset, a timeout)."""
    return (
        getattr(exc, "verify_message", None)
        or (getattr(exc, "reason", None) if isinstance(exc, ssl.SSLError) else None)
    ) or type(exc).__name__


def client_context(trust_anchor: Path, *, cert_chain: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """An outbound context pinned to the trust-space root, presenting our certificate when given."""
    ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    try:
        ctx.load_verify_locations(cafile=trust_anchor)
        if cert_chain is not None and key is not None:
            ctx.load_cert_chain(cert_chain, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS material: {exc}") from None
    return ctx
