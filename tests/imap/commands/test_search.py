"""SEARCH (RFC 3501 §6.4.4, response §7.2.5) against the running server, exact bytes of every line.

Every RFC 3501 search key at least once, sequence sets and parenthesised groups, CHARSET (US-ASCII and
UTF-8 only: anything else is NO [BADCHARSET], §6.4.4 and §7.1), case-insensitive text search on decoded
text (RFC 2047 headers, quoted-printable and base64 bodies, RFC 2045) with accented UTF-8 sent as a
literal, CONDSTORE MODSEQ (RFC 7162 §3.1.5) and ESEARCH results (RFC 4731). Searches that read message
content are audited like content fetches. UID SEARCH specifics are in test_uid.py.
"""

from __future__ import annotations

from datetime import UTC, datetime

from tests.imap.conftest import Box, Raw, message


def fill(box: Box) -> None:
    box.put(message(1, subject="Bilan sanguin", body="Créatinine normale."), flags=["\\Seen"])
    box.put(message(2, subject="Compte rendu opératoire", body="Suites simples."), flags=["$Urgent"])
    box.put(
        message(3, subject="Ordonnance", body="x" * 2000),
        flags=["\\Deleted"],
        when=datetime(2026, 4, 1, 8, 0, tzinfo=UTC),
    )


# -- moved from tests/imap/test_search.py --------------------------------------------------------------


def test_flag_size_date_and_set_keys(box: Box) -> None:
    fill(box)
    raw = box.selected()
    for query, expected in [
        ("ALL", b"* SEARCH 1 2 3"),
        ("SEEN", b"* SEARCH 1"),
        ("UNSEEN UNDELETED", b"* SEARCH 2"),
        ("KEYWORD $Urgent", b"* SEARCH 2"),
        ("LARGER 1000", b"* SEARCH 3"),
        ("SINCE 1-Apr-2026", b"* SEARCH 3"),
        ("BEFORE 1-Apr-2026", b"* SEARCH 1 2"),
        ("OR SEEN DELETED", b"* SEARCH 1 3"),
        ("NOT 2:3", b"* SEARCH 1"),
        ("UID 2:*", b"* SEARCH 2 3"),
        ("SENTON 2-Mar-2026", b"* SEARCH 1 2 3"),
        ("NEW", b"* SEARCH 2 3"),
        ("DRAFT", b"* SEARCH"),
    ]:
        assert raw.command("a", f"SEARCH {query}") == [expected, b"a OK SEARCH completed"], query
    assert raw.command("b", "UID SEARCH SEEN") == [b"* SEARCH 1", b"b OK UID SEARCH completed"]
    raw.close()


def test_text_keys_decode_and_ignore_case(box: Box) -> None:
    fill(box)
    raw = box.selected()
    assert raw.command("a1", 'SEARCH SUBJECT "compte RENDU"')[0] == b"* SEARCH 2"
    assert raw.command("a2", "SEARCH CHARSET UTF-8 BODY {11+}\r\ncréatinine")[0] == b"* SEARCH 1"
    assert raw.command("a3", 'SEARCH FROM "claire.martin"')[0] == b"* SEARCH 1 2 3"
    assert raw.command("a4", 'SEARCH HEADER Message-ID "m2."')[0] == b"* SEARCH 2"
    assert raw.command("a5", 'SEARCH TEXT "ordonnance"')[0] == b"* SEARCH 3"
    assert raw.command("a6", "SEARCH CHARSET KOI8-R BODY x") == [
        b"a6 NO [BADCHARSET (UTF-8 US-ASCII)] unsupported charset KOI8-R"
    ]
    raw.close()


def test_esearch_and_modseq(box: Box) -> None:
    fill(box)
    raw = box.selected()
    assert raw.command("a1", "SEARCH RETURN (MIN MAX COUNT) ALL") == [
        b'* ESEARCH (TAG "a1") MIN 1 MAX 3 COUNT 3',
        b"a1 OK SEARCH completed",
    ]
    assert raw.command("a2", "UID SEARCH RETURN () UNDELETED") == [
        b'* ESEARCH (TAG "a2") UID ALL 1:2',
        b"a2 OK UID SEARCH completed",
    ]
    assert raw.command("a3", "SEARCH RETURN (COUNT) DRAFT") == [
        b'* ESEARCH (TAG "a3") COUNT 0',
        b"a3 OK SEARCH completed",
    ]
    raw.command("a4", "STORE 1 +FLAGS.SILENT (\\Flagged)")
    assert raw.command("a5", "SEARCH MODSEQ 5") == [b"* SEARCH 1 (MODSEQ 5)", b"a5 OK SEARCH completed"]
    raw.close()


