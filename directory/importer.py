"""Import of the national extraction into the directory: idempotent, reporting, never aborting on data.

Implementation notes
- Upsert by address. A row identical to what the last import stored (same digest) costs no write; a
  row whose position moved only updates its position. Re-importing the same file writes nothing but
  the rows of duplicated addresses (the first copy differs from the stored, later one).
- Every refused row is counted and reported with its line number and reason; the first
  `MAX_DETAILS` of each kind of finding are listed in full, the counts are always exact.
- A duplicate address (the national file has some) is reported with both line numbers; the later row
  is the one kept, as an upsert would.
- A professional or structure described differently by two rows is reported (the later row's
  description is kept): export can only give back one description per person and per structure.
- `--prune` deletes national mailboxes absent from the file; local mailboxes are never pruned.
- Memory: one entry per address and per professional (an 8-byte digest and a line number packed in one
  int), so the 536,000-row national file stays well under 500 MB.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from directory import national
from directory.national import Rejection
from gateway.store.directory import Batch, DirectoryRepository
from gateway.store.models import utcnow

MAX_DETAILS = 1000
BATCH_ROWS = 20_000


@dataclass
class ImportSummary:
    file: str
    read: int = 0
    imported: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    duplicates: int = 0
    conflicts: int = 0
    pruned: int = 0
    seconds: float = 0.0
    rejections: list[dict[str, Any]] = field(default_factory=list)
    duplicate_addresses: list[dict[str, Any]] = field(default_factory=list)
    conflicting: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.read / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rows_per_second"] = round(self.rows_per_second)
        d["seconds"] = round(self.seconds, 3)
        return d


def _packed(text: str, line: int) -> int:
    digest = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
    return (digest << 32) | line


class _Described:
    """Remembers how each professional/structure was first described, to report contradictions."""

    def __init__(self, what: str, summary: ImportSummary) -> None:
        self.what = what
        self.first: dict[str, int] = {}
        self.summary = summary

    def check(self, key: str | None, fields: dict[str, str], line: int) -> None:
        if key is None or key.startswith(("bal:", "anon:")):
            return  # described by one row only, by construction
        packed = _packed("|".join(fields.values()), line)
        prev = self.first.setdefault(key, packed)
        if prev >> 32 != packed >> 32:
            s = self.summary
            s.conflicts += 1
            if len(s.conflicting) < MAX_DETAILS:
                s.conflicting.append(
                    {
                        "line": line,
                        "key": key,
                        "reason": f"{self.what} {key} is described differently on line {prev & 0xFFFFFFFF}; "
                        f"line {line}'s description is kept",
                    }
                )


async def import_extraction(
    repo: DirectoryRepository,
    path: Path,
    *,
    prune: bool = False,
    progress: Callable[[int], None] | None = None,
    batch_rows: int = BATCH_ROWS,
) -> ImportSummary:
    """Import `path` (.txt or .zip); raises national.HeaderError if it is not an extraction at all."""
    started = time.perf_counter()
    summary = ImportSummary(file=str(path))
    stream, _size = national.open_extraction(path)
    import_id = uuid.uuid4().hex
    known = await repo.known()
    seen: dict[str, int] = {}
    pros = _Described("professional", summary)
    structs = _Described("structure", summary)
    unchanged_in_place: list[str] = []

    def new_batch() -> Batch:
        return Batch(import_id, utcnow())

    def reject(r: Rejection) -> None:
        summary.rejected += 1
        if len(summary.rejections) < MAX_DETAILS:
            summary.rejections.append({"line": r.line, "address": r.address, "reason": r.reason})

    batch = new_batch()
    with stream:
        for line_no, raw in national.iter_lines(stream):
            summary.read += 1
            if progress is not None:
                progress(len(raw))
            row = national.parse_row(line_no, raw)
            if isinstance(row, Rejection):
                reject(row)
                continue
            addr = row.address
            old = known.get(addr)
            if old is not None and old.kind != row.kind:
                reject(
                    Rejection(
                        line_no,
                        f"Type de BAL {row.kind} differs from the existing mailbox's type {old.kind}; "
                        "a mailbox's type cannot change",
                        addr,
                    )
                )
                continue
            first_line = seen.setdefault(addr, line_no)
            if first_line != line_no:
                summary.duplicates += 1
                if len(summary.duplicate_addresses) < MAX_DETAILS:
                    summary.duplicate_addresses.append(
                        {"address": addr, "lines": [first_line, line_no], "kept": line_no}
                    )
            elif old is not None and old.digest == row.digest:
                summary.unchanged += 1
                if old.ordinal != line_no:
                    batch.move(addr, line_no)
                elif prune:
                    unchanged_in_place.append(addr)
                continue
            elif old is not None:
                summary.updated += 1
            else:
                summary.imported += 1
            pros.check(row.professional_key, row.part("professional"), line_no)
            structs.check(row.structure_key, row.part("structure"), line_no)
            batch.add(row, line_no)
            if len(batch) >= batch_rows:
                await repo.write(batch)
                batch = new_batch()
    if len(batch):
        await repo.write(batch)
    if prune:
        await repo.mark_seen(unchanged_in_place, import_id)
        summary.pruned = await repo.prune(import_id)
    summary.seconds = time.perf_counter() - started
    return summary
