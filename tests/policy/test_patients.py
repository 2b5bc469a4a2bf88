"""gateway.policy.patients: the exchange rules (domain brief §6) as a pure function, exact replies and effects."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from gateway.audit.events import AuditEvent
from gateway.policy.patients import (
    MAX_PATIENT_MESSAGE,
    Close,
    Conversation,
    Decision,
    Exchange,
    Open,
    PatientFacts,
    closes,
    exchange,
    judge,
    parties,
)
from gateway.policy.verdict import ACCEPT, Reject
from gateway.smtp.content import Headers, parse_headers

DOMAIN = "ch-test.mssante.fr"
PAT_DOMAIN = f"patient.{DOMAIN}"
PEER_PAT_DOMAIN = "patient.clinique-b.mssante.fr"
PATIENT = f"185037512345641@{PAT_DOMAIN}"  # man, born 1985-03
PATIENT2 = f"292069912345618@{PAT_DOMAIN}"
REMOTE_PATIENT = f"279017512345659@{PEER_PAT_DOMAIN}"
DOCTOR = f"claire.martin@{DOMAIN}"
NURSE = f"lucas.bernard@{DOMAIN}"
SECRETARIAT = f"secretariat@{DOMAIN}"
PEER_DOCTOR = "dr.durand@clinique-b.mssante.fr"
EVENT = AuditEvent.PATIENT_REFUSED


@dataclass
class Facts:
    """A header block's facts, as gateway.smtp.content.Headers gives them."""

    subject: str | None = None
    x_mss: dict[str, str] = field(default_factory=dict)
    reply_to: tuple[str, ...] = ()


def ex(
    sender: str = DOCTOR,
    recipients: tuple[str, ...] = (PATIENT,),
    *,
    kind: str | None = "PER",
    size: int = 1000,
    subject: str | None = "Résultats",
    mes: str | None = None,
    ins: str | None = None,
    reply_to: tuple[str, ...] = (),
) -> Exchange:
    return Exchange(sender, kind, recipients, size, subject, mes, ins, reply_to)


def refusal(decision: Decision) -> tuple[str, str | None]:
    """(the SMTP reply, the rule) of a refusal; checks it is audited as patient.refused with no effects."""
    assert isinstance(decision.verdict, Reject)
    assert decision.verdict.event is EVENT
    assert decision.effects == ()
    assert not decision.accepted
    return decision.verdict.smtp, decision.rule


def accepted(decision: Decision) -> tuple[object, ...]:
    assert decision.verdict is ACCEPT
    assert decision.rule is None
    assert decision.accepted
    return decision.effects


OURS = {PATIENT: PatientFacts(PATIENT, False), PATIENT2: PatientFacts(PATIENT2, False)}


# -- towards a patient ---------------------------------------------------------------------------------


def test_a_professional_opens_a_conversation_with_its_reply_to_addresses() -> None:
    decision = judge(ex(reply_to=(SECRETARIAT, "Doc@Autre.example")), OURS, [])
    assert accepted(decision) == (Open(PATIENT, DOCTOR, frozenset({SECRETARIAT, "doc@autre.example"})),)


def test_the_sender_is_not_its_own_reply_to_and_addresses_are_normalised() -> None:
    decision = judge(
        ex(sender="Claire.Martin@CH-Test.mssante.fr", recipients=(PATIENT.upper(),), reply_to=(DOCTOR.upper(),)),
        OURS,
        [],
    )
    assert accepted(decision) == (Open(PATIENT, DOCTOR, frozenset()),)


@pytest.mark.parametrize("kind", ["PER", "ORG", "APP", "CAB", None])
def test_professionals_organisations_and_unlisted_peer_senders_may_write(kind: str | None) -> None:
    """None: a peer's mailbox the directory does not list, which its operator vouches for."""
    assert accepted(judge(ex(sender=PEER_DOCTOR, kind=kind), OURS, [])) == (Open(PATIENT, PEER_DOCTOR, frozenset()),)


def test_a_sender_of_another_kind_is_refused() -> None:
    assert refusal(judge(ex(kind="XYZ"), OURS, [])) == (
        f"550 5.7.1 only professionals and organisations may write to a patient; {DOCTOR} is not one"
        " (rule patient-sender)",
        "patient-sender",
    )