# -- every key of RFC 3501 §6.4.4 ----------------------------------------------------------------------

LETTER = (
    b"From: =?utf-8?q?H=C3=A9l=C3=A8ne_Durand?= <helene.durand@ch-test.mssante.fr>\r\n"
    b"To: cardiologie@ch-test.mssante.fr\r\n"
    b"Cc: Dr Paul Roux <paul.roux@ch-test.mssante.fr>\r\n"
    b"Bcc: archives@ch-test.mssante.fr\r\n"
    b"Subject: =?utf-8?q?R=C3=A9sultats_d=27=C3=A9chographie?=\r\n"
    b"Date: Sun, 01 Mar 2026 23:30:00 -0500\r\n"
    b"X-Priorite: haute\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Fraction d'=C3=A9jection pr=C3=A9serv=C3=A9e.\r\n"
)
ATTACHED = (
    b"From: labo@ch-test.mssante.fr\r\n"
    b"To: cardiologie@ch-test.mssante.fr\r\n"
    b"Subject: Analyses\r\n"
    b"Date: Wed, 04 Mar 2026 08:00:00 +0100\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n'
    b"\r\n"
    b"--b\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"SMOpbW9nbG9iaW5lIGdseXF1w6llLg==\r\n"  # "Hémoglobine glyquée."
    b"--b\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"\r\n"
    b"kaliemie-dans-un-binaire\r\n"
    b"--b--\r\n"
)


def fill_all(box: Box) -> Raw:
    """Four messages, selected by a first session so that they are no longer \\Recent, then a fifth,
    recent for the session returned."""
    box.put(message(1, subject="Bilan sanguin"), flags=["\\Seen", "\\Answered"])  # 2-Mar-2026 09:15:30 UTC
    box.put(LETTER, flags=["\\Flagged", "$Urgent"], when=datetime(2026, 3, 1, 23, 0, tzinfo=UTC))
    box.put(ATTACHED, flags=["\\Draft"], when=datetime(2026, 3, 4, 7, 0, tzinfo=UTC))
    box.put(message(4, body="y" * 3000), flags=["\\Deleted", "\\Seen"], when=datetime(2026, 3, 10, tzinfo=UTC))
    first = box.selected()
    first.close()
    box.put(message(5, subject="Nouveau"), when=datetime(2026, 3, 10, tzinfo=UTC))
    return box.selected()


def lit(text: str) -> str:
    """A non-synchronising literal (RFC 7888 LITERAL+) holding `text` in UTF-8."""
    return f"{{{len(text.encode())}+}}\r\n{text}"


