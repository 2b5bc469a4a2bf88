"""`mssgw mailbox ...`: this operator's own mailboxes."""

from __future__ import annotations

import argparse
import ipaddress
from typing import Any

from directory import national
from directory.addresses import check_address, domain_of
from directory.identifiers import PP_ID_TYPES, check_idnatps, split_idnatps
from gateway.audit.events import AuditEvent
from gateway.auth import totp
from gateway.auth.passwords import generate_password, hash_async
from gateway.cli.base import Command, Context, Outcome, read_secret_stdin, table
from gateway.errors import UsageError
from gateway.store.logins import LoginRecords
from gateway.store.mailboxes import Owner

KINDS = ("PER", "ORG", "APP", "CAB")


def local_address(ctx: Context, address: str) -> str:
    address = address.strip().lower()
    reason = check_address(address)
    if reason:
        raise UsageError(f"invalid address {address!r}: {reason}")
    if not ctx.node.is_local_domain(domain_of(address)):
        domains = ", ".join(ctx.cfg.node.local_domains)
        raise UsageError(f"{address} is not in a domain of this node ({domains})")
    return address


async def _new_password(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(argon2 hash, password to show once) from --password-stdin or --generate-password."""
    if args.password_stdin and args.generate_password:
        raise UsageError("--password-stdin and --generate-password are exclusive")
    if args.password_stdin:
        return await hash_async(read_secret_stdin("password")), None
    if args.generate_password:
        pw = generate_password()
        return await hash_async(pw), pw
    return None, None


# Options that become directory fields: refused if the national format cannot hold them (`directory export`).
_DIRECTORY_FIELDS: dict[str, tuple[national.Part, str]] = {
    "service": ("mailbox", "service"),
    "last_name": ("professional", "last_name"),
    "first_name": ("professional", "first_name"),
    "civility": ("professional", "civility"),
    "profession_code": ("professional", "profession_code"),
    "profession_label": ("professional", "profession_label"),
}


async def add(ctx: Context, args: argparse.Namespace) -> Outcome:
    address = local_address(ctx, args.address)
    for option, (part, attr) in _DIRECTORY_FIELDS.items():
        problem = national.field_problem(national.column(part, attr), getattr(args, option) or "")
        if problem:
            raise UsageError(f"--{option.replace('_', '-')}: {problem}")
    if domain_of(address) == ctx.cfg.node.patient:
        raise UsageError(f"{address} is in the patient domain: patient mailboxes are made by `mssgw patient add`")
    owner = None
    if args.idnat:
        reason = check_idnatps(args.idnat)
        if reason:
            raise UsageError(f"invalid IdNatPS {args.idnat!r}: {reason}")
        id_type, id_pp = split_idnatps(args.idnat)
        owner = Owner(
            id_nat_ps=id_type + id_pp,  # as validated: stripped (" 8100..." made a second professional)
            id_type=id_type,
            id_pp=id_pp,
            last_name=args.last_name or "",
            first_name=args.first_name or "",
            civility=args.civility or "",
            profession_code=args.profession_code or "",
            profession_label=args.profession_label or "",
        )
    elif args.type == "PER":
        raise UsageError("a PER mailbox belongs to a professional: give --idnat (8+RPPS or 0+ADELI)")
    pw_hash, shown = await _new_password(args)
    info = await ctx.node.mailboxes.create(
        address,
        args.type,
        owner=owner,
        service=args.service or "",
        list_rouge=args.list_rouge,
        password_hash=pw_hash,
    )
    data: dict[str, Any] = dict(info)
    text = f"mailbox {address} ({args.type}) created"
    if shown:
        data["password"] = shown
        text += f"\npassword (shown once): {shown}"
    elif pw_hash is None:
        text += "\nno password set: it cannot log in with one until `mssgw mailbox passwd`"
    return Outcome(data, text, audit={"address": address, "type": args.type, "password_set": pw_hash is not None})


async def list_(ctx: Context, args: argparse.Namespace) -> Outcome:
    rows = await ctx.node.mailboxes.list(domain=args.domain, kind=args.type)
    return Outcome(
        rows,
        table(rows, ["address", "type", "active", "has_password", "totp_enrolled"]),
        audit={"results": len(rows)},
    )


async def show(ctx: Context, args: argparse.Namespace) -> Outcome:
    info = await ctx.node.mailboxes.describe(args.address)
    return Outcome(info, "\n".join(f"{k}: {v}" for k, v in info.items()), audit={"address": info["address"]})


def _toggle(active: bool) -> Any:
    async def run(ctx: Context, args: argparse.Namespace) -> Outcome:
        changed = await ctx.node.mailboxes.set_active(args.address, active)
        state = "enabled" if active else "disabled"
        address = args.address.lower()
        text = f"{address} {state}" if changed else f"{address} was already {state}"
        return Outcome({"address": address, "active": active, "changed": changed}, text, audit={"changed": changed})

    return run


async def keep_smime(ctx: Context, args: argparse.Namespace) -> Outcome:
    keep = args.state == "on"
    changed = await ctx.node.mailboxes.set_keep_smime(args.address, keep)
    address = args.address.lower()
    text = (
        f"{address} now {'keeps' if keep else 'does not keep'} the S/MIME form of messages from peers"
        if changed
        else f"{address} already {'kept' if keep else 'did not keep'} the S/MIME form"
    )
    return Outcome({"address": address, "keep_smime": keep, "changed": changed}, text, audit={"keep_smime": keep})


async def delete(ctx: Context, args: argparse.Namespace) -> Outcome:
    address = args.address.lower()
    if not args.yes:
        raise UsageError(f"deleting {address} destroys its messages: add --yes to confirm")
    await ctx.node.mailboxes.delete(address)
    return Outcome({"address": address, "deleted": True}, f"{address} deleted", audit={"address": address})


async def passwd(ctx: Context, args: argparse.Namespace) -> Outcome:
    if not (args.password_stdin or args.generate_password):
        raise UsageError("give --password-stdin or --generate-password")
    await ctx.node.mailboxes.describe(args.address)  # fail before hashing if the mailbox does not exist
    pw_hash, shown = await _new_password(args)
    assert pw_hash is not None
    await ctx.node.mailboxes.set_password(args.address, pw_hash)
    address = args.address.lower()
    data: dict[str, Any] = {"address": address, "password_set": True}
    text = f"password of {address} changed"
    if shown:
        data["password"] = shown
        text += f"\npassword (shown once): {shown}"
    return Outcome(data, text, audit={"address": address})


async def delegate(ctx: Context, args: argparse.Namespace) -> Outcome:
    changed = await ctx.node.mailboxes.delegate(args.mailbox, args.user, remove=args.remove)
    org, user = args.mailbox.lower(), args.user.lower()
    verb = "no longer acts" if args.remove else "may act"
    text = f"{user} {verb} for {org}" + ("" if changed else " (unchanged)")
    return Outcome(
        {"mailbox": org, "user": user, "delegated": not args.remove, "changed": changed},
        text,
        audit={"changed": changed},
    )


async def totp_(ctx: Context, args: argparse.Namespace) -> Outcome:
    address = args.address.lower()
    await ctx.node.mailboxes.describe(address)
    secret = totp.new_secret()
    await ctx.node.mailboxes.set_totp(address, secret)
    uri = totp.provisioning_uri(secret, address, issuer=f"MSSanté {ctx.cfg.node.domain}")
    return Outcome(
        {"address": address, "otpauth_uri": uri},
        f"TOTP enrolled for {address}; add it to an authenticator app (shown once):\n{uri}",
        audit={"address": address},
    )


async def unlock(ctx: Context, args: argparse.Namespace) -> Outcome:
    address = local_address(ctx, args.address)
    clients = []
    for given in args.client:
        try:
            ip = ipaddress.ip_address(given)
        except ValueError:
            raise UsageError(f"--client {given!r} is not an IP address") from None
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        clients.append(str(mapped or ip))  # an IPv4 client counts under its IPv4 address (lockout.py)
    gone = await LoginRecords(ctx.node.db).unlock(address, clients)
    removed = [
        {"kind": kind, **({"account": account} if account else {}), **({"client": ip} if ip else {})}
        for kind, account, ip in gone
    ]
    shown = ", ".join(
        {"pair": f"from {ip}", "account": "from every address", "client": f"every account from {ip}"}[kind]
        for kind, _, ip in gone
    )
    text = f"{address}: lock-out counters removed ({shown})" if gone else f"{address}: no lock-out counters"
    if gone:
        text += "\nrunning nodes apply it at the next login attempt"
    return Outcome({"address": address, "removed": removed}, text, audit={"address": address, "removed": removed})


def _password_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.add_argument("--generate-password", action="store_true", help="generate a password and show it once")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    grp = sub.add_parser("mailbox", help="this operator's mailboxes").add_subparsers(required=True, metavar="ACTION")
    p = grp.add_parser("add", parents=[common], help="create a mailbox")
    p.add_argument("address")
    p.add_argument(
        "--type",
        required=True,
        choices=KINDS,
        help="PER personal, ORG organisational, APP applicative, CAB practice",
    )
    p.add_argument("--idnat", help=f"owner's IdNatPS ({', '.join(f'{k}+{v}' for k, v in PP_ID_TYPES.items())})")
    p.add_argument("--last-name")
    p.add_argument("--first-name")
    p.add_argument("--civility")
    p.add_argument("--profession-code")
    p.add_argument("--profession-label")
    p.add_argument("--service", help="service the mailbox belongs to")
    p.add_argument("--list-rouge", action="store_true", help="not published in the directory")
    _password_options(p)
    p.set_defaults(_command=Command(AuditEvent.MAILBOX_CREATED, add))
    p = grp.add_parser("list", parents=[common], help="list mailboxes")
    p.add_argument("--domain")
    p.add_argument("--type", choices=KINDS)
    p.set_defaults(_command=Command(AuditEvent.MAILBOX_LISTED, list_))
    for name, event, fn, hlp in [
        ("show", AuditEvent.MAILBOX_SHOWN, show, "one mailbox"),
        ("disable", AuditEvent.MAILBOX_DISABLED, _toggle(False), "refuse logins and mail for a mailbox"),
        ("enable", AuditEvent.MAILBOX_ENABLED, _toggle(True), "enable a disabled mailbox"),
        (
            "totp",
            AuditEvent.MAILBOX_TOTP_ENROLLED,
            totp_,
            "enrol a TOTP second factor (prints an otpauth URI)",
        ),
    ]:
        p = grp.add_parser(name, parents=[common], help=hlp)
        p.add_argument("address")
        p.set_defaults(_command=Command(event, fn))
    p = grp.add_parser(
        "keep-smime",
        parents=[common],
        help="also store peers' messages in their S/MIME form (for end-to-end clients), or stop",
    )
    p.add_argument("address")
    p.add_argument("state", choices=["on", "off"])
    p.set_defaults(_command=Command(AuditEvent.MAILBOX_SMIME_FORM_SET, keep_smime))
    p = grp.add_parser(
        "unlock",
        parents=[common],
        help="forgive a mailbox's failed logins (lock-out), on every node",
    )
    p.add_argument("address")
    p.add_argument(
        "--client",
        action="append",
        default=[],
        metavar="IP",
        help="also forgive this client address's failures over all accounts (repeatable)",
    )
    p.set_defaults(_command=Command(AuditEvent.MAILBOX_UNLOCKED, unlock))
    p = grp.add_parser("delete", parents=[common], help="delete a mailbox and its messages")
    p.add_argument("address")
    p.add_argument("--yes", action="store_true", help="confirm")
    p.set_defaults(_command=Command(AuditEvent.MAILBOX_DELETED, delete))
    p = grp.add_parser("passwd", parents=[common], help="set a mailbox's password")
    p.add_argument("address")
    _password_options(p)
    p.set_defaults(_command=Command(AuditEvent.MAILBOX_PASSWORD_SET, passwd))
    p = grp.add_parser("delegate", parents=[common], help="let a PER mailbox act for an ORG mailbox")
    p.add_argument("mailbox", help="the ORG mailbox")
    p.add_argument("user", help="the PER mailbox of the delegated user")
    p.add_argument("--remove", action="store_true", help="withdraw the delegation")
    p.set_defaults(_command=Command(AuditEvent.MAILBOX_DELEGATED, delegate))
