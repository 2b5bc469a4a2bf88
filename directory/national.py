"""The national directory extraction "Extraction correspondance MSSanté", read and written exactly.

Implementation notes
- Format: UTF-8 (a BOM is tolerated on input, never written), fields separated by `|` with no quoting,
  one header line of exactly the 31 column names below, then one mailbox (BAL) a row. Lines end in LF
  (CRLF accepted on input). The file may come inside a ZIP; the member is the one `.txt` file.
- `COLUMNS` is the single description of the format: header text, the attribute each column fills,
  the model it belongs to (mailbox, professional, structure) and its maximum length. Parsing, database
  mapping and export are all driven by it, so a row read and written back is the same row.
- A row is refused (with its line number and a precise reason) when it does not have 31 fields, holds
  a control character or bytes that are not UTF-8, exceeds a column's length, has an unknown mailbox
  type, an invalid address, or identifiers that fail their check digits or disagree with each other.
  A refused row never stops the import.
- Interpretations where the published description is silent: "Type Identifiant PP" is the IdNatPS
  prefix (8 RPPS, 0 ADELI) and "Identification nationale PP" is that prefix + "Identifiant PP";
  "Identification Structure" is the structure's national identification, i.e. its type code
  (1 cabinet ADELI, 3 FINESS, 4 SIREN, 5 SIRET, 6 cabinet RPPS) followed by the identifier.
- Addresses are lower-cased (the trust space compares them case-insensitively).
"""

from __future__ import annotations

import hashlib
import io
import re
import unicodedata
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, Literal

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
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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
        return {c.attr: self.fields[i] for i, c in enumerate(COLUMNS) if c.part == part}

    @property
    def professional_key(self) -> str | None:
        """IdNatPS, or "bal:<address>" for a person without a national identifier; None if no person."""
        if self.fields[_PP_NAT]:
            return self.fields[_PP_NAT]
        if any(self.fields[i] for i in PROFESSIONAL_IDX):
            return "bal:" + self.address
        return None

    @property
    def structure_key(self) -> str | None:
        if self.fields[_ST_ID]:
            return f"{self.fields[_ST_TYPE]}:{self.fields[_ST_ID]}"
        if any(self.fields[i] for i in STRUCTURE_IDX):
            return (
                "anon:"
                + hashlib.blake2b("|".join(self.fields[i] for i in STRUCTURE_IDX).encode(), digest_size=12).hexdigest()
            )
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


def _check_identifiers(f: list[str]) -> str | None:
    pp_type, pp_id, pp_nat = f[_PP_TYPE], f[_PP_ID], f[_PP_NAT]
    if pp_type or pp_id or pp_nat:
        if not (pp_type and pp_id and pp_nat):
            return "Type Identifiant PP, Identifiant PP and Identification nationale PP must be given together"
        if pp_type == "8":
            reason = check_rpps(pp_id)
        elif pp_type == "0":
            reason = check_adeli(pp_id)
        else:
            allowed = ", ".join(f"{k} ({v})" for k, v in PP_ID_TYPES.items())
            return f"Type Identifiant PP {pp_type!r} is not one of {allowed}"
        if reason:
            return f"Identifiant PP: {reason}"
        if pp_nat != pp_type + pp_id:
            return (
                f"Identification nationale PP {pp_nat!r} is not Type Identifiant PP + Identifiant PP "
                f"({pp_type + pp_id!r})"
            )
    st_type, st_id = f[_ST_TYPE], f[_ST_ID]
    if st_type or st_id:
        if not (st_type and st_id):
            return "Type identifiant structure and Identification Structure must be given together"
        if st_type not in STRUCTURE_ID_TYPES:
            allowed = ", ".join(f"{k} ({v})" for k, v in STRUCTURE_ID_TYPES.items())
            return f"Type identifiant structure {st_type!r} is not one of {allowed}"
        reason = check_structure_id(st_type, st_id)
        if reason:
            return f"Identification Structure: {reason}"
    return None


def parse_row(line_no: int, raw: bytes) -> Row | Rejection:
    """Validate one data line (bytes, with or without its line ending)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(line_no, f"not valid UTF-8 (byte {exc.start + 1} of the line)")
    text = text.rstrip("\r\n")
    f = text.split("|")
    if len(f) != N_COLUMNS:
        return Rejection(line_no, f"expected {N_COLUMNS} fields separated by '|', found {len(f)}")
    address = f[_ADDRESS].lower()
    if _CONTROL.search(text):
        col = next(c.header for c, v in zip(COLUMNS, f, strict=True) if _CONTROL.search(v))
        return Rejection(line_no, f"column {col!r} holds a control character", address)
    for i, limit, header in _LIMITS:
        if len(f[i]) > limit:
            return Rejection(line_no, f"column {header!r} is {len(f[i])} characters long, more than {limit}", address)
    if f[_KIND] not in MAILBOX_KINDS:
        return Rejection(line_no, f"Type de BAL {f[_KIND]!r} is not one of {', '.join(MAILBOX_KINDS)}", address)
    reason = check_address(f[_ADDRESS])
    if reason:
        return Rejection(line_no, f"Adresse BAL {f[_ADDRESS]!r}: {reason}", address)
    reason = _check_identifiers(f)
    if reason:
        return Rejection(line_no, reason, address)
    f[_ADDRESS] = address
    fields = tuple(f)
    return Row(line_no, fields, row_digest(fields))


def format_row(fields: tuple[str, ...] | list[str]) -> str:
    return "|".join(fields) + "\n"


def fields_from(mailbox: dict[str, str], professional: dict[str, str], structure: dict[str, str]) -> tuple[str, ...]:
    """The 31 fields of a row from its three parts (missing attributes are empty)."""
    parts = {"mailbox": mailbox, "professional": professional, "structure": structure}
    return tuple(parts[c.part].get(c.attr, "") or "" for c in COLUMNS)


def fold(text: str) -> str:
    """Lower-case and strip accents, for accent-insensitive search ("Hélène" finds "HELENE")."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()


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


def search_text(fields: tuple[str, ...]) -> str:
    return fold(" ".join(fields[i] for i in _SEARCH_IDX if fields[i]))


def open_extraction(path: Path) -> tuple[IO[bytes], int]:
    """The extraction's byte stream (from a ZIP member if needed) and its size in bytes, for progress."""
    if zipfile.is_zipfile(path):
        zf = zipfile.ZipFile(path)
        members = [m for m in zf.infolist() if not m.is_dir() and m.filename.lower().endswith(".txt")]
        if len(members) != 1:
            names = ", ".join(m.filename for m in zf.infolist()) or "nothing"
            zf.close()
            raise HeaderError(f"{path} must hold exactly one .txt extraction, it holds {names}")
        return zf.open(members[0]), members[0].file_size
    return path.open("rb"), path.stat().st_size


def iter_lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line) for every data line after a checked header line."""
    first = stream.readline()
    if not first:
        raise HeaderError("the file is empty: no header line")
    try:
        check_header(first.decode("utf-8"))
    except UnicodeDecodeError:
        raise HeaderError("the header line is not valid UTF-8") from None
    for n, raw in enumerate(stream, 2):
        if raw.strip(b"\r\n"):
            yield n, raw


def read_text_lines(text: str) -> Iterator[tuple[int, bytes]]:
    """Same as iter_lines for an in-memory text (tests, small files)."""
    return iter_lines(io.BytesIO(text.encode()))
