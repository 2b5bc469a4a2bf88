"""deploy/postgresql.md, run as written on a throwaway PostgreSQL cluster.

The page's SQL (roles, databases, default privileges; then the audit role's grants) runs through psql; its
owners' command migrates the schemas; its pg_hba `hostssl` lines (addresses moved to 127.0.0.1) and its
pg_ident map are the server's, with TLS on. Then a node configured like deploy/examples/two-nodes, its URLs in
the page's TLS form (`?ssl=verify-full`, client certificate from PGSSLCERT/PGSSLKEY), works as the node roles:
admin commands, the queue's SKIP LOCKED claim, LISTEN/NOTIFY, audit appends, checkpoints and verification;
and cannot rewrite the audit log or change the schema. The URL forms the page warns about fail as it says.
Skipped without PostgreSQL's server binaries, unless MSSGW_REQUIRE_POSTGRES is set (CI), where that fails.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import shlex
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import text

from gateway.audit import archive as aarchive
from gateway.audit import verify as averify
from gateway.audit.archive import ArchiveError
from gateway.audit.checkpoint import CheckpointSigner
from gateway.audit.events import AuditEvent
from gateway.audit.log import AUDIT_HEAD, AUDIT_MIGRATIONS, AuditLog, iso
from gateway.config import load_config
from gateway.node import Node
from gateway.queue.store import Queue
from gateway.store.crypto import generate_kek_b64, write_secret_file
from gateway.store.db import Database
from gateway.store.notify import PgNoticeBridge
from tests.conftest import run_cli
from tests.pg import REQUIRE_ENV, PostgresCluster, PostgresUnavailable, postgres_required

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "deploy" / "postgresql.md"
EXAMPLE = ROOT / "deploy" / "examples" / "two-nodes" / "node1.toml"
EXAMPLES_README = ROOT / "deploy" / "examples" / "README.md"
CLIENT_CN = "node1.ch-exemple.lan"


def blocks(language: str) -> list[str]:
    """The page's fenced blocks in `language`, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```$", PAGE.read_text(), flags=re.M | re.S)


# -- a small PKI for the server and the node's client certificate ---------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    **kw: object,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer or (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    if "dns" in kw:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(str(kw["dns"]))]), critical=False)
    if "usage" in kw:
        builder = builder.add_extension(x509.ExtendedKeyUsage([kw["usage"]]), critical=False)  # type: ignore[list-item]
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.with_suffix(".key").write_bytes(pem)
        path.with_suffix(".key").chmod(0o600)


# -- the cluster -----------------------------------------------------------------------------------------


