"""`mssgw pki ...`: the development trust-space PKI (IGC-Santé-like), issuance and revocation."""

from __future__ import annotations

import argparse
import base64
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID

from certs.pki import Issued, PKIError, TrustSpacePKI, parse_reason, write_bundle
from directory.addresses import domain_of
from gateway.audit.events import AuditEvent
from gateway.auth.passwords import generate_password
from gateway.cli.base import Command, Context, Outcome, read_secret_stdin, table
from gateway.errors import ConfigError, NotFound, UsageError
from gateway.smime.discovery import cert_names
from gateway.smime.service import trust_store
from gateway.store.mailboxes import PrivateKey

PASSPHRASE_ENV = "MSSGW_PKI_PASSPHRASE"  # noqa: S105 (a variable name)


def _dir(ctx: Context, args: argparse.Namespace) -> Path:
    if getattr(args, "pki_dir", None):
        return Path(args.pki_dir).resolve()
    d = ctx.cfg.pki_dir
    if d is None:
        raise ConfigError("this node has no development PKI (pki.dir is not set); pass --pki-dir DIR")
    return d


def open_pki(ctx: Context, args: argparse.Namespace) -> TrustSpacePKI:
    path = _dir(ctx, args)
    if not TrustSpacePKI.exists(path):
        raise UsageError(f"no PKI at {path}: run `mssgw pki init`")
    passphrase = os.environ.get(PASSPHRASE_ENV)
    return TrustSpacePKI(path, passphrase.encode() if passphrase else None)


BUNDLE_FILES = frozenset({"cert.pem", "chain.pem", "fullchain.pem", "key.pem", "root.pem"})
"""What write_bundle writes whatever the certificate (and <CN>.p12)."""


def _pki_call(fn: Callable[[], Any]) -> Any:
    """PKI library errors are precise already; they become command errors here."""
    try:
        return fn()
    except PKIError as exc:
        raise UsageError(str(exc)) from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None


async def init(ctx: Context, args: argparse.Namespace) -> Outcome:
    path = _dir(ctx, args)
    base = args.crl_base_url or ctx.cfg.pki.crl_base_url or f"http://crl.{ctx.cfg.node.domain}/pki"
    passphrase = os.environ.get(PASSPHRASE_ENV)
    pki: TrustSpacePKI = _pki_call(
        lambda: TrustSpacePKI.create(
            path,
            label=args.label or ctx.cfg.node.domain,
            crl_base_url=base,
            key_size=args.key_size,
            passphrase=passphrase.encode() if passphrase else None,
        )
    )
    data = {"dir": str(path), "label": pki.label, "root_serial": format(pki.root.serial_number, "x")}
    return Outcome(data, f"PKI created in {path} (root {data['root_serial']})", audit=data)


def _p12_password(args: argparse.Namespace) -> tuple[bytes | None, str | None]:
    if not args.p12:
        return None, None
    if args.p12_password_stdin:
        return read_secret_stdin("PKCS#12 password").encode(), None
    shown = generate_password()
    return shown.encode(), shown


