"""Typed node configuration: a commented TOML file, every setting overridable from the environment.

Implementation notes
- Sources, highest priority first: explicit keyword arguments, environment variables
  (`MSSGW_<SECTION>__<KEY>`, e.g. `MSSGW_STORE__URL`), then the TOML file. Nothing else is read.
- Relative paths in the file are relative to the directory holding the file (the data directory for a
  node made by `mssgw init`), so a data directory can be moved as a whole.
- Secrets (the key-encryption key) are `SecretStr`: never shown in reprs, logs or `config show`.
- `render_config` writes the commented template used by `mssgw init`; `load_config` reads it back.
"""

from __future__ import annotations

import ipaddress
import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from directory.addresses import check_domain
from gateway.errors import ConfigError
from gateway.queue.retry import parse_duration

KEEP_ONLINE_MIN = timedelta(days=183)
"""Domain brief §8: audit records stay online at least six months."""
CONFIG_ENV = "MSSGW_CONFIG"
CONFIG_FILENAME = "mssgw.toml"


def _duration(value: str) -> str:
    parse_duration(value)  # ValueError with the reason: pydantic reports it against the key
    return value.strip()


Duration = Annotated[str, AfterValidator(_duration)]
"""An interval such as "15m" (gateway.queue.retry.parse_duration), checked when the configuration loads."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _domain(value: str, *, empty: bool = False, first_label: str | None = None) -> str:
    # Checked here, once: a name mail cannot carry (an underscore, one label) would otherwise fail later
    # wherever it is first written, a DSN's Reporting-MTA or a Message-ID, and keep failing there.
    if not (empty and value == "") and (reason := check_domain(value)):
        raise ValueError(reason)
    if value and first_label is not None and value.split(".", 1)[0] != first_label:
        raise ValueError(f"the domain {value!r} does not begin with the label {first_label!r}")
    return value


class NodeSection(_Section):
    domain: str
    """Primary mail domain of this operator, e.g. ch-exemple.mssante.fr."""
    extra_domains: list[str] = Field(default_factory=list)
    patient_domain: str = ""
    """Domain of patient mailboxes (<INS>@patient.<domain>); defaults to patient.<domain>."""
    name: str = "node1"
    stop_grace: float = Field(10.0, ge=0, le=300)
    """Seconds a stopping node lets SMTP transactions, IMAP commands and deliveries under way finish."""

    @field_validator("domain")
    @classmethod
    def _lower(cls, v: str) -> str:
        return _domain(v.strip().lower().rstrip("."), empty=True)

    @field_validator("patient_domain")
    @classmethod
    def _patient(cls, v: str) -> str:
        # Patient mailboxes are <INS>@patient.<domain> (domain brief): the exchange rules know a patient by
        # that shape, so another name would leave every patient message unchecked.
        return _domain(v.strip().lower().rstrip("."), empty=True, first_label="patient")

    @field_validator("extra_domains")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        return [_domain(d.strip().lower().rstrip(".")) for d in v]

    @property
    def patient(self) -> str:
        return self.patient_domain or f"patient.{self.domain}"

    @property
    def local_domains(self) -> list[str]:
        """Every mail domain this node hosts mailboxes for."""
        seen: list[str] = []
        for d in [self.domain, *self.extra_domains, self.patient]:
            d = d.lower()
            if d not in seen:
                seen.append(d)
        return seen


class StoreSection(_Section):
    url: str = "sqlite+aiosqlite:///mssgw.db"
    audit_url: str = "sqlite+aiosqlite:///audit.db"
    kek: SecretStr | None = None
    """Key-encryption key, base64 of 32 bytes (normally from MSSGW_STORE__KEK, not the file)."""
    kek_file: Path | None = None
    previous_keks: list[SecretStr] = Field(default_factory=list)
    """Earlier KEKs (base64), to open what they sealed until `mssgw kek rewrap` has sealed it anew."""
    previous_kek_files: list[Path] = Field(default_factory=list)
    """Files of earlier KEKs (same rules as kek_file), for the same use."""
    default_quota: int = Field(5 * 1024**3, ge=0)
    """Storage quota of a mailbox without its own, in bytes (sum of its messages' sizes); 0: no limit."""
    max_folders: int = Field(1000, ge=10)
    """Folders one mailbox may hold (IMAP CREATE past it: NO [LIMIT]); subscribed names: twice as many."""


class PkiSection(_Section):
    dir: Path | None = None
    """Development PKI managed by `mssgw pki`; empty when the trust-space PKI is external."""
    trust_anchor: Path = Path("pki/root/cert.pem")
    cert: Path = Path("tls/fullchain.pem")
    """This node's certificate followed by its intermediate CA certificates."""
    key: Path = Path("tls/key.pem")
    crl_base_url: str = ""


class ListenSection(_Section):
    host: str = "127.0.0.1"
    https_port: int = Field(8443, ge=0, le=65535)
    submission_port: int | None = Field(587, ge=0, le=65535)
    """SMTP submission with STARTTLS (RFC 6409); None disables the listener."""
    submissions_port: int | None = Field(465, ge=0, le=65535)
    """SMTP submission over implicit TLS (RFC 8314)."""
    relay_port: int | None = Field(25, ge=0, le=65535)
    """SMTP from peer operators: STARTTLS and a trust-space client certificate required."""
    imap_port: int | None = None
    """IMAP with STARTTLS (RFC 3501; 143); None (absent) disables the listener."""
    imaps_port: int | None = None
    """IMAP over implicit TLS (RFC 8314; 993); None (absent) disables the listener."""
    proxy_from: list[IPvAnyNetwork] = Field(default_factory=list)
    """Load balancers (addresses or networks): a connection from one must begin with a PROXY protocol
    header (v1 or v2), which names the real client; others are served as they are and may not send one.
    Accepted on every SMTP, IMAP and HTTPS listener (on TLS ones the header comes before the handshake)."""

    def is_proxy(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.proxy_from)


class SmtpSection(_Section):
    hostname: str = ""
    """Name in the greeting and Received: fields; empty means mail.<domain>."""
    max_message_size: int = Field(25 * 1024 * 1024, gt=0)
    """Octets of a message (SIZE, RFC 1870); the relay port takes and advertises its S/MIME form
    (gateway.smtp.server.relay_size_limit) and holds the opened message to this."""
    max_recipients: int = Field(100, gt=0)
    timeout: float = Field(300.0, gt=0)
    """Seconds of client silence before the session is dropped (RFC 5321 §4.5.3.2 asks for minutes)."""
    session_lifetime: float = Field(3600.0, ge=0)
    """Seconds a session may stay open (0: no limit); then `421 4.4.2`, once the transaction under way is
    over (cut if it is still open `timeout` later): a client sending NOOP within each `timeout` no longer
    holds its connection, and its place among `max_connections_per_address`, for ever."""
    max_connections_per_address: int = Field(50, ge=1)
    """Concurrent connections from one client address (an IPv6 client: its /64), per listener (Postfix's
    smtpd_client_connection_count_limit, per service); past it, `421 4.7.0` at once."""
    min_data_rate: int = Field(500, ge=0)
    """Octets a second a DATA must average (Postfix's smtpd_min_data_rate): its time left starts at `timeout`,
    runs down as the clock does, and each octet received adds 1/min_data_rate s, up to `timeout`; so a client
    trickling its message, never silent for `timeout`, is still cut off. 0: only silence counts."""
    duplicate_window: Duration = "7d"
    """How long a message relayed in from a peer is remembered (gateway.store.messages, relay receipts):
    the same message sent again within it is acknowledged and not stored twice."""

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, v: str) -> str:
        return _domain(v.strip().rstrip("."), empty=True)

    @property
    def duplicate_window_delta(self) -> timedelta:
        return parse_duration(self.duplicate_window)


