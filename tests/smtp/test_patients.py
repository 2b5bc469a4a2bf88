"""The patient exchange rules (domain brief §6) at submission and relay in, on a running node; patients never log
in over SMTP or IMAP. Exact replies, the conversation state in the store, and the audit trail."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import smtplib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from certs.pki import Issued, TrustSpacePKI
from directory.identifiers import ins_key
from gateway.auth.passwords import hash_password
from gateway.node import Node
from gateway.store.patients import Identity
from tests.conftest import DOMAIN, NodeDir, copy_node
from tests.imap.conftest import Raw
from tests.smtp.conftest import DOCTOR, NURSE, PASSWORD, PEER, SECRETARIAT, Gateway, provision, serve, wait_for_message
from tests.smtp.test_relay_in import PeerSender, bundle, protect, relay_client
from tests.smtp.test_submission import message

PAT = f"patient.{DOMAIN}"
PEER_PAT = f"patient.{PEER}"
NIR = "1.2.250.1.213.1.4.8"


def ins(first13: str) -> str:
    return first13 + ins_key(first13)


# Our patients: (INS, sex, birth date); each scenario has its own, so the tests do not depend on their order.
OURS = {
    "opened": ("1850375123456", "M", "1985-03-14"),
    "fin": ("2920699123456", "F", "1992-06-30"),
    "mes": ("2790175123456", "F", "1979-01-02"),
    "opposed": ("1851275123457", "M", "1985-12-25"),
    "other": ("2020133123456", "F", "2002-01-20"),
    "relayed": ("1850375123458", "M", "1985-03-01"),
    "login": ("2850375123456", "F", "1985-03-08"),
    "notified": ("2850375123457", "F", "1985-03-09"),
}
P = {name: f"{ins(first13)}@{PAT}" for name, (first13, _, _) in OURS.items()}
# Patients of the peer operator.
REMOTE = f"{ins('1700175000001')}@{PEER_PAT}"
STRANGER = f"{ins('2700175000002')}@{PEER_PAT}"
PEER_DOCTOR = f"dr.durand@{PEER}"


def provision_patients(node: NodeDir) -> None:
    """Our patients (one opposed, one with a password), and the peer's patient domain on the trust list."""

    async def job() -> None:
        async with Node(node.cfg()) as n:
            for name, (first13, sex, born) in OURS.items():
                await n.patients.create(P[name], Identity(ins(first13), NIR, "NOM", "PRENOM", born, sex), "CODE")
            await n.patients.set_opposed(P["opposed"], True)
            await n.mailboxes.set_password(P["login"], hash_password(PASSWORD))
            await n.trust.add(PEER_PAT)

    asyncio.run(job())


