"""S/MIME work off the event loop: a pool of processes that protect and open messages.

Implementation notes
- Signing, key transport and AES over a 10 KB message cost milliseconds of CPU and hold the GIL in
  asn1crypto's Python code: threads would stall the loop's other sessions, so processes do it
  (domain brief §10, design: "CPU-heavy work runs in a process pool").
- Only DER and PKCS#8 octets cross the process boundary (picklable, no live key objects): a private key
  is loaded in the worker that uses it and dropped with the call ("private keys are loaded only where
  they are used"). The parent holds it unsealed only between reading it and handing it over.
- `workers=0` runs the same functions in a thread (tests, tiny deployments): same results, loop still free.
- A worker leaves when its node dies without closing the pool (SIGKILL, a crash): each holds both ends
  of the executor's call pipe, so it would never see EOF and would live on, orphaned, with its memory.
  Outside systemd's cgroup (tests, a shell) nothing else reaps it; it watches for its reparenting.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.smime import cms, mime


@dataclass(frozen=True)
class OpenedDer:
    """`mime.Opened` with the signers' certificates as DER (what comes back from a worker process)."""

    message: bytes
    wrapped: bool
    signers: list[tuple[bytes | None, bool, str]]  # (certificate DER, signature ok, reason)
    certificates: list[bytes]


def _key(pkcs8: bytes) -> cms.PrivateKey:
    # The RSA consistency check on load costs ~40 ms (about 60 signatures: bench/smime.py). These keys
    # come from the node's store, sealed with AES-GCM since they were checked at import
    # (MailboxRepository.add_certificate), so the check is skipped.
    key = serialization.load_der_private_key(pkcs8, password=None, unsafe_skip_rsa_key_validation=True)
    if not isinstance(key, cms.PrivateKey):
        raise cms.CmsError("weak-algorithm", "the signing key is neither RSA nor EC")
    return key


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def protect_der(
    message: bytes,
    signer: bytes,
    key: bytes,
    chain: Sequence[bytes],
    recipients: Sequence[tuple[bytes, bool]],
    gcm: bool,
) -> bytes:
    """mime.protect with DER/PKCS#8 inputs (runs in a worker process)."""
    return mime.protect(
        message,
        signer=x509.load_der_x509_certificate(signer),
        key=_key(key),
        chain=[x509.load_der_x509_certificate(c) for c in chain],
        recipients=[cms.Recipient(x509.load_der_x509_certificate(c), oaep) for c, oaep in recipients],
        gcm=gcm,
    )


def encrypt_signed_der(message: bytes, recipients: Sequence[tuple[bytes, bool]], gcm: bool) -> bytes:
    """mime.encrypt_signed with DER inputs (runs in a worker process)."""
    return mime.encrypt_signed(
        message, [cms.Recipient(x509.load_der_x509_certificate(c), oaep) for c, oaep in recipients], gcm=gcm
    )


def verify_der(message: bytes) -> OpenedDer:
    """The signature checks of a message its author signed (runs in a worker process)."""
    content, signed = mime.verify_entity(message)
    return OpenedDer(
        content,
        False,
        [(_der(s.certificate) if s.certificate else None, s.ok, s.reason) for s in signed.signers],
        [_der(c) for c in signed.certificates],
    )


def unprotect_der(message: bytes, certificate: bytes, key: bytes) -> OpenedDer:
    """mime.unprotect with DER/PKCS#8 inputs (runs in a worker process)."""
    opened = mime.unprotect(message, x509.load_der_x509_certificate(certificate), _key(key))
    return OpenedDer(
        opened.message,
        opened.wrapped,
        [(_der(s.certificate) if s.certificate else None, s.ok, s.reason) for s in opened.signed.signers],
        [_der(c) for c in opened.signed.certificates],
    )


ORPHAN_CHECK = 1.0
"""Seconds between a worker's looks at its parent."""


def _leave_when_orphaned(parent: int) -> None:
    """A worker's initializer: a daemon thread that ends the process once `parent` is gone."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_CHECK)
        os._exit(0)  # nothing to flush: a worker holds no state between calls

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


class CryptoPool:
    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor: concurrent.futures.Executor | None = None

    def _pool(self) -> concurrent.futures.Executor:
        if self._executor is None:
            if self.workers > 0:
                # "spawn": a fork of a process running an event loop and threads is unsafe (and would copy
                # the parent's memory, keys included, into every worker)
                context = multiprocessing.get_context("spawn")
                self._executor = concurrent.futures.ProcessPoolExecutor(
                    self.workers, mp_context=context, initializer=_leave_when_orphaned, initargs=(os.getpid(),)
                )
            else:
                self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="smime")
        return self._executor

    async def protect(
        self,
        message: bytes,
        *,
        signer: bytes,
        key: bytes,
        chain: Sequence[bytes] = (),
        recipients: Sequence[tuple[bytes, bool]],
        gcm: bool = False,
    ) -> bytes:
        call = partial(protect_der, message, signer, key, list(chain), list(recipients), gcm)
        return await asyncio.get_running_loop().run_in_executor(self._pool(), call)

    async def encrypt_signed(
        self, message: bytes, *, recipients: Sequence[tuple[bytes, bool]], gcm: bool = False
    ) -> bytes:
        call = partial(encrypt_signed_der, message, list(recipients), gcm)
        return await asyncio.get_running_loop().run_in_executor(self._pool(), call)

    async def verify(self, message: bytes) -> OpenedDer:
        return await asyncio.get_running_loop().run_in_executor(self._pool(), partial(verify_der, message))

    async def unprotect(self, message: bytes, *, certificate: bytes, key: bytes) -> OpenedDer:
        call = partial(unprotect_der, message, certificate, key)
        return await asyncio.get_running_loop().run_in_executor(self._pool(), call)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
