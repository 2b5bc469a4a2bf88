"""Coverage-guided fuzz target (atheris, libFuzzer) for what the SMTP listeners do with DATA content.

Run from the repository root (atheris is in the `test` extra):

    PYTHONPATH=. python tests/security/fuzz_smtp_data.py -max_total_time=600 -timeout=10 /tmp/smtp-data-corpus

`handle_DATA` of both listeners (gateway/smtp/server.py) hands the octets aiosmtpd received
(`envelope.original_content`: dot-unstuffed, CRLF-split lines) to the sans-I/O checks of
gateway/smtp/content.py: `prepare_submission` (587/465) or `prepare_relay` (25), both starting with
`check_raw` (smuggling, NUL, line length) and the header block parser, then the identity policy reads
the facts (`identity.check_header_identity`). Properties, for any octets:

- each function returns its declared result (`None`/`Reject` for `check_raw`, `Headers`/`Reject` for
  `parse_headers`, `(bytes, Headers)`/`Reject` for the prepare functions, a `Verdict` for the policy):
  nothing raises (these functions declare ValueError only for bad caller arguments, fixed here);
- every refusal is `554 5.6.0` audited as `smtp.content.refused`, its text one of the module's templates
  (never message content), and the four functions agree on the octet-level refusals;
- an accepted message keeps the client's octets: the relay form is exactly `Received:` + the input,
  the submission form has no Bcc:, has Date: and Message-ID:, ends with the input's body, and both pass
  the checks again (what this node relays, it would accept back).

The first octet selects an amplifier (a repeated fragment inside a header field) so that inputs reach
the sizes where cost grows (the address parser's budget, 998-octet lines, 1000 fields) without
libFuzzer having to write 100 kB; run with `-timeout` for the time bound. Any other exception or
failed assertion is a finding (libFuzzer saves it as crash-*). `tests/security/test_fuzz.py` runs it
for a few seconds and replays `REGRESSIONS`.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from datetime import UTC, datetime

if __name__ == "__main__":
    import atheris  # type: ignore[import-untyped]

    _instrument = atheris.instrument_imports(include=["gateway", "directory"])
else:
    _instrument = contextlib.nullcontext()

with _instrument:
    from gateway.audit.events import AuditEvent
    from gateway.policy import identity
    from gateway.policy.verdict import Accept, Refusal, Reject
    from gateway.smtp import content

DOMAIN = "ch-test.mssante.fr"
NOW = datetime(2024, 3, 5, 10, 0, 0, tzinfo=UTC)
RECEIVED = (
    "Received: from client.example.fr ([192.0.2.10])\r\n"
    "\tby mail.ch-test.mssante.fr with ESMTPSA id Q1;\r\n"
    "\tTue, 05 Mar 2024 10:00:00 +0000"
)
PRINCIPAL = identity.Principal(f"claire.martin@{DOMAIN}", "PER", "password")

# Every refusal text gateway/smtp/content.py can produce (the module's templates).
TEMPLATES = re.compile(
    "|".join(
        [
            re.escape(r.text)
            for r in (
                content.BARE_CR_LF,
                content.UNTERMINATED,
                content.NUL_OCTET,
                content.HEADER_NOT_UTF8,
                content.HEADER_TOO_BIG,
                content.TOO_MANY_FIELDS,
                content.SUBMISSION_HEADER_TOO_BIG,
                content.SUBMISSION_TOO_MANY_FIELDS,
                content.TOO_MANY_ENTRIES,
                content.FROM_INVALID,
                content.SENDER_INVALID,
                content.SENDER_REQUIRED,
                content.MESSAGE_ID_INVALID,
            )
        ]
        + [
            r"line \d+ is longer than 998 octets \(RFC 5322 §2\.1\.1\)",
            r"header line \d+ is not a header field \(RFC 5322 §2\.2\)",
            r"exactly one From: header field required, found \d+ \(RFC 5322 §3\.6\)",
            r"at most one (Sender|Message-ID): header field allowed, found \d+ \(RFC 5322 §3\.6\)",
        ]
    )
)
OCTET_LEVEL = {content.BARE_CR_LF, content.UNTERMINATED, content.NUL_OCTET}
# Fixed: the header limits were checked on what the client sent, before this node adds Received:, Date:
# and Message-ID:, so a message at a limit was accepted here and refused by the next hop; submissions now
# keep room for the trace fields (content.TRACE_FIELDS, TRACE_BYTES). No next-hop refusal is tolerated.
STRICT = os.environ.get("MSSGW_FUZZ_STRICT") == "1"
KNOWN_NEXT_HOP_REFUSALS: set[object] = set()

# Fragments the amplifier repeats inside a header field (address lists, folding, encoded words...).
FIELDS = (b"From: ", b"To: ", b"Cc: ", b"Sender: ", b"Subject: ", b"Message-ID: ", b"Bcc: ", b"X-MSS-Test: ")
MAX_AMPLIFIED = 300_000


def amplify(data: bytes) -> bytes:
    """The message an input stands for: as is, or with a fragment repeated inside a header field.

    Octet 0 < 0x80: the rest as is. Otherwise bits 0-2 pick the field, the rest of octet 0 and octet 1
    the repeat count; octets from 2 on are `fragment | message`: the field (its value the fragment
    repeated) is put before the message.
    """
    if not data or data[0] < 0x80 or len(data) < 3:
        return data[1:]
    field = FIELDS[data[0] & 7]
    count = ((data[0] >> 3) & 0x0F) << 8 | data[1]
    fragment, _, message = data[2:].partition(b"|")
    count = min(count, MAX_AMPLIFIED // max(len(fragment), 1))
    return field + fragment * count + b"\r\n" + message


def _check_refusal(result: object) -> None:
    assert isinstance(result, Reject), result
    assert (result.code, result.enhanced, result.event) == (554, "5.6.0", AuditEvent.SMTP_CONTENT_REFUSED), result
    assert TEMPLATES.fullmatch(result.text), result.text


def _no_bare_cr_lf(data: bytes) -> bool:
    crlf = data.count(b"\r\n")
    return data.count(b"\r") == crlf == data.count(b"\n")


def check(data: bytes) -> None:
    """Every property above, for the message `data` stands for (raises AssertionError or what escaped)."""
    message = amplify(data)
    raw = content.check_raw(message)
    if raw is not None:
        _check_refusal(raw)
    parsed = content.parse_headers(message)
    submitted = content.prepare_submission(message, received=RECEIVED, message_id_domain=DOMAIN, now=NOW)
    relayed = content.prepare_relay(message, received=RECEIVED)
    if raw is not None:
        assert raw in OCTET_LEVEL or raw.text.startswith("line "), raw
        assert parsed == submitted == relayed == raw, (parsed, submitted, relayed, raw)
        return
    assert _no_bare_cr_lf(message)
    assert b"\x00" not in message
    for result in (parsed, submitted, relayed):
        if isinstance(result, Refusal):
            _check_refusal(result)
    if isinstance(parsed, Reject):
        # The header block itself is refused; the prepare functions refuse it too (same parser).
        assert isinstance(submitted, Reject), (parsed, submitted)
        assert isinstance(relayed, Reject), (parsed, relayed)
    else:
        assert isinstance(parsed, content.Headers), parsed
    if not isinstance(relayed, Reject):
        body, facts = relayed
        assert body == RECEIVED.encode() + b"\r\n" + message, "the relay changed more than Received:"
        assert isinstance(facts, content.Headers)
        again = content.prepare_relay(body, received=RECEIVED)
        # A relayed message is delivered here and never relayed further: a peer at the full limits, plus
        # our Received:, may exceed them for a hop that never comes; anything else must pass.
        at_limits = {content.TOO_MANY_FIELDS, content.HEADER_TOO_BIG}
        assert not isinstance(again, Reject) or again in at_limits, ("refused at the next hop", again)
    if not isinstance(submitted, Reject):
        body, facts = submitted
        assert body.startswith(RECEIVED.encode() + b"\r\n")
        assert _no_bare_cr_lf(body)
        assert body.endswith(b"\r\n")
        assert facts.bcc_fields == 0, facts
        assert facts.has_date, facts
        assert facts.message_id is not None, facts
        head_end = message.find(b"\r\n\r\n")
        if head_end >= 0:
            assert body.endswith(message[head_end:]), "the submission changed the body"
        again = content.parse_headers(body)
        if isinstance(again, Reject):
            assert again in KNOWN_NEXT_HOP_REFUSALS, ("what was submitted is refused at the next hop", again)
        else:
            assert isinstance(again, content.Headers), again
            assert again.bcc_fields == 0, again
        verdict = identity.check_header_identity(PRINCIPAL, PRINCIPAL.address, facts.from_, facts.sender)
        assert isinstance(verdict, Accept | Refusal), verdict
        if isinstance(verdict, Refusal):
            assert "\r" not in verdict.text
            assert "\n" not in verdict.text
            assert verdict.text.isprintable()


def TestOneInput(data: bytes) -> None:  # the name atheris expects
    check(data)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
