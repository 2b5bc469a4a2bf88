"""`mssgw demo init|serve`: a ready-to-try operator on loopback with demo mailboxes.

`demo init --data DIR` creates DIR/operator-a (domain hopital-a.mssante.test, `.test` being reserved
for testing), mailboxes of each type with generated passwords, an APP client certificate and S/MIME
certificates, a synthetic national directory sample, and DIR/credentials.json (mode 0600). The
credentials are printed once; afterwards they are only in that file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from certs.pki import TrustSpacePKI, write_bundle
from directory import synthetic
from directory.identifiers import idnatps_from
from directory.importer import import_extraction
from gateway.audit.events import AuditEvent
from gateway.auth.passwords import generate_password, hash_async
from gateway.cli.base import Outcome
from gateway.cli.node import init_node
from gateway.config import CONFIG_FILENAME, load_config
from gateway.errors import Conflict, UsageError
from gateway.node import Node
from gateway.store.crypto import write_secret_file
from gateway.store.mailboxes import Owner

DOMAIN_A = "hopital-a.mssante.test"
PEER_DOMAIN = "clinique-b.mssante.test"
SAMPLE_ROWS = 2000


def _mailboxes(domain: str) -> list[dict[str, Any]]:
    rpps = synthetic.rpps(900_001)
    adeli = synthetic.adeli(900_002)
    return [
        {
            "address": f"claire.martin@{domain}",
            "type": "PER",
            "owner": Owner(idnatps_from("8", rpps), "8", rpps, "MARTIN", "Claire", "MME", "10", "Médecin"),
        },
        {
            "address": f"lucas.bernard@{domain}",
            "type": "PER",
            "owner": Owner(idnatps_from("0", adeli), "0", adeli, "BERNARD", "Lucas", "M", "60", "Infirmier"),
        },
        {"address": f"secretariat.cardiologie@{domain}", "type": "ORG", "service": "Cardiologie"},
        {"address": f"dpi@{domain}", "type": "APP"},
    ]


async def init(args: argparse.Namespace, author: str) -> Outcome:
    root = Path(args.data).expanduser().resolve()
    creds_path = root / "credentials.json"
    if creds_path.exists():
        raise Conflict(f"{root} already holds a demo (see {creds_path}); remove the directory to start over")
    op_dir = root / "operator-a"
    result = await init_node(
        domain=DOMAIN_A,
        data_dir=op_dir,
        author=author,
        secrets_dir=root / "secrets" / "operator-a",
        https_port=args.https_port,
    )
    cfg = load_config(result.config)
    pki = TrustSpacePKI(cfg.pki_dir or op_dir / "pki")
    out: dict[str, Any] = {
        "operators": [
            {
                "domain": DOMAIN_A,
                "config": str(result.config),
                "https": f"https://127.0.0.1:{args.https_port}/healthz",
                "trust_anchor": str(op_dir / "pki-root.pem"),
                "mailboxes": [],
            }
        ]
    }
    op = out["operators"][0]
    async with Node(cfg) as node:
        repo = node.mailboxes
        for spec in _mailboxes(DOMAIN_A):
            password = generate_password()
            await repo.create(
                spec["address"],
                spec["type"],
                owner=spec.get("owner"),
                service=spec.get("service", ""),
                password_hash=await hash_async(password),
            )
            entry: dict[str, Any] = {"address": spec["address"], "type": spec["type"], "password": password}
            kind = spec["type"]
            issued = pki.issue_app(spec["address"]) if kind == "APP" else pki.issue_address(spec["address"])
            bundle = op_dir / ("apps" if kind == "APP" else "smime") / spec["address"]
            files = write_bundle(issued, bundle, name=spec["address"].split("@")[0], root=pki.root)
            await repo.add_certificate(spec["address"], issued.certificate, "tls" if kind == "APP" else "smime")
            entry["certificate"] = str(files["cert"])
            entry["key"] = str(files["key"])
            op["mailboxes"].append(entry)
            await node.audit.record(
                AuditEvent.MAILBOX_CREATED,
                author=author,
                request={"address": spec["address"], "type": kind},
                response={"result": "done", "certificate_serial": issued.serial},
            )
        await repo.delegate(f"secretariat.cardiologie@{DOMAIN_A}", f"claire.martin@{DOMAIN_A}")
        await node.trust.add(PEER_DOMAIN)
        sample = op_dir / "directory-sample.txt"
        synthetic.write_extraction(sample, synthetic.generate_rows(SAMPLE_ROWS, seed=7))
        summary = await import_extraction(node.directory, sample)
        await node.audit.record(
            AuditEvent.DEMO_INITIALISED,
            author=author,
            request={"data": str(root)},
            response={"result": "done", "mailboxes": len(op["mailboxes"]), "directory_rows": summary.read},
        )
        await node.audit.checkpoint()
    write_secret_file(creds_path, json.dumps(out, indent=2, ensure_ascii=False).encode() + b"\n")
    lines = [
        f"demo operator {DOMAIN_A} created in {op_dir}",
        "credentials (shown once; kept in " + str(creds_path) + "):",
    ]
    width = max(len(m["address"]) for m in op["mailboxes"])
    lines += [f"  {m['type']:3} {m['address']:{width}}  password {m['password']}" for m in op["mailboxes"]]
    lines.append(f"directory sample: {summary.read} rows imported; trust list: {PEER_DOMAIN}")
    return Outcome(out, "\n".join(lines))


async def serve(args: argparse.Namespace, author: str) -> Outcome:
    from gateway.app import serve as run
    from gateway.audit import oplog

    root = Path(args.data).expanduser().resolve()
    configs = sorted(root.glob(f"*/{CONFIG_FILENAME}"))
    if not configs:
        raise UsageError(f"no demo operator in {root}: run `mssgw demo init --data {root}`")
    oplog.configure(root / "log" / "mssgw.jsonl", logging.INFO)
    print(f"demo credentials: {root / 'credentials.json'}; operational log: {root / 'log' / 'mssgw.jsonl'}")
    stop = asyncio.Event()

    def announcer(name: str) -> Callable[[str], None]:
        return lambda line: print(f"{name}: {line}", flush=True)

    await asyncio.gather(*(run(load_config(c), announce=announcer(c.parent.name), stop=stop) for c in configs))
    return Outcome(None, "")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    grp = sub.add_parser("demo", help="a demo operator on loopback").add_subparsers(required=True, metavar="ACTION")
    p = grp.add_parser("init", parents=[common], help="create demo operators, mailboxes and credentials")
    p.add_argument("--data", required=True)
    p.add_argument("--https-port", type=int, default=8443)
    p.set_defaults(_standalone=init)
    p = grp.add_parser("serve", parents=[common], help="run every demo operator")
    p.add_argument("--data", required=True)
    p.set_defaults(_standalone=serve)