class ImapSection(_Section):
    autologout: float = Field(1800.0, ge=60)
    """Seconds of silence before an authenticated session is logged out (RFC 3501 §5.4: at least 30 min)."""
    login_timeout: float = Field(60.0, gt=0)
    """Seconds of silence allowed before login."""
    login_deadline: float = Field(180.0, gt=0)
    """Seconds a connection may stay without logging in, however busy (as Dovecot's login processes): a
    client that never logs in cannot hold a connection by talking."""
    command_timeout: float = Field(300.0, gt=0)
    """Seconds of silence allowed after login once a command has begun (a line not ended, a literal under
    way), as SMTP's `timeout` within DATA; between commands `autologout` applies."""
    min_command_rate: int = Field(500, ge=0)
    """Octets a second a command must average once begun (an APPEND's literal), after login: its time
    left starts at `command_timeout`, runs down as the clock does, and each octet received adds
    1/min_command_rate s, up to `command_timeout`; so a client trickling a literal cannot hold a session
    for ever. 0: only silence counts."""
    max_connections_per_user: int = Field(20, ge=1)
    max_connections_per_address: int = Field(50, ge=1)
    account_check: float = Field(10.0, gt=0)
    """Seconds between checks that logged-in mailboxes are still active (a disabled one's sessions end)."""
    idle_check: float = Field(1.0, gt=0)
    """Seconds between looks at idling folders for changes no notice told this node about (admin commands;
    other nodes' deliveries when several nodes share a database that is not PostgreSQL: there NOTIFY tells)."""


