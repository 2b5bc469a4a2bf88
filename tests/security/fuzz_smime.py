"""Coverage-guided fuzz target (atheris, libFuzzer) for MIME and CMS parsing of what peers and clients send.

Run from the repository root, with material from `tests/security/smime_seeds.py` (a trust space, the
recipient's key, real protected messages as seeds):

    PYTHONPATH=. python tests/security/smime_seeds.py /tmp/smime-fuzz
    MSSGW_FUZZ_SMIME=/tmp/smime-fuzz PYTHONPATH=. python tests/security/fuzz_smime.py \
        -max_total_time=600 -timeout=10 /tmp/smime-corpus /tmp/smime-fuzz/seeds

(`MSSGW_FUZZ_STRICT=1` makes the known bugs below findings again, e.g. to minimise one with
`-minimize_crash=1`.)

What untrusted octets reach, and where (gateway/smime/service.py, inbound.py, pool.py):
- relay in (25): `mime.envelope_der`, `cms.addressed_to`, then in the crypto pool `unprotect_der`
  (`cms.decrypt`, `mime.verify_entity`, `cms.verify`), then `inbound.judge` (the signer checks of
  `trust.TrustStore.check` on the certificates the message carries), `authentication_results`,
  `strip_results`, `from_addresses`;
- submission (587/465), end-to-end forms: `mime.form`, `verify_der` (`mime.verify_entity`), `judge`.

The first octet picks a mode, the rest is the payload:
- 0 MESSAGE: the payload is a message from a peer, through the relay's whole inbound path;
- 1 SUBMITTED: a message from an authenticated client, through the submission's end-to-end checks;
- 2 DER: CMS octets straight to `cms.verify` (detached and not), `cms.decrypt`, `describe`, `addressed_to`;
- 3 INNER: the payload is what a peer encrypts (any peer can encrypt anything for us): it is encrypted
  for the recipient here, then goes through the relay's inbound path. Mutations of a real signed
  entity reach the signature checks this way, which mutations of ciphertext never would.

Property: the only exception is `cms.CmsError` (and its `mime.MimeError`), where the code declares it;
`mime.form`, `is_enveloped`, `strip_results`, `from_addresses` and `inbound.judge` never raise. Any
other exception is a finding, except those `KNOWN_BUGS` lists per entry point (each with its xfail test
in tests/security/test_fuzz.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

if __name__ == "__main__":
    import atheris  # type: ignore[import-untyped]

    _instrument = atheris.instrument_imports(include=["gateway"])
else:
    _instrument = contextlib.nullcontext()

with _instrument:
    from gateway.smime import cms, inbound, mime
    from gateway.smime.pool import OpenedDer, unprotect_der, verify_der
    from gateway.smime.trust import SignerVerdict, TrustStore

from cryptography import x509
from cryptography.hazmat.primitives import serialization

MODES = ("MESSAGE", "SUBMITTED", "DER", "INNER")
HOST = "mail.ch-b.mssante.fr"
SENDER = "alice.martin@ch-a.mssante.fr"
OUTER = (
    f"From: <{SENDER}>\r\nTo: <bob.durand@ch-b.mssante.fr>\r\nDate: Mon, 02 Mar 2026 10:15:30 +0100\r\n"
    "Message-ID: <cr1@ch-a.mssante.fr>\r\nMIME-Version: 1.0\r\n"
).encode()
AT = dt.datetime.now(dt.UTC)
STRICT = os.environ.get("MSSGW_FUZZ_STRICT") == "1"

# Exceptions that escape today, by the entry point the node calls (each reported, with its xfail test in
# tests/security/test_fuzz.py). Such an input is not a finding of this run; any other exception is.
# Remove an entry when its bug is fixed: its xfail test then passes, which strict xfail reports.
# Empty since the fixes of the first findings (regressions/smime: the signer checks read an unknown
# signature algorithm, malformed or repeated extensions and names; cms.verify, addressed_to and describe
# let x509.InvalidVersion, UnsupportedAlgorithm and asn1crypto's lazy ValueError out): now CmsError or
# an "untrusted" signer verdict.
KNOWN_BUGS: dict[str, tuple[type[Exception], ...]] = {}

T = TypeVar("T")


class KnownBug(Exception):
    """An input that hit a bug of KNOWN_BUGS: the rest of its checks are skipped."""


def call(entry: str, function: Callable[..., T], *args: object) -> T:
    """`function(*args)`, turning an exception KNOWN_BUGS lists for `entry` into KnownBug (unless STRICT)."""
    try:
        return function(*args)
    except cms.CmsError:
        raise
    except KNOWN_BUGS.get(entry, ()) as exc:
        if STRICT:
            raise
        raise KnownBug(entry) from exc


class Material:
    """The recipient's certificate and key, and the trust store the signer checks use."""

    def __init__(self, directory: Path) -> None:
        self.cert = x509.load_pem_x509_certificate((directory / "bob.pem").read_bytes())
        key = serialization.load_pem_private_key((directory / "bob.key").read_bytes(), password=None)
        assert isinstance(key, cms.PrivateKey)
        self.key = key
        self.cert_der = self.cert.public_bytes(serialization.Encoding.DER)
        self.key_der = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        root = x509.load_pem_x509_certificate((directory / "root.pem").read_bytes())
        cas = [x509.load_pem_x509_certificate(p.read_bytes()) for p in sorted((directory / "ca").glob("*.pem"))]
        crls = [p.read_bytes() for p in sorted((directory / "crl").glob("*.der"))]
        self.trust = TrustStore([root], crls, cas)
        self.loop = asyncio.new_event_loop()


