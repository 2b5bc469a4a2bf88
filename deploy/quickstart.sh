#!/bin/sh
# Quickstart: set up and run a demo trust space on loopback: one development PKI, two operators (SQLite),
# demo mailboxes, free loopback ports.
# Run it from anywhere in the checkout, as root on a fresh Debian 12 (it installs python3-venv if missing).
# The first run prints the demo credentials once (then they are in demo/credentials.json, mode 0600).
set -eu
cd "$(dirname "$0")/.."
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
fi
if [ ! -x .venv/bin/mssgw ]; then
    python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e .
fi
[ -f demo/credentials.json ] || .venv/bin/mssgw demo init demo
exec .venv/bin/mssgw demo run demo
