"""`mssgw audit verify|export|search|checkpoint|archive`: the tamper-evident audit log."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

from gateway.audit import archive as aarchive
from gateway.audit import verify as averify
from gateway.audit.checkpoint import CheckpointVerifier
from gateway.audit.events import AuditEvent
from gateway.audit.log import Checkpoint, iso
from gateway.cli.base import Command, Context, Outcome, table
from gateway.errors import UsageError

EXIT_TAMPERED = 1


def _when(text: str | None) -> str | None:
    """An ISO-8601 date or date-time (naive means UTC) as the log's timestamp format."""
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"{text!r} is not an ISO-8601 date or date-time (e.g. 2026-11-22 or 2026-11-22T10:00)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _keys(ctx: Context, args: argparse.Namespace) -> list[CheckpointVerifier]:
    keys = [ctx.node.signer.verifier]
    for path in args.public_key or []:
        try:
            keys.append(CheckpointVerifier.from_pem(Path(path).read_bytes()))
        except OSError as exc:
            raise UsageError(f"{path}: {exc.strerror}") from None
    return keys


async def verify(ctx: Context, args: argparse.Namespace) -> Outcome:
    keys = _keys(ctx, args)
    outside = [cp for path in args.checkpoint or [] for cp in _kept_checkpoints(Path(path))]
    # Verify what is committed before this command's own record is appended.
    report = await averify.verify(ctx.node.audit_db, keys, outside)
    files = await _check_files(ctx, [Path(p) for p in args.archive or []], keys, report)
    files_word = "file" if report.archives == 1 else "files"
    archived = f" ({report.archived} archived in {report.archives} {files_word})" if report.archives else ""
    lines = [
        f"{report.records} records{archived}, {report.checkpoints} checkpoints ({report.checkpoints_verified} "
        f"verified{f', {report.checkpoints_archived} over archived records' if report.checkpoints_archived else ''}), "
        f"root {report.root_hash}"
    ]
    lines += [f"archive {name}: intact" for name in files]
    lines += [f"TAMPERED: {f.message}" for f in report.findings]
    lines.append("audit log intact" if report.ok else f"{len(report.findings)} problem(s) found")
    return Outcome(
        report.as_dict() | {"archive_files": files},
        "\n".join(lines),
        audit={"ok": report.ok, "records": report.records, "findings": len(report.findings), "files": len(files)},
        exit_code=0 if report.ok else EXIT_TAMPERED,
    )


async def _check_files(
    ctx: Context, paths: list[Path], keys: list[CheckpointVerifier], report: averify.Report
) -> list[str]:
    """Verify archive files and bind each to the archive the database records for it: its findings go
    into `report`; returns the names of the files that are intact."""
    rows = {row.first_seq: row for row in await aarchive.archives(ctx.node.audit_db)}
    by_id = {k.key_id: k for k in keys}
    intact = []
    for path in paths:
        try:
            got = aarchive.read_file(path, by_id)
        except aarchive.ArchiveError as exc:
            report.findings.append(averify.Finding("archive", str(exc)))
            continue
        row = rows.get(got.archive.first_seq)
        if row is None or row.last_seq != got.archive.last_seq:
            report.findings.append(
                averify.Finding(
                    "archive",
                    f"{path.name}: records {got.archive.first_seq} to {got.archive.last_seq}, which no archive of "
                    "this log holds",
                )
            )
        elif (row.sha256, row.root_hash, row.signature) != (got.sha256, got.archive.root_hash, got.archive.signature):
            report.findings.append(
                averify.Finding("archive", f"{path.name} is not the file archived as {row.file} (SHA-256 differs)")
            )
        else:
            intact.append(path.name)
    return intact


async def archive(ctx: Context, args: argparse.Namespace) -> Outcome:
    out = Path(args.out)
    if not out.is_dir():
        raise UsageError(f"{out}: not a directory")
    keep = ctx.cfg.audit.keep_online
    cutoff = iso(datetime.now(UTC) - ctx.cfg.audit.keep_online_delta)
    before = _when(args.before) or cutoff
    if before > cutoff:
        raise UsageError(
            f"records younger than [audit] keep_online ({keep}) stay online: --before must be {cutoff[:10]} or earlier"
        )
    if args.max_records < 1:
        raise UsageError(f"--max-records must be at least 1, not {args.max_records}")
    report = await averify.verify(ctx.node.audit_db, _keys(ctx, args))
    if not report.ok:
        lines = [f"TAMPERED: {f.message}" for f in report.findings]
        lines.append("the audit log does not verify: nothing archived (mssgw audit verify says more)")
        return Outcome(
            {"archived": False, "findings": [f.as_dict() for f in report.findings]},
            "\n".join(lines),
            audit={"reason": "audit log does not verify", "findings": len(report.findings)},
            exit_code=EXIT_TAMPERED,
        )
    try:
        done = await aarchive.archive(
            ctx.node.audit_db, ctx.node.signer, ctx.cfg.node.name, before, out, max_records=args.max_records
        )
    except aarchive.ArchiveError as exc:
        raise UsageError(str(exc)) from None
    if done.archive is None:
        text = f"nothing to archive before {before[:19]}Z ({report.archived} records archived already)"
        return Outcome({"archived": False, "before": before}, text, audit={"records": 0})
    made = done.archive
    facts = made.as_dict() | {"records": done.records, "path": str(done.path), "reused": done.reused}
    more = " (the file an interrupted run had written, checked)" if done.reused else ""
    return Outcome(
        facts | {"archived": True, "before": before},
        f"archived records {made.first_seq} to {made.last_seq} ({done.records} records, the last of "
        f"{made.last_ts[:19]}Z) to {done.path}{more}\nSHA-256 {made.sha256}; the database holds them no more",
        audit={k: facts[k] for k in ("first_seq", "last_seq", "records", "file", "sha256", "reused")},
    )


