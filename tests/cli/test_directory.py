"""`mssgw directory import|export|search|show` as a subprocess."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from directory import synthetic
from directory.national import HEADER
from tests.conftest import DOMAIN, NodeDir

BAD_LINES = [
    "PER|bad-address|||||||||||||||||||||||||||||",  # 31 fields, invalid address
    "PER|x@y.fr|too|few|fields",
    "XYZ|z@y.fr|||||||||||||||||||||||||||||",
]


def sample(tmp_path: Path, n: int = 300, *, bad: bool = False, zipped: bool = False) -> Path:
    path = tmp_path / ("extraction.zip" if zipped else "extraction.txt")
    synthetic.write_extraction(path, synthetic.generate_rows(n, seed=3), zipped=zipped)
    if bad:
        with path.open("a", encoding="utf-8") as fh:
            fh.write("\n".join(BAD_LINES) + "\n")
    return path


def test_import_reports_json_summary_with_rejected_lines(node: NodeDir, tmp_path: Path) -> None:
    path = sample(tmp_path, bad=True)
    r = node.cli("directory", "import", path, "--json")
    assert r.code == 0, r.err
    s = r.json()
    assert (s["read"], s["imported"], s["updated"], s["rejected"]) == (303, 300, 0, 3)  # type: ignore[index]
    assert s["rejections"] == [  # type: ignore[index]
        {"line": 302, "address": "bad-address", "reason": "Adresse BAL 'bad-address': the address has no '@'"},
        {"line": 303, "address": "", "reason": "expected 31 fields separated by '|', found 5"},
        {"line": 304, "address": "z@y.fr", "reason": "Type de BAL 'XYZ' is not one of PER, ORG, APP, CAB"},
    ]
    # No progress bar when standard error is not a terminal.
    assert r.err == ""
    again = node.cli("directory", "import", path, "--json").json()
    assert (again["imported"], again["updated"], again["unchanged"]) == (0, 0, 300)  # type: ignore[index]


def test_prune_of_a_cut_file_is_refused_past_the_limit(node: NodeDir, tmp_path: Path) -> None:
    full = sample(tmp_path, n=300)
    assert node.cli("directory", "import", full).code == 0
    cut = tmp_path / "cut.txt"
    cut.write_bytes(b"".join(full.read_bytes().splitlines(keepends=True)[:101]))  # the header and 100 rows
    r = node.cli("directory", "import", cut, "--prune")
    assert r.code == 1
    assert r.out.splitlines()[-1] == (
        "  nothing pruned: 200 national mailboxes are absent from the file, more than --prune-limit 10 % of them"
        " (a cut download?); check the file, or raise the limit"
    )
    assert node.cli("directory", "export", tmp_path / "after.txt").out.strip().endswith(": 300 rows written")
    event = node.cli("audit", "search", "--event", "admin.directory.imported", "--json").json()[-1]  # type: ignore[index]
    assert (event["response"]["pruned"], event["response"]["prune_refused"]) == (0, 200)  # type: ignore[index]
    r = node.cli("directory", "import", cut, "--prune", "--prune-limit", "70", "--json")
    assert (r.code, r.json()["pruned"]) == (0, 200)  # type: ignore[index]
    r = node.cli("directory", "import", cut, "--prune", "--prune-limit", "101")
    assert (r.code, r.err.strip().splitlines()[-1]) == (
        2,
        "mssgw directory import: error: argument --prune-limit: 101 is not a percentage between 0 and 100",
    )


def test_import_then_export_gives_the_same_rows(node: NodeDir, tmp_path: Path) -> None:
    path = sample(tmp_path, n=500, zipped=True)
    assert node.cli("directory", "import", path).code == 0
    out = tmp_path / "export.txt"
    r = node.cli("directory", "export", out)
    assert r.out.strip() == f"{out}: 500 rows written"
    original = tmp_path / "original.txt"
    synthetic.write_extraction(original, synthetic.generate_rows(500, seed=3))
    assert out.read_bytes() == original.read_bytes()
    assert out.read_text(encoding="utf-8").splitlines()[0] == HEADER


def test_search_and_show(node: NodeDir, tmp_path: Path) -> None:
    node.cli("directory", "import", sample(tmp_path))
    first = next(synthetic.generate_rows(300, seed=3))  # the rows of sample(): same n, same seed
    address, idnat = first[1], first[4]
    hits = node.cli("directory", "search", idnat, "--json").json()
    assert [h["address"] for h in hits][:1] == [address]  # type: ignore[union-attr,index]
    by_name = node.cli("directory", "search", "camille martin", "--json").json()
    assert address in [h["address"] for h in by_name]  # type: ignore[union-attr,index]
    shown = node.cli("directory", "show", address.upper(), "--json").json()
    assert shown["address"] == address  # type: ignore[index]
    assert shown["professional"]["id_nat_ps"] == idnat  # type: ignore[index]
    assert shown["structure"]["identification"] == first[6]  # type: ignore[index]
    r = node.cli("directory", "search", "   ")
    assert (r.code, r.err.strip()) == (2, "mssgw: search text is empty")


def test_a_file_that_is_not_an_extraction_is_refused(node: NodeDir, tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("a;b;c\n1;2;3\n")
    r = node.cli("directory", "import", path)
    assert r.code == 2
    assert r.err.strip() == (
        f"mssgw: {path}: the header line has 1 columns, expected 31 "
        "(is this an 'Extraction correspondance MSSanté' file?)"
    )
    missing = tmp_path / "nope.txt"
    r = node.cli("directory", "import", missing)
    assert (r.code, r.err.strip()) == (2, f"mssgw: {missing}: no such file")


def test_export_to_a_bad_path_is_refused_and_leaves_nothing(node: NodeDir, tmp_path: Path) -> None:
    r = node.cli("directory", "export", tmp_path)
    assert (r.code, r.err.strip()) == (2, f"mssgw: {tmp_path} is a directory: give the export file's name")
    nowhere = tmp_path / "no" / "such" / "dir.txt"
    r = node.cli("directory", "export", nowhere)
    assert (r.code, r.err.strip()) == (2, f"mssgw: {nowhere}: No such file or directory")
    assert not list(tmp_path.parent.glob(f"{tmp_path.name}*.tmp"))


def test_export_row_injection_from_local_fields_is_refused(node: NodeDir, tmp_path: Path) -> None:
    """The format has no quoting: a '|' or a line break in a local mailbox's field would split its row (a line
    break even adds a row of the author's choosing). Refused when the mailbox is made, and not written by an
    export when such a value is already stored."""
    address = f"accueil@{DOMAIN}"
    r = node.cli("mailbox", "add", address, "--type", "ORG", "--service", "Accueil|Urgences")
    assert (r.code, r.err.strip()) == (
        2,
        "mssgw: --service: column 'Service de rattachement' holds a '|' (the format has no quoting)",
    )
    injected = "Accueil\nPER|faux@medecin.mssante.fr" + "|" * 29
    r = node.cli("mailbox", "add", address, "--type", "ORG", "--service", injected)
    assert (r.code, r.err.strip()) == (
        2,
        "mssgw: --service: column 'Service de rattachement' holds a control character",
    )
    assert node.cli("mailbox", "add", address, "--type", "ORG", "--service", "Accueil").code == 0
    assert node.cli("mailbox", "add", f"secretariat@{DOMAIN}", "--type", "ORG", "--service", "Secrétariat").code == 0
    with sqlite3.connect(node.data / "mssgw.db") as conn:  # stored before the check existed
        conn.execute("UPDATE mailboxes SET service = ? WHERE address = ?", (injected, address))
    out = tmp_path / "export.txt"
    r = node.cli("directory", "export", out, "--json")
    assert r.code == 0, r.err
    assert r.json() == {
        "file": str(out),
        "rows": 1,
        "not_written": [{"address": address, "reason": "column 'Service de rattachement' holds a control character"}],
    }
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines == [HEADER, "|".join(["ORG", f"secretariat@{DOMAIN}", *[""] * 5, "Secrétariat", *[""] * 23])]
    r = node.cli("directory", "export", out)
    assert r.out.splitlines() == [
        f"{out}: 1 rows written",
        f"  not written: {address}: column 'Service de rattachement' holds a control character",
    ]