@pytest.fixture(scope="module")
def gateway(template_node: NodeDir, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    node = copy_node(template_node, tmp_path_factory.mktemp("patients") / "node")
    provision(node)
    provision_patients(node)
    yield from serve(node)


@dataclass
class Peer:
    tls: Path  # the peer operator's TLS bundle: its domain and its patient domain
    doctor: PeerSender  # dr.durand, address-bound
    patients: Issued  # the peer's domain-bound certificate for its patient domain (it signs for its patients)


@pytest.fixture(scope="module")
def peer(gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Peer:
    pki = TrustSpacePKI(gateway.node.data / "pki")
    out = tmp_path_factory.mktemp("peer")
    tls = bundle(pki, out / "tls", PEER, PEER_PAT, f"mx.{PEER}")
    doctor = pki.issue_address(PEER_DOCTOR)
    return Peer(
        tls,
        # protect() only reads the issued certificate and key: no files for openssl here.
        PeerSender(doctor, Path(), Path(), gateway.node.data / "smime" / DOCTOR / "cert.pem"),
        pki.issue_domain(PEER_PAT),
    )


# -- helpers -------------------------------------------------------------------------------------------


def audit(gw: Gateway, action: str) -> list[dict[str, Any]]:
    with sqlite3.connect(gw.node.data / "audit.db") as conn:
        found = conn.execute(
            "SELECT principal, request, response FROM audit_records WHERE action = ? ORDER BY seq", (action,)
        ).fetchall()
    return [{"principal": p, "request": json.loads(q), "response": json.loads(r)} for p, q, r in found]


def conversations(gw: Gateway, patient: str) -> dict[str, tuple[bool, str, bool]]:
    """correspondent -> (open, reply_to, closed_at set) for `patient`, from the store."""
    with sqlite3.connect(gw.node.data / "mssgw.db") as conn:
        found = conn.execute(
            "SELECT correspondent, open, reply_to, closed_at FROM conversations WHERE patient = ?", (patient,)
        ).fetchall()
    return {c: (bool(o), r, closed is not None) for c, o, r, closed in found}


def submit(gw: Gateway, sender: str, rcpts: list[str], raw: bytes) -> tuple[int, str]:
    """MAIL, RCPT (each must pass), DATA: the reply to the message."""
    client = gw.submission(login=sender)
    try:
        assert client.mail(sender) == (250, b"2.1.0 OK")
        for rcpt in rcpts:
            assert client.rcpt(rcpt) == (250, b"2.1.5 OK"), rcpt
        code, text = client.data(raw)
    finally:
        client.quit()
    return code, text.decode()


def relay(gw: Gateway, peer: Peer, sender: str, rcpts: list[str], raw: bytes) -> tuple[int, str]:
    client = relay_client(gw, peer.tls)
    try:
        assert client.mail(sender) == (250, b"2.1.0 OK")
        for rcpt in rcpts:
            assert client.rcpt(rcpt) == (250, b"2.1.5 OK"), rcpt
        code, text = client.data(raw)
    finally:
        client.quit()
    return code, text.decode()


def from_peer_doctor(gw: Gateway, peer: Peer, to: str, subject: str, **headers: str) -> bytes:
    """dr.durand's message, signed by him and encrypted for our domain certificate (it covers our patients)."""
    domain_cert = gw.node.data / "smime" / "domain" / "cert.pem"
    return protect(peer.doctor, message(PEER_DOCTOR, to, subject, **headers), [domain_cert])


def from_peer_patient(gw: Gateway, peer: Peer, sender: str, to: str, subject: str) -> bytes:
    """A peer's patient's reply, signed with the peer's patient-domain certificate, encrypted for `to`."""
    return protect(
        peer.doctor, message(sender, to, subject), [gw.node.data / "smime" / to / "cert.pem"], signer=peer.patients
    )


def refused(gw: Gateway, rule: str) -> dict[str, Any]:
    """The last patient.refused record, which must name `rule`; its response without the size."""
    record = audit(gw, "patient.refused")[-1]
    response = dict(record["response"])
    assert isinstance(response.pop("size"), int)
    assert response["rule"] == rule
    return {"principal": record["principal"], **response}


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def queued(reply: tuple[int, str]) -> str:
    """The id of an accepted message: delivered at once to our mailboxes, queued for a peer's."""
    code, text = reply
    assert code == 250, reply
    found = re.fullmatch(r"2\.0\.0 OK (?:queued|delivered) as ([0-9a-f]{32})", text)
    assert found, reply
    return found.group(1)


# -- submission: our professionals to our patients -----------------------------------------------------


def test_a_professional_opens_a_conversation(gateway: Gateway) -> None:
    patient = P["opened"]
    raw = message(DOCTOR, patient, "Vos resultats", X_MSS_INS="O", Reply_To=f"Secrétariat <{SECRETARIAT}>")
    queued(submit(gateway, DOCTOR, [patient], raw))
    assert conversations(gateway, patient) == {DOCTOR: (True, SECRETARIAT, False)}
    assert b"Subject: Vos resultats" in wait_for_message(gateway.node, patient, b"X-MSS-INS: O")
    # A second message merges its Reply-To addresses into the open conversation.
    queued(submit(gateway, DOCTOR, [patient], message(DOCTOR, patient, "Suite", Reply_To=NURSE)))
    assert conversations(gateway, patient) == {DOCTOR: (True, f"{NURSE} {SECRETARIAT}", False)}


def test_an_opposed_patient_is_refused_and_audited(gateway: Gateway) -> None:
    patient = P["opposed"]
    reply = submit(gateway, DOCTOR, [patient], message(DOCTOR, patient, "Convocation"))
    text = f"5.7.1 the patient {patient} has opposed secure messaging (rule patient-opposed)"
    assert reply == (550, text)
    assert refused(gateway, "patient-opposed") == {
        "principal": DOCTOR,
        "result": "refused",
        "reply": f"550 {text}",
        "rule": "patient-opposed",
    }
    assert conversations(gateway, patient) == {}


def test_one_patient_per_message(gateway: Gateway) -> None:
    a, b = P["other"], P["fin"]
    reply = submit(gateway, DOCTOR, [a, NURSE, b], message(DOCTOR, f"{a}, {b}, {NURSE}", "Deux patients"))
    assert reply == (550, "5.7.1 a message concerns one patient: 2 patient recipients (rule one-patient)")
    assert refused(gateway, "one-patient")["reply"] == f"550 {reply[1]}"
    assert conversations(gateway, a) == {}


def test_x_mss_ins_must_be_o_or_n(gateway: Gateway) -> None:
    patient = P["other"]
    reply = submit(gateway, DOCTOR, [patient], message(DOCTOR, patient, "INS ?", X_MSS_INS="maybe"))
    assert reply == (550, "5.6.0 X-MSS-INS must be O or N (rule x-mss-ins)")
    assert refused(gateway, "x-mss-ins") == {
        "principal": DOCTOR,
        "result": "refused",
        "reply": "550 5.6.0 X-MSS-INS must be O or N (rule x-mss-ins)",
        "rule": "x-mss-ins",
    }
    assert conversations(gateway, patient) == {}


def test_subject_fin_closes_the_conversation(gateway: Gateway) -> None:
    patient = P["fin"]
    queued(submit(gateway, DOCTOR, [patient], message(DOCTOR, patient, "Compte rendu", Reply_To=SECRETARIAT)))
    assert conversations(gateway, patient) == {DOCTOR: (True, SECRETARIAT, False)}
    before = len(audit(gateway, "patient.conversation.closed"))
    queue_id = queued(submit(gateway, DOCTOR, [patient], message(DOCTOR, patient, "[FIN]")))
    assert conversations(gateway, patient) == {DOCTOR: (False, SECRETARIAT, True)}
    closed = audit(gateway, "patient.conversation.closed")
    assert len(closed) == before + 1
    assert closed[-1]["principal"] == DOCTOR
    assert closed[-1]["response"] == {
        "result": "done",
        "patient": patient,
        "correspondent": DOCTOR,
        "queue_id": queue_id,
    }
    # The FIN itself is delivered; a new message from the professional opens the exchange again, afresh.
    wait_for_message(gateway.node, patient, b"Subject: [FIN]")
    queued(submit(gateway, DOCTOR, [patient], message(DOCTOR, patient, "Nouvelle consultation")))
    assert conversations(gateway, patient) == {DOCTOR: (True, "", False)}


def test_x_mss_mes_fin_closes_only_that_correspondents_conversation(gateway: Gateway) -> None:
    patient = P["mes"]
    queued(submit(gateway, DOCTOR, [patient], message(DOCTOR, patient, "Ordonnance")))
    queued(submit(gateway, NURSE, [patient], message(NURSE, patient, "Pansement")))
    queue_id = queued(submit(gateway, NURSE, [patient], message(NURSE, patient, "Fin des soins", X_MSS_MES="FIN")))
    assert conversations(gateway, patient) == {DOCTOR: (True, "", False), NURSE: (False, "", True)}
    closed = audit(gateway, "patient.conversation.closed")[-1]
    assert (closed["principal"], closed["response"]) == (
        NURSE,
        {"result": "done", "patient": patient, "correspondent": NURSE, "queue_id": queue_id},
    )


def test_re_fin_is_not_fin(gateway: Gateway) -> None:
    patient = P["other"]
    queued(submit(gateway, SECRETARIAT, [patient], message(SECRETARIAT, patient, "Re: [FIN]")))
    assert conversations(gateway, patient) == {SECRETARIAT: (True, "", False)}


# -- relay in: peers' professionals to our patients, peers' patients to our professionals --------------


def test_a_peers_professional_opens_a_conversation_with_our_patient(gateway: Gateway, peer: Peer) -> None:
    patient = P["relayed"]
    raw = from_peer_doctor(gateway, peer, patient, "Resultats du laboratoire", Reply_To=f"labo@{PEER}")
    queued(relay(gateway, peer, PEER_DOCTOR, [patient], raw))
    assert conversations(gateway, patient) == {PEER_DOCTOR: (True, f"labo@{PEER}", False)}
    assert b"smime=pass" in wait_for_message(gateway.node, patient, b"Subject: Resultats du laboratoire")


def test_a_peers_professional_is_refused_by_our_opposed_patient(gateway: Gateway, peer: Peer) -> None:
    patient = P["opposed"]
    reply = relay(gateway, peer, PEER_DOCTOR, [patient], from_peer_doctor(gateway, peer, patient, "Rendez-vous"))
    text = f"5.7.1 the patient {patient} has opposed secure messaging (rule patient-opposed)"
    assert reply == (550, text)
    assert refused(gateway, "patient-opposed") == {
        "principal": PEER,
        "result": "refused",
        "reply": f"550 {text}",
        "rule": "patient-opposed",
    }


def test_a_peers_patient_may_not_write_first(gateway: Gateway, peer: Peer) -> None:
    reply = relay(gateway, peer, STRANGER, [NURSE], from_peer_patient(gateway, peer, STRANGER, NURSE, "Question"))
    text = (
        f"5.7.1 a patient may only reply to a professional who wrote to them; {NURSE} did not (rule patient-reply-only)"
    )
    assert reply == (550, text)
    assert refused(gateway, "patient-reply-only") == {
        "principal": PEER,
        "result": "refused",
        "reply": f"550 {text}",
        "rule": "patient-reply-only",
    }


def test_a_peers_patient_replies_until_fin(gateway: Gateway, peer: Peer) -> None:
    # Our doctor writes to the peer's patient: the conversation is recorded here, to judge the replies.
    queued(submit(gateway, DOCTOR, [REMOTE], message(DOCTOR, REMOTE, "Suivi")))
    assert conversations(gateway, REMOTE) == {DOCTOR: (True, "", False)}
    reply = from_peer_patient(gateway, peer, REMOTE, DOCTOR, "Merci docteur")
    queued(relay(gateway, peer, REMOTE, [DOCTOR], reply))
    assert b"smime=pass" in wait_for_message(gateway.node, DOCTOR, b"Subject: Merci docteur")
    assert conversations(gateway, REMOTE) == {DOCTOR: (True, "", False)}  # a patient's reply changes nothing
    # FIN: the patient can no longer reply in this conversation.
    queued(submit(gateway, DOCTOR, [REMOTE], message(DOCTOR, REMOTE, "[FIN]")))
    assert conversations(gateway, REMOTE) == {DOCTOR: (False, "", True)}
    late = relay(
        gateway, peer, REMOTE, [DOCTOR], from_peer_patient(gateway, peer, REMOTE, DOCTOR, "Encore une question")
    )
    text = (
        f"5.7.1 {DOCTOR} closed this conversation ([FIN]): the patient can no longer reply (rule conversation-closed)"
    )
    assert late == (550, text)
    assert refused(gateway, "conversation-closed") == {
        "principal": PEER,
        "result": "refused",
        "reply": f"550 {text}",
        "rule": "conversation-closed",
    }


def test_the_null_sender_does_not_lift_the_rules(gateway: Gateway, peer: Peer) -> None:
    """A notification (`MAIL FROM:<>`) belongs to no conversation, but is judged as its From: author's: a
    peer's patient who writes first, or a professional writing to our opposed patient, is refused all the
    same when the envelope sender is null."""
    raw = from_peer_patient(gateway, peer, STRANGER, NURSE, "Question sans expediteur")
    text = (
        f"5.7.1 a patient may only reply to a professional who wrote to them; {NURSE} did not (rule patient-reply-only)"
    )
    assert relay(gateway, peer, "", [NURSE], raw) == (550, text)
    assert refused(gateway, "patient-reply-only")["reply"] == f"550 {text}"
    patient = P["opposed"]
    raw = from_peer_doctor(gateway, peer, patient, "Avis sans expediteur")
    text = f"5.7.1 the patient {patient} has opposed secure messaging (rule patient-opposed)"
    assert relay(gateway, peer, "", [patient], raw) == (550, text)
    # A notification to a patient who may receive it is delivered, and opens no conversation.
    patient = P["notified"]
    queued(relay(gateway, peer, "", [patient], from_peer_doctor(gateway, peer, patient, "Avis de remise")))
    assert conversations(gateway, patient) == {}


# -- patients read in the web inbox only ---------------------------------------------------------------


def test_a_patient_cannot_log_in_over_smtp(gateway: Gateway) -> None:
    patient = P["login"]
    client = gateway.submission(login=None)
    with pytest.raises(smtplib.SMTPAuthenticationError) as exc:
        client.login(patient, PASSWORD)  # the right password
    assert (exc.value.smtp_code, exc.value.smtp_error) == (535, b"5.7.8 Authentication credentials invalid")
    client.close()
    failed = audit(gateway, "smtp.auth.failed")[-1]["response"]
    assert (failed["result"], failed["login"], failed["reason"]) == ("refused", patient, "patient-web-only")


def test_a_patient_cannot_log_in_over_imap(gateway: Gateway) -> None:
    patient = P["login"]
    raw = Raw(gateway)
    try:
        assert raw.command("l", f'LOGIN {patient} "{PASSWORD}"') == [
            b"l NO [AUTHENTICATIONFAILED] Authentication failed"  # as for a wrong password (RFC 5530)
        ]
        assert raw.command("a", "AUTHENTICATE PLAIN " + plain(patient, PASSWORD)) == [
            b"a NO [AUTHENTICATIONFAILED] Authentication failed"
        ]
    finally:
        raw.close()
    failed = [r["response"] for r in audit(gateway, "imap.login.failed")[-2:]]
    assert [(f["result"], f["login"], f["reason"]) for f in failed] == [("refused", patient, "patient-web-only")] * 2
