"""FETCH / UID FETCH (RFC 3501 §6.4.5): flags, dates, sizes, ENVELOPE, BODYSTRUCTURE, sections and partials,
\\Seen on non-PEEK fetches, CHANGEDSINCE and MODSEQ (RFC 7162), and the audit of content reads."""

from __future__ import annotations

import imaplib

import pytest

from tests.imap.conftest import Box, Raw, message
from tests.smtp.conftest import PASSWORD


def login(box: Box) -> Raw:
    raw = Raw(box.gw)
    assert raw.command("l", f'LOGIN {box.address} "{PASSWORD}"')[-1].startswith(b"l OK")
    assert raw.command("s", "SELECT INBOX")[-1] == b"s OK [READ-WRITE] SELECT completed"
    return raw


def test_metadata_items(box: Box) -> None:
    raw_msg = message(1)
    box.put(raw_msg, flags=["\\Answered"])
    raw = login(box)
    assert raw.command("a1", "FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE UID)") == [
        b'* 1 FETCH (FLAGS (\\Answered \\Recent) INTERNALDATE " 2-Mar-2026 09:15:30 +0000" RFC822.SIZE '
        + str(len(raw_msg)).encode()
        + b" UID 1)",
        b"a1 OK FETCH completed",
    ]
    raw.close()


def test_body_sections_partials_and_seen(box: Box) -> None:
    raw_msg = message(1, subject="Bilan", body="Ligne un.\r\nLigne deux.")
    box.put(raw_msg)
    client = box.login()
    client.select("INBOX")
    typ, data = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)] FLAGS)")
    assert typ == "OK"
    assert data[0] == (b"1 (BODY[HEADER.FIELDS (SUBJECT)] {18}", b"Subject: Bilan\r\n\r\n")  # with the blank line
    assert client.fetch("1", "(FLAGS)")[1] == [b"1 (FLAGS (\\Recent))"]  # PEEK left \Seen alone
    typ, data = client.fetch("1", "(BODY[TEXT]<6.3>)")
    assert data[0][1] == b"un."  # type: ignore[index]
    assert data[1] == b" FLAGS (\\Seen \\Recent))"
    typ, data = client.uid("FETCH", "1", "(RFC822)")
    assert data[0][1] == raw_msg  # type: ignore[index]
    events = box.gw.node.cli("audit", "search", "--event", "imap.fetch.body", "--principal", box.address, "--json")
    records = [e["response"] for e in events.json()]  # type: ignore[index]
    assert [r["uids"] for r in records] == [[1], [1], [1]]  # type: ignore[index]
    message_id = raw_msg.split(b"Message-ID: ")[1].split(b"\r\n")[0].decode()
    assert records[0]["message_ids"] == [message_id]  # type: ignore[index]
    assert "Ligne" not in str(events.json())
    client.logout()


def test_envelope_and_bodystructure(box: Box) -> None:
    raw_msg = message(1, subject="Bilan")
    message_id = raw_msg.split(b"Message-ID: ")[1].split(b"\r\n")[0]
    box.put(raw_msg)
    raw = login(box)
    author = b'(("Dr Claire Martin" NIL "claire.martin" "ch-test.mssante.fr"))'
    envelope = (
        b'("Mon, 02 Mar 2026 10:15:30 +0100" "Bilan" '
        + author * 3  # From, and Sender and Reply-To defaulting to From (RFC 3501 §7.4.2)
        + b' ((NIL NIL "secretariat" "ch-test.mssante.fr")) NIL NIL NIL "'
        + message_id
        + b'")'
    )
    envelope = envelope.replace(author * 3, b" ".join([author] * 3))
    # no Content-Type: text/plain; charset=us-ascii, 7bit (RFC 2045 §5.2); 31 octets, 1 line
    structure = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 31 1'
    assert raw.command("a1", "FETCH 1 (ENVELOPE BODYSTRUCTURE BODY)") == [
        b"* 1 FETCH (ENVELOPE "
        + envelope
        + b" BODYSTRUCTURE "
        + structure
        + b" NIL NIL NIL NIL) BODY "
        + structure
        + b"))",
        b"a1 OK FETCH completed",
    ]
    raw.close()


def test_changedsince_and_modseq(box: Box) -> None:
    for n in (1, 2, 3):
        box.put(message(n))
    raw = login(box)
    raw.command("a1", "STORE 2 +FLAGS.SILENT (\\Seen)")
    # appends gave modseqs 2, 3, 4; the STORE gave message 2 modseq 5
    assert raw.command("a2", "FETCH 1:* (FLAGS) (CHANGEDSINCE 3)") == [
        b"* 2 FETCH (FLAGS (\\Seen \\Recent) UID 2 MODSEQ (5))",  # RFC 7162 §3.1: UID too, once enabled
        b"* 3 FETCH (FLAGS (\\Recent) UID 3 MODSEQ (4))",
        b"a2 OK FETCH completed",
    ]
    raw.close()


def test_bad_fetches(box: Box) -> None:
    box.put(message(1))
    raw = login(box)
    assert raw.command("a1", "FETCH 2 FLAGS") == [b"a1 BAD invalid message sequence number: the folder has 1 messages"]
    assert raw.command("a2", "UID FETCH 5:9 FLAGS") == [b"a2 OK UID FETCH completed"]
    assert raw.command("a3", "FETCH 1 (BODY[1.x])")[0].startswith(b"a3 BAD")
    raw.close()
    client = box.login()
    client.select("INBOX")
    with pytest.raises(imaplib.IMAP4.error, match="invalid sequence set 0"):
        client.fetch("0", "FLAGS")
