"""SMTP smuggling (CVE-2023-51764/51765/51766) on the wire, on every SMTP listener: submission (587),
submissions (465) and the relay between operators (25, a trusted peer's certificate).

tests/smtp/test_smuggling.py proves the content check on the exact octets aiosmtpd hands over, and
tests/smtp/test_submission.py sends the five published variants to 587. Here every variant, and the other
non-standard ends, go to each listener; each must get exactly one reply, the refusal, and leave the
session in step (the smuggled MAIL/RCPT/DATA were content, never commands); nothing smuggled is queued.
BDAT (CHUNKING, another way to frame a message) is neither offered nor accepted.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.conftest import Wire
from tests.smtp.conftest import DOCTOR, NURSE, PASSWORD, PEER, Gateway

MARKER = f"smuggled-{secrets.token_hex(4)}"
BARE = (554, "5.6.0 bare CR or LF in message content refused (RFC 5321 section 2.3.8)")
NUL = (554, "5.6.0 NUL octet in message content refused (RFC 5322 section 3.5)")
# The fake end-of-data, and the reply it must get. The first five are the 2023 research's variants.
ENDINGS = {
    "LF.CRLF": (b"\n.\r\n", BARE),
    "LF.LF": (b"\n.\n", BARE),
    "CRLF.LF": (b"\r\n.\n", BARE),
    "CR.CR": (b"\r.\r", BARE),
    "LF.CR": (b"\n.\r", BARE),
    "CR.LF": (b"\r.\n", BARE),
    "CR.CRLF": (b"\r.\r\n", BARE),
    "CRLF.CR": (b"\r\n.\r", BARE),
    "LF.LF-CRLF": (b"\n.\n\r\n", BARE),
    "LF..CRLF": (b"\n..\r\n", BARE),
    "CRLF-NUL.CRLF": (b"\r\n\x00.\r\n", NUL),
}
LISTENERS = ("submission", "submissions", "relay")


@pytest.fixture(scope="module")
def accepted_before(gw: Gateway) -> Iterator[int]:
    """How many messages the node had accepted before this module: none may be added by it."""

    def count() -> int:
        return len(gw.node.cli("audit", "search", "--event", "smtp.message.accepted", "--json").json())  # type: ignore[arg-type]

    before = count()
    yield before
    assert count() == before, "a smuggling attempt was accepted"


def open_transaction(gw: Gateway, listener: str, peer_cert: Path) -> Wire:
    """A session at DATA's 354: a professional's on the submission ports, a peer operator's on the relay."""
    if listener == "relay":
        wire = Wire(gw, listener, cert=peer_cert, helo=f"mx.{PEER}")
        sender, rcpt = f"dr.durand@{PEER}", DOCTOR
    else:
        wire = Wire(gw, listener)
        wire.login(DOCTOR, PASSWORD)
        sender, rcpt = DOCTOR, NURSE
    assert wire.command(f"MAIL FROM:<{sender}>") == (250, "2.1.0 OK")
    assert wire.command(f"RCPT TO:<{rcpt}>") == (250, "2.1.5 OK")
    assert wire.command("DATA")[0] == 354
    return wire


@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize("listener", LISTENERS)
def test_smuggled_message_is_refused_and_the_session_stays_in_step(
    gw: Gateway, peer_cert: Path, accepted_before: int, listener: str, ending: str
) -> None:
    fake_end, expected = ENDINGS[ending]
    wire = open_transaction(gw, listener, peer_cert)
    smuggled = (
        f"MAIL FROM:<{DOCTOR}>\r\nRCPT TO:<{NURSE}>\r\nDATA\r\n"
        f"From: {DOCTOR}\r\nTo: {NURSE}\r\nSubject: {MARKER}\r\n\r\nsmuggled\r\n"
    ).encode()
    wire.send(f"From: {DOCTOR}\r\nTo: {NURSE}\r\nSubject: cover\r\n\r\nhello".encode() + fake_end + smuggled + b".\r\n")
    assert wire.reply() == expected
    # One reply only: had the server taken the fake end, the smuggled MAIL, RCPT and DATA would answer here.
    assert wire.command("NOOP") == (250, "2.0.0 OK")
    assert wire.command("RSET") == (250, "2.0.0 OK")
    wire.close()


@pytest.mark.parametrize("listener", LISTENERS)
def test_bdat_is_not_offered_nor_accepted(gw: Gateway, peer_cert: Path, listener: str) -> None:
    wire = Wire(gw, listener, cert=peer_cert if listener == "relay" else None)
    offered = {line.split()[0].upper() for line in wire.features.splitlines()}
    assert "PIPELINING" in offered  # commands are read one by one from the stream (RFC 2920)
    assert not offered & {"CHUNKING", "BINARYMIME"}, offered
    assert wire.command("BDAT 10 LAST") == (500, '5.5.1 Error: command "BDAT" not recognized')
    assert wire.command("NOOP") == (250, "2.0.0 OK")
    wire.close()
