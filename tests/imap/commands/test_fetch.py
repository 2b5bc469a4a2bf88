"""FETCH (RFC 3501 §6.4.5, responses §7.4.2) against the running server, exact bytes of every line.

Items: FLAGS, INTERNALDATE, RFC822.SIZE, ENVELOPE, BODY, BODYSTRUCTURE (RFC 2045/2046 structures: nested
multiparts, message/rfc822, S/MIME signed and enveloped), BODY[section]<partial>, BODY.PEEK, RFC822,
RFC822.HEADER, RFC822.TEXT, UID, the ALL/FAST/FULL macros; CONDSTORE MODSEQ and CHANGEDSINCE (RFC 7162
§3.1.4). \\Seen is set by BODY[] / RFC822 / RFC822.TEXT and reported in the same FETCH, never by PEEK nor
in a read-only folder. Each content read is audited (`imap.fetch.body`: folder, UIDs, Message-IDs, no
content). UID FETCH specifics are in test_uid.py; concurrent expunges in test_expunge.py.
"""

from __future__ import annotations

import imaplib
import time

import pytest

from tests.imap.conftest import Box, message

DOMAIN = b"ch-test.mssante.fr"

# multipart/mixed (multipart/alternative (text/plain QP, text/html), application/pdf, message/rfc822)
NESTED = (
    b"From: a@ch-test.mssante.fr\r\n"
    b"Subject: nested\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n'
    b"\r\n"
    b"preamble\r\n"
    b"--outer\r\n"
    b'Content-Type: multipart/alternative; boundary="inner"\r\n'
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"R=C3=A9sultats normaux.\r\n"
    b"--inner\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<p>Normaux</p>\r\n"
    b"--inner--\r\n"
    b"--outer\r\n"
    b'Content-Type: application/pdf; name="cr.pdf"\r\n'
    b'Content-Disposition: attachment; filename="cr.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"JVBERi0xLjQK\r\n"
    b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"From: b@ch-test.mssante.fr\r\n"
    b"Subject: inner\r\n"
    b"\r\n"
    b"Texte joint.\r\n"
    b"--outer--\r\n"
)
# S/MIME signed (RFC 8551 §3.5.3, RFC 1847 multipart/signed) and enveloped (RFC 8551 §3.3, application/pkcs7-mime)
SIGNED = (
    b"From: a@ch-test.mssante.fr\r\n"
    b"Subject: signed\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256; boundary="sig"\r\n'
    b"\r\n"
    b"--sig\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"Signe.\r\n"
    b"--sig\r\n"
    b'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="smime.p7s"\r\n'
    b"\r\n"
    b"MIAGCSqGSIb3DQEHAqCAMIACAQEx\r\n"
    b"--sig--\r\n"
)
ENVELOPED = (
    b"From: a@ch-test.mssante.fr\r\n"
    b"Subject: chiffre\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="smime.p7m"\r\n'
    b"\r\n"
    b"MIAGCSqGSIb3DQEHA6CAMIACAQAx\r\n"
)


def lines(data: bytes) -> list[bytes]:
    """Octets as `Raw` returns them: one entry per CRLF-ended line."""
    return data.split(b"\r\n")


def message_id(raw_msg: bytes) -> str:
    return raw_msg.split(b"Message-ID: ")[1].split(b"\r\n")[0].decode()


def body_audits(box: Box) -> list[dict[str, object]]:
    events = box.gw.node.cli("audit", "search", "--event", "imap.fetch.body", "--principal", box.address, "--json")
    return [e["response"] for e in events.json()]  # type: ignore[index]


# -- moved from tests/imap/test_fetch.py --------------------------------------------------------------


def test_metadata_items(box: Box) -> None:
    raw_msg = message(1)
    box.put(raw_msg, flags=["\\Answered"])
    raw = box.selected()
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
    raw = box.selected()
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
    raw = box.selected()
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
    raw = box.selected()
    assert raw.command("a1", "FETCH 2 FLAGS") == [b"a1 BAD invalid message sequence number: the folder has 1 messages"]
    assert raw.command("a2", "UID FETCH 5:9 FLAGS") == [b"a2 OK UID FETCH completed"]
    assert raw.command("a3", "FETCH 1 (BODY[1.x])")[0].startswith(b"a3 BAD")
    raw.close()
    client = box.login()
    client.select("INBOX")
    with pytest.raises(imaplib.IMAP4.error, match="invalid sequence set 0"):
        client.fetch("0", "FLAGS")


