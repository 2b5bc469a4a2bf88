"""The patient exchange rules (domain brief §6, Mon espace santé): a pure function of the conversation state.

Implementation notes
- A patient address is `<INS>@patient.<domain>`: a local part that is a valid 15-character INS (key
  checked) in a domain whose first label is `patient` (`directory.addresses.is_patient_address`). The
  rules apply to any message with a patient on either side, whichever operator hosts the patient:
  submission (our professionals), relay in (peers' professionals to our patients, peers' patients to our
  professionals) and the web inbox (our patients' replies) all call `judge` with the same facts.
- A conversation is the state of one (patient, correspondent) pair: each message from the correspondent
  opens it (again) and records its Reply-To addresses; `X-MSS-MES: FIN` or a subject exactly `[FIN]`
  closes it. Only the correspondent's side opens or closes: a patient's message changes nothing.
- Delivery notifications (null sender) pass: they belong to no conversation.
- Towards a patient, in this order: the author must be a professional or organisation mailbox (PER, ORG,
  APP, CAB; CAB is a practice, an organisation) - 550 5.7.1 `patient-sender`; a peer's sender the
  directory does not list (`sender_kind` None) is a mailbox of a trust-space operator outside the patient
  domains, which that operator vouches for, and counts as one; one patient per message -
  550 5.7.1 `one-patient`; the patient must not have opposed messaging - 550 5.7.1 `patient-opposed`
  (known only for our own patients: a peer enforces its patients' opposition); `X-MSS-INS` is `O` or
  `N` when present - 550 5.6.0 `x-mss-ins`; at most 25 MB - 552 5.3.4 `patient-size`.
- From a patient: never to another patient - 550 5.7.1 `patient-to-patient`; an opposed patient does not
  send - 550 5.7.1 `patient-opposed`; each recipient must be the correspondent, or a Reply-To address,
  of one of the patient's conversations - 550 5.7.1 `patient-reply-only`; and that conversation must be
  open - 550 5.7.1 `conversation-closed`.
- A message its author's client encrypted end to end (issue 5) is judged on its outer header block: the
  operator cannot read a `[FIN]` subject or `X-MSS-*` fields inside the encrypted part.
- Every refusal names its rule (`Decision.rule`, also in the reply text) and is audited by the caller
  with `AuditEvent.PATIENT_REFUSED`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from directory.addresses import is_patient_address, normalise
from gateway.audit.events import AuditEvent
from gateway.policy.verdict import ACCEPT, Reject, Verdict

MAX_PATIENT_MESSAGE = 25 * 1024 * 1024  # domain brief §5: size cap towards patients
AUTHOR_KINDS = frozenset({"PER", "ORG", "APP", "CAB"})


@dataclass(frozen=True, slots=True)
class PatientFacts:
    """What this node knows of a patient it hosts."""

    address: str
    opposed: bool


@dataclass(frozen=True, slots=True)
class Conversation:
    patient: str
    correspondent: str
    reply_to: frozenset[str] = frozenset()
    open: bool = True


@dataclass(frozen=True, slots=True)
class Exchange:
    """The facts of one message, as the servers know them after its header block was read."""

    sender: str  # the author: envelope sender (bound to From: and the login by the identity policy)
    sender_kind: str | None  # the directory's type of the sender's mailbox (PAT for patients), None if unknown
    recipients: tuple[str, ...]
    size: int
    subject: str | None = None  # unfolded, RFC 2047 decoded
    x_mss_mes: str | None = None
    x_mss_ins: str | None = None
    reply_to: tuple[str, ...] = ()


class HeaderFacts(Protocol):
    """What the rules read of a header block (gateway.smtp.content.Headers has it)."""

    @property
    def subject(self) -> str | None: ...
    @property
    def x_mss(self) -> dict[str, str]: ...
    @property
    def reply_to(self) -> tuple[str, ...]: ...


def exchange(
    sender: str, sender_kind: str | None, recipients: Sequence[str], headers: HeaderFacts, size: int
) -> Exchange:
    return Exchange(
        sender=sender,
        sender_kind=sender_kind,
        recipients=tuple(recipients),
        size=size,
        subject=headers.subject,
        x_mss_mes=headers.x_mss.get("X-MSS-MES"),
        x_mss_ins=headers.x_mss.get("X-MSS-INS"),
        reply_to=headers.reply_to,
    )


@dataclass(frozen=True, slots=True)
class Open:
    """The correspondent wrote: the conversation is open, with these Reply-To addresses."""

    patient: str
    correspondent: str
    reply_to: frozenset[str]


@dataclass(frozen=True, slots=True)
class Close:
    """The correspondent ended the exchange (FIN)."""

    patient: str
    correspondent: str


Effect = Open | Close


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    rule: str | None = None  # the rule that refused, None when accepted
    effects: tuple[Effect, ...] = field(default_factory=tuple)

    @property
    def accepted(self) -> bool:
        return self.rule is None


def closes(exchange: Exchange) -> bool:
    """`X-MSS-MES: FIN` (case-insensitive value) or a subject exactly `[FIN]` (domain brief §5, §6)."""
    if exchange.x_mss_mes is not None and exchange.x_mss_mes.strip().upper() == "FIN":
        return True
    return exchange.subject is not None and exchange.subject.strip() == "[FIN]"


def _refuse(rule: str, text: str, code: int = 550, enhanced: str = "5.7.1") -> Decision:
    return Decision(Reject(code, enhanced, f"{text} (rule {rule})", AuditEvent.PATIENT_REFUSED), rule)


def _towards_patient(exchange: Exchange, patients: list[str], known: Mapping[str, PatientFacts | None]) -> Decision:
    if exchange.sender_kind is not None and exchange.sender_kind not in AUTHOR_KINDS:
        return _refuse(
            "patient-sender",
            f"only professionals and organisations may write to a patient; {exchange.sender or '<>'} is not one",
        )
    if len(patients) > 1:
        return _refuse("one-patient", f"a message concerns one patient: {len(patients)} patient recipients")
    patient = patients[0]
    facts = known.get(patient)
    if facts is not None and facts.opposed:
        return _refuse("patient-opposed", f"the patient {patient} has opposed secure messaging")
    if exchange.x_mss_ins is not None and exchange.x_mss_ins.strip() not in ("O", "N"):
        return _refuse("x-mss-ins", "X-MSS-INS must be O or N", enhanced="5.6.0")
    if exchange.size > MAX_PATIENT_MESSAGE:
        return _refuse("patient-size", "messages to a patient are limited to 25 MB", code=552, enhanced="5.3.4")
    sender = normalise(exchange.sender)
    if closes(exchange):
        return Decision(ACCEPT, None, (Close(patient, sender),))
    reply_to = frozenset(normalise(a) for a in exchange.reply_to) - {sender}
    return Decision(ACCEPT, None, (Open(patient, sender, reply_to),))


def _from_patient(
    exchange: Exchange, known: Mapping[str, PatientFacts | None], conversations: Sequence[Conversation]
) -> Decision:
    patient = normalise(exchange.sender)
    facts = known.get(patient)
    if facts is not None and facts.opposed:
        return _refuse("patient-opposed", "this patient has opposed secure messaging and cannot send")
    mine = [c for c in conversations if c.patient == patient]
    for rcpt in (normalise(r) for r in exchange.recipients):
        if is_patient_address(rcpt):
            return _refuse("patient-to-patient", f"a patient cannot write to another patient ({rcpt})")
        matching = [c for c in mine if c.correspondent == rcpt or rcpt in c.reply_to]
        if not matching:
            return _refuse(
                "patient-reply-only", f"a patient may only reply to a professional who wrote to them; {rcpt} did not"
            )
        if not any(c.open for c in matching):
            return _refuse(
                "conversation-closed", f"{rcpt} closed this conversation ([FIN]): the patient can no longer reply"
            )
    return Decision(ACCEPT)


def judge(
    exchange: Exchange, known: Mapping[str, PatientFacts | None], conversations: Sequence[Conversation]
) -> Decision:
    """The exchange rules for one message. `known`: the patients among its parties that this node hosts;
    `conversations`: those of the patients among its parties (see `parties`)."""
    if not exchange.sender:
        return Decision(ACCEPT)  # a delivery notification (null sender): never part of a conversation
    if exchange.sender_kind == "PAT" or is_patient_address(exchange.sender):
        return _from_patient(exchange, known, conversations)
    patients = sorted({normalise(r) for r in exchange.recipients if is_patient_address(r)})
    if not patients:
        return Decision(ACCEPT)
    return _towards_patient(exchange, patients, known)


def parties(exchange: Exchange) -> list[str]:
    """The patient addresses among the sender and recipients: whose facts and conversations `judge` needs."""
    found = [exchange.sender, *exchange.recipients]
    return sorted({normalise(a) for a in found if a and is_patient_address(a)})