class AuthSection(_Section):
    lockout_threshold: int = Field(5, ge=1)
    """Failed logins on one account from one client address (an IPv6 client: its /64) before delays start."""
    lockout_wide_threshold: int = Field(20, ge=1)
    """Failed logins from one address (any account), or on one account from addresses it never logged in
    from, before delays start there."""
    lockout_base_delay: float = Field(2.0, gt=0)
    lockout_max_delay: float = Field(900.0, gt=0)


_BEARER_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class OidcSection(_Section):
    """Bearer-token logins (SASL XOAUTH2 and OAUTHBEARER, RFC 7628) with the access tokens of the national
    professional identity provider (domain brief §4): off while `issuer` is empty."""

    issuer: str = ""
    """The identity provider's issuer (`iss`), exactly; empty: bearer tokens are not offered nor taken."""
    jwks: str = ""
    """Its signing keys: the `jwks_uri` (https only) or a JWKS file (relative to this file's directory)."""
    audience: str = ""
    """This service's client id at the provider: a token must name it in `aud` or `azp`."""
    identity_claim: str = "preferred_username"
    """The claim holding the professional's IdNatPS (8 + RPPS or 0 + ADELI), checked with its check digit
    and matched against the owner of the mailbox asked for."""
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "PS256", "ES256"])
    """Signature algorithms taken (asymmetric only: a shared-secret HS* token could be forged with a public key)."""
    leeway: float = Field(30.0, ge=0, le=300)
    """Seconds of clock difference allowed on `exp`, `nbf` and `iat`."""
    max_lifetime: Duration = "1h"
    """Longest `exp` - `iat` taken: the provider's tokens live about 5 minutes."""
    jwks_refresh: Duration = "1h"
    """How long fetched keys are used before they are fetched again (an unknown `kid` fetches them at once,
    at most once a minute)."""
    ca_file: Path | None = None
    """CA certificates for the `jwks_uri` HTTPS connection; the system's when empty."""
    scope: str = "openid"
    """The scope named in a refusal's error (RFC 7628 §3.2.2), for the client to ask for a new token."""

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, value: list[str]) -> list[str]:
        unknown = [a for a in value if a not in _BEARER_ALGORITHMS]
        if unknown or not value:
            raise ValueError(f"algorithms must be among {', '.join(_BEARER_ALGORITHMS)} (got {unknown or 'none'})")
        return value

    @model_validator(mode="after")
    def _complete(self) -> OidcSection:
        if self.issuer:
            if not self.issuer.startswith("https://"):
                raise ValueError("issuer must be an https:// URL")
            if not self.jwks or not self.audience:
                raise ValueError("with an issuer, jwks and audience are required")
            if "://" in self.jwks and not self.jwks.startswith("https://"):
                raise ValueError("jwks must be an https:// URL or a file")
        return self


class WebSection(_Section):
    """The patient web inbox (HTTPS listener)."""

    public_url: str = ""
    """Address patients are given (activation letters, demo credentials); empty: https://<host>:<https_port>/."""
    idle_timeout: float = Field(900.0, ge=60)
    """Seconds without a request before a web session ends."""
    absolute_timeout: float = Field(8 * 3600.0, ge=300)
    """Seconds after login when a web session ends whatever its use."""
    request_timeout: float = Field(60.0, gt=0)
    """Seconds a connection has to send a whole request, headers and body, from its start or the end of
    the previous response; then it is closed. uvicorn bounds only the wait between requests."""


