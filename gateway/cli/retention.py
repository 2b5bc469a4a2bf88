"""`mssgw retention run`: delete the mailboxes nobody has logged in to for `[retention] inactive_after`,
once their owners were warned (gateway.store.retention; a daily timer in deploy/)."""

from __future__ import annotations

import argparse

from gateway.audit.events import AuditEvent
from gateway.cli.base import Command, Context, Outcome, table
from gateway.store.retention import Retention


async def run(ctx: Context, args: argparse.Namespace) -> Outcome:
    result = await Retention(ctx.cfg, ctx.node.mailboxes, ctx.node.audit).run(dry_run=args.dry_run)
    rows = [
        {"action": action, "address": mb.address, "kind": mb.kind, "idle since": mb.idle_since.date().isoformat()}
        for action, found in (
            ("warned", result.warned),
            ("deleted", result.deleted),
            ("waiting", result.waiting),
            ("failed", result.failed),
        )
        for mb in found
    ]
    verb = "would be " if args.dry_run else ""
    text = (
        f"{len(result.warned)} {verb}warned, {len(result.deleted)} {verb}deleted, "
        f"{len(result.waiting)} warned and within [retention] warn_before"
        + (f", {len(result.failed)} failed (see the log; tried again next run)" if result.failed else "")
    )
    data = {
        "dry_run": args.dry_run,
        "warned": [mb.as_dict() for mb in result.warned],
        "deleted": [mb.as_dict() for mb in result.deleted],
        "waiting": [mb.as_dict() for mb in result.waiting],
        "failed": [mb.as_dict() for mb in result.failed],
    }
    summary = {
        "dry_run": args.dry_run,
        "warned": len(result.warned),
        "deleted": len(result.deleted),
        "failed": len(result.failed),
    }
    shown = (table(rows, ["action", "address", "kind", "idle since"]) + "\n" if rows else "") + text
    # A failed step fails the command (and its systemd unit: monitoring sees it).
    return Outcome(data, shown, audit=summary, exit_code=1 if result.failed else 0)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    grp = sub.add_parser("retention", help="mailbox retention").add_subparsers(required=True, metavar="ACTION")
    p = grp.add_parser(
        "run", parents=[common], help="warn the owners of long-idle mailboxes, delete those warned and still idle"
    )
    p.add_argument("--dry-run", action="store_true", help="show what would be done, do nothing")
    p.set_defaults(_command=Command(AuditEvent.RETENTION_RUN, run))
