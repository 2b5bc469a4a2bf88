"""Run every benchmark of this directory, each beside its same-run reference, and write docs/benchmarks.md.

    python bench/run_all.py [--quick] [--out docs/benchmarks.md] [--results DIR] [--only NAME,...]
    python bench/run_all.py --render DIR [--out FILE]     # write the markdown again from a run's results

Runs, one after the other, each as its own process (so that one's memory peak, open-files limit, pools
and event loop cannot colour another's figures) with `--json FILE`, which the runner reads (it never
reads their text):

  directory   bench/directory_import.py  536,000 rows (the national size) beside plain read + split
  smime       bench/smime.py             protect / unprotect / + trust check beside `openssl speed rsa2048`
  smtp_relay  bench/smtp_relay.py        S/MIME relay A -> B (each operator its own `mssgw serve`
                                         process) beside Postfix (smtp-source -> Postfix -> smtp-sink),
                                         then the submit-to-mailbox latency, open loop, at half the
                                         delivered rate just measured (--latency)
  imap        bench/imap.py              logins, APPEND, FETCH beside Dovecot; idle IDLE sessions

Sizes fit a 2-core machine: the full run takes about 15 minutes (25 at most with the machine busy;
the idle sessions' opening has a budget of its own), `--quick` about 2 minutes with tiny sizes (to
check the runner, not the targets). The Postfix and Dovecot references need root and the Debian
packages postfix and dovecot-imapd; without them their rows say why they are missing.

The markdown goes between `<!-- bench:run_all begin -->` and `<!-- bench:run_all end -->` in `--out`:
the block is replaced when the markers are there, else inserted after the file's first heading (or at
its top); everything outside the markers is kept byte for byte. Each script's JSON and output, and the
run's own `run.json`, stay in `--results` (default: build/bench/latest).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info  # bench/common.py

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- bench:run_all begin -->"
END = "<!-- bench:run_all end -->"
DEFAULT_OUT = ROOT / "docs" / "benchmarks.md"
DEFAULT_RESULTS = ROOT / "build" / "bench" / "latest"
NATIONAL_ROWS = 536_000
IDLE_TARGET = 10_000
IMAP_OPERATIONS = ("login", "APPEND", "FETCH")


@dataclass(frozen=True)
class Bench:
    name: str
    script: str
    title: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    timeout: float  # seconds, full run (the quick run gets a fifth, at least 300)


BENCHES = (
    Bench(
        "directory",
        "directory_import.py",
        "Directory import",
        ("--rows", str(NATIONAL_ROWS)),
        ("--rows", "3000"),
        900,
    ),
    Bench(
        "smime",
        "smime.py",
        "S/MIME operations",
        ("--messages", "300", "--workers", "2", "--openssl-seconds", "5"),
        ("--messages", "6", "--workers", "2", "--openssl-seconds", "1"),
        900,
    ),
    Bench(
        "smtp_relay",
        "smtp_relay.py",
        "SMTP relay with S/MIME, and submit-to-mailbox latency",
        ("--messages", "1000", "--concurrency", "8", "--latency", "300", "--arrivals", "poisson"),
        ("--messages", "24", "--concurrency", "4", "--latency", "12", "--arrivals", "poisson"),
        1500,
    ),
    Bench(
        "imap",
        "imap.py",
        "IMAP and idle IDLE sessions",
        (
            *("--clients", "8", "--messages", "500", "--logins", "100"),
            *("--idle", str(IDLE_TARGET), "--reference-idle", "1000", "--idle-ramp", "360", "--idle-seconds", "10"),
        ),
        (
            *("--clients", "2", "--messages", "10", "--logins", "4"),
            *("--idle", "20", "--reference-idle", "10", "--idle-ramp", "60", "--idle-seconds", "1"),
        ),
        1800,
    ),
)
BY_NAME = {b.name: b for b in BENCHES}


# -- running ---------------------------------------------------------------------------------------


def run_one(bench: Bench, quick: bool, results: Path) -> dict[str, Any]:
    """Run one script with --json; its result (or why there is none), wall time and load before it."""
    out_json = results / f"{bench.name}.json"
    out_json.unlink(missing_ok=True)
    args = bench.quick if quick else bench.full
    argv = [sys.executable, str(ROOT / "bench" / bench.script), *args, "--json", str(out_json)]
    timeout = max(300.0, bench.timeout / 5) if quick else bench.timeout
    entry: dict[str, Any] = {
        "name": bench.name,
        "script": f"bench/{bench.script}",
        "args": list(args),
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    t0, usage0 = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    with (results / f"{bench.name}.out").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        try:
            status: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            status = None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # its own session: the script and what it started
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
    entry["seconds"] = round(time.monotonic() - t0, 1)
    entry["load_after"] = [round(x, 2) for x in os.getloadavg()]
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the script and the processes it reaped
    entry["cpu_seconds"] = round(usage1.ru_utime + usage1.ru_stime - usage0.ru_utime - usage0.ru_stime, 1)
    entry["exit_status"] = status
    if status is None:
        entry["error"] = f"stopped after the runner's {timeout:.0f} s limit"
    try:
        entry["result"] = json.loads(out_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        entry["result"] = None
        if "error" not in entry:
            tail = (results / f"{bench.name}.out").read_text(encoding="utf-8", errors="replace").strip()
            entry["error"] = f"exit status {status}, no results; last output: " + " / ".join(tail.splitlines()[-3:])
    return entry


def code_version() -> dict[str, Any]:
    """The commit measured, and how many files of the code differ from it (others may be editing)."""
    out: dict[str, Any] = {"commit": None, "changed_files": None}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT, timeout=30, check=False
        )
        out["commit"] = head.stdout.strip() or None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "gateway", "directory", "certs", "bench"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=30,
            check=False,
        )
        out["changed_files"] = len(status.stdout.splitlines()) if status.returncode == 0 else None
    return out


def command_line(argv: list[str]) -> str:
    niceness = os.nice(0) if hasattr(os, "nice") else 0
    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = python.relative_to(ROOT) if python.is_relative_to(ROOT) else python
    words = [str(python), "bench/run_all.py", *argv]
    return (f"nice -n {niceness} " if niceness else "") + " ".join(words)


def run_all(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    results: Path = args.results
    results.mkdir(parents=True, exist_ok=True)
    names = args.only or [b.name for b in BENCHES]
    run: dict[str, Any] = {
        "quick": args.quick,
        "command": command_line(argv),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),  # load average before anything starts
        "code": code_version(),
        "benchmarks": [],
        "not_run": [b.name for b in BENCHES if b.name not in names],
        "results": str(results.resolve().relative_to(ROOT)) if results.resolve().is_relative_to(ROOT) else str(results),
    }
    t0 = time.monotonic()
    for name in names:
        bench = BY_NAME[name]
        print(f"run_all: {name} ({bench.script}) ...", file=sys.stderr, flush=True)
        entry = run_one(bench, args.quick, results)
        run["benchmarks"].append(entry)
        print(
            f"run_all: {name} done in {entry['seconds']:.0f} s, exit status {entry['exit_status']}",
            file=sys.stderr,
            flush=True,
        )
    run["seconds"] = round(time.monotonic() - t0, 1)
    (results / "run.json").write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
    return run


# -- markdown --------------------------------------------------------------------------------------


def num(value: float | int | None, digits: int = 1) -> str:
    """A figure with thousands separators; an en dash when there is none."""
    if value is None:
        return "–"
    if isinstance(value, int) or digits == 0:
        return f"{round(value):,}"
    return f"{value:,.{digits}f}"


def ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def ratio(value: float | None, digits: int = 2) -> str:
    return f"{value:.{digits}f}×" if value is not None else "–"


def table(header: list[str], rows: list[list[str]], right: int = 1) -> list[str]:
    """A markdown table; columns from `right` on are right-aligned."""
    align = ["---" if i < right else "---:" for i in range(len(header))]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(cell or "–" for cell in row) + " |" for row in rows]
    return out


def verdict(ok: bool | None, quick: bool, why_none: str = "no figure") -> str:
    if quick:
        return "not judged (quick run)"
    if ok is None:
        return f"not assessed ({why_none})"
    return "**met**" if ok else "**not met**"


def seconds_text(seconds: float) -> str:
    minutes, sec = divmod(round(seconds), 60)
    return f"{minutes} min {sec:02d} s" if minutes else f"{sec} s"


def machine_text(m: dict[str, Any]) -> str:
    load = m.get("load_average") or []
    ssl_bits = [f"{m['openssl_python']} (Python's ssl)"] if m.get("openssl_python") else []
    if m.get("openssl_cryptography"):
        ssl_bits.append(f"{m['openssl_cryptography']} (cryptography)")
    if m.get("openssl_cli"):
        ssl_bits.append(f"{m['openssl_cli']} (openssl CLI)")
    return (
        f"{m.get('cpu_model') or 'unknown CPU'}, {m.get('cpus')} CPUs ({m.get('usable_cpus')} usable), "
        f"{num(m.get('ram_gb'))} GB RAM, {m.get('kernel')}; Python {m.get('python')}, SQLite {m.get('sqlite')}, "
        + (
            f"PostgreSQL {m['postgresql'].split()[0]} (installed; every benchmark here runs on SQLite), "
            if m.get("postgresql")
            else "PostgreSQL not installed (every benchmark here runs on SQLite), "
        )
        + f"OpenSSL {', '.join(ssl_bits) or 'unknown'}; Postfix {m.get('postfix') or 'not installed'}, "
        f"Dovecot {m.get('dovecot') or 'not installed'}. Load average before the start: "
        + (" / ".join(f"{x:.2f}" for x in load) + " (1 / 5 / 15 min)" if load else "unknown")
    )


Target = tuple[str, str, str, str, str]  # what, reference, mssgw, ratio, status


def section_failed(entry: dict[str, Any], bench: Bench) -> list[str]:
    return [f"**Did not complete**: {entry.get('error') or 'no result'}. See `{bench.name}.out` in the results."]


def render_directory(r: dict[str, Any], quick: bool, targets: list[Target]) -> list[str]:
    out = [
        f"{r['lines']:,} synthetic rows in the national format ({r['rows']:,} addresses + {r['duplicates']:,} "
        f"duplicates), {num(r['file_mb'])} MB; reference: reading and splitting the same file in plain Python, "
        "same process. Peak RSS is the process's so far (it only grows).",
        "",
    ]
    rows = [
        [p["label"], num(p["seconds"], 2), num(p["rows_per_second"], 0), ratio(p["ratio"]), num(p["peak_rss_mb"], 0)]
        for p in r["phases"]
    ]
    out += table(["phase", "seconds", "rows/s", "× reference", "peak RSS MB"], rows)
    t = r["targets"]
    national = r["rows"] == NATIONAL_ROWS
    why = f"{r['rows']:,} rows, the target is for {NATIONAL_ROWS:,}"
    s_ok = verdict(t["import_ok"] if national else None, quick, why)
    m_ok = verdict(t["rss_ok"] if national else None, quick, why)
    out += [
        "",
        f"Targets (issue 7): import of {NATIONAL_ROWS:,} rows ≤ 30 s: {s_ok} ({num(t['import_seconds'])} s); "
        f"peak RSS ≤ 500 MB: {m_ok} ({num(t['peak_rss_mb'], 0)} MB).",
    ]
    ref = r["phases"][0]
    targets.append(
        (
            f"directory import of {r['rows']:,} rows ≤ 30 s",
            f"{num(ref['seconds'], 2)} s (read + split)",
            f"{num(t['import_seconds'], 1)} s",
            f"{num(r['phases'][2]['ratio'])}× its time",
            s_ok,
        )
    )
    targets.append(
        (f"directory import peak RSS ≤ 500 MB ({r['rows']:,} rows)", "–", f"{num(t['peak_rss_mb'], 0)} MB", "–", m_ok)
    )
    return out


def render_smime(r: dict[str, Any], quick: bool, targets: list[Target]) -> list[str]:
    o = r["openssl"]
    out = [
        f"{r['messages']:,} messages of {r['size']:,} octets, {r['recipient_entries']} recipient entries, RSA 2048, "
        f"AES-256-CBC, RSA-OAEP; in this process and through a pool of {r['workers']} spawned workers. Reference "
        f"in the same run: `openssl speed -seconds {o['seconds']} rsa2048` private operations (sign/s), with the "
        "same process count: each of our messages costs exactly one private operation, so it is the ceiling.",
        "",
    ]
    rows = [
        [
            "(a) openssl rsa2048 private op (reference)",
            str(s["processes"]),
            "–",
            num(s["sign_per_second"]),
            num(s["sign_per_second"]),
            "1.000×",
            num(s["cpu_ms_per_private_op"], 2),
        ]
        for s in o["runs"]
    ]
    for x in r["rows"]:
        procs = f"pool {x['processes']}" if x["pool"] else str(x["processes"])
        rows.append(
            [
                x["label"],
                procs,
                f"{x['correct']:,}/{x['messages']:,}",
                num(x["messages_per_second"]),
                num(x["ceiling_per_second"]),
                ratio(x["ratio"], 3),
                num(x["cpu_ms_per_message"], 2),
            ]
        )
    out += table(
        ["operation", "processes", "correct", "msg/s", "openssl private ops/s", "× openssl", "CPU ms/msg"], rows
    )
    if not o["ran"]:
        out += ["", f"openssl reference: not run ({o['error']})."]
    out += ["", "No numeric target in issue 7: the ratio to the RSA ceiling is the figure."]
    pooled = [x for x in r["rows"] if x["pool"]]
    best = {x["operation"]: x for x in pooled}
    if best:
        ceiling = best["protect"]["ceiling_per_second"]
        targets.append(
            (
                f"S/MIME vs openssl rsa2048 private ops (pool of {r['workers']})",
                f"{num(ceiling)} private ops/s" if ceiling else "not run",
                "protect {} / open + trust {} msg/s".format(
                    num(best["protect"]["messages_per_second"]), num(best["trusted"]["messages_per_second"])
                ),
                "{} / {}".format(ratio(best["protect"]["ratio"], 3), ratio(best["trusted"]["ratio"], 3)),
                "no numeric target",
            )
        )
    return out


def render_smtp(r: dict[str, Any], quick: bool, targets: list[Target]) -> list[str]:
    per = r["per_connection"]
    m = r["mssgw"]
    one = r.get("processes", "one") == "one"  # results written before --processes: `mssgw demo run`
    servers = (
        "both operators in one process (`mssgw demo run`)"
        if one
        else "each operator in its own process (`mssgw serve`, as deployed)"
    )
    out = [
        f"{r['messages']:,} messages of {r['size']:,} bytes, {r['concurrency']} concurrent clients "
        + (f"(up to {per:,} messages per connection)" if per else "(one connection each)")
        + ", closed loop. mssgw: submission at operator A (STARTTLS, AUTH), sign + encrypt, relay over mutual TLS "
        f"to operator B, decrypt + verify, delivery into the mailbox, {servers}, on SQLite. "
        "Reference in the same run: `smtp-source` → a private Postfix on loopback → `smtp-sink` (plain SMTP, "
        "durable queue). Latency columns: from MAIL FROM to delivery, under this closed-loop overload (queueing).",
        "",
    ]
    rows = [
        [
            p["label"],
            f"{p['delivered']:,}/{p['messages']:,}",
            num(p["seconds"], 2),
            num(p["messages_per_second"]),
            num(p["submitted_per_second"]),
            ratio(p["ratio"]),
            ms(p["latency_p50_ms"]),
            ms(p["latency_p99_ms"]),
            num(p["cpu_busy_cores"]),
        ]
        for p in r["phases"]
    ]
    out += table(
        ["path", "delivered", "seconds", "msg/s", "submit/s", "× Postfix", "p50 ms", "p99 ms", "CPUs busy"], rows
    )
    if not r["postfix"]["ran"]:
        out += ["", f"Postfix reference: not run ({r['postfix']['reason']})."]
    summed = "one process" if one else f"summed over their {m.get('server_processes', 2)} processes"
    out += [
        "",
        f"mssgw server CPU: {num(m.get('server_cpu_ms_per_message'))} ms per message (both operators, {summed}); "
        f"left in queues: A {m['queue_left']['operator-a']}, B {m['queue_left']['operator-b']}.",
    ]
    ok = r["ratio"] >= 1.0 if r["ratio"] is not None else None
    status = verdict(ok, quick, "no Postfix reference")
    out += ["", f"Target (issue 7): delivered rate ≥ 1.0× Postfix: {status} ({ratio(r['ratio'])})."]
    ref = r["phases"][0] if r["postfix"]["ran"] else None
    targets.append(
        (
            "SMTP relay delivered rate ≥ 1.0× Postfix",
            f"{num(ref['messages_per_second'])} msg/s" if ref else "not run",
            f"{num(m['messages_per_second'])} msg/s",
            ratio(r["ratio"]),
            status,
        )
    )
    return out


def render_latency(r: dict[str, Any], quick: bool, targets: list[Target]) -> list[str]:
    lat = r.get("latency")
    if lat is None:
        targets.append(("p50/p99 submit-to-mailbox latency at half the peak rate", "–", "not measured", "–", "–"))
        return ["Not measured in this run (the closed-loop phase delivered nothing, or the server stopped)."]
    spacing = (
        "Poisson arrivals (exponential gaps of mean 1/rate, seeded)"
        if lat["arrivals"] == "poisson"
        else "fixed spacing (a message every 1/rate s)"
    )
    peak = lat["peak_rate"]
    out = [
        f"After the closed-loop run above, in the same trust space and servers, once both queues were empty: "
        f"{lat['messages']:,} messages offered open loop at {num(lat['offered_rate'], 2)} msg/s"
        + (f", half the {num(peak, 2)} msg/s delivered closed loop" if peak is not None else "")
        + f", {spacing}. Each message starts on schedule on a free submission connection (a new one is opened "
        "when all are busy, so a slow reply never delays the next message) and is timed from the moment the "
        "client wrote the end of DATA (`<CRLF>.<CRLF>`) to the moment the recipient's IMAP IDLE session at "
        'operator B was told (`* N EXISTS`): the recipient\'s own view of "in the mailbox", through the real '
        "notification path, with no polling interval in the figure (one IDLE session per recipient, opened "
        "before; sequence numbers mapped to messages afterwards from B's store). The row's own write time in "
        "B's store and the 250 at A are given too.",
        "",
    ]
    rows = [
        ["end of DATA → recipient's IDLE session told (submit-to-mailbox)", *_trio(lat["mailbox"])],
        ["end of DATA → message row written in B's mailbox store", *_trio(lat["store"])],
        ["end of DATA → 250 from A (durably queued)", *_trio(lat["submit"])],
        ["schedule → MAIL FROM (how late the open loop started a message)", *_trio(lat["start_late"])],
    ]
    out += table(["interval", "p50 ms", "p99 ms", "max ms", "mean ms"], rows)
    out += [
        "",
        f"Offered {num(lat['offered_rate'], 2)} msg/s, achieved {num(lat['achieved_rate'], 2)} msg/s (ends of DATA "
        f"over {num(lat['seconds'])} s), delivered {num(lat['delivered_rate'], 2)} msg/s; {lat['delivered']:,} of "
        f"{lat['messages']:,} delivered, {lat['observed']:,} seen by IDLE; {lat['connections']} connections opened "
        f"before, {lat['opened_late']} more when all were busy; the whole machine "
        f"{num(lat['cpu_busy_cores'], 2)} CPUs busy."
        + (f" Errors: {'; '.join(lat['errors'])}." if lat["errors"] else ""),
        "",
        "No numeric target in issue 7: the figures are the measurement. No reference either: `smtp-source` "
        "cannot send at a set rate (open loop), and Postfix's log `delay=` is not the same interval.",
    ]
    mb = lat["mailbox"]
    targets.append(
        (
            f"submit-to-mailbox latency at half the peak rate ({num(lat['offered_rate'], 2)} msg/s)",
            "–",
            f"p50 {ms(mb['p50_ms'])} ms, p99 {ms(mb['p99_ms'])} ms",
            "–",
            "no numeric target",
        )
    )
    return out


def _trio(d: dict[str, float | None]) -> list[str]:
    return [ms(d["p50_ms"]), ms(d["p99_ms"]), ms(d["max_ms"]), ms(d["mean_ms"])]


def render_imap(r: dict[str, Any], quick: bool, targets: list[Target]) -> list[str]:
    ran = r["dovecot"]["ran"]
    out = [
        f"{r['clients']} concurrent clients, implicit TLS, LOGIN, one command at a time per connection: "
        f"{r['logins']:,} logins (connect + TLS + LOGIN + LOGOUT), {r['messages']:,} APPEND then "
        f"{r['messages']:,} UID FETCH BODY.PEEK[] of {r['size']:,}-byte messages. Reference in the same run: a "
        "private Dovecot on loopback (same argon2id hashes, maildir with fsync, one imap process per session). "
        "mssgw: one node, one process, SQLite, bodies sealed at rest, an audit record per login, APPEND and FETCH.",
        "",
    ]
    phases = r["phases"]
    rows: list[list[str]] = []
    for op in IMAP_OPERATIONS:
        ours = next(p for p in phases if p["server"] == "mssgw" and p["operation"] == op)
        ref = next((p for p in phases if p["server"] == "dovecot" and p["operation"] == op), None)
        ok = ours["ratio"] >= 1.0 if ours["ratio"] is not None else None
        status = verdict(ok, quick, "no Dovecot reference")
        rows.append(
            [
                op,
                num(ref["per_second"]) if ref else "not run",
                num(ours["per_second"]),
                ratio(ours["ratio"]),
                f"{ms(ref['latency_p50_ms'])} / {ms(ref['latency_p99_ms'])}" if ref else "–",
                f"{ms(ours['latency_p50_ms'])} / {ms(ours['latency_p99_ms'])}",
                num(ours["server_cpu_ms_per_operation"]),
                f"{ours['done']:,}/{ours['attempted']:,}",
                status,
            ]
        )
        targets.append(
            (
                f"IMAP {op}/s ≥ 1.0× Dovecot",
                f"{num(ref['per_second'])}/s" if ref else "not run",
                f"{num(ours['per_second'])}/s",
                ratio(ours["ratio"]),
                status,
            )
        )
    out += table(
        [
            "operation",
            "Dovecot op/s",
            "mssgw op/s",
            "× Dovecot",
            "Dovecot p50 / p99 ms",
            "mssgw p50 / p99 ms",
            "mssgw server CPU ms/op",
            "mssgw done",
            "target ≥ 1.0×",
        ],
        rows,
    )
    if not ran:
        out += ["", f"Dovecot reference: not run ({r['dovecot']['reason']})."]
    out += ["", *render_idle(r, quick, targets)]
    return out


def render_idle(r: dict[str, Any], quick: bool, targets: list[Target]) -> list[str]:
    idles = r["idle_sessions"]
    if not idles:
        return ["Idle IDLE sessions: not measured in this run."]
    out = [
        f"**Idle IDLE sessions**: opened {r['clients']} at a time (connect, TLS, LOGIN with a cheap "
        "argon2id hash on both servers, SELECT INBOX, IDLE) within a ramp budget, then held; memory read once "
        "all idle (mssgw: its one process; Dovecot: summed over its processes, RSS counting shared pages once per "
        "process, PSS splitting them), CPU while idle, then every session must answer DONE.",
        "",
    ]
    rows = []
    for i in idles:
        name = "(a) Dovecot (reference)" if i["server"] == "dovecot" else "(b) mssgw"
        after = i["after"] or {}
        rows.append(
            [
                name,
                f"{i['established']:,}/{i['attempted']:,}",
                num(i["seconds_to_open"]),
                num(i["opened_per_second"]),
                num(after.get("processes"), 0),
                num(after["rss_kb"] / 1024) if after else "–",
                # A delta below zero is the allocator's noise (a quick run holds 20 sessions): no figure.
                num(i["rss_kb_per_connection"], 0) if (i["rss_kb_per_connection"] or 0) >= 0 else "–",
                num(i["pss_kb_per_connection"], 0) if (i["pss_kb_per_connection"] or 0) >= 0 else "–",
                num(i["idle_server_cpu_busy"], 2),
                f"{i['answered_done']:,}",
            ]
        )
    out += table(
        [
            "server",
            "sessions held/asked",
            "seconds to open",
            "opened/s",
            "processes",
            "RSS MB",
            "KB/session (RSS)",
            "KB/session (PSS)",
            "CPUs while idle",
            "answered DONE",
        ],
        rows,
    )
    ours = next((i for i in idles if i["server"] == "mssgw"), None)
    ref = next((i for i in idles if i["server"] == "dovecot"), None)
    notes = []
    if ours is not None:
        if ours["gave_up"]:
            notes.append(
                f"mssgw: {ours['established']:,} of {ours['attempted']:,} sessions opened before the "
                f"{num(ours['ramp_budget_seconds'], 0)} s ramp budget ran out (the run's time limit): the figure is "
                f"for {ours['established']:,} sessions."
            )
        if ref is not None and ref["attempted"] != ours["attempted"]:
            projected_mb = (ref["pss_kb_per_connection"] or 0) * ours["attempted"] / 1024
            size = f"{num(projected_mb / 1024)} GB" if projected_mb >= 1024 else f"{num(projected_mb, 0)} MB"
            notes.append(
                f"Dovecot was asked for {ref['attempted']:,} sessions, not {ours['attempted']:,}: it runs a process "
                f"per session (about {size} of PSS for {ours['attempted']:,}); the per-session figures are compared."
            )
        held = ours["established"]
        full = ours["attempted"] >= IDLE_TARGET
        ok = held >= IDLE_TARGET and ours["answered_done"] == held if full else None
        status = verdict(ok, quick, f"{ours['attempted']:,} asked, the target is {IDLE_TARGET:,}")
        targets.append(
            (
                f"memory per idle IDLE connection ({IDLE_TARGET:,} held)",
                f"{num(ref['pss_kb_per_connection'], 0)} KB PSS ({ref['established']:,} sessions)"
                if ref
                else "not run",
                f"{num(ours['rss_kb_per_connection'], 0)} KB RSS ({num(ours['pss_kb_per_connection'], 0)} PSS), "
                f"{held:,} held",
                ratio(ours["pss_kb_per_connection"] / ref["pss_kb_per_connection"])
                if ref and ref["pss_kb_per_connection"] and ours["pss_kb_per_connection"] is not None
                else "–",
                status,
            )
        )
    if notes:
        out += ["", *notes]
    return out


RENDERERS: dict[str, Callable[[dict[str, Any], bool, list[Target]], list[str]]] = {
    "directory": render_directory,
    "smime": render_smime,
    "smtp_relay": render_smtp,
    "imap": render_imap,
}


def code_line(code: dict[str, Any] | None) -> list[str]:
    if not code or not code.get("commit"):
        return []
    changed = code.get("changed_files")
    extra = f", with {changed} files of gateway/, directory/, certs/ or bench/ changed beside it" if changed else ""
    return [f"- Code: commit {code['commit']}{extra}."]


def render(run: dict[str, Any]) -> str:
    """The generated block, markers included (ends with a newline)."""
    quick = bool(run["quick"])
    started = datetime.fromisoformat(run["started"])
    targets: list[Target] = []
    body: list[str] = []
    for entry in run["benchmarks"]:
        bench = BY_NAME[entry["name"]]
        body += ["", f"### {bench.title} (`{entry['script']}`)", ""]
        after = f", {entry['load_after'][0]:.2f} after" if entry.get("load_after") else ""
        cpu = (
            f"; its processes used {num(entry['cpu_seconds'])} CPU s ({num(entry['cpu_seconds'] / entry['seconds'], 2)}"
            " CPUs on average; the Postfix and Dovecot daemons, which detach, not counted)"
            if entry.get("cpu_seconds") is not None and entry["seconds"]
            else ""
        )
        body.append(
            f"`{entry['script']} {' '.join(entry['args'])}`: {seconds_text(entry['seconds'])}, load average "
            f"{entry['load_before'][0]:.2f} before it{after}{cpu}."
        )
        body.append("")
        r = entry.get("result")
        if r is None:
            body += section_failed(entry, bench)
            continue
        if entry["name"] == "smtp_relay":
            body += render_smtp(r, quick, targets)
            body += ["", "### Submit-to-mailbox latency at half the peak rate (`bench/smtp_relay.py --latency`)", ""]
            body += render_latency(r, quick, targets)
        else:
            body += RENDERERS[entry["name"]](r, quick, targets)
        if entry.get("exit_status") not in (0, None) or entry.get("error"):
            body += ["", f"The script exited with status {entry['exit_status']}: something failed (see above)."]
    head = [
        BEGIN,
        "<!-- Written by bench/run_all.py: everything between these markers is replaced at its next run. -->",
        "",
        "## Latest run of every benchmark" + (" (quick sizes: checks the runner, not the targets)" if quick else ""),
        "",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M')} UTC; the whole run took {seconds_text(run['seconds'])}.",
        f"- Machine: {machine_text(run['machine'])}.",
        f"- Command: `{run['command']}`.",
        *code_line(run.get("code")),
        "- Each benchmark ran as its own process, one after the other, beside its reference measured in the "
        "same run; the machine is shared with other work, which counts in every figure.",
    ]
    if run.get("results"):
        head.append(f"- Raw results (each script's JSON and output, not in git): `{run['results']}`.")
    if run.get("not_run"):
        head.append(f"- Not run this time (`--only`): {', '.join(run['not_run'])}.")
    head += [
        "",
        "### Targets",
        "",
        *table(["target", "reference", "mssgw", "ratio", "status"], [list(t) for t in targets], right=5),
        "",
        "Ratios are mssgw's rate over the reference's (above 1× is faster), except the directory import (its "
        "time over plain read + split's) and idle memory (mssgw's PSS per session over Dovecot's: below 1× is "
        "smaller).",
    ]
    tail = [
        "",
        "The sections after this generated block are earlier runs and their analysis, written by hand.",
        END,
    ]
    return "\n".join([*head, *body, *tail]) + "\n"


def splice(existing: str | None, block: str) -> str:
    """Put the generated block into a document: in place of the old block, else after the first heading."""
    if not existing:
        return "# Benchmarks\n\n" + block
    begin = existing.find(BEGIN)
    if begin >= 0:
        end = existing.find(END, begin)
        if end < 0:
            raise ValueError(f"{BEGIN} without {END}: fix the document by hand")
        after = end + len(END)
        if existing.startswith("\n", after):
            after += 1
        return existing[:begin] + block + existing[after:]
    if existing.startswith("# "):
        line_end = existing.find("\n")
        if line_end < 0:
            return existing + "\n\n" + block
        return existing[: line_end + 1] + "\n" + block + existing[line_end + 1 :]
    return block + "\n" + existing


def write(out: Path, run: dict[str, Any]) -> None:
    existing = out.read_text(encoding="utf-8") if out.exists() else None
    text = splice(existing, render(run))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (about 2 minutes): checks the runner")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the markdown to write (default: %(default)s)")
    parser.add_argument(
        "--results", type=Path, default=DEFAULT_RESULTS, help="where the scripts' JSON go (default: %(default)s)"
    )
    parser.add_argument(
        "--only",
        type=lambda text: [n.strip() for n in text.split(",") if n.strip()],
        help=f"a comma-separated subset of: {', '.join(BY_NAME)}",
    )
    parser.add_argument("--render", type=Path, metavar="DIR", help="do not run: write the markdown from DIR/run.json")
    args = parser.parse_args(argv)
    if args.only is not None:
        unknown = [n for n in args.only if n not in BY_NAME]
        if unknown or not args.only:
            parser.error(f"--only: unknown {', '.join(unknown) or 'empty list'} (known: {', '.join(BY_NAME)})")
    if args.render is not None:
        run = json.loads((args.render / "run.json").read_text(encoding="utf-8"))
    else:
        run = run_all(args, argv)
    write(args.out, run)
    print(f"run_all: wrote {args.out}", file=sys.stderr)
    failed = [e["name"] for e in run["benchmarks"] if e.get("result") is None or e.get("exit_status") != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
