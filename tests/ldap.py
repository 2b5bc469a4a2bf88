"""LDAP servers for tests, on loopback only.

`Slapd` runs Debian's OpenLDAP server (package slapd, installed by tests/run.sh) as a subprocess on
127.0.0.1 and an unprivileged port, with one MDB database under `suffix` loaded with `slapadd` before it
starts: the entries a test declares, each an inetOrgPerson with a `mail` and binary certificate values.
Anonymous reads are allowed (slapd's default access), as a trust-space directory publishes certificates.
`Slapd.searches()` reads the searches back from its stats log (`-d 256`): base and filter.

When slapd is missing the tests using it are skipped, unless CI or MSSGW_REQUIRE_POSTGRES (set by
tests/run.sh once it has installed the Debian packages) is set: then it is a failure.
"""

from __future__ import annotations

import base64
import contextlib
import re
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.dns import require_binary, stop_process

APT_PACKAGE = "slapd"
SCHEMAS = ("core", "cosine", "inetorgperson")


def slapd_binary() -> str:
    require_binary("slapadd", APT_PACKAGE)
    return require_binary("slapd", APT_PACKAGE)


@dataclass(frozen=True)
class Entry:
    """One person entry: `cn=<cn>,<suffix>`, its `mail`, and (attribute, value) pairs such as
    ("userSMIMECertificate", der) or ("userCertificate;binary", der)."""

    cn: str
    mail: str
    values: Sequence[tuple[str, bytes]] = ()

    def ldif(self, suffix: str) -> str:
        lines = [f"dn: cn={self.cn},{suffix}", "objectClass: inetOrgPerson", f"cn: {self.cn}", "sn: test"]
        lines.append(f"mail: {self.mail}")
        lines += [f"{attribute}:: {base64.b64encode(value).decode()}" for attribute, value in self.values]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Search:
    base: str
    filter: str


_SEARCH = re.compile(r'SRCH base="(?P<base>[^"]*)" scope=\d+ deref=\d+ filter="(?P<filter>[^"]*)"')


@dataclass
class Slapd:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    suffix: str

    def searches(self) -> list[Search]:
        """The searches received so far (the root DSE's included), in order."""
        text = self.log.read_text(errors="replace")
        return [Search(m["base"], m["filter"]) for m in _SEARCH.finditer(text)]

    def stop(self) -> None:
        stop_process(self.proc)

    @classmethod
    def start(cls, suffix: str, entries: Sequence[Entry], workdir: Path) -> Slapd:
        binary = slapd_binary()
        workdir.mkdir(parents=True, exist_ok=True)
        db = workdir / "db"
        db.mkdir(exist_ok=True)
        conf = workdir / "slapd.conf"
        conf.write_text(
            "".join(f"include /etc/ldap/schema/{s}.schema\n" for s in SCHEMAS)
            + "modulepath /usr/lib/ldap\nmoduleload back_mdb\n"
            + f"pidfile {workdir / 'slapd.pid'}\n"
            + f'database mdb\nsuffix "{suffix}"\nrootdn "cn=admin,{suffix}"\ndirectory {db}\nmaxsize 10485760\n'
        )
        top = suffix.split(",", 1)[0]
        attribute, value = top.split("=", 1)
        kind = {"o": "organization", "dc": "dcObject\nobjectClass: organization\no: test", "ou": "organizationalUnit"}
        data = f"dn: {suffix}\nobjectClass: {kind[attribute]}\n{attribute}: {value}\n\n"
        data += "\n".join(e.ldif(suffix) for e in entries)
        (workdir / "data.ldif").write_text(data)
        slapadd = require_binary("slapadd", APT_PACKAGE)
        subprocess.run(
            [slapadd, "-f", str(conf), "-l", str(workdir / "data.ldif")], check=True, capture_output=True, timeout=60
        )
        last_log = ""
        for _ in range(5):
            port = free_port()
            log = workdir / f"slapd-{port}.log"
            argv = [binary, "-f", str(conf), "-h", f"ldap://127.0.0.1:{port}/", "-d", "256"]
            with log.open("wb") as out:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
            server = cls(proc, port, log, suffix)
            if server._wait_ready():
                return server
            server.stop()
            last_log = log.read_text(errors="replace")
            if "Address already in use" not in last_log:
                break
        raise RuntimeError(f"slapd did not start:\n{last_log}")

    def _wait_ready(self, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
            time.sleep(0.05)
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def slapd(suffix: str, entries: Sequence[Entry], workdir: Path) -> Iterator[Slapd]:
    server = Slapd.start(suffix, entries, workdir)
    try:
        yield server
    finally:
        server.stop()
