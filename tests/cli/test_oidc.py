"""`mssgw oidc check`: the provider's keys as the node gets them (over HTTPS from a test provider on loopback),
and a token judged as a login would judge it, without logging in; the token itself never printed nor audited."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.auth.idp import AUDIENCE, ISSUER, Idp, serve_jwks
from tests.conftest import NodeDir, copy_node
from tests.smtp.conftest import DOCTOR, NURSE, provision

CLAIRE = "810000000009"


@pytest.fixture(scope="module")
def idp() -> Idp:
    return Idp()


@pytest.fixture(scope="module")
def node(template_node: NodeDir, tmp_path_factory: pytest.TempPathFactory) -> NodeDir:
    node = copy_node(template_node, tmp_path_factory.mktemp("oidc-cli") / "node")
    provision(node)
    return node


@pytest.fixture(scope="module")
def env(node: NodeDir, idp: Idp) -> Iterator[dict[str, str]]:
    with serve_jwks(idp, node.data) as (uri, ca):
        yield {
            "MSSGW_OIDC__ISSUER": ISSUER,
            "MSSGW_OIDC__JWKS": uri,
            "MSSGW_OIDC__AUDIENCE": AUDIENCE,
            "MSSGW_OIDC__CA_FILE": str(ca),
        }


def test_keys_listed(node: NodeDir, env: dict[str, str]) -> None:
    r = node.cli("oidc", "check", "--json", env=env)
    assert r.code == 0, r.err
    assert r.json()["keys"] == [  # type: ignore[index]
        {"kid": "rsa-1", "kty": "RSA", "alg": "RS256"},
        {"kid": "ec-1", "kty": "EC", "alg": "ES256"},
    ]
    text = node.cli("oidc", "check", env=env)
    assert text.out.splitlines()[:2] == [f"issuer {ISSUER}", f"keys from {env['MSSGW_OIDC__JWKS']}: 2"]


def test_a_token_judged_without_logging_in(node: NodeDir, env: dict[str, str], idp: Idp) -> None:
    token = idp.token(CLAIRE, jti="cli-1")
    r = node.cli("oidc", "check", "--token-stdin", "--user", DOCTOR, "--json", input=token + "\n", env=env)
    assert r.code == 0, r.err
    assert r.json()["token"] == {  # type: ignore[index]
        "result": "ok",
        "mailbox": DOCTOR,
        "reason": None,
        "idnat": CLAIRE,
        "jti": "cli-1",
    }
    assert node.cli("mailbox", "show", DOCTOR, "--json").json()["last_login_at"] is None  # type: ignore[index]
    r = node.cli("oidc", "check", "--token-stdin", "--user", NURSE, input=token + "\n", env=env)
    assert r.code == 1
    assert r.out.splitlines()[-1] == f"token ({CLAIRE}): refused: not-the-owner"
    r = node.cli("oidc", "check", "--token-stdin", input=idp.token(age=4000) + "\n", env=env)
    assert (r.code, r.out.splitlines()[-1]) == (1, "token (not verified): refused: token-expired")
    records = node.cli("audit", "search", "--event", "admin.oidc.checked", "--json").json()
    assert [rec["response"].get("reason") for rec in records] == [None, None, None, "not-the-owner", "token-expired"]  # type: ignore[index]
    for part in token.split("."):
        assert part not in str(records) + r.out + r.err


def test_without_a_provider_or_reachable_keys(node: NodeDir, env: dict[str, str]) -> None:
    r = node.cli("oidc", "check")
    assert (r.code, r.err.strip()) == (2, "mssgw: no identity provider: [oidc] issuer is empty")
    gone = {**env, "MSSGW_OIDC__JWKS": "https://127.0.0.1:9/certs"}  # nothing listens there
    r = node.cli("oidc", "check", "--json", env=gone)
    assert r.code == 1
    assert r.json()["keys"] == []  # type: ignore[index]
    assert r.json()["error"].startswith("ClientConnectorError")  # type: ignore[index]
