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
- `--prune` deletes national mailboxes absent from the file; local mailboxes are never pruned. Past
  `prune_limit` (a fraction of the stored national mailboxes) it deletes none: a truncated plain-text
  download (nothing tells it from a shorter file) would otherwise delete every row after the cut. A
  refused row still says that its mailbox exists: the stored mailbox it names (by its address field,
  even when the row is too damaged to read otherwise) is kept as the last valid row described it.
- A duplicate whose type differs from its first row's is refused like a type change (the stored
  mailbox would otherwise keep the first type with the later row's description).
- Each professional and structure is written once per import (with its first description, or again
  when a later row describes it differently): a structure has many mailboxes. Unchanged rows take part
  too: their descriptions are the stored ones, not written again, but a changed row that contradicts
  them is reported, and the later row's description is the one kept, as in an empty directory.
- Speed (the national file in about 20 s on 2 cores): parsing runs in a worker thread, batch after
  batch, while the event loop writes the previous batch; the repository hands SQLite a whole batch
  in a few statements that run without the GIL. The file is read in 1 MiB blocks: every read
  releases the GIL, and frequent releases would starve the event loop's thread.
- Memory: one entry per address and per professional (an 8-byte digest and a line number packed in one
  int; the stored mailboxes' state likewise, dropped as their rows are met), so the 536,000-row
  national file stays well under 500 MB.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from directory import national
from directory.national import Rejection
from gateway.store.directory import Batch, DirectoryRepository
from gateway.store.models import utcnow

MAX_DETAILS = 1000
BATCH_ROWS = 20_000
_KIND_INDEX = {k: i for i, k in enumerate(national.MAILBOX_KINDS)}


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
    prune_refused: int = 0  # national mailboxes --prune would have deleted, past its limit: none was
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


def _packed(values: tuple[str, ...], line: int) -> int:
    """A 64-bit digest of a description and a line number in one int (within one import: hash() is salted)."""
    return ((hash(values) & 0xFFFF_FFFF_FFFF_FFFF) << 32) | line


def _named_address(raw: bytes) -> str:
    """The address field of a line too damaged to parse (wrong field count, not UTF-8), lower-cased; or ""."""
    fields = raw.split(b"|", 2)
    return fields[1].decode("utf-8", "replace").strip().lower() if len(fields) > 1 else ""


class _Described:
    """Remembers how each professional/structure was first described, to report contradictions.

    Also says whether a row's description must be written: not when this import already wrote the
    same description (a structure has many mailboxes), so each is written once unless it changes.
    """

    def __init__(self, what: str, summary: ImportSummary) -> None:
        self.what = what
        self.first: dict[str, int] = {}
        self.rewritten: dict[str, int] = {}  # digest of the last description written, if not the first
        self.summary = summary

    def check(self, key: str | None, values: tuple[str, ...] | None, line: int, *, stored: bool = False) -> bool:
        """Report a contradiction; True if the description must be written. `stored`: the row is unchanged
        since the last import, its description is the stored one."""
        if key is None or values is None:
            return False
        if key.startswith("bal:"):
            return not stored  # described by one row only, by construction (a later duplicate row wins)
        if key.startswith("anon:"):
            return self.first.setdefault(key, line) == line and not stored  # the key digests the description
        packed = _packed(values, line)
        prev = self.first.setdefault(key, packed)
        if prev == packed:
            return not stored  # first seen
        digest = packed >> 32
        if prev >> 32 == digest:
            if self.rewritten.get(key, digest) == digest:
                return False  # written already
            del self.rewritten[key]  # back to the first description: the later row wins
            return True
        self.rewritten[key] = digest
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
        return True


async def import_extraction(
    repo: DirectoryRepository,
    path: Path,
    *,
    prune: bool = False,
    prune_limit: float | None = None,
    progress: Callable[[int], None] | None = None,
    batch_rows: int = BATCH_ROWS,
) -> ImportSummary:
    """Import `path` (.txt or .zip); raises national.HeaderError if it is not an extraction at all.

    `prune_limit`: the fraction of the stored national mailboxes `prune` may delete; past it, it deletes
    none (`summary.prune_refused` says how many it would have): a cut download must not empty the directory.

    `progress`, if given, is called with each line's size in bytes, from a worker thread.
    """
    started = time.perf_counter()
    summary = ImportSummary(file=str(path))
    stream, _size = national.open_extraction(path)
    import_id = uuid.uuid4().hex
    try:
        known = await repo.known()
    except BaseException:
        stream.close()
        raise
    seen: dict[str, int] = {}  # address -> first line << 2 | index of its type
    pros = _Described("professional", summary)
    structs = _Described("structure", summary)
    unchanged_in_place: list[str] = []  # and stored mailboxes named by refused rows: present, kept by --prune
    writing: asyncio.Future[None] | None = None
    stop = threading.Event()

    def reject(r: Rejection, raw: bytes) -> None:
        summary.rejected += 1
        if len(summary.rejections) < MAX_DETAILS:
            summary.rejections.append({"line": r.line, "address": r.address, "reason": r.reason})
        if prune:
            named = r.address or _named_address(raw)
            if named in known:
                unchanged_in_place.append(named)

    def fill(lines: Iterator[tuple[int, bytes]], batch: Batch) -> bool:
        """Parse rows into `batch` until it is full (True) or the file ends (False)."""
        for line_no, raw in lines:
            if stop.is_set():
                return False
            summary.read += 1
            if progress is not None:
                progress(len(raw))
            row = national.parse_row(line_no, raw)
            if isinstance(row, Rejection):
                reject(row, raw)
                continue
            addr, kind = row.address, row.kind
            unchanged = False
            kind_index = _KIND_INDEX[kind]
            first = seen.get(addr)
            if first is not None:  # a duplicate: its first row passed the checks against the stored mailbox
                first_line, first_kind = first >> 2, national.MAILBOX_KINDS[first & 3]
                if first_kind != kind:
                    reject(
                        Rejection(
                            line_no,
                            f"Type de BAL {kind} differs from line {first_line}'s type {first_kind}; "
                            "a mailbox's type cannot change",
                            addr,
                        ),
                        raw,
                    )
                    continue
                summary.duplicates += 1
                if len(summary.duplicate_addresses) < MAX_DETAILS:
                    summary.duplicate_addresses.append(
                        {"address": addr, "lines": [first_line, line_no], "kept": line_no}
                    )
            else:
                old = known.get(addr)
                if old is not None and old.kind != kind:
                    reject(
                        Rejection(
                            line_no,
                            f"Type de BAL {kind} differs from the existing mailbox's type {old.kind}; "
                            "a mailbox's type cannot change",
                            addr,
                        ),
                        raw,
                    )
                    continue
                seen[addr] = line_no << 2 | kind_index
                if old is not None:
                    known.pop(addr)  # no longer needed: later rows of this address are duplicates
                    if old.digest == row.digest:
                        summary.unchanged += 1
                        unchanged = True
                        if old.ordinal != line_no:
                            batch.move(addr, line_no)
                        elif prune:
                            unchanged_in_place.append(addr)
                    else:
                        summary.updated += 1
                else:
                    summary.imported += 1
            pkey, skey = row.professional_key, row.structure_key
            pro = row.values("professional") if pkey is not None else None
            st = row.values("structure") if skey is not None else None
            pro_written = pro if pros.check(pkey, pro, line_no, stored=unchanged) else None
            st_written = st if structs.check(skey, st, line_no, stored=unchanged) else None
            if unchanged:  # the mailbox needs no write; a description an earlier row changed goes back
                batch.describe(pkey, pro_written, skey, st_written)
                continue
            batch.add(row, line_no, pkey, pro_written, skey, st_written)
            if len(batch) >= batch_rows:
                return True
        return False

    try:
        with stream:
            lines = national.iter_lines(stream)
            more = True
            while more:
                batch = Batch(import_id, utcnow())
                filling = asyncio.ensure_future(asyncio.to_thread(fill, lines, batch))
                try:
                    more = await asyncio.shield(filling)
                except BaseException:
                    stop.set()  # the worker stops at the next row; only then may the stream close
                    await asyncio.gather(filling, return_exceptions=True)
                    raise
                if writing is not None:
                    await writing  # one batch written at a time, in file order
                    writing = None
                if len(batch) or batch.professionals or batch.structures:
                    writing = asyncio.ensure_future(repo.write(batch))
            if writing is not None:
                await writing
    finally:
        if writing is not None and not writing.done():
            writing.cancel()  # the import failed: do not leave a write running
            await asyncio.gather(writing, return_exceptions=True)
    if prune:
        await repo.mark_seen(unchanged_in_place, import_id)
        pruned = await repo.prune(import_id, limit=prune_limit)
        if pruned < 0:
            summary.prune_refused = -pruned
        else:
            summary.pruned = pruned
    summary.seconds = time.perf_counter() - started
    return summary
