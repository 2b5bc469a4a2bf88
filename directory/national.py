"""The national directory extraction "Extraction correspondance MSSanté", read and written exactly.

Implementation notes
- Format: UTF-8 (a BOM is tolerated on input, never written), fields separated by `|` with no quoting,
  one header line of exactly the 31 column names below, then one mailbox (BAL) a row. Lines end in LF
  (CRLF accepted on input). The file may come inside a ZIP; the member is the one `.txt` file.
- `COLUMNS` is the single description of the format: header text, the attribute each column fills,
  the model it belongs to (mailbox, professional, structure) and its maximum length. Parsing, database
  mapping and export are all driven by it, so a row read and written back is the same row.
- A row is refused (with its line number and a precise reason) when its line is longer than `MAX_LINE`
  bytes (never read whole: a ZIP of 1 MB can inflate to one line of 1 GB), does not have 31 fields, holds
  a control character or bytes that are not UTF-8, exceeds a column's length, has an unknown mailbox
  type, an invalid address, or identifiers that fail their check digits or disagree with each other.
  A refused row never stops the import.
- Interpretations where the published description is silent: "Type Identifiant PP" is the IdNatPS
  prefix (8 RPPS, 0 ADELI) and "Identification nationale PP" is that prefix + "Identifiant PP";
  "Identification Structure" is the structure's national identification, i.e. its type code
  (1 cabinet ADELI, 3 FINESS, 4 SIREN, 5 SIRET, 6 cabinet RPPS) followed by the identifier.
- Addresses are lower-cased (the trust space compares them case-insensitively).
- Writing: with no quoting, a value holding `|` or a line break would split its row or add one. Rows
  read by the import cannot hold them; local mailboxes' values are checked by `field_problem` when made
  (`mssgw mailbox add`), and `unwritable` keeps any other such row out of an export.
- `parse_row` is the import's hot path (536,000 rows): the usual valid row takes fast checks (control
  bytes found with `bytes.translate`, lengths compared in C, RPPS/ADELI Luhn digits summed over bytes,
  each structure's identifier checked once); anything unusual goes through the reference checks, which
  give the reasons. `search_text` folds field by field, caching repeated values (names, cities).
"""

from __future__ import annotations

import functools
import hashlib
import io
import operator
import re
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, Literal

from directory.addresses import check_address
from directory.identifiers import PP_ID_TYPES, STRUCTURE_ID_TYPES, check_adeli, check_rpps, check_structure_id

Part = Literal["mailbox", "professional", "structure"]
MAILBOX_KINDS: Final = ("PER", "ORG", "APP", "CAB")


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    attr: str
    part: Part
    max_len: int


COLUMNS: Final[tuple[Column, ...]] = (
    Column("Type de BAL", "kind", "mailbox", 3),
    Column("Adresse BAL", "address", "mailbox", 254),
    Column("Type Identifiant PP", "id_type", "professional", 2),
    Column("Identifiant PP", "id_pp", "professional", 32),
    Column("Identification nationale PP", "id_nat_ps", "professional", 32),
    Column("Type identifiant structure", "id_type", "structure", 2),
    Column("Identification Structure", "identification", "structure", 64),
    Column("Service de rattachement", "service", "mailbox", 300),
    Column("Civilité d'exercice", "civility", "professional", 32),
    Column("Nom d'exercice", "last_name", "professional", 200),
    Column("Prénom d'exercice", "first_name", "professional", 200),
    Column("Catégorie profession", "category_code", "professional", 16),
    Column("Libellé de catégorie profession", "category_label", "professional", 200),
    Column("Code Profession", "profession_code", "professional", 16),
    Column("Libellé Profession", "profession_label", "professional", 200),
    Column("Code savoir-faire", "skill_code", "professional", 16),
    Column("Libellé savoir-faire", "skill_label", "professional", 200),
    Column("Dématérialisation", "dematerialisation", "mailbox", 16),
    Column("Raison Sociale structure BAL", "name", "structure", 300),
    Column("Enseigne commerciale structure BAL", "trade_name", "structure", 300),
    Column("Complément localisation structure BAL", "location_complement", "structure", 300),
    Column("Complément distribution structure BAL", "distribution_complement", "structure", 300),
    Column("Numéro Voie structure BAL", "street_number", "structure", 32),
    Column("Complément Numéro Voie structure BAL", "street_number_complement", "structure", 32),
    Column("Type Voie structure BAL", "street_type", "structure", 64),
    Column("Libellé Voie structure BAL", "street_name", "structure", 300),
    Column("Lieu-dit structure BAL", "locality", "structure", 300),
    Column("Ligne Acheminement structure BAL", "routing_line", "structure", 300),
    Column("Code postal structure BAL", "postal_code", "structure", 16),
    Column("Département structure BAL", "department", "structure", 64),
    Column("Pays structure BAL", "country", "structure", 64),
)
HEADER: Final = "|".join(c.header for c in COLUMNS)
N_COLUMNS: Final = len(COLUMNS)

