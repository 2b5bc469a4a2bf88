"""`mssgw trust ...`: the trust list (domains this node exchanges mail with)."""

from __future__ import annotations

import argparse
from pathlib import Path

from directory.addresses import check_domain
from gateway.audit.events import AuditEvent
from gateway.cli.base import Command, Context, Outcome, table
from gateway.errors import NotFound, UsageError
from gateway.policy.trustlist import parse_trust_list


def _domain(text: str) -> str:
    domain = text.strip().lower().rstrip(".")
    reason = check_domain(domain)
    if reason:
        raise UsageError(f"invalid domain {text!r}: {reason}")
    return domain


async def add(ctx: Context, args: argparse.Namespace) -> Outcome:
    domain = _domain(args.domain)
    if ctx.node.is_local_domain(domain):
        raise UsageError(f"{domain} is a domain of this node; it is trusted already")
    added = await ctx.node.trust.add(domain)
    text = f"{domain} added to the trust list" if added else f"{domain} was already on the trust list"
    return Outcome({"domain": domain, "added": added}, text, audit={"added": added})


async def remove(ctx: Context, args: argparse.Namespace) -> Outcome:
    domain = _domain(args.domain)
    source = await ctx.node.trust.remove(domain)
    if source is None:
        raise NotFound(f"{domain} is not on the trust list")
    text = f"{domain} removed from the trust list"
    if source == "list":
        text += " (it came from the national list: the next import brings it back)"
    return Outcome({"domain": domain, "removed": True, "source": source}, text, audit={"source": source})


async def list_(ctx: Context, args: argparse.Namespace) -> Outcome:
    rows = [{"domain": d, "source": "local", "added_at": ""} for d in ctx.cfg.node.local_domains]
    rows += await ctx.node.trust.list()
    return Outcome(rows, table(rows, ["domain", "source", "added_at"]), audit={"results": len(rows)})


async def import_(ctx: Context, args: argparse.Namespace) -> Outcome:
    path: Path = args.file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    domains = [d for d in parse_trust_list(data) if not ctx.node.is_local_domain(d)]
    change = await ctx.node.trust.replace_list(domains)
    data_out = {"file": str(path), "domains": len(domains), "added": change.added, "removed": change.removed}
    text = (
        f"{path}: {len(domains)} domains; added {len(change.added)}, removed {len(change.removed)}, kept {change.kept}"
    )
    return Outcome(
        data_out,
        text,
        audit={"domains": len(domains), "added": len(change.added), "removed": len(change.removed)},
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    grp = sub.add_parser("trust", help="the trust list").add_subparsers(required=True, metavar="ACTION")
    p = grp.add_parser("add-domain", parents=[common], help="trust a peer operator's domain")
    p.add_argument("domain")
    p.set_defaults(_command=Command(AuditEvent.TRUST_DOMAIN_ADDED, add))
    p = grp.add_parser("remove", parents=[common], help="stop trusting a domain")
    p.add_argument("domain")
    p.set_defaults(_command=Command(AuditEvent.TRUST_DOMAIN_REMOVED, remove))
    p = grp.add_parser("list", parents=[common], help="trusted domains")
    p.set_defaults(_command=Command(AuditEvent.TRUST_LISTED, list_))
    p = grp.add_parser("import", parents=[common], help="replace the national part with a trust list XML file")
    p.add_argument("file", type=Path)
    p.set_defaults(_command=Command(AuditEvent.TRUST_LIST_IMPORTED, import_))