async def _issue(
    ctx: Context,
    args: argparse.Namespace,
    issue: Callable[[TrustSpacePKI], Issued],
    attach: tuple[str, str] | None,
) -> Outcome:
    pki = open_pki(ctx, args)
    out = Path(args.out)
    _check_out(out)  # before issuing: a certificate whose key cannot be written is one nobody holds
    password, shown = _p12_password(args)
    issued: Issued = _pki_call(lambda: issue(pki))
    name = issued.certificate.subject.rfc4514_string().split("CN=")[-1].split(",")[0] or "bundle"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    try:
        files = _pki_call(lambda: write_bundle(issued, out, name=safe, p12_password=password, root=pki.root))
    except (OSError, UsageError) as exc:  # issued, not written (a full disk): revoked, so no one can use it
        pki.revoke(issued.serial, x509.ReasonFlags.cessation_of_operation)
        _pki_call(pki.publish_crls)
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"{out}: {text}; certificate {issued.serial} was issued, then revoked") from None
    data: dict[str, Any] = {
        "serial": issued.serial,
        "subject": issued.certificate.subject.rfc4514_string(),
        "not_after": issued.certificate.not_valid_after_utc.isoformat(),
        "files": {k: str(v) for k, v in files.items()},
    }
    if attach is not None:
        address, usage = attach
        try:
            data["attached_to"] = address
            repo = ctx.node.mailboxes
            if usage == "smime":  # the node signs as the address (Direct model): it keeps the key, sealed
                await repo.add_certificate(address, issued.certificate, usage, key=issued.key, chain=issued.chain)
                data["signing_key_held"] = True
            else:
                await repo.add_certificate(address, issued.certificate, usage)
        except NotFound:
            data.pop("attached_to")
    text = f"issued {data['subject']} serial {issued.serial}, valid until {data['not_after']}\n" + "\n".join(
        f"  {k}: {v}" for k, v in data["files"].items()
    )
    if "attached_to" in data:
        text += f"\n  attached to local mailbox {data['attached_to']} ({attach[1] if attach else ''})"
    if shown:
        data["p12_password"] = shown
        text += f"\nPKCS#12 password (shown once): {shown}"
    return Outcome(data, text, audit={k: v for k, v in data.items() if k != "p12_password"})


async def issue_server(ctx: Context, args: argparse.Namespace) -> Outcome:
    return await _issue(ctx, args, lambda pki: pki.issue_server(args.hosts), None)


PATIENT_KEYS = "patient mailboxes hold no keys: the operator signs for them with its domain certificate"


async def issue_address(ctx: Context, args: argparse.Namespace) -> Outcome:
    if domain_of(args.address.strip().lower()) == ctx.cfg.node.patient:
        raise UsageError(PATIENT_KEYS)  # as attach-address: else the node would sign as the patient's address
    return await _issue(ctx, args, lambda pki: pki.issue_address(args.address), (args.address.lower(), "smime"))


def _read_identity(args: argparse.Namespace) -> tuple[x509.Certificate, PrivateKey, list[x509.Certificate]]:
    """The certificate, key and chain an operator brings: a PKCS#12 file (as the national PKI delivers
    software certificates), or PEM certificate (with its chain after it) and key files."""
    password = read_secret_stdin("password").encode() if args.password_stdin else None
    if args.p12:
        path = Path(args.p12)
        try:
            key, cert, extra = pkcs12.load_key_and_certificates(path.read_bytes(), password)
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
        except (ValueError, UnsupportedAlgorithm):
            raise UsageError(f"{path}: not a PKCS#12 file, the wrong password, or an unsupported algorithm") from None
        if cert is None or key is None:
            raise UsageError(f"{path}: the PKCS#12 file must hold a certificate and its private key")
        chain = list(extra)
    else:
        if not args.key:
            raise UsageError("--cert FILE needs --key FILE")
        try:
            certs = x509.load_pem_x509_certificates(Path(args.cert).read_bytes())
            key_bytes = Path(args.key).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {exc.filename}: {exc.strerror}") from None
        except ValueError:
            raise UsageError(f"{args.cert}: not a PEM certificate") from None
        try:
            key = serialization.load_pem_private_key(key_bytes, password)
        except TypeError:  # encrypted and no password, or a password for a clear key
            which = "not encrypted: leave out --password-stdin" if password else "encrypted: add --password-stdin"
            raise UsageError(f"{args.key}: the key is {which}") from None
        except (ValueError, UnsupportedAlgorithm):
            raise UsageError(
                f"{args.key}: not a PEM private key, the wrong password, or an unsupported algorithm"
            ) from None
        cert, chain = certs[0], certs[1:]
    if not isinstance(key, rsa.RSAPrivateKey):
        # The node decrypts with the address's key too, and its CMS does key transport (RSA) only.
        raise UsageError("the key must be RSA: the node signs and decrypts with it (RSA key transport)")
    usage = _key_usage(cert)
    if usage is not None and not ((usage.digital_signature or usage.content_commitment) and usage.key_encipherment):
        raise UsageError(
            "the certificate's key usage must allow signing and key encipherment: the node signs and "
            "decrypts as the address with one certificate"
        )
    return cert, key, chain


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