_IDX = {(c.part, c.attr): i for i, c in enumerate(COLUMNS)}
PROFESSIONAL_IDX: Final = tuple(i for i, c in enumerate(COLUMNS) if c.part == "professional")
STRUCTURE_IDX: Final = tuple(i for i, c in enumerate(COLUMNS) if c.part == "structure")
_KIND, _ADDRESS = _IDX["mailbox", "kind"], _IDX["mailbox", "address"]
_PP_TYPE, _PP_ID, _PP_NAT = (_IDX["professional", a] for a in ("id_type", "id_pp", "id_nat_ps"))
_ST_TYPE, _ST_ID = _IDX["structure", "id_type"], _IDX["structure", "identification"]
_LIMITS = tuple((i, c.max_len, c.header) for i, c in enumerate(COLUMNS))
_MAX_LENS = tuple(c.max_len for c in COLUMNS)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BYTES = bytes(range(0x20)) + b"\x7f"  # UTF-8 never uses these bytes inside a multi-byte character
PART_ATTRS: Final[dict[Part, tuple[str, ...]]] = {
    p: tuple(c.attr for c in COLUMNS if c.part == p) for p in ("mailbox", "professional", "structure")
}
_PART_VALUES = {p: operator.itemgetter(*(i for i, c in enumerate(COLUMNS) if c.part == p)) for p in PART_ATTRS}
_PRO_VALUES, _STRUCT_VALUES = _PART_VALUES["professional"], _PART_VALUES["structure"]


class HeaderError(ValueError):
    """The file is not an extraction of the expected format (its header line differs)."""


@dataclass(frozen=True, slots=True)
class Row:
    """One valid row: its 31 fields (address lower-cased) and where it came from."""

    line: int
    fields: tuple[str, ...]
    digest: bytes  # of the fields as stored: a changed row has a different digest

    @property
    def address(self) -> str:
        return self.fields[_ADDRESS]

    @property
    def kind(self) -> str:
        return self.fields[_KIND]

    def part(self, part: Part) -> dict[str, str]:
        return dict(zip(PART_ATTRS[part], self.values(part), strict=True))

    def values(self, part: Part) -> tuple[str, ...]:
        """The fields of one part, in the order of `PART_ATTRS[part]`."""
        values: tuple[str, ...] = _PART_VALUES[part](self.fields)
        return values

    @property
    def professional_key(self) -> str | None:
        """IdNatPS, or "bal:<address>" for a person without a national identifier; None if no person."""
        if self.fields[_PP_NAT]:
            return self.fields[_PP_NAT]
        if any(_PRO_VALUES(self.fields)):
            return "bal:" + self.address
        return None

    @property
    def structure_key(self) -> str | None:
        if self.fields[_ST_ID]:
            return f"{self.fields[_ST_TYPE]}:{self.fields[_ST_ID]}"
        values = _STRUCT_VALUES(self.fields)
        if any(values):
            return "anon:" + hashlib.blake2b("|".join(values).encode(), digest_size=12).hexdigest()
        return None


@dataclass(frozen=True, slots=True)
class Rejection:
    line: int
    reason: str
    address: str = ""


def row_digest(fields: tuple[str, ...]) -> bytes:
    return hashlib.blake2b("|".join(fields).encode(), digest_size=16).digest()


def check_header(line: str) -> None:
    got = line.lstrip("\ufeff").rstrip("\r\n").split("|")
    if len(got) != N_COLUMNS:
        raise HeaderError(
            f"the header line has {len(got)} columns, expected {N_COLUMNS} "
            f"(is this an 'Extraction correspondance MSSanté' file?)"
        )
    for i, (g, c) in enumerate(zip(got, COLUMNS, strict=True), 1):
        if g != c.header:
            raise HeaderError(f"header column {i} is {g!r}, expected {c.header!r}")


