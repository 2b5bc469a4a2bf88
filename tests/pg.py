"""A throwaway PostgreSQL cluster for the tests: `initdb` + `pg_ctl`, a Unix socket in a temp dir.

- Binaries: $MSSGW_PG_BINDIR, else the newest /usr/lib/postgresql/<ver>/bin (Debian's `postgresql`
  package), else `initdb`/`pg_ctl`/`psql` on PATH.
- PostgreSQL refuses to run as root: when the tests run as root the cluster runs as $MSSGW_PG_USER,
  else `postgres` (created by Debian's package), else `nobody`; its temp dir is owned by that user.
- The cluster's directory is in /dev/shm when there is one (or $MSSGW_PG_TMPDIR), else the temp dir.
- No TCP at all (`listen_addresses = ''`): the server listens on `<tmp>/sock/.s.PGSQL.5432` only, so it
  never collides with another cluster; authentication is `trust` for the superuser `postgres`.
- Durability is switched off (fsync, full_page_writes): the cluster dies with the test session.
- One database per test, created by `psql` (no event loop needed) and dropped WITH (FORCE) afterwards.
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.exc import DBAPIError

REQUIRE_ENV = "MSSGW_REQUIRE_POSTGRES"
BINDIR_ENV = "MSSGW_PG_BINDIR"
USER_ENV = "MSSGW_PG_USER"
TMPDIR_ENV = "MSSGW_PG_TMPDIR"
APT_PACKAGES = "postgresql"  # Debian 12: postgresql-15 and postgresql-client-15 come with it
PORT = 5432
SUPERUSER = "postgres"
TOOLS = ("initdb", "pg_ctl", "psql")

_SETTINGS = """
# mssgw test cluster
listen_addresses = ''
unix_socket_directories = '{sock}'
port = {port}
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
"""


class PostgresUnavailable(RuntimeError):
    """PostgreSQL's server binaries are not installed."""


def postgres_required() -> bool:
    """True when a missing PostgreSQL must fail the run (CI sets MSSGW_REQUIRE_POSTGRES=1)."""
    return os.environ.get(REQUIRE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", path.parent.name))


def find_bindir() -> Path:
    """The directory holding initdb, pg_ctl and psql; PostgresUnavailable if there is none."""
    explicit = os.environ.get(BINDIR_ENV)
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit))
    else:
        candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
        on_path = shutil.which("initdb")
        if on_path:
            candidates.append(Path(on_path).resolve().parent)
    for bindir in candidates:
        if all((bindir / tool).is_file() and os.access(bindir / tool, os.X_OK) for tool in TOOLS):
            return bindir
    where = f"${BINDIR_ENV}={explicit}" if explicit else "/usr/lib/postgresql/*/bin or PATH"
    raise PostgresUnavailable(
        f"PostgreSQL server binaries ({', '.join(TOOLS)}) not found in {where}; "
        f"install them with `apt-get install -y {APT_PACKAGES}`"
    )


def _tmp_root() -> str | None:
    """Where the cluster lives: $MSSGW_PG_TMPDIR, else /dev/shm (tmpfs: CREATE DATABASE is 5x faster), else TMPDIR."""
    explicit = os.environ.get(TMPDIR_ENV)
    if explicit:
        return explicit
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) and shutil.disk_usage(shm).free > 1 << 30:
        return str(shm)
    return None


def _server_user() -> pwd.struct_passwd | None:
    """The account the server runs as, or None to run it as the current (non-root) user."""
    if os.geteuid() != 0:
        return None
    names = [os.environ[USER_ENV]] if os.environ.get(USER_ENV) else ["postgres", "nobody"]
    for name in names:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError(f"running as root and no account to run PostgreSQL as (tried {', '.join(names)})")


@dataclass
class PostgresCluster:
    bindir: Path
    base: Path
    user: pwd.struct_passwd | None
    port: int = PORT
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    running: bool = False

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base / "sock"

    @property
    def log_file(self) -> Path:
        return self.base / "server.log"

    @classmethod
    def start(cls) -> PostgresCluster:
        """initdb a new cluster in a fresh temp dir and start it; raises PostgresUnavailable if not installed."""
        bindir = find_bindir()
        user = _server_user()
        # Not under pytest's (root-only) tmp dir: the server's account must be able to reach it.
        base = Path(tempfile.mkdtemp(prefix="mssgw-pg-", dir=_tmp_root()))
        cluster = cls(bindir=bindir, base=base, user=user)
        try:
            cluster.socket_dir.mkdir()
            if user is not None:
                for p in (base, cluster.socket_dir):
                    os.chown(p, user.pw_uid, user.pw_gid)
            cluster._as_server(
                "initdb",
                "-D",
                str(cluster.data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            )
            with (cluster.data / "postgresql.conf").open("a") as fh:
                fh.write(_SETTINGS.format(sock=cluster.socket_dir, port=cluster.port))
            cluster._as_server("pg_ctl", "-D", str(cluster.data), "-l", str(cluster.log_file), "-w", "-s", "start")
            cluster.running = True
            cluster.psql("SELECT 1")
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _as_server(self, tool: str, *args: str) -> None:
        cmd = [str(self.bindir / tool), *args]
        kwargs: dict[str, object] = {}
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        if self.user is not None:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
            env["HOME"] = str(self.base)
        proc = subprocess.run(  # type: ignore[call-overload]
            cmd, cwd=self.base, env=env, capture_output=True, text=True, timeout=120, check=False, **kwargs
        )
        if proc.returncode != 0:
            log = self.log_file.read_text(errors="replace")[-3000:] if self.log_file.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}{log}")

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one SQL statement as the superuser; returns the unaligned output."""
        proc = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                "-d",
                database,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"psql {sql!r} failed: {proc.stderr.strip()}")
        return proc.stdout.strip()

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@/{database}?host={self.socket_dir}&port={self.port}"

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; returns its name."""
        name = f"{re.sub(r'[^a-z0-9_]', '_', prefix.lower())[:40]}_{next(self._names)}"
        self.psql(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Stop the server (immediate: nothing to keep) and remove the cluster's directory."""
        try:
            if self.running:
                self._as_server("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-s", "stop")
                self.running = False
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


def db_error(exc: BaseException) -> str:
    """The database's own message for a failed statement, the same way on SQLite and PostgreSQL."""
    assert isinstance(exc, DBAPIError), exc
    orig = exc.orig
    cause = orig.__cause__ if orig is not None else None
    # asyncpg errors reach SQLAlchemy wrapped; the server's message is on the original exception.
    message = getattr(cause, "message", None) if cause is not None else None
    return str(message if message is not None else orig)