def load_material() -> Material:
    found = os.environ.get("MSSGW_FUZZ_SMIME")
    if found:
        return Material(Path(found))
    from tests.security.smime_seeds import write_material

    directory = Path(tempfile.mkdtemp(prefix="smime-fuzz-"))
    write_material(directory)
    print(f"S/MIME fuzz material (seeds in {directory / 'seeds'})", file=sys.stderr)
    return Material(directory)


_material: Material | None = None


def material() -> Material:
    global _material
    if _material is None:
        _material = load_material()
    return _material


def _declared(exc: cms.CmsError) -> None:
    """The declared error carries its machine-readable reason (the SMTP reply and the audit name it)."""
    assert isinstance(exc.reason, str), exc
    assert exc.reason, exc


def _judged(m: Material, opened: OpenedDer, addresses: list[str]) -> None:
    """inbound.judge as the relay and the submission call it: a verdict or a reason, nothing raised."""

    def judge() -> SignerVerdict | str:
        return m.loop.run_until_complete(inbound.judge(opened, addresses, m.trust, AT))

    judged = call("inbound.judge", judge)
    if isinstance(judged, str):
        assert judged in inbound.REFUSALS, judged
        return
    assert isinstance(judged, SignerVerdict), judged
    assert judged.ok, judged
    field = inbound.authentication_results(HOST, judged, AT, addresses)
    assert field.startswith(b"Authentication-Results: ")
    assert field.endswith(b"\r\n")


def _relay_path(m: Material, message: bytes) -> None:
    """What service.open and inbound.check do with a peer's message for the recipient (bob)."""
    assert isinstance(mime.is_enveloped(message), bool)
    assert isinstance(inbound.strip_results(message, HOST), bytes)
    try:
        der = mime.envelope_der(message)
        hits = call("cms.addressed_to", cms.addressed_to, der, [m.cert])
        assert isinstance(hits, list)
        assert len(hits) == 1
        opened = call("pool.unprotect_der", unprotect_der, message, m.cert_der, m.key_der)
    except cms.CmsError as exc:
        _declared(exc)
        return
    addresses = [SENDER, *inbound.from_addresses(opened.message)]
    assert isinstance(inbound.strip_results(opened.message, HOST), bytes)
    _judged(m, opened, addresses)


def _submission_path(m: Material, message: bytes) -> None:
    """What service.check_submission does with a client's message (its signed form)."""
    form = mime.form(message)
    assert form in ("enveloped", "signed", "plain"), form
    assert isinstance(inbound.from_addresses(message), list)
    try:
        opened = call("pool.verify_der", verify_der, message)
    except cms.CmsError as exc:
        _declared(exc)
        return
    _judged(m, opened, [SENDER])


def _der_path(m: Material, der: bytes) -> None:
    for entry, function, args in (
        ("cms.verify", cms.verify, (der,)),
        ("cms.verify", cms.verify, (der, b"content")),
        ("cms.decrypt", cms.decrypt, (der, m.cert, m.key)),
        ("cms.describe", cms.describe, (der,)),
        ("cms.addressed_to", cms.addressed_to, (der, [m.cert])),
    ):
        try:
            call(entry, function, *args)
        except cms.CmsError as exc:
            _declared(exc)
        except KnownBug:
            pass


def check(data: bytes) -> None:
    """Every property above for one input (raises what escaped, or AssertionError)."""
    if not data:
        return
    m = material()
    mode, payload = MODES[data[0] % len(MODES)], data[1:]
    try:
        if mode == "MESSAGE":
            _relay_path(m, payload)
        elif mode == "SUBMITTED":
            _submission_path(m, payload)
        elif mode == "DER":
            _der_path(m, payload)
        else:
            enveloped = mime.enveloped_message(OUTER, cms.encrypt(payload, [cms.Recipient(m.cert)]))
            _relay_path(m, enveloped)
    except KnownBug:
        pass


def TestOneInput(data: bytes) -> None:  # the name atheris expects
    check(data)


def main() -> None:
    material()  # before libFuzzer starts timing inputs
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