def test_one_patient_per_message() -> None:
    decision = judge(ex(recipients=(PATIENT, NURSE, PATIENT2)), OURS, [])
    assert refusal(decision) == (
        "550 5.7.1 a message concerns one patient: 2 patient recipients (rule one-patient)",
        "one-patient",
    )


def test_the_same_patient_twice_is_one_patient() -> None:
    decision = judge(ex(recipients=(PATIENT, PATIENT.upper())), OURS, [])
    assert accepted(decision) == (Open(PATIENT, DOCTOR, frozenset()),)


def test_a_local_and_a_remote_patient_are_two_patients() -> None:
    decision = judge(ex(recipients=(PATIENT, REMOTE_PATIENT)), OURS, [])
    assert refusal(decision)[1] == "one-patient"


def test_an_opposed_patient_is_refused() -> None:
    known = {PATIENT: PatientFacts(PATIENT, True)}
    assert refusal(judge(ex(recipients=(PATIENT, NURSE)), known, [])) == (
        f"550 5.7.1 the patient {PATIENT} has opposed secure messaging (rule patient-opposed)",
        "patient-opposed",
    )


def test_a_remote_patients_opposition_is_its_operators_to_enforce() -> None:
    decision = judge(ex(recipients=(REMOTE_PATIENT,)), {}, [])
    assert accepted(decision) == (Open(REMOTE_PATIENT, DOCTOR, frozenset()),)


@pytest.mark.parametrize("value", ["O", "N", " O ", "N "])
def test_x_mss_ins_o_or_n_passes(value: str) -> None:
    assert accepted(judge(ex(ins=value), OURS, [])) == (Open(PATIENT, DOCTOR, frozenset()),)


@pytest.mark.parametrize("value", ["maybe", "o", "Oui", "", "O, N"])
def test_x_mss_ins_anything_else_is_refused(value: str) -> None:
    assert refusal(judge(ex(ins=value), OURS, [])) == (
        "550 5.6.0 X-MSS-INS must be O or N (rule x-mss-ins)",
        "x-mss-ins",
    )


def test_x_mss_ins_is_not_checked_when_no_patient_is_involved() -> None:
    assert accepted(judge(ex(recipients=(NURSE,), ins="maybe"), OURS, [])) == ()


def test_size_cap_towards_a_patient_is_25_mb() -> None:
    assert MAX_PATIENT_MESSAGE == 25 * 1024 * 1024
    assert accepted(judge(ex(size=MAX_PATIENT_MESSAGE), OURS, [])) == (Open(PATIENT, DOCTOR, frozenset()),)
    assert refusal(judge(ex(size=MAX_PATIENT_MESSAGE + 1), OURS, [])) == (
        "552 5.3.4 messages to a patient are limited to 25 MB (rule patient-size)",
        "patient-size",
    )


def test_rules_towards_a_patient_apply_in_order() -> None:
    """sender kind, one patient, opposition, X-MSS-INS, size: the first that fails names the refusal."""
    opposed = {PATIENT: PatientFacts(PATIENT, True), PATIENT2: PatientFacts(PATIENT2, True)}
    big = MAX_PATIENT_MESSAGE + 1
    both = (PATIENT, PATIENT2)
    assert refusal(judge(ex(recipients=both, kind="XYZ", ins="maybe", size=big), opposed, []))[1] == "patient-sender"
    assert refusal(judge(ex(recipients=both, ins="maybe", size=big), opposed, []))[1] == "one-patient"
    assert refusal(judge(ex(ins="maybe", size=big), opposed, []))[1] == "patient-opposed"
    assert refusal(judge(ex(ins="maybe", size=big), OURS, []))[1] == "x-mss-ins"
    assert refusal(judge(ex(size=big), OURS, []))[1] == "patient-size"


# -- FIN -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "mes", "closing"),
    [
        ("[FIN]", None, True),
        ("  [FIN] ", None, True),
        ("[fin]", None, False),
        ("Re: [FIN]", None, False),
        ("[FIN] résultats", None, False),
        (None, "FIN", True),
        ("Résultats", "fin", True),
        ("Résultats", " Fin ", True),
        ("Résultats", "FINI", False),
        ("Résultats", "FIN, FIN", False),  # a repeated field (content.Headers joins them): ambiguous
        (None, None, False),
    ],
)
def test_closes(subject: str | None, mes: str | None, closing: bool) -> None:
    assert closes(ex(subject=subject, mes=mes)) is closing


