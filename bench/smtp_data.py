"""Benchmark of SMTP DATA reading: aiosmtpd's own loop (the reference) against gateway/smtp/data.py.

    python bench/smtp_data.py [--messages 2000] [--big-mb 25] [--big 3] [--json FILE]

Two bare servers on loopback, each in a process of its own with a handler that only answers 250:
(a) aiosmtpd 1.4.6's SMTP, which reads DATA with one `readuntil(CRLF)` per line; (b) the node's
`GatewaySMTP`, which reads it in chunks (`DataReader`). The same client (smtplib in this process, one
connection, no TLS: the TLS cost is the same for both) sends N messages of 10,240 and of 20,480 octets
(76-octet lines, like base64 bodies), then a few messages of `--big-mb` MB. Each server process
reports the CPU it used for each batch, MAIL, RCPT, DATA and the 250 included; the table gives ms of
server CPU per message and the ratio (b)/(a). Each delivered content is checked to be the sent one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import smtplib
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine_info


def message(size: int, n: int) -> bytes:
    head = b"From: a@b.fr\r\nTo: c@d.fr\r\nSubject: %d\r\n\r\n" % n
    line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n"  # 78 octets with CRLF
    body = line * ((size - len(head)) // len(line) + 1)
    return (head + body)[: size - 2] + b"\r\n"


def serve(kind: str, pipe: Connection) -> None:
    """The server process: answers the client, and its CPU time when the parent asks."""
    import hashlib

    from aiosmtpd.smtp import SMTP

    from gateway.smtp.server import GatewaySMTP

    class Handler:
        def __init__(self) -> None:
            self.digests: list[str] = []

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            self.digests.append(hashlib.sha256(envelope.original_content).hexdigest())
            return "250 OK"

    handler = Handler()
    cls = SMTP if kind == "aiosmtpd" else GatewaySMTP
    limit = 64 << 20

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: cls(handler, hostname="bench", data_size_limit=limit, decode_data=False), "127.0.0.1", 0
        )
        pipe.send(server.sockets[0].getsockname()[1])
        while True:
            command = await loop.run_in_executor(None, pipe.recv)
            if command == "stop":
                break
            pipe.send((time.process_time(), handler.digests))  # this process's CPU, all threads, ns-precise
            handler.digests = []
        server.close()

    asyncio.run(main())


def run(kind: str, batches: list[tuple[str, list[bytes]]]) -> dict[str, Any]:
    import hashlib

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=serve, args=(kind, child), daemon=True)
    proc.start()
    port = parent.recv()
    out: dict[str, Any] = {}
    client = smtplib.SMTP("127.0.0.1", port, timeout=600)
    client.ehlo("bench")
    parent.send("cpu")
    cpu0, _ = parent.recv()
    for name, messages in batches:
        t0 = time.perf_counter()
        for m in messages:
            client.sendmail("a@b.fr", ["c@d.fr"], m)
        wall = time.perf_counter() - t0
        parent.send("cpu")
        cpu1, digests = parent.recv()
        if digests != [hashlib.sha256(m).hexdigest() for m in messages]:
            raise SystemExit(f"{kind}: a delivered content differs from the sent one ({name})")
        out[name] = {"messages": len(messages), "cpu_ms": (cpu1 - cpu0) * 1000 / len(messages), "wall_s": wall}
        cpu0 = cpu1
    client.quit()
    parent.send("stop")
    proc.join(30)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per small size (default: %(default)s)")
    parser.add_argument("--big-mb", type=int, default=25, help="size of the big messages in MB (default: %(default)s)")
    parser.add_argument("--big", type=int, default=3, help="big messages (default: %(default)s)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON to FILE")
    args = parser.parse_args(argv)
    batches = [
        ("10 KB", [message(10240, n) for n in range(args.messages)]),
        ("20 KB", [message(20480, n) for n in range(args.messages)]),
        (f"{args.big_mb} MB", [message(args.big_mb << 20, n) for n in range(args.big)]),
    ]
    machine = machine_info()
    print(f"SMTP DATA benchmark: {args.messages:,} messages of 10 KB and of 20 KB, {args.big} of {args.big_mb} MB")
    print(
        f"machine: {machine['usable_cpus']} usable CPUs, {machine['cpu_model']}, Python {machine['python']}, "
        f"load average {machine['load_average'][0] if machine['load_average'] else '?'} at start"
    )
    results = {kind: run(kind, batches) for kind in ("aiosmtpd", "gateway")}
    print(f"{'batch':<10} {'(a) aiosmtpd ms/msg':>20} {'(b) mssgw ms/msg':>18} {'(b)/(a)':>8}")
    for name, _ in batches:
        a, b = results["aiosmtpd"][name]["cpu_ms"], results["gateway"][name]["cpu_ms"]
        print(f"{name:<10} {a:>20.3f} {b:>18.3f} {b / a:>8.2f}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
