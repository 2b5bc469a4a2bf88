"""Benchmark of S/MIME: protect (wrap + sign + encrypt) and open (decrypt + verify, + signer trust) per second.

    python bench/smime.py [--messages 500] [--workers CPUS] [--openssl-seconds 5] [--profile] [--json FILE]

Builds a small trust space in a temporary directory (certs/pki.py: root, AC PERSONNES, RSA 2048 like
the national PKI, fresh CRLs), a sender (claire.martin@hopital-a) and two recipients (paul.durand@,
accueil@clinique-b), and `--messages` distinct messages of exactly 10,240 octets (CRLF, the usual
header fields, a quoted-printable text part and a base64 PDF-like attachment). Then, in this one run:

  (a) reference, the physical limit: `openssl speed -seconds S rsa2048`, once in one process and once
      with `-multi W` (W = `--workers`): RSA 2048 private operations (sign/s) and public ones (verify/s).
  (1) protect: `gateway.smime.pool.protect_der`, what the node's crypto pool runs: load the sender's
      key (PKCS#8) and certificates (DER), wrap the message (message/rfc822), sign it detached (SHA-256,
      chain included), encrypt it with AES-256-CBC for 3 recipient entries (the two recipients and the
      sender's copy) with RSA-OAEP SHA-256. Cost in RSA: 1 private operation + 3 public ones.
  (2) unprotect: `gateway.smime.pool.unprotect_der`: load the recipient's key, decrypt (the OAEP key
      transport is 1 private operation, then AES), verify the signature (1 public operation), unwrap.
      Message i is opened by recipient entry i mod 3 (both recipients and the sender's copy).
  (3) unprotect + trust: (2), then `TrustStore.check` of the signer (pyhanko-certvalidator: path to the
      root, CRLs of both CAs in hard-fail mode, emailProtection, binding to the envelope sender and From:)
      in the same worker, on its own event loop. Still 1 private operation per message.

Each of (1), (2), (3) runs twice: in this process (the 1-process figure, no pool) and through a
ProcessPoolExecutor of W "spawn" workers (how gateway/smime/pool.py runs crypto off the node's event
loop), all N tasks submitted at once, one message per task. The pool's workers are started and warmed up
before the clock starts. Every result is checked: each protected message is opened by (2) and (3) and
must give back the original octets, with one signer, the sender's certificate, a good signature and
(3) a trusted signer bound by address. A wrong or missing result is a failure (exit status 1).

For each row the table gives messages/s, the ceiling that openssl's private operations/s imply (they
dominate: each of our messages costs exactly 1 private operation, openssl measured with the same process
count), our ratio to it, the CPU milliseconds per message (this process, or the pool's workers plus this
process) and the whole machine's CPU use (other work on the machine counts too: the machine line gives
the load average at the start). `--profile` profiles a one-process run of each operation with cProfile
and prints where the time goes (RSA private and public operations, key loading, asn1crypto, certificate
validation, the rest) and the top functions by own time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import cProfile
import datetime as dt
import io
import json
import multiprocessing
import os
import platform
import pstats
import quopri
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: the checkout's packages (and again in spawned workers)

import cryptography  # noqa: E402
from common import cores_busy, cpu_times, self_cpu_seconds  # noqa: E402 (bench/common.py)
from cryptography import x509  # noqa: E402
from cryptography.hazmat.backends.openssl import backend as openssl_backend  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402

from certs.pki import TrustSpacePKI  # noqa: E402
from gateway.smime import cms, mime, pool  # noqa: E402
from gateway.smime.trust import TrustStore  # noqa: E402

SIZE = 10_240
A, B = "hopital-a.mssante.test", "clinique-b.mssante.test"
SENDER = f"claire.martin@{A}"
RECIPIENTS = (f"paul.durand@{B}", f"accueil@{B}")
PROFILE_MESSAGES = 100
KEY_LOADS = 20
STEP_RUNS = 40
OPERATIONS = {
    "protect": "(1) protect: wrap + sign + encrypt x3",
    "unprotect": "(2) unprotect: decrypt + verify",
    "trusted": "(3) unprotect + trust check (path + CRL)",
}
# RSA operations per message (the private one bounds the rate; openssl's verify/s prices the public ones)
PRIVATE_OPS = {"protect": 1, "unprotect": 1, "trusted": 1}
PUBLIC_OPS = {"protect": 3, "unprotect": 1, "trusted": 1}


# -- the trust space and the messages -------------------------------------------------------------


@dataclass(frozen=True)
class Holder:
    address: str
    certificate: bytes  # DER
    key: bytes  # PKCS#8 DER, unencrypted: what the node hands its crypto pool


@dataclass(frozen=True)
class Space:
    sender: Holder
    recipients: tuple[Holder, ...]  # the two recipients, then the sender's copy
    chain: tuple[bytes, ...]  # the sender's intermediates (DER), included in the signature
    anchors: tuple[bytes, ...]
    crls: tuple[bytes, ...]


def trust_space(directory: Path) -> Space:
    pki = TrustSpacePKI.create(directory, label="BENCH SMIME", crl_base_url="http://crl.mssante.test")

    def holder(address: str) -> tuple[Holder, tuple[bytes, ...]]:
        issued = pki.issue_address(address)
        key = issued.key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        der = issued.certificate.public_bytes(serialization.Encoding.DER)
        return Holder(address, der, key), tuple(c.public_bytes(serialization.Encoding.DER) for c in issued.chain)

    sender, chain = holder(SENDER)
    others = [holder(r)[0] for r in RECIPIENTS]
    crls = tuple(path.read_bytes() for path in pki.publish_crls().values())
    root = pki.root.public_bytes(serialization.Encoding.DER)
    return Space(sender, (*others, sender), chain, (root,), crls)


TEXT = """Bonjour,

