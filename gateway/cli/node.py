"""`mssgw init` and `mssgw serve`: create and run an operator node."""

from __future__ import annotations

import argparse
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from certs.pki import PKIError, TrustSpacePKI, write_bundle
from directory.addresses import check_domain
from gateway.audit.checkpoint import CheckpointSigner
from gateway.audit.events import AuditEvent
from gateway.cli.base import Outcome, configure_cli_logging
from gateway.config import CONFIG_FILENAME, load_config, render_config
from gateway.errors import Conflict, UsageError
from gateway.node import Node
from gateway.store.crypto import generate_kek_b64, write_secret_file


def default_secrets_dir(domain: str) -> Path:
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "mssgw" / f"{domain}-{secrets.token_hex(4)}"


@dataclass
class InitResult:
    config: Path
    data: dict[str, Any]


async def init_node(
    *,
    domain: str,
    data_dir: Path,
    author: str,
    secrets_dir: Path | None = None,
    name: str = "node1",
    host: str = "127.0.0.1",
    https_port: int = 8443,
    pki_dir: Path | None = None,
    smtp_ports: tuple[int, int, int] = (587, 465, 25),
    imap_ports: tuple[int, int] = (143, 993),
    routes: dict[str, str] | None = None,
    published: list[Path] | None = None,
) -> InitResult:
    """Create a node's data directory: config, keys, databases, development PKI and TLS certificate."""
    domain = domain.strip().lower().rstrip(".")
    reason = check_domain(domain)
    if reason:
        raise UsageError(f"invalid domain {domain!r}: {reason}")
    data_dir = data_dir.expanduser().resolve()
    cfg_path = data_dir / CONFIG_FILENAME
    if cfg_path.exists():
        raise Conflict(f"{cfg_path} already exists: this data directory holds a node")
    secrets_dir = (secrets_dir or default_secrets_dir(domain)).expanduser().resolve()
    if secrets_dir == data_dir or data_dir in secrets_dir.parents:
        raise UsageError(f"the secrets directory {secrets_dir} must be outside the data directory {data_dir}")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    kek_file = secrets_dir / "kek.key"
    checkpoint_key = secrets_dir / "audit-checkpoint.pem"
    if kek_file.exists() or checkpoint_key.exists():
        raise Conflict(f"{secrets_dir} already holds node keys; choose another --secrets directory")
    write_secret_file(kek_file, generate_kek_b64().encode() + b"\n")
    signer = CheckpointSigner.generate(checkpoint_key)
    (data_dir / "audit-checkpoint.pub").write_bytes(signer.verifier.public_pem())

    own_pki = pki_dir is None
    pki_path = (pki_dir or data_dir / "pki").resolve()
    crl_base = f"http://crl.{domain}/pki"
    try:
        if own_pki:
            pki = TrustSpacePKI.create(pki_path, label=domain, crl_base_url=crl_base)
        elif TrustSpacePKI.exists(pki_path):
            pki = TrustSpacePKI(pki_path)
        else:
            raise UsageError(f"no PKI at {pki_path}")
        # The patient domain too: a patient's reply leaves with an envelope sender there, and peers accept
        # a sender only in a domain the relaying operator's certificate names.
        names = [domain, f"patient.{domain}"]
        hosts = [*names, f"mail.{domain}", "localhost", host] if host not in ("0.0.0.0", "::") else names  # noqa: S104
        issued = pki.issue_server(list(dict.fromkeys(hosts)))
        write_bundle(issued, data_dir / "tls", name="node", root=pki.root)
        # The domain-bound S/MIME certificate signing this node's bounces to peers (and decrypting what
        # peers encrypt to the domain's certificate); it also covers the patient domain, for whose
        # mailboxes the operator signs and decrypts.
        organisation = pki.issue_domain(domain, f"patient.{domain}")
        write_bundle(organisation, data_dir / "smime" / "domain", name="domain", root=pki.root)
    except PKIError as exc:
        raise UsageError(str(exc)) from None
    anchor = data_dir / "pki-root.pem"
    anchor.write_bytes((data_dir / "tls" / "root.pem").read_bytes())

    cfg_path.write_text(
        render_config(
            domain=domain,
            node_name=name,
            kek_file=kek_file,
            checkpoint_key=checkpoint_key,
            pki_dir=pki_path.relative_to(data_dir) if own_pki else pki_path,
            trust_anchor=anchor.name,
            host=host,
            https_port=https_port,
            crl_base_url=crl_base,
            submission_port=smtp_ports[0],
            submissions_port=smtp_ports[1],
            relay_port=smtp_ports[2],
            imap_port=imap_ports[0],
            imaps_port=imap_ports[1],
            routes=routes,
            published=[str(p) for p in published or []],
            organisation=("smime/domain/fullchain.pem", "smime/domain/key.pem"),
        )
    )
    cfg = load_config(cfg_path)
    data = {
        "config": str(cfg_path),
        "domain": domain,
        "data_dir": str(data_dir),
        "keys_dir": str(secrets_dir),
        "pki_dir": str(pki_path),
        "tls_serial": issued.serial,
        "smime_domain_serial": organisation.serial,
        "checkpoint_key_id": signer.key_id,
    }
    async with Node(cfg) as node:
        await node.audit.record(
            AuditEvent.NODE_INITIALISED,
            author=author,
            request={"domain": domain, "name": name},
            response={"result": "done", **data},
        )
        if own_pki:
            await node.audit.record(
                AuditEvent.PKI_INITIALISED,
                author=author,
                request={"dir": str(pki_path)},
                response={"result": "done"},
            )
        await node.audit.record(
            AuditEvent.PKI_ISSUED,
            author=author,
            request={"profile": "server", "hosts": hosts},
            response={"result": "done", "serial": issued.serial},
        )
        await node.audit.checkpoint()
    return InitResult(cfg_path, data)


