"""gateway.policy.recipients: exact replies and events, the open-relay matrix, properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.audit.events import AuditEvent
from gateway.policy.recipients import (
    RecipientFacts,
    address_problem,
    check_recipient_syntax,
    check_relay_recipient,
    check_relay_sender,
    check_submission_recipient,
    shown,
)
from gateway.policy.verdict import Accept, Reject, TempFail, Verdict

LOCAL = "ch-test.mssante.fr"
PATIENT = "patient.ch-test.mssante.fr"
LOCAL_DOMAINS = frozenset({LOCAL, PATIENT})
TRUSTED = frozenset({"medecin.mssante.fr", "ch-autre.mssante.fr"})
RCPT = AuditEvent.SMTP_RECIPIENT_REFUSED
SENDER = AuditEvent.SMTP_SENDER_REFUSED
OK = ("accept", None)

ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789#$&'*+/=?^_`{}~-"
DOMAIN_261 = ".".join(["a" * 63] * 4) + ".abcde"  # 4 * 63 + 3 dots + ".abcde" = 261, domain.md §9
DOMAIN_254 = ".".join(["a" * 63] * 3) + "." + "b" * 62
ADDRESS_254 = "x" * 64 + "@" + f"{'d' * 63}.{'d' * 63}.{'e' * 58}.fr"
ADDRESS_255 = "x" * 64 + "@" + f"{'d' * 63}.{'d' * 63}.{'e' * 59}.fr"
ESCAPED_E_ACUTE = "\\xe9"  # how a reply shows "é"


def outcome(verdict: Verdict) -> tuple[str, AuditEvent | None]:
    """("accept", None) or (the SMTP reply, the audit event); checks the verdict class matches the reply code."""
    if isinstance(verdict, Accept):
        return OK
    assert isinstance(verdict, TempFail if verdict.code < 500 else Reject)
    return verdict.smtp, verdict.event


def cut(address: str) -> str:
    """How a reply shows an address longer than 100 characters."""
    return address[:100] + "..."


def test_vectors_are_what_they_claim() -> None:
    assert (len(DOMAIN_261), len(DOMAIN_254), len(ADDRESS_254), len(ADDRESS_255)) == (261, 254, 254, 255)


# --- syntax -----------------------------------------------------------------------------------------------------------

BAD = "553 5.1.3 invalid recipient address"
PERCENT = "'%' in the local part is not accepted (percent-hack routing)"
BANG = "'!' in the local part is not accepted (bang-path routing)"
QUOTED = "quoted local parts are not accepted"
ROUTE = "source routes are not accepted"
LITERAL = "address literals are not accepted"


def bad(shown_address: str, reason: str) -> tuple[str, AuditEvent]:
    """The refusal of a recipient address with bad syntax, as the reply shows the address."""
    return f"{BAD} {shown_address}: {reason}", RCPT


def bad_sender(address: str, reason: str) -> tuple[str, AuditEvent]:
    return f"553 5.1.7 invalid sender address {address}: {reason}", SENDER


SYNTAX_CASES = [
    ("user@ch-test.mssante.fr", OK),
    ("User.Name+tag@CH-Test.MSSante.FR", OK),
    ("x" * 64 + "@ch-test.mssante.fr", OK),
    (ADDRESS_254, OK),
    ("o'neil@ch-test.mssante.fr", OK),
    ("", ("553 5.1.3 empty recipient address", RCPT)),
    ("Postmaster", bad("Postmaster", "the address has no '@'")),
    ("@ch-test.mssante.fr:user@other.example", bad("@ch-test.mssante.fr:user@other.example", ROUTE)),
    ("@a.example,@b.example:user@c.example", bad("@a.example,@b.example:user@c.example", ROUTE)),
    ("@ch-test.mssante.fr", bad("@ch-test.mssante.fr", "the local part is empty")),
    ("user@[127.0.0.1]", bad("user@[127.0.0.1]", LITERAL)),
    ("user@[IPv6:::1]", bad("user@[IPv6:::1]", LITERAL)),
    ('"user@other.example"@ch-test.mssante.fr', bad('"user@other.example"@ch-test.mssante.fr', QUOTED)),
    ('"user"@ch-test.mssante.fr', bad('"user"@ch-test.mssante.fr', QUOTED)),
    (
        "user@other.example@ch-test.mssante.fr",
        bad("user@other.example@ch-test.mssante.fr", "the local part contains '@'"),
    ),
    ("user%other.example@ch-test.mssante.fr", bad("user%other.example@ch-test.mssante.fr", PERCENT)),
    ("other.example!user@ch-test.mssante.fr", bad("other.example!user@ch-test.mssante.fr", BANG)),
    (
        "x" * 65 + "@ch-test.mssante.fr",
        bad("x" * 65 + "@ch-test.mssante.fr", "the local part is 65 octets long, more than 64"),
    ),
    (
        "x" * 75 + "@ch-test.mssante.fr",
        bad("x" * 75 + "@ch-test.mssante.fr", "the local part is 75 octets long, more than 64"),
    ),
    (
        "é" * 33 + "@x.fr",
        bad(ESCAPED_E_ACUTE * 25 + "...", "the local part is 66 octets long, more than 64"),
    ),
    ("user@" + DOMAIN_261, bad(cut("user@" + DOMAIN_261), "the domain is 261 octets long, more than 253")),
    ("user@" + DOMAIN_254, bad(cut("user@" + DOMAIN_254), "the domain is 254 octets long, more than 253")),
    (ADDRESS_255, bad(cut(ADDRESS_255), "the address is 255 octets long, more than 254")),
    ("user@ch-test.mssante.fr.", bad("user@ch-test.mssante.fr.", "the domain ends with a dot")),
    ("usér@ch-test.mssante.fr", bad("us\\xe9r@ch-test.mssante.fr", "non-ASCII addresses are not accepted")),
    ("\udcff@ch-test.mssante.fr", bad("\\udcff@ch-test.mssante.fr", "non-ASCII addresses are not accepted")),
    ("user@localhost", bad("user@localhost", "the domain 'localhost' has a single label")),
    (
        "user@ch-test..mssante.fr",
        bad("user@ch-test..mssante.fr", "the domain label '' is not letters, digits and inner hyphens (1 to 63)"),
    ),
    (".user@ch-test.mssante.fr", bad(".user@ch-test.mssante.fr", "the local part '.user' is not a dot-atom")),
    ("us er@ch-test.mssante.fr", bad("us er@ch-test.mssante.fr", "the local part 'us er' is not a dot-atom")),
    (
        "user\r\n@ch-test.mssante.fr",
        bad("user\\r\\n@ch-test.mssante.fr", "the local part 'user\\r\\n' is not a dot-atom"),
    ),
    ("user@127.0.0.1", bad("user@127.0.0.1", "the domain '127.0.0.1' ends in a numeric label")),
]


@pytest.mark.parametrize(("rcpt", "expected"), SYNTAX_CASES)
def test_recipient_syntax(rcpt: str, expected: tuple[str, AuditEvent | None]) -> None:
    assert outcome(check_recipient_syntax(rcpt)) == expected


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("", "the address is empty"),
        ("a@b.fr", None),
        ("@x.fr:a@b.fr", ROUTE),
        ("a!b%c@b.fr", PERCENT),  # '%' reported first
    ],
)
def test_address_problem(address: str, reason: str | None) -> None:
    assert address_problem(address) == reason


# --- submission: the open-relay matrix and the trust space ------------------------------------------------------------

OUTSIDE = "recipient outside the trust space"

SUBMISSION_CASES = [
    ("user@ch-test.mssante.fr", OK),
    ("USER@CH-TEST.MSSANTE.FR", OK),
    ("123456789012345@patient.ch-test.mssante.fr", OK),
    ("dr.house@medecin.mssante.fr", OK),
    ("Dr.House@Medecin.MSSante.FR", OK),
    ("user@other.example", (f"550 5.7.1 user@other.example: {OUTSIDE}", RCPT)),
    ("user@Other.Example", (f"550 5.7.1 user@Other.Example: {OUTSIDE}", RCPT)),
    ("user@sub.medecin.mssante.fr", (f"550 5.7.1 user@sub.medecin.mssante.fr: {OUTSIDE}", RCPT)),
    ("user@mssante.fr", (f"550 5.7.1 user@mssante.fr: {OUTSIDE}", RCPT)),
    ("user@ch-test.mssante.fr.evil.example", (f"550 5.7.1 user@ch-test.mssante.fr.evil.example: {OUTSIDE}", RCPT)),
    ("user%other.example@ch-test.mssante.fr", bad("user%other.example@ch-test.mssante.fr", PERCENT)),
    ("other.example!user@ch-test.mssante.fr", bad("other.example!user@ch-test.mssante.fr", BANG)),
    ('"user@other.example"@ch-test.mssante.fr', bad('"user@other.example"@ch-test.mssante.fr', QUOTED)),
    ("@ch-test.mssante.fr:user@other.example", bad("@ch-test.mssante.fr:user@other.example", ROUTE)),
    ("user@[127.0.0.1]", bad("user@[127.0.0.1]", LITERAL)),
    ("user@ch-test.mssante.fr.", bad("user@ch-test.mssante.fr.", "the domain ends with a dot")),
    ("user%medecin.mssante.fr@medecin.mssante.fr", bad("user%medecin.mssante.fr@medecin.mssante.fr", PERCENT)),
]


@pytest.mark.parametrize(("rcpt", "expected"), SUBMISSION_CASES)
def test_submission_recipient(rcpt: str, expected: tuple[str, AuditEvent | None]) -> None:
    verdict = check_submission_recipient(
        rcpt, local_domains=LOCAL_DOMAINS, trusted_domains=TRUSTED, count=0, max_recipients=10
    )
    assert outcome(verdict) == expected


def test_submission_configured_domains_compare_case_insensitively_without_trailing_dot() -> None:
    def check(rcpt: str) -> tuple[str, AuditEvent | None]:
        verdict = check_submission_recipient(
            rcpt,
            local_domains=["CH-Test.MSSante.fr."],
            trusted_domains=("Medecin.MSSante.FR",),
            count=0,
            max_recipients=10,
        )
        return outcome(verdict)

    assert check("user@ch-test.mssante.fr") == OK
    assert check("user@MEDECIN.mssante.fr") == OK
    assert check("user@ch-autre.mssante.fr") == (f"550 5.7.1 user@ch-autre.mssante.fr: {OUTSIDE}", RCPT)


def test_submission_with_empty_trust_list_accepts_only_local_domains() -> None:
    def check(rcpt: str) -> tuple[str, AuditEvent | None]:
        return outcome(
            check_submission_recipient(rcpt, local_domains=[LOCAL], trusted_domains=[], count=0, max_recipients=10)
        )

    assert check("user@ch-test.mssante.fr") == OK
    assert check("user@medecin.mssante.fr") == (f"550 5.7.1 user@medecin.mssante.fr: {OUTSIDE}", RCPT)


@pytest.mark.parametrize(
    ("rcpt", "count", "expected"),
    [
        ("user@ch-test.mssante.fr", 9, OK),
        ("user@ch-test.mssante.fr", 10, ("452 4.5.3 too many recipients", RCPT)),
        ("user@medecin.mssante.fr", 11, ("452 4.5.3 too many recipients", RCPT)),
        # permanent refusals win over the count: the client must not retry these later
        ("user@other.example", 10, (f"550 5.7.1 user@other.example: {OUTSIDE}", RCPT)),
        ("user%x@ch-test.mssante.fr", 10, bad("user%x@ch-test.mssante.fr", PERCENT)),
    ],
)
def test_submission_recipient_count(rcpt: str, count: int, expected: tuple[str, AuditEvent | None]) -> None:
    verdict = check_submission_recipient(
        rcpt, local_domains=LOCAL_DOMAINS, trusted_domains=TRUSTED, count=count, max_recipients=10
    )
    assert outcome(verdict) == expected


# --- relay in from a peer operator ------------------------------------------------------------------------------------

ACTIVE = RecipientFacts("user@ch-test.mssante.fr", "PER", active=True)
DISABLED = RecipientFacts("user@ch-test.mssante.fr", "PER", active=False)

RELAY_CASES = [
    ("user@ch-test.mssante.fr", ACTIVE, 0, OK),
    ("User@CH-Test.MSSante.fr", ACTIVE, 0, OK),
    (
        "123456789012345@patient.ch-test.mssante.fr",
        RecipientFacts("123456789012345@patient.ch-test.mssante.fr", "PER", active=True),
        0,
        OK,
    ),
    ("user@ch-test.mssante.fr", None, 0, ("550 5.1.1 user@ch-test.mssante.fr: no such mailbox", RCPT)),
    ("user@ch-test.mssante.fr", DISABLED, 0, ("550 5.2.1 user@ch-test.mssante.fr: mailbox disabled", RCPT)),
    ("user@ch-test.mssante.fr", ACTIVE, 10, ("452 4.5.3 too many recipients", RCPT)),
    ("user@ch-test.mssante.fr", None, 10, ("550 5.1.1 user@ch-test.mssante.fr: no such mailbox", RCPT)),
    ("user@ch-test.mssante.fr", DISABLED, 10, ("550 5.2.1 user@ch-test.mssante.fr: mailbox disabled", RCPT)),
    # open relay matrix: a trusted peer's domain is still not ours, and no routing syntax reaches past our domains
    (
        "user@medecin.mssante.fr",
        ACTIVE,
        0,
        (
            "550 5.7.1 user@medecin.mssante.fr: relaying denied, medecin.mssante.fr is not a domain of this operator",
            RCPT,
        ),
    ),
    (
        "user@other.example",
        ACTIVE,
        0,
        ("550 5.7.1 user@other.example: relaying denied, other.example is not a domain of this operator", RCPT),
    ),
    (
        "user@Other.EXAMPLE",
        None,
        0,
        ("550 5.7.1 user@Other.EXAMPLE: relaying denied, other.example is not a domain of this operator", RCPT),
    ),
    (
        "user@sub.ch-test.mssante.fr",
        ACTIVE,
        0,
        (f"550 5.7.1 user@sub.ch-test.mssante.fr: relaying denied, sub.{LOCAL} is not a domain of this operator", RCPT),
    ),
    ("user%other.example@ch-test.mssante.fr", ACTIVE, 0, bad("user%other.example@ch-test.mssante.fr", PERCENT)),
    ("other.example!user@ch-test.mssante.fr", ACTIVE, 0, bad("other.example!user@ch-test.mssante.fr", BANG)),
    ('"user@other.example"@ch-test.mssante.fr', ACTIVE, 0, bad('"user@other.example"@ch-test.mssante.fr', QUOTED)),
    ("@ch-test.mssante.fr:user@other.example", ACTIVE, 0, bad("@ch-test.mssante.fr:user@other.example", ROUTE)),
    ("user@[127.0.0.1]", ACTIVE, 0, bad("user@[127.0.0.1]", LITERAL)),
    ("user@ch-test.mssante.fr.", ACTIVE, 0, bad("user@ch-test.mssante.fr.", "the domain ends with a dot")),
]


@pytest.mark.parametrize(("rcpt", "mailbox", "count", "expected"), RELAY_CASES)
def test_relay_recipient(
    rcpt: str, mailbox: RecipientFacts | None, count: int, expected: tuple[str, AuditEvent | None]
) -> None:
    verdict = check_relay_recipient(rcpt, local_domains=LOCAL_DOMAINS, mailbox=mailbox, count=count, max_recipients=10)
    assert outcome(verdict) == expected


def test_relay_recipient_configured_domain_in_mixed_case() -> None:
    verdict = check_relay_recipient(
        "user@ch-test.mssante.fr", local_domains=["CH-TEST.mssante.FR"], mailbox=ACTIVE, count=0, max_recipients=10
    )
    assert outcome(verdict) == OK


# --- relay senders ----------------------------------------------------------------------------------------------------

PEER = ("medecin.mssante.fr", "patient.medecin.mssante.fr")
NOT_SERVED = "550 5.7.1 sender domain {} is not served by the authenticated peer ({})"

RELAY_SENDER_CASES = [
    ("", PEER, OK),  # DSNs between operators
    ("<>", PEER, OK),
    ("dr.house@medecin.mssante.fr", PEER, OK),
    ("Dr.House@MEDECIN.mssante.fr", PEER, OK),
    ("123456789012345@patient.medecin.mssante.fr", PEER, OK),
    ("dr.house@medecin.mssante.fr", ("Medecin.MSSante.FR.",), OK),
    (
        "x@ch-autre.mssante.fr",
        PEER,
        (NOT_SERVED.format("ch-autre.mssante.fr", "medecin.mssante.fr, patient.medecin.mssante.fr"), SENDER),
    ),
    (
        "x@CH-Autre.mssante.fr",
        ("Medecin.MSSante.FR",),
        (NOT_SERVED.format("ch-autre.mssante.fr", "medecin.mssante.fr"), SENDER),
    ),
    (
        "x@sub.medecin.mssante.fr",
        PEER,
        (NOT_SERVED.format("sub.medecin.mssante.fr", "medecin.mssante.fr, patient.medecin.mssante.fr"), SENDER),
    ),
    (
        "x@a.medecin.mssante.fr",
        ("*.medecin.mssante.fr",),
        (NOT_SERVED.format("a.medecin.mssante.fr", "*.medecin.mssante.fr"), SENDER),
    ),
    ("x@medecin.mssante.fr", (), (NOT_SERVED.format("medecin.mssante.fr", "none"), SENDER)),
    (
        "x@z.example",
        [f"d{i}.example" for i in range(7)],
        (
            NOT_SERVED.format("z.example", "d0.example, d1.example, d2.example, d3.example, d4.example and 2 more"),
            SENDER,
        ),
    ),
    ("a%b@medecin.mssante.fr", PEER, bad_sender("a%b@medecin.mssante.fr", PERCENT)),
    ("@medecin.mssante.fr:a@other.example", PEER, bad_sender("@medecin.mssante.fr:a@other.example", ROUTE)),
    ("a@medecin.mssante.fr.", PEER, bad_sender("a@medecin.mssante.fr.", "the domain ends with a dot")),
]


@pytest.mark.parametrize(("mail_from", "peer_domains", "expected"), RELAY_SENDER_CASES)
def test_relay_sender(
    mail_from: str, peer_domains: tuple[str, ...] | list[str], expected: tuple[str, AuditEvent | None]
) -> None:
    assert outcome(check_relay_sender(mail_from, peer_domains=peer_domains)) == expected


def test_relay_sender_long_peer_domains_are_cut() -> None:
    long_domain = ".".join(["a" * 63] * 3) + ".fr"  # 194 characters
    verdict = check_relay_sender("x@z.example", peer_domains=[long_domain, "b.example"])
    assert outcome(verdict) == (NOT_SERVED.format("z.example", f"{long_domain}, b.example"[:200] + "..."), SENDER)


# --- properties -------------------------------------------------------------------------------------------------------

dot_atoms = st.lists(st.text(ATEXT, min_size=1, max_size=10), min_size=1, max_size=4).map(".".join)


@st.composite
def case_variants(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if flip else c.lower() for c, flip in zip(text, flips, strict=True))


@st.composite
def routed_local_parts(draw: st.DrawFn) -> str:
    """A local part of atext characters with at least one '%' or '!' somewhere."""
    head = draw(st.text(ATEXT + "%!.", max_size=30))
    tail = draw(st.text(ATEXT + "%!.", max_size=30))
    return head + draw(st.sampled_from("%!")) + tail


@given(local=routed_local_parts(), domain=st.sampled_from([LOCAL, PATIENT, "medecin.mssante.fr", "other.example"]))
def test_percent_and_bang_are_always_refused(local: str, domain: str) -> None:
    rcpt = f"{local}@{domain}"
    reason = PERCENT if "%" in local else BANG
    expected = (f"{BAD} {rcpt}: {reason}", RCPT)
    assert outcome(check_recipient_syntax(rcpt)) == expected
    submitted = check_submission_recipient(
        rcpt, local_domains=LOCAL_DOMAINS, trusted_domains=TRUSTED, count=0, max_recipients=10
    )
    assert outcome(submitted) == expected
    relayed = check_relay_recipient(rcpt, local_domains=LOCAL_DOMAINS, mailbox=ACTIVE, count=0, max_recipients=10)
    assert outcome(relayed) == expected
    sender = check_relay_sender(rcpt, peer_domains=[domain])
    assert outcome(sender) == (f"553 5.1.7 invalid sender address {rcpt}: {reason}", SENDER)


@given(data=st.data(), local=dot_atoms, domain=st.sampled_from([*sorted(LOCAL_DOMAINS | TRUSTED), "other.example"]))
def test_verdicts_ignore_case(data: st.DataObject, local: str, domain: str) -> None:
    lower = f"{local}@{domain}".lower()
    variant = data.draw(case_variants(lower))
    configured_local = [data.draw(case_variants(d)) for d in sorted(LOCAL_DOMAINS)]
    configured_trusted = [data.draw(case_variants(d)) for d in sorted(TRUSTED)]

    def submission(rcpt: str) -> str:
        verdict = check_submission_recipient(
            rcpt, local_domains=configured_local, trusted_domains=configured_trusted, count=0, max_recipients=10
        )
        return "accept" if isinstance(verdict, Accept) else f"{verdict.code} {verdict.enhanced}"

    def relay(rcpt: str) -> str:
        verdict = check_relay_recipient(
            rcpt, local_domains=configured_local, mailbox=ACTIVE, count=0, max_recipients=10
        )
        return "accept" if isinstance(verdict, Accept) else f"{verdict.code} {verdict.enhanced}"

    assert submission(variant) == submission(lower) == ("550 5.7.1" if domain == "other.example" else "accept")
    assert relay(variant) == relay(lower) == ("accept" if domain in LOCAL_DOMAINS else "550 5.7.1")
    peer_variant = data.draw(case_variants(domain))
    assert isinstance(check_relay_sender(variant, peer_domains=[peer_variant]), Accept)


def _safe_reply(verdict: Verdict) -> None:
    if isinstance(verdict, Accept):
        return
    line = verdict.smtp
    assert line.isascii(), line
    assert line.isprintable(), line
    assert len(line) + 2 <= 512, len(line)  # RFC 5321 §4.5.3.1.5, with the CRLF


any_char = st.characters(exclude_categories=())  # surrogates and control characters included
hostile = st.one_of(
    st.text(any_char, max_size=600),
    st.builds("{}@{}".format, st.text(any_char, max_size=300), st.text(any_char, max_size=300)),
    st.builds("{}@{}".format, dot_atoms, st.text("a.-" + "\x00\r\n", max_size=300)),  # long labels: long reasons
)


@given(text=hostile)
def test_any_input_gives_one_safe_reply_line(text: str) -> None:
    _safe_reply(check_recipient_syntax(text))
    _safe_reply(
        check_submission_recipient(
            text, local_domains=LOCAL_DOMAINS, trusted_domains=TRUSTED, count=0, max_recipients=1
        )
    )
    _safe_reply(check_relay_recipient(text, local_domains=LOCAL_DOMAINS, mailbox=None, count=0, max_recipients=1))
    _safe_reply(check_relay_sender(text, peer_domains=[text, "a" * 250 + ".fr"] * 4))


@given(text=st.text(st.characters(exclude_categories=()), max_size=300), limit=st.integers(0, 120))
def test_shown_is_printable_ascii_and_bounded(text: str, limit: int) -> None:
    out = shown(text, limit)
    assert out.isascii()
    assert out.isprintable()
    assert len(out) <= limit + 3
    if text.isascii() and text.isprintable() and len(text) <= limit:
        assert out == text
