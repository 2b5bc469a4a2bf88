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
from pathlib import Path

from gateway.errors import ConfigError

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


class RelayContexts:
    """TLS contexts for the operator relay listener, rebuilt whenever a CRL file changes.

    The client certificate is requested and, when sent, verified against the pinned root with the
    CRLs of every CA in its chain (VERIFY_CRL_CHECK_CHAIN: a missing CRL fails closed). An untrusted or
    revoked certificate ends the handshake with the matching TLS alert; a missing one is left to the
    SMTP layer, which refuses the transaction with a precise reply.
    """

    def __init__(self, cert_chain: Path, key: Path, trust_anchor: Path, crl_dir: Path | None) -> None:
        self.cert_chain, self.key, self.trust_anchor, self.crl_dir = cert_chain, key, trust_anchor, crl_dir
        self._stamp: tuple[tuple[str, float], ...] | None = None
        self._ctx: ssl.SSLContext | None = None

    def _crls(self) -> list[Path]:
        return sorted(self.crl_dir.glob("*.pem")) if self.crl_dir is not None and self.crl_dir.is_dir() else []

    def get(self) -> ssl.SSLContext:
        crls = self._crls()
        stamp = tuple((str(p), p.stat().st_mtime) for p in crls)
        if self._ctx is None or stamp != self._stamp:
            ctx = server_context(self.cert_chain, self.key, client_ca=self.trust_anchor, require_client_cert=False)
            for crl in crls:
                ctx.load_verify_locations(cafile=crl)
            if crls:
                ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN
            self._ctx, self._stamp = ctx, stamp
        return self._ctx


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