async def init(args: argparse.Namespace, author: str) -> Outcome:
    result = await init_node(
        domain=args.domain,
        data_dir=Path(args.data),
        author=author,
        secrets_dir=Path(args.secrets) if args.secrets else None,
        name=args.name,
        host=args.host,
        https_port=args.https_port,
        pki_dir=Path(args.pki_dir) if args.pki_dir else None,
        smtp_ports=(args.submission_port, args.submissions_port, args.relay_port),
        imap_ports=(args.imap_port, args.imaps_port),
    )
    d = result.data
    text = (
        f"node {d['domain']} initialised in {d['data_dir']}\n"
        f"  configuration: {d['config']}\n"
        f"  keys (KEK, audit signing key): {d['keys_dir']} (keep them apart from the data, back them up)\n"
        f"  development PKI: {d['pki_dir']}\n"
        f"next: mssgw mailbox add ... -c {d['config']}; mssgw serve -c {d['config']}"
    )
    return Outcome(d, text)


async def serve(args: argparse.Namespace, author: str) -> Outcome:
    from gateway.app import serve as run

    cfg = load_config(getattr(args, "config", None))
    configure_cli_logging(cfg, serving=True)
    await run(cfg, announce=lambda line: print(line, flush=True))
    return Outcome(None, "")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("init", parents=[common], help="create an operator node's data directory")
    p.add_argument("--domain", required=True, help="the operator's mail domain")
    p.add_argument("--data", required=True, help="data directory to create")
    p.add_argument("--secrets", help="where the KEK and audit signing key go (outside --data)")
    p.add_argument("--name", default="node1", help="node name")
    p.add_argument("--host", default="127.0.0.1", help="listen address")
    p.add_argument("--https-port", type=int, default=8443)
    p.add_argument("--submission-port", type=int, default=587, help="SMTP submission, STARTTLS (0: any free port)")
    p.add_argument("--submissions-port", type=int, default=465, help="SMTP submission, implicit TLS")
    p.add_argument("--relay-port", type=int, default=25, help="SMTP from peer operators, mutual TLS")
    p.add_argument("--imap-port", type=int, default=143, help="IMAP, STARTTLS (0: any free port)")
    p.add_argument("--imaps-port", type=int, default=993, help="IMAP over implicit TLS")
    p.add_argument("--pki-dir", help="use this existing trust-space PKI instead of creating one")
    p.set_defaults(_standalone=init)
    p = sub.add_parser("serve", parents=[common], help="run the node")
    p.set_defaults(_standalone=serve)
