"""The admin command boundary: parse, run, audit, print.

Implementation notes
- Every command is a `Command`: an audit event and an async handler returning an `Outcome`.
  `run_command` is the one error boundary: expected failures (`MssgwError`) print one line
  `mssgw: <reason>` and exit 2; anything else is reported as an internal error (exit 70) without a
  traceback unless MSSGW_DEBUG is set. Both are audited with the operator as author.
- Audit request summaries are the command's arguments with secret-named ones redacted; passwords are
  only ever read from standard input, never from arguments.
- `--json` prints the outcome's data as JSON on standard output; otherwise its text.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.audit.events import AuditEvent
from gateway.config import Config, load_config
from gateway.errors import MssgwError, UsageError
from gateway.node import Node

EXIT_USAGE = 2
EXIT_INTERNAL = 70
_INTERNAL_KEYS = {"command", "json", "config", "operator"}
# A patient's identity traits stay in the application store: the audit names the patient by address (INS).
_PERSONAL_KEYS = {"birth_name", "given_name", "birth_date", "sex"}


@dataclass
class Outcome:
    data: Any
    text: str
    audit: Mapping[str, Any] = field(default_factory=dict)
    exit_code: int = 0


Handler = Callable[["Context", argparse.Namespace], Awaitable[Outcome]]


@dataclass(frozen=True)
class Command:
    """A command run against an existing node, audited under `event`."""

    event: AuditEvent
    handler: Handler


Standalone = Callable[[argparse.Namespace, str], Awaitable[Outcome]]
"""A command that makes its node itself (`init`, `demo init`) and audits once the node exists."""


@dataclass
class Context:
    cfg: Config
    node: Node
    author: str


def operator_name(explicit: str | None) -> str:
    if explicit:
        return explicit
    env = os.environ.get("MSSGW_OPERATOR")
    if env:
        return env
    try:
        user = getpass.getuser()
    except Exception:
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def request_summary(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in vars(args).items():
        if k in _INTERNAL_KEYS or k in _PERSONAL_KEYS or k.startswith("_") or callable(v):
            continue
        out[k] = str(v) if isinstance(v, Path) else v
    return out


def common_options() -> argparse.ArgumentParser:
    """Options every command takes (`-c`, `--json`, `--operator`), accepted after the command name."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-c", "--config", type=Path, default=argparse.SUPPRESS, help="node configuration file")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    p.add_argument("--operator", default=argparse.SUPPRESS, help="who is acting, for the audit log (default user@host)")
    return p


def configure_cli_logging(cfg: Config | None, *, serving: bool = False) -> None:
    """Audit lines go to the configured log file; a terminal only sees warnings unless serving."""
    from gateway.audit import oplog

    log_file = cfg.path(cfg.audit.log_file) if cfg is not None and cfg.audit.log_file else None
    oplog.configure(log_file, logging.INFO if serving or log_file is not None else logging.WARNING)


def emit(outcome: Outcome, as_json: bool) -> None:
    if as_json:
        print(json.dumps(outcome.data, indent=2, ensure_ascii=False, default=str))
    elif outcome.text:
        print(outcome.text)


def fail(message: str) -> int:
    print(f"mssgw: {message}", file=sys.stderr)
    return EXIT_USAGE


async def run_command(args: argparse.Namespace) -> int:
    as_json = bool(getattr(args, "json", False))
    author = "operator:" + operator_name(getattr(args, "operator", None))
    standalone: Standalone | None = getattr(args, "_standalone", None)
    if standalone is not None:
        configure_cli_logging(None)
        try:
            outcome = await standalone(args, author)
        except MssgwError as exc:
            return fail(str(exc))
        emit(outcome, as_json)
        return outcome.exit_code
    command: Command = args._command
    try:
        cfg = load_config(getattr(args, "config", None))
        configure_cli_logging(cfg)
        node = await Node(cfg).open()
    except MssgwError as exc:
        return fail(str(exc))
    try:
        request = request_summary(args)
        try:
            outcome = await command.handler(Context(cfg, node, author), args)
        except MssgwError as exc:
            await node.audit.record(
                command.event,
                author=author,
                request=request,
                response={"result": "refused", "reason": exc.audit_reason or str(exc)},
            )
            await node.audit.checkpoint()
            return fail(str(exc))
        except Exception as exc:
            await node.audit.record(
                command.event,
                author=author,
                request=request,
                response={"result": "failed", "reason": f"internal error: {type(exc).__name__}"},
            )
            await node.audit.checkpoint()
            if os.environ.get("MSSGW_DEBUG"):
                raise
            print(f"mssgw: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_INTERNAL
        await node.audit.record(
            command.event,
            author=author,
            request=request,
            response={"result": "done" if outcome.exit_code == 0 else "failed", **outcome.audit},
        )
        await node.audit.checkpoint()
        emit(outcome, as_json)
        return outcome.exit_code
    finally:
        await node.close()


def read_secret_stdin(what: str) -> str:
    """A password from standard input: the first line, without its line ending."""
    value = getpass.getpass(f"{what}: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise UsageError(f"no {what} on standard input")
    return value


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain aligned text table for terminal output."""
    if not rows:
        return "(none)"
    cells = [[str(r.get(c, "") if r.get(c) is not None else "") for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)