Veuillez trouver ci-joint le compte rendu de consultation de votre patient, vu ce jour en cardiologie.
L'échographie transthoracique ne montre pas d'anomalie significative ; le traitement est inchangé.
Un contrôle est prévu dans six mois. Je reste à votre disposition pour tout complément.

Bien confraternellement,

Dr Claire Martin
Service de cardiologie, Hôpital A
"""


def _b64_lines(data: bytes) -> bytes:
    text = base64.b64encode(data)
    return b"".join(text[i : i + 76] + b"\r\n" for i in range(0, len(text), 76))


def message(i: int, seed: int = 0) -> bytes:
    """Message i: exactly SIZE octets, CRLF, multipart/mixed with a text part and a PDF-like attachment."""
    rng = random.Random(seed * 1_000_003 + i)
    boundary = f"----=_Part_{i:06d}_{rng.getrandbits(40):010x}".encode()
    date = (dt.datetime(2026, 11, 22, 9, 0, tzinfo=dt.UTC) + dt.timedelta(seconds=37 * i)).strftime(
        "%a, %d %b %Y %H:%M:%S +0000"
    )
    header = (
        f"Return-Path: <{SENDER}>\r\n"
        f"From: Dr Claire Martin <{SENDER}>\r\n"
        f"To: Dr Paul Durand <{RECIPIENTS[0]}>, Accueil Clinique B <{RECIPIENTS[1]}>\r\n"
        f"Subject: =?UTF-8?Q?Compte_rendu_de_consultation_n=C2=B0{i:06d}?=\r\n"
        f"Date: {date}\r\n"
        f"Message-ID: <bench-smime-{i:06d}.{rng.getrandbits(32):08x}@{A}>\r\n"
        "MIME-Version: 1.0\r\n"
        "X-Mailer: mssgw-bench\r\n"
        f'Content-Type: multipart/mixed; boundary="{boundary.decode()}"\r\n\r\n'
    ).encode()
    text = quopri.encodestring(TEXT.replace("\n", "\r\n").encode())

    def assemble(reference: str, attachment: bytes) -> bytes:
        return (
            header
            + b"This is a multi-part message in MIME format.\r\n\r\n--"
            + boundary
            + b"\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
            + text
            + f"R=C3=A9f=C3=A9rence du dossier : {reference}\r\n\r\n--".encode()
            + boundary
            + b'\r\nContent-Type: application/pdf; name="compte-rendu.pdf"\r\nContent-Transfer-Encoding: base64\r\n'
            + b'Content-Disposition: attachment; filename="compte-rendu.pdf"\r\n\r\n'
            + _b64_lines(attachment)
            + b"--"
            + boundary
            + b"--\r\n"
        )

    reference = f"{i:06d}"
    pdf_head = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"
    room = SIZE - len(assemble(reference, b""))
    raw = room * 57 // 78  # base64 lines: 57 octets -> 76 characters + CRLF
    while len(assemble(reference, b"\0" * (raw + 1))) <= SIZE:
        raw += 1
    while len(assemble(reference, b"\0" * raw)) > SIZE:
        raw -= 1
    attachment = pdf_head + rng.randbytes(raw - len(pdf_head))
    gap = SIZE - len(assemble(reference, attachment))  # the few octets base64's granularity leaves
    out = assemble(reference if gap == 0 else reference + "/" + "0" * (gap - 1), attachment)
    assert len(out) == SIZE, len(out)
    return out


# -- the work (in this process or in a pool worker) -----------------------------------------------

_store: TrustStore | None = None
_loop: asyncio.AbstractEventLoop | None = None


def init_worker(anchors: Sequence[bytes], crls: Sequence[bytes]) -> None:
    """Pool initializer (and this process's set-up): the trust store and an event loop for its checks."""
    global _store, _loop
    _store = TrustStore([x509.load_der_x509_certificate(a) for a in anchors], crls)
    _loop = asyncio.new_event_loop()


def ping(delay: float) -> int:
    time.sleep(delay)
    return os.getpid()


def do_protect(
    msg: bytes, signer: bytes, key: bytes, chain: Sequence[bytes], recipients: Sequence[tuple[bytes, bool]]
) -> bytes:
    return pool.protect_der(msg, signer, key, chain, recipients, False)


def do_unprotect(msg: bytes, certificate: bytes, key: bytes) -> pool.OpenedDer:
    return pool.unprotect_der(msg, certificate, key)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str
    binding: str


def do_trusted(msg: bytes, certificate: bytes, key: bytes, sender: str) -> tuple[pool.OpenedDer, Verdict | None]:
    opened = pool.unprotect_der(msg, certificate, key)
    if not opened.signers or opened.signers[0][0] is None or _store is None or _loop is None:
        return opened, None
    signer = x509.load_der_x509_certificate(opened.signers[0][0])
    chain = [x509.load_der_x509_certificate(c) for c in opened.certificates]
    verdict = _loop.run_until_complete(_store.check(signer, chain, [sender, sender]))
    return opened, Verdict(verdict.ok, verdict.reason, verdict.binding)


# -- measuring ------------------------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux; 0 where /proc is missing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Row:
    op: str  # protect | unprotect | trusted
    processes: int
    pooled: bool
    messages: int
    correct: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    cpu_busy: float | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


Task = tuple[Callable[..., Any], tuple[Any, ...]]


def tasks(op: str, space: Space, inputs: Sequence[bytes]) -> list[Task]:
    if op == "protect":
        s = space.sender
        recipients = tuple((r.certificate, True) for r in space.recipients)
        return [(do_protect, (m, s.certificate, s.key, space.chain, recipients)) for m in inputs]
    holders = space.recipients
    if op == "unprotect":
        return [(do_unprotect, (m, holders[i % 3].certificate, holders[i % 3].key)) for i, m in enumerate(inputs)]
    return [
        (do_trusted, (m, holders[i % 3].certificate, holders[i % 3].key, space.sender.address))
        for i, m in enumerate(inputs)
    ]


def check(op: str, space: Space, originals: Sequence[bytes], results: Sequence[Any], row: Row) -> None:
    """Count the correct results; keep the first few reasons for the wrong ones."""

    def wrong(i: int, why: str) -> None:
        if len(row.errors) < 5:
            row.errors.append(f"message {i}: {why}")

    for i, (original, result) in enumerate(zip(originals, results, strict=True)):
        if isinstance(result, BaseException):
            wrong(i, f"{type(result).__name__}: {result}")
            continue
        if op == "protect":
            if not isinstance(result, bytes) or not mime.is_enveloped(result) or b"\r\nSubject:" in result:
                wrong(i, "not an enveloped message with the header protected")
                continue
            row.correct += 1
            continue
        opened, verdict = result if op == "trusted" else (result, None)
        if opened.message != original or not opened.wrapped:
            wrong(i, "the opened message differs from the original")
        elif len(opened.signers) != 1 or opened.signers[0][0] != space.sender.certificate:
            wrong(i, f"signers {[(s[1], s[2]) for s in opened.signers]} instead of the sender alone")
        elif not opened.signers[0][1]:
            wrong(i, f"bad signature ({opened.signers[0][2]})")
        elif op == "trusted" and (verdict is None or not verdict.ok or verdict.binding != "address"):
            wrong(i, f"signer not trusted ({verdict.reason if verdict else 'no verdict'})")
        else:
            row.correct += 1


def run_inline(op: str, space: Space, inputs: Sequence[bytes]) -> tuple[Row, list[Any]]:
    row = Row(op, 1, False, len(inputs))
    work = tasks(op, space, inputs)
    results: list[Any] = []
    machine_before, cpu_before, start = cpu_times(), self_cpu_seconds(), time.perf_counter()
    for fn, args in work:
        try:
            results.append(fn(*args))
        except Exception as exc:  # a failure is a result too: counted as wrong, reported
            results.append(exc)
    row.seconds = time.perf_counter() - start
    row.cpu_seconds = self_cpu_seconds() - cpu_before
    row.cpu_busy = cores_busy(machine_before, cpu_times())
    return row, results


def run_pooled(
    executor: concurrent.futures.ProcessPoolExecutor, workers: int, op: str, space: Space, inputs: Sequence[bytes]
) -> tuple[Row, list[Any]]:
    row = Row(op, workers, True, len(inputs))
    work = tasks(op, space, inputs)
    pids = list(executor._processes)  # started by the warm-up
    workers_before = sum(process_cpu_seconds(p) for p in pids)
    machine_before, cpu_before, start = cpu_times(), self_cpu_seconds(), time.perf_counter()
    futures = [executor.submit(fn, *args) for fn, args in work]
    results: list[Any] = []
    for f in futures:
        try:
            results.append(f.result())
        except Exception as exc:
            results.append(exc)
    row.seconds = time.perf_counter() - start
    own = self_cpu_seconds() - cpu_before
    row.cpu_busy = cores_busy(machine_before, cpu_times())
    row.cpu_seconds = own + sum(process_cpu_seconds(p) for p in pids) - workers_before
    return row, results


def warm_up(executor: concurrent.futures.ProcessPoolExecutor, workers: int, space: Space) -> None:
    """Start every worker (spawn: a fresh interpreter importing the gateway) and run each path once."""
    for f in [executor.submit(ping, 0.5) for _ in range(workers)]:
        f.result()
    sample = [message(0, seed=1)]
    protected = [executor.submit(do_protect, *tasks("protect", space, sample)[0][1]).result()]
    executor.submit(do_trusted, *tasks("trusted", space, protected)[0][1]).result()


def key_loading(key: bytes, n: int) -> dict[str, float]:
    """ms per load of a PKCS#8 RSA key as the pool loads it (OpenSSL checks the key), and without the check."""
    out: dict[str, float] = {}
    for name, skip in (("checked_ms", False), ("unchecked_ms", True)):
        start = time.perf_counter()
        for _ in range(n):
            serialization.load_der_private_key(key, password=None, unsafe_skip_rsa_key_validation=skip)
        out[name] = round((time.perf_counter() - start) / n * 1000, 3)
    return out


# -- the reference: openssl speed -----------------------------------------------------------------


@dataclass(frozen=True)
class Speed:
    processes: int
    seconds: int
    sign_per_second: float  # private operations, all processes together
    verify_per_second: float  # public operations
    cpu_seconds: float


def openssl_speed(seconds: int, processes: int) -> Speed:
    argv = ["openssl", "speed", "-seconds", str(seconds)]
    if processes > 1:
        argv += ["-multi", str(processes)]
    before = os.times()
    done = subprocess.run([*argv, "rsa2048"], capture_output=True, text=True, timeout=8 * seconds + 120, check=False)
    after = os.times()
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} rsa2048: exit status {done.returncode}: {done.stderr.strip()[-300:]}")
    found = re.search(r"^rsa\s+2048 bits\s+\S+\s+\S+\s+([\d.]+)\s+([\d.]+)\s*$", done.stdout, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"{' '.join(argv)} rsa2048: no 'rsa 2048 bits' line in its output")
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return Speed(processes, seconds, float(found.group(1)), float(found.group(2)), cpu)