MAX_LINE: Final = 1 << 16
"""Bytes of a line, its ending included: a row holds at most 4,157 characters (4 bytes at most each in UTF-8)."""

_LUHN_DOUBLED = bytes.maketrans(b"0123456789", b"0246813579")  # a digit doubled, its two digits added


def _plainly_valid(ident: str, length: int) -> bool:
    """True when `ident` is `length` ASCII digits with a valid Luhn check digit: the usual case, decided
    here ~5 times faster than by the identifiers module, which is asked (and gives the reason) otherwise."""
    if len(ident) != length or not (ident.isascii() and ident.isdigit()):
        return False
    digits = ident.encode()
    total = sum(digits[-1::-2]) + sum(digits[-2::-2].translate(_LUHN_DOUBLED)) - 48 * length
    return total % 10 == 0


def _padded(header: str, value: str) -> str:
    # The identifiers module strips what it checks; the import stores values as read, so an identifier with
    # whitespace around it ("810000000009 ") would be a second professional or structure: refused.
    return f"{header} {value!r} has whitespace around it"


def _check_identifiers(f: list[str]) -> str | None:
    return _check_professional_ids(f) or _check_structure_ids(f[_ST_TYPE], f[_ST_ID])


def _check_professional_ids(f: list[str]) -> str | None:
    pp_type, pp_id, pp_nat = f[_PP_TYPE], f[_PP_ID], f[_PP_NAT]
    if pp_type or pp_id or pp_nat:
        if not (pp_type and pp_id and pp_nat):
            return "Type Identifiant PP, Identifiant PP and Identification nationale PP must be given together"
        if pp_type == "8":
            reason = None if _plainly_valid(pp_id, 11) else check_rpps(pp_id)
        elif pp_type == "0":
            reason = None if _plainly_valid(pp_id, 9) else check_adeli(pp_id)
        else:
            allowed = ", ".join(f"{k} ({v})" for k, v in PP_ID_TYPES.items())
            return f"Type Identifiant PP {pp_type!r} is not one of {allowed}"
        if reason is None and pp_id != pp_id.strip():  # plainly valid values never have whitespace
            return _padded("Identifiant PP", pp_id)
        if reason:
            return f"Identifiant PP: {reason}"
        if pp_nat != pp_type + pp_id:
            return (
                f"Identification nationale PP {pp_nat!r} is not Type Identifiant PP + Identifiant PP "
                f"({pp_type + pp_id!r})"
            )
    return None


_STRUCTURE_CHECKED: dict[tuple[str, str], str | None] = {}  # a structure has many mailboxes: check it once
_STRUCTURE_CHECKED_MAX = 1 << 17


def _check_structure_ids(st_type: str, st_id: str) -> str | None:
    if not (st_type or st_id):
        return None
    key = (st_type, st_id)
    try:
        return _STRUCTURE_CHECKED[key]
    except KeyError:
        pass
    if len(_STRUCTURE_CHECKED) >= _STRUCTURE_CHECKED_MAX:
        _STRUCTURE_CHECKED.clear()
    reason = _STRUCTURE_CHECKED[key] = _check_structure_pair(st_type, st_id)
    return reason


def _check_structure_pair(st_type: str, st_id: str) -> str | None:
    if not (st_type and st_id):
        return "Type identifiant structure and Identification Structure must be given together"
    if st_type not in STRUCTURE_ID_TYPES:
        allowed = ", ".join(f"{k} ({v})" for k, v in STRUCTURE_ID_TYPES.items())
        return f"Type identifiant structure {st_type!r} is not one of {allowed}"
    reason = check_structure_id(st_type, st_id)
    if reason is None and st_id != st_id.strip():
        return _padded("Identification Structure", st_id)
    if reason:
        return f"Identification Structure: {reason}"
    return None


