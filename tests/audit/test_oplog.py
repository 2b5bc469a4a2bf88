"""The operational log's line for an audited action (oplog.raw_line): the structlog pipeline's line,
with the audit summaries spliced in as they are."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from gateway.audit import oplog
from gateway.audit.log import summary


@pytest.fixture
def configured(tmp_path: Path) -> Iterator[Path]:
    """oplog configured to a file, as `mssgw` does; structlog and oplog put back afterwards."""
    saved = structlog.get_config()
    state = (oplog._stream, oplog._printer, oplog._level)
    path = tmp_path / "ops.jsonl"
    oplog.configure(path)
    try:
        yield path
    finally:
        assert oplog._stream is not None
        oplog._stream.close()
        oplog._stream, oplog._printer, oplog._level = state
        structlog.configure(**saved)


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


FIELDS = {"component": "audit", "node": "node1", "seq": 7, "author": "imap:node1", "principal": "c@x", "peer": "::1"}


def test_the_line_is_the_pipelines_line(configured: Path) -> None:
    req = summary({"uid": 12, "folder": "Réception", "password": "hunter2", "nested": {"token": "t"}})
    resp = summary({"result": "ok", "octets": 10240})
    oplog.raw_line("imap.fetch.body", {**FIELDS, "cid": None}, {"request": req, "response": resp})
    oplog.get_logger(**FIELDS).info(
        "imap.fetch.body", cid=None, request=json.loads(req), response=json.loads(resp)
    )  # the way it was written before
    text = configured.read_text()
    ours, pipeline = lines(configured)
    stamps = [str(ours.pop("timestamp")), str(pipeline.pop("timestamp"))]  # each its own instant, one form
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", s) for s in stamps), stamps
    assert ours == pipeline
    assert ours["request"] == {
        "uid": 12,
        "folder": "Réception",
        "password": "[redacted]",
        "nested": {"token": "[redacted]"},
    }
    assert list(ours) == sorted(ours)  # keys in the pipeline's order (sort_keys), timestamp aside
    assert "hunter2" not in text


def test_secret_named_keys_are_redacted_at_the_top_too(configured: Path) -> None:
    oplog.raw_line("web.login", {**FIELDS, "session_token": "abc"}, {"request": "{}", "secret": '{"k":1}'})
    (line,) = lines(configured)
    assert line["session_token"] == "[redacted]"
    assert line["secret"] == "[redacted]"
    assert line["request"] == {}


def test_a_value_cannot_pose_as_a_spliced_one(configured: Path) -> None:
    forged = "mssgw-splice-00000000000000000000000000000000:request"
    oplog.raw_line(
        "imap.login.failed",
        {**FIELDS, "principal": forged, "peer": '", "request": {"x": 1}, "'},
        {"request": '{"user":"u"}'},
    )
    (line,) = lines(configured)
    assert line["principal"] == forged
    assert line["peer"] == '", "request": {"x": 1}, "'
    assert line["request"] == {"user": "u"}


def test_below_the_level_nothing_is_written(tmp_path: Path) -> None:
    saved = structlog.get_config()
    state = (oplog._stream, oplog._printer, oplog._level)
    path = tmp_path / "ops.jsonl"
    oplog.configure(path, logging.WARNING)  # what admin commands use without a log file
    try:
        oplog.raw_line("admin.mailbox.listed", FIELDS, {"request": "{}"})
        oplog.get_logger().warning("shown")
    finally:
        assert oplog._stream is not None
        oplog._stream.close()
        oplog._stream, oplog._printer, oplog._level = state
        structlog.configure(**saved)
    assert [line["event"] for line in lines(path)] == ["shown"]


def test_without_configure_the_line_goes_through_structlog() -> None:
    state = (oplog._stream, oplog._printer, oplog._level)
    oplog._printer = None
    try:
        with structlog.testing.capture_logs() as logs:
            oplog.raw_line("imap.append", FIELDS, {"request": '{"a":[1,2]}', "response": "{}"})
    finally:
        oplog._stream, oplog._printer, oplog._level = state
    assert logs == [{**FIELDS, "event": "imap.append", "log_level": "info", "request": {"a": [1, 2]}, "response": {}}]


async def test_asyncio_errors_go_to_the_log(configured: Path) -> None:
    """An exception asyncio catches itself (here a callback's; asyncio would print it on standard error
    only) becomes an `asyncio.error` line."""
    loop = asyncio.get_running_loop()
    saved = loop.get_exception_handler()
    oplog.log_loop_errors(loop)

    def callback() -> None:
        raise RuntimeError("callback failed")

    try:
        loop.call_soon(callback)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(saved)
    [line] = lines(configured)
    assert (line["event"], line["level"], line["component"]) == ("asyncio.error", "error", "node")
    assert line["error"] == "RuntimeError: callback failed"
    assert str(line["message"]).startswith("Exception in callback ")