def _kept_checkpoints(path: Path) -> list[Checkpoint]:
    """The checkpoints in a file kept off the node: the output of `mssgw audit checkpoint --json`, or JSON
    lines such as the operational log, whose other lines are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        whole = json.loads(text)
        items = whole if isinstance(whole, list) else [whole]
    except ValueError:
        items = []
        for line in text.splitlines():
            try:
                items.append(json.loads(line))
            except ValueError:
                continue
    found = []
    for item in items:
        if not isinstance(item, dict) or "signature" not in item or "tree_size" not in item:
            continue  # another line of the operational log
        try:
            found.append(Checkpoint.from_dict(item))
        except ValueError as exc:
            raise UsageError(f"{path}: {exc}") from None
    if not found:
        raise UsageError(f"{path}: no checkpoint in it (a signed checkpoint line or `mssgw audit checkpoint --json`)")
    return found


async def export(ctx: Context, args: argparse.Namespace) -> Outcome:
    rows = await averify.query(ctx.node.audit_db, since=_when(args.since), until=_when(args.until))
    return Outcome(rows, _render(rows), audit={"results": len(rows)})


async def search(ctx: Context, args: argparse.Namespace) -> Outcome:
    if not (args.principal or args.event):
        raise UsageError("give --principal and/or --event")
    if args.limit < 1:  # 0 would read as "no limit" below
        raise UsageError(f"--limit must be at least 1, not {args.limit}")
    rows = await averify.query(ctx.node.audit_db, principal=args.principal, action=args.event, limit=args.limit)
    return Outcome(rows, _render(rows), audit={"results": len(rows)})


def _render(rows: list[dict[str, object]]) -> str:
    flat = [
        {
            "seq": r["seq"],
            "ts": r["ts"],
            "action": r["action"],
            "author": r["author"],
            "principal": r["principal"] or "",
            "result": (r["response"] or {}).get("result", "") if isinstance(r["response"], dict) else "",
        }
        for r in rows
    ]
    return table(flat, ["seq", "ts", "action", "author", "principal", "result"])


async def checkpoint(ctx: Context, args: argparse.Namespace) -> Outcome:
    cp = await ctx.node.audit.checkpoint(force=True)
    assert cp is not None
    return Outcome(
        cp.as_dict(),
        f"checkpoint #{cp.id}: tree size {cp.tree_size}, root {cp.root_hash.hex()}",
        audit=cp.as_dict(),
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    grp = sub.add_parser("audit", help="the audit log").add_subparsers(required=True, metavar="ACTION")
    p = grp.add_parser("verify", parents=[common], help="check every record against the signed checkpoints")
    p.add_argument("--public-key", action="append", help="another trusted checkpoint public key (PEM); repeatable")
    p.add_argument(
        "--checkpoint",
        action="append",
        help="a file of checkpoints kept off the node (the operational log, or audit checkpoint --json); repeatable",
    )
    p.add_argument(
        "--archive", action="append", help="an archive file (mssgw audit archive) to verify as well; repeatable"
    )
    p.set_defaults(_command=Command(AuditEvent.AUDIT_VERIFIED, verify))
    p = grp.add_parser("export", parents=[common], help="records in a time range")
    p.add_argument("--since", help="ISO-8601 date or date-time, inclusive (UTC unless an offset is given)")
    p.add_argument("--until", help="ISO-8601 date or date-time, exclusive")
    p.set_defaults(_command=Command(AuditEvent.AUDIT_EXPORTED, export))
    p = grp.add_parser("search", parents=[common], help="records by principal and/or event")
    p.add_argument("--principal", help="principal or author")
    p.add_argument("--event", help="event name, or a prefix ending in '.' (e.g. admin.mailbox.)")
    p.add_argument("--limit", type=int, default=1000)
    p.set_defaults(_command=Command(AuditEvent.AUDIT_SEARCHED, search))
    p = grp.add_parser("checkpoint", parents=[common], help="sign a checkpoint now")
    p.set_defaults(_command=Command(AuditEvent.AUDIT_CHECKPOINT_WRITTEN, checkpoint))
    p = grp.add_parser("archive", parents=[common], help="move records older than [audit] keep_online to a signed file")
    p.add_argument("--out", required=True, help="directory the archive file is written to")
    p.add_argument(
        "--before", help="ISO-8601 date or date-time: archive records older than this (default: keep_online ago)"
    )
    p.add_argument(
        "--max-records",
        type=int,
        default=aarchive.MAX_RECORDS,
        help=f"records one run archives at most (default {aarchive.MAX_RECORDS:,}; run again for more)",
    )
    p.add_argument("--public-key", action="append", help="another trusted checkpoint public key (PEM); repeatable")
    p.set_defaults(_command=Command(AuditEvent.AUDIT_ARCHIVED, archive))
