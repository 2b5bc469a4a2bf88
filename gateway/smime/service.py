"""A node's S/MIME: the crypto pool, the trust store (anchors, CA certificates, current CRLs), recipient
certificate discovery and the organisation identities, built from the configuration; what the queue
worker calls before a relay and the relay listener calls before it accepts (issue 5).

Implementation notes
- CRLs come from `[smime] crl_dir` (default: the development PKI's `crl/`, kept fresh by
  `keep_dev_crls`; or `crl-cache/` filled from `[smime] crl_urls` by `keep_crls`, each fetched CRL
  checked against the trust-space CAs before it replaces the cached one): PEM or DER files, re-read
  when one changes (looked at no more than every `CRL_CHECK` seconds). A change (the first CRLs after
  none too) also empties the discovery cache, so a recipient certificate revoked since it was found is
  judged again. The TLS
  checks of the relay, both directions, read the same directory (`Config.crl_dir`,
  `gateway.tls.CrlContexts`); a trust-space CA without a current CRL there is logged at each change,
  since everything under it is then refused (hard-fail, in S/MIME and TLS alike).
- Signing identity: the sender's own (address-bound, key sealed in the store); for a null sender (a
  bounce) the organisation certificate of its From: domain, else of the node's domain; for a personal
  sender without one, the organisation certificate only when `organisation_fallback` is on; a patient
  (the node's patient domain) always signs with it (`mssgw init` issues it for both domains).
- Decryption: a message from a peer must carry a key-transport entry for every local recipient, for the
  recipient's own certificate or one of its domain's organisation certificates (matched on issuer and
  serial or subject key identifier, no key used); the first recipient's matching key decrypts.
- Organisation certificate rotation: a domain may have several `[[smime.organisation]]` entries; all
  decrypt, and the one valid now (and not revoked by the current CRLs) that expires last signs
  (`organisation_for`), so the new certificate is added beside the old one and the old one removed
  once nothing encrypted to it can still come.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.audit.oplog import get_logger
from gateway.config import Config, SmimePeer
from gateway.errors import ConfigError
from gateway.node import Node
from gateway.smime import cms, inbound, mime, outbound
from gateway.smime.discovery import Discovery, Outcome, PublishedCertificates, load_certificates
from gateway.smime.inbound import from_addresses
from gateway.smime.pool import CryptoPool
from gateway.smime.trust import OcspFetcher, TrustStore
from gateway.store.mailboxes import SigningIdentity
from gateway.tls import crl_stamp, load_crl, read_crls

CRL_CHECK = 5.0


def _certificates(path: Path) -> list[x509.Certificate]:
    return load_certificates(path.read_bytes())


def trust_space_cas(cfg: Config) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    """The node's trust anchors, and the trust space's intermediate CAs it knows (configured, and the
    development PKI's when it has one)."""
    anchors = _certificates(cfg.path(cfg.pki.trust_anchor))
    intermediates: list[x509.Certificate] = []
    for path in cfg.smime.intermediates:
        intermediates += _certificates(cfg.path(path))
    pki_dir = cfg.pki_dir
    if pki_dir is not None and (pki_dir / "state.json").is_file():
        from certs.pki import TrustSpacePKI

        pki = TrustSpacePKI(pki_dir)
        intermediates += [pki.ca(name) for name in ("organisations", "personnes")]
    return anchors, intermediates


def trust_store(cfg: Config) -> TrustStore:
    """A TrustStore as the node's S/MIME side validates with, on the CRLs of its CRL directory now
    (no OCSP: for an admin command's check)."""
    anchors, intermediates = trust_space_cas(cfg)
    crls, _ = read_crls(crl_stamp(cfg.crl_dir))
    return TrustStore(anchors, [c.public_bytes(serialization.Encoding.DER) for c in crls], intermediates)


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class Organisation:
    """A domain-bound certificate with its key: signs bounces, decrypts what peers encrypt to the domain."""

    domains: frozenset[str]
    certificate: x509.Certificate
    identity: SigningIdentity


def load_organisation(cert: Path, key: Path) -> Organisation:
    chain = _certificates(cert)
    if not chain:
        raise ValueError(f"{cert}: no certificate")
    loaded = serialization.load_pem_private_key(key.read_bytes(), password=None)
    pkcs8 = loaded.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    leaf = chain[0]
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        domains = frozenset(d.lower().rstrip(".") for d in san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        domains = frozenset()
    if not domains:
        raise ValueError(f"{cert}: an organisation certificate names its domain in a dNSName")
    return Organisation(domains, leaf, SigningIdentity(_der(leaf), pkcs8, [_der(c) for c in chain[1:]]))


def _from_address(message: bytes) -> str | None:
    found = from_addresses(message)
    return found[0].lower() if found else None


class Smime:
    """The S/MIME side of one node; `close()` stops its worker processes."""

    def __init__(self, node: Node) -> None:
        cfg, section = node.cfg, node.cfg.smime
        self.node = node
        self._log = get_logger(component="smime", node=cfg.node.name)
        self.host = cfg.smtp_hostname
        self.section = section
        self.pool = CryptoPool(section.workers)
        anchors, intermediates = trust_space_cas(cfg)
        self.crl_dir = cfg.crl_dir  # the TLS checks read the same directory (gateway.tls.CrlContexts)
        self.cas = [*anchors, *intermediates]
        self._crl_stamp: tuple[tuple[str, float, int], ...] = ()
        self._crl_checked = -CRL_CHECK
        self.trust = TrustStore(anchors, [], intermediates)
        self.trust.ocsp = OcspFetcher()  # certificates that name an OCSP responder are asked it too
        published = PublishedCertificates([cfg.path(p) for p in section.published]) if section.published else None
        self.discovery = Discovery.from_config(
            section, self.trust, local=node.mailboxes.smime_certificates, published=published
        )
        self._refresh_crls()
        try:
            self.organisations = [load_organisation(cfg.path(o.cert), cfg.path(o.key)) for o in section.organisation]
        except (OSError, ValueError) as exc:  # the operator's file: say which and why, not a traceback
            raise ConfigError(f"[[smime.organisation]]: {exc}") from None

    # -- trust ------------------------------------------------------------------------------------

    def _crl_files(self) -> list[Path]:
        return [Path(name) for name, _, _ in crl_stamp(self.crl_dir)]

    def _refresh_crls(self) -> None:
        now = time.monotonic()
        if now - self._crl_checked < CRL_CHECK:
            return
        self._crl_checked = now
        stamp = crl_stamp(self.crl_dir)
        if stamp == self._crl_stamp:
            return
        crls, errors = read_crls(stamp)
        for path, error in errors:
            self._log.warning("unreadable CRL", path=path, error=error)
        self.trust.set_crls([crl.public_bytes(serialization.Encoding.DER) for crl in crls])
        # Also the first CRLs after starting with none: what was judged without them may be usable now.
        self.discovery.forget()  # and a recipient certificate found earlier may be revoked now
        self._crl_stamp = stamp
        for ca in self.uncovered_cas(crls):
            # Hard-fail, here and in TLS: every certificate under this CA is refused until its CRL comes.
            self._log.warning("no current CRL for a trust-space CA", ca=ca.subject.rfc4514_string())

    def uncovered_cas(self, crls: Sequence[x509.CertificateRevocationList]) -> list[x509.Certificate]:
        """The trust-space CAs without a current CRL among `crls` (none at all, or only expired ones)."""
        now = dt.datetime.now(dt.UTC)
        current = {crl.issuer for crl in crls if crl.next_update_utc is None or crl.next_update_utc > now}
        return [ca for ca in self.cas if ca.subject not in current] if self.crl_dir is not None else []

    # -- outbound ---------------------------------------------------------------------------------

    def organisations_for(self, domain: str) -> list[Organisation]:
        """Every `[[smime.organisation]]` entry naming `domain`, in configuration order."""
        domain = domain.lower()
        return [o for o in self.organisations if domain in o.domains]

    def organisation_for(self, domain: str) -> Organisation | None:
        """The entry that signs for `domain`: of those valid now and not revoked by the current CRLs, the
        one that expires last, then the one issued last (a rotation signs with the new certificate from
        its first valid day; a revoked one stops signing as soon as its CRL is here); when none is valid,
        the first."""
        entries = self.organisations_for(domain)
        now = dt.datetime.now(dt.UTC)
        crls, _ = read_crls(crl_stamp(self.crl_dir))  # parsed once per change, shared with the TLS contexts
        valid = [
            o
            for o in entries
            if o.certificate.not_valid_before_utc <= now < o.certificate.not_valid_after_utc
            and not any(
                crl.issuer == o.certificate.issuer
                and crl.get_revoked_certificate_by_serial_number(o.certificate.serial_number) is not None
                for crl in crls
            )
        ]
        if valid:
            # Ties (a CA's end caps both): the one issued last.
            return max(valid, key=lambda o: (o.certificate.not_valid_after_utc, o.certificate.not_valid_before_utc))
        return entries[0] if entries else None

    async def identity_for(self, sender: str, message: bytes) -> SigningIdentity | None:
        """Who signs a message from `sender` (see the module notes)."""
        if sender:
            own = await self.node.mailboxes.signing_identity(sender)
            domain = sender.rpartition("@")[2].lower()
            # Patients hold no keys: the operator signs for them with its patient domain's certificate.
            if own is not None or (not self.section.organisation_fallback and domain != self.node.cfg.node.patient):
                return own
            org = self.organisation_for(domain)
            return org.identity if org else None
        author = _from_address(message)
        org = self.organisation_for(author.rpartition("@")[2]) if author else None
        org = org or self.organisation_for(self.node.cfg.node.domain)
        return org.identity if org else None

    async def protect(
        self, message: bytes, *, sender: str, recipients: Sequence[str], domain: str
    ) -> outbound.Protected:
        """Sign and encrypt `message` for the recipients of one peer `domain` (and the sender)."""
        self._refresh_crls()
        identity = await self.identity_for(sender, message)
        peer = self.section.peers.get(domain.lower(), SmimePeer())
        return await outbound.protect(
            message,
            sender=sender or "<>",
            recipients=recipients,
            identity=identity,
            finder=self.discovery,
            pool=self.pool,
            oaep=peer.oaep,
            gcm=peer.gcm,
        )

    # -- inbound ----------------------------------------------------------------------------------

    async def _candidates(self, recipient: str) -> list[SigningIdentity]:
        own = await self.node.mailboxes.decryption_identities(recipient)
        # Every entry of the domain decrypts: during a rotation peers still encrypt to the old certificate.
        return [*own, *(o.identity for o in self.organisations_for(recipient.rpartition("@")[2]))]

    async def open(
        self, raw: bytes, *, sender: str, recipients: Sequence[str], at: dt.datetime | None = None
    ) -> inbound.Inbound:
        """The inbound decision on `raw` from a peer for local `recipients` (see gateway.smime.inbound)."""
        self._refresh_crls()
        try:
            der = mime.envelope_der(raw)
        except cms.CmsError as exc:
            return inbound.Inbound(False, exc.reason if exc.reason in inbound.REFUSALS else "malformed")
        chosen: SigningIdentity | None = None
        for recipient in recipients:
            candidates = await self._candidates(recipient)
            certs = [x509.load_der_x509_certificate(c.certificate) for c in candidates]
            try:
                matches = cms.addressed_to(der, certs)
            except cms.CmsError as exc:
                return inbound.Inbound(False, exc.reason if exc.reason in inbound.REFUSALS else "malformed")
            mine = [c for c, hit in zip(candidates, matches, strict=True) if hit]
            if not mine:
                return inbound.Inbound(False, "not-for-us", detail=recipient)
            chosen = chosen or mine[0]
        if chosen is None:
            return inbound.Inbound(False, "not-for-us")
        return await inbound.check(
            raw,
            sender=sender,
            certificate=chosen.certificate,
            key=chosen.key,
            pool=self.pool,
            trust=self.trust,
            host=self.host,
            at=at,
        )

    # -- end-to-end submissions -------------------------------------------------------------------

    async def check_submission(
        self, raw: bytes, *, sender: str, recipients: Sequence[str], at: dt.datetime | None = None
    ) -> inbound.Inbound | None:
        """None for a plain message (the node protects it when it leaves). A message its author encrypted
        must have an entry for a certificate of every recipient (found as for the relay); one its author
        signed must verify and be signed by the sender (the same checks as a peer's message)."""
        kind = mime.form(raw)
        if kind == "plain":
            return None
        self._refresh_crls()
        if kind == "signed":
            try:
                opened = await self.pool.verify(raw)
            except cms.CmsError as exc:
                return inbound.Inbound(False, exc.reason if exc.reason in inbound.REFUSALS else "malformed")
            addresses = [sender, *([a] if (a := _from_address(raw)) else [])]
            judged = await inbound.judge(opened, addresses, self.trust, at)
            if isinstance(judged, str):
                return inbound.Inbound(False, judged)
            return inbound.Inbound(True, message=raw, signer=judged.certificate, binding=judged.binding)
        try:
            der = mime.envelope_der(raw)
            for recipient in recipients:
                found = await self.discovery.find(recipient)
                if found.outcome is Outcome.UNAVAILABLE:
                    return inbound.Inbound(False, "recipient-unavailable", detail=recipient)
                if found.outcome is not Outcome.FOUND:
                    return inbound.Inbound(False, "recipient-no-certificate", detail=recipient)
                if not any(cms.addressed_to(der, list(found.certificates))):
                    return inbound.Inbound(False, "missing-recipient", detail=recipient)
        except cms.CmsError as exc:
            return inbound.Inbound(False, exc.reason if exc.reason in inbound.REFUSALS else "malformed")
        return inbound.Inbound(True, message=raw)

    async def fetch_crls(self) -> dict[str, str]:
        """Fetch every `[smime] crl_urls` CRL; one signed by a trust-space CA and newer than the cached
        one replaces it (written whole, then renamed). Returns url -> outcome, for the log and tests."""
        from gateway.smime.discovery import FetchError, fetch_ipkix

        outcomes: dict[str, str] = {}
        if self.crl_dir is None:
            return outcomes
        self.crl_dir.mkdir(parents=True, exist_ok=True)
        for url in self.section.crl_urls:
            try:
                data = await fetch_ipkix(url, limit=16 * 1024 * 1024)
            except FetchError as exc:
                outcomes[url] = f"unavailable: {exc}"
                continue
            except Exception as exc:  # a safety net: one bad crl_urls entry must not stop keep_crls
                outcomes[url] = f"unavailable: {type(exc).__name__} {exc}".rstrip()
                continue
            try:
                crl = load_crl(data)
            except cms.MALFORMED:
                outcomes[url] = "not a CRL"
                continue
            issuer = next((ca for ca in self.cas if ca.subject == crl.issuer), None)
            if issuer is None or not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                outcomes[url] = "not signed by a trust-space CA"
                continue
            name = hashlib.sha256(url.encode()).hexdigest()[:16] + ".crl"
            target = self.crl_dir / name
            if target.is_file():
                with contextlib.suppress(ValueError):
                    cached = x509.load_der_x509_crl(target.read_bytes())
                    if cached.last_update_utc >= crl.last_update_utc:
                        outcomes[url] = "unchanged"
                        continue
            partial = target.with_suffix(".part")
            partial.write_bytes(crl.public_bytes(serialization.Encoding.DER))
            partial.replace(target)
            outcomes[url] = "updated"
        self._crl_checked = -CRL_CHECK  # look at the directory again now
        self._refresh_crls()
        return outcomes

    async def keep_crls(self) -> None:
        """Fetch the configured CRLs now and every `crl_refresh` seconds (failures logged, kept trying)."""
        import asyncio

        while self.section.crl_urls:
            for url, outcome in (await self.fetch_crls()).items():
                if outcome not in ("updated", "unchanged"):
                    self._log.warning("CRL not refreshed", url=url, outcome=outcome)
            await asyncio.sleep(self.section.crl_refresh)

    async def keep_dev_crls(self, every: float = 3600.0) -> None:
        """With a development PKI, publish fresh CRLs when the current ones have less than half their
        life left: validation is hard-fail, and a lapsed CRL would refuse every peer message (451)."""
        pki_dir = self.node.cfg.pki_dir
        if pki_dir is None or not (pki_dir / "state.json").is_file():
            return
        import asyncio

        from certs.pki import DEFAULT_CRL_NEXT_UPDATE, PKIError, TrustSpacePKI

        while True:
            now = dt.datetime.now(dt.UTC)
            soonest = None
            for path in self._crl_files():
                if path.suffix == ".crl":
                    with contextlib.suppress(OSError, ValueError):
                        next_update = x509.load_der_x509_crl(path.read_bytes()).next_update_utc
                        soonest = next_update if soonest is None or (next_update and next_update < soonest) else soonest
            if soonest is None or soonest - now < DEFAULT_CRL_NEXT_UPDATE / 2:
                try:
                    await asyncio.to_thread(TrustSpacePKI(pki_dir).publish_crls)
                    self._log.info("development CRLs published", until=str(now + DEFAULT_CRL_NEXT_UPDATE))
                except (PKIError, OSError) as exc:
                    self._log.warning("development CRLs not published", error=str(exc))
            await asyncio.sleep(every)

    def close(self) -> None:
        self.pool.close()