# -- profile --------------------------------------------------------------------------------------

GROUPS = (
    ("RSA private operations (sign, decrypt)", re.compile(r"'(sign|decrypt)' of '.*RSAPrivateKey")),
    ("RSA public operations (encrypt, verify)", re.compile(r"'(encrypt|verify)' of '.*RSAPublicKey")),
    ("private key loading (PKCS#8, key check)", re.compile(r"load_der_private_key")),
    ("asn1crypto (CMS and certificate parsing, DER)", re.compile(r"[/\\]asn1crypto[/\\]")),
    ("pyhanko-certvalidator (path, CRL logic)", re.compile(r"[/\\]pyhanko_certvalidator[/\\]")),
    ("other cryptography (X.509, AES, hashes)", re.compile(r"cryptography|hashlib|_hashlib")),
    ("email header parsing", re.compile(r"[/\\]email[/\\]")),
    ("asyncio", re.compile(r"[/\\]asyncio[/\\]")),
)


def _where(key: tuple[str, int, str]) -> str:
    filename, line, name = key
    if filename == "~":
        return name
    short = filename
    for marker in ("site-packages/", "/lib/python3", str(ROOT) + "/"):
        if marker in filename:
            short = filename.split(marker, 1)[1]
            break
    return f"{short}:{line}({name})"


