"""The SMTP DATA benchmark (bench/smtp_data.py), run as a script at a small size.

Checks the rows it prints and its JSON (both servers, the three batches), and that it ran to the end: it
exits non-zero when a content delivered by either server differs from the one sent. Not timing: the
figures only have to be positive.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "smtp_data.py"
ROW = re.compile(r"^(10 KB|20 KB|2 MB) +(\d+\.\d{3}) +(\d+\.\d{3}) +(\d+\.\d\d)$", re.MULTILINE)


def test_smtp_data_bench_runs_and_reports_both_servers(tmp_path: Path) -> None:
    out = tmp_path / "data.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--messages", "20", "--big", "1", "--big-mb", "2", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = ROW.findall(proc.stdout)
    assert [r[0] for r in rows] == ["10 KB", "20 KB", "2 MB"], proc.stdout
    for _, theirs, ours, ratio in rows:
        assert float(theirs) > 0
        assert float(ours) > 0
        assert abs(float(ours) / float(theirs) - float(ratio)) < 0.01 + float(ratio) * 0.01
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"aiosmtpd", "gateway"}
    for server in results.values():
        assert {name: r["messages"] for name, r in server.items()} == {"10 KB": 20, "20 KB": 20, "2 MB": 1}
        assert all(r["cpu_ms"] > 0 and r["wall_s"] > 0 for r in server.values())