class QueueSection(_Section):
    retry_schedule: str = "1m,5m,15m,1h,4h"
    max_age: str = "5d"
    lease: float = Field(300.0, gt=0)
    """Seconds a worker holds a claimed recipient before another may take it."""
    poll_interval: float = Field(1.0, gt=0)
    domain_concurrency: int = Field(4, ge=1)
    """Relay sessions open at once to one destination domain."""
    in_flight: int = Field(100, ge=1, le=1000)
    """Recipients a node's worker has under way at once; it claims more as these finish. Each message under
    way holds its body in memory (up to `[smtp] max_message_size`, more once signed and encrypted)."""
    domain_in_flight: int = Field(50, ge=1)
    """Of `in_flight`, how many may be for one domain: a slow or tarpitting peer holds at most these, and
    the rest of the node's mail goes on."""
    routes: dict[str, str] = Field(default_factory=dict)
    """Static routes, domain -> "host:port", tried before DNS (development, tests, private links)."""
    resolver: str = ""
    """DNS resolver address for MX lookups; empty means the system's."""
    relay_reuse: float = Field(5.0, ge=0)
    """Seconds an idle relay session to a peer host is kept for the next message to it (0: a session per
    message); a session serves for a minute at most, then a new handshake judges the peer again."""
    notice_timeout: Duration = "1h"
    """How long a message relayed to a peer waits for its delivery notification (the processed MDN, or the
    dispatched one when its sender asked); then its sender gets a failure notice and later ones are dropped."""
    send_mdn: bool = True
    """Send peers a processed MDN for each message of theirs accepted here (and a dispatched one when asked)."""

    @property
    def notice_timeout_delta(self) -> timedelta:
        return parse_duration(self.notice_timeout)


RETENTION_SLACK = timedelta(days=3)
"""How much earlier than `inactive_after - warn_before` a mailbox is warned (and deleted): the daily run, its
random delay and a missed day, so that the deletion comes before `inactive_after`, never after."""


class RetentionSection(_Section):
    inactive_after: str = "365d"
    """A mailbox hosted here with no login for this long (since its creation if it never logged in) is
    deleted by `mssgw retention run`, with its messages: at most a year (domain brief §8)."""
    warn_before: str = "30d"
    """How long before that deletion its owner is warned, by a notice delivered into the mailbox; the
    deletion waits until the notice is this old, however long ago the last login was."""

    @field_validator("inactive_after", "warn_before")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)
        return v.strip()

    @model_validator(mode="after")
    def _bounds(self) -> RetentionSection:
        if self.inactive_after_delta > timedelta(days=365):
            raise ValueError(f"inactive_after {self.inactive_after} is longer than a year (365d at most)")
        if self.warn_before_delta + RETENTION_SLACK >= self.inactive_after_delta:
            raise ValueError(
                f"warn_before {self.warn_before} must be shorter than inactive_after {self.inactive_after} by more "
                f"than {RETENTION_SLACK.days} days (the daily runs' slack)"
            )
        return self

    @property
    def inactive_after_delta(self) -> timedelta:
        return parse_duration(self.inactive_after)

    @property
    def warn_before_delta(self) -> timedelta:
        return parse_duration(self.warn_before)


class SmimeIdentity(_Section):
    """A domain-bound (organisation) S/MIME certificate and its key, for a `[[smime.organisation]]` entry."""

    cert: Path
    """The certificate (dNSName = the mail domain) followed by its intermediate CA certificates (PEM)."""
    key: Path
    """Its private key (PEM, PKCS#8, unencrypted; mode 0600)."""


class SmimePeer(_Section):
    """How to encrypt for one peer domain (`[smime.peers."<domain>"]`)."""

    oaep: bool = True
    """RSA-OAEP with SHA-256 key transport (RFC 8017); false: PKCS#1 v1.5, for peers that lack OAEP."""
    gcm: bool = False
    """AES-256-GCM (AuthEnvelopedData, RFC 5083/5084) instead of AES-256-CBC."""