def profile(op: str, space: Space, inputs: Sequence[bytes], top: int = 10) -> dict[str, Any]:
    """cProfile of the one-process run of `op`: own time by group, and the top functions."""
    work = tasks(op, space, inputs)
    profiler = cProfile.Profile()
    profiler.enable()
    for fn, args in work:
        fn(*args)
    profiler.disable()
    stats = pstats.Stats(profiler, stream=io.StringIO())
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values())
    groups = {name: 0.0 for name, _ in GROUPS}
    groups["everything else (our code, stdlib)"] = 0.0
    for key, (_cc, _nc, own, _cum, _callers) in raw.items():
        where = _where(key) if key[0] == "~" else key[0]
        for name, pattern in GROUPS:
            if pattern.search(where):
                groups[name] += own
                break
        else:
            groups["everything else (our code, stdlib)"] += own
    functions = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    return {
        "operation": op,
        "messages": len(inputs),
        "seconds": round(total, 3),
        "ms_per_message": round(total / len(inputs) * 1000, 2),
        "groups": [
            {"group": k, "seconds": round(v, 3), "share": round(v / total, 3) if total else 0.0}
            for k, v in sorted(groups.items(), key=lambda kv: kv[1], reverse=True)
        ],
        "top": [
            {"function": _where(k), "calls": v[1], "own_seconds": round(v[2], 3), "cumulative_seconds": round(v[3], 3)}
            for k, v in functions
        ],
    }


