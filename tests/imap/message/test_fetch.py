"""FETCH data beyond the corpus: SectionSpec rules, part numbering, partials, edge-case messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.imap.message import SectionSpec, bodystructure, envelope, parse, partial, section

CORPUS = Path(__file__).resolve().parent.parent / "corpus"


def corpus(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"part": (0,)}, "positive"),
        ({"part": (1, 0, 2)}, "positive"),
        ({"text": "MIME"}, "MIME needs a part number"),
        ({"text": "BODY"}, "unknown section text"),
        ({"text": "header"}, "unknown section text"),  # the protocol parser upper-cases
        ({"text": "HEADER.FIELDS"}, "field names"),
        ({"text": "HEADER", "fields": ("From",)}, "field names"),
    ],
)
def test_section_spec_refuses_what_the_grammar_forbids(kwargs: dict[str, object], problem: str) -> None:
    """RFC 3501 §9 section-spec: nz-number parts, MIME only after a part, a non-empty header-list."""
    with pytest.raises(ValueError, match=problem):
        SectionSpec(**kwargs)  # type: ignore[arg-type]


def test_partial() -> None:
    """RFC 3501 §6.4.5 <start.count>: a start past the end is the empty string."""
    assert partial(b"0123456789", 0, 4) == b"0123"
    assert partial(b"0123456789", 8, 100) == b"89"
    assert partial(b"0123456789", 10, 1) == b""
    assert partial(b"0123456789", 11, 1) == b""
    assert partial(b"0123456789", 3, 0) == b""
    with pytest.raises(ValueError, match="non-negative"):
        partial(b"x", -1, 1)


def test_part_numbers_of_nested_message() -> None:
    """RFC 3501 §6.4.5: numbers continue inside message/rfc822 (07: 2 is message/rfc822 holding a
    multipart whose parts are 2.1 and 2.2)."""
    msg = parse(corpus("07-rfc822-attachment.eml"))
    assert section(msg, SectionSpec((1,))) == b"Je transfere le message ci-joint.\r\n"
    assert section(msg, SectionSpec((2, 1))) == b"IRM cerebrale normale."
    assert section(msg, SectionSpec((2, 2))) == b"RElDTQ=="
    assert section(msg, SectionSpec((2, 2), "MIME")) == (
        b"Content-Type: application/dicom; name=IM0001.dcm\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    )
    assert section(msg, SectionSpec((2,), "HEADER.FIELDS", ("subject",))) == b"Subject: Resultats IRM\r\n\r\n"
    assert section(msg, SectionSpec((2, 3))) == b""  # nonexistent: the empty string, not NIL
    assert section(msg, SectionSpec((3,))) == b""
    assert section(msg, SectionSpec((1,), "HEADER")) == b""  # HEADER only exists for message/rfc822
    assert section(msg, SectionSpec((1,), "TEXT")) == b""
    # A non-multipart part has only part 1, itself (as Dovecot resolves "1.1"); not 1.1.1 though.
    assert section(msg, SectionSpec((1, 1))) == section(msg, SectionSpec((1,)))
    assert section(msg, SectionSpec((1, 1, 1))) == b""
    assert section(msg, SectionSpec((2, 1, 1))) == b"IRM cerebrale normale."


def test_single_part_message_has_only_part_one() -> None:
    raw = corpus("01-plain-ascii.eml")
    msg = parse(raw)
    header, body = raw.split(b"\r\n\r\n", 1)
    assert section(msg, SectionSpec((1,))) == body
    assert section(msg, SectionSpec((1,), "MIME")) == header + b"\r\n\r\n"  # Dovecot: the message header
    assert section(msg, SectionSpec((2,))) == b""
    assert section(msg, SectionSpec((1, 1))) == b""


def test_header_fields_match_names_case_insensitively_in_message_order() -> None:
    msg = parse(corpus("24-duplicate-and-bad-headers.eml"))
    got = section(msg, SectionSpec((), "HEADER.FIELDS", ("subject", "MESSAGE-id")))
    assert got == (
        b"Subject: first subject\r\nSubject: second subject\r\n"
        b"Message-ID: <dup-24@ch-test.mssante.fr>\r\nMessage-ID: <dup-24-second@ch-test.mssante.fr>\r\n\r\n"
    )


def test_header_fields_add_the_missing_empty_line_for_the_whole_message_only() -> None:
    """A message without body separator: HEADER.FIELDS still ends with an empty line (as Dovecot
    answers before it caches the fields; once cached it omits it when the last field has no line
    end at all), HEADER.FIELDS.NOT and HEADER return what is there."""
    raw = b"From: a@example.org\r\nSubject: no line end"
    msg = parse(raw)
    assert section(msg, SectionSpec((), "HEADER.FIELDS", ("Subject",))) == b"Subject: no line end\r\n\r\n"
    assert section(msg, SectionSpec((), "HEADER.FIELDS.NOT", ("Subject",))) == b"From: a@example.org\r\n"
    assert section(msg, SectionSpec((), "HEADER")) == raw
    assert section(msg, SectionSpec((), "TEXT")) == b""


def test_empty_message() -> None:
    """Dovecot refuses to APPEND an empty message; we still answer consistently."""
    msg = parse(b"")
    assert envelope(msg) == b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    assert bodystructure(msg, True) == b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)'
    assert bodystructure(msg, False) == b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0)'
    for spec in (SectionSpec(), SectionSpec((), "HEADER"), SectionSpec((), "TEXT"), SectionSpec((1,))):
        assert section(msg, spec) == b""
    assert section(msg, SectionSpec((), "HEADER.FIELDS", ("From",))) == b"\r\n"


def test_nul_octets() -> None:
    """NUL in header strings becomes U+FFFD (as Dovecot answers). Returned sections keep the stored
    NUL, where Dovecot sends 0x80: RFC 3501 §4.3 literals exclude NUL, so the FETCH serialiser must
    use a literal8 (BINARY, RFC 3516) or substitute. mssgw refuses NUL at SMTP (smtp/content.py)."""
    raw = b'Subject: a\x00b\r\nContent-Type: text/plain; name="x\x00y"\r\n\r\nbo\x00dy\r\n'
    msg = parse(raw)
    assert envelope(msg) == b"(NIL {5}\r\na\xef\xbf\xbdb NIL NIL NIL NIL NIL NIL NIL NIL)"
    assert bodystructure(msg, True) == (
        b'("text" "plain" ("name" {5}\r\nx\xef\xbf\xbdy "charset" "us-ascii") NIL NIL "7bit" 7 1 NIL NIL NIL NIL)'
    )
    assert section(msg, SectionSpec((1,))) == b"bo\x00dy\r\n"  # Dovecot: b"bo\x80dy\r\n"


def test_nesting_limit() -> None:
    """Beyond 100 nested parts the rest is body text (41 and 42 are compared with Dovecot in full)."""
    msg = parse(corpus("41-deep-multipart.eml"))
    depth, part = 0, msg.root
    while part.children:
        part, depth = part.children[0], depth + 1
    assert depth == 99
    assert not part.is_multipart()  # not opened: reported as application/octet-stream
    assert bodystructure(msg, False).count(b'"application" "octet-stream"') == 1


def test_part_count_limit() -> None:
    """10 000 parts at most; the rest is body of the last part. This message's 740 kB BODYSTRUCTURE
    was compared with Dovecot 2.3.19.1 once and is identical (too large to record)."""
    raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--b\r\n\r\nx\r\n" * 10_100 + b"--b--\r\n"
    msg = parse(raw)
    assert len(msg.root.children) == 9_999  # 10 000 parts with the root
    assert msg.root.children[-1].end <= len(raw)


def test_each_part_octets_are_its_mime_header_and_body() -> None:
    for path in sorted(CORPUS.glob("*.eml")):
        raw = path.read_bytes()
        msg = parse(raw)
        stack = [msg.root]
        while stack:
            part = stack.pop()
            assert 0 <= part.start <= part.body_start <= part.end <= len(raw), path.name
            if part.parent is not None:
                assert part.parent.body_start <= part.start, path.name
                assert part.end <= part.parent.end, path.name
            stack.extend(part.children)