def parse_row(line_no: int, raw: bytes) -> Row | Rejection:
    """Validate one data line (bytes, with or without its line ending)."""
    if len(raw) > MAX_LINE:
        return Rejection(line_no, f"the line is longer than {MAX_LINE} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(line_no, f"not valid UTF-8 (byte {exc.start + 1} of the line)")
    text = text.rstrip("\r\n")
    f = text.split("|")
    if len(f) != N_COLUMNS:
        return Rejection(line_no, f"expected {N_COLUMNS} fields separated by '|', found {len(f)}")
    address = f[_ADDRESS].lower()
    body = raw.rstrip(b"\r\n")
    if len(body.translate(None, _CONTROL_BYTES)) != len(body):  # fast pre-check of the regex below
        col = next(c.header for c, v in zip(COLUMNS, f, strict=True) if _CONTROL.search(v))
        return Rejection(line_no, f"column {col!r} holds a control character", address)
    if any(map(operator.gt, map(len, f), _MAX_LENS)):
        for i, limit, header in _LIMITS:
            if len(f[i]) > limit:
                return Rejection(
                    line_no, f"column {header!r} is {len(f[i])} characters long, more than {limit}", address
                )
    if f[_KIND] not in MAILBOX_KINDS:
        return Rejection(line_no, f"Type de BAL {f[_KIND]!r} is not one of {', '.join(MAILBOX_KINDS)}", address)
    reason = check_address(f[_ADDRESS])
    if reason:
        return Rejection(line_no, f"Adresse BAL {f[_ADDRESS]!r}: {reason}", address)
    reason = _check_identifiers(f)
    if reason:
        return Rejection(line_no, reason, address)
    if address == f[_ADDRESS]:  # the usual case: the line is the stored row, no need to join it again
        return Row(line_no, tuple(f), hashlib.blake2b(body, digest_size=16).digest())
    f[_ADDRESS] = address
    fields = tuple(f)
    return Row(line_no, fields, row_digest(fields))


def format_row(fields: tuple[str, ...] | list[str]) -> str:
    return "|".join(fields) + "\n"


def column(part: Part, attr: str) -> Column:
    return COLUMNS[_IDX[part, attr]]


def field_problem(col: Column, value: str) -> str | None:
    """Why `value` cannot be written in column `col` and read back, or None: the format has no quoting, so a
    '|' or a line break would split the row (the import refuses every control character and over-long value)."""
    if _CONTROL.search(value):
        return f"column {col.header!r} holds a control character"
    if "|" in value:
        return f"column {col.header!r} holds a '|' (the format has no quoting)"
    if len(value) > col.max_len:
        return f"column {col.header!r} is {len(value)} characters long, more than {col.max_len}"
    return None


def unwritable(fields: tuple[str, ...]) -> str | None:
    """Why a row cannot be written as one line the import would read back, or None (the usual case, cheap)."""
    line = "|".join(fields)
    if (
        line.count("|") == N_COLUMNS - 1
        and not _CONTROL.search(line)
        and all(map(operator.le, map(len, fields), _MAX_LENS))
    ):
        return None
    return next(filter(None, map(field_problem, COLUMNS, fields)), None)


def fields_from(mailbox: dict[str, str], professional: dict[str, str], structure: dict[str, str]) -> tuple[str, ...]:
    """The 31 fields of a row from its three parts (missing attributes are empty)."""
    parts = {"mailbox": mailbox, "professional": professional, "structure": structure}
    return tuple(parts[c.part].get(c.attr, "") or "" for c in COLUMNS)


class _FoldTable(dict[int, str]):
    """Code point -> its NFKD decomposition without combining marks, computed on first use."""

    def __missing__(self, code: int) -> str:
        decomposed = unicodedata.normalize("NFKD", chr(code))
        folded = self[code] = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
        return folded


_FOLD = _FoldTable()


def fold(text: str) -> str:
    """Lower-case and strip accents, for accent-insensitive search ("Hélène" finds "HELENE").

    The same as `NFKD(text)` without combining marks, lower-cased: NFKD decomposes character by
    character and its reordering only moves combining marks, which are dropped, so a per-character
    table gives the same text (tested against the direct definition).
    """
    if text.isascii():
        return text.lower()
    return text.translate(_FOLD).lower()


_SEARCH_KEYS: list[tuple[Part, str]] = [
    ("mailbox", "address"),
    ("professional", "id_nat_ps"),
    ("professional", "last_name"),
    ("professional", "first_name"),
    ("professional", "profession_label"),
    ("professional", "skill_label"),
    ("mailbox", "service"),
    ("structure", "identification"),
    ("structure", "name"),
    ("structure", "trade_name"),
    ("structure", "postal_code"),
    ("structure", "routing_line"),
]
_SEARCH_IDX = tuple(_IDX[k] for k in _SEARCH_KEYS)
_SEARCH_VALUES = operator.itemgetter(*_SEARCH_IDX)
# Folding field by field gives the same text (folding works character by character, and a space
# separates the fields); names, labels and cities repeat, so their folded forms are cached.
_fold_cached = functools.lru_cache(maxsize=1 << 16)(fold)


def search_text(fields: tuple[str, ...]) -> str:
    return " ".join([v.lower() if v.isascii() else _fold_cached(v) for v in _SEARCH_VALUES(fields) if v])


READ_BUFFER = 1 << 20


ZIP_DAMAGE = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    NotImplementedError,
    RuntimeError,
    ValueError,
    IndexError,
    OSError,  # a member's offset past the end of the file
)
"""What zipfile and zlib raise on a damaged archive (bad CRC or deflate stream, truncated member, an
unsupported method or encryption, a member without a name): found by tests/security's fuzz target."""


