"""`mssgw directory import|export|search|show`: the professional directory."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from directory import national
from directory.importer import import_extraction
from gateway.audit.events import AuditEvent
from gateway.cli.base import Command, Context, Outcome, table
from gateway.errors import NotFound, UsageError


def _percent(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text} is not a percentage between 0 and 100")
    return value


def _progress(total: int) -> Any:
    """A progress bar on a terminal (standard error), nothing otherwise."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc="import", file=sys.stderr, leave=False)


async def import_(ctx: Context, args: argparse.Namespace) -> Outcome:
    path: Path = args.file
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        _stream, size = national.open_extraction(path)
        _stream.close()
        bar = _progress(size)
        try:
            summary = await import_extraction(
                ctx.node.directory,
                path,
                prune=args.prune,
                prune_limit=args.prune_limit / 100,
                progress=bar.update if bar else None,
            )
        finally:
            if bar is not None:
                bar.close()
    except national.HeaderError as exc:
        raise UsageError(f"{path}: {exc}") from None
    d = summary.as_dict()
    counts = {
        k: d[k]
        for k in (
            "read",
            "imported",
            "updated",
            "unchanged",
            "rejected",
            "duplicates",
            "conflicts",
            "pruned",
            "prune_refused",
        )
    }
    lines = [
        f"{path}: {summary.read} rows read in {summary.seconds:.1f} s ({d['rows_per_second']} rows/s)",
        f"  imported {summary.imported}, updated {summary.updated}, unchanged {summary.unchanged}, "
        f"rejected {summary.rejected}, duplicate addresses {summary.duplicates}, conflicts {summary.conflicts}"
        + (f", pruned {summary.pruned}" if args.prune else ""),
    ]
    if summary.prune_refused:
        lines.append(
            f"  nothing pruned: {summary.prune_refused} national mailboxes are absent from the file, more than"
            f" --prune-limit {args.prune_limit:g} % of them (a cut download?); check the file, or raise the limit"
        )
    lines += [f"  line {r['line']}: {r['reason']}" for r in summary.rejections[:20]]
    if summary.rejected > 20:
        lines.append(f"  ... {summary.rejected - 20} more rejected rows (see --json)")
    lines += [
        f"  duplicate {r['address']}: lines {r['lines'][0]} and {r['lines'][1]}"
        for r in summary.duplicate_addresses[:10]
    ]
    return Outcome(
        d, "\n".join(lines), audit={"file": str(path), **counts}, exit_code=1 if summary.prune_refused else 0
    )


async def export(ctx: Context, args: argparse.Namespace) -> Outcome:
    path: Path = args.file
    if path.is_dir():
        raise UsageError(f"{path} is a directory: give the export file's name")
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    not_written: list[dict[str, str]] = []
    try:
        with tmp.open("w", encoding="utf-8", newline="") as fh:
            fh.write(national.HEADER + "\n")
            async for fields in ctx.node.directory.export_rows(origin=args.origin, include_hidden=args.include_hidden):
                # A value with '|' or a line break (local fields written before they were checked) would split
                # the row, or add one: such a row is named, not written.
                reason = national.unwritable(fields)
                if reason is not None:
                    not_written.append({"address": fields[1], "reason": reason})
                    continue
                fh.write(national.format_row(fields))
                n += 1
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except OSError as exc:  # no such directory, no space: said, and no partial copy of the directory left
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    data: dict[str, Any] = {"file": str(path), "rows": n}
    text = f"{path}: {n} rows written"
    if not_written:
        data["not_written"] = not_written
        text += "".join(f"\n  not written: {r['address']}: {r['reason']}" for r in not_written)
    return Outcome(data, text, audit={"file": str(path), "rows": n, "not_written": len(not_written)})


async def search(ctx: Context, args: argparse.Namespace) -> Outcome:
    if not args.text.strip():
        raise UsageError("search text is empty")
    rows = await ctx.node.directory.search(args.text, limit=args.limit)
    text = table(rows, ["address", "type", "name", "profession", "structure", "city"])
    return Outcome(rows, text, audit={"results": len(rows)})


async def show(ctx: Context, args: argparse.Namespace) -> Outcome:
    entry = await ctx.node.directory.show(args.address)
    if entry is None:
        raise NotFound(f"{args.address.lower()} is not in the directory")
    lines = [f"{k}: {v}" for k, v in entry.items() if not isinstance(v, dict | list)]
    for part in ("professional", "structure"):
        if entry.get(part):
            lines.append(f"{part}:")
            lines += [f"  {k}: {v}" for k, v in entry[part].items() if v not in ("", None)]
    for part in ("delegates", "delegated_to_act_for", "certificates"):
        if entry.get(part):
            lines.append(f"{part}: {entry[part]}")
    return Outcome(entry, "\n".join(lines), audit={"address": entry["address"]})


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    grp = sub.add_parser("directory", help="the professional directory").add_subparsers(required=True, metavar="ACTION")
    p = grp.add_parser("import", parents=[common], help="import the national extraction (.txt or .zip)")
    p.add_argument("file", type=Path)
    p.add_argument("--prune", action="store_true", help="delete national entries absent from the file")
    p.add_argument(
        "--prune-limit",
        type=_percent,
        default=10.0,
        metavar="PERCENT",
        help="prune nothing when more than this share of the national mailboxes would go (default 10)",
    )
    p.set_defaults(_command=Command(AuditEvent.DIRECTORY_IMPORTED, import_))
    p = grp.add_parser("export", parents=[common], help="write the directory in the national format")
    p.add_argument("file", type=Path)
    p.add_argument("--origin", choices=["national", "local"], help="only national or only local mailboxes")
    p.add_argument("--include-hidden", action="store_true", help="include listeRouge mailboxes")
    p.set_defaults(_command=Command(AuditEvent.DIRECTORY_EXPORTED, export))
    p = grp.add_parser("search", parents=[common], help="search by name, address, RPPS/IdNatPS, profession, city")
    p.add_argument("text")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(_command=Command(AuditEvent.DIRECTORY_SEARCHED, search))
    p = grp.add_parser("show", parents=[common], help="one directory entry")
    p.add_argument("address")
    p.set_defaults(_command=Command(AuditEvent.DIRECTORY_SHOWN, show))
