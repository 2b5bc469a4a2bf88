"""`mssgw patient ...`: patient mailboxes (`<INS>@patient.<domain>`), enrolment, opposition (domain brief §2, §6)."""

from __future__ import annotations

import argparse
import base64
import secrets
from typing import Any

from directory.addresses import patient_address
from directory.identifiers import (
    INS_NIA_OID,
    INS_NIA_TEST_OID,
    INS_NIR_OID,
    INS_NIR_TEST_OID,
    check_ins,
    check_ins_traits,
    compact_ins,
)
from gateway.audit.events import AuditEvent
from gateway.cli.base import Command, Context, Outcome, table
from gateway.errors import UsageError
from gateway.store.patients import ACTIVATION_VALIDITY, Identity

OIDS = {
    "nir": INS_NIR_OID,
    "nia": INS_NIA_OID,
    "nir-test": INS_NIR_TEST_OID,
    "nia-test": INS_NIA_TEST_OID,
}
_NIA_FIRST = ("7", "8")


def new_activation_code() -> str:
    """100 random bits as 20 base32 characters in groups of four (read over the phone, typed once)."""
    raw = base64.b32encode(secrets.token_bytes(13)).decode()[:20]
    return "-".join(raw[i : i + 4] for i in range(0, 20, 4))


def _name(value: str, what: str) -> str:
    v = " ".join(value.split())
    if not v or len(v) > 200 or any(not (c.isalpha() or c in " -'") for c in v):
        raise UsageError(
            f"{what} must be letters, spaces, hyphens or apostrophes (1 to 200), got {value!r}",
            audit_reason=f"{what} must be letters, spaces, hyphens or apostrophes (1 to 200)",
        )
    return v.upper()


def identity_from(args: argparse.Namespace) -> Identity:
    ins = compact_ins(args.ins)
    sex = args.sex.upper()
    if reason := check_ins(ins):  # the number itself (format, key): no trait in the reason
        raise UsageError(f"invalid INS {args.ins!r}: {reason}")
    if reason := check_ins_traits(ins, sex=sex, birth_date=args.birth_date):
        # This reason quotes the traits (birth date, sex), which the audit log must not hold (base.py).
        raise UsageError(
            f"invalid INS {args.ins!r}: {reason}",
            audit_reason=f"invalid INS {args.ins!r}: the birth date or sex given does not match it",
        )
    kind = args.oid or ("nia" if ins[0] in _NIA_FIRST else "nir")
    oid = OIDS[kind]
    if (ins[0] in _NIA_FIRST) != (oid in (INS_NIA_OID, INS_NIA_TEST_OID)):
        raise UsageError(f"the INS {ins} is a{'n NIA' if ins[0] in _NIA_FIRST else ' NIR'}, not --oid {kind}")
    return Identity(
        ins=ins,
        oid=oid,
        birth_name=_name(args.birth_name, "--birth-name"),
        given_name=_name(args.given_name, "--given-name"),
        birth_date=args.birth_date,
        sex=sex,
    )


async def add(ctx: Context, args: argparse.Namespace) -> Outcome:
    identity = identity_from(args)
    address = patient_address(identity.ins, ctx.cfg.node.patient)
    code = new_activation_code()
    info = await ctx.node.patients.create(address, identity, code)
    data: dict[str, Any] = {**info, "activation_code": code, "web_url": ctx.cfg.web_url}
    days = ACTIVATION_VALIDITY.days
    text = (
        f"patient mailbox {address} created\n"
        f"activation code (shown once, valid {days} days): {code}\n"
        f"the patient signs in at {ctx.cfg.web_url} with the address and this code, then sets a password "
        "and an authenticator app"
    )
    return Outcome(data, text, audit={"address": address, "ins_oid": identity.oid})