def steps(space: Space, n: int) -> dict[str, float]:
    """ms per step, without the profiler (keys loaded once): where a message's time goes, in plain figures."""

    load = x509.load_der_x509_certificate
    signer, chain = load(space.sender.certificate), [load(c) for c in space.chain]
    key = serialization.load_der_private_key(space.sender.key, password=None)
    opener, opener_key = (
        load(space.recipients[0].certificate),
        serialization.load_der_private_key(space.recipients[0].key, password=None),
    )
    assert isinstance(key, cms.PrivateKey)
    assert isinstance(opener_key, cms.PrivateKey)
    recipients = [cms.Recipient(load(r.certificate)) for r in space.recipients]
    msg = message(0, seed=2)
    inner = mime.wrap(msg)
    signed = mime.signed_entity(inner, cms.sign_detached(inner, signer, key, chain), "bench")
    protected = mime.protect(msg, signer=signer, key=key, chain=chain, recipients=recipients)
    der = mime.envelope_der(protected)
    entity = cms.decrypt(der, opener, opener_key)
    opened = mime.unprotect(protected, opener, opener_key)
    certificate = opened.signed.signers[0].certificate
    assert certificate is not None
    assert _store is not None
    assert _loop is not None
    store, loop = _store, _loop
    work: dict[str, Callable[[], object]] = {
        "load PKCS#8 key (with RSA key check)": lambda: serialization.load_der_private_key(space.sender.key, None),
        "sign_detached (1 private op)": lambda: cms.sign_detached(inner, signer, key, chain),
        "encrypt for 3 entries (3 public ops)": lambda: cms.encrypt(signed, recipients),
        "protect, key already loaded": lambda: mime.protect(
            msg, signer=signer, key=key, chain=chain, recipients=recipients
        ),
        "decrypt (1 private op)": lambda: cms.decrypt(der, opener, opener_key),
        "verify signature (1 public op)": lambda: mime.verify_entity(entity),
        "unprotect, key already loaded": lambda: mime.unprotect(protected, opener, opener_key),
        "TrustStore.check (path + CRLs)": lambda: loop.run_until_complete(
            store.check(certificate, opened.signed.certificates, [SENDER, SENDER])
        ),
    }
    out: dict[str, float] = {}
    for name, fn in work.items():
        fn()
        start = time.perf_counter()
        for _ in range(n):
            fn()
        out[name] = round((time.perf_counter() - start) / n * 1000, 2)
    return out


