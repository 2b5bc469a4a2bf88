"""Attachments of every type through the real server (domain brief §9): BODYSTRUCTURE and body parts of
the corpus messages, fetched over IMAP, equal Dovecot 2.3's answers recorded in
`tests/imap/corpus/dovecot-expected.json` (the message layer's own tests cover the full corpus)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.imap.conftest import Box

CORPUS = Path(__file__).parent / "corpus"
EXPECTED = json.loads((CORPUS / "dovecot-expected.json").read_text(encoding="utf-8"))["messages"]
CASES = [
    "05-mixed-attachments.eml",  # PDF, JPEG, CDA R2 XML, IHE XDM zip, HL7 v2
    "07-rfc822-attachment.eml",  # a forwarded message with its own multipart
    "22-smime-signed-enveloped-nested.eml",  # S/MIME parts
    "30-html-only-base64-utf16.eml",
]


def latin1(text: str) -> bytes:
    return text.encode("latin-1")


@pytest.mark.parametrize("name", CASES)
def test_bodystructure_and_parts_equal_dovecots(box: Box, name: str) -> None:
    raw_msg = (CORPUS / name).read_bytes()
    expected = EXPECTED[name]
    box.put(raw_msg)
    client = box.login()
    client.select("INBOX", readonly=True)
    typ, data = client.fetch("1", "(BODYSTRUCTURE)")
    assert typ == "OK"
    got = b"".join(part if isinstance(part, bytes) else b"".join(part) for part in data)
    assert got == b"1 (BODYSTRUCTURE " + latin1(expected["bodystructure"]) + b")"
    for section, want in expected["sections"].items():
        if want is None or section.endswith(".0>"):
            continue  # <n.0>: RFC 3501 §9 wants a non-zero count; Dovecot answers it, mssgw says BAD
        spec, _, origin = section.partition("<")
        typ, data = client.fetch("1", f"(BODY.PEEK[{spec}]{'<' + origin if origin else ''})")
        assert typ == "OK", section
        value = data[0][1] if isinstance(data[0], tuple) else b""
        assert value == latin1(want), section
    client.logout()