async def activation(ctx: Context, args: argparse.Namespace) -> Outcome:
    code = new_activation_code()
    info = await ctx.node.patients.reset_activation(args.address, code)
    data = {**info, "activation_code": code, "web_url": ctx.cfg.web_url}
    text = (
        f"{info['address']}: new activation code (shown once; password and authenticator are reset): {code}\n"
        f"web inbox: {ctx.cfg.web_url}"
    )
    return Outcome(data, text, audit={"address": info["address"]})


async def show(ctx: Context, args: argparse.Namespace) -> Outcome:
    info = await ctx.node.patients.describe(args.address)
    return Outcome(info, "\n".join(f"{k}: {v}" for k, v in info.items()), audit={"address": info["address"]})


async def list_(ctx: Context, args: argparse.Namespace) -> Outcome:
    rows = await ctx.node.patients.all()
    return Outcome(
        rows,
        table(rows, ["address", "birth_name", "given_name", "birth_date", "active", "opposed", "enrolled"]),
        audit={"results": len(rows)},
    )


def _toggle(active: bool) -> Any:
    async def run(ctx: Context, args: argparse.Namespace) -> Outcome:
        info = await ctx.node.patients.describe(args.address)  # a patient, not any mailbox
        changed = await ctx.node.mailboxes.set_active(info["address"], active)
        state = "enabled" if active else "disabled"
        text = f"{info['address']} {state}" if changed else f"{info['address']} was already {state}"
        return Outcome(
            {"address": info["address"], "active": active, "changed": changed}, text, audit={"changed": changed}
        )

    return run


def _opposition(opposed: bool) -> Any:
    async def run(ctx: Context, args: argparse.Namespace) -> Outcome:
        address = args.address.strip().lower()
        changed = await ctx.node.patients.set_opposed(address, opposed)
        if opposed:
            text = f"{address} opposes secure messaging: professionals' messages are refused (550 5.7.1)"
        else:
            text = f"{address} no longer opposes secure messaging"
        if not changed:
            text += " (unchanged)"
        return Outcome({"address": address, "opposed": opposed, "changed": changed}, text, audit={"changed": changed})

    return run


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    grp = sub.add_parser("patient", help="patient mailboxes (<INS>@patient.<domain>)").add_subparsers(
        required=True, metavar="ACTION"
    )
    p = grp.add_parser("add", parents=[common], help="create a patient mailbox from a qualified INS")
    p.add_argument("ins", help="the INS matricule, 15 characters with its key (NIR or NIA)")
    p.add_argument("--oid", choices=sorted(OIDS), help="the INS's OID (default: nir, or nia for an NIA)")
    p.add_argument("--birth-name", required=True, help="nom de naissance")
    p.add_argument("--given-name", required=True, help="premier prénom de naissance")
    p.add_argument("--birth-date", required=True, help="YYYY-MM-DD")
    p.add_argument("--sex", required=True, choices=["M", "F", "m", "f"])
    p.set_defaults(_command=Command(AuditEvent.PATIENT_CREATED, add))
    p = grp.add_parser("list", parents=[common], help="list patient mailboxes")
    p.set_defaults(_command=Command(AuditEvent.PATIENT_LISTED, list_))
    for name, event, fn, hlp in [
        ("show", AuditEvent.PATIENT_SHOWN, show, "one patient"),
        ("disable", AuditEvent.PATIENT_DISABLED, _toggle(False), "close a patient's mailbox (web login and mail)"),
        ("enable", AuditEvent.PATIENT_ENABLED, _toggle(True), "reopen a disabled patient mailbox"),
        ("oppose", AuditEvent.PATIENT_OPPOSED, _opposition(True), "record the patient's opposition to messaging"),
        ("unoppose", AuditEvent.PATIENT_UNOPPOSED, _opposition(False), "withdraw the opposition"),
        (
            "activation",
            AuditEvent.PATIENT_ACTIVATION_RESET,
            activation,
            "issue a new activation code (lost password or authenticator)",
        ),
    ]:
        p = grp.add_parser(name, parents=[common], help=hlp)
        p.add_argument("address")
        p.set_defaults(_command=Command(event, fn))