# -- the run --------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    openssl_cli = None
    if shutil.which("openssl"):
        done = subprocess.run(["openssl", "version"], capture_output=True, text=True, timeout=30, check=False)
        openssl_cli = done.stdout.split()[1] if done.returncode == 0 and done.stdout.split()[1:] else None
    return {
        "cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "cryptography_openssl": openssl_backend.openssl_version_text().replace("OpenSSL ", "").split()[0],
        "openssl_cli": openssl_cli,
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def row_dict(row: Row, speed: Speed | None) -> dict[str, Any]:
    ceiling = speed.sign_per_second / PRIVATE_OPS[row.op] if speed else None
    with_public = (
        1 / (PRIVATE_OPS[row.op] / speed.sign_per_second + PUBLIC_OPS[row.op] / speed.verify_per_second)
        if speed
        else None
    )
    return {
        "operation": row.op,
        "label": OPERATIONS[row.op],
        "processes": row.processes,
        "pool": row.pooled,
        "messages": row.messages,
        "correct": row.correct,
        "seconds": round(row.seconds, 3),
        "messages_per_second": round(row.rate, 1),
        "cpu_ms_per_message": round(row.cpu_seconds / row.messages * 1000, 2),
        "cpu_busy_cores": round(row.cpu_busy, 2) if row.cpu_busy is not None else None,
        "private_ops_per_message": PRIVATE_OPS[row.op],
        "public_ops_per_message": PUBLIC_OPS[row.op],
        "ceiling_per_second": round(ceiling, 1) if ceiling else None,
        "ceiling_with_public_ops_per_second": round(with_public, 1) if with_public else None,
        "ratio": round(row.rate / ceiling, 3) if ceiling else None,
        "errors": row.errors,
    }


def speed_dict(speed: Speed) -> dict[str, Any]:
    return {
        "processes": speed.processes,
        "seconds": speed.seconds,
        "sign_per_second": speed.sign_per_second,
        "verify_per_second": speed.verify_per_second,
        "cpu_ms_per_private_op": round(speed.processes * 1000 / speed.sign_per_second, 3),
        "cpu_seconds": round(speed.cpu_seconds, 2),
    }


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    host = machine()
    started = time.perf_counter()
    space = trust_space(workdir / "pki")
    init_worker(space.anchors, space.crls)
    originals = [message(i) for i in range(args.messages)]

    speeds: dict[int, Speed] = {}
    openssl_error = None if shutil.which("openssl") else "openssl not found"
    if openssl_error is None:
        try:
            for n in sorted({1, args.workers}):
                speeds[n] = openssl_speed(args.openssl_seconds, n)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            openssl_error = str(exc)

    rows: list[tuple[Row, Speed | None]] = []

    def measure(runner: Callable[[str, Space, Sequence[bytes]], tuple[Row, list[Any]]], processes: int) -> None:
        protected_row, protected = runner("protect", space, originals)
        check("protect", space, originals, protected, protected_row)
        rows.append((protected_row, speeds.get(processes)))
        inputs = [p if isinstance(p, bytes) else b"" for p in protected]
        for op in ("unprotect", "trusted"):
            row, results = runner(op, space, inputs)
            check(op, space, originals, results, row)
            rows.append((row, speeds.get(processes)))

    measure(run_inline, 1)
    context = multiprocessing.get_context("spawn")  # as gateway/smime/pool.py
    with concurrent.futures.ProcessPoolExecutor(
        args.workers, mp_context=context, initializer=init_worker, initargs=(space.anchors, space.crls)
    ) as executor:
        warm_up(executor, args.workers, space)
        measure(lambda op, s, inputs: run_pooled(executor, args.workers, op, s, inputs), args.workers)

    loading = key_loading(space.sender.key, min(args.messages, KEY_LOADS))
    profiles: list[dict[str, Any]] = []
    step_ms: dict[str, float] = {}
    if args.profile:
        sample = originals[: min(len(originals), PROFILE_MESSAGES)]
        s = space.sender
        recipients = tuple((r.certificate, True) for r in space.recipients)
        protected = [do_protect(m, s.certificate, s.key, space.chain, recipients) for m in sample]
        profiles = [profile(op, space, sample if op == "protect" else protected) for op in OPERATIONS]
        step_ms = steps(space, min(len(originals), STEP_RUNS))

    out_rows = [row_dict(r, sp) for r, sp in rows]
    return {
        "messages": args.messages,
        "size": SIZE,
        "workers": args.workers,
        "recipient_entries": len(space.recipients),
        "machine": host,
        "openssl": {
            "ran": bool(speeds),
            "error": openssl_error,
            "seconds": args.openssl_seconds,
            "runs": [speed_dict(speeds[n]) for n in sorted(speeds)],
        },
        "rows": out_rows,
        "key_loading": loading,
        "profile": profiles,
        "steps_ms": step_ms,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "all_correct": all(r["correct"] == r["messages"] for r in out_rows),
    }


def _num(value: float | None, fmt: str) -> str:
    return format(value, fmt) if value is not None else "-"


def procs(row: dict[str, Any]) -> str:
    return f"pool {row['processes']}" if row["pool"] else str(row["processes"])


def report(result: dict[str, Any]) -> str:
    m = result["machine"]
    out = [
        f"smime benchmark: {result['messages']:,} messages of {result['size']:,} octets, "
        f"{result['recipient_entries']} recipient entries (2 recipients + the sender's copy), RSA 2048, "
        f"AES-256-CBC, RSA-OAEP SHA-256; pool of {result['workers']} spawned worker(s)",
        f"machine: {m['usable_cpus']} usable CPUs ({m['cpus']} in all), {m['platform']}, Python {m['python']}, "
        f"cryptography {m['cryptography']} (OpenSSL {m['cryptography_openssl']}), "
        f"openssl CLI {m['openssl_cli'] or 'not installed'}, load average {m['load_average']} at start",
        f"{'operation':<46}{'procs':>8}{'ok':>7}{'seconds':>9}{'msg/s':>10}{'ceiling/s':>11}{'x ceiling':>11}"
        f"{'CPU ms/msg':>12}{'CPUs busy':>11}",
    ]
    for run in result["openssl"]["runs"]:
        out.append(
            f"{'(a) openssl speed rsa2048: private op (sign)':<46}{run['processes']:>8}{'-':>7}"
            f"{run['seconds'] * 1.0:>9.2f}{run['sign_per_second']:>10,.1f}{run['sign_per_second']:>11,.1f}"
            f"{'1.00':>11}{run['cpu_ms_per_private_op']:>12.2f}{'-':>11}"
        )
    for r in result["rows"]:
        out.append(
            f"{r['label']:<46}{procs(r):>8}{r['correct']:>7,}{r['seconds']:>9.2f}"
            f"{r['messages_per_second']:>10,.1f}{_num(r['ceiling_per_second'], ',.1f'):>11}"
            f"{_num(r['ratio'], '.3f'):>11}{r['cpu_ms_per_message']:>12.2f}{_num(r['cpu_busy_cores'], '.1f'):>11}"
        )
    o = result["openssl"]
    if o["ran"]:
        publics = ", ".join(f"{run['verify_per_second']:,.0f}/s with {run['processes']}" for run in o["runs"])
        out.append(
            f"openssl public op (verify): {publics} process(es); ceiling = private ops/s / 1 private op per "
            "message (protect: 1 sign + 3 OAEP encrypt; unprotect: 1 OAEP decrypt + 1 verify; trust: + CRL "
            "and path signatures)"
        )
    if o["error"]:
        out.append(f"openssl reference: {o['error']}")
    k = result["key_loading"]
    out.append(
        f"private key loading (PKCS#8 DER, once per message in the pool's functions): {k['checked_ms']:.2f} ms "
        f"with OpenSSL's RSA key check, {k['unchecked_ms']:.3f} ms without (unsafe_skip_rsa_key_validation)"
    )
    for p in result["profile"]:
        out.append(
            f"profile {OPERATIONS[p['operation']]}, 1 process, {p['messages']} messages: "
            f"{p['ms_per_message']:.2f} ms per message (under cProfile)"
        )
        out.extend(f"  {g['share'] * 100:5.1f}%  {g['group']}" for g in p["groups"] if g["seconds"] > 0)
        out.append(f"  {'own s':>7} {'cum s':>7} {'calls':>8}  top functions by own time")
        out.extend(
            f"  {t['own_seconds']:7.3f} {t['cumulative_seconds']:7.3f} {t['calls']:8,}  {t['function'][:110]}"
            for t in p["top"]
        )
    if result["steps_ms"]:
        out.append("steps, 1 process, no profiler (ms per message):")
        out.extend(f"  {ms:8.2f}  {name}" for name, ms in result["steps_ms"].items())
    bad = [r for r in result["rows"] if r["correct"] != r["messages"]]
    for r in bad:
        out.append(f"WRONG: {r['label']} ({r['processes']} processes): {'; '.join(r['errors'])}")
    out.append("results: all correct" if not bad else "results: WRONG")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    parser.add_argument("--messages", type=int, default=500, help="messages per operation (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=cpus, help="pool processes (default: the CPUs, %(default)s)")
    parser.add_argument(
        "--openssl-seconds", type=int, default=5, metavar="S", help="openssl speed -seconds (default: %(default)s)"
    )
    parser.add_argument("--profile", action="store_true", help="profile a one-process run of each operation")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON to FILE")
    args = parser.parse_args(argv)
    if args.messages < 1:
        parser.error("--messages must be positive")
    if args.workers < 1:
        parser.error("--workers must be positive")
    if args.openssl_seconds < 1:
        parser.error("--openssl-seconds must be positive")
    with tempfile.TemporaryDirectory(prefix="mssgw-bench-smime-") as tmp:
        result = run(args, Path(tmp))
    print(report(result), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0 if result["all_correct"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
