"""The example configurations in deploy/examples load with the node's own loader and say what their pages say."""

from __future__ import annotations

import os
from ipaddress import ip_network
from pathlib import Path

import pytest

from gateway.config import Config, ListenSection, load_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "deploy" / "examples"
DOMAIN = "ch-exemple.mssante.fr"


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """MSSGW_* variables override the files: none may leak in from the environment."""
    for name in list(os.environ):
        if name.startswith("MSSGW_"):
            monkeypatch.delenv(name)


def load(relative: str) -> Config:
    return load_config(EXAMPLES / relative)


def test_these_are_all_the_examples() -> None:
    found = sorted(p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.rglob("*.toml"))
    assert found == [
        "two-nodes/node1.toml",
        "two-nodes/node2.toml",
        "two-operators/ch-exemple.toml",
        "two-operators/clinique-exemple.toml",
    ]


@pytest.mark.parametrize(("name", "host"), [("node1", "10.0.0.21"), ("node2", "10.0.0.22")])
def test_two_nodes_of_one_operator(name: str, host: str) -> None:
    cfg = load(f"two-nodes/{name}.toml")
    assert cfg.node.name == name
    assert cfg.node.domain == DOMAIN
    assert cfg.node.local_domains == [DOMAIN, f"patient.{DOMAIN}"]
    # One PostgreSQL server over its Unix socket; the audit log in its own database and role.
    assert cfg.store.url == "postgresql+asyncpg://mssgw@/mssgw?host=/run/postgresql"
    assert cfg.store.audit_url == "postgresql+asyncpg://mssgw_audit@/mssgw_audit?host=/run/postgresql"
    assert cfg.db_url(cfg.store.url) == cfg.store.url  # not taken for a SQLite path
    assert cfg.store.kek is None
    assert cfg.store.kek_file == Path("/etc/mssgw/keys/kek.key")
    assert cfg.audit.checkpoint_key == Path("/etc/mssgw/keys/audit-checkpoint.pem")
    assert cfg.audit.log_file is None
    # An external trust-space PKI: no development PKI; the same certificates on both nodes.
    assert cfg.pki.dir is None
    assert cfg.pki_dir is None
    assert cfg.pki.trust_anchor == Path("/etc/mssgw/trust-space/root.pem")
    assert cfg.pki.cert == Path("/etc/mssgw/tls/fullchain.pem")
    assert cfg.pki.key == Path("/etc/mssgw/tls/key.pem")
    assert [(o.cert, o.key) for o in cfg.smime.organisation] == [
        (Path("/etc/mssgw/smime/domain/fullchain.pem"), Path("/etc/mssgw/smime/domain/key.pem"))
    ]
    assert cfg.smime.intermediates == [Path("/etc/mssgw/trust-space/intermediates.pem")]
    assert cfg.smime.crl_urls == [
        "http://crl.trust-space.example/root.crl",
        "http://crl.trust-space.example/organisations.crl",
    ]
    assert cfg.smime.published == [Path("/var/lib/mssgw/published")]
    # Its own address, the standard ports (deploy/haproxy.cfg's backends).
    assert cfg.listen.host == host
    ports = cfg.listen
    assert (ports.https_port, ports.submission_port, ports.submissions_port, ports.relay_port) == (443, 587, 465, 25)
    assert (ports.imap_port, ports.imaps_port) == (143, 993)
    assert cfg.smtp_hostname == f"mail.{DOMAIN}"
    assert cfg.web_url == f"https://messagerie.{DOMAIN}/"
    assert cfg.queue.lease == 900.0
    assert cfg.queue.routes == {}