@dataclass
class Server:
    cluster: PostgresCluster
    tls: Path  # root.crt (the CA), node1.crt/key (the node's client certificate)

    def psql_script(self, script: str) -> str:
        """Run a psql script (meta-commands such as \\connect allowed) as the superuser; stop at the first error."""
        c = self.cluster
        args = ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(c.socket_dir), "-p", str(c.port), "-U", "postgres"]
        proc = subprocess.run(
            [str(c.bindir / "psql"), *args, "-d", "postgres", "-f", "-"],
            input=script,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def socket_url(self, role: str, database: str) -> str:
        return f"postgresql+asyncpg://{role}@/{database}?host={self.cluster.socket_dir}&port={self.cluster.port}"

    def tls_url(self, role: str, database: str, host: str = "localhost", query: str = "ssl=verify-full") -> str:
        return f"postgresql+asyncpg://{role}@{host}:{self.cluster.port}/{database}?{query}"

    def client_env(self) -> dict[str, str]:
        return {
            "PGSSLROOTCERT": str(self.tls / "root.crt"),
            "PGSSLCERT": str(self.tls / "node1.crt"),
            "PGSSLKEY": str(self.tls / "node1.key"),
        }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    try:
        cluster = PostgresCluster.start()
    except PostgresUnavailable as exc:
        if postgres_required():
            pytest.fail(f"{exc} ({REQUIRE_ENV} is set: PostgreSQL is required)", pytrace=False)
        pytest.skip(f"{exc} (set {REQUIRE_ENV}=1 to make this a failure)")
    try:
        tls = tmp_path_factory.mktemp("pg-tls")
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _issue("mssgw test PostgreSQL CA", ca_key, None)
        _write(tls / "root", ca)
        issuer = (ca.subject, ca_key)
        node_key = ec.generate_private_key(ec.SECP256R1())
        _write(tls / "node1", _issue(CLIENT_CN, node_key, issuer, usage=ExtendedKeyUsageOID.CLIENT_AUTH), node_key)
        # The server's files, readable by the account the server runs as.
        server_dir = cluster.base / "tls"
        server_dir.mkdir()
        server_key = ec.generate_private_key(ec.SECP256R1())
        server_cert = _issue("localhost", server_key, issuer, dns="localhost", usage=ExtendedKeyUsageOID.SERVER_AUTH)
        _write(server_dir / "server", server_cert, server_key)
        _write(server_dir / "root", ca)
        if cluster.user is not None:
            for p in [server_dir, *server_dir.iterdir()]:
                os.chown(p, cluster.user.pw_uid, cluster.user.pw_gid)
        port = _free_port()
        with (cluster.data / "postgresql.conf").open("a") as fh:
            fh.write(
                f"listen_addresses = '127.0.0.1'\nport = {port}\nssl = on\n"
                f"ssl_cert_file = '{server_dir / 'server.crt'}'\nssl_key_file = '{server_dir / 'server.key'}'\n"
                f"ssl_ca_file = '{server_dir / 'root.crt'}'\nssl_min_protocol_version = 'TLSv1.2'\n"
            )
        # The page's pg_hba `hostssl` lines (first: they match before initdb's `trust` lines) and pg_ident map.
        hba, ident = blocks("text")
        hostssl = [
            line.replace("10.0.0.21/32", "127.0.0.1/32") for line in hba.splitlines() if line.startswith("hostssl")
        ]
        assert len(hostssl) == 4
        hba_file = cluster.data / "pg_hba.conf"
        hba_file.write_text("\n".join(hostssl) + "\n" + hba_file.read_text())
        with (cluster.data / "pg_ident.conf").open("a") as fh:
            fh.write(ident.replace("node1.ch-exemple.lan", CLIENT_CN))
        cluster._as_server("pg_ctl", "-D", str(cluster.data), "-l", str(cluster.log_file), "-w", "-s", "restart")
        cluster.port = port
        cluster.psql("SELECT 1")
        yield Server(cluster, tls)
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def configured(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The page's first SQL block and the owners' command done; the node1 example's configuration with its
    URLs in the page's TLS form and its keys in a temp directory."""
    server.psql_script(blocks("sql")[0])
    base = tmp_path_factory.mktemp("pg-node")
    keys = base / "keys"
    write_secret_file(keys / "kek.key", generate_kek_b64().encode() + b"\n")
    CheckpointSigner.generate(keys / "audit-checkpoint.pem")
    data = base / "node1"
    data.mkdir()
    text_ = EXAMPLE.read_text()
    for old, new in {
        '"postgresql+asyncpg://mssgw@/mssgw?host=/run/postgresql"': f'"{server.tls_url("mssgw", "mssgw")}"',
        '"postgresql+asyncpg://mssgw_audit@/mssgw_audit?host=/run/postgresql"': (
            f'"{server.tls_url("mssgw_audit", "mssgw_audit")}"'
        ),
        '"/etc/mssgw/keys/kek.key"': f'"{keys / "kek.key"}"',
        '"/etc/mssgw/keys/audit-checkpoint.pem"': f'"{keys / "audit-checkpoint.pem"}"',
    }.items():
        assert old in text_
        text_ = text_.replace(old, new)
    config = data / "mssgw.toml"
    config.write_text(text_)

    # The owners' command of the page, its socket path moved to the test cluster's.
    (command,) = blocks("sh")[:1]
    words = shlex.split(command.replace("\\\n", " "))
    env = {}
    while "=" in words[0]:
        name, _, value = words.pop(0).partition("=")
        env[name] = value.replace(
            "host=/run/postgresql", f"host={server.cluster.socket_dir}&port={server.cluster.port}"
        )
    assert env == {
        "MSSGW_STORE__URL": server.socket_url("mssgw_owner", "mssgw"),
        "MSSGW_STORE__AUDIT_URL": server.socket_url("mssgw_audit_owner", "mssgw_audit"),
    }
    assert words[0].endswith("/mssgw")
    assert words[-2] == "-c"
    result = run_cli(*words[1:-1], config, env=env)
    assert result.code == 0, result.err
    server.psql_script(blocks("sql")[1])
    return config


def node_cli(server: Server, config: Path, *args: str) -> tuple[int, str, str]:
    result = run_cli(*args, "-c", config, env=server.client_env())
    return result.code, result.out, result.err


def test_the_page_has_the_blocks_this_test_runs() -> None:
    assert len(blocks("sql")) == 2
    assert len(blocks("text")) == 2
    assert "MSSGW_STORE__AUDIT_URL" in blocks("sh")[0]


def test_the_schemas_belong_to_the_owners(server: Server, configured: Path) -> None:
    owners = server.cluster.psql(
        "SELECT string_agg(DISTINCT tableowner, ',') FROM pg_tables WHERE schemaname = 'public'", "mssgw"
    )
    assert owners == "mssgw_owner"
    tables = server.cluster.psql(
        "SELECT string_agg(tablename || ':' || tableowner, ',' ORDER BY tablename) FROM pg_tables "
        "WHERE schemaname = 'public'",
        "mssgw_audit",
    )
    assert tables == (
        "alembic_version:mssgw_audit_owner,audit_archives:mssgw_audit_owner,audit_checkpoints:mssgw_audit_owner,"
        "audit_head:mssgw_audit_owner,audit_records:mssgw_audit_owner"
    )


def test_admin_commands_work_as_the_node_roles_over_tls(server: Server, configured: Path) -> None:
    code, out, err = node_cli(server, configured, "trust", "add-domain", "clinique-exemple.mssante.fr")
    assert (code, out.strip()) == (0, "clinique-exemple.mssante.fr added to the trust list"), err
    # deploy/examples/README.md's `mailbox add`, as written but for the configuration file.
    (line,) = [x for x in EXAMPLES_README.read_text().splitlines() if " mailbox add " in x]
    words = shlex.split(line)
    args = words[words.index("mailbox") : words.index("-c")]
    assert args[:3] == ["mailbox", "add", "claire.martin@ch-exemple.mssante.fr"]
    code, out, err = node_cli(server, configured, *args)
    assert code == 0, err
    code, out, err = node_cli(server, configured, "mailbox", "list", "--json")
    assert code == 0, err
    assert [m["address"] for m in json.loads(out)] == ["claire.martin@ch-exemple.mssante.fr"]
    code, out, err = node_cli(server, configured, "audit", "verify")
    assert code == 0, err
    assert out.strip().endswith("audit log intact")


async def test_queue_notices_and_audit_as_the_node_roles(
    server: Server, configured: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in server.client_env().items():
        monkeypatch.setenv(name, value)
    async with Node(load_config(configured)) as node:
        await node.open()
        assert await node.db.current_revision() is not None  # readable by the node role: no migration tried
        queue = Queue(node.db, node.kek)
        queue_id = await queue.enqueue(
            source="submission",
            sender="claire.martin@ch-exemple.mssante.fr",
            recipients=["paul.durand@clinique-exemple.mssante.fr"],
            body=b"Subject: t\r\n\r\nx\r\n",
            local_domains=node.cfg.node.local_domains,
        )
        first = await queue.claim(owner="node1", lease=timedelta(seconds=900))
        assert [(j.envelope.queue_id, j.owner) for j in first.jobs] == [(queue_id, "node1")]
        assert (await queue.claim(owner="node2", lease=timedelta(seconds=900))).jobs == []  # leased to node1

        bridge = PgNoticeBridge(node.db, node.notices)
        task = asyncio.create_task(bridge.run())
        try:
            await asyncio.wait_for(bridge.connected.wait(), 10)  # LISTEN mssgw_mailbox as the node role
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        before = await node.audit.size()
        await node.audit.record(AuditEvent.NODE_STARTED, author="node:node1")
        assert await node.audit.checkpoint() is not None
        assert await node.audit.size() == before + 1
        report = await averify.verify(node.audit_db, [node.signer.verifier])
        assert (report.ok, report.findings) == (True, [])


REFUSED = [
    ("audit", "UPDATE audit_records SET action = 'x'", "permission denied for table audit_records"),
    ("audit", "DELETE FROM audit_records", "permission denied for table audit_records"),
    ("audit", "TRUNCATE audit_records", "permission denied for table audit_records"),
    ("audit", "DROP TRIGGER audit_records_append_only ON audit_records", "must be owner of relation audit_records"),
    ("audit", "DELETE FROM audit_checkpoints", "permission denied for table audit_checkpoints"),
    ("audit", "UPDATE audit_checkpoints SET node = 'x'", "permission denied for table audit_checkpoints"),
    ("audit", "UPDATE audit_head SET id = 2", "permission denied for table audit_head"),
    ("audit", "CREATE TABLE forged (i int)", "permission denied for schema public"),
    ("store", "CREATE TABLE forged (i int)", "permission denied for schema public"),
    ("store", "DROP TABLE mailboxes", "must be owner of table mailboxes"),
    ("store", "ALTER TABLE messages ADD COLUMN forged int", "must be owner of table messages"),
]


@pytest.mark.parametrize(("database", "sql", "message"), REFUSED, ids=[r[1] for r in REFUSED])
async def test_the_node_roles_cannot(
    server: Server, configured: Path, monkeypatch: pytest.MonkeyPatch, database: str, sql: str, message: str
) -> None:
    for name, value in server.client_env().items():
        monkeypatch.setenv(name, value)
    cfg = load_config(configured)
    db = Database(cfg.store.audit_url if database == "audit" else cfg.store.url)
    try:
        with pytest.raises(Exception, match=re.escape(message)):
            async with db.engine.begin() as conn:
                await conn.execute(text(sql))
    finally:
        await db.close()


async def test_the_audit_role_is_refused_the_application_database(
    server: Server, configured: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in server.client_env().items():
        monkeypatch.setenv(name, value)
    # The page's pg_hba has no line for it; here the test cluster's own `trust` lines let the connection
    # through to the database's privileges, where the page's REVOKE ... FROM PUBLIC refuses it.
    db = Database(server.tls_url("mssgw_audit", "mssgw"))
    try:
        with pytest.raises(Exception, match='permission denied for database "mssgw"'):
            async with db.engine.connect():
                pass
    finally:
        await db.close()


async def test_a_spoiled_head_row_is_reported(
    server: Server, configured: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audit role may rewrite the head row (every append does); what it spoils there, verify reports.
    On an audit database of its own (made like mssgw_audit: owner, migration, the page's grants), so that
    the spoiled log stays out of the other tests."""
    server.cluster.psql("CREATE DATABASE mssgw_audit_spoiled OWNER mssgw_audit_owner")
    owner = Database(server.socket_url("mssgw_audit_owner", "mssgw_audit_spoiled"), AUDIT_MIGRATIONS, AUDIT_HEAD)
    try:
        await owner.migrate()
    finally:
        await owner.close()
    grants = blocks("sql")[1]
    assert grants.startswith("\\connect mssgw_audit\n")
    server.psql_script(grants.replace("\\connect mssgw_audit\n", "\\connect mssgw_audit_spoiled\n", 1))
    for name, value in server.client_env().items():
        monkeypatch.setenv(name, value)
    cfg = load_config(configured, store={"audit_url": server.socket_url("mssgw_audit", "mssgw_audit_spoiled")})
    async with Node(cfg) as node:
        await node.open()
        await node.audit.record(AuditEvent.NODE_STARTED, author="node:node1")
        await node.audit.checkpoint()
        assert (await averify.verify(node.audit_db, [node.signer.verifier])).ok
        async with node.audit_db.engine.begin() as conn:
            assert (await conn.execute(text("SELECT current_user"))).scalar_one() == "mssgw_audit"
            frontier = (await conn.execute(text("SELECT frontier FROM audit_head"))).scalar_one()
            spoiled = bytes([frontier[0] ^ 1]) + frontier[1:]
            await conn.execute(text("UPDATE audit_head SET frontier = :f"), {"f": spoiled})
        await node.audit.record(AuditEvent.NODE_STOPPED, author="node:node1")
        await node.audit.checkpoint()
        report = await averify.verify(node.audit_db, [node.signer.verifier])
    assert not report.ok
    assert "checkpoint_mismatch" in {f.kind for f in report.findings}


async def test_audit_archives_are_made_as_the_owner(
    server: Server, configured: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The node role may not delete (the archive says so before writing anything); the owner may delete
    only what an archive row covers; the node role then verifies the log from the archive's range."""
    server.cluster.psql("CREATE DATABASE mssgw_audit_archived OWNER mssgw_audit_owner")
    owner = Database(server.socket_url("mssgw_audit_owner", "mssgw_audit_archived"), AUDIT_MIGRATIONS, AUDIT_HEAD)
    try:
        await owner.migrate()
        grants = blocks("sql")[1]
        server.psql_script(grants.replace("\\connect mssgw_audit\n", "\\connect mssgw_audit_archived\n", 1))
        for name, value in server.client_env().items():
            monkeypatch.setenv(name, value)
        cfg = load_config(configured, store={"audit_url": server.socket_url("mssgw_audit", "mssgw_audit_archived")})
        then = dt.datetime.now(dt.UTC) - timedelta(days=300)
        cutoff = iso(dt.datetime.now(dt.UTC) - timedelta(days=183))
        async with Node(cfg) as node:
            await node.open()
            old = AuditLog(node.audit_db, cfg.node.name, node.signer, clock=lambda: then)
            for n in range(10):
                await old.record(AuditEvent.MAILBOX_CREATED, author="operator:admin@ops", request={"n": n})
            await node.audit.record(AuditEvent.NODE_STARTED, author="node:node1")
            await node.audit.checkpoint()
            with pytest.raises(ArchiveError, match="this database role may not delete audit records: run mssgw"):
                await aarchive.archive(node.audit_db, node.signer, cfg.node.name, cutoff, tmp_path)
            assert not list(tmp_path.glob("audit-*"))  # noqa: ASYNC240
            with pytest.raises(Exception, match="audit records are append-only"):
                async with owner.engine.begin() as conn:
                    await conn.execute(text("DELETE FROM audit_records WHERE seq = 1"))
            done = await aarchive.archive(owner, node.signer, cfg.node.name, cutoff, tmp_path)
            assert done.records == 10
            for sql in ("DELETE FROM audit_records WHERE seq = 11", "TRUNCATE audit_records"):
                with pytest.raises(Exception, match="audit records are append-only"):
                    async with owner.engine.begin() as conn:
                        await conn.execute(text(sql))
            report = await averify.verify(node.audit_db, [node.signer.verifier])
            assert (report.ok, report.archived, report.records, report.findings) == (True, 10, 1, [])
    finally:
        await owner.close()


# -- the URL forms ------------------------------------------------------------------------------------------


async def _connect(url: str) -> None:
    db = Database(url)
    try:
        async with db.engine.connect() as conn:
            assert (await conn.execute(text("SELECT current_user"))).scalar_one() == url.split("//")[1].split("@")[0]
    finally:
        await db.close()


async def test_verify_full_with_a_client_certificate_connects(
    server: Server, configured: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in server.client_env().items():
        monkeypatch.setenv(name, value)
    await _connect(server.tls_url("mssgw", "mssgw"))
    await _connect(server.tls_url("mssgw_audit", "mssgw_audit"))


async def test_libpq_s_sslmode_is_refused_by_asyncpg(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in server.client_env().items():
        monkeypatch.setenv(name, value)
    with pytest.raises(TypeError, match="unexpected keyword argument 'sslmode'"):
        await _connect(server.tls_url("mssgw", "mssgw", query="sslmode=verify-full"))
    with pytest.raises(TypeError, match="unexpected keyword argument 'sslrootcert'"):
        await _connect(server.tls_url("mssgw", "mssgw", query=f"ssl=verify-full&sslrootcert={server.tls / 'root.crt'}"))


async def test_verify_full_checks_the_server_s_name(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in server.client_env().items():
        monkeypatch.setenv(name, value)
    with pytest.raises(Exception, match=re.escape("IP address mismatch, certificate is not valid for '127.0.0.1'")):
        await _connect(server.tls_url("mssgw", "mssgw", host="127.0.0.1"))


async def test_without_a_client_certificate_the_node_role_is_refused(
    server: Server, configured: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PGSSLROOTCERT", server.client_env()["PGSSLROOTCERT"])
    monkeypatch.delenv("PGSSLCERT", raising=False)
    monkeypatch.delenv("PGSSLKEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.postgresql/postgresql.crt either
    with pytest.raises(Exception, match="connection requires a valid client certificate"):
        await _connect(server.tls_url("mssgw", "mssgw"))


def test_dump_and_restore_as_the_page_says(server: Server, configured: Path, tmp_path: Path) -> None:
    """pg_dump -Fc of each database; into new empty databases (the page's first block without the roles, which
    exist), pg_restore --no-owner --role=<owner>; the audit grants; the node then finds its data and its audit
    log intact."""
    c = server.cluster
    conn = ["-h", str(c.socket_dir), "-p", str(c.port), "-U", "postgres"]
    code, before, err = node_cli(server, configured, "mailbox", "list", "--json")
    assert code == 0, err
    for db in ("mssgw", "mssgw_audit"):
        subprocess.run(
            [str(c.bindir / "pg_dump"), *conn, "-Fc", "-f", str(tmp_path / f"{db}.dump"), db], check=True, timeout=60
        )
    c.psql("DROP DATABASE mssgw WITH (FORCE)")
    c.psql("DROP DATABASE mssgw_audit WITH (FORCE)")
    first = "\n".join(line for line in blocks("sql")[0].splitlines() if not line.startswith("CREATE ROLE"))
    server.psql_script(first)
    for db, owner in (("mssgw", "mssgw_owner"), ("mssgw_audit", "mssgw_audit_owner")):
        subprocess.run(
            [
                str(c.bindir / "pg_restore"),
                *conn,
                "--no-owner",
                f"--role={owner}",
                "-d",
                db,
                str(tmp_path / f"{db}.dump"),
            ],
            check=True,
            timeout=60,
        )
    server.psql_script(blocks("sql")[1])
    code, after, err = node_cli(server, configured, "mailbox", "list", "--json")
    assert code == 0, err
    assert json.loads(after) == json.loads(before)
    code, out, err = node_cli(server, configured, "audit", "verify")
    assert code == 0, err
    assert out.strip().endswith("audit log intact")