def test_fin_closes_the_conversation_instead_of_opening_it() -> None:
    assert accepted(judge(ex(subject="[FIN]", reply_to=(SECRETARIAT,)), OURS, [])) == (Close(PATIENT, DOCTOR),)
    assert accepted(judge(ex(mes="FIN"), OURS, [])) == (Close(PATIENT, DOCTOR),)


def test_fin_is_still_refused_to_an_opposed_patient() -> None:
    decision = judge(ex(subject="[FIN]"), {PATIENT: PatientFacts(PATIENT, True)}, [])
    assert refusal(decision)[1] == "patient-opposed"


# -- from a patient ------------------------------------------------------------------------------------

OPEN = Conversation(PATIENT, DOCTOR, frozenset({SECRETARIAT}), True)
CLOSED = Conversation(PATIENT, DOCTOR, frozenset({SECRETARIAT}), False)


@pytest.mark.parametrize("rcpt", [DOCTOR, SECRETARIAT, DOCTOR.upper()])
def test_a_patient_replies_to_the_correspondent_or_its_reply_to(rcpt: str) -> None:
    assert accepted(judge(ex(sender=PATIENT, recipients=(rcpt,), kind="PAT"), OURS, [OPEN])) == ()


def test_a_patients_message_changes_no_conversation_even_with_fin() -> None:
    decision = judge(ex(sender=PATIENT, recipients=(DOCTOR,), kind="PAT", subject="[FIN]", mes="FIN"), OURS, [OPEN])
    assert accepted(decision) == ()


def test_a_patient_may_not_write_first() -> None:
    assert refusal(judge(ex(sender=PATIENT, recipients=(NURSE,), kind="PAT"), OURS, [OPEN])) == (
        f"550 5.7.1 a patient may only reply to a professional who wrote to them; {NURSE} did not"
        " (rule patient-reply-only)",
        "patient-reply-only",
    )


def test_every_recipient_must_be_a_correspondent() -> None:
    decision = judge(ex(sender=PATIENT, recipients=(DOCTOR, NURSE), kind="PAT"), OURS, [OPEN])
    assert refusal(decision)[1] == "patient-reply-only"


def test_another_patients_conversation_does_not_count() -> None:
    theirs = Conversation(PATIENT2, NURSE, frozenset(), True)
    decision = judge(ex(sender=PATIENT, recipients=(NURSE,), kind="PAT"), OURS, [OPEN, theirs])
    assert refusal(decision)[1] == "patient-reply-only"


@pytest.mark.parametrize("rcpt", [DOCTOR, SECRETARIAT])
def test_after_fin_the_patient_can_no_longer_reply(rcpt: str) -> None:
    assert refusal(judge(ex(sender=PATIENT, recipients=(rcpt,), kind="PAT"), OURS, [CLOSED])) == (
        f"550 5.7.1 {rcpt} closed this conversation ([FIN]): the patient can no longer reply"
        " (rule conversation-closed)",
        "conversation-closed",
    )


def test_a_reply_to_address_of_another_open_conversation_still_reaches() -> None:
    """The secretariat is named by two doctors; one closed, the other's conversation is open."""
    other = Conversation(PATIENT, NURSE, frozenset({SECRETARIAT}), True)
    decision = judge(ex(sender=PATIENT, recipients=(SECRETARIAT,), kind="PAT"), OURS, [CLOSED, other])
    assert accepted(decision) == ()


def test_a_patient_never_writes_to_a_patient() -> None:
    talking = Conversation(PATIENT, PATIENT2, frozenset(), True)  # whatever the store holds
    decision = judge(ex(sender=PATIENT, recipients=(PATIENT2,), kind="PAT"), OURS, [talking])
    assert refusal(decision) == (
        f"550 5.7.1 a patient cannot write to another patient ({PATIENT2}) (rule patient-to-patient)",
        "patient-to-patient",
    )


def test_an_opposed_patient_does_not_send() -> None:
    known = {PATIENT: PatientFacts(PATIENT, True)}
    assert refusal(judge(ex(sender=PATIENT, recipients=(DOCTOR,), kind="PAT"), known, [OPEN])) == (
        "550 5.7.1 this patient has opposed secure messaging and cannot send (rule patient-opposed)",
        "patient-opposed",
    )


