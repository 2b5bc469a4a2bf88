"""SEARCH / UID SEARCH (RFC 3501 §6.4.4), CHARSET, MODSEQ (RFC 7162) and ESEARCH (RFC 4731)."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.imap.conftest import Box, Raw, message
from tests.smtp.conftest import PASSWORD


def login(box: Box) -> Raw:
    raw = Raw(box.gw)
    assert raw.command("l", f'LOGIN {box.address} "{PASSWORD}"')[-1].startswith(b"l OK")
    assert raw.command("s", "SELECT INBOX")[-1] == b"s OK [READ-WRITE] SELECT completed"
    return raw


def fill(box: Box) -> None:
    box.put(message(1, subject="Bilan sanguin", body="Créatinine normale."), flags=["\\Seen"])
    box.put(message(2, subject="Compte rendu opératoire", body="Suites simples."), flags=["$Urgent"])
    box.put(
        message(3, subject="Ordonnance", body="x" * 2000),
        flags=["\\Deleted"],
        when=datetime(2026, 4, 1, 8, 0, tzinfo=UTC),
    )


def test_flag_size_date_and_set_keys(box: Box) -> None:
    fill(box)
    raw = login(box)
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
    raw = login(box)
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
    raw = login(box)
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