# -- success paths ------------------------------------------------------------------------------------


def test_macros_and_sequence_sets(box: Box) -> None:
    first, second = message(1, subject="Bilan"), message(2)
    box.put(first, flags=["\\Flagged"])
    box.put(second)
    raw = box.selected()
    date = b'INTERNALDATE " 2-Mar-2026 09:15:30 +0000"'
    fast1 = b"FLAGS (\\Flagged \\Recent) " + date + b" RFC822.SIZE %d" % len(first)
    fast2 = b"FLAGS (\\Recent) " + date + b" RFC822.SIZE %d" % len(second)
    # RFC 3501 §6.4.5: FAST = (FLAGS INTERNALDATE RFC822.SIZE), ALL adds ENVELOPE, FULL adds BODY too
    assert raw.command("a1", "FETCH 1:* FAST") == [
        b"* 1 FETCH (" + fast1 + b")",
        b"* 2 FETCH (" + fast2 + b")",
        b"a1 OK FETCH completed",
    ]
    all_reply = raw.command("a2", "FETCH 1 ALL")
    assert all_reply[0].startswith(b"* 1 FETCH (" + fast1 + b' ENVELOPE ("Mon, 02 Mar 2026 10:15:30 +0100" "Bilan" ')
    assert all_reply[1:] == [b"a2 OK FETCH completed"]
    full_reply = raw.command("a3", "FETCH 1 FULL")
    assert full_reply[0].startswith(all_reply[0][:-1] + b' BODY ("text" "plain" ("charset" "us-ascii")')
    assert full_reply[0].endswith(b' "7bit" 31 1))')
    # a single number, "*" (the last message, RFC 3501 §9 seq-number), a list and a reversed range
    assert raw.command("a4", "FETCH * (UID)") == [b"* 2 FETCH (UID 2)", b"a4 OK FETCH completed"]
    assert raw.command("a5", "FETCH 2,1 (UID)") == [
        b"* 1 FETCH (UID 1)",
        b"* 2 FETCH (UID 2)",
        b"a5 OK FETCH completed",
    ]
    assert raw.command("a6", "FETCH 2:1 (UID)") == [
        b"* 1 FETCH (UID 1)",
        b"* 2 FETCH (UID 2)",
        b"a6 OK FETCH completed",
    ]
    assert raw.command("a7", "fetch 1 (uid flags)") == [
        b"* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent))",  # names are case-insensitive (RFC 3501 §9)
        b"a7 OK FETCH completed",
    ]
    raw.close()


def test_body_fetch_sets_seen_but_peek_does_not(box: Box) -> None:
    raw_msg = message(1, subject="Bilan")
    box.put(raw_msg)
    box.put(message(2), flags=["\\Seen"])
    raw = box.selected()
    header = raw_msg.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    assert raw.command("a1", "FETCH 1 (BODY.PEEK[HEADER])") == [
        b"* 1 FETCH (BODY[HEADER] {%d}" % len(header),
        *lines(header)[:-1],
        b")",
        b"a1 OK FETCH completed",
    ]
    assert raw.command("a2", "FETCH 1 FLAGS") == [b"* 1 FETCH (FLAGS (\\Recent))", b"a2 OK FETCH completed"]
    # RFC 3501 §6.4.5: BODY[section] sets \Seen; the change comes as FLAGS in the same FETCH response
    assert raw.command("a3", "FETCH 1:2 (BODY[]<0.4>)") == [
        b"* 1 FETCH (BODY[]<0> {4}",
        b"From FLAGS (\\Seen \\Recent))",
        b"* 2 FETCH (BODY[]<0> {4}",
        b"From FLAGS (\\Seen \\Recent))",
        b"a3 OK FETCH completed",
    ]
    # already \Seen: nothing changes, nothing more is reported
    assert raw.command("a4", "FETCH 1 (BODY[]<0.4>)") == [
        b"* 1 FETCH (BODY[]<0> {4}",
        b"From)",
        b"a4 OK FETCH completed",
    ]
    raw.command("a5", "STORE 1:2 -FLAGS.SILENT (\\Seen)")
    # RFC822.HEADER is BODY.PEEK[HEADER]; RFC822.TEXT is BODY[TEXT] and sets \Seen (RFC 3501 §6.4.5)
    assert raw.command("a6", "FETCH 1 RFC822.HEADER") == [
        b"* 1 FETCH (RFC822.HEADER {%d}" % len(header),
        *lines(header)[:-1],
        b")",
        b"a6 OK FETCH completed",
    ]
    text = raw_msg[len(header) :]
    assert raw.command("a7", "FETCH 1 RFC822.TEXT") == [
        b"* 1 FETCH (RFC822.TEXT {%d}" % len(text),
        b"Compte rendu de consultation.",
        b" FLAGS (\\Seen \\Recent))",
        b"a7 OK FETCH completed",
    ]
    raw.close()


