"""Operational log: structlog writing JSON lines, with secrets redacted before rendering.

Implementation notes
- One JSON object per line: timestamp (ISO-8601 UTC), level, event (an AuditEvent value for audited
  actions), plus bound context (`cid`, `principal`, `peer`).
- `redact` runs last before rendering: any key that names a secret (password, secret, passphrase,
  token, private key, kek...) has its value replaced, at any depth. Message bodies are never passed to
  the logger in the first place; this is the safety net for credentials.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog

_SECRET_KEY = re.compile(
    r"pass(word|phrase)?|secret|token|private|credential|^kek$|^key$|data_key|(^|_)t?otp($|_)|otpauth", re.I
)
REDACTED = "[redacted]"


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


def configure(log_file: Path | None = None, level: int = logging.INFO) -> None:
    """Route structlog to JSON lines on `log_file` (appended) or standard error."""
    global _stream
    if _stream is not None and _stream not in (sys.stderr, sys.stdout):
        _stream.close()
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        _stream = log_file.open("a", encoding="utf-8", buffering=1)
    else:
        _stream = sys.stderr
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


def get_logger(**bound: Any) -> Any:
    return structlog.get_logger("mssgw").bind(**bound)
