"""Decoded header fields and body text for SEARCH (RFC 3501 §6.4.4)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from gateway.imap.message import header_fields, parse, text_for_search
from gateway.imap.message.search import decode_header_value

CORPUS = Path(__file__).resolve().parent.parent / "corpus"


def corpus(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def test_rfc2047_words_are_decoded() -> None:
    h = header_fields(parse(corpus("03-rfc2047-subject.eml")))
    assert h.subject == "Orientation pédiatrie et suivi"  # adjacent encoded words joined (RFC 2047 §6.2)
    assert h.from_ == '"François Dupont" <f.dupont@cabinet.mssante.fr>'  # ISO-8859-1 word
    assert h.to == "Maïté <maite@ch.mssante.fr>"
    assert h.get("In-Reply-To") == ["<orig-1@ch.mssante.fr>"]
    assert h.get("x-missing") == []


def test_raw_utf8_headers_and_folding() -> None:
    h = header_fields(parse(corpus("17-8bit-headers.eml")))
    assert h.subject == "Résultats d'analyse — urgent"  # RFC 6532
    assert h.get("x-latin1") == ["caf\ufffd"]  # not UTF-8: replaced, never an exception
    folded = header_fields(parse(corpus("16-long-folded-headers.eml")))
    assert folded.subject == (
        "Un sujet tres long qui est replie sur plusieurs lignes pour tester"
        " le depliage des en-tetes par le serveur IMAP\tavec une tabulation"
    )
    assert "subject: Un sujet tres long" in folded.text  # SEARCH matching is case-insensitive anyway


def test_repeated_fields() -> None:
    h = header_fields(parse(corpus("24-duplicate-and-bad-headers.eml")))
    assert h.from_ == "first@ch-test.mssante.fr, second@ch-test.mssante.fr"
    assert h.date is None  # the last Date: wins, as in ENVELOPE, and it is not a date


def test_date_for_sent_keys() -> None:
    """SENTON compares the date as written, in the sender's time zone (RFC 3501 §6.4.4)."""
    d = header_fields(parse(b"Date: Mon, 3 Jun 2024 23:30:00 -0500\r\n\r\n")).date
    assert d == dt.datetime(2024, 6, 3, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    assert d is not None
    assert d.date() == dt.date(2024, 6, 3)
    assert header_fields(parse(corpus("15-empty-subject-no-date.eml"))).date is None


def test_decode_header_value_is_lenient() -> None:
    assert decode_header_value(b"=?x-unknown?q?abc?=") == "abc"
    assert decode_header_value(b"=?utf-8?b?not base64!?=") == "=?utf-8?b?not base64!?="  # not a word
    assert decode_header_value(b"=?utf-8?b?w6k?=") == "é"  # missing padding
    assert decode_header_value(b"=?utf-8*fr?q?caf=C3=A9?=") == "café"  # RFC 2231 §5 language
    assert decode_header_value(b"=?base64?q?x?=") == "x"  # not a text codec: UTF-8


def test_body_text_is_decoded() -> None:
    qp = text_for_search(parse(corpus("04-quoted-printable.eml")))
    assert "Créatinine = 92 µmol/L" in qp
    assert "coupée par un saut de ligne doux." in qp  # soft line break removed
    assert text_for_search(parse(corpus("30-html-only-base64-utf16.eml"))) == "<p>Rendez-vous confirmé</p>\r\n"
    assert "hémoglobine" in text_for_search(parse(corpus("02-utf8-8bit-body.eml")))


def test_body_text_walks_parts_and_skips_non_text() -> None:
    text = text_for_search(parse(corpus("33-deep-smime-in-forward.eml")))
    # text/plain of the outer message, then the base64 text inside the forwarded signed message;
    # the PDF and the signature are not text
    assert text == "See the forwarded signed report.\nRapport signé.\n"
    assert text_for_search(parse(corpus("09-smime-enveloped.eml"))) == ""
    alt = text_for_search(parse(corpus("06-alternative-in-mixed.eml")))
    assert "Réunion de concertation pluridisciplinaire" in alt
    assert "<b>jeudi</b>" in alt
    assert "BEGIN:VCALENDAR" in alt