async def attach_address(ctx: Context, args: argparse.Namespace) -> Outcome:
    """Attach an address-bound S/MIME certificate issued elsewhere (the national PKI) to a local mailbox:
    the node then signs and decrypts as the address with it, as with one from `issue-address`. Refused
    unless peers would accept it: checked as a peer checks a signer (trust-space path, CRLs of the node's
    CRL directory, e-mail protection, key strength, the address in the subjectAltName)."""
    address = args.address.strip().lower()
    if domain_of(address) == ctx.cfg.node.patient:
        raise UsageError(PATIENT_KEYS)
    await ctx.node.mailboxes.describe(address)  # NotFound: not a local mailbox
    cert, key, chain = _read_identity(args)
    verdict = await trust_store(ctx.cfg).check(cert, chain, [address])
    if not verdict.ok:
        raise UsageError(f"not attached: every peer would refuse this certificate: {verdict.text} ({verdict.reason})")
    if verdict.binding != "address":
        raise UsageError(
            "not attached: the certificate names the domain, not the address (a domain certificate is "
            "configured as [[smime.organisation]])"
        )
    fingerprint = await ctx.node.mailboxes.add_certificate(address, cert, "smime", key=key, chain=chain)
    data = {
        "attached_to": address,
        "fingerprint": fingerprint,
        "serial": format(cert.serial_number, "x"),
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "signing_key_held": True,
    }
    text = f"attached {data['subject']} (serial {data['serial']}, valid until {data['not_after']}) to {address}"
    return Outcome(data, text, audit=data)


async def issue_app(ctx: Context, args: argparse.Namespace) -> Outcome:
    return await _issue(ctx, args, lambda pki: pki.issue_app(args.address), (args.address.lower(), "tls"))


async def issue_domain(ctx: Context, args: argparse.Namespace) -> Outcome:
    """A domain-bound S/MIME certificate (an organisation's): signs bounces and what patients send,
    decrypts what peers encrypt to the domain. Only this node's mail domains: another's would be refused
    by every peer binding a signer to its sender's domain."""
    domains = [d.lower().rstrip(".") for d in args.domains] or [ctx.cfg.node.domain, ctx.cfg.node.patient]
    foreign = [d for d in domains if not ctx.node.is_local_domain(d)]
    if foreign:
        raise UsageError(f"{foreign[0]} is not a mail domain of this node ({', '.join(ctx.cfg.node.local_domains)})")
    return await _issue(ctx, args, lambda pki: pki.issue_domain(*domains), None)


async def revoke(ctx: Context, args: argparse.Namespace) -> Outcome:
    pki = open_pki(ctx, args)
    reason = _pki_call(lambda: parse_reason(args.reason))
    entry = _pki_call(lambda: pki.revoke(args.serial, reason))
    crls = _pki_call(pki.publish_crls)
    data = {
        "serial": entry.serial,
        "subject": entry.subject,
        "reason": entry.revocation_reason,
        "revoked_at": entry.revoked_at.isoformat() if entry.revoked_at else None,
        "crls": {k: str(v) for k, v in crls.items()},
    }
    return Outcome(
        data,
        f"revoked {entry.serial} ({entry.subject}), reason {entry.revocation_reason}; CRLs published",
        audit=data,
    )


async def crl(ctx: Context, args: argparse.Namespace) -> Outcome:
    pki = open_pki(ctx, args)
    crls = _pki_call(pki.publish_crls)
    data = {k: str(v) for k, v in crls.items()}
    return Outcome(data, "\n".join(f"{k}: {v}" for k, v in data.items()), audit=data)


def _check_out(out: Path) -> None:
    """The bundle directory exists or can be made, and holds none of the bundle's files (checked before
    issuing; a failure while writing is still possible, and revokes what was issued)."""
    if out.exists():
        if not out.is_dir():
            raise UsageError(f"{out}: not a directory")
        existing = sorted(p.name for p in out.iterdir() if p.name in BUNDLE_FILES)
        if existing:
            raise UsageError(f"bundle files already exist in {out}: {', '.join(existing)}")
        return
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{out}: cannot be made in {parent}")


