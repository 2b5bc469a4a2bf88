"""ENVELOPE, BODY, BODYSTRUCTURE and BODY[section] octets, compared with Dovecot's recorded answers.

tests/imap/corpus/*.eml were appended to Dovecot 2.3.19.1 (Debian 12) and fetched once by
tests/imap/corpus/make_expected.py; dovecot-expected.json holds the answers, so no Dovecot is needed
here. Every answer must match octet for octet, except the deliberate differences in DIFFERENCES,
where our exact value is asserted instead and the reason is given.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.imap.message import bodystructure, envelope, parse, partial, section
from tests.imap.message.sectionkeys import spec_of

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
EXPECTED = json.loads((CORPUS / "dovecot-expected.json").read_text())
MESSAGES = EXPECTED["messages"]


def _octets(value: str | None) -> bytes | None:
    return None if value is None else value.encode("latin-1")


# 29-bare-lf.eml has LF line ends. Dovecot treats LF as CRLF: it reports sizes counting a CR per bare
# LF (12 where the stored part has 11 octets) and converts every returned section to CRLF, so its
# <partial> offsets count octets that are not stored. We return the stored octets and their real
# sizes, which keeps the invariant "BODYSTRUCTURE size == length of BODY[part]" on what we serve.
# mssgw stores no bare LF (SMTP content checks refuse it), so this only concerns imported mail.
BARE_LF = "29-bare-lf.eml"
DIFFERENCES: dict[tuple[str, str], bytes] = {
    (BARE_LF, "BODY"): b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 11 1) "mixed")',
    (BARE_LF, "BODYSTRUCTURE"): (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 11 1 NIL NIL NIL NIL) "mixed" '
        b'("boundary" "lf") NIL NIL NIL)'
    ),
    (BARE_LF, "<20.10>"): b"ante.fr\nSu",
    (BARE_LF, "TEXT<5.1000000>"): b"Content-Type: text/plain\n\nline1\nline2\n--lf--\n",
    # Part 6 of 27 is message/rfc822 whose header's empty line is the CRLF of the next delimiter
    # (RFC 2046 §5.1.1), so the encapsulated message is empty: no header lines, no empty line.
    # Dovecot runs its header filter over the stream from where that empty message "starts", i.e.
    # the delimiter's CRLF, and returns it as an empty line; we return the (empty) header's fields.
    ("27-malformed-content-type.eml", "6.HEADER.FIELDS (SUBJECT FROM)"): b"",
    ("27-malformed-content-type.eml", "6.HEADER.FIELDS.NOT (SUBJECT)"): b"",
}


def expected(name: str, item: str, dovecot: bytes | None) -> bytes | None:
    if (name, item) in DIFFERENCES:
        return DIFFERENCES[name, item]
    if name == BARE_LF and dovecot is not None and "<" not in item and item not in ("BODY", "BODYSTRUCTURE"):
        return dovecot.replace(b"\r\n", b"\n")  # the stored octets, see BARE_LF above
    return dovecot


def test_recorded_from_dovecot_2_3() -> None:
    assert EXPECTED["dovecot_version"].startswith("2.3.19.1")
    assert sorted(MESSAGES) == sorted(p.name for p in CORPUS.glob("*.eml"))
    for name, item in DIFFERENCES:  # every documented difference is about a recorded answer
        assert item in ("ENVELOPE", "BODY", "BODYSTRUCTURE") or item in MESSAGES[name]["sections"]


def test_corpus_is_crlf() -> None:
    """The corpus keeps its CRLF line ends (git must not convert them): only 29 has bare LF."""
    for path in CORPUS.glob("*.eml"):
        raw = path.read_bytes()
        bare_lf = raw.count(b"\n") - raw.count(b"\r\n")
        assert (bare_lf > 0) == (path.name == BARE_LF), path.name


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_structures(name: str) -> None:
    msg = parse((CORPUS / name).read_bytes())
    rec = MESSAGES[name]
    assert envelope(msg) == expected(name, "ENVELOPE", _octets(rec["envelope"]))
    assert bodystructure(msg, extensible=False) == expected(name, "BODY", _octets(rec["body"]))
    assert bodystructure(msg, extensible=True) == expected(name, "BODYSTRUCTURE", _octets(rec["bodystructure"]))
    assert msg.size == len((CORPUS / name).read_bytes())


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_sections(name: str) -> None:
    msg = parse((CORPUS / name).read_bytes())
    wrong = []
    for key, value in MESSAGES[name]["sections"].items():
        spec, part = spec_of(key)
        got = section(msg, spec)
        if part is not None:
            got = partial(got, *part)
        want = expected(name, key, _octets(value))
        if got != want:
            wrong.append(f"[{key}]\n  got  {got!r}\n  want {want!r}")
    assert not wrong, "\n".join(wrong)