class SmimeSection(_Section):
    workers: int = Field(2, ge=0, le=64)
    """Processes signing, encrypting, decrypting and verifying (0: one thread, for tests)."""
    crl_dir: Path | None = None
    """Directory of the trust space's current CRLs (PEM or DER); empty: the development PKI's crl/, or
    crl-cache/ in the data directory when `crl_urls` are set."""
    crl_urls: list[str] = Field(default_factory=list)
    """CRL distribution points (http/https) fetched into `crl_dir` every `crl_refresh` seconds."""
    crl_refresh: float = Field(3600.0, gt=0)
    intermediates: list[Path] = Field(default_factory=list)
    """PEM files of trust-space CA certificates (a signature need not carry its chain); the development
    PKI's CAs are always added."""
    published: list[Path] = Field(default_factory=list)
    """Files or directories of certificates published with the national directory data (PEM or DER),
    asked after this node's mailboxes and before DNS."""
    organisation: list[SmimeIdentity] = Field(default_factory=list)
    """Domain-bound certificates this node signs with when the sender has none of its own: bounces and
    notifications (null sender) always, personal senders only with `organisation_fallback`; they also
    decrypt messages peers encrypted to the domain's certificate."""
    organisation_fallback: bool = False
    peers: dict[str, SmimePeer] = Field(default_factory=dict)
    dns_servers: list[str] = Field(default_factory=list)
    """DNS servers (IP addresses) asked for recipients' CERT records; empty means the system's."""
    dns_port: int = Field(53, ge=1, le=65535)
    ldap: bool = True
    """Ask the LDAP servers of a recipient's domain (`_ldap._tcp` SRV records) when DNS has no CERT record."""
    discovery_ttl: float = Field(3600.0, gt=0)
    """Seconds a discovered certificate (or its absence, for less) is reused before asking again."""
    allow_networks: list[str] = Field(default_factory=list)
    """Networks (CIDR) beyond the internet's public addresses where a peer's DNS may send this node for
    certificates (IPKIX URLs, LDAP servers): none by default, so that no peer makes it reach its own."""

    @field_validator("dns_servers")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        for server in v:
            ipaddress.ip_address(server)  # ValueError: "... does not appear to be an IPv4 or IPv6 address"
        return v

    @field_validator("allow_networks")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for network in v:
            ipaddress.ip_network(network, strict=False)  # ValueError names the bad one
        return v


class AuditSection(_Section):
    checkpoint_key: Path = Path("keys/audit-checkpoint.pem")
    checkpoint_interval: float = Field(300.0, gt=0)
    """Seconds between periodic signed checkpoints while serving."""
    log_file: Path | None = None
    """JSON-lines operational log; standard error when empty."""
    keep_online: Duration = "183d"
    """How long records stay in the audit database before `mssgw audit archive` may move them to a file:
    at least six months (domain brief §8), or the 1 to 3 years an operator's policy says."""

    @field_validator("keep_online")
    @classmethod
    def _six_months(cls, v: str) -> str:
        if parse_duration(v) < KEEP_ONLINE_MIN:
            raise ValueError(f"keep_online {v} is shorter than six months ({KEEP_ONLINE_MIN.days}d at least)")
        return v

    @property
    def keep_online_delta(self) -> timedelta:
        return parse_duration(self.keep_online)


class Config(BaseSettings):
    """The whole node configuration."""

    model_config = SettingsConfigDict(
        env_prefix="MSSGW_",
        env_nested_delimiter="__",
        extra="forbid",
        nested_model_default_partial_update=True,
    )
    _toml_file: ClassVar[Path | None] = None

    node: NodeSection
    store: StoreSection = Field(default_factory=StoreSection)
    pki: PkiSection = Field(default_factory=PkiSection)
    listen: ListenSection = Field(default_factory=ListenSection)
    smtp: SmtpSection = Field(default_factory=SmtpSection)
    imap: ImapSection = Field(default_factory=ImapSection)
    auth: AuthSection = Field(default_factory=AuthSection)
    oidc: OidcSection = Field(default_factory=OidcSection)
    queue: QueueSection = Field(default_factory=QueueSection)
    web: WebSection = Field(default_factory=WebSection)
    smime: SmimeSection = Field(default_factory=SmimeSection)
    audit: AuditSection = Field(default_factory=AuditSection)
    retention: RetentionSection = Field(default_factory=RetentionSection)
    base_dir: Path = Path(".")
    """Directory relative paths are resolved against (the config file's directory)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls._toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls._toml_file))
        return tuple(sources)

    def path(self, p: Path) -> Path:
        """Resolve a configured path against the config directory."""
        p = p.expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    def db_url(self, url: str) -> str:
        """SQLite URLs with a relative file name are relative to the config directory."""
        prefix = "sqlite+aiosqlite:///"
        if url.startswith(prefix) and not url[len(prefix) :].startswith("/") and ":memory:" not in url:
            return prefix + str(self.path(Path(url[len(prefix) :])))
        return url

    @property
    def smtp_hostname(self) -> str:
        return self.smtp.hostname or f"mail.{self.node.domain}"

    @property
    def web_url(self) -> str:
        """Where patients reach the web inbox."""
        if self.web.public_url:
            return self.web.public_url.rstrip("/") + "/"
        host = self.listen.host if self.listen.host not in ("0.0.0.0", "::") else self.node.domain  # noqa: S104
        shown = f"[{host}]" if ":" in host else host
        return f"https://{shown}:{self.listen.https_port}/"

    @property
    def pki_dir(self) -> Path | None:
        return self.path(self.pki.dir) if self.pki.dir is not None else None

    @property
    def crl_dir(self) -> Path | None:
        """Where the node's current CRLs are, for S/MIME and every TLS check alike: `[smime] crl_dir`;
        else crl-cache/ in the data directory when `[smime] crl_urls` fill it; else the development
        PKI's crl/; None (no CRLs) with an external PKI that names neither."""
        if self.smime.crl_dir:
            return self.path(self.smime.crl_dir)
        if self.smime.crl_urls:
            return self.base_dir / "crl-cache"
        return self.pki_dir / "crl" if self.pki_dir is not None else None


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    return f"{where}: {first['msg']}"


