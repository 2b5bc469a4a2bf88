"""`mssgw-client`: the professionals' reference client for end-to-end S/MIME (issue 5).

    mssgw-client --user ADDRESS --p12 me.p12 send --to X --subject S < body.txt
    mssgw-client --user ADDRESS --p12 me.p12 list
    mssgw-client --user ADDRESS --p12 me.p12 read UID

Implementation notes
- Keys stay on the user's machine: the PKCS#12 (or PEM certificate and key) is read here, its
  password from `MSSGW_P12_PASSWORD` or a prompt, the mailbox password from `MSSGW_PASSWORD` or a prompt.
- `send` does what an operator does for a plain message, on the user's machine: Direct's wrap as
  message/rfc822, a detached SHA-256 signature, AES-256 encryption for every recipient's certificate
  and the sender's own (gateway.smime.mime.protect); then submission on 587 with STARTTLS and AUTH.
  Recipients' certificates come from the published certificates (`--published`, files or directories,
  as the national directory publishes them) or DNS CERT records (`--dns`), checked against the trust
  anchor as the gateway checks them (gateway.smime.discovery). The gateway refuses a message missing
  an entry for a recipient (550 5.7.1).
- `list` and `read` use aioimaplib over IMAPS (993). A message still encrypted is decrypted with the
  user's key and its signature verified here; a message the receiving operator opened carries its
  Authentication-Results field, shown as the operator's verdict. Either way the signer is shown.
- Revocation: with `--crl-dir` a signer or recipient without a current CRL fails (as on the gateway);
  without it revocation is not checked here, and the output says so.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import os
import re
import smtplib
import ssl
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from email.utils import format_datetime, make_msgid
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from gateway.smime import cms, mime
from gateway.smime.discovery import Discovery, Outcome, PublishedCertificates
from gateway.smime.inbound import from_addresses, judge
from gateway.smime.pool import OpenedDer, verify_der
from gateway.smime.trust import TrustStore


class ClientError(Exception):
    """What the user is told, with exit status 1."""


@dataclass
class Identity:
    address: str
    certificate: x509.Certificate
    key: cms.PrivateKey
    chain: list[x509.Certificate]


def load_identity(args: argparse.Namespace) -> Identity:
    if args.p12:
        secret = os.environ.get("MSSGW_P12_PASSWORD")
        if secret is None:
            secret = getpass.getpass(f"password of {args.p12}: ")
        try:
            key, cert, extra = pkcs12.load_key_and_certificates(Path(args.p12).read_bytes(), secret.encode() or None)
        except ValueError as exc:
            raise ClientError(f"{args.p12}: {exc}") from None
        chain = list(extra or [])
    elif args.cert and args.key:
        cert = x509.load_pem_x509_certificate(Path(args.cert).read_bytes())
        key = serialization.load_pem_private_key(Path(args.key).read_bytes(), password=None)
        chain = []
    else:
        raise ClientError("give --p12 FILE, or --cert and --key")
    if cert is None or not isinstance(key, cms.PrivateKey):
        raise ClientError("the key store holds no RSA or EC key with its certificate")
    return Identity(args.user.lower(), cert, key, [c for c in chain if c.issuer != c.subject])  # no root


def trust_store(args: argparse.Namespace, identity: Identity) -> TrustStore:
    # --ca: the root, and optionally the trust space's CA certificates after it (a bundle's chain.pem)
    given = x509.load_pem_x509_certificates(Path(args.ca).read_bytes())
    anchors = [c for c in given if c.issuer == c.subject]
    if not anchors:
        raise ClientError(f"{args.ca} holds no self-signed root certificate")
    crls = [path.read_bytes() for path in sorted(Path(args.crl_dir).glob("*.crl"))] if args.crl_dir else []
    intermediates = [c for c in [*given, *identity.chain] if c.issuer != c.subject]
    return TrustStore(anchors, crls, intermediates, revocation="hard-fail" if args.crl_dir else "off")


def tls_context(args: argparse.Namespace) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=args.ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = args.host not in ("127.0.0.1", "::1", "localhost")
    return ctx


def password() -> str:
    return os.environ.get("MSSGW_PASSWORD") or getpass.getpass("mailbox password: ")


# -- send ------------------------------------------------------------------------------------------


async def recipient_certificates(
    args: argparse.Namespace, store: TrustStore, recipients: Sequence[str]
) -> list[x509.Certificate]:
    published = PublishedCertificates([Path(p) for p in args.published]) if args.published else None
    servers, port = [], 53
    if args.dns:
        host, _, port_text = args.dns.partition(":")
        servers, port = [host], int(port_text or 53)
    finder = Discovery(store, published=published, nameservers=servers, port=port, use_dns=bool(servers))
    found: list[x509.Certificate] = []
    for recipient in recipients:
        result = await finder.find(recipient)
        if result.outcome is not Outcome.FOUND:
            why = ", ".join(sorted({r.reason for r in result.rejected})) or result.detail or result.outcome.value
            raise ClientError(f"no usable certificate for {recipient}: {why}")
        found += result.certificates
    return found


def send(args: argparse.Namespace) -> str:
    identity = load_identity(args)
    store = trust_store(args, identity)
    recipients = [r.strip().lower() for r in args.to]
    certificates = asyncio.run(recipient_certificates(args, store, recipients))
    msg = EmailMessage()
    msg["From"] = identity.address
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = args.subject
    msg["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    msg["Message-ID"] = make_msgid(domain=identity.address.rpartition("@")[2])
    msg.set_content(sys.stdin.read() if args.body is None else Path(args.body).read_text())
    plain = msg.as_bytes(policy=default_policy.clone(linesep="\r\n"))
    protected = mime.protect(
        plain,
        signer=identity.certificate,
        key=identity.key,
        chain=identity.chain,
        recipients=[cms.Recipient(c) for c in [identity.certificate, *certificates]],
    )
    with smtplib.SMTP(args.host, args.smtp_port, timeout=60) as smtp:
        smtp.starttls(context=tls_context(args))
        smtp.login(identity.address, password())
        try:
            smtp.sendmail(identity.address, recipients, protected)
        except smtplib.SMTPException as exc:
            raise ClientError(f"refused: {exc}") from None
    count = len(certificates) + 1
    return f"sent to {', '.join(recipients)}: signed by {identity.address}, encrypted for {count} certificates"


# -- list and read ---------------------------------------------------------------------------------


_FETCH = re.compile(rb"^\d+ FETCH \(.*?UID (\d+)")


async def _fetch(args: argparse.Namespace, address: str, what: str, uids: str) -> dict[int, bytes]:
    from aioimaplib import aioimaplib  # type: ignore[import-untyped]

    client = aioimaplib.IMAP4_SSL(host=args.host, port=args.imap_port, timeout=60, ssl_context=tls_context(args))
    await client.wait_hello_from_server()
    login = await client.login(address, password())
    if login.result != "OK":
        raise ClientError(f"IMAP login refused: {b' '.join(login.lines).decode(errors='replace')}")
    selected = await client.select(args.folder)
    if selected.result != "OK":
        raise ClientError(f"cannot open {args.folder}")
    response = await client.uid("fetch", uids, f"(UID {what})")
    await client.logout()
    out: dict[int, bytes] = {}
    uid = None
    for line in response.lines:
        if isinstance(line, bytearray):
            if uid is not None:
                out[uid] = bytes(line)
            uid = None
            continue
        m = _FETCH.match(line)
        if m:
            uid = int(m.group(1))
    return out


@dataclass
class Shown:
    message: bytes  # what to display: the inner message when it was encrypted
    signer: str  # who signed, and who says so


def open_message(raw: bytes, identity: Identity, store: TrustStore) -> Shown:
    """Decrypt (when encrypted for us) and verify here; else report the operator's verdict."""
    if mime.form(raw) == "enveloped":
        try:
            opened = mime.unprotect(raw, identity.certificate, identity.key)
        except cms.CmsError as exc:
            return Shown(raw, f"cannot open: {exc}")
        der = OpenedDer(
            opened.message,
            opened.wrapped,
            [
                (s.certificate.public_bytes(serialization.Encoding.DER) if s.certificate else None, s.ok, s.reason)
                for s in opened.signed.signers
            ],
            [c.public_bytes(serialization.Encoding.DER) for c in opened.signed.certificates],
        )
        return Shown(opened.message, asyncio.run(_signer(der, opened.message, store, "verified here")))
    if mime.form(raw) == "signed":
        try:
            der = verify_der(raw)
        except cms.CmsError as exc:
            return Shown(raw, f"bad signature: {exc}")
        return Shown(raw, asyncio.run(_signer(der, raw, store, "verified here")))
    header = BytesParser(policy=default_policy).parsebytes(raw, headersonly=True)
    results = [str(v) for v in header.get_all("Authentication-Results", [])]
    for value in results:
        m = re.search(r"smime=pass body\.smime-identifier=(\S+)\s+body\.smime-serial=([0-9A-Fa-f]+)", value)
        if m:
            by = value.split(";", 1)[0].strip()
            return Shown(raw, f"{m.group(1)} (certificate {m.group(2)}), verified by {by}")
    return Shown(raw, "not signed")


