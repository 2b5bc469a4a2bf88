"""SMTP smuggling (CVE-2023-51764/51765/51766): every non-standard end-of-data is refused.

A smuggling client sends one DATA whose content hides a second transaction behind an end-of-data
sequence that some server in the chain takes for CRLF.CRLF. aiosmtpd ends DATA only on CRLF.CRLF: for it
the fake end is content, delivered to `handle_DATA` with a bare CR or LF in it, which `check_raw`
refuses. `aiosmtpd_content` below reproduces aiosmtpd 1.4.6's DATA framing (lines read up to CRLF, the
end at a lone `.` line, one leading dot removed per line), and each test also spells the content out.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.policy.verdict import Reject
from gateway.smtp.content import check_raw, prepare_relay, prepare_submission

BARE = "554 5.6.0 bare CR or LF in message content refused (RFC 5321 §2.3.8)"
RECEIVED = (
    "Received: from peer.example.fr ([192.0.2.10])\r\n"
    "\tby mx.ch-test.mssante.fr with ESMTPS id Q1;\r\n"
    "\tTue, 05 Mar 2024 10:00:00 +0000"
)
NOW = datetime(2024, 3, 5, 10, 0, 0, tzinfo=UTC)

HEAD = b"From: alice@ch-test.mssante.fr\r\nSubject: x\r\n\r\nhello"
SMUGGLED = (
    b"MAIL FROM:<ceo@ch-test.mssante.fr>\r\n"
    b"RCPT TO:<victim@ch-test.mssante.fr>\r\n"
    b"DATA\r\n"
    b"From: ceo@ch-test.mssante.fr\r\n"
    b"\r\n"
    b"pay the invoice\r\n"
)
END = b".\r\n"


def aiosmtpd_content(wire: bytes) -> tuple[bytes, bytes]:
    """What aiosmtpd 1.4.6 hands handle_DATA for `wire` (the bytes after `354`), and what is left after it."""
    lines: list[bytes] = []
    pos = 0
    while True:
        end = wire.index(b"\r\n", pos) + 2  # StreamReader.readuntil(b"\r\n")
        line = wire[pos:end]
        pos = end
        if line == b".\r\n":
            break
        lines.append(line[1:] if line.startswith(b".") else line)  # RFC 5321 §4.5.2 dot-unstuffing
    return b"".join(lines), wire[pos:]


# The five variants of the 2023 research, each with the exact content aiosmtpd delivers.
VARIANTS = [
    (
        "LF.CRLF",
        b"\n.\r\n",
        b"From: alice@ch-test.mssante.fr\r\nSubject: x\r\n\r\nhello\n.\r\nMAIL FROM:<ceo@ch-test.mssante.fr>\r\n",
    ),
    (
        "LF.LF",
        b"\n.\n",
        b"From: alice@ch-test.mssante.fr\r\nSubject: x\r\n\r\nhello\n.\nMAIL FROM:<ceo@ch-test.mssante.fr>\r\n",
    ),
    (
        "CRLF.LF",  # the "." starts a line for aiosmtpd, which removes it as dot-stuffing
        b"\r\n.\n",
        b"From: alice@ch-test.mssante.fr\r\nSubject: x\r\n\r\nhello\r\n\nMAIL FROM:<ceo@ch-test.mssante.fr>\r\n",
    ),
    (
        "CR.CR",
        b"\r.\r",
        b"From: alice@ch-test.mssante.fr\r\nSubject: x\r\n\r\nhello\r.\rMAIL FROM:<ceo@ch-test.mssante.fr>\r\n",
    ),
    (
        "LF.CR",
        b"\n.\r",
        b"From: alice@ch-test.mssante.fr\r\nSubject: x\r\n\r\nhello\n.\rMAIL FROM:<ceo@ch-test.mssante.fr>\r\n",
    ),
]
REST = SMUGGLED[len(b"MAIL FROM:<ceo@ch-test.mssante.fr>\r\n") :]


@pytest.mark.parametrize(("name", "fake_end", "delivered"), VARIANTS, ids=[v[0] for v in VARIANTS])
def test_smuggling_variant_refused(name: str, fake_end: bytes, delivered: bytes) -> None:
    wire = HEAD + fake_end + SMUGGLED + END
    data, left = aiosmtpd_content(wire)
    assert data == delivered + REST  # the whole smuggled transaction is content, nothing is left over
    assert left == b""
    refusal = check_raw(data)
    assert isinstance(refusal, Reject)
    assert refusal.smtp == BARE
    submitted = prepare_submission(data, received=RECEIVED, message_id_domain="ch-test.mssante.fr", now=NOW)
    assert isinstance(submitted, Reject)
    assert submitted.smtp == BARE
    relayed = prepare_relay(data, received=RECEIVED)
    assert isinstance(relayed, Reject)
    assert relayed.smtp == BARE


@pytest.mark.parametrize(
    "fake_end",
    [b"\r.\n", b"\r.\r\n", b"\r\n.\r", b"\n.\n\r\n", b"\r\n\x00.\r\n", b"\n..\r\n"],
    ids=["CR.LF", "CR.CRLF", "CRLF.CR", "LF.LF-CRLF", "CRLF-NUL.CRLF", "LF..CRLF"],
)
def test_other_non_standard_ends_refused(fake_end: bytes) -> None:
    data, left = aiosmtpd_content(HEAD + fake_end + SMUGGLED + END)
    assert left == b""
    refusal = check_raw(data)
    assert isinstance(refusal, Reject)
    expected = "554 5.6.0 NUL octet in message content refused (RFC 5322 §3.5)" if b"\x00" in fake_end else BARE
    assert refusal.smtp == expected


def test_the_real_end_of_data_ends_the_message() -> None:
    """Control: CRLF.CRLF ends DATA; what follows is read as commands, a transaction of its own."""
    data, left = aiosmtpd_content(HEAD + b"\r\n.\r\n" + SMUGGLED + END)
    assert data == b"From: alice@ch-test.mssante.fr\r\nSubject: x\r\n\r\nhello\r\n"
    assert left == SMUGGLED + END
    assert check_raw(data) is None


def test_bare_lf_in_headers_refused() -> None:
    data, _ = aiosmtpd_content(b"From: alice@ch-test.mssante.fr\nBcc: hidden@x.fr\r\n\r\nbody\r\n.\r\n")
    assert data == b"From: alice@ch-test.mssante.fr\nBcc: hidden@x.fr\r\n\r\nbody\r\n"
    refusal = check_raw(data)
    assert isinstance(refusal, Reject)
    assert refusal.smtp == BARE


_line = st.binary(max_size=200).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b""))


@given(st.lists(_line, max_size=40))
def test_crlf_lines_accepted(lines: list[bytes]) -> None:
    assert check_raw(b"".join(line + b"\r\n" for line in lines)) is None


@given(st.lists(_line, min_size=1, max_size=40), st.data())
def test_one_lone_cr_or_lf_anywhere_refused(lines: list[bytes], data: st.DataObject) -> None:
    content = b"".join(line + b"\r\n" for line in lines)
    at = data.draw(st.integers(min_value=0, max_value=len(content)), label="at")
    lone = data.draw(st.sampled_from([b"\r", b"\n"]), label="lone")
    refusal = check_raw(content[:at] + lone + content[at:])
    assert isinstance(refusal, Reject)
    assert refusal.smtp == BARE