def load_config(path: Path | str | None = None, **overrides: Any) -> Config:
    """Read the TOML file at `path` (or $MSSGW_CONFIG, or ./mssgw.toml) with environment overrides."""
    if path is None:
        path = os.environ.get(CONFIG_ENV, CONFIG_FILENAME)
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / CONFIG_FILENAME
    if not path.is_file():
        raise ConfigError(f"no configuration file at {path} (run `mssgw init` or pass -c FILE)")
    path = path.resolve()
    bound = type("BoundConfig", (Config,), {"_toml_file": path})
    try:
        cfg: Config = bound(base_dir=path.parent, **overrides)
    except ValidationError as exc:
        raise ConfigError(f"{path} (or an MSSGW_* environment variable): {_describe(exc)}") from None
    except ValueError as exc:  # malformed TOML
        raise ConfigError(f"{path}: {exc}") from None
    return cfg


def _toml_str(value: str) -> str:
    # TOML basic strings share JSON's escapes for the characters that can occur in paths and URLs.
    import json

    return json.dumps(value, ensure_ascii=False)


def render_config(
    *,
    domain: str,
    node_name: str,
    kek_file: Path,
    checkpoint_key: Path,
    pki_dir: Path | None,
    trust_anchor: str,
    host: str,
    https_port: int,
    crl_base_url: str,
    submission_port: int = 587,
    submissions_port: int = 465,
    relay_port: int = 25,
    imap_port: int = 143,
    imaps_port: int = 993,
    routes: dict[str, str] | None = None,
    published: list[str] | None = None,
    organisation: tuple[str, str] | None = None,
) -> str:
    """The commented configuration file written by `mssgw init`."""
    published_line = "[" + ", ".join(_toml_str(p) for p in published or []) + "]"
    organisation_block = (
        f"[[smime.organisation]]\ncert = {_toml_str(organisation[0])}\nkey = {_toml_str(organisation[1])}\n"
        if organisation
        else '# [[smime.organisation]]\n# cert = "smime/domain/fullchain.pem"\n# key = "smime/domain/key.pem"\n'
    )
    pki_line = f"dir = {_toml_str(str(pki_dir))}" if pki_dir is not None else '# dir = "pki"'
    routes_line = "{ " + ", ".join(f"{_toml_str(d)} = {_toml_str(t)}" for d, t in (routes or {}).items()) + " }"
    return f"""\
# mssgw operator node configuration.
# Every setting can be overridden by an environment variable named MSSGW_<SECTION>__<KEY>,
# for example MSSGW_STORE__URL or MSSGW_LISTEN__HOST. Relative paths are relative to this file.

[node]
# Primary mail domain of this operator; must appear on the trust list of the other operators.
domain = {_toml_str(domain)}
# Other mail domains hosted by this node.
extra_domains = []
# Domain of patient mailboxes (<INS>@patient.<domain>); empty means patient.<domain>.
patient_domain = ""
# Name of this node (several nodes of one operator share one database).
name = {_toml_str(node_name)}
# On SIGTERM: seconds to let SMTP transactions, IMAP commands and deliveries under way finish (each
# session is told 421 / BYE as soon as it is between transactions or commands); then the rest are cut.
stop_grace = 10.0

[store]
# SQLAlchemy async URL. SQLite (default, WAL, synchronous=FULL) or PostgreSQL, e.g.
# postgresql+asyncpg://mssgw@/mssgw?host=/run/postgresql
url = "sqlite+aiosqlite:///mssgw.db"
# The audit log lives in its own database, apart from application data.
audit_url = "sqlite+aiosqlite:///audit.db"
# Key-encryption key wrapping every mailbox data key (AES-256-GCM). Kept outside the data
# directory, mode 0600. Or set MSSGW_STORE__KEK to its base64 value and remove this line.
kek_file = {_toml_str(str(kek_file))}
# Rotation (`mssgw kek`, docs/operations.md): earlier keys still opening what they sealed until
# `mssgw kek rewrap` has sealed it anew (or MSSGW_STORE__PREVIOUS_KEKS, a JSON list of base64 values).
previous_kek_files = []
# Storage quota of each mailbox (bytes, the sum of its messages) unless set per mailbox; 0 = no limit.
# Delivery past it is deferred (4.2.2 mailbox full), IMAP APPEND and COPY refused (OVERQUOTA).
default_quota = 5368709120
# Folders one mailbox may hold: CREATE past it is refused (IMAP NO [LIMIT]).
max_folders = 1000

[pki]
# Development trust-space PKI managed by `mssgw pki`. Comment out when the national PKI is used.
{pki_line}
# Pinned trust-space root: peers and S/MIME signers must chain to it.
trust_anchor = {_toml_str(trust_anchor)}
# This node's TLS certificate (server, and client for mutual TLS) followed by its chain, and its key.
cert = "tls/fullchain.pem"
key = "tls/key.pem"
# Where published CRLs can be fetched (written into issued certificates).
crl_base_url = {_toml_str(crl_base_url)}

[listen]
# Listeners bind here; loopback by default.
host = {_toml_str(host)}
# HTTPS: the patient web inbox and the health endpoint.
https_port = {https_port}
# SMTP submission with STARTTLS (587), over implicit TLS (465), and from peer operators (25, mutual TLS).
# 0 picks a free port (printed at start).
submission_port = {submission_port}
submissions_port = {submissions_port}
relay_port = {relay_port}
# IMAP for professionals' mail clients: STARTTLS (143) and implicit TLS (993).
imap_port = {imap_port}
imaps_port = {imaps_port}
# Load balancers (addresses or networks, e.g. ["10.0.0.10", "10.0.1.0/24"]) whose connections begin with a
# PROXY protocol header (v1 or v2) naming the client: every SMTP, IMAP and HTTPS listener.
proxy_from = []

[smtp]
# Name in the SMTP greeting and Received: fields; empty means mail.<domain>.
hostname = ""
# Largest message accepted (bytes; advertised with SIZE; the relay port takes its S/MIME form, about
# 4/3 larger) and most recipients per message.
max_message_size = 26214400
max_recipients = 100
# Concurrent connections from one client address (IPv6: its /64) on each SMTP listener; past it, 421 4.7.0.
max_connections_per_address = 50
# Seconds of client silence before a session is dropped, and seconds a session may stay open in all
# (then 421 4.4.2 once its transaction is over; 0: no limit).
timeout = 300
session_lifetime = 3600
# Octets a second a DATA must average: each octet adds 1/min_data_rate s to its time left (at most
# `timeout`); a client that trickles its message is cut off with 421 4.4.2. 0: only silence counts.
min_data_rate = 500
# How long a message relayed in from a peer operator is remembered: sent again within it (the peer did
# not get our 250, or died before recording it), it is acknowledged and not stored twice.
duplicate_window = "7d"

[imap]
# Seconds of silence before logging a session out: after login (RFC 3501: 30 min or more), before login.
autologout = 1800
login_timeout = 60
# Seconds a connection may stay without logging in, however busy it is.
login_deadline = 180
# After login, seconds of silence allowed in the middle of a command (a literal under way), and the
# octets a second it must average: each octet adds 1/min_command_rate s to its time left (at most
# command_timeout). 0: only silence counts.
command_timeout = 300
min_command_rate = 500
# Concurrent IMAP connections per mailbox and per client address (IPv6: its /64).
max_connections_per_user = 20
max_connections_per_address = 50
# Seconds between checks that logged-in mailboxes are still active: a disabled mailbox's sessions end.
account_check = 10
# Seconds between looks at idling folders for changes nobody announced (admin commands).
idle_check = 1.0

[auth]
# Failed logins before growing delays (base, doubling, capped): `lockout_threshold` for one account from
# one address; `lockout_wide_threshold` for one address over all accounts, and for one account over all
# addresses (that one never applies to an address the account logged in from in the last 30 days).
lockout_threshold = 5
lockout_wide_threshold = 20
lockout_base_delay = 2.0
lockout_max_delay = 900.0

[oidc]
# Logins with the national identity provider's access tokens (SASL XOAUTH2 and OAUTHBEARER, SMTP and
# IMAP): off while issuer is empty. jwks: the provider's jwks_uri (https) or a JWKS file; audience: this
# service's client id (in the token's aud or azp); identity_claim: the claim with the professional's
# IdNatPS, matched against the owner of the mailbox logged in to.
issuer = ""
jwks = ""
audience = ""
identity_claim = "preferred_username"
algorithms = ["RS256", "PS256", "ES256"]
leeway = 30
max_lifetime = "1h"
jwks_refresh = "1h"
scope = "openid"

[web]
# The patient web inbox, on the HTTPS listener. Address given to patients; empty: https://<host>:<https_port>/.
public_url = ""
# Seconds without a request, and after login, before a web session ends.
idle_timeout = 900
absolute_timeout = 28800
# Seconds a connection has to send a whole request (headers and body); then it is closed.
request_timeout = 60

[queue]
# Retry intervals after temporary failures; the last repeats until max_age, then a DSN goes back.
retry_schedule = "1m,5m,15m,1h,4h"
max_age = "5d"
# Seconds a worker holds a claimed recipient before another worker may take it over.
lease = 300
poll_interval = 1.0
# Parallel deliveries per destination domain.
domain_concurrency = 4
# Recipients under way at once, and how many of them may be for one domain (a slow peer holds no more).
in_flight = 100
domain_in_flight = 50
# DNS resolver for MX lookups ("" = the system's) and static routes tried first, e.g.
# routes = {{ "clinique-b.mssante.fr" = "10.0.0.5:25" }}
resolver = ""
routes = {routes_line}
# Seconds an idle relay session to a peer host waits for the next message to it (0 = a session each).
relay_reuse = 5
# Delivery notifications between operators (Direct MDNs): how long a relayed message waits for the
# recipient operator's notice before its sender is told it failed, and whether peers get ours.
notice_timeout = "1h"
send_mdn = true

[retention]
# `mssgw retention run` (daily: deploy/mssgw-retention.timer) deletes a mailbox with no login for
# inactive_after (365d at most), once a notice delivered into it warn_before earlier went unheeded.
inactive_after = "365d"
warn_before = "30d"

[smime]
# Recipients' certificates: this node's mailboxes first, then the published ones below, then DNS CERT
# records (RFC 4398) at <local part>.<domain> and then <domain>, asked of these servers ([] = the
# system's) on this port.
dns_servers = []
dns_port = 53
# Last, the LDAP servers of the recipient's domain (_ldap._tcp SRV records): the entry whose mail is the
# address, then the domain. false: never asked.
ldap = true
# Seconds a discovery result is reused (an absent certificate: at most 5 minutes).
discovery_ttl = 3600
# Private networks (CIDR) where IPKIX URLs and LDAP servers named by a peer's DNS may be ([] = public
# addresses only: a peer cannot make this node reach into its own network).
allow_networks = []
# Certificates published with the national directory data (files or directories), asked before DNS.
published = {published_line}
# Processes doing the S/MIME cryptography (0 = a thread).
workers = 2
# The trust space's current CRLs (empty: the development PKI's crl/) and CA certificates. CRLs at
# crl_urls are fetched every crl_refresh seconds into crl_dir (checked against the CAs first). S/MIME
# and every TLS handshake with a trust-space certificate check them; a CA without one is refused.
# crl_dir = "/var/lib/mssgw/crl"
crl_urls = []
crl_refresh = 3600
intermediates = []
organisation_fallback = false
# Per peer domain: PKCS#1 v1.5 key transport instead of RSA-OAEP, AES-GCM instead of AES-CBC.
# [smime.peers."clinique-b.mssante.fr"]
# oaep = false
# gcm = true
# Domain-bound certificate(s) signing bounces, and personal senders' mail when organisation_fallback:
{organisation_block}
[audit]
# Ed25519 key signing audit checkpoints (tree size + root hash). Kept outside the data directory.
checkpoint_key = {_toml_str(str(checkpoint_key))}
# Seconds between periodic checkpoints while serving.
checkpoint_interval = 300
# JSON-lines operational log file; standard error when commented out.
# log_file = "log/mssgw.jsonl"
# How long records stay online before `mssgw audit archive` may move them to a file (six months at least).
keep_online = "183d"
"""