def test_rfc822_is_the_whole_message_and_sets_seen(box: Box) -> None:
    raw_msg = message(1)
    box.put(raw_msg)
    raw = box.selected()
    assert raw.command("a1", "FETCH 1 RFC822") == [
        b"* 1 FETCH (RFC822 {%d}" % len(raw_msg),
        *lines(raw_msg)[:-1],
        b" FLAGS (\\Seen \\Recent))",
        b"a1 OK FETCH completed",
    ]
    raw.close()


def test_examine_never_sets_seen(box: Box) -> None:
    raw_msg = message(1)
    box.put(raw_msg)
    raw = box.selected()
    assert raw.command("e", "EXAMINE INBOX")[-1] == b"e OK [READ-ONLY] EXAMINE completed"
    # RFC 3501 §6.3.2: the folder is read-only, so a body fetch leaves \Seen alone (no FLAGS either)
    assert raw.command("a1", "FETCH 1 BODY[]") == [
        b"* 1 FETCH (BODY[] {%d}" % len(raw_msg),
        *lines(raw_msg)[:-1],
        b")",
        b"a1 OK FETCH completed",
    ]
    assert raw.command("a2", "FETCH 1 FLAGS") == [b"* 1 FETCH (FLAGS ())", b"a2 OK FETCH completed"]
    raw.close()