async def _signer(opened: OpenedDer, message: bytes, store: TrustStore, how: str) -> str:
    judged = await judge(opened, from_addresses(message), store)
    if isinstance(judged, str):
        return f"INVALID signature ({judged})"
    cert = judged.certificate
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = san.get_values_for_type(x509.RFC822Name) or san.get_values_for_type(x509.DNSName)
    return f"{names[0] if names else cert.subject.rfc4514_string()} (certificate {cert.serial_number:X}), {how}"


def list_messages(args: argparse.Namespace) -> str:
    identity = load_identity(args)
    store = trust_store(args, identity)
    bodies = asyncio.run(_fetch(args, identity.address, "BODY.PEEK[]", "1:*"))
    lines = []
    for uid, raw in sorted(bodies.items()):
        shown = open_message(raw, identity, store)
        h = BytesParser(policy=default_policy).parsebytes(shown.message, headersonly=True)
        lines.append(
            f"{uid:>5}  {h.get('Date', '')!s:31}  {h.get('From', '')!s:40}  {h.get('Subject', '')}  [{shown.signer}]"
        )
    return "\n".join(lines) or f"{args.folder} is empty"


def read_message(args: argparse.Namespace) -> str:
    identity = load_identity(args)
    store = trust_store(args, identity)
    bodies = asyncio.run(_fetch(args, identity.address, "BODY.PEEK[]", str(args.uid)))
    if args.uid not in bodies:
        raise ClientError(f"no message with UID {args.uid} in {args.folder}")
    shown = open_message(bodies[args.uid], identity, store)
    msg = BytesParser(policy=default_policy).parsebytes(shown.message)
    out = [f"Signed-By: {shown.signer}"]
    out += [f"{name}: {msg[name]}" for name in ("From", "To", "Cc", "Date", "Subject") if msg[name]]
    part = msg.get_body(preferencelist=("plain", "html"))
    out += ["", part.get_content() if part is not None else "(no text part)"]
    return "\n".join(out)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mssgw-client", description="end-to-end S/MIME mail for professionals")
    p.add_argument("--user", required=True, help="your mailbox address")
    p.add_argument("--p12", help="your PKCS#12 (password: $MSSGW_P12_PASSWORD or a prompt)")
    p.add_argument("--cert", help="your certificate (PEM), with --key")
    p.add_argument("--key", help="your private key (PEM, unencrypted)")
    p.add_argument("--ca", required=True, help="the trust-space root certificate, and its CA certificates (PEM)")
    p.add_argument("--crl-dir", help="current CRLs (*.crl, DER); without it revocation is not checked")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--smtp-port", type=int, default=587)
    p.add_argument("--imap-port", type=int, default=993)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("send", help="sign and encrypt here, then submit")
    s.add_argument("--to", action="append", required=True)
    s.add_argument("--subject", required=True)
    s.add_argument("--body", help="file with the text (default: standard input)")
    s.add_argument("--published", action="append", default=[], help="published certificates (file or directory)")
    s.add_argument("--dns", help="DNS server for CERT records, HOST[:PORT]")
    for name in ("list", "read"):
        r = sub.add_parser(name, help="list the folder" if name == "list" else "show one message and who signed it")
        r.add_argument("--folder", default="INBOX")
        if name == "read":
            r.add_argument("uid", type=int)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        run = {"send": send, "list": list_messages, "read": read_message}[args.command]
        print(run(args))
    except (ClientError, OSError, smtplib.SMTPException) as exc:
        print(f"mssgw-client: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
