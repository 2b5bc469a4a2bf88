"""Bearer-token logins (gateway/auth/oidc.py): the token's checks, the provider's keys (a file, and its jwks_uri
over HTTPS on loopback), and the mailbox the token's professional may log in to."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import update

from gateway.auth import oidc
from gateway.auth.lockout import Lockout
from gateway.auth.oidc import Jwks, Refused, TokenLogin, TokenVerifier, parse_jwks
from gateway.config import Config, OidcSection
from gateway.store.crypto import KeyEncryptionKey
from gateway.store.db import Database
from gateway.store.mailboxes import MailboxRepository, Owner
from gateway.store.models import Professional
from tests.auth.idp import AUDIENCE, ISSUER, Idp, serve_jwks

DOMAIN = "ch-test.mssante.fr"
DOCTOR = f"claire.martin@{DOMAIN}"
CABINET = f"cabinet.martin@{DOMAIN}"
NURSE = f"lucas.bernard@{DOMAIN}"
ORG = f"secretariat@{DOMAIN}"
CLAIRE, LUCAS, NOBODY = "810000000009", "810000000017", "810000000025"


@pytest.fixture(scope="module")
def idp() -> Idp:
    return Idp()


def section(jwks: str, **changes: Any) -> OidcSection:
    return OidcSection(issuer=ISSUER, jwks=jwks, audience=AUDIENCE, **changes)


@pytest.fixture
def verifier(idp: Idp, tmp_path: Path) -> TokenVerifier:
    path = idp.write(tmp_path / "jwks.json")
    return TokenVerifier(section(str(path)), Jwks(str(path)))


async def refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(Refused) as caught:
        await verifier.verify(token)
    return caught.value.reason


async def test_a_good_token_gives_its_facts_never_itself(verifier: TokenVerifier, idp: Idp) -> None:
    token = idp.token()
    facts = await verifier.verify(token)
    assert (facts.issuer, facts.identifier, facts.token_id) == (ISSUER, CLAIRE, "c0ffee-1")
    assert token not in repr(facts)
    ec_facts = await verifier.verify(idp.token(alg="ES256", kid="ec-1"))
    assert ec_facts.identifier == CLAIRE


async def test_audience_in_aud_or_azp(verifier: TokenVerifier, idp: Idp) -> None:
    assert (await verifier.verify(idp.token(aud=[AUDIENCE, "account"], azp="other"))).identifier == CLAIRE
    assert (await verifier.verify(idp.token(aud=AUDIENCE, drop=("azp",)))).identifier == CLAIRE
    assert (await verifier.verify(idp.token(drop=("aud",)))).identifier == CLAIRE  # azp alone
    assert await refused(verifier, idp.token(aud="account", azp="another-client")) == "wrong-audience"
    assert await refused(verifier, idp.token(drop=("aud", "azp"))) == "wrong-audience"
    # Issued to us, but for another service: that service could replay it here. Never.
    assert await refused(verifier, idp.token(aud="other-api")) == "wrong-audience"
    assert await refused(verifier, idp.token(aud=["account", "other-api"])) == "wrong-audience"


@pytest.mark.parametrize("changes", [{"typ": "ID"}, {"nonce": "n-0S6"}, {"at_hash": "77QmUP"}, {"typ": "Refresh"}])
async def test_id_and_refresh_tokens_are_not_access_tokens(
    verifier: TokenVerifier, idp: Idp, changes: dict[str, str]
) -> None:
    assert await refused(verifier, idp.token(aud=AUDIENCE, **changes)) == "not-an-access-token"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"age": 400}, "token-expired"),  # 5 min lifetime, 400 s old: past exp and the 30 s leeway
        ({"nbf": 10**10}, "token-not-yet-valid"),
        ({"iat": 10**10, "exp": 10**10 + 300}, "token-not-yet-valid"),
        ({"iss": "https://auth.elsewhere.test/realms/x"}, "wrong-issuer"),
        ({"drop": ("exp",)}, "missing-claim"),
        ({"drop": ("iat",)}, "missing-claim"),
        ({"lifetime": 7201}, "token-lifetime"),  # over [oidc] max_lifetime (1h)
        ({"identifier": None}, "no-identifier"),
        ({"identifier": "810000000008"}, "no-identifier"),  # the RPPS's Luhn check digit is wrong
        ({"identifier": "10000000009"}, "no-identifier"),  # an RPPS without its 8 is no IdNatPS
        ({"identifier": " 810000000009"}, "no-identifier"),
        ({"identifier": ["810000000009"]}, "no-identifier"),
        ({"exp": "soon"}, "malformed-token"),
        ({"kid": "rsa-2"}, "unknown-key"),
    ],
)
async def test_refused_tokens(verifier: TokenVerifier, idp: Idp, changes: dict[str, Any], reason: str) -> None:
    assert await refused(verifier, idp.token(**changes)) == reason


async def test_forged_and_malformed_tokens(verifier: TokenVerifier, idp: Idp) -> None:
    other = rsa.generate_private_key(65537, 2048)
    assert await refused(verifier, idp.token(key=other)) == "bad-signature"
    header, body, sig = idp.token().split(".")
    claims = json.loads(jwt.utils.base64url_decode(body))
    claims["preferred_username"] = LUCAS  # another professional, the signature kept
    forged = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    assert await refused(verifier, f"{header}.{forged}.{sig}") == "bad-signature"
    assert await refused(verifier, "not.a.token") == "malformed-token"
    assert await refused(verifier, "") == "malformed-token"
    # alg none, and HS256 keyed with the provider's public key (the classic confusion): never taken
    unsigned = jwt.encode({"iss": ISSUER, "preferred_username": CLAIRE}, None, algorithm="none")
    assert await refused(verifier, unsigned) == "algorithm"
    public_pem = idp.rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    head = jwt.utils.base64url_encode(b'{"alg":"HS256","kid":"rsa-1","typ":"JWT"}')
    payload = jwt.utils.base64url_encode(json.dumps({"iss": ISSUER, "preferred_username": CLAIRE}).encode())
    mac = hmac.new(public_pem, head + b"." + payload, hashlib.sha256).digest()  # PyJWT will not write one
    confused = b".".join((head, payload, jwt.utils.base64url_encode(mac))).decode()
    assert await refused(verifier, confused) == "algorithm"
    # an ES256 header on the RSA key's kid: no key of that type by that name
    assert await refused(verifier, idp.token(alg="ES256", kid="rsa-1")) == "unknown-key"


async def test_a_key_bound_to_another_algorithm_or_no_kid(idp: Idp, tmp_path: Path) -> None:
    doc = idp.jwks()
    doc["keys"][0]["alg"] = "PS256"
    path = idp.write(tmp_path / "jwks.json", doc)
    verifier = TokenVerifier(section(str(path)), Jwks(str(path)))
    assert await refused(verifier, idp.token()) == "algorithm"  # RS256 with a key the set binds to PS256
    # No kid: taken only when one key of the set fits the algorithm (one RSA, one EC here).
    assert (await verifier.verify(idp.token(alg="ES256", kid=None))).identifier == CLAIRE
    doc["keys"].append({**idp.jwks()["keys"][1], "kid": "ec-2"})
    idp.write(path, doc)
    assert await refused(verifier, idp.token(alg="ES256", kid=None)) == "unknown-key"


def test_parse_jwks_keeps_signature_keys_only(idp: Idp) -> None:
    doc = idp.jwks()
    doc["keys"] += [
        {**doc["keys"][0], "kid": "enc-1", "use": "enc"},
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        {"kty": "nonsense", "kid": "x"},
        {**doc["keys"][0], "kid": "odd-alg", "alg": ["RS256"]},  # PyJWT raises TypeError on these two
        {**doc["keys"][0], "kid": "alg-none", "alg": "none"},
        {**doc["keys"][0], "kid": "hs", "alg": "HS256"},
        "not a key",
    ]
    assert [k.kid for k in parse_jwks(json.dumps(doc).encode())] == ["rsa-1", "ec-1"]
    for bad, reason in (
        (b"{", "not JSON"),
        (b"[]", "no keys array"),
        (b'{"keys": {}}', "no keys array"),
        (b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', "no usable signature key"),
    ):
        with pytest.raises(ValueError, match=reason):
            parse_jwks(bad)


async def test_a_file_is_read_again_when_it_changes(idp: Idp, tmp_path: Path) -> None:
    path = idp.write(tmp_path / "jwks.json", {"keys": [idp.jwks()["keys"][1]]})
    verifier = TokenVerifier(section(str(path)), Jwks(str(path)))
    assert await refused(verifier, idp.token()) == "unknown-key"
    idp.write(path)  # the operator installs the provider's new set
    assert (await verifier.verify(idp.token())).identifier == CLAIRE


async def test_the_jwks_uri_over_https(idp: Idp, tmp_path: Path) -> None:
    clock = [1000.0]
    with serve_jwks(idp, tmp_path) as (uri, ca):
        jwks = Jwks(uri, ca_file=ca, refresh=3600, clock=lambda: clock[0])
        verifier = TokenVerifier(section(uri, ca_file=ca), jwks)
        assert (await verifier.verify(idp.token())).identifier == CLAIRE
        assert (await verifier.verify(idp.token(alg="ES256", kid="ec-1"))).identifier == CLAIRE
        assert idp.fetches == 1  # kept for jwks_refresh
        # A kid not in the set fetches it again at once (the provider rotated its key), then not for a minute.
        rotated = rsa.generate_private_key(65537, 2048)
        idp.served["keys"].append(
            {**json.loads(jwt.get_algorithm_by_name("RS256").to_jwk(rotated.public_key())), "kid": "rsa-2"}
        )
        clock[0] += 120
        assert (await verifier.verify(idp.token(key=rotated, kid="rsa-2"))).identifier == CLAIRE
        assert idp.fetches == 2
        # Within the minute: not looked up again, and not judged either (the set may be about to change).
        assert await refused(verifier, idp.token(kid="rsa-3")) == "keys-unavailable"
        assert await refused(verifier, idp.token(kid="rsa-4")) == "keys-unavailable"
        assert idp.fetches == 2  # unknown kids cannot make the node hammer the provider
        clock[0] += 61
        assert await refused(verifier, idp.token(kid="rsa-3")) == "unknown-key"  # not in the set just fetched
        assert idp.fetches == 3
        # The provider down: the keys already known stay in use.
        clock[0] += 7200
        idp.served.clear()
        idp.served["keys"] = "broken"
        assert (await verifier.verify(idp.token())).identifier == CLAIRE
        assert idp.fetches == 4
        assert jwks.error == "ValueError: the key set has no keys array"
    # Not the provider's certificate: no keys at all, every token put off (a temporary failure).
    with serve_jwks(Idp(), tmp_path) as (uri, _ca):
        stranger = Jwks(uri)  # the system's CAs do not know this one
        with pytest.raises(Refused) as caught:
            await TokenVerifier(section(uri), stranger).verify(idp.token())
        assert (caught.value.reason, caught.value.temporary) == ("keys-unavailable", True)
        assert stranger.error is not None
        assert "CERTIFICATE_VERIFY_FAILED" in stranger.error


async def test_a_key_set_arriving_in_pieces(idp: Idp, tmp_path: Path) -> None:
    """The body read whole however the server writes it (chunked, several TLS records, a pause)."""
    with serve_jwks(idp, tmp_path, pieces=3) as (uri, ca):
        verifier = TokenVerifier(section(uri, ca_file=ca), Jwks(uri, ca_file=ca))
        assert (await verifier.verify(idp.token())).identifier == CLAIRE


def test_config_refuses_unsafe_settings(tmp_path: Path) -> None:
    for changes, needle in (
        ({"algorithms": ["HS256"]}, "algorithms must be among"),
        ({"algorithms": []}, "algorithms must be among"),
        ({"jwks": "http://idp.test/certs"}, "jwks must be an https:// URL or a file"),
        ({"audience": ""}, "jwks and audience are required"),
        ({"issuer": "http://idp.test"}, "issuer must be an https:// URL"),
    ):
        with pytest.raises(ValueError, match=needle):
            OidcSection(**{"issuer": ISSUER, "jwks": "jwks.json", "audience": AUDIENCE, **changes})
    assert OidcSection().issuer == ""  # off by default: no provider is trusted until named
    cfg = Config(node={"domain": DOMAIN})  # type: ignore[arg-type]
    assert oidc.token_login(cfg.oidc, cfg.path, None, Lockout()) is None  # type: ignore[arg-type]


# -- TokenLogin: who may log in with a token ----------------------------------------------------------------


@pytest.fixture
async def mailboxes(tmp_path: Path) -> AsyncIterator[MailboxRepository]:
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}") as db:
        await db.migrate()
        repo = MailboxRepository(db, KeyEncryptionKey(secrets.token_bytes(32)))
        claire = Owner(CLAIRE, "8", CLAIRE[1:], last_name="MARTIN")
        await repo.create(DOCTOR, "PER", owner=claire)
        await repo.create(NURSE, "PER", owner=Owner(LUCAS, "8", LUCAS[1:]))
        await repo.create(ORG, "ORG", service="Secrétariat")
        yield repo


def token_login(idp: Idp, tmp_path: Path, repo: MailboxRepository, threshold: int = 5) -> TokenLogin:
    path = idp.write(tmp_path / "jwks.json")
    lockout = Lockout(threshold=threshold, wide_threshold=threshold, base_delay=10)
    return TokenLogin(TokenVerifier(section(str(path)), Jwks(str(path))), repo, lockout)


async def test_the_owner_logs_in_to_their_mailbox(idp: Idp, tmp_path: Path, mailboxes: MailboxRepository) -> None:
    login = token_login(idp, tmp_path, mailboxes)
    checked = await login.check(idp.token(), " Claire.Martin@CH-test.mssante.fr", "192.0.2.1")
    assert (checked.outcome.result, checked.outcome.address) == ("ok", DOCTOR)
    assert checked.outcome.account is not None
    assert checked.outcome.account.kind == "PER"
    assert checked.facts is not None
    assert checked.facts.identifier == CLAIRE
    assert (await mailboxes.describe(DOCTOR))["last_login_at"] is not None
    # No mailbox named (OAUTHBEARER without a=): the professional's only one.
    assert (await login.check(idp.token(LUCAS), None, "192.0.2.1")).outcome.address == NURSE


@pytest.mark.parametrize(
    ("user", "identifier", "reason"),
    [
        (NURSE, CLAIRE, "not-the-owner"),  # a valid token of another professional
        (ORG, CLAIRE, "not-a-personal-mailbox"),  # delegates log in to their own mailbox, then send as ORG
        (f"inconnu@{DOMAIN}", CLAIRE, "unknown-account"),
        (None, NOBODY, "no-single-mailbox"),  # in no mailbox of ours
    ],
)
async def test_who_may_not_log_in(
    idp: Idp, tmp_path: Path, mailboxes: MailboxRepository, user: str | None, identifier: str, reason: str
) -> None:
    checked = await token_login(idp, tmp_path, mailboxes).check(idp.token(identifier), user, "192.0.2.1")
    assert (checked.outcome.result, checked.outcome.reason) == ("refused", reason)
    assert checked.facts is not None
    assert checked.facts.identifier == identifier


async def test_disabled_mailbox_or_owner(idp: Idp, tmp_path: Path, mailboxes: MailboxRepository) -> None:
    login = token_login(idp, tmp_path, mailboxes)
    await mailboxes.set_active(DOCTOR, False)
    assert (await login.check(idp.token(), DOCTOR, "192.0.2.1")).outcome.reason == "mailbox-disabled"
    await mailboxes.set_active(DOCTOR, True)
    async with mailboxes.db.write() as s:  # gone from the national directory
        await s.execute(update(Professional).where(Professional.id_nat_ps == CLAIRE).values(active=False))
    assert (await login.check(idp.token(), DOCTOR, "192.0.2.1")).outcome.reason == "mailbox-disabled"


async def test_refusals_count_against_the_client_address(
    idp: Idp, tmp_path: Path, mailboxes: MailboxRepository
) -> None:
    login = token_login(idp, tmp_path, mailboxes, threshold=2)
    # Tokens the provider signed, refused for their age or the mailbox asked for: no guesses, not counted
    # (clients behind one hospital address send expired tokens all day).
    for _ in range(3):
        expired = await login.check(idp.token(age=4000), DOCTOR, "192.0.2.9")
        assert (expired.outcome.result, expired.outcome.reason, expired.outcome.locked_for) == (
            "refused",
            "token-expired",
            0.0,
        )
        assert (await login.check(idp.token(LUCAS), DOCTOR, "192.0.2.9")).outcome.reason == "not-the-owner"
    assert (await login.check(idp.token(), DOCTOR, "192.0.2.9")).outcome.result == "ok"
    forger = rsa.generate_private_key(65537, 2048)
    for _ in range(2):
        checked = await login.check(idp.token(key=forger), DOCTOR, "192.0.2.9")
        assert (checked.outcome.result, checked.outcome.reason, checked.facts) == ("refused", "bad-signature", None)
    locked = (await login.check(idp.token(), DOCTOR, "192.0.2.9")).outcome
    assert locked.result == "locked"
    assert locked.wait > 0
    assert (await login.check(idp.token(), DOCTOR, "192.0.2.10")).outcome.result == "ok"  # another client


async def test_keys_unavailable_is_temporary_and_blames_nobody(
    idp: Idp, tmp_path: Path, mailboxes: MailboxRepository
) -> None:
    missing = tmp_path / "not-there.json"
    lockout = Lockout(threshold=1, wide_threshold=1, base_delay=10)
    login = TokenLogin(TokenVerifier(section(str(missing)), Jwks(str(missing))), mailboxes, lockout)
    for _ in range(3):
        checked = await login.check(idp.token(), DOCTOR, "192.0.2.20")
        assert (checked.outcome.result, checked.outcome.reason) == ("unavailable", "keys-unavailable")
    idp.write(missing)  # the operator puts the provider's set in place
    assert (await login.check(idp.token(), DOCTOR, "192.0.2.20")).outcome.result == "ok"