def test_sections_of_nested_multiparts_and_message_rfc822(box: Box) -> None:
    box.put(NESTED)
    raw = box.selected()

    def peek(section: str) -> list[bytes]:
        return raw.command("p", f"FETCH 1 (BODY.PEEK[{section}])")

    # RFC 3501 §6.4.5 part numbering: 1 = the multipart/alternative, 1.1 / 1.2 its parts, 2 the PDF,
    # 3 the message/rfc822 (3.HEADER, 3.TEXT, 3.1 inside it); the CRLF before a boundary belongs to the
    # boundary (RFC 2046 §5.1.1), so part bodies end without it
    assert peek("1.1") == [b"* 1 FETCH (BODY[1.1] {23}", b"R=C3=A9sultats normaux.)", b"p OK FETCH completed"]
    assert peek("1.2") == [b"* 1 FETCH (BODY[1.2] {14}", b"<p>Normaux</p>)", b"p OK FETCH completed"]
    assert peek("1.2.MIME") == [
        b"* 1 FETCH (BODY[1.2.MIME] {42}",
        b"Content-Type: text/html; charset=utf-8",
        b"",
        b")",
        b"p OK FETCH completed",
    ]
    assert peek("1") == [
        b"* 1 FETCH (BODY[1] {200}",
        b"--inner",
        b"Content-Type: text/plain; charset=utf-8",
        b"Content-Transfer-Encoding: quoted-printable",
        b"",
        b"R=C3=A9sultats normaux.",
        b"--inner",
        b"Content-Type: text/html; charset=utf-8",
        b"",
        b"<p>Normaux</p>",
        b"--inner--",
        b")",
        b"p OK FETCH completed",
    ]
    assert peek("2") == [b"* 1 FETCH (BODY[2] {12}", b"JVBERi0xLjQK)", b"p OK FETCH completed"]
    assert peek("2.MIME") == [
        b"* 1 FETCH (BODY[2.MIME] {135}",
        b'Content-Type: application/pdf; name="cr.pdf"',
        b'Content-Disposition: attachment; filename="cr.pdf"',
        b"Content-Transfer-Encoding: base64",
        b"",
        b")",
        b"p OK FETCH completed",
    ]
    inner = [b"From: b@ch-test.mssante.fr", b"Subject: inner", b""]
    assert peek("3") == [b"* 1 FETCH (BODY[3] {58}", *inner, b"Texte joint.)", b"p OK FETCH completed"]
    assert peek("3.HEADER") == [b"* 1 FETCH (BODY[3.HEADER] {46}", *inner, b")", b"p OK FETCH completed"]
    assert peek("3.TEXT") == [b"* 1 FETCH (BODY[3.TEXT] {12}", b"Texte joint.)", b"p OK FETCH completed"]
    assert peek("3.1") == [b"* 1 FETCH (BODY[3.1] {12}", b"Texte joint.)", b"p OK FETCH completed"]
    assert peek("3.HEADER.FIELDS (SUBJECT)") == [
        b"* 1 FETCH (BODY[3.HEADER.FIELDS (SUBJECT)] {18}",
        b"Subject: inner",
        b"",
        b")",
        b"p OK FETCH completed",
    ]
    # a part that does not exist is the empty string (RFC 3501 leaves it open; Dovecot's answer)
    assert peek("4") == [b'* 1 FETCH (BODY[4] "")', b"p OK FETCH completed"]
    assert peek("1.3") == [b'* 1 FETCH (BODY[1.3] "")', b"p OK FETCH completed"]
    assert peek("2.HEADER") == [b'* 1 FETCH (BODY[2.HEADER] "")', b"p OK FETCH completed"]  # not a message
    # HEADER.FIELDS.NOT, names matched case-insensitively and echoed upper-cased
    assert peek("HEADER.FIELDS.NOT (subject Content-Type MIME-Version)") == [
        b"* 1 FETCH (BODY[HEADER.FIELDS.NOT (SUBJECT CONTENT-TYPE MIME-VERSION)] {30}",
        b"From: a@ch-test.mssante.fr",
        b"",
        b")",
        b"p OK FETCH completed",
    ]
    # partials: <start.count> of the section, labelled with the origin only (RFC 3501 §7.4.2)
    assert raw.command("q1", "FETCH 1 (BODY.PEEK[3.TEXT]<6.100>)") == [
        b"* 1 FETCH (BODY[3.TEXT]<6> {6}",
        b"joint.)",
        b"q1 OK FETCH completed",
    ]
    assert raw.command("q2", "FETCH 1 (BODY.PEEK[3.TEXT]<12.5>)") == [
        b'* 1 FETCH (BODY[3.TEXT]<12> "")',  # a start at or past the end gives ""
        b"q2 OK FETCH completed",
    ]
    raw.close()


