#!/bin/sh
# The test command: installs what the tests need (Debian and PyPI packages), then runs ruff, mypy and
# the whole pytest suite (slow benchmarks excluded; `tests/run.sh -m slow` runs them).
set -eu
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    need=""
    # isync (mbsync) and neomutt: real IMAP clients for tests/imap/test_interop.py.
    # chromium: the patient web inbox's browser tests (Playwright drives Debian's build, no download).
    # dovecot-imapd: the IMAP benchmark's reference (a private instance; the system one never starts).
    # slapd: private OpenLDAP servers for the LDAP step of certificate discovery (same).
    for pkg in openssl curl postgresql swaks dnsmasq-base postfix isync neomutt chromium haproxy systemd dovecot-imapd slapd; do
        dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"
    done
    python3 -c 'import ensurepip, venv' 2>/dev/null || need="$need python3-venv"
    if [ -n "$need" ]; then
        # Postfix is there for its smtp-source/smtp-sink and a private reference instance in the
        # relay benchmark: installed unconfigured, so no system mailer starts.
        echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
        apt-get update -qq
        # No daemon starts at install (Dovecot, HAProxy, slapd, PostgreSQL's cluster): tests run private ones.
        guard=""
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && guard=1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need
        [ -z "$guard" ] || rm -f /usr/sbin/policy-rc.d
    fi
    # PostgreSQL store tests are mandatory where we could install it.
    export MSSGW_REQUIRE_POSTGRES=1
    export MSSGW_REQUIRE_BROWSER=1
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]'
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/python -m pytest -q "$@"
