"""`mssgw init`, driven as a subprocess."""

from __future__ import annotations

import stat
import subprocess
import tomllib
from pathlib import Path

from tests.conftest import DOMAIN, NodeDir, run_cli


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_init_writes_config_keys_pki_and_databases(template_node: NodeDir) -> None:
    data, keys = template_node.data, template_node.keys
    cfg = tomllib.loads(template_node.config.read_text())
    assert cfg["node"]["domain"] == DOMAIN
    assert cfg["store"]["url"] == "sqlite+aiosqlite:///mssgw.db"
    assert cfg["store"]["audit_url"] == "sqlite+aiosqlite:///audit.db"
    assert cfg["store"]["kek_file"] == str(keys / "kek.key")
    assert cfg["audit"]["checkpoint_key"] == str(keys / "audit-checkpoint.pem")
    assert cfg["pki"]["dir"] == "pki"
    assert cfg["listen"] == {
        "host": "127.0.0.1",
        "https_port": 0,
        "submission_port": 0,
        "submissions_port": 0,
        "relay_port": 0,
        "imap_port": 0,
        "imaps_port": 0,
        "proxy_from": [],  # no load balancer until the operator names one
    }
    assert cfg["imap"]["idle_check"] == 1.0
    # Commented: every section explains itself.
    assert "# Every setting can be overridden by an environment variable" in template_node.config.read_text()
    assert mode(data) == 0o700
    assert mode(keys / "kek.key") == 0o600
    assert mode(keys / "audit-checkpoint.pem") == 0o600
    assert mode(data / "tls" / "key.pem") == 0o600
    assert (data / "mssgw.db").is_file()
    assert (data / "audit.db").is_file()
    assert keys.parent == data.parent  # keys live beside, never inside, the data directory


def test_node_certificate_chains_to_the_root_with_openssl(template_node: NodeDir) -> None:
    tls = template_node.data / "tls"
    out = subprocess.run(
        [
            "openssl",
            "verify",
            "-purpose",
            "sslserver",
            "-CAfile",
            template_node.data / "pki-root.pem",
            "-untrusted",
            tls / "chain.pem",
            tls / "cert.pem",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{tls / 'cert.pem'}: OK"
    san = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", tls / "cert.pem"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # The patient domain too: peers accept a patient's reply only from a domain our certificate names.
    assert f"DNS:{DOMAIN}, DNS:patient.{DOMAIN}, DNS:mail.{DOMAIN}, DNS:localhost, IP Address:127.0.0.1" in san


def test_init_is_audited(node: NodeDir) -> None:
    r = node.cli("audit", "search", "--event", "admin.", "--json")
    assert r.code == 0, r.err
    actions = [rec["action"] for rec in r.json()]  # type: ignore[union-attr]
    assert actions[:3] == ["admin.node.initialised", "admin.pki.initialised", "admin.pki.issued"]
    verify = node.cli("audit", "verify")
    assert verify.code == 0, verify.out + verify.err
    assert verify.out.strip().endswith("audit log intact")


def test_init_refuses_an_existing_node(node: NodeDir, tmp_path: Path) -> None:
    r = run_cli("init", "--domain", DOMAIN, "--data", node.data, "--secrets", tmp_path / "k2")
    assert r.code == 2
    assert r.err.strip() == f"mssgw: {node.config} already exists: this data directory holds a node"


def test_init_refuses_keys_inside_the_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "n"
    r = run_cli("init", "--domain", DOMAIN, "--data", data, "--secrets", data / "keys")
    assert r.code == 2
    assert r.err.strip() == (f"mssgw: the secrets directory {data / 'keys'} must be outside the data directory {data}")
    assert not (data / "mssgw.toml").exists()


def test_init_refuses_an_invalid_domain(tmp_path: Path) -> None:
    r = run_cli("init", "--domain", "bad_domain.fr", "--data", tmp_path / "n", "--secrets", tmp_path / "k")
    assert r.code == 2
    assert r.err.strip() == (
        "mssgw: invalid domain 'bad_domain.fr': the domain label 'bad_domain' is not letters, digits and "
        "inner hyphens (1 to 63)"
    )


def test_commands_without_a_config_say_so(tmp_path: Path) -> None:
    r = run_cli("mailbox", "list", "-c", tmp_path / "none.toml")
    assert r.code == 2
    assert (
        r.err.strip() == f"mssgw: no configuration file at {tmp_path / 'none.toml'} (run `mssgw init` or pass -c FILE)"
    )


def test_a_kek_readable_by_others_is_refused(node: NodeDir, tmp_path: Path) -> None:
    kek = tmp_path / "loose.key"
    kek.write_text((node.keys / "kek.key").read_text())
    kek.chmod(0o644)
    r = node.cli("mailbox", "add", f"a@{DOMAIN}", "--type", "ORG", env={"MSSGW_STORE__KEK_FILE": str(kek)})
    assert r.code == 2
    assert r.err.strip() == f"mssgw: key file {kek} is readable by others (mode 644); chmod 600 it"