def test_bodystructure_of_nested_multiparts_and_message_rfc822(box: Box) -> None:
    box.put(NESTED)
    raw = box.selected()
    addr = b'((NIL NIL "b" "ch-test.mssante.fr"))'
    inner_envelope = b'(NIL "inner" ' + b" ".join([addr] * 3) + b" NIL NIL NIL NIL NIL)"
    # RFC 3501 §7.4.2: a multipart lists its parts (no space between them) then its subtype; BODYSTRUCTURE
    # adds body-ext-mpart (parameters, disposition, language, location) and for other parts body-ext-1part
    # (MD5, disposition, language, location). text/* and message/rfc822 have a line count; message/rfc822
    # carries the envelope and body structure of the message inside it.
    assert raw.command("a1", "FETCH 1 BODYSTRUCTURE") == [
        b"* 1 FETCH (BODYSTRUCTURE ("
        b'(("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 23 0 NIL NIL NIL NIL)'
        b'("text" "html" ("charset" "utf-8") NIL NIL "7bit" 14 0 NIL NIL NIL NIL)'
        b' "alternative" ("boundary" "inner") NIL NIL NIL)'
        b'("application" "pdf" ("name" "cr.pdf") NIL NIL "base64" 12 NIL ("attachment" ("filename" "cr.pdf")) NIL NIL)'
        b'("message" "rfc822" NIL NIL NIL "7bit" 58 '
        + inner_envelope
        + b' ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 12 0 NIL NIL NIL NIL) 3 NIL NIL NIL NIL)'
        b' "mixed" ("boundary" "outer") NIL NIL NIL))',
        b"a1 OK FETCH completed",
    ]
    assert raw.command("a2", "FETCH 1 BODY") == [
        b"* 1 FETCH (BODY ("
        b'(("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 23 0)'
        b'("text" "html" ("charset" "utf-8") NIL NIL "7bit" 14 0) "alternative")'
        b'("application" "pdf" ("name" "cr.pdf") NIL NIL "base64" 12)'
        b'("message" "rfc822" NIL NIL NIL "7bit" 58 '
        + inner_envelope
        + b' ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 12 0) 3)'
        b' "mixed"))',
        b"a2 OK FETCH completed",
    ]
    raw.close()


def test_bodystructure_and_sections_of_smime_parts(box: Box) -> None:
    box.put(SIGNED)
    box.put(ENVELOPED)
    raw = box.selected()
    assert raw.command("a1", "FETCH 1:2 BODYSTRUCTURE") == [
        b"* 1 FETCH (BODYSTRUCTURE ("
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 0 NIL NIL NIL NIL)'
        b'("application" "pkcs7-signature" ("name" "smime.p7s") NIL NIL "base64" 28 NIL'
        b' ("attachment" ("filename" "smime.p7s")) NIL NIL)'
        b' "signed" ("protocol" "application/pkcs7-signature" "micalg" "sha-256" "boundary" "sig") NIL NIL NIL))',
        b'* 2 FETCH (BODYSTRUCTURE ("application" "pkcs7-mime" ("smime-type" "enveloped-data" "name" "smime.p7m")'
        b' NIL NIL "base64" 30 NIL ("attachment" ("filename" "smime.p7m")) NIL NIL))',
        b"a1 OK FETCH completed",
    ]
    assert raw.command("a2", "FETCH 1:2 BODY") == [
        b'* 1 FETCH (BODY (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 0)'
        b'("application" "pkcs7-signature" ("name" "smime.p7s") NIL NIL "base64" 28) "signed"))',
        b'* 2 FETCH (BODY ("application" "pkcs7-mime" ("smime-type" "enveloped-data" "name" "smime.p7m")'
        b' NIL NIL "base64" 30))',
        b"a2 OK FETCH completed",
    ]
    # the signed content and the signature, octet for octet (a client verifies the signature over BODY[1.MIME]
    # and BODY[1]); a single-part message is its own part 1, the whole body
    assert raw.command("a3", "FETCH 1 (BODY.PEEK[1] BODY.PEEK[2])") == [
        b"* 1 FETCH (BODY[1] {6}",
        b"Signe. BODY[2] {28}",
        b"MIAGCSqGSIb3DQEHAqCAMIACAQEx)",
        b"a3 OK FETCH completed",
    ]
    assert raw.command("a4", "FETCH 2 (BODY.PEEK[1])") == [
        b"* 2 FETCH (BODY[1] {30}",
        b"MIAGCSqGSIb3DQEHA6CAMIACAQAx",
        b")",
        b"a4 OK FETCH completed",
    ]
    raw.close()


def test_envelope_of_a_message_without_header_fields(box: Box) -> None:
    box.put(b"Subject: seul\r\n\r\nx\r\n")
    raw = box.selected()
    # RFC 3501 §7.4.2: absent fields are NIL, Sender and Reply-To default to From (NIL here)
    assert raw.command("a1", "FETCH 1 ENVELOPE") == [
        b'* 1 FETCH (ENVELOPE (NIL "seul" NIL NIL NIL NIL NIL NIL NIL NIL))',
        b"a1 OK FETCH completed",
    ]
    raw.close()


