"""`mssgw mailbox ...`, driven as a subprocess: results, refusals, and the audit trail of both."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pyotp

from directory.synthetic import rpps
from tests.conftest import DOMAIN, NodeDir

DOCTOR = f"claire.martin@{DOMAIN}"
SECRETARIAT = f"secretariat@{DOMAIN}"
IDNAT = "8" + rpps(4242)
PASSWORD = "correct horse battery staple"


def add_doctor(node: NodeDir) -> dict[str, Any]:
    r = node.cli(
        "mailbox",
        "add",
        DOCTOR,
        "--type",
        "PER",
        "--idnat",
        IDNAT,
        "--last-name",
        "MARTIN",
        "--first-name",
        "Claire",
        "--password-stdin",
        "--json",
        input=PASSWORD + "\n",
    )
    assert r.code == 0, r.err
    out: dict[str, Any] = r.json()  # type: ignore[assignment]
    return out


def audit_rows(node: NodeDir) -> list[tuple[str, str, str]]:
    with sqlite3.connect(node.data / "audit.db") as conn:
        return conn.execute("SELECT action, request, response FROM audit_records ORDER BY seq").fetchall()


def test_add_per_mailbox_with_password(node: NodeDir) -> None:
    info = add_doctor(node)
    assert info["address"] == DOCTOR
    assert info["type"] == "PER"
    assert info["owner"] == IDNAT
    assert info["has_password"] is True
    assert info["active"] is True
    # The directory knows the owner, and the account is stored with an argon2id hash.
    shown = node.cli("directory", "show", DOCTOR, "--json").json()
    assert shown["professional"]["id_nat_ps"] == IDNAT  # type: ignore[index]
    assert shown["name"] == "Claire MARTIN"  # type: ignore[index]
    with sqlite3.connect(node.data / "mssgw.db") as conn:
        (hashed,) = conn.execute("SELECT password_hash FROM accounts WHERE address = ?", (DOCTOR,)).fetchone()
    assert hashed.startswith("$argon2id$v=19$m=65536,t=3,p=4$")


def test_passwords_never_reach_the_audit_log_or_the_database_in_clear(node: NodeDir) -> None:
    add_doctor(node)
    r = node.cli("mailbox", "passwd", DOCTOR, "--generate-password", "--json")
    assert r.code == 0
    generated = r.json()["password"]  # type: ignore[index]
    assert len(generated) == 20
    for path in node.data.glob("*.db*"):
        blob = path.read_bytes()
        assert PASSWORD.encode() not in blob, path
        assert generated.encode() not in blob, path
    actions = [a for a, _, _ in audit_rows(node)]
    assert actions[-2:] == ["admin.mailbox.created", "admin.mailbox.password_set"]


def test_refusals_are_precise_and_audited(node: NodeDir) -> None:
    cases = [
        (
            ["mailbox", "add", f"x@{DOMAIN}", "--type", "PER"],
            "a PER mailbox belongs to a professional: give --idnat (8+RPPS or 0+ADELI)",
        ),
        (
            ["mailbox", "add", f"x@{DOMAIN}", "--type", "PER", "--idnat", "810000000000"],
            "invalid IdNatPS '810000000000': IdNatPS prefix '8' (RPPS): RPPS check digit is 0, expected 9 (Luhn)",
        ),
        (
            ["mailbox", "add", "x@clinique.mssante.fr", "--type", "ORG"],
            f"x@clinique.mssante.fr is not in a domain of this node ({DOMAIN}, patient.{DOMAIN})",
        ),
        (
            ["mailbox", "add", f"a%b@{DOMAIN}", "--type", "ORG"],
            f"invalid address 'a%b@{DOMAIN}': '%' and '!' (source routing) are not accepted in the local part",
        ),
        (
            ["mailbox", "add", f"accueil@patient.{DOMAIN}", "--type", "ORG"],
            f"accueil@patient.{DOMAIN} is in the patient domain: patient mailboxes are made by `mssgw patient add`",
        ),
        (["mailbox", "show", f"nobody@{DOMAIN}"], f"no local mailbox nobody@{DOMAIN}"),
        (
            ["mailbox", "delete", f"nobody@{DOMAIN}"],
            f"deleting nobody@{DOMAIN} destroys its messages: add --yes to confirm",
        ),
    ]
    for argv, reason in cases:
        r = node.cli(*argv)
        assert r.code == 2, argv
        assert r.err.strip() == f"mssgw: {reason}", argv
    refused = [resp for _, _, resp in audit_rows(node)[-len(cases) :]]
    assert all('"result":"refused"' in resp for resp in refused)
    assert f'"reason":"{cases[0][1]}"' in refused[0]


def test_duplicate_and_weak_password(node: NodeDir) -> None:
    add_doctor(node)
    r = node.cli("mailbox", "add", DOCTOR, "--type", "PER", "--idnat", IDNAT)
    assert (r.code, r.err.strip()) == (2, f"mssgw: mailbox {DOCTOR} already exists")
    r = node.cli("mailbox", "passwd", DOCTOR, "--password-stdin", input="short\n")
    assert (r.code, r.err.strip()) == (2, "mssgw: the password must be at least 12 characters long")
    r = node.cli("mailbox", "passwd", DOCTOR)
    assert (r.code, r.err.strip()) == (2, "mssgw: give --password-stdin or --generate-password")


def test_disable_enable_list_show(node: NodeDir) -> None:
    add_doctor(node)
    assert node.cli("mailbox", "disable", DOCTOR).out.strip() == f"{DOCTOR} disabled"
    assert node.cli("mailbox", "disable", DOCTOR).out.strip() == f"{DOCTOR} was already disabled"
    assert node.cli("mailbox", "show", DOCTOR, "--json").json()["active"] is False  # type: ignore[index]
    assert node.cli("mailbox", "enable", DOCTOR).out.strip() == f"{DOCTOR} enabled"
    rows = node.cli("mailbox", "list", "--json").json()
    assert rows == [{"address": DOCTOR, "type": "PER", "active": True, "has_password": True, "totp_enrolled": False}]
    assert node.cli("mailbox", "list", "--type", "ORG", "--json").json() == []


def test_org_delegation(node: NodeDir) -> None:
    add_doctor(node)
    assert node.cli("mailbox", "add", SECRETARIAT, "--type", "ORG", "--service", "Cardiologie").code == 0
    r = node.cli("mailbox", "delegate", SECRETARIAT, DOCTOR)
    assert r.out.strip() == f"{DOCTOR} may act for {SECRETARIAT}"
    assert node.cli("mailbox", "show", SECRETARIAT, "--json").json()["delegates"] == [DOCTOR]  # type: ignore[index]
    r = node.cli("mailbox", "delegate", DOCTOR, SECRETARIAT)
    assert (r.code, r.err.strip()) == (2, f"mssgw: {DOCTOR} is a PER mailbox; only ORG mailboxes have delegates")
    r = node.cli("mailbox", "delegate", SECRETARIAT, DOCTOR, "--remove")
    assert r.out.strip() == f"{DOCTOR} no longer acts for {SECRETARIAT}"
    assert node.cli("mailbox", "show", SECRETARIAT, "--json").json()["delegates"] == []  # type: ignore[index]


def test_totp_enrolment_prints_a_working_uri_once(node: NodeDir) -> None:
    add_doctor(node)
    r = node.cli("mailbox", "totp", DOCTOR, "--json")
    uri = r.json()["otpauth_uri"]  # type: ignore[index]
    totp = pyotp.parse_uri(uri)
    assert totp.name == DOCTOR
    assert totp.issuer == f"MSSanté {DOMAIN}"
    secret = totp.secret
    with sqlite3.connect(node.data / "mssgw.db") as conn:
        (sealed,) = conn.execute("SELECT totp_secret FROM accounts WHERE address = ?", (DOCTOR,)).fetchone()
    assert secret.encode() not in sealed  # sealed with the KEK
    assert all(secret not in req + resp for _, req, resp in audit_rows(node))
    assert node.cli("mailbox", "show", DOCTOR, "--json").json()["totp_enrolled"] is True  # type: ignore[index]


def test_delete_removes_the_mailbox(node: NodeDir) -> None:
    add_doctor(node)
    r = node.cli("mailbox", "delete", DOCTOR, "--yes")
    assert r.out.strip() == f"{DOCTOR} deleted"
    r = node.cli("mailbox", "show", DOCTOR)
    assert (r.code, r.err.strip()) == (2, f"mssgw: no local mailbox {DOCTOR}")
    assert node.cli("directory", "show", DOCTOR).err.strip() == f"mssgw: {DOCTOR} is not in the directory"


def test_unlock_deletes_the_accounts_counters_and_the_named_clients(node: NodeDir) -> None:
    add_doctor(node)
    with sqlite3.connect(node.data / "mssgw.db") as conn:  # what a serving node wrote (tests/store/test_logins.py)
        conn.executemany(
            "INSERT INTO login_failures (kind, account, ip, failures, locked_until, last_failure)"
            " VALUES (?, ?, ?, 7, 0, 0)",
            [
                ("pair", DOCTOR, "192.0.2.1"),
                ("account", DOCTOR, ""),
                ("client", "", "192.0.2.1"),
                ("client", "", "192.0.2.2"),
                ("pair", SECRETARIAT, "192.0.2.1"),
            ],
        )
    # An IPv4 client through a dual-stack listener is counted under its IPv4 address.
    r = node.cli("mailbox", "unlock", DOCTOR.upper(), "--client", "::ffff:192.0.2.1")
    assert r.code == 0, r.err
    assert r.out.splitlines() == [
        f"{DOCTOR}: lock-out counters removed (from every address, every account from 192.0.2.1, from 192.0.2.1)",
        "running nodes apply it at the next login attempt",
    ]
    with sqlite3.connect(node.data / "mssgw.db") as conn:
        left = conn.execute("SELECT kind, account, ip FROM login_failures ORDER BY kind, ip").fetchall()
    assert left == [("client", "", "192.0.2.2"), ("pair", SECRETARIAT, "192.0.2.1")]
    assert node.cli("mailbox", "unlock", DOCTOR, "--json").json() == {"address": DOCTOR, "removed": []}
    action, _, response = audit_rows(node)[-2]
    assert action == "admin.mailbox.unlocked"
    assert json.loads(response) == {
        "address": DOCTOR,
        "removed": [
            {"kind": "account", "account": DOCTOR},
            {"kind": "client", "client": "192.0.2.1"},
            {"kind": "pair", "account": DOCTOR, "client": "192.0.2.1"},
        ],
        "result": "done",
    }


def test_unlock_refusals(node: NodeDir) -> None:
    for argv, reason in [
        (["mailbox", "unlock", DOCTOR, "--client", "192.0.2.300"], "--client '192.0.2.300' is not an IP address"),
        (
            ["mailbox", "unlock", "x@clinique.mssante.fr"],
            f"x@clinique.mssante.fr is not in a domain of this node ({DOMAIN}, patient.{DOMAIN})",
        ),
    ]:
        r = node.cli(*argv)
        assert (r.code, r.err.strip()) == (2, f"mssgw: {reason}"), argv
        assert '"result":"refused"' in audit_rows(node)[-1][2]


def test_an_idnat_given_with_spaces_is_stored_as_validated(node: NodeDir) -> None:
    """Validated stripped, it was stored as typed: a second professional, " 8..." beside "8..."."""
    add_doctor(node)
    r = node.cli("mailbox", "add", f"cabinet.martin@{DOMAIN}", "--type", "PER", "--idnat", f" {IDNAT} ", "--json")
    assert r.code == 0, r.err
    assert r.json()["owner"] == IDNAT  # type: ignore[index]
    with sqlite3.connect(node.data / "mssgw.db") as conn:
        assert conn.execute("SELECT key FROM professionals").fetchall() == [(IDNAT,)]
