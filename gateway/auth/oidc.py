"""Logins with the national identity provider's access tokens (domain brief §4): SASL XOAUTH2 and OAUTHBEARER.

Implementation notes
- A professional's mail client gets a short-lived access token (about 5 minutes) from the identity
  provider (OpenID Connect; smart card or mobile app behind it) and presents it as a bearer token
  (RFC 6750) in the SASL message (gateway/auth/sasl_oauth.py). The token is checked here, offline, against
  the provider's signing keys (JWKS, RFC 7517), and never stored nor logged: only its facts are audited
  (issuer, the professional's identifier, `jti`, expiry).
- The token (RFC 7519/7515, verified by PyJWT): signed with one of `[oidc] algorithms` (asymmetric only:
  an HS256 token "signed" with the provider's public key as a shared secret is the classic forgery; `none`
  is never taken); a key of the provider's set picked by `kid` (a token without `kid` only when the set
  has exactly one key for its algorithm), of the algorithm's key type and, when the key names one, that
  algorithm; `iss` exactly `[oidc] issuer`; `exp` and `iat` present, `exp`/`nbf`/`iat` within `[oidc]
  leeway`; `exp - iat` at most `[oidc] max_lifetime`; this service (`[oidc] audience`) in `aud`, or as
  `azp` (Keycloak-based providers, Pro Santé Connect among them, name the client there).
- Who: the claim `[oidc] identity_claim` must be an IdNatPS (8 + RPPS or 0 + ADELI) with a good check
  digit, and the mailbox asked for (`user=` / `a=`) a PER or CAB mailbox owned by the directory entry of
  that identifier, both active. Without a mailbox named (OAUTHBEARER allows it), the owner's only
  mailbox. A delegate sends as an ORG mailbox after logging in to their own, as with passwords.
- Keys: from a file (read again when it changes) or the `jwks_uri` over HTTPS (TLS 1.2+, the system's CAs
  or `[oidc] ca_file`, 1 MiB at most, 10 s), kept `[oidc] jwks_refresh`; a `kid` not in the set fetches it
  again at once, at most once a minute (a provider's key rotation), so that unknown `kid`s cannot make
  the node hammer the provider. A failed fetch keeps the keys already known.
- Refusals are one outcome for the client (RFC 7628 §3.2.2's error, then the protocol's failure reply),
  the reason is the audit record's; they count against the client address in the lock-out, as
  certificate logins do (a token is not guessed, but a flood of them still costs signature checks).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import aiohttp
import jwt
import structlog
from jwt import PyJWK

from directory.identifiers import check_idnatps
from gateway import lookups
from gateway.auth.lockout import Lockout
from gateway.auth.service import LoginOutcome
from gateway.config import OidcSection
from gateway.queue.retry import parse_duration
from gateway.store.mailboxes import MailboxRepository

log = structlog.get_logger("gateway.auth.oidc")

MAX_JWKS = 1024 * 1024
FETCH_TIMEOUT = 10.0
MIN_REFETCH = 60.0  # seconds between two fetches the keys' age did not call for (an unknown kid)
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})
TOKEN_MAILBOXES = ("PER", "CAB")  # mailboxes a professional logs in to as themselves


class Refused(Exception):
    """A token or a login refused; `reason` is for the audit record only. `temporary`: this node could not
    judge it (the provider's keys unavailable): the client is told to try later, and nobody is blamed."""

    def __init__(self, reason: str, *, temporary: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.temporary = temporary


COUNTED = frozenset({"malformed-token", "bad-signature", "algorithm", "unknown-key", "invalid-token"})
"""Refusals the lock-out counts: what a forger or a flood sends. A token the provider signed and refused for
its age, its audience or the mailbox asked for is no guess, and clients behind one hospital address send
expired ones routinely: counted, they would lock everyone there out."""


@dataclass(frozen=True)
class TokenFacts:
    """What is audited of a token that was verified: never the token."""

    issuer: str
    identifier: str  # the professional's IdNatPS
    token_id: str | None  # its `jti`
    expires: int


@dataclass(frozen=True)
class _Key:
    kid: str | None
    alg: str | None  # the algorithm the key is bound to, when the set says
    jwk: PyJWK


class Jwks:
    """The provider's signing keys, by `kid`."""

    def __init__(
        self,
        source: str,
        *,
        ca_file: Path | None = None,
        refresh: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.clock = clock
        self.refresh = refresh
        self.ca_file = ca_file
        self._keys: list[_Key] = []
        self._loaded = float("-inf")  # monotonic time of the last keys read
        self._tried = float("-inf")  # and of the last attempt
        self._stamp: tuple[int, int] | None = None  # the file's (mtime_ns, size) when read
        self.error: str | None = None  # why the last load failed, if it did
        self._tls: ssl.SSLContext | None = None
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None, alg: str) -> PyJWK:
        now = self.clock()
        if self._file_changed() or (now - self._loaded > self.refresh and now - self._tried >= MIN_REFETCH):
            await self._load(self._tried)
        found = self._pick(kid, alg)
        local = "://" not in self.source
        fresh = local and self.error is None  # a file is looked at for changes at every login
        if found is None and not local and self.clock() - self._tried >= MIN_REFETCH:
            await self._load(self._tried)  # a key the provider has just rotated in
            found, fresh = self._pick(kid, alg), self.error is None
        if found is None:
            # Unknown in a set just fetched: a token of no key of the provider's. Otherwise this node could not
            # look (no keys yet, the provider unreachable, or a fetch less than a minute ago): try later.
            raise Refused("unknown-key") if fresh else Refused("keys-unavailable", temporary=True)
        if isinstance(found, str):
            raise Refused(found)
        return found.jwk

    async def load(self) -> list[_Key]:
        """Read or fetch the set now (`mssgw oidc check`): the keys in use afterwards; `error` says why not."""
        await self._load(self._tried)
        return list(self._keys)

    def _pick(self, kid: str | None, alg: str) -> _Key | str | None:
        """The key for a token's `kid` and `alg`; "algorithm" when the only keys of that name are bound to
        another algorithm (RFC 7517 §4.4); None when there is none."""
        wanted = _KEY_TYPES.get(alg[:2])
        named = [k for k in self._keys if k.jwk.key_type == wanted and (kid is None or k.kid == kid)]
        usable = [k for k in named if k.alg in (None, alg)]
        if kid is None and len(usable) != 1:
            return None  # no kid: only a set with one key for this algorithm says which
        if not usable:
            return "algorithm" if named else None
        return usable[0]

    def _file_changed(self) -> bool:
        if "://" in self.source:
            return False
        try:
            st = Path(self.source).stat()
        except OSError:
            return False
        return (st.st_mtime_ns, st.st_size) != self._stamp

    async def _load(self, since: float) -> None:
        async with self._lock:
            if self._tried != since:  # another login loaded them while this one waited
                return
            self._tried = self.clock()
            try:
                data = await self._fetch() if "://" in self.source else self._read()
                keys = parse_jwks(data)
            except (OSError, ValueError, aiohttp.ClientError, TimeoutError) as exc:
                self.error = f"{type(exc).__name__}: {exc}"[:200]
                log.warning("oidc.jwks_unavailable", source=self.source, error=self.error)
                return  # the keys already known stay in use
            self._keys, self._loaded, self.error = keys, self.clock(), None
            log.info("oidc.jwks_loaded", source=self.source, keys=len(keys))

    def _read(self) -> bytes:
        path = Path(self.source)
        st = path.stat()
        self._stamp = (st.st_mtime_ns, st.st_size)  # a bad file is read again when it changes, not per login
        if st.st_size > MAX_JWKS:
            raise ValueError(f"the key set is over {MAX_JWKS} octets")
        return path.read_bytes()

    async def _fetch(self) -> bytes:
        if self._tls is None:  # the CA files are read once
            self._tls = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
            self._tls.minimum_version = ssl.TLSVersion.TLSv1_2
        data = bytearray()
        async with (
            lookups.session(FETCH_TIMEOUT) as http,
            http.get(self.source, ssl=self._tls, allow_redirects=False, headers={"Accept": "application/json"}) as resp,
        ):
            if resp.status != 200:
                raise ValueError(f"HTTP {resp.status}")
            async for chunk in resp.content.iter_any():  # the whole body, however it arrives
                data += chunk
                if len(data) > MAX_JWKS:
                    raise ValueError(f"the key set is over {MAX_JWKS} octets")
        return bytes(data)


def parse_jwks(data: bytes) -> list[_Key]:
    """A JWK Set (RFC 7517 §5): its signature keys (`use` absent or `sig`) that PyJWT can use; ValueError if none."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("the key set is not JSON") from None
    entries = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise ValueError("the key set has no keys array")
    keys: list[_Key] = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or entry.get("kty") == "oct":
            continue
        kid, alg = entry.get("kid"), entry.get("alg")
        if alg is not None and (not isinstance(alg, str) or alg not in _ALGORITHMS):
            continue  # bound to an algorithm we never take (or not a name at all)
        try:
            jwk = PyJWK(entry)
        except Exception as exc:  # any key PyJWT cannot use is skipped, whatever it raises: the provider's input
            log.info("oidc.jwk_skipped", kid=str(kid)[:64], error=type(exc).__name__)
            continue
        keys.append(_Key(kid if isinstance(kid, str) else None, alg if isinstance(alg, str) else None, jwk))
    if not keys:
        raise ValueError("the key set has no usable signature key")
    return keys


_REASONS: list[tuple[type[jwt.PyJWTError], str]] = [
    (jwt.ExpiredSignatureError, "token-expired"),
    (jwt.ImmatureSignatureError, "token-not-yet-valid"),
    (jwt.InvalidIssuerError, "wrong-issuer"),
    (jwt.InvalidSignatureError, "bad-signature"),
    (jwt.MissingRequiredClaimError, "missing-claim"),
    (jwt.InvalidAlgorithmError, "algorithm"),
    (jwt.DecodeError, "malformed-token"),
    (jwt.InvalidIssuedAtError, "token-not-yet-valid"),
]


class TokenVerifier:
    """Checks an access token against `[oidc]`: its facts, or Refused."""

    def __init__(self, cfg: OidcSection, jwks: Jwks, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.jwks = jwks
        self.clock = clock
        self.max_lifetime = parse_duration(cfg.max_lifetime).total_seconds()

    async def verify(self, token: str) -> TokenFacts:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Refused("malformed-token") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self.cfg.algorithms:
            raise Refused("algorithm")
        if kid is not None and not isinstance(kid, str):
            raise Refused("malformed-token")
        jwk = await self.jwks.key(kid, alg)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                jwk.key,
                algorithms=[alg],
                issuer=self.cfg.issuer,
                leeway=self.cfg.leeway,
                options={"require": ["exp", "iat", "iss"], "verify_aud": False},
            )
        except jwt.PyJWTError as exc:
            raise Refused(next((r for t, r in _REASONS if isinstance(exc, t)), "invalid-token")) from None
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [] if aud is None else [aud]
        # This service in `aud`; or, when `aud` names nobody else (Keycloak's access tokens: only its own
        # "account" service), as the client it was issued to (`azp`). A token for another service never.
        if self.cfg.audience not in audiences and (
            claims.get("azp") != self.cfg.audience or any(a != "account" for a in audiences)
        ):
            raise Refused("wrong-audience")
        if claims.get("typ") in ("ID", "Refresh", "Logout") or "nonce" in claims or "at_hash" in claims:
            raise Refused("not-an-access-token")  # an ID token travels further (logout URLs): not a credential
        exp, iat = claims["exp"], claims["iat"]
        if not isinstance(exp, int | float) or not isinstance(iat, int | float) or exp - iat > self.max_lifetime:
            raise Refused("token-lifetime")
        identifier = claims.get(self.cfg.identity_claim)
        if not isinstance(identifier, str) or identifier != identifier.strip() or check_idnatps(identifier) is not None:
            raise Refused("no-identifier")
        jti = claims.get("jti")
        return TokenFacts(claims["iss"], identifier, jti[:128] if isinstance(jti, str) else None, int(exp))


@dataclass(frozen=True)
class TokenOutcome:
    outcome: LoginOutcome
    facts: TokenFacts | None = None


class TokenLogin:
    """A bearer-token login for SMTP and IMAP: lock-out first, then the token, then the mailbox."""

    def __init__(self, verifier: TokenVerifier, mailboxes: MailboxRepository, lockout: Lockout) -> None:
        self.verifier = verifier
        self.mailboxes = mailboxes
        self.lockout = lockout

    async def check(self, token: str, user: str | None, client_ip: str) -> TokenOutcome:
        address = (user or "").strip().lower()
        wait = await self.lockout.wait(None, client_ip)
        if wait:
            return TokenOutcome(LoginOutcome("locked", address, wait=wait))
        judged = await self.judge(token, address or None)
        if judged.outcome.result == "refused" and judged.outcome.reason in COUNTED:
            locked = self.lockout.failure(None, client_ip)
            return TokenOutcome(replace(judged.outcome, locked_for=locked), judged.facts)
        if judged.outcome.account is None:
            return judged
        await self.mailboxes.touch_login(judged.outcome.account.address)
        return judged

    async def judge(self, token: str, address: str | None) -> TokenOutcome:
        """The verdict on a token for the mailbox `address` (None: the owner's only one), with no effect: no
        lock-out, no login recorded (`mssgw oidc check` asks it too)."""
        facts: TokenFacts | None = None
        try:
            facts = await self.verifier.verify(token)
            holder = await self.mailboxes.token_holder(address, facts.identifier)
            if holder is None:
                raise Refused("unknown-account" if address else "no-single-mailbox")
            account, owner, owner_active = holder
            if account.kind not in TOKEN_MAILBOXES:
                raise Refused("not-a-personal-mailbox")
            if owner != facts.identifier:
                raise Refused("not-the-owner")
            if not account.active or not owner_active:
                raise Refused("mailbox-disabled")
        except Refused as refused:
            result: Literal["unavailable", "refused"] = "unavailable" if refused.temporary else "refused"
            return TokenOutcome(LoginOutcome(result, address or "", reason=refused.reason), facts)
        return TokenOutcome(LoginOutcome("ok", account.address, account=account), facts)


def token_login(
    cfg: OidcSection, base: Callable[[Path], Path], mailboxes: MailboxRepository, lockout: Lockout
) -> TokenLogin | None:
    """The node's token login, or None while `[oidc] issuer` is empty. `base`: Config.path (relative paths)."""
    if not cfg.issuer:
        return None
    source = cfg.jwks if "://" in cfg.jwks else str(base(Path(cfg.jwks)))
    jwks = Jwks(
        source,
        ca_file=base(cfg.ca_file) if cfg.ca_file else None,
        refresh=parse_duration(cfg.jwks_refresh).total_seconds(),
    )
    return TokenLogin(TokenVerifier(cfg, jwks), mailboxes, lockout)


def openid_configuration(cfg: OidcSection) -> str:
    """The provider's discovery document (OpenID Connect Discovery §4), named in refusals (RFC 7628 §3.2.2)."""
    return cfg.issuer.rstrip("/") + "/.well-known/openid-configuration"