def test_modseq_item_enables_condstore(box: Box) -> None:
    box.put(message(1))
    raw = box.selected()
    assert raw.command("a1", "FETCH 1 (FLAGS)") == [b"* 1 FETCH (FLAGS (\\Recent))", b"a1 OK FETCH completed"]
    # RFC 7162 §3.1.4.2: FETCH MODSEQ is a CONDSTORE-enabling command; from then on every FETCH response
    # carries UID and MODSEQ (§3.1.2)
    assert raw.command("a2", "FETCH 1 (MODSEQ)") == [b"* 1 FETCH (MODSEQ (2) UID 1)", b"a2 OK FETCH completed"]
    assert raw.command("a3", "FETCH 1 (FLAGS)") == [
        b"* 1 FETCH (FLAGS (\\Recent) UID 1 MODSEQ (2))",
        b"a3 OK FETCH completed",
    ]
    # CHANGEDSINCE 0 (iPhone Mail) is every message; above the highest modseq, none
    assert raw.command("a4", "FETCH 1:* (FLAGS) (CHANGEDSINCE 0)") == [
        b"* 1 FETCH (FLAGS (\\Recent) UID 1 MODSEQ (2))",
        b"a4 OK FETCH completed",
    ]
    assert raw.command("a5", "FETCH 1:* (FLAGS) (CHANGEDSINCE 2)") == [b"a5 OK FETCH completed"]
    raw.close()


# -- audit ---------------------------------------------------------------------------------------------


def test_content_reads_are_audited_without_content(box: Box) -> None:
    first, second = message(1, body="Diagnostic confidentiel."), message(2, body="Diagnostic confidentiel.")
    box.put(first)
    box.put(second)
    box.put(NESTED)
    raw = box.selected()
    # metadata only: no body opened, nothing audited
    raw.command("a1", "FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE UID)")
    assert body_audits(box) == []
    raw.command("a2", "FETCH 1:2 (BODY.PEEK[TEXT])")
    raw.command("a3", "FETCH 3 (BODYSTRUCTURE ENVELOPE)")
    raw.command("a4", "UID FETCH 2 (BODY[1])")
    records = body_audits(box)
    assert records == [
        {"folder": "INBOX", "uids": [1, 2], "message_ids": [message_id(first), message_id(second)], "result": "done"},
        {"folder": "INBOX", "uids": [3], "message_ids": [None], "result": "done"},  # NESTED has no Message-ID
        {"folder": "INBOX", "uids": [2], "message_ids": [message_id(second)], "result": "done"},
    ]
    assert "Diagnostic" not in str(records)
    assert "nested" not in str(records)
    raw.close()


# -- failures ------------------------------------------------------------------------------------------


