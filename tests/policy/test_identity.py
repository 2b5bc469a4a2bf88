"""gateway.policy.identity: who may send as whom on submission, exact replies and events, properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.audit.events import AuditEvent
from gateway.policy.identity import Principal, SenderFacts, check_header_identity, check_mail_from, may_send_as
from gateway.policy.verdict import Accept, Reject, TempFail, Verdict

SENDER = AuditEvent.SMTP_SENDER_REFUSED
OK = ("accept", None)

ALICE = "alice.martin@ch-test.mssante.fr"  # PER, delegated to CARDIO
BOB = "bob.durand@ch-test.mssante.fr"  # PER, not delegated
CARDIO = "secretariat.cardio@ch-test.mssante.fr"  # ORG
CABINET = "cabinet.dupont@ch-test.mssante.fr"  # CAB
LAB = "lab-results@ch-test.mssante.fr"  # APP
PACS = "pacs@ch-test.mssante.fr"  # APP
REMOTE = "house@medecin.mssante.fr"  # PER of another operator

P_ALICE = Principal(ALICE, "PER", "password")
P_BOB = Principal(BOB, "PER", "password")
P_CABINET = Principal(CABINET, "CAB", "password")
P_ORG = Principal(CARDIO, "ORG", "password")
P_LAB_CERT = Principal(LAB, "APP", "certificate")
P_LAB_PASSWORD = Principal(LAB, "APP", "password")


def per(address: str, *, active: bool = True, owner_active: bool | None = True, local: bool = True) -> SenderFacts:
    return SenderFacts(address, "PER", active, owner_active, frozenset(), local)


def org(address: str = CARDIO, *, delegates: frozenset[str] = frozenset(), active: bool = True) -> SenderFacts:
    return SenderFacts(address, "ORG", active, None, delegates, True)


def app(address: str) -> SenderFacts:
    return SenderFacts(address, "APP", True, None, frozenset(), True)


F_ALICE = per(ALICE)
F_BOB = per(BOB)
F_CARDIO = org(delegates=frozenset({"Alice.Martin@CH-Test.mssante.fr", CABINET, LAB}))  # stored case differs
F_CABINET = SenderFacts(CABINET, "CAB", True, True, frozenset(), True)
F_LAB = app(LAB)
F_PACS = app(PACS)


def outcome(verdict: Verdict) -> tuple[str, AuditEvent | None]:
    """("accept", None) or (the SMTP reply, the audit event); checks the verdict class matches the reply code."""
    if isinstance(verdict, Accept):
        return OK
    assert isinstance(verdict, TempFail if verdict.code < 500 else Reject)
    return verdict.smtp, verdict.event


def refused(text: str) -> tuple[str, AuditEvent]:
    return f"550 5.7.1 {text}", SENDER


def bad_syntax(address: str, reason: str) -> tuple[str, AuditEvent]:
    return f"553 5.1.7 invalid sender address {address}: {reason}", SENDER


def not_allowed(principal: str, mail_from: str) -> tuple[str, AuditEvent]:
    return refused(f"{principal} may not send as {mail_from}")


NULL = refused("null sender not accepted from clients")

MAIL_FROM_CASES = [
    # own mailbox, whatever the case
    (P_ALICE, ALICE, F_ALICE, OK),
    (P_ALICE, "Alice.Martin@CH-TEST.MSSANTE.FR", F_ALICE, OK),
    (Principal("ALICE.MARTIN@ch-test.mssante.fr", "PER", "password"), ALICE, F_ALICE, OK),
    (P_CABINET, CABINET, F_CABINET, OK),
    (P_ORG, CARDIO, F_CARDIO, OK),
    (P_LAB_CERT, LAB, F_LAB, OK),
    (P_LAB_PASSWORD, LAB, F_LAB, OK),  # decision: an APP mailbox may send as itself whatever its authentication
    (P_ALICE, ALICE, per(ALICE, owner_active=None), OK),  # no owner professional: nothing to check
    # delegation: PER users listed on the ORG mailbox, case-insensitively
    (P_ALICE, CARDIO, F_CARDIO, OK),
    (P_ALICE, "Secretariat.Cardio@ch-test.mssante.fr", F_CARDIO, OK),
    (P_BOB, CARDIO, F_CARDIO, not_allowed(BOB, CARDIO)),
    (P_CABINET, CARDIO, F_CARDIO, not_allowed(CABINET, CARDIO)),  # listed, but delegates are PER users
    (P_LAB_CERT, CARDIO, F_CARDIO, not_allowed(LAB, CARDIO)),  # an APP is bound to its certificate's address
    # nobody sends as another mailbox
    (P_ALICE, BOB, F_BOB, not_allowed(ALICE, BOB)),
    (P_ALICE, CABINET, F_CABINET, not_allowed(ALICE, CABINET)),
    (P_ALICE, LAB, F_LAB, not_allowed(ALICE, LAB)),
    (P_ORG, ALICE, F_ALICE, not_allowed(CARDIO, ALICE)),
    (P_CABINET, ALICE, F_ALICE, not_allowed(CABINET, ALICE)),
    (P_LAB_CERT, PACS, F_PACS, not_allowed(LAB, PACS)),
    (P_LAB_PASSWORD, PACS, F_PACS, not_allowed(LAB, PACS)),
    (P_ALICE, BOB, org(BOB, delegates=frozenset({ALICE})), OK),  # the facts' type decides, not the address
    (P_ALICE, BOB, SenderFacts(BOB, "PER", True, True, frozenset({ALICE}), True), not_allowed(ALICE, BOB)),
    # null sender
    (P_ALICE, "", None, NULL),
    (P_ALICE, "<>", None, NULL),
    (P_LAB_CERT, "", None, NULL),
    # syntax: 553 5.1.7
    (P_ALICE, "alice", None, bad_syntax("alice", "the address has no '@'")),
    (
        P_ALICE,
        "alice%bob@ch-test.mssante.fr",
        F_ALICE,
        bad_syntax("alice%bob@ch-test.mssante.fr", "'%' in the local part is not accepted (percent-hack routing)"),
    ),
    (
        P_ALICE,
        "bob!alice@ch-test.mssante.fr",
        F_ALICE,
        bad_syntax("bob!alice@ch-test.mssante.fr", "'!' in the local part is not accepted (bang-path routing)"),
    ),
    (
        P_ALICE,
        '"alice"@ch-test.mssante.fr',
        F_ALICE,
        bad_syntax('"alice"@ch-test.mssante.fr', "quoted local parts are not accepted"),
    ),
    (
        P_ALICE,
        "@ch-test.mssante.fr:alice.martin@ch-test.mssante.fr",
        F_ALICE,
        bad_syntax("@ch-test.mssante.fr:alice.martin@ch-test.mssante.fr", "source routes are not accepted"),
    ),
    (P_ALICE, "alice@[127.0.0.1]", None, bad_syntax("alice@[127.0.0.1]", "address literals are not accepted")),
    (P_ALICE, ALICE + ".", F_ALICE, bad_syntax(ALICE + ".", "the domain ends with a dot")),
    (
        P_ALICE,
        "x" * 65 + "@ch-test.mssante.fr",
        None,
        bad_syntax("x" * 65 + "@ch-test.mssante.fr", "the local part is 65 octets long, more than 64"),
    ),
    (
        P_ALICE,
        "al ice@ch-test.mssante.fr",
        None,
        bad_syntax("al ice@ch-test.mssante.fr", "the local part 'al ice' is not a dot-atom"),
    ),
    # the directory and the mailbox state, in this order, before the principal
    (P_ALICE, "ghost@ch-test.mssante.fr", None, refused("ghost@ch-test.mssante.fr is not in the directory")),
    (
        P_ALICE,
        REMOTE,
        per(REMOTE, local=False),
        refused(f"{REMOTE} is a mailbox of another operator; it cannot be used as a sender here"),
    ),
    (P_ALICE, ALICE, per(ALICE, active=False), refused(f"mailbox {ALICE} is disabled")),
    (P_ALICE, ALICE, per(ALICE, owner_active=False), refused(f"the professional who owns {ALICE} is inactive")),
    (P_ALICE, CARDIO, org(delegates=frozenset({ALICE}), active=False), refused(f"mailbox {CARDIO} is disabled")),
    (P_BOB, ALICE, per(ALICE, active=False), refused(f"mailbox {ALICE} is disabled")),
    (P_BOB, ALICE, per(ALICE, active=False, owner_active=False), refused(f"mailbox {ALICE} is disabled")),
    (
        P_BOB,
        ALICE,
        per(ALICE, local=False, active=False),
        refused(f"{ALICE} is a mailbox of another operator; it cannot be used as a sender here"),
    ),
]


@pytest.mark.parametrize(("principal", "mail_from", "facts", "expected"), MAIL_FROM_CASES)
def test_check_mail_from(
    principal: Principal, mail_from: str, facts: SenderFacts | None, expected: tuple[str, AuditEvent | None]
) -> None:
    assert outcome(check_mail_from(principal, mail_from, facts)) == expected


def test_reply_shows_hostile_addresses_escaped_and_cut() -> None:
    verdict = check_mail_from(P_ALICE, "al\rice@ch-test.mssante.fr", None)
    assert outcome(verdict) == bad_syntax("al\\rice@ch-test.mssante.fr", "the local part 'al\\rice' is not a dot-atom")
    long_local = "a" * 64
    long_domain = ".".join(["b" * 60] * 3) + ".fr"
    address = f"{long_local}@{long_domain}"
    assert outcome(check_mail_from(P_ALICE, address, None)) == refused(f"{address[:100]}... is not in the directory")


# --- From: and Sender: ------------------------------------------------------------------------------------------------

HEADER_CASES = [
    (P_ALICE, ALICE, [ALICE], [], OK),
    (P_ALICE, ALICE, ["Alice.Martin@CH-Test.MSSante.fr"], [], OK),
    (P_ALICE, ALICE, [ALICE], [ALICE], OK),
    (P_ALICE, ALICE, [ALICE], ["ALICE.MARTIN@ch-test.mssante.fr"], OK),
    (P_ALICE, CARDIO, [CARDIO], [], OK),
    (P_ALICE, CARDIO, [CARDIO], [ALICE], OK),  # the delegated user names itself
    (P_ALICE, CARDIO, [CARDIO], ["Alice.Martin@ch-test.mssante.fr"], OK),
    (P_ALICE, CARDIO, [CARDIO], [CARDIO], OK),
    (P_LAB_CERT, LAB, [LAB], [], OK),
    (P_ALICE, ALICE, [], [], refused("missing From:")),
    (P_ALICE, ALICE, [""], [], refused("missing From:")),
    (P_ALICE, ALICE, [ALICE, BOB], [], refused("more than one From: address")),
    (P_ALICE, ALICE, [ALICE, ALICE], [ALICE], refused("more than one From: address")),
    (P_ALICE, ALICE, [BOB], [], refused(f"From: {BOB} does not match the envelope sender {ALICE}")),
    (P_ALICE, ALICE, [CARDIO], [ALICE], refused(f"From: {CARDIO} does not match the envelope sender {ALICE}")),
    (P_ALICE, CARDIO, [ALICE], [], refused(f"From: {ALICE} does not match the envelope sender {CARDIO}")),
    (
        P_ALICE,
        ALICE,
        [ALICE],
        [BOB],
        refused(f"Sender: {BOB} is neither the envelope sender {ALICE} nor the authenticated user {ALICE}"),
    ),
    (
        P_ALICE,
        CARDIO,
        [CARDIO],
        [BOB],
        refused(f"Sender: {BOB} is neither the envelope sender {CARDIO} nor the authenticated user {ALICE}"),
    ),
    (P_ALICE, CARDIO, [CARDIO], [""], refused("empty Sender: address")),
    (P_ALICE, CARDIO, [CARDIO], [" "], refused("empty Sender: address")),
    (P_ALICE, ALICE, [" "], [], refused("missing From:")),
    (P_ALICE, CARDIO, [CARDIO], [ALICE, CARDIO], refused("more than one Sender: address")),
    (P_ALICE, "", [""], [], NULL),
    (P_ALICE, "<>", [ALICE], [], NULL),
]


@pytest.mark.parametrize(("principal", "mail_from", "from_", "sender", "expected"), HEADER_CASES)
def test_check_header_identity(
    principal: Principal,
    mail_from: str,
    from_: list[str],
    sender: list[str],
    expected: tuple[str, AuditEvent | None],
) -> None:
    assert outcome(check_header_identity(principal, mail_from, from_, sender)) == expected


def test_header_identity_accepts_any_sequence() -> None:
    assert outcome(check_header_identity(P_ALICE, CARDIO, (CARDIO,), (ALICE,))) == OK


# --- properties -------------------------------------------------------------------------------------------------------

ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789#$&'*+/=?^_`{}~-"
dot_atoms = st.lists(st.text(ATEXT, min_size=1, max_size=10), min_size=1, max_size=4).map(".".join)
domains = st.sampled_from(["ch-test.mssante.fr", "patient.ch-test.mssante.fr"])


@st.composite
def case_variants(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if flip else c.lower() for c, flip in zip(text, flips, strict=True))


@given(data=st.data(), local=dot_atoms, domain=domains, kind=st.sampled_from(["PER", "ORG", "APP", "CAB"]))
def test_own_address_in_any_case_is_accepted(data: st.DataObject, local: str, domain: str, kind: str) -> None:
    address = f"{local}@{domain}"
    principal = Principal(
        data.draw(case_variants(address)), kind, data.draw(st.sampled_from(["password", "certificate"]))
    )
    mail_from = data.draw(case_variants(address))
    facts = SenderFacts(data.draw(case_variants(address)), kind, True, True, frozenset(), True)
    assert outcome(check_mail_from(principal, mail_from, facts)) == OK
    author = data.draw(case_variants(address))
    agent = data.draw(case_variants(address))
    assert outcome(check_header_identity(principal, mail_from, [author], [agent])) == OK


@given(data=st.data(), user=dot_atoms, service=dot_atoms, domain=domains)
def test_delegation_ignores_case(data: st.DataObject, user: str, service: str, domain: str) -> None:
    user_address, org_address = f"{user}@{domain}", f"svc.{service}@{domain}"
    principal = Principal(data.draw(case_variants(user_address)), "PER", "password")
    delegated = SenderFacts(org_address, "ORG", True, None, frozenset({data.draw(case_variants(user_address))}), True)
    assert outcome(check_mail_from(principal, data.draw(case_variants(org_address)), delegated)) == OK
    assert may_send_as(principal, delegated)
    undelegated = SenderFacts(org_address, "ORG", True, None, frozenset(), True)
    assert outcome(check_mail_from(principal, org_address, undelegated)) == not_allowed(principal.address, org_address)


@given(mine=dot_atoms, theirs=dot_atoms, domain=domains, kind=st.sampled_from(["PER", "ORG", "APP", "CAB"]))
def test_nobody_sends_as_another_undelegated_mailbox(mine: str, theirs: str, domain: str, kind: str) -> None:
    own, other = f"{mine}@{domain}", f"{theirs}@{domain}"
    if own.lower() == other.lower():
        other = f"x{other}"
    principal = Principal(own, kind, "certificate" if kind == "APP" else "password")
    for other_kind in ("PER", "ORG", "APP", "CAB"):
        facts = SenderFacts(other, other_kind, True, True, frozenset(), True)
        assert outcome(check_mail_from(principal, other, facts)) == not_allowed(own, other)
    assert outcome(check_header_identity(principal, own, [own], [other])) == refused(
        f"Sender: {other} is neither the envelope sender {own} nor the authenticated user {own}"
    )


@given(
    principal_kind=st.sampled_from(["PER", "ORG", "APP", "CAB"]),
    mail_from=st.text(st.characters(exclude_categories=()), max_size=400),
    from_=st.lists(st.text(st.characters(exclude_categories=()), max_size=400), max_size=3),
    sender=st.lists(st.text(st.characters(exclude_categories=()), max_size=400), max_size=3),
)
def test_any_input_gives_one_safe_reply_line(
    principal_kind: str, mail_from: str, from_: list[str], sender: list[str]
) -> None:
    principal = Principal("a" * 64 + "@" + ".".join(["b" * 63] * 2) + ".fr", principal_kind, "password")
    for verdict in (
        check_mail_from(principal, mail_from, None),
        check_mail_from(principal, mail_from, SenderFacts(mail_from, "PER", True, True, frozenset(), True)),
        check_header_identity(principal, mail_from, from_, sender),
    ):
        if isinstance(verdict, Accept):
            continue
        assert verdict.event is SENDER
        assert verdict.smtp.isascii(), verdict.smtp
        assert verdict.smtp.isprintable(), verdict.smtp
        assert len(verdict.smtp) + 2 <= 512  # RFC 5321 §4.5.3.1.5, with the CRLF
