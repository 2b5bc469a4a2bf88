"""`mssgw patient ...`, driven as a subprocess: INS checked against the traits, enrolment codes, opposition, audit."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from typing import Any

from tests.conftest import DOMAIN, NodeDir

INS = "185037512345641"  # a man born in March 1985
PATIENT = f"{INS}@patient.{DOMAIN}"
NIA = "892067512345675"  # an NIA, a woman born in June 1992
NIA_PATIENT = f"{NIA}@patient.{DOMAIN}"
TRAITS = ["--birth-name", "Dupont", "--given-name", "Jean", "--birth-date", "1985-03-14", "--sex", "M"]
CODE = re.compile(r"[A-Z2-7]{4}(?:-[A-Z2-7]{4}){4}")


def audit_rows(node: NodeDir) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    with sqlite3.connect(node.data / "audit.db") as conn:
        found = conn.execute("SELECT action, request, response FROM audit_records ORDER BY seq").fetchall()
    return [(a, json.loads(req), json.loads(resp)) for a, req, resp in found]


def add(node: NodeDir, *argv: str) -> dict[str, Any]:
    r = node.cli("patient", "add", *argv, "--json")
    assert r.code == 0, r.err
    out: dict[str, Any] = r.json()  # type: ignore[assignment]
    return out


def digest(node: NodeDir, address: str) -> str | None:
    with sqlite3.connect(node.data / "mssgw.db") as conn:
        (found,) = conn.execute("SELECT activation_digest FROM patients WHERE address = ?", (address,)).fetchone()
    return found  # type: ignore[no-any-return]


def code_digest(code: str) -> str:
    return hashlib.sha256(code.replace("-", "").encode()).hexdigest()


def test_add_derives_the_address_from_the_ins_and_shows_the_code_once(node: NodeDir) -> None:
    info = add(node, "1 85 03 75 123 456 41", *TRAITS)  # spaces as read from a card
    code = info.pop("activation_code")
    assert CODE.fullmatch(code), code
    assert info == {
        "address": PATIENT,
        "ins": INS,
        "ins_oid": "1.2.250.1.213.1.4.8",  # INS-NIR
        "birth_name": "DUPONT",
        "given_name": "JEAN",
        "birth_date": "1985-03-14",
        "sex": "M",
        "active": True,
        "opposed": False,
        "opposed_at": None,
        "enrolled": False,
        "enrolled_at": None,
        "activation_pending": True,
        "activation_expires_at": info["activation_expires_at"],
        "created_at": info["created_at"],
        "last_login_at": None,
        "web_url": node.cfg().web_url,
    }
    # Only the code's digest is stored; the code is nowhere in the audit trail.
    assert digest(node, PATIENT) == code_digest(code)
    action, request, response = audit_rows(node)[-1]
    assert action == "admin.patient.created"
    assert request == {"ins": "1 85 03 75 123 456 41", "oid": None}  # the traits stay out of the audit
    assert response == {"result": "done", "address": PATIENT, "ins_oid": "1.2.250.1.213.1.4.8"}
    shown = node.cli("mailbox", "show", PATIENT, "--json").json()
    assert (shown["type"], shown["has_password"]) == ("PAT", False)  # type: ignore[index]


def test_add_prints_the_activation_letter(node: NodeDir) -> None:
    argv = ["--birth-name", "Le Bris-N'Diaye", "--given-name", "Anne", "--birth-date", "1992-06-30", "--sex", "f"]
    r = node.cli("patient", "add", NIA.lower(), *argv)
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0] == f"patient mailbox {NIA_PATIENT} created"
    found = re.fullmatch(r"activation code \(shown once, valid 14 days\): (\S+)", lines[1])
    assert found is not None, lines[1]
    assert CODE.fullmatch(found[1]), lines[1]
    assert lines[2:] == [
        f"the patient signs in at {node.cfg().web_url} with the address and this code, then sets a password "
        "and an authenticator app"
    ]
    info = node.cli("patient", "show", NIA_PATIENT, "--json").json()
    assert info["ins_oid"] == "1.2.250.1.213.1.4.9"  # type: ignore[index]  # an NIA by default
    assert (info["birth_name"], info["given_name"], info["sex"]) == ("LE BRIS-N'DIAYE", "ANNE", "F")  # type: ignore[index]


def test_refusals_are_precise_and_audited_without_the_traits(node: NodeDir) -> None:
    born = ["--birth-name", "Dupont", "--given-name", "Jean"]
    cases = [
        (
            ["185037512345642", *TRAITS],
            "invalid INS '185037512345642': INS key is 42, expected 41 (97 - number mod 97)",
        ),
        (
            [INS, *born, "--birth-date", "1985-03-14", "--sex", "F"],
            f"invalid INS '{INS}': the INS starts with 1 (man), the sex given is F",
        ),
        (
            [INS, *born, "--birth-date", "1985-04-14", "--sex", "M"],
            f"invalid INS '{INS}': the INS says born in month 03, the birth date is 1985-04-14",
        ),
        (
            [INS, *born, "--birth-date", "19850314", "--sex", "M"],
            f"invalid INS '{INS}': birth date '19850314' is not a date (YYYY-MM-DD)",
        ),
        ([INS, *TRAITS, "--oid", "nia"], f"the INS {INS} is a NIR, not --oid nia"),
        (
            [NIA, *TRAITS[:4], "--birth-date", "1992-06-30", "--sex", "F", "--oid", "nir-test"],
            f"the INS {NIA} is an NIA, not --oid nir-test",
        ),
        (
            [INS, "--birth-name", "Dupont2", *TRAITS[2:]],
            "--birth-name must be letters, spaces, hyphens or apostrophes (1 to 200), got 'Dupont2'",
        ),
    ]
    before = len(audit_rows(node))
    for argv, reason in cases:
        r = node.cli("patient", "add", *argv)
        assert (r.code, r.err.strip()) == (2, f"mssgw: {reason}"), argv
    rows = audit_rows(node)[before:]
    # The operator is told which trait disagrees; the audit log is not told the traits themselves.
    withheld = {
        1: f"invalid INS '{INS}': the birth date or sex given does not match it",
        2: f"invalid INS '{INS}': the birth date or sex given does not match it",
        3: f"invalid INS '{INS}': the birth date or sex given does not match it",
        6: "--birth-name must be letters, spaces, hyphens or apostrophes (1 to 200)",
    }
    assert [(a, resp) for a, _, resp in rows] == [
        ("admin.patient.created", {"result": "refused", "reason": withheld.get(i, reason)})
        for i, (_, reason) in enumerate(cases)
    ]
    for *_, resp in rows:
        for trait in ("Dupont2", "1985-04-14", "19850314", "the sex given is F"):
            assert trait not in resp["reason"]
    for _, request, _ in rows:
        assert set(request) == {"ins", "oid"}
    assert node.cli("patient", "list", "--json").json() == []


def test_one_ins_one_mailbox(node: NodeDir) -> None:
    add(node, INS, *TRAITS)
    r = node.cli("patient", "add", INS, *TRAITS)
    reason = f"the patient with INS {INS} already has a mailbox ({PATIENT})"
    assert (r.code, r.err.strip()) == (2, f"mssgw: {reason}")
    assert audit_rows(node)[-1][2] == {"result": "refused", "reason": reason}


def test_the_traits_stay_in_the_application_store(node: NodeDir) -> None:
    add(
        node,
        INS,
        "--birth-name",
        "Quenouillère",
        "--given-name",
        "Évariste",
        "--birth-date",
        "1985-03-14",
        "--sex",
        "M",
    )
    node.cli("patient", "show", PATIENT)
    for path in node.data.rglob("*"):
        if path.is_file() and not path.name.startswith("mssgw.db"):
            blob = path.read_bytes()
            for trait in ("QUENOUILL", "Quenouill", "VARISTE", "variste", "1985-03-14"):
                assert trait.encode() not in blob, (path, trait)


def test_show_list_disable_enable(node: NodeDir) -> None:
    add(node, INS, *TRAITS)
    add(node, NIA, "--birth-name", "Leroy", "--given-name", "Marie", "--birth-date", "1992-06-30", "--sex", "F")
    r = node.cli("patient", "list")
    assert r.out.splitlines()[0].split() == [
        "address",
        "birth_name",
        "given_name",
        "birth_date",
        "active",
        "opposed",
        "enrolled",
    ]
    assert r.out.splitlines()[1].split() == [PATIENT, "DUPONT", "JEAN", "1985-03-14", "True", "False", "False"]
    assert r.out.splitlines()[2].split() == [NIA_PATIENT, "LEROY", "MARIE", "1992-06-30", "True", "False", "False"]
    assert [p["address"] for p in node.cli("patient", "list", "--json").json()] == [PATIENT, NIA_PATIENT]  # type: ignore[attr-defined]

    r = node.cli("patient", "show", PATIENT.upper())
    assert r.out.splitlines()[:2] == [f"address: {PATIENT}", f"ins: {INS}"]

    assert node.cli("patient", "disable", PATIENT).out.strip() == f"{PATIENT} disabled"
    assert node.cli("patient", "disable", PATIENT).out.strip() == f"{PATIENT} was already disabled"
    assert node.cli("patient", "show", PATIENT, "--json").json()["active"] is False  # type: ignore[index]
    assert node.cli("patient", "enable", PATIENT, "--json").json() == {
        "address": PATIENT,
        "active": True,
        "changed": True,
    }
    actions = [(a, req, resp) for a, req, resp in audit_rows(node)[-6:]]
    assert actions == [
        ("admin.patient.listed", {}, {"result": "done", "results": 2}),
        ("admin.patient.shown", {"address": PATIENT.upper()}, {"result": "done", "address": PATIENT}),
        ("admin.patient.disabled", {"address": PATIENT}, {"result": "done", "changed": True}),
        ("admin.patient.disabled", {"address": PATIENT}, {"result": "done", "changed": False}),
        ("admin.patient.shown", {"address": PATIENT}, {"result": "done", "address": PATIENT}),
        ("admin.patient.enabled", {"address": PATIENT}, {"result": "done", "changed": True}),
    ]


def test_patient_commands_are_for_patients_only(node: NodeDir) -> None:
    doctor = f"claire.martin@{DOMAIN}"
    assert node.cli("mailbox", "add", doctor, "--type", "ORG").code == 0
    for action in ("show", "disable", "oppose", "activation"):
        r = node.cli("patient", action, doctor)
        assert (r.code, r.err.strip()) == (2, f"mssgw: no patient {doctor}"), action
    assert node.cli("mailbox", "show", doctor, "--json").json()["active"] is True  # type: ignore[index]


def test_oppose_and_unoppose(node: NodeDir) -> None:
    add(node, INS, *TRAITS)
    r = node.cli("patient", "oppose", PATIENT.upper())
    assert (r.code, r.out.strip()) == (
        0,
        f"{PATIENT} opposes secure messaging: professionals' messages are refused (550 5.7.1)",
    )
    assert node.cli("patient", "oppose", PATIENT).out.strip() == (
        f"{PATIENT} opposes secure messaging: professionals' messages are refused (550 5.7.1) (unchanged)"
    )
    info = node.cli("patient", "show", PATIENT, "--json").json()
    assert info["opposed"] is True  # type: ignore[index]
    assert info["opposed_at"] is not None  # type: ignore[index]
    assert node.cli("patient", "unoppose", PATIENT, "--json").json() == {
        "address": PATIENT,
        "opposed": False,
        "changed": True,
    }
    assert (
        node.cli("patient", "unoppose", PATIENT).out.strip()
        == f"{PATIENT} no longer opposes secure messaging (unchanged)"
    )
    assert [(a, resp) for a, _, resp in audit_rows(node)[-5:]] == [
        ("admin.patient.opposed", {"result": "done", "changed": True}),
        ("admin.patient.opposed", {"result": "done", "changed": False}),
        ("admin.patient.shown", {"result": "done", "address": PATIENT}),
        ("admin.patient.unopposed", {"result": "done", "changed": True}),
        ("admin.patient.unopposed", {"result": "done", "changed": False}),
    ]


def test_activation_issues_a_new_code_and_resets_the_enrolment(node: NodeDir) -> None:
    first = add(node, INS, *TRAITS)["activation_code"]
    r = node.cli("patient", "activation", PATIENT)
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    found = re.fullmatch(
        rf"{re.escape(PATIENT)}: new activation code \(shown once; password and authenticator are reset\): (\S+)",
        lines[0],
    )
    assert found is not None, lines
    assert lines[1:] == [f"web inbox: {node.cfg().web_url}"]
    second = found[1]
    assert CODE.fullmatch(second)
    assert second != first
    assert digest(node, PATIENT) == code_digest(second)
    data = node.cli("patient", "activation", PATIENT, "--json").json()
    third = data.pop("activation_code")  # type: ignore[attr-defined]
    assert (data["enrolled"], data["activation_pending"], data["web_url"]) == (False, True, node.cfg().web_url)  # type: ignore[index]
    assert digest(node, PATIENT) == code_digest(third)
    rows = audit_rows(node)[-2:]
    assert [(a, req, resp) for a, req, resp in rows] == [
        ("admin.patient.activation_reset", {"address": PATIENT}, {"result": "done", "address": PATIENT})
    ] * 2
    assert all(code not in json.dumps(rows) for code in (first, second, third))
    r = node.cli("patient", "activation", f"nobody@patient.{DOMAIN}")
    assert (r.code, r.err.strip()) == (2, f"mssgw: no patient nobody@patient.{DOMAIN}")