FAILURES = [
    # RFC 3501 §9 sequence-set: nz-number / "*", ranges with both ends
    ("FETCH 0 FLAGS", b"t BAD invalid sequence set 0"),
    ("FETCH 1: FLAGS", b"t BAD invalid sequence set 1:"),
    ("FETCH a FLAGS", b"t BAD invalid sequence set a"),
    ("FETCH 1,,2 FLAGS", b"t BAD invalid sequence set 1,,2"),
    ("FETCH $ FLAGS", b"t BAD SEARCHRES ($) is not supported"),
    # a message number past the last message is an error (RFC 3501 §9 seq-number), "*" included
    ("FETCH 3 FLAGS", b"t BAD invalid message sequence number: the folder has 2 messages"),
    ("FETCH 1:3 FLAGS", b"t BAD invalid message sequence number: the folder has 2 messages"),
    ("FETCH 5:* FLAGS", b"t BAD invalid message sequence number: the folder has 2 messages"),
    # attributes (RFC 3501 §9 fetch-att)
    ("FETCH 1", b"t BAD missing FETCH attribute"),
    ("FETCH 1 ()", b"t BAD missing FETCH attribute"),
    ("FETCH 1 FOO", b"t BAD unknown FETCH attribute FOO"),
    ("FETCH 1 (FLAGS FOO)", b"t BAD unknown FETCH attribute FOO"),
    ("FETCH 1 (FAST)", b"t BAD FETCH macro FAST cannot be in a list"),
    ("FETCH 1 BODY.PEEK", b"t BAD BODY.PEEK needs a section"),
    ("FETCH 1 BINARY[1]", b"t BAD unknown FETCH attribute BINARY[1]"),  # BINARY is not advertised
    ("FETCH 1 (FLAGS", b"t BAD missing ) after FETCH attributes"),
    # sections (RFC 3501 §9 section-spec) and partials (<number.nz-number>)
    ("FETCH 1 BODY[1.x]", b"t BAD invalid section 1.x"),
    ("FETCH 1 BODY[0]", b"t BAD invalid section part 0"),
    ("FETCH 1 BODY[FOO]", b"t BAD invalid section FOO"),
    ("FETCH 1 BODY[MIME]", b"t BAD section MIME needs a part number"),
    ("FETCH 1 BODY[HEADER.FIELDS]", b"t BAD expected space before header list"),
    ("FETCH 1 BODY[HEADER.FIELDS ()]", b"t BAD missing header field name"),
    ("FETCH 1 BODY[1", b"t BAD missing ] after section"),
    ("FETCH 1 BODY[]<0.0>", b"t BAD invalid partial range <0.0>"),
    ("FETCH 1 BODY[]<0>", b"t BAD invalid partial range <0>"),
    ("FETCH 1 BODY[]<-1.5>", b"t BAD invalid partial range <-1.5>"),
    # modifiers (RFC 4466 §2.4, RFC 7162 §3.1.4.1)
    ("FETCH 1 (FLAGS) (FOO 1)", b"t BAD unknown FETCH modifier FOO"),
    ("FETCH 1 (FLAGS) (CHANGEDSINCE)", b"t BAD missing CHANGEDSINCE value"),
    ("FETCH 1 (FLAGS) (CHANGEDSINCE x)", b"t BAD invalid CHANGEDSINCE value x"),
    ("FETCH 1 (FLAGS) (VANISHED)", b"t BAD FETCH modifier VANISHED needs QRESYNC, which is not supported"),
]


def test_failures(box: Box) -> None:
    box.put(message(1))
    box.put(message(2))
    raw = box.selected()
    for command, reply in FAILURES:
        assert raw.command("t", command) == [reply], command
        assert raw.command("n", "NOOP") == [b"n OK NOOP completed"], command  # the session goes on
    raw.close()


def test_fetch_needs_a_selected_folder(box: Box) -> None:
    box.put(message(1))
    raw = box.raw()
    assert raw.command("a1", "FETCH 1 FLAGS") == [b"a1 BAD FETCH is not allowed in the authenticated state"]
    raw.close()


def test_a_commands_responses_leave_with_its_tagged_reply_in_one_tls_record(box: Box) -> None:
    # SSL_read returns one record's data at a time: the untagged FETCH and the tagged OK come out of one
    # recv only if the server wrote them together (before, each response was a write and a record of its own).
    box.put(message(1))
    raw = box.selected()
    raw.send(b"f UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n")
    time.sleep(0.3)  # everything the server sends for it is in the socket's buffer by now
    first = raw.sock.recv(1 << 20)
    assert first == (
        b"* 1 FETCH (UID 1 BODY[HEADER.FIELDS (SUBJECT)] {22}\r\nSubject: message 1\r\n\r\n)\r\n"
        b"f OK UID FETCH completed\r\n"
    )


def test_a_fetch_bigger_than_one_write_arrives_whole_and_in_order(box: Box) -> None:
    # Past Session.OUT_BUFFER octets the responses are written as they come, the rest with the tagged
    # reply: 40 messages of 20 KB cross the threshold three times; order and octets must survive each
    # crossing (this does not measure the server's memory).
    bodies = [message(n, body="x" * 20_000) for n in range(1, 41)]
    for body in bodies:
        box.put(body)
    raw = box.selected()
    raw.send(b"f FETCH 1:* (BODY.PEEK[])\r\n")
    for n, body in enumerate(bodies, start=1):
        assert raw.line() == b"* %d FETCH (BODY[] {%d}" % (n, len(body))
        assert raw.file.read(len(body)) == body
        assert raw.line() == b")"
    assert raw.line() == b"f OK FETCH completed"
