"""`mssgw`: the operator's command line. One module per command group, one boundary in base.py."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from gateway.cli import audit, base, demo, directory, kek, mailbox, node, oidc, patient, pki, queue, retention, trust


def build_parser() -> argparse.ArgumentParser:
    common = base.common_options()
    parser = argparse.ArgumentParser(
        prog="mssgw",
        description="MSSanté-style secure health messaging operator node",
        parents=[common],
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    for group in (node, demo, directory, mailbox, patient, trust, queue, pki, kek, audit, retention, oidc):
        group.register(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.umask(0o077)  # databases, keys and exports hold health data or secrets: owner only
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return asyncio.run(base.run_command(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