KEYS = [
    ("ALL", "1 2 3 4 5"),
    # flags
    ("ANSWERED", "1"),
    ("UNANSWERED", "2 3 4 5"),
    ("DELETED", "4"),
    ("UNDELETED", "1 2 3 5"),
    ("DRAFT", "3"),
    ("UNDRAFT", "1 2 4 5"),
    ("FLAGGED", "2"),
    ("UNFLAGGED", "1 3 4 5"),
    ("SEEN", "1 4"),
    ("UNSEEN", "2 3 5"),
    ("KEYWORD $Urgent", "2"),
    ("UNKEYWORD $Urgent", "1 3 4 5"),
    ("KEYWORD NonJunk", ""),
    # \Recent: only message 5 is recent for this session (RFC 3501 §2.3.2); NEW = RECENT UNSEEN
    ("RECENT", "5"),
    ("OLD", "1 2 3 4"),
    ("NEW", "5"),
    # internal date, day granularity, "disregarding time and timezone" (RFC 3501 §6.4.4)
    ("BEFORE 2-Mar-2026", "2"),
    ("ON 2-Mar-2026", "1"),
    ("SINCE 4-Mar-2026", "3 4 5"),
    ("SINCE 10-Mar-2026", "4 5"),
    ("BEFORE 1-Mar-2026", ""),
    ("ON 1-mar-2026", "2"),  # month names are case-insensitive
    ('ON "1-Mar-2026"', "2"),  # a quoted date (RFC 3501 §9 date)
    # Date: header, in the sender's own zone: message 2 was sent 1 March at 23:30 -0500 (2 March UTC)
    ("SENTON 1-Mar-2026", "2"),
    ("SENTBEFORE 2-Mar-2026", "2"),
    ("SENTBEFORE 3-Mar-2026", "1 2 4 5"),
    ("SENTSINCE 3-Mar-2026", "3"),
    ("SENTON 4-Mar-2026", "3"),
    # sizes (RFC822.SIZE)
    ("LARGER 3000", "4"),
    ("SMALLER 300", "1 5"),
    ("NOT SMALLER 300", "2 3 4"),
    # header fields, decoded (RFC 2047) and case-insensitive substrings
    ("FROM durand", "2"),
    ("FROM " + lit("Hélène"), "2"),
    ("TO cardiologie", "2 3"),
    ("CC roux", "2"),
    ("CC durand", ""),
    ("BCC archives", "2"),
    ("SUBJECT analyses", "3"),
    ("SUBJECT " + lit("résultats d'échographie"), "2"),
    ("HEADER X-Priorite haute", "2"),
    ('HEADER x-priorite ""', "2"),  # an empty string matches every message that has the field
    ('HEADER Message-ID ""', "1 4 5"),
    # body: decoded text parts only (quoted-printable, base64); attachments are not text
    ("BODY " + lit("éjection"), "2"),
    ("BODY " + lit("glyquée"), "3"),
    ("BODY kaliemie", ""),
    ("BODY analyses", ""),  # the header is not the body
    ("TEXT analyses", "3"),  # TEXT is header and body
    ("TEXT " + lit("préservée"), "2"),
    ("TEXT consultation", "1 5"),
    # sequence sets and UIDs
    ("1,3", "1 3"),
    ("2:4", "2 3 4"),
    ("4:2", "2 3 4"),
    ("*", "5"),
    ("3:*", "3 4 5"),
    ("UID 5", "5"),
    ("UID 4:*", "4 5"),
    ("UID 9:*", "5"),  # n:* always holds the last UID (RFC 3501 §6.4.8)
    ("UID 6:9", ""),
    # combinations: implicit AND, OR, NOT, parentheses
    ("SEEN ANSWERED", "1"),
    ("OR DRAFT FLAGGED", "2 3"),
    ("OR OR DRAFT FLAGGED ANSWERED", "1 2 3"),
    ("NOT SEEN", "2 3 5"),
    ("NOT NOT SEEN", "1 4"),
    ("(SEEN ANSWERED)", "1"),
    ("OR (SEEN UNDELETED) (DRAFT SINCE 4-Mar-2026)", "1 3"),
    ("NOT (OR SEEN DRAFT)", "2 5"),
    ("((((DELETED))))", "4"),
    ("1:4 UNSEEN", "2 3"),
]


def test_every_search_key(box: Box) -> None:
    raw = fill_all(box)
    for i, (query, expected) in enumerate(KEYS):
        tag = f"k{i}"
        charset = "" if query.isascii() else "CHARSET UTF-8 "  # non-ASCII text goes in literals
        reply = raw.command(tag, f"SEARCH {charset}{query}")
        assert reply == [f"* SEARCH {expected}".rstrip().encode(), f"{tag} OK SEARCH completed".encode()], query
    raw.close()


def test_accented_utf8_text_in_literals(box: Box) -> None:
    raw = fill_all(box)
    for tag, key, word, expected in [
        ("a1", "SUBJECT", "ÉCHOGRAPHIE", b"* SEARCH 2"),  # case folded beyond ASCII
        ("a2", "BODY", "préservée", b"* SEARCH 2"),
        ("a3", "FROM", "hélène durand", b"* SEARCH 2"),
        ("a4", "TEXT", "hémoglobine", b"* SEARCH 3"),
        ("a5", "BODY", "hemoglobine", b"* SEARCH"),  # no accent folding
    ]:
        octets = word.encode()
        # a synchronising literal: the server asks for the octets with a continuation (RFC 3501 §7.5)
        raw.send(f"{tag} SEARCH CHARSET UTF-8 {key} {{{len(octets)}}}\r\n".encode())
        assert raw.line() == b"+ Ready for literal data"
        raw.send(octets + b"\r\n")
        assert raw.until(tag.encode()) == [expected, f"{tag} OK SEARCH completed".encode()], word
    # LITERAL+ (RFC 7888) without waiting, and US-ASCII naming what is in fact UTF-8 (tolerated)
    assert raw.command("b1", "SEARCH CHARSET US-ASCII BODY " + lit("éjection")) == [
        b"* SEARCH 2",
        b"b1 OK SEARCH completed",
    ]
    assert raw.command("b2", "SEARCH CHARSET utf-8 SUBJECT " + lit("résultats")) == [
        b"* SEARCH 2",
        b"b2 OK SEARCH completed",
    ]
    raw.close()


