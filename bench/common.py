"""What the benchmarks share: machine and process CPU readings, the machine's description, percentiles,
loopback ports, this checkout's `mssgw`, and py-spy sampling. Imported by the scripts in this directory
(run as `python bench/NAME.py`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def cpu_times() -> tuple[float, float] | None:
    """(busy, total) CPU ticks of the whole machine so far (Linux), for the CPU use of a phase."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return float(total - idle), float(total)


def cores_busy(before: tuple[float, float] | None, after: tuple[float, float] | None) -> float | None:
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1]) * (os.cpu_count() or 1)


def self_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (held open together so they differ, then released)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
        time.sleep(0.05)
    return False


def gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        time.sleep(0.1)
    return False


def cli_env() -> dict[str, str]:
    """Run this checkout's mssgw, whatever the environment's installed copy points at."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        return lines[-1].strip() if lines else ""
    return ""


def py_spy() -> str | None:
    return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))


@contextlib.contextmanager
def profiled(pid: int, output: Path | None) -> Iterator[None]:
    """Sample the mssgw process with py-spy while the block runs (GIL holder only: where Python spends CPU)."""
    if output is None:
        yield
        return
    exe = py_spy()
    assert exe is not None
    fmt = {".svg": "flamegraph", ".json": "speedscope"}.get(output.suffix, "raw")
    argv = [exe, "record", "--pid", str(pid), "--rate", "100", "--gil", "--nonblocking"]
    proc = subprocess.Popen([*argv, "--format", fmt, "--output", str(output)], stdout=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output when interrupted
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def profile_path(output: Path, name: str) -> Path:
    """Where the py-spy output of process `name` goes when several are sampled: relay.txt -> relay.NAME.txt."""
    return output.with_name(f"{output.stem}.{name}{output.suffix}")


@contextlib.contextmanager
def profiled_each(pids: Mapping[str, int], output: Path | None) -> Iterator[None]:
    """`profiled` for several processes at once, one py-spy each: a single one writes `output` itself,
    several write `output` with their name before the suffix (see profile_path)."""
    with contextlib.ExitStack() as stack:
        for name, pid in pids.items():
            target = output if output is None or len(pids) == 1 else profile_path(output, name)
            stack.enter_context(profiled(pid, target))
        yield


def one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100) of values, None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def _first_line(argv: list[str]) -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        text = (out.stdout or out.stderr).strip()
        return text.splitlines()[0].strip() if out.returncode == 0 and text else None
    return None


def _proc_value(path: str, key: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    return None


def _version_word(line: str | None) -> str | None:
    return line.split()[0] if line and line.split() else None


def postgresql_version() -> str | None:
    """The installed PostgreSQL server's version (Debian keeps it under /usr/lib/postgresql/N/bin)."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), reverse=True)
    exe = str(candidates[0]) if candidates else shutil.which("postgres")
    line = _first_line([exe, "--version"]) if exe else None
    return line.split(") ", 1)[-1] if line else None  # "postgres (PostgreSQL) 15.18 (Debian ...)"


def machine_info() -> dict[str, Any]:
    """The machine and the software the figures depend on, and its load when asked (for the report's header)."""
    import platform
    import sqlite3
    import ssl

    sbin = os.pathsep.join(("/usr/sbin", "/usr/lib/postfix/sbin", "/sbin", "/usr/bin"))
    postconf = shutil.which("postconf") or shutil.which("postconf", path=sbin)
    dovecot = shutil.which("dovecot") or shutil.which("dovecot", path=sbin)
    openssl_cli = _first_line(["openssl", "version"]) if shutil.which("openssl") else None
    try:
        from cryptography.hazmat.backends.openssl import backend

        cryptography_openssl: str | None = backend.openssl_version_text()
    except Exception:  # not installed, or a build without OpenSSL text
        cryptography_openssl = None
    mem_kb = _proc_value("/proc/meminfo", "MemTotal")
    return {
        "cpu_model": _proc_value("/proc/cpuinfo", "model name") or platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gb": round(int(mem_kb.split()[0]) / 1024 / 1024, 1) if mem_kb else None,
        "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": postgresql_version(),
        "openssl_python": ssl.OPENSSL_VERSION.removeprefix("OpenSSL ").split()[0],
        "openssl_cryptography": cryptography_openssl.removeprefix("OpenSSL ").split()[0]
        if cryptography_openssl
        else None,
        "openssl_cli": openssl_cli.split()[1] if openssl_cli and len(openssl_cli.split()) > 1 else None,
        "postfix": _first_line([postconf, "-d", "-h", "mail_version"]) if postconf else None,
        "dovecot": _version_word(_first_line([dovecot, "--version"])) if dovecot else None,
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
