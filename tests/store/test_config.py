"""Configuration: the TOML file, environment overrides, relative paths, the rendered template."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from gateway.config import CONFIG_FILENAME, load_config, render_config
from gateway.errors import ConfigError

KEK_B64 = base64.b64encode(b"K" * 32).decode()
MINIMAL = '[node]\ndomain = "CH-Test.MSSante.fr."\n'


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MSSGW_<SECTION>__ variable of the caller's environment leaks into these tests."""
    for name in list(os.environ):
        if (name.startswith("MSSGW_") and "__" in name) or name == "MSSGW_CONFIG":
            monkeypatch.delenv(name)


def _write(directory: Path, text: str, name: str = CONFIG_FILENAME) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


def test_defaults_and_normalised_domain(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path / "node", MINIMAL))
    assert cfg.node.domain == "ch-test.mssante.fr"
    assert cfg.node.patient == "patient.ch-test.mssante.fr"
    assert cfg.node.local_domains == ["ch-test.mssante.fr", "patient.ch-test.mssante.fr"]
    assert (cfg.node.name, cfg.listen.host, cfg.listen.https_port) == ("node1", "127.0.0.1", 8443)
    assert (cfg.store.url, cfg.store.kek, cfg.store.kek_file) == ("sqlite+aiosqlite:///mssgw.db", None, None)
    assert cfg.base_dir == (tmp_path / "node").resolve()


def test_relative_paths_resolve_against_the_config_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node = tmp_path / "node"
    _write(
        node,
        MINIMAL + '[store]\nkek_file = "../keys/kek"\naudit_url = "sqlite+aiosqlite:///db/audit.db"\n'
        '[pki]\ndir = "pki"\n[audit]\ncheckpoint_key = "/etc/mssgw/audit.pem"\n',
    )
    monkeypatch.chdir(tmp_path)  # the working directory plays no part
    cfg = load_config(Path("node") / CONFIG_FILENAME)
    assert cfg.base_dir == node.resolve()
    assert cfg.store.kek_file == Path("../keys/kek")
    assert cfg.path(cfg.store.kek_file) == (tmp_path / "keys" / "kek").resolve()
    assert cfg.pki_dir == (node / "pki").resolve()
    assert cfg.path(cfg.pki.cert) == (node / "tls" / "fullchain.pem").resolve()
    assert cfg.path(cfg.audit.checkpoint_key) == Path("/etc/mssgw/audit.pem")
    assert cfg.db_url(cfg.store.url) == f"sqlite+aiosqlite:///{node.resolve()}/mssgw.db"
    assert cfg.db_url(cfg.store.audit_url) == f"sqlite+aiosqlite:///{node.resolve()}/db/audit.db"
    for url in ("sqlite+aiosqlite:////var/lib/mssgw/a.db", "sqlite+aiosqlite:///:memory:", "postgresql+asyncpg://u@/d"):
        assert cfg.db_url(url) == url
    # A directory stands for the mssgw.toml inside it.
    assert load_config(node).base_dir == node.resolve()


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ("", None),  # an external PKI naming no CRL source: nothing to check against
        ('[pki]\ndir = "pki"\n', "pki/crl"),
        ('[pki]\ndir = "pki"\n[smime]\ncrl_urls = ["http://crl.example/ac.crl"]\n', "crl-cache"),
        ('[pki]\ndir = "pki"\n[smime]\ncrl_urls = ["http://crl.example/ac.crl"]\ncrl_dir = "crls"\n', "crls"),
    ],
)
def test_one_crl_directory_for_smime_and_tls(tmp_path: Path, settings: str, expected: str | None) -> None:
    cfg = load_config(_write(tmp_path / "node", MINIMAL + settings))
    assert cfg.crl_dir == (None if expected is None else (tmp_path / "node" / expected).resolve())


def test_environment_overrides_beat_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(
        tmp_path,
        MINIMAL + '[store]\nurl = "sqlite+aiosqlite:///file.db"\naudit_url = "sqlite+aiosqlite:///audit-file.db"\n'
        '[listen]\nhttps_port = 8444\nhost = "127.0.0.2"\n',
    )
    assert load_config(path).listen.https_port == 8444
    monkeypatch.setenv("MSSGW_LISTEN__HTTPS_PORT", "9999")
    monkeypatch.setenv("MSSGW_STORE__URL", "postgresql+asyncpg://mssgw@/mssgw?host=/run/postgresql")
    monkeypatch.setenv("MSSGW_REQUIRE_POSTGRES", "1")  # other MSSGW_ variables are not settings
    cfg = load_config(path)
    assert cfg.listen.https_port == 9999
    assert cfg.store.url == "postgresql+asyncpg://mssgw@/mssgw?host=/run/postgresql"
    # The rest of each section still comes from the file.
    assert cfg.listen.host == "127.0.0.2"
    assert cfg.store.audit_url == "sqlite+aiosqlite:///audit-file.db"
    # Explicit keyword overrides beat the environment.
    assert load_config(path, listen={"https_port": 0}).listen.https_port == 0