def test_esearch_results_and_empty_results(box: Box) -> None:
    raw = fill_all(box)
    # RFC 4731 §3.1: MIN, MAX, ALL (a sequence set), COUNT; no MIN/MAX/ALL when nothing matched
    assert raw.command("a1", "SEARCH RETURN (ALL) UNSEEN") == [
        b'* ESEARCH (TAG "a1") ALL 2:3,5',
        b"a1 OK SEARCH completed",
    ]
    assert raw.command("a2", "SEARCH RETURN (MIN MAX ALL COUNT) KEYWORD NonJunk") == [
        b'* ESEARCH (TAG "a2") COUNT 0',
        b"a2 OK SEARCH completed",
    ]
    assert raw.command("a3", "SEARCH RETURN (MIN) DRAFT") == [b'* ESEARCH (TAG "a3") MIN 3', b"a3 OK SEARCH completed"]
    assert raw.command("a4", "SEARCH RETURN (MAX) FLAGGED") == [
        b'* ESEARCH (TAG "a4") MAX 2',
        b"a4 OK SEARCH completed",
    ]
    assert raw.command("a5", "SEARCH RETURN (COUNT) CHARSET UTF-8 ALL") == [
        b'* ESEARCH (TAG "a5") COUNT 5',
        b"a5 OK SEARCH completed",
    ]
    raw.close()


def test_content_searches_are_audited_without_the_words(box: Box) -> None:
    fill(box)
    raw = box.selected()
    raw.command("a1", "SEARCH SEEN LARGER 10 UID 1:* SINCE 1-Jan-2026")  # no content read
    events = box.gw.node.cli("audit", "search", "--event", "imap.fetch.body", "--principal", box.address, "--json")
    assert events.json() == []
    assert raw.command("a2", "SEARCH CHARSET UTF-8 BODY " + lit("Créatinine")) == [
        b"* SEARCH 1",
        b"a2 OK SEARCH completed",
    ]
    assert raw.command("a3", "SEARCH OR SEEN SENTON 1-Mar-2026") == [  # the Date: field is content too
        b"* SEARCH 1",
        b"a3 OK SEARCH completed",
    ]
    events = box.gw.node.cli("audit", "search", "--event", "imap.fetch.body", "--principal", box.address, "--json")
    records = [e["response"] for e in events.json()]  # type: ignore[index]
    assert records == [
        {"folder": "INBOX", "uids": [1, 2, 3], "search": True, "result": "done"},
        {"folder": "INBOX", "uids": [1, 2, 3], "search": True, "result": "done"},
    ]
    assert "atinine" not in str(events.json())
    raw.close()


def test_an_empty_folder(box: Box) -> None:
    raw = box.selected()
    assert raw.command("a1", "SEARCH ALL") == [b"* SEARCH", b"a1 OK SEARCH completed"]
    assert raw.command("a2", "SEARCH 1:*") == [b"* SEARCH", b"a2 OK SEARCH completed"]
    assert raw.command("a3", "SEARCH BODY x") == [b"* SEARCH", b"a3 OK SEARCH completed"]
    assert raw.command("a4", "SEARCH RETURN (MIN MAX ALL COUNT) ALL") == [
        b'* ESEARCH (TAG "a4") COUNT 0',
        b"a4 OK SEARCH completed",
    ]
    raw.close()


# -- failures ------------------------------------------------------------------------------------------

