"""Shared fixtures: real nodes made by `mssgw init`, the CLI run as a process of its own.

Creating a node generates four RSA keys (three CAs and the node's TLS key), so one template node is
made per test session with the real `mssgw init` command and each test gets its own copy of its data
directory. The copy shares the template's key directory (KEK and audit signing key), read-only.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.config import Config, load_config
from tests import cli_process
from tests.pg import REQUIRE_ENV, PostgresCluster, PostgresUnavailable, postgres_required

DOMAIN = "ch-test.mssante.fr"


@dataclass
class CLIResult:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


def run_cli(
    *args: str | Path, input: str | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> CLIResult:
    """Run `mssgw ARGS...` in a process of its own, as an operator would (tests/cli_process.py)."""
    code, out, err = cli_process.run(
        [str(a) for a in args],
        input=input,
        timeout=timeout,
        env={**os.environ, "MSSGW_OPERATOR": "tester@ci", **(env or {})},
    )
    return CLIResult(code, out, err)


@dataclass
class NodeDir:
    data: Path
    keys: Path

    @property
    def config(self) -> Path:
        return self.data / "mssgw.toml"

    def cfg(self) -> Config:
        return load_config(self.config)

    def cli(self, *args: str | Path, input: str | None = None, env: dict[str, str] | None = None) -> CLIResult:
        return run_cli(*args, "-c", self.config, input=input, env=env)


@pytest.fixture(scope="session")
def template_node(tmp_path_factory: pytest.TempPathFactory) -> NodeDir:
    base = tmp_path_factory.mktemp("template")
    data, keys = base / "node", base / "keys"
    result = run_cli(
        "init",
        "--domain",
        DOMAIN,
        "--data",
        data,
        "--secrets",
        keys,
        "--https-port",
        "0",
        "--submission-port",
        "0",
        "--submissions-port",
        "0",
        "--relay-port",
        "0",
        "--imap-port",
        "0",
        "--imaps-port",
        "0",
    )
    assert result.code == 0, result.err
    # Certificate discovery asks DNS last: in tests, a loopback port where no server listens (a test that
    # needs DNS starts its own and points the node at it), never the machine's resolver.
    cfg = data / "mssgw.toml"
    text = cfg.read_text()
    assert "dns_servers = []\ndns_port = 53\n" in text
    cfg.write_text(text.replace("dns_servers = []\ndns_port = 53\n", 'dns_servers = ["127.0.0.1"]\ndns_port = 9\n'))
    return NodeDir(data, keys)


def copy_node(template: NodeDir, data: Path) -> NodeDir:
    """A private copy of a node's data directory (databases, PKI, TLS material); keys are shared."""
    shutil.copytree(template.data, data, symlinks=True)
    cfg_text = (data / "mssgw.toml").read_text().replace(str(template.data), str(data))
    (data / "mssgw.toml").write_text(cfg_text)
    return NodeDir(data, template.keys)


@pytest.fixture
def node(template_node: NodeDir, tmp_path: Path) -> NodeDir:
    """A private copy of the template node."""
    return copy_node(template_node, tmp_path / "node")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """One PostgreSQL server for the whole session, stopped (and its files removed) at the end."""
    try:
        cluster = PostgresCluster.start()
    except PostgresUnavailable as exc:
        missing = str(exc)
    else:
        try:
            yield cluster
        finally:
            cluster.stop()
        return
    if postgres_required():
        pytest.fail(f"{missing} ({REQUIRE_ENV} is set: PostgreSQL is required)", pytrace=False)
    pytest.skip(f"{missing} (set {REQUIRE_ENV}=1 to make this a failure)")