def test_config_file_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "elsewhere", MINIMAL.replace("CH-Test", "other"))
    monkeypatch.setenv("MSSGW_CONFIG", str(path))
    assert load_config().node.domain == "other.mssante.fr"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (MINIMAL + 'colour = "red"\n', "node.colour: Extra inputs are not permitted"),
        (MINIMAL + "[bogus]\na = 1\n", "bogus: Extra inputs are not permitted"),
        (MINIMAL + '[store]\nkek_flie = "k"\n', "store.kek_flie: Extra inputs are not permitted"),
        (MINIMAL + "[listen]\nhttps_port = 70000\n", "listen.https_port: Input should be less than or equal to 65535"),
        (MINIMAL + "[audit]\ncheckpoint_interval = 0\n", "audit.checkpoint_interval: Input should be greater than 0"),
        (
            # Domain brief §8: the trace stays online six months at least.
            MINIMAL + "[audit]\nkeep_online = '182d'\n",
            "audit.keep_online: Value error, keep_online 182d is shorter than six months (183d at least)",
        ),
        ("[node]\nname = 'n'\n", "node.domain: Field required"),
        (
            MINIMAL + "[retention]\ninactive_after = '400d'\n",
            "retention: Value error, inactive_after 400d is longer than a year (365d at most)",
        ),
        (
            MINIMAL + "[retention]\ninactive_after = '30d'\nwarn_before = '30d'\n",
            "retention: Value error, warn_before 30d must be shorter than inactive_after 30d by more than 3 days (the "
            "daily runs' slack)",
        ),
        (
            MINIMAL + "[retention]\nwarn_before = '1 month'\n",
            "retention.warn_before: Value error, interval '1 month' is not a whole number followed by a unit "
            "(s, m, h or d), e.g. 90m rather than 1.5h",
        ),
        (
            MINIMAL.replace("CH-Test", "CH_Test"),
            "node.domain: Value error, the domain label 'ch_test' is not letters, digits and inner hyphens (1 to 63)",
        ),
        (
            MINIMAL + "extra_domains = ['localhost']\n",
            "node.extra_domains: Value error, the domain 'localhost' has a single label",
        ),
        (
            # Patient mailboxes are <INS>@patient.<domain>: the exchange rules know patients by that shape.
            MINIMAL + "patient_domain = 'mes-patients.ch-test.mssante.fr'\n",
            "node.patient_domain: Value error, the domain 'mes-patients.ch-test.mssante.fr' does not begin with "
            "the label 'patient'",
        ),
        (
            MINIMAL + "[smtp]\nhostname = 'mx_1.ch-test.mssante.fr'\n",
            "smtp.hostname: Value error, the domain label 'mx_1' is not letters, digits and inner hyphens (1 to 63)",
        ),
        ("", "node: Field required"),
        ("[node\n", "Expected ']' at the end of a table declaration (at line 1, column 6)"),
    ],
)
def test_invalid_files_are_refused_precisely(tmp_path: Path, text: str, reason: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    # Settings errors may come from the file or the environment; a TOML syntax error only from the file.
    source = (
        f"{path.resolve()}"
        if reason.startswith("Expected")
        else f"{path.resolve()} (or an MSSGW_* environment variable)"
    )
    assert str(exc.value) == f"{source}: {reason}"


def test_unknown_environment_setting_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, MINIMAL)
    monkeypatch.setenv("MSSGW_LISTEN__HTTPS_PROT", "1")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value) == (
        f"{path.resolve()} (or an MSSGW_* environment variable): listen.https_prot: Extra inputs are not permitted"
    )


def test_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as exc:
        load_config(missing)
    assert str(exc.value) == f"no configuration file at {missing} (run `mssgw init` or pass -c FILE)"
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path)  # a directory without mssgw.toml
    assert str(exc.value) == f"no configuration file at {tmp_path / CONFIG_FILENAME} (run `mssgw init` or pass -c FILE)"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as exc:
        load_config()
    assert str(exc.value) == "no configuration file at mssgw.toml (run `mssgw init` or pass -c FILE)"


@pytest.mark.parametrize("pki", [True, False])
def test_render_config_round_trips(tmp_path: Path, pki: bool) -> None:
    odd = tmp_path / 'clés "secrètes" \\ ici'
    text = render_config(
        domain="ch-exemple.mssante.fr",
        node_name="nœud-2",
        kek_file=odd / "kek",
        checkpoint_key=odd / "audit.pem",
        pki_dir=tmp_path / "pki" if pki else None,
        trust_anchor="pki/root/cert.pem",
        host="::1",
        https_port=8765,
        crl_base_url='https://crl.ch-exemple.mssante.fr/crl?x=1&y="2"',
    )
    cfg = load_config(_write(tmp_path / "node", text))
    assert cfg.node.domain == "ch-exemple.mssante.fr"
    assert cfg.node.name == "nœud-2"
    assert (cfg.node.extra_domains, cfg.node.patient_domain) == ([], "")
    assert cfg.store.kek_file == odd / "kek"
    assert cfg.audit.checkpoint_key == odd / "audit.pem"
    assert cfg.audit.checkpoint_interval == 300.0
    assert cfg.audit.log_file is None
    assert cfg.pki.dir == (tmp_path / "pki" if pki else None)
    assert cfg.pki.trust_anchor == Path("pki/root/cert.pem")
    assert (cfg.pki.cert, cfg.pki.key) == (Path("tls/fullchain.pem"), Path("tls/key.pem"))
    assert cfg.pki.crl_base_url == 'https://crl.ch-exemple.mssante.fr/crl?x=1&y="2"'
    assert (cfg.listen.host, cfg.listen.https_port) == ("::1", 8765)
    assert (cfg.store.url, cfg.store.audit_url) == ("sqlite+aiosqlite:///mssgw.db", "sqlite+aiosqlite:///audit.db")
    assert cfg.store.kek is None
    assert "MSSGW_STORE__KEK" in text


def test_kek_is_a_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, MINIMAL)
    monkeypatch.setenv("MSSGW_STORE__KEK", KEK_B64)
    cfg = load_config(path)
    assert cfg.store.kek is not None
    assert cfg.store.kek.get_secret_value() == KEK_B64
    for shown in (repr(cfg), str(cfg), repr(cfg.store), str(cfg.store), cfg.model_dump_json(), str(cfg.model_dump())):
        assert KEK_B64 not in shown
    assert "kek=SecretStr('**********')" in repr(cfg.store)
