"""Coverage-guided fuzz target (atheris, libFuzzer) for the national directory extraction reader.

Run from the repository root:

    PYTHONPATH=. python tests/security/fuzz_directory.py -max_total_time=600 -timeout=10 /tmp/directory-corpus

`mssgw directory import FILE[.zip]` reads the file with `directory.national.open_extraction` and
`iter_lines`, and judges each line with `parse_row` (directory/importer.py). The file comes from outside
(the national download), so for any octets:

- the reader refuses the file only with the module's own `HeaderError` (not an extraction: bad header
  line, not UTF-8, a ZIP without exactly one .txt member), raised before any row;
- every data line is numbered as it is in the file (LF-terminated lines, the header being line 1; empty
  lines skipped), and gets a `Row` or a `Rejection` with that line number and a printable reason (the
  CLI prints reasons on a terminal: no control character may come through; the rejected address is
  data, shown only JSON-escaped);
- a `Row` has 31 fields within their lengths, no control character, a known type, its address in lower
  case, the digest of its stored form, and writes back (`format_row`) to a line that reads as the same row.

The first octet picks the form: 0 the octets are the file; 1 they are the .txt member of a ZIP (stored
or deflated by bit 2); 2 they are the file and it is read as a ZIP if it looks like one (what the CLI
does with a damaged download); 3 they are the data lines after a valid header line (all the mutations
go to the rows). Any other exception or failed assertion is a finding, except
`KNOWN_BUGS` (each with its xfail test in tests/security/test_fuzz.py).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import IO

if __name__ == "__main__":
    import atheris  # type: ignore[import-untyped]

    _instrument = atheris.instrument_imports(include=["directory"])
else:
    _instrument = contextlib.nullcontext()

with _instrument:
    from directory import national

STRICT = os.environ.get("MSSGW_FUZZ_STRICT") == "1"  # the known bugs below are findings too

# Fixed findings (their tests in test_fuzz.py): a damaged ZIP raised zipfile's and zlib's own errors
# (now a HeaderError naming the file), and member names were echoed with their control characters (now
# escaped). Every refusal of a file is a printable HeaderError.
_TMP: list[Path] = []  # a directory for the ZIP files, made on first use


def expected_lines(data: bytes) -> list[tuple[int, bytes]]:
    """(line number, raw line) of every non-empty data line, numbered independently of the reader."""
    lines = data.split(b"\n")
    with_ends = [line + b"\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    return [(n, raw) for n, raw in enumerate(with_ends, 1) if n > 1 and raw.strip(b"\r\n")]


def _check_header_error(exc: national.HeaderError) -> None:
    """A refusal of the file: one printable line (the CLI prints it)."""
    text = str(exc)
    assert text.isprintable(), text


def check_row(n: int, raw: bytes) -> None:
    result = national.parse_row(n, raw)
    if isinstance(result, national.Rejection):
        assert result.line == n, (result, n)
        assert result.reason, result
        assert result.reason.isprintable(), result
        return
    assert isinstance(result, national.Row), result
    fields = result.fields
    assert result.line == n
    assert len(fields) == national.N_COLUMNS
    for value, column in zip(fields, national.COLUMNS, strict=True):
        assert len(value) <= column.max_len, (column.header, value)
        assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in value), (column.header, value)
    assert result.kind in national.MAILBOX_KINDS
    assert result.address == result.address.lower() == fields[1]
    assert result.digest == national.row_digest(fields), "the digest is not the stored form's"
    again = national.parse_row(n, national.format_row(fields).encode("utf-8"))
    assert isinstance(again, national.Row), again
    assert again.fields == fields, again


def check_stream(stream: IO[bytes], data: bytes | None) -> None:
    """Read `stream` as the importer does; `data`, when known, is what the stream holds."""
    try:
        lines = list(national.iter_lines(stream))
    except national.HeaderError as exc:
        _check_header_error(exc)
        return
    if data is not None:
        assert lines == expected_lines(data), "line numbering differs from the file's"
    for n, raw in lines:
        check_row(n, raw)


def check(data: bytes) -> None:
    if not data:
        return
    form, payload = data[0] % 4, data[1:]
    if form == 3:
        payload = national.HEADER.encode() + b"\n" + payload
    if form in (0, 3):
        check_stream(io.BytesIO(payload), payload)
        return
    if not _TMP:
        _TMP.append(Path(tempfile.mkdtemp(prefix="directory-fuzz-")))
    path = _TMP[0] / "extraction"
    if form == 1:
        method = zipfile.ZIP_DEFLATED if data[0] & 4 else zipfile.ZIP_STORED
        with zipfile.ZipFile(path, "w", compression=method) as zf:
            zf.writestr("Extraction_Correspondance_MSSante.txt", payload)
    else:
        path.write_bytes(payload)
    zipped = form == 1 or zipfile.is_zipfile(path)
    try:
        stream, _size = national.open_extraction(path)
        with stream:
            check_stream(stream, payload if form == 1 or not zipped else None)
    except national.HeaderError as exc:
        _check_header_error(exc)


def TestOneInput(data: bytes) -> None:  # the name atheris expects
    check(data)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
