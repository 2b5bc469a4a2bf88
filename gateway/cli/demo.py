"""`mssgw demo init DIR` / `mssgw demo run DIR`: a whole trust space on one machine, on loopback.

`demo init DIR` lays out one trust-space PKI (DIR/pki) and two operators, each a data directory with
its own keys and database: DIR/operator-a (hopital-a.mssante.test) and DIR/operator-b
(clinique-b.mssante.test; `.test` is reserved for testing). Each has the other on its trust list and a
static route to the other's relay port; every listener gets a free loopback port chosen at init.
Demo mailboxes of each type get generated passwords, certificates, and a synthetic directory sample.
DIR/published holds every operator's S/MIME certificates, as the national directory would publish them:
each operator finds the other's recipients there (`[smime] published`) to sign and encrypt for them.
Operator B also hosts an enrolled patient (`<INS>@patient.clinique-b.mssante.test`) whose password and
TOTP secret are in the credentials, with the web inbox address, to try the whole patient path in a browser.
DIR/credentials.json (mode 0600) holds the addresses, passwords, operators and ports; the passwords
are printed once. `demo run DIR` serves every operator in DIR until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from certs.pki import TrustSpacePKI, write_bundle
from directory import synthetic
from directory.addresses import patient_address
from directory.identifiers import INS_NIR_TEST_OID, idnatps_from, ins_key
from directory.importer import import_extraction
from gateway.audit.events import AuditEvent
from gateway.auth import totp
from gateway.auth.passwords import generate_password, hash_async
from gateway.cli.base import Outcome
from gateway.cli.node import init_node
from gateway.cli.patient import new_activation_code
from gateway.config import CONFIG_FILENAME, load_config
from gateway.errors import Conflict, UsageError
from gateway.node import Node
from gateway.store.crypto import write_secret_file
from gateway.store.mailboxes import Owner
from gateway.store.patients import Identity

SAMPLE_ROWS = 2000
PORTS = ("https", "submission", "submissions", "relay", "imap", "imaps")


def _owner(idtype: str, n: int, last: str, first: str, civility: str, code: str, label: str) -> Owner:
    ident = synthetic.rpps(n) if idtype == "8" else synthetic.adeli(n)
    return Owner(idnatps_from(idtype, ident), idtype, ident, last, first, civility, code, label)


DEMO_PATIENT = Identity(
    ins="2850375123456" + ins_key("2850375123456"),
    oid=INS_NIR_TEST_OID,
    birth_name="DURAND",
    given_name="MARIE",
    birth_date="1985-03-14",
    sex="F",
)


OPERATORS: list[dict[str, Any]] = [
    {
        "dir": "operator-a",
        "domain": "hopital-a.mssante.test",
        "mailboxes": [
            ("claire.martin", "PER", _owner("8", 900_001, "MARTIN", "Claire", "MME", "10", "Médecin"), ""),
            ("lucas.bernard", "PER", _owner("0", 900_002, "BERNARD", "Lucas", "M", "60", "Infirmier"), ""),
            ("secretariat.cardiologie", "ORG", None, "Cardiologie"),
            ("dpi", "APP", None, ""),
        ],
        "delegations": [("secretariat.cardiologie", "claire.martin")],
    },
    {
        "dir": "operator-b",
        "domain": "clinique-b.mssante.test",
        "mailboxes": [
            ("paul.durand", "PER", _owner("8", 900_003, "DURAND", "Paul", "M", "10", "Médecin"), ""),
            ("accueil", "ORG", None, "Accueil"),
        ],
        "delegations": [("accueil", "paul.durand")],
        "patients": [DEMO_PATIENT],
    },
]


def _ephemeral_range() -> range:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return range(low, high + 1)
    except (OSError, ValueError):
        return range(32768, 61000)  # Linux's default


def listener_ports() -> dict[str, dict[str, int]]:
    """Each operator's listeners' ports, all distinct: one draw for both operators (two draws could give
    them the same port, each draw's being distinct only among themselves)."""
    picked = iter(free_ports(len(PORTS) * len(OPERATORS)))
    return {op["dir"]: {name: next(picked) for name in PORTS} for op in OPERATORS}


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports, held open together so they differ, then released.

    Chosen below the kernel's ephemeral range: a port picked there can be taken by any outgoing
    connection's source port before the demo binds it (seen as EADDRINUSE under a busy test run).
    """
    ephemeral = _ephemeral_range()
    candidates = [p for p in range(20000, 32768) if p not in ephemeral] or list(range(20000, 32768))
    random.SystemRandom().shuffle(candidates)
    socks: list[socket.socket] = []
    try:
        for port in candidates:
            if len(socks) == n:
                break
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            socks.append(s)
        if len(socks) < n:
            raise UsageError(f"no {n} free loopback ports between 20000 and 32767")
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


async def _enrolled_patient(node: Node, identity: Identity, author: str) -> dict[str, Any]:
    """A patient mailbox already enrolled (password and TOTP secret in credentials.json), to try the web inbox."""
    address = patient_address(identity.ins, node.cfg.node.patient)
    code, password, secret = new_activation_code(), generate_password(), totp.new_secret()
    await node.patients.create(address, identity, code)
    await node.patients.enrol(address, code, password_hash=await hash_async(password), totp_secret=secret)
    await node.audit.record(
        AuditEvent.PATIENT_CREATED, author=author, request={"address": address}, response={"result": "done"}
    )
    return {
        "address": address,
        "type": "PAT",
        "password": password,
        "totp_secret": secret,
        "otpauth_uri": totp.provisioning_uri(secret, address, issuer=f"MSSanté {node.cfg.node.domain}"),
        "web_url": node.cfg.web_url,
    }


async def _populate(
    cfg_path: Path, op: dict[str, Any], pki: TrustSpacePKI, peer: str, author: str
) -> list[dict[str, Any]]:
    cfg = load_config(cfg_path)
    domain = op["domain"]
    created: list[dict[str, Any]] = []
    async with Node(cfg) as node:
        repo = node.mailboxes
        for local, kind, owner, service in op["mailboxes"]:
            address = f"{local}@{domain}"
            password = generate_password()
            await repo.create(address, kind, owner=owner, service=service, password_hash=await hash_async(password))
            issued = pki.issue_app(address) if kind == "APP" else pki.issue_address(address)
            bundle = cfg.base_dir / ("apps" if kind == "APP" else "smime") / address
            files = write_bundle(issued, bundle, name=local, root=pki.root)
            if kind == "APP":
                await repo.add_certificate(address, issued.certificate, "tls")
            else:  # the node signs as the address (Direct model): it keeps the key, sealed
                await repo.add_certificate(address, issued.certificate, "smime", key=issued.key, chain=issued.chain)
            created.append(
                {
                    "address": address,
                    "type": kind,
                    "password": password,
                    "certificate": str(files["cert"]),
                    "key": str(files["key"]),
                }
            )
            await node.audit.record(
                AuditEvent.MAILBOX_CREATED,
                author=author,
                request={"address": address, "type": kind},
                response={"result": "done", "certificate_serial": issued.serial},
            )
        for org, user in op["delegations"]:
            await repo.delegate(f"{org}@{domain}", f"{user}@{domain}")
        for identity in op.get("patients", ()):
            created.append(await _enrolled_patient(node, identity, author))
        await node.trust.add(peer)
        await node.trust.add(f"patient.{peer}")  # the peer's patients (nationally: patient.mssante.fr)
        sample = cfg.base_dir / "directory-sample.txt"
        synthetic.write_extraction(sample, synthetic.generate_rows(SAMPLE_ROWS, seed=7))
        summary = await import_extraction(node.directory, sample)
        await node.audit.record(
            AuditEvent.DEMO_INITIALISED,
            author=author,
            request={"data": str(cfg.base_dir), "peer": peer},
            response={"result": "done", "mailboxes": len(created), "directory_rows": summary.read},
        )
        await node.audit.checkpoint()
    return created


async def init(args: argparse.Namespace, author: str) -> Outcome:
    root = Path(args.dir).expanduser().resolve()
    creds_path = root / "credentials.json"
    if creds_path.exists():
        raise Conflict(f"{root} already holds a demo (see {creds_path}); remove the directory to start over")
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    pki = TrustSpacePKI.create(
        root / "pki", label="espace-de-confiance.test", crl_base_url="http://crl.mssante.test/pki"
    )
    ports = listener_ports()
    # What the national directory would publish beside its data: every operator's S/MIME certificates
    # (address-bound and domain-bound), read by both operators' certificate discovery.
    published = root / "published"
    published.mkdir(mode=0o755)
    out: dict[str, Any] = {"trust_anchor": str(root / "pki" / "root" / "cert.pem"), "operators": []}
    for i, op in enumerate(OPERATORS):
        other = OPERATORS[1 - i]
        mine = ports[op["dir"]]
        result = await init_node(
            domain=op["domain"],
            data_dir=root / op["dir"],
            author=author,
            secrets_dir=root / "secrets" / op["dir"],
            https_port=mine["https"],
            pki_dir=root / "pki",
            smtp_ports=(mine["submission"], mine["submissions"], mine["relay"]),
            imap_ports=(mine["imap"], mine["imaps"]),
            routes={
                d: f"127.0.0.1:{ports[other['dir']]['relay']}" for d in (other["domain"], f"patient.{other['domain']}")
            },
            published=[published],
        )
        mailboxes = await _populate(result.config, op, pki, other["domain"], author)
        data_dir = result.config.parent
        shutil.copyfile(data_dir / "smime" / "domain" / "cert.pem", published / f"{op['domain']}.pem")
        for m in mailboxes:
            if m["type"] not in ("APP", "PAT"):
                shutil.copyfile(m["certificate"], published / f"{m['address']}.pem")
        out["operators"].append(
            {
                "name": op["dir"],
                "domain": op["domain"],
                "config": str(result.config),
                "ports": mine,
                "mailboxes": mailboxes,
            }
        )
    write_secret_file(creds_path, json.dumps(out, indent=2, ensure_ascii=False).encode() + b"\n")
    lines = [f"demo trust space created in {root} (credentials kept in {creds_path}, shown once here):"]
    for op in out["operators"]:
        p = op["ports"]
        lines.append(
            f"  {op['domain']}: submission 127.0.0.1:{p['submission']} (STARTTLS), {p['submissions']} (TLS), "
            f"relay {p['relay']}, IMAP {p['imap']} (STARTTLS), {p['imaps']} (TLS), https {p['https']}"
        )
        width = max(len(m["address"]) for m in op["mailboxes"])
        lines += [f"    {m['type']:3} {m['address']:{width}}  password {m['password']}" for m in op["mailboxes"]]
        lines += [
            f"    patient web inbox {m['web_url']} ({m['address']}), TOTP secret {m['totp_secret']}"
            for m in op["mailboxes"]
            if m["type"] == "PAT"
        ]
    lines.append(f"run it: mssgw demo run {root}")
    return Outcome(out, "\n".join(lines))


async def run(args: argparse.Namespace, author: str) -> Outcome:
    from gateway.app import serve
    from gateway.audit import oplog

    root = Path(args.dir).expanduser().resolve()
    configs = sorted(root.glob(f"*/{CONFIG_FILENAME}"))
    if not configs:
        raise UsageError(f"no demo operator in {root}: run `mssgw demo init {root}`")
    oplog.configure(root / "log" / "mssgw.jsonl", logging.INFO)
    print(f"demo credentials: {root / 'credentials.json'}; operational log: {root / 'log' / 'mssgw.jsonl'}", flush=True)
    stop = asyncio.Event()

    def announcer(name: str) -> Callable[[str], None]:
        return lambda line: print(f"{name}: {line}", flush=True)

    await asyncio.gather(*(serve(load_config(c), announce=announcer(c.parent.name), stop=stop) for c in configs))
    return Outcome(None, "")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    grp = sub.add_parser("demo", help="a demo trust space on loopback").add_subparsers(required=True, metavar="ACTION")
    p = grp.add_parser("init", parents=[common], help="create a PKI, two operators, mailboxes and credentials")
    p.add_argument("dir", help="directory to create")
    p.set_defaults(_standalone=init)
    p = grp.add_parser("run", parents=[common], help="serve every operator of a demo until interrupted")
    p.add_argument("dir")
    p.set_defaults(_standalone=run)