FAILURES = [
    ("SEARCH", b"t BAD missing search key"),
    ("SEARCH FOO", b"t BAD unknown search key FOO"),
    ("SEARCH SEEN FOO", b"t BAD unknown search key FOO"),
    ("SEARCH SEEN ", b"t BAD missing search key"),
    # dates: RFC 3501 §9 date = day-month-year with a month name
    ("SEARCH BEFORE 32-Jan-2026", b"t BAD invalid BEFORE date 32-Jan-2026"),
    ("SEARCH SINCE 2026-01-01", b"t BAD invalid SINCE date 2026-01-01"),
    ("SEARCH ON 1-Foo-2026", b"t BAD invalid ON date 1-Foo-2026"),
    ("SEARCH SENTON", b"t BAD missing SENTON date"),
    # sizes: number
    ("SEARCH LARGER x", b"t BAD invalid LARGER size x"),
    ("SEARCH SMALLER -1", b"t BAD invalid SMALLER size -1"),
    # arguments
    ("SEARCH SUBJECT", b"t BAD missing SUBJECT string"),
    ("SEARCH HEADER", b"t BAD missing HEADER field name"),
    ("SEARCH HEADER Subject", b"t BAD missing HEADER string"),
    ("SEARCH KEYWORD", b"t BAD missing KEYWORD flag"),
    ("SEARCH KEYWORD \\Seen", b"t BAD invalid KEYWORD flag"),  # a keyword is an atom (RFC 3501 §9 flag-keyword)
    ("SEARCH OR SEEN", b"t BAD missing second search key of OR"),
    ("SEARCH NOT", b"t BAD missing search key after NOT"),
    ("SEARCH (SEEN", b"t BAD missing ) after search keys"),
    ("SEARCH ()", b"t BAD missing search key in ( )"),
    # sequence sets
    ("SEARCH 0", b"t BAD invalid sequence set 0"),
    ("SEARCH 1:", b"t BAD invalid sequence set 1:"),
    ("SEARCH UID 0", b"t BAD invalid UID sequence set 0"),
    ("SEARCH $", b"t BAD SEARCHRES ($) is not supported"),
    # RETURN (RFC 4731 §3.1)
    ("SEARCH RETURN (FOO) ALL", b"t BAD unknown RETURN option FOO"),
    ("SEARCH RETURN (SAVE) ALL", b"t BAD RETURN option SAVE needs SEARCHRES, which is not supported"),
    # CHARSET: RFC 3501 §6.4.4 NO [BADCHARSET] with the supported list (§7.1)
    ("SEARCH CHARSET KOI8-R ALL", b"t NO [BADCHARSET (UTF-8 US-ASCII)] unsupported charset KOI8-R"),
    ("SEARCH CHARSET ISO-8859-1 BODY x", b"t NO [BADCHARSET (UTF-8 US-ASCII)] unsupported charset ISO-8859-1"),
    ('SEARCH CHARSET "windows-1252" ALL', b"t NO [BADCHARSET (UTF-8 US-ASCII)] unsupported charset WINDOWS-1252"),
    ("SEARCH CHARSET", b"t BAD missing charset"),
    # 8-bit text cannot be an atom (RFC 3501 §9 ATOM-CHAR is 7-bit)
    ("SEARCH CHARSET UTF-8 BODY Créatinine", b"t BAD invalid BODY string"),
]


def test_failures(box: Box) -> None:
    fill(box)
    raw = box.selected()
    for command, reply in FAILURES:
        assert raw.command("t", command) == [reply], command
    # values a client might get wrong but the grammar allows
    assert raw.command("a1", "SEARCH 9") == [b"* SEARCH", b"a1 OK SEARCH completed"]  # no such message: no match
    assert raw.command("a2", "SEARCH charset us-ascii all") == [b"* SEARCH 1 2 3", b"a2 OK SEARCH completed"]
    # UTF-8 in a quoted string: RFC 3501 §9 says 7-bit, RFC 9051 §9 (and RFC 6855) allow it; accepted, as Dovecot does
    assert raw.command("a2b", 'SEARCH CHARSET UTF-8 BODY "Créatinine"') == [
        b"* SEARCH 1",
        b"a2b OK SEARCH completed",
    ]
    assert raw.command("u", "UNSELECT") == [b"u OK UNSELECT completed"]
    assert raw.command("a3", "SEARCH ALL") == [b"a3 BAD SEARCH is not allowed in the authenticated state"]
    raw.close()
