"""SMTP submission with the identity provider's access tokens: AUTH XOAUTH2 and OAUTHBEARER (RFC 7628 §4.3,
RFC 4954), on a node whose [oidc] names a test provider serving its keys over HTTPS on loopback."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest

from tests.auth.idp import Idp, token_gateway
from tests.conftest import NodeDir, copy_node
from tests.smtp.conftest import DOCTOR, NURSE, SECRETARIAT, Gateway, provision
from tests.smtp.test_patients import audit
from tests.smtp.test_submission import message

CLAIRE, LUCAS = "810000000009", "810000000017"  # DOCTOR's and NURSE's IdNatPS (provision)


@pytest.fixture(scope="module")
def idp() -> Idp:
    return Idp()


@pytest.fixture(scope="module")
def gw(template_node: NodeDir, tmp_path_factory: pytest.TempPathFactory, idp: Idp) -> Iterator[Gateway]:
    node = copy_node(template_node, tmp_path_factory.mktemp("bearer") / "node")
    provision(node)
    with token_gateway(node, idp) as gw:
        yield gw


def xoauth2(user: str, token: str) -> str:
    return base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode()


def oauthbearer(user: str | None, token: str) -> str:
    authzid = f"a={user}" if user else ""
    return base64.b64encode(f"n,{authzid},\x01auth=Bearer {token}\x01\x01".encode()).decode()


def test_offered_after_tls_only_when_a_provider_is_named(gw: Gateway, gateway: Gateway) -> None:
    client = gw.submission(starttls=False, login=None)
    assert not client.has_extn("auth")  # RFC 4954 §4: no AUTH before TLS
    client.starttls(context=gw.tls())
    client.ehlo("client.example")
    assert client.esmtp_features["auth"].split() == ["LOGIN", "OAUTHBEARER", "PLAIN", "XOAUTH2"]
    client.quit()
    plain = gateway.submission(login=None)  # a node without [oidc]: neither offered nor taken
    assert plain.esmtp_features["auth"].split() == ["LOGIN", "PLAIN"]
    assert plain.docmd("AUTH", "XOAUTH2 " + xoauth2(DOCTOR, "abc")) == (504, b"5.5.4 Unrecognized authentication type")
    plain.quit()


def test_xoauth2_logs_in_and_sends_as_the_token_owner(gw: Gateway, idp: Idp) -> None:
    token = idp.token(CLAIRE, jti="send-1")
    client = gw.submission(login=None)
    assert client.docmd("AUTH", "XOAUTH2 " + xoauth2(DOCTOR, token)) == (235, b"2.7.0 Authentication successful")
    assert client.sendmail(DOCTOR, [NURSE], message(DOCTOR, NURSE, "Compte rendu")) == {}
    # The token authenticated Claire: she cannot send as Lucas; her ORG delegation still holds.
    assert client.docmd("MAIL", f"FROM:<{NURSE}>") == (550, f"5.7.1 {DOCTOR} may not send as {NURSE}".encode())
    assert client.docmd("RSET") == (250, b"2.0.0 OK")
    assert client.sendmail(SECRETARIAT, [NURSE], message(SECRETARIAT, NURSE, "Pour le service")) == {}
    client.quit()
    done = [e for e in audit(gw, "smtp.auth.succeeded") if e["response"].get("jti") == "send-1"]
    assert [(e["principal"], e["response"]) for e in done] == [
        (DOCTOR, {"result": "done", "mechanism": "XOAUTH2", "idnat": CLAIRE, "jti": "send-1"})
    ]


def test_oauthbearer_with_and_without_initial_response(gw: Gateway, idp: Idp) -> None:
    client = gw.submission(login=None)
    assert client.docmd("AUTH", "OAUTHBEARER " + oauthbearer(NURSE, idp.token(LUCAS))) == (
        235,
        b"2.7.0 Authentication successful",
    )
    client.quit()
    client = gw.submission(login=None)
    assert client.docmd("AUTH", "OAUTHBEARER") == (334, b"")
    # No a=: the professional's only mailbox. A token with large claims: an AUTH line far past 1,001 octets.
    big = idp.token(LUCAS, roles=["x" * 40] * 60)
    assert len(big) > 3000
    assert client.docmd(oauthbearer(None, big)) == (235, b"2.7.0 Authentication successful")
    assert client.sendmail(NURSE, [DOCTOR], message(NURSE, DOCTOR, "Retour")) == {}
    client.quit()
    # Lucas's token with Claire's identifier put in, the signature kept: refused as forged.
    head, body, signature = big.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged = base64.urlsafe_b64encode(json.dumps({**claims, "preferred_username": CLAIRE}).encode()).rstrip(b"=")
    client = gw.submission(login=None)
    assert client.docmd("AUTH", "XOAUTH2 " + xoauth2(DOCTOR, f"{head}.{forged.decode()}.{signature}"))[0] == 334
    assert client.docmd("") == (535, b"5.7.8 Authentication credentials invalid")
    client.quit()
    failed = [e["response"] for e in audit(gw, "smtp.auth.failed") if e["response"].get("reason") == "bad-signature"]
    assert [(r["mechanism"], r["login"]) for r in failed] == [("XOAUTH2", DOCTOR)]


@pytest.mark.parametrize(
    ("user", "changes", "reason"),
    [
        (DOCTOR, {"age": 4000}, "token-expired"),
        (DOCTOR, {"identifier": LUCAS}, "not-the-owner"),  # a good token of another professional
        (DOCTOR, {"azp": "another-client", "aud": "account"}, "wrong-audience"),
        (SECRETARIAT, {}, "not-a-personal-mailbox"),
    ],
)
def test_refused_token_gets_the_error_challenge_then_535(
    gw: Gateway, idp: Idp, user: str, changes: dict[str, object], reason: str
) -> None:
    jti = f"refused-{reason}"
    token = idp.token(jti=jti, **changes)  # type: ignore[arg-type]
    for mechanism, response in (("OAUTHBEARER", oauthbearer(user, token)), ("XOAUTH2", xoauth2(user, token))):
        client = gw.submission(login=None)
        code, challenge = client.docmd("AUTH", f"{mechanism} {response}")
        assert code == 334
        error = json.loads(base64.b64decode(challenge))
        if mechanism == "OAUTHBEARER":  # RFC 7628 §3.2.2: the client learns to get a new token, not why
            assert error == {
                "status": "invalid_token",
                "scope": "openid",
                "openid-configuration": "https://auth.esante.test/auth/realms/esante-wallet/.well-known/openid-configuration",
            }
        else:
            assert error == {"status": "401", "schemes": "bearer", "scope": "openid"}
        assert client.docmd("AQ==") == (535, b"5.7.8 Authentication credentials invalid")  # §3.2.3: %x01
        assert client.docmd("MAIL", f"FROM:<{DOCTOR}>") == (530, b"5.7.0 Authentication required")
        client.quit()
    failed = [e["response"] for e in audit(gw, "smtp.auth.failed") if e["response"].get("reason") == reason]
    assert [(r["mechanism"], r["login"]) for r in failed] == [("OAUTHBEARER", user), ("XOAUTH2", user)]


def test_malformed_messages_and_lines(gw: Gateway, idp: Idp) -> None:
    client = gw.submission(login=None)
    bad = base64.b64encode(b"user=x\x01auth=Basic abc\x01\x01").decode()
    assert client.docmd("AUTH", "XOAUTH2 " + bad) == (501, b"5.5.2 Malformed XOAUTH2 response")
    channel = base64.b64encode(b"p=tls-unique,,\x01auth=Bearer abc\x01\x01").decode()
    assert client.docmd("AUTH", "OAUTHBEARER " + channel) == (501, b"5.5.2 Malformed OAUTHBEARER response")
    assert client.docmd("AUTH", "OAUTHBEARER not-base64!") == (501, b"5.5.2 Can't decode base64")
    assert client.docmd("AUTH", "XOAUTH2 " + "A" * 12300) == (500, b"5.5.2 Command line too long")  # RFC 4954 §4
    assert client.docmd("AUTH", "OAUTHBEARER") == (334, b"")
    assert client.docmd("*") == (501, b"5.7.0 Auth aborted")
    assert client.docmd("NOOP") == (250, b"2.0.0 OK")
    client.quit()
    reasons = [e["response"].get("reason", "") for e in audit(gw, "smtp.auth.failed")]
    assert "malformed: the auth pair is not Bearer and a token" in reasons
    assert "malformed: channel binding is not supported by OAUTHBEARER" in reasons


def test_tokens_are_never_logged_nor_audited(gw: Gateway, idp: Idp) -> None:
    token = idp.token(CLAIRE, jti="secret-check")
    for user in (DOCTOR, NURSE):  # one accepted, one refused
        client = gw.submission(login=None)
        code, _ = client.docmd("AUTH", "XOAUTH2 " + xoauth2(user, token))
        if code == 334:
            client.docmd("")
        client.quit()
    records = [e for e in audit(gw, "smtp.auth.succeeded") + audit(gw, "smtp.auth.failed")]
    assert [e["response"]["idnat"] for e in records if e["response"].get("jti") == "secret-check"] == [CLAIRE] * 2
    stored = gw.running.stderr_path.read_bytes() + str(records).encode()
    for name in ("audit.db", "audit.db-wal", "mssgw.db", "mssgw.db-wal"):
        if (gw.node.data / name).exists():
            stored += (gw.node.data / name).read_bytes()
    for part in token.split("."):  # neither the token nor any part of it, anywhere
        assert part.encode() not in stored


def test_a_login_on_a_mailbox_gone_since(gw: Gateway, idp: Idp, tmp_path_factory: pytest.TempPathFactory) -> None:
    assert gw.node.cli("mailbox", "disable", NURSE).code == 0
    try:
        client = gw.submission(login=None)
        code, _ = client.docmd("AUTH", "OAUTHBEARER " + oauthbearer(NURSE, idp.token(LUCAS, jti="gone")))
        assert code == 334
        assert client.docmd("AQ==") == (535, b"5.7.8 Authentication credentials invalid")
        client.quit()
    finally:
        assert gw.node.cli("mailbox", "enable", NURSE).code == 0
    failed = [e["response"] for e in audit(gw, "smtp.auth.failed") if e["response"].get("jti") == "gone"]
    assert [r["reason"] for r in failed] == ["mailbox-disabled"]


def test_a_key_the_node_cannot_check_now_is_a_temporary_failure(gw: Gateway, idp: Idp) -> None:
    """A kid not in the set fetched less than a minute ago: 454 (RFC 4954 §6), not counted against anybody."""
    client = gw.submission(login=None)
    for _ in range(25):  # past [auth] lockout_wide_threshold (20), had they counted
        token = idp.token(kid="rotated-2", jti="later")
        assert client.docmd("AUTH", "XOAUTH2 " + xoauth2(DOCTOR, token)) == (
            454,
            b"4.7.0 Temporary authentication failure",
        )
    assert client.docmd("AUTH", "XOAUTH2 " + xoauth2(DOCTOR, idp.token())) == (235, b"2.7.0 Authentication successful")
    client.quit()
    failed = [e["response"] for e in audit(gw, "smtp.auth.failed") if e["response"].get("reason") == "keys-unavailable"]
    assert failed[0] == {"result": "failed", "mechanism": "XOAUTH2", "login": DOCTOR, "reason": "keys-unavailable"}
    assert len(failed) == 25


def test_one_record_for_a_refusal_the_client_cancels(gw: Gateway, idp: Idp) -> None:
    client = gw.submission(login=None)
    code, _ = client.docmd("AUTH", "XOAUTH2 " + xoauth2(NURSE, idp.token(CLAIRE, jti="cancelled")))
    assert code == 334
    assert client.docmd("*") == (501, b"5.7.0 Auth aborted")
    assert client.docmd("NOOP") == (250, b"2.0.0 OK")
    client.quit()
    mine = [e["response"] for e in audit(gw, "smtp.auth.failed") if e["response"].get("jti") == "cancelled"]
    assert [r["reason"] for r in mine] == ["not-the-owner"]
    aborted = [e for e in audit(gw, "smtp.auth.failed") if "Auth aborted" in str(e["response"].get("reply"))]
    assert aborted == [e for e in aborted if e["response"].get("command") != "XOAUTH2"]


def test_repeated_ehlo_does_not_stretch_mail_lines(gw: Gateway) -> None:
    client = gw.submission(login=None)
    for _ in range(30):
        client.ehlo("client.example")
    assert client.docmd("MAIL", "FROM:<" + "a" * 1000 + "@x.fr>") == (500, b"5.5.2 Command line too long")
    client.quit()
