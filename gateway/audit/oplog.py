"""Operational log: structlog writing JSON lines, with secrets redacted before rendering.

Implementation notes
- One JSON object per line: timestamp (ISO-8601 UTC), level, event (an AuditEvent value for audited
  actions), plus bound context (`cid`, `principal`, `peer`).
- `redact` runs last before rendering: any key that names a secret (password, secret, passphrase,
  token, private key, kek...) has its value replaced, at any depth. Message bodies are never passed to
  the logger in the first place; this is the safety net for credentials.
- `raw_line`: the line of an audited action, whose request and response are JSON texts already scrubbed
  (audit summaries). They are spliced in as they are rather than parsed, scrubbed again and re-rendered
  by the processors (81 µs a line against 19: the line was a tenth of an IMAP FETCH's CPU). Same keys,
  same order, same timestamp form; only the spacing inside the spliced texts differs (canonical JSON).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import secrets
import sys
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import structlog

_SECRET_KEY = re.compile(
    r"pass(word|phrase)?|secret|token|private|credential|^kek$|^key$|data_key|(^|_)t?otp($|_)|otpauth", re.I
)
REDACTED = "[redacted]"
REDACTED_JSON = json.dumps(REDACTED)


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: REDACTED if _SECRET_KEY.search(str(k)) else _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def redact(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for k in list(event_dict):
        if k != "event" and _SECRET_KEY.search(k):
            event_dict[k] = REDACTED
        else:
            event_dict[k] = _scrub(event_dict[k])
    return event_dict


def is_secret_key(name: str) -> bool:
    return bool(_SECRET_KEY.search(name))


def scrub(value: Any) -> Any:
    """Copy of a JSON-like value with secret-named keys redacted (also used for audit summaries)."""
    return _scrub(value)


_stream: TextIO | None = None
_printer: structlog.PrintLogger | None = None  # writes raw_line's lines, under structlog's lock for the file
_level = logging.INFO
_SPLICE = f"mssgw-splice-{secrets.token_hex(16)}:"
"""Placeholder prefix for the spliced values: unguessable, so no other value of a line can pose as one."""


def configure(log_file: Path | None = None, level: int = logging.INFO) -> None:
    """Route structlog to JSON lines on `log_file` (appended) or standard error."""
    global _stream, _printer, _level
    if _stream is not None and _stream not in (sys.stderr, sys.stdout):
        _stream.close()
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        _stream = log_file.open("a", encoding="utf-8", buffering=1)
    else:
        _stream = sys.stderr
    _printer, _level = structlog.PrintLogger(_stream), level
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(_stream),
        cache_logger_on_first_use=False,
    )


def log_loop_errors(loop: asyncio.AbstractEventLoop) -> None:
    """asyncio's own errors (an exception in a protocol factory or a callback, a task's exception never
    retrieved) as `asyncio.error` lines of this log: asyncio prints them on standard error, apart from the
    log file and its JSON, where an operator does not look."""
    log = get_logger(component="node")

    def handler(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        log.error(
            "asyncio.error",
            message=str(context.get("message", ""))[:300],
            error=f"{type(exc).__name__}: {exc}"[:300] if exc is not None else None,
        )

    loop.set_exception_handler(handler)


def get_logger(**bound: Any) -> Any:
    return structlog.get_logger("mssgw").bind(**bound)


def raw_line(event: str, fields: Mapping[str, Any], raw: Mapping[str, str]) -> None:
    """An info line with `fields` (flat values) and `raw` (key -> JSON text, already scrubbed) as it is.
    Without `configure()` (a library caller), the line goes through structlog as any other."""
    if _printer is None:
        get_logger().info(event, **fields, **{k: json.loads(v) for k, v in raw.items()})
        return
    if _level > logging.INFO:
        return
    line: dict[str, Any] = {k: REDACTED if _secret(k) else v for k, v in fields.items() if k not in raw}
    stamp = datetime.now(UTC).isoformat(timespec="microseconds")[:-6] + "Z"  # as TimeStamper(fmt="iso")
    line |= {"event": event, "level": "info", "timestamp": stamp}
    for k in raw:
        line[k] = _SPLICE + k
    text = json.dumps(line, sort_keys=True)
    for k, v in raw.items():
        text = text.replace(f'"{_SPLICE}{k}"', REDACTED_JSON if _secret(k) else v, 1)
    _printer.msg(text)


@functools.lru_cache(maxsize=256)
def _secret(key: str) -> bool:
    return key != "event" and bool(_SECRET_KEY.search(key))