def _shown(name: str) -> str:
    """A member name as it may be printed on the operator's terminal (control characters escaped)."""
    return name if name.isprintable() else ascii(name)[1:-1]


class _ZipMember(io.RawIOBase):
    """A ZIP member's stream whose damage is a HeaderError naming the file, not zipfile's own errors."""

    def __init__(self, path: Path, member: IO[bytes]) -> None:
        self.path = path
        self.member = member

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            return self.member.readinto(buffer)  # type: ignore[attr-defined, no-any-return]
        except ZIP_DAMAGE as exc:
            raise HeaderError(f"{self.path}: damaged ZIP member ({type(exc).__name__}: {exc})") from None

    def close(self) -> None:
        self.member.close()
        super().close()


def open_extraction(path: Path) -> tuple[IO[bytes], int]:
    """The extraction's byte stream (from a ZIP member if needed) and its size in bytes, for progress.

    Read in `READ_BUFFER` blocks: each read (and each inflate) releases the GIL, and a thread that
    releases it every few lines starves the other threads (the importer parses in one).
    """
    if zipfile.is_zipfile(path):
        try:
            zf = zipfile.ZipFile(path)
            members = [m for m in zf.infolist() if not m.is_dir() and m.filename.lower().endswith(".txt")]
            if len(members) != 1:
                names = ", ".join(_shown(m.filename) for m in zf.infolist()) or "nothing"
                zf.close()
                raise HeaderError(f"{path} must hold exactly one .txt extraction, it holds {names}")
            member = zf.open(members[0])
        except HeaderError:
            raise
        except ZIP_DAMAGE as exc:
            raise HeaderError(f"{path}: damaged ZIP file ({type(exc).__name__}: {exc})") from None
        return io.BufferedReader(_ZipMember(path, member), READ_BUFFER), members[0].file_size
    return path.open("rb", buffering=READ_BUFFER), path.stat().st_size


def _bounded_lines(stream: IO[bytes]) -> Iterator[bytes]:
    """The stream's lines, each cut after MAX_LINE + 1 bytes (the rest of a longer line is read and dropped in
    pieces): one endless line, such as a small ZIP bomb inflates to, never sits in memory whole."""
    while raw := stream.readline(MAX_LINE + 1):
        if len(raw) > MAX_LINE:
            rest = raw
            while not rest.endswith(b"\n") and (rest := stream.readline(MAX_LINE)):
                pass
        yield raw


def iter_lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line) for every data line after a checked header line (longer lines: see parse_row)."""
    lines = _bounded_lines(stream)
    first = next(lines, b"")
    if not first:
        raise HeaderError("the file is empty: no header line")
    try:
        check_header(first.decode("utf-8"))
    except UnicodeDecodeError:
        raise HeaderError("the header line is not valid UTF-8") from None
    for n, raw in enumerate(lines, 2):
        if raw.strip(b"\r\n"):
            yield n, raw


def read_text_lines(text: str) -> Iterator[tuple[int, bytes]]:
    """Same as iter_lines for an in-memory text (tests, small files)."""
    return iter_lines(io.BytesIO(text.encode()))
