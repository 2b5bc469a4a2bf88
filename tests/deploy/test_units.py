"""The systemd units in deploy/ pass `systemd-analyze verify` without a warning, and `systemd-analyze security`
finds in the node units only the exposures their comments explain.

`verify` checks that ExecStart's program exists and is executable, so the units are verified in copies whose
/opt/mssgw venv is replaced by this checkout's (the only change; asserted). Templates are verified as the
instance `@node1`. Skipped where systemd-analyze is not installed (Debian package `systemd`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNITS = [
    "mssgw.service",
    "mssgw@.service",
    "mssgw-audit-verify.service",
    "mssgw-audit-verify.timer",
    "mssgw-audit-verify@.service",
    "mssgw-audit-verify@.timer",
    "mssgw-retention.service",
    "mssgw-retention.timer",
    "mssgw-retention@.service",
    "mssgw-retention@.timer",
    "mssgw-audit-archive.service",
    "mssgw-audit-archive.timer",
    "mssgw-audit-archive@.service",
    "mssgw-audit-archive@.timer",
]
INSTALLED = "/opt/mssgw/.venv/bin/mssgw"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (Debian package systemd)")


def staged(tmp: Path, name: str, text: str | None = None) -> Path:
    """A copy of deploy/NAME in tmp, ExecStart pointing at this checkout's mssgw; templates as @node1."""
    here = Path(sys.executable).with_name("mssgw")
    assert here.is_file(), f"no mssgw beside {sys.executable}"
    lines = ((DEPLOY / name).read_text() if text is None else text).splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(f"ExecStart={INSTALLED} ")]
    assert len(starts) == (0 if name.endswith(".timer") else 1)
    for i in starts:
        lines[i] = lines[i].replace(INSTALLED, str(here), 1)
    target = tmp / name.replace("@.", "@node1.")
    target.write_text("\n".join(lines) + "\n")
    return target


def analyze(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    env = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "", "LC_ALL": "C.UTF-8"}
    return subprocess.run([ANALYZE, *map(str, args)], capture_output=True, text=True, timeout=60, check=False, env=env)


def service_directives(name: str) -> list[tuple[str, str]]:
    section = ""
    out = []
    for line in (DEPLOY / name).read_text().splitlines():
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.append((key, value))
    return out


@needs_analyze
def test_units_verify_without_warnings(tmp_path: Path) -> None:
    files = [staged(tmp_path, name) for name in UNITS]
    result = analyze("verify", "--man=no", "--generators=no", *files)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == ""


@needs_analyze
def test_verify_reports_what_it_does_not_know(tmp_path: Path) -> None:
    # The check above relies on warnings going to stderr: an unknown or malformed directive is only a warning.
    text = (DEPLOY / "mssgw@.service").read_text()
    bad = staged(tmp_path, "mssgw@.service", text.replace("ProtectClock=yes", "ProtectClok=yes"))
    result = analyze("verify", "--man=no", "--generators=no", bad)
    assert "Unknown key 'ProtectClok' in section [Service]" in result.stderr


def security(path: Path) -> tuple[set[str], str]:
    """The settings `systemd-analyze security` counts against a unit, and its overall exposure."""
    result = analyze("security", "--offline=true", path)
    assert result.returncode == 0, result.stderr
    exposed = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("✗")}
    overall = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert overall is not None, result.stdout
    return exposed, overall.group(1)


NODE_EXPOSURES = {
    # Explained in deploy/mssgw.service: a network server on privileged ports.
    "RootDirectory=/RootImage=",
    "AmbientCapabilities=",
    "CapabilityBoundingSet=~CAP_NET_(BIND_SERVICE|BROADCAST|RAW)",
    "RestrictAddressFamilies=~AF_UNIX",
    "RestrictAddressFamilies=~AF_(INET|INET6)",
    "PrivateNetwork=",
    "PrivateUsers=",
    "IPAddressDeny=",
    "DeviceAllow=",  # char-rtc:r, added by ProtectClock=yes
}


@needs_analyze
@pytest.mark.parametrize("name", ["mssgw.service", "mssgw@.service"])
def test_node_units_expose_only_what_they_explain(tmp_path: Path, name: str) -> None:
    if "--offline" not in analyze("--help").stdout:
        pytest.skip("this systemd-analyze has no `security --offline` (systemd < 252)")
    exposed, overall = security(staged(tmp_path, name))
    assert exposed == NODE_EXPOSURES
    assert overall == "1.4"  # systemd 252 (Debian 12) weights, as the unit's comment says


@needs_analyze
@pytest.mark.parametrize(
    "name",
    [
        "mssgw-audit-verify.service",
        "mssgw-audit-verify@.service",
        "mssgw-retention.service",
        "mssgw-retention@.service",
        "mssgw-audit-archive.service",
        "mssgw-audit-archive@.service",
    ],
)
def test_the_audit_check_has_no_capability_and_its_own_user_namespace(tmp_path: Path, name: str) -> None:
    if "--offline" not in analyze("--help").stdout:
        pytest.skip("this systemd-analyze has no `security --offline` (systemd < 252)")
    exposed, overall = security(staged(tmp_path, name))
    assert exposed == NODE_EXPOSURES - {
        "AmbientCapabilities=",
        "CapabilityBoundingSet=~CAP_NET_(BIND_SERVICE|BROADCAST|RAW)",
        "PrivateUsers=",
    }
    assert overall == "1.1"


def test_the_template_is_the_unit_with_per_instance_paths() -> None:
    one = service_directives("mssgw.service")
    many = service_directives("mssgw@.service")
    assert ("Environment", "MSSGW_NODE__NAME=%i") in many
    many.remove(("Environment", "MSSGW_NODE__NAME=%i"))
    per_instance = {
        ("ExecStart", "/opt/mssgw/.venv/bin/mssgw serve -c /var/lib/mssgw/mssgw.toml"): (
            "ExecStart",
            "/opt/mssgw/.venv/bin/mssgw serve -c /var/lib/mssgw/%i/mssgw.toml",
        ),
        ("ReadWritePaths", "/var/lib/mssgw"): ("ReadWritePaths", "/var/lib/mssgw/%i"),
    }
    assert [per_instance.get(d, d) for d in one] == many


def test_the_hardening_the_node_units_carry() -> None:
    directives = dict(service_directives("mssgw.service"))
    for key, value in {
        "User": "mssgw",
        "KillMode": "mixed",
        "LimitNOFILE": "65536",
        "UMask": "0077",
        "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
        "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectProc": "invisible",
        "ProcSubset": "pid",
        "ProtectClock": "yes",
        "ProtectHostname": "yes",
        "ProtectKernelLogs": "yes",
        "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes",
        "RemoveIPC": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
        "SystemCallErrorNumber": "EPERM",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    }.items():
        assert directives[key] == value, key
    filters = [v for k, v in service_directives("mssgw.service") if k == "SystemCallFilter"]
    assert filters == ["@system-service", "~@privileged @resources"]
    assert "PrivateUsers" not in directives  # it would take CAP_NET_BIND_SERVICE away (the unit says why)


def test_systemd_analyze_is_there_where_run_sh_installs_it() -> None:
    # tests/run.sh installs systemd where it can (as root, with apt; it then sets MSSGW_REQUIRE_POSTGRES):
    # there the tests above must not be skipped.
    if os.geteuid() == 0 and shutil.which("apt-get") and os.environ.get("MSSGW_REQUIRE_POSTGRES"):
        assert ANALYZE is not None, "tests/run.sh should have installed systemd"
