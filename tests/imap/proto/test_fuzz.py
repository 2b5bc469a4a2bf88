"""A bounded run of the atheris fuzz target (skipped when atheris is not installed)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
TARGET = Path(__file__).with_name("fuzz_parser.py")
SEEDS = [
    b"\x03a LOGIN {3}\r\nbob {2+}\r\npw\r\nb NOOP\r\n",
    b"\x01a UID FETCH 1:* (FLAGS BODY.PEEK[1.2.HEADER.FIELDS (From To)]<0.100>) (CHANGEDSINCE 5)\r\n",
    b"\x07a SEARCH RETURN (MIN) CHARSET UTF-8 OR FROM x (NOT SEEN) UID 1:5 MODSEQ 3\r\n",
    b'\x02a LIST (SPECIAL-USE) "" * RETURN (STATUS (MESSAGES))\r\n',
    b'\x05a APPEND INBOX (\\Seen) "17-Jul-1996 02:44:25 -0700" {5+}\r\nhello\r\n',
    b"\x04a STORE 1 (UNCHANGEDSINCE 0) +FLAGS.SILENT \\Seen\r\n",
    b'\x06a ID ("name" "x")\r\nb AUTHENTICATE PLAIN =\r\nc x\n',
]


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed")
def test_fuzz_target_bounded_run(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, seed in enumerate(SEEDS):
        (corpus / f"seed{i}").write_bytes(seed)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [
            sys.executable,
            str(TARGET),
            "-runs=4000",
            "-seed=1",
            "-max_len=512",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done 4000 runs" in result.stderr