def test_a_remote_patient_is_recognised_by_address_alone() -> None:
    """A peer's patient is in no local directory (kind None): the address says it is a patient."""
    conv = Conversation(REMOTE_PATIENT, DOCTOR, frozenset(), True)
    assert accepted(judge(ex(sender=REMOTE_PATIENT, recipients=(DOCTOR,), kind=None), {}, [conv])) == ()
    decision = judge(ex(sender=REMOTE_PATIENT, recipients=(DOCTOR,), kind=None), {}, [])
    assert refusal(decision)[1] == "patient-reply-only"


def test_a_pat_sender_whose_address_is_not_an_ins_is_still_a_patient() -> None:
    """The directory's type decides too: a PAT mailbox is judged as a patient whatever its local part."""
    odd = f"not-an-ins@{PAT_DOMAIN}"
    decision = judge(ex(sender=odd, recipients=(DOCTOR,), kind="PAT"), {}, [])
    assert refusal(decision)[1] == "patient-reply-only"


# -- what is not the rules' business -------------------------------------------------------------------


def test_a_null_sender_passes_whatever_the_recipients() -> None:
    """Delivery notifications belong to no conversation."""
    known = {PATIENT: PatientFacts(PATIENT, True)}
    decision = judge(ex(sender="", recipients=(PATIENT, PATIENT2), kind=None, ins="maybe"), known, [])
    assert accepted(decision) == ()


def test_no_patient_no_rule() -> None:
    assert accepted(judge(ex(recipients=(NURSE, PEER_DOCTOR), size=MAX_PATIENT_MESSAGE * 2), {}, [])) == ()


# -- parties and exchange ------------------------------------------------------------------------------


def test_parties_are_the_patients_among_sender_and_recipients() -> None:
    assert parties(ex(recipients=(NURSE, PATIENT2.upper(), PATIENT, PATIENT))) == [PATIENT, PATIENT2]
    assert parties(ex(sender=REMOTE_PATIENT, recipients=(DOCTOR,))) == [REMOTE_PATIENT]
    assert parties(ex(sender="", recipients=(DOCTOR,))) == []
    not_patients = (
        f"185037512345642@{PAT_DOMAIN}",  # bad key
        f"18503751234564@{PAT_DOMAIN}",  # 14 characters
        f"185037512345641@{DOMAIN}",  # not a patient domain
        f"185037512345641@patientb.{DOMAIN}",
    )
    assert parties(ex(recipients=not_patients)) == []


def test_exchange_reads_the_header_facts() -> None:
    headers = Facts(subject="[FIN]", x_mss={"X-MSS-MES": "FIN", "X-MSS-INS": "O"}, reply_to=(SECRETARIAT,))
    assert exchange(DOCTOR, "PER", [PATIENT], headers, 42) == Exchange(
        DOCTOR, "PER", (PATIENT,), 42, "[FIN]", "FIN", "O", (SECRETARIAT,)
    )
    assert exchange("", None, (), Facts(), 0) == Exchange("", None, (), 0)


def test_exchange_from_a_parsed_header_block() -> None:
    """The facts content.parse_headers gives: Subject decoded (RFC 2047), Reply-To addresses, X-MSS-* by name."""
    raw = (
        f"From: Dr Martin <{DOCTOR}>\r\n"
        f"To: <{PATIENT}>\r\n"
        "Subject: =?utf-8?q?=5BFIN=5D?=\r\n"
        f"Reply-To: Secr\u00e9tariat <{SECRETARIAT}>, Autre <autre@{DOMAIN}>\r\n"
        "x-mss-ins: N\r\n"
        "\r\n"
        "Bonjour\r\n"
    ).encode()
    headers = parse_headers(raw)
    assert isinstance(headers, Headers)
    got = exchange(DOCTOR, "PER", [PATIENT], headers, len(raw))
    assert (got.subject, got.x_mss_ins, got.x_mss_mes, got.reply_to) == (
        "[FIN]",
        "N",
        None,
        (SECRETARIAT, f"autre@{DOMAIN}"),
    )
    assert closes(got)
    assert accepted(judge(got, OURS, [])) == (Close(PATIENT, DOCTOR),)