@pytest.mark.parametrize("name", ["node1", "node2"])
def test_the_nodes_take_proxy_headers_from_the_two_balancers(name: str) -> None:
    assert "proxy_from" in ListenSection.model_fields
    listen = load(f"two-nodes/{name}.toml").listen
    assert listen.proxy_from == [ip_network("10.0.0.10/32"), ip_network("10.0.0.11/32")]
    assert listen.is_proxy("10.0.0.10")
    assert listen.is_proxy("10.0.0.11")
    assert listen.is_proxy("::ffff:10.0.0.11")
    assert not listen.is_proxy("10.0.0.12")
    assert not listen.is_proxy("10.0.0.21")  # the other node is no balancer


def test_the_two_nodes_differ_only_in_name_and_address() -> None:
    one = load("two-nodes/node1.toml").model_dump()
    two = load("two-nodes/node2.toml").model_dump()
    assert (one["node"].pop("name"), two["node"].pop("name")) == ("node1", "node2")
    assert (one["listen"].pop("host"), two["listen"].pop("host")) == ("10.0.0.21", "10.0.0.22")
    assert one == two


@pytest.mark.parametrize(
    ("name", "domain", "host", "other", "other_host"),
    [
        ("ch-exemple", DOMAIN, "192.0.2.25", "clinique-exemple.mssante.fr", "192.0.2.26"),
        ("clinique-exemple", "clinique-exemple.mssante.fr", "192.0.2.26", DOMAIN, "192.0.2.25"),
    ],
)
def test_two_operators_on_one_host(name: str, domain: str, host: str, other: str, other_host: str) -> None:
    cfg = load(f"two-operators/{name}.toml")
    own = Path("/etc/mssgw") / name
    assert cfg.node.name == name
    assert cfg.node.domain == domain
    assert cfg.node.local_domains == [domain, f"patient.{domain}"]
    # SQLite in its own data directory.
    assert cfg.store.url == "sqlite+aiosqlite:///mssgw.db"
    assert cfg.store.audit_url == "sqlite+aiosqlite:///audit.db"
    here = EXAMPLES / "two-operators"
    assert cfg.db_url(cfg.store.url) == f"sqlite+aiosqlite:///{here / 'mssgw.db'}"
    assert cfg.db_url(cfg.store.audit_url) == f"sqlite+aiosqlite:///{here / 'audit.db'}"
    # Its own keys, certificates and trust-space files.
    assert cfg.store.kek_file == own / "keys" / "kek.key"
    assert cfg.audit.checkpoint_key == own / "keys" / "audit-checkpoint.pem"
    assert cfg.pki.dir is None
    assert cfg.pki.trust_anchor == own / "trust-space" / "root.pem"
    assert cfg.pki.cert == own / "tls" / "fullchain.pem"
    assert cfg.pki.key == own / "tls" / "key.pem"
    assert [(o.cert, o.key) for o in cfg.smime.organisation] == [
        (own / "smime" / "domain" / "fullchain.pem", own / "smime" / "domain" / "key.pem")
    ]
    assert cfg.smime.intermediates == [own / "trust-space" / "intermediates.pem"]
    # Its own public address with the standard ports, no balancer.
    assert cfg.listen.host == host
    assert cfg.listen.relay_port == 25
    assert cfg.listen.proxy_from == []
    assert cfg.smtp_hostname == f"mail.{domain}"
    assert cfg.web_url == f"https://mail.{domain}/"
    # The other operator by a static route to its relay host, named as its certificate names it.
    assert cfg.queue.routes == {other: f"mail.{other}:25", f"patient.{other}": f"mail.{other}:25"}
    assert other_host != host


def test_the_two_operators_share_no_secret() -> None:
    a, b = load("two-operators/ch-exemple.toml"), load("two-operators/clinique-exemple.toml")
    secrets_a = {a.store.kek_file, a.audit.checkpoint_key, a.pki.key, *(o.key for o in a.smime.organisation)}
    secrets_b = {b.store.kek_file, b.audit.checkpoint_key, b.pki.key, *(o.key for o in b.smime.organisation)}
    assert len(secrets_a) == len(secrets_b) == 4
    assert not secrets_a & secrets_b
    assert a.node.name != b.node.name