async def export_root(ctx: Context, args: argparse.Namespace) -> Outcome:
    pki = open_pki(ctx, args)
    path = Path(args.file)
    try:
        path.write_bytes(pki.root.public_bytes(serialization.Encoding.PEM))
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    data = {"file": str(path), "subject": pki.root.subject.rfc4514_string()}
    return Outcome(data, f"root certificate written to {path}", audit=data)


async def list_(ctx: Context, args: argparse.Namespace) -> Outcome:
    pki = open_pki(ctx, args)
    rows = [e.to_json() for e in pki.entries()]
    text = table(rows, ["serial", "ca", "profile", "subject", "not_after", "revoked_at"])
    return Outcome(rows, text, audit={"results": len(rows)})


def _cert_line(name: str, cert: x509.Certificate) -> str:
    """A zone-file CERT record (RFC 4398 §2.2): type PKIX, key tag 0 and algorithm 0 (§2.1: no key)."""
    return f"{name} IN CERT PKIX 0 0 {base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()}"


def _record(name: str, cert: x509.Certificate, bound: str, owner: str) -> dict[str, Any]:
    return {
        "name": name,
        "binding": bound,
        "owner": owner,
        "fingerprint": cert.fingerprint(hashes.SHA256()).hex(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "line": _cert_line(name, cert),
    }


def _domain_certificates(ctx: Context, files: list[str]) -> list[dict[str, Any]]:
    """Domain-bound certificates from PEM files: each must be for e-mail protection and name (dNSName)
    a mail domain of this node; one record at each such domain."""
    records: list[dict[str, Any]] = []
    for file in files:
        path = Path(file)
        try:
            certs = x509.load_pem_x509_certificates(path.read_bytes())
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
        except ValueError:
            raise UsageError(f"{path} holds no PEM certificate") from None
        for cert in certs:
            subject = cert.subject.rfc4514_string()
            try:
                purposes = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            except x509.ExtensionNotFound:
                purposes = x509.ExtendedKeyUsage([])
            if ExtendedKeyUsageOID.EMAIL_PROTECTION not in purposes:
                raise UsageError(f"{path}: {subject} is not an e-mail protection certificate")
            try:
                san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            except x509.ExtensionNotFound:
                san = x509.SubjectAlternativeName([])
            names = [d.lower().rstrip(".") for d in san.get_values_for_type(x509.DNSName)]
            domains = [d for d in names if ctx.node.is_local_domain(d)]
            if not domains:
                raise UsageError(f"{path}: {subject} names no mail domain of this node (dNSName)")
            records += [_record(f"{d}.", cert, "domain", d) for d in domains]
    return records


async def publish_dns(ctx: Context, args: argparse.Namespace) -> Outcome:
    """Zone-file CERT records for recipient certificate discovery (RFC 4398 §2.3, DCDT): each active local
    mailbox's unexpired S/MIME certificates at <local part>.<domain>, domain-bound ones at the domain."""
    now = datetime.now(UTC)
    records: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for mailbox in await ctx.node.mailboxes.list():
        if not mailbox["active"]:
            continue
        address = mailbox["address"]
        names = cert_names(address)
        for cert in await ctx.node.mailboxes.smime_certificates(address):
            if names is None or names[0] is None:
                skipped.append({"address": address, "reason": "the local part cannot be a DNS name"})
            elif cert.not_valid_after_utc <= now:
                skipped.append({"address": address, "reason": f"expired {cert.not_valid_after_utc.isoformat()}"})
            else:
                records.append(_record(names[0].to_text(), cert, "address", address))
    records += _domain_certificates(ctx, args.domain_cert or [])
    lines = [r["line"] for r in records] + [f"; skipped {s['address']}: {s['reason']}" for s in skipped]
    data = {"records": records, "skipped": skipped}
    audit = {
        "records": len(records),
        "skipped": len(skipped),
        "domains": sorted({r["owner"] for r in records if r["binding"] == "domain"}),
    }
    return Outcome(data, "\n".join(lines) if lines else "; no certificate to publish", audit=audit)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    pki_common = argparse.ArgumentParser(add_help=False, parents=[common])
    pki_common.add_argument("--pki-dir", help="PKI directory (default: the node's pki.dir)")
    grp = sub.add_parser("pki", help="the development trust-space PKI").add_subparsers(required=True, metavar="ACTION")
    p = grp.add_parser("init", parents=[pki_common], help="create the root, ORGANISATIONS and PERSONNES CAs")
    p.add_argument("--label", help="label in the CA names (default: the node's domain)")
    p.add_argument("--crl-base-url", help="where CRLs are published")
    p.add_argument("--key-size", type=int, default=2048, choices=[2048, 3072, 4096])
    p.set_defaults(_command=Command(AuditEvent.PKI_INITIALISED, init))

    def bundle_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--out", required=True, help="directory for cert.pem, chain.pem, fullchain.pem, key.pem")
        p.add_argument("--p12", action="store_true", help="also write a PKCS#12 a mail client can import")
        p.add_argument("--p12-password-stdin", action="store_true", help="read the PKCS#12 password from stdin")

    p = grp.add_parser("issue-server", parents=[pki_common], help="TLS server+client certificate of a node")
    p.add_argument("hosts", nargs="+")
    bundle_options(p)
    p.set_defaults(_command=Command(AuditEvent.PKI_ISSUED, issue_server))
    p = grp.add_parser("issue-address", parents=[pki_common], help="address-bound S/MIME certificate")
    p.add_argument("address")
    bundle_options(p)
    p.set_defaults(_command=Command(AuditEvent.PKI_ISSUED, issue_address))
    p = grp.add_parser(
        "attach-address", parents=[common], help="attach an S/MIME certificate and key issued elsewhere to a mailbox"
    )
    p.add_argument("address")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--p12", metavar="FILE", help="PKCS#12 file with the certificate, its key and chain")
    source.add_argument("--cert", metavar="FILE", help="PEM certificate, its chain after it (with --key)")
    p.add_argument("--key", metavar="FILE", help="PEM private key")
    p.add_argument("--password-stdin", action="store_true", help="read the PKCS#12 or key password from stdin")
    p.set_defaults(_command=Command(AuditEvent.PKI_ATTACHED, attach_address))
    p = grp.add_parser("issue-app", parents=[pki_common], help="TLS client certificate of an APP mailbox")
    p.add_argument("address")
    bundle_options(p)
    p.set_defaults(_command=Command(AuditEvent.PKI_ISSUED, issue_app))
    p = grp.add_parser(
        "issue-domain", parents=[pki_common], help="domain-bound S/MIME certificate ([[smime.organisation]])"
    )
    p.add_argument("domains", nargs="*", metavar="DOMAIN", help="default: the node's domain and its patient domain")
    bundle_options(p)
    p.set_defaults(_command=Command(AuditEvent.PKI_ISSUED, issue_domain))
    p = grp.add_parser("revoke", parents=[pki_common], help="revoke a certificate and publish the CRLs")
    p.add_argument("serial", help="serial number in hexadecimal")
    p.add_argument("--reason", required=True, help="RFC 5280 reason, e.g. keyCompromise, superseded")
    p.set_defaults(_command=Command(AuditEvent.PKI_REVOKED, revoke))
    p = grp.add_parser("crl", parents=[pki_common], help="publish fresh CRLs")
    p.set_defaults(_command=Command(AuditEvent.PKI_CRL_PUBLISHED, crl))
    p = grp.add_parser("export-root", parents=[pki_common], help="write the root certificate (PEM)")
    p.add_argument("file")
    p.set_defaults(_command=Command(AuditEvent.PKI_ROOT_EXPORTED, export_root))
    p = grp.add_parser("list", parents=[pki_common], help="issued certificates")
    p.set_defaults(_command=Command(AuditEvent.PKI_LISTED, list_))
    p = grp.add_parser("publish-dns", parents=[common], help="zone-file CERT records of this node's certificates")
    p.add_argument(
        "--domain-cert",
        action="append",
        metavar="PEM",
        help="a domain-bound S/MIME certificate to publish at its domain (repeatable)",
    )
    p.set_defaults(_command=Command(AuditEvent.PKI_DNS_PUBLISHED, publish_dns))
