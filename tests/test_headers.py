"""gateway/headers.py: a few fields read as the email package reads them in the whole header."""

from __future__ import annotations

from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.headers import field_value, fields_of, header_end
from gateway.store.mailstore import _message_id


def _whole(message: bytes) -> Message:
    """The reference: the email package given the whole message (it finds the header's end itself)."""
    return BytesHeaderParser(policy=compat32).parsebytes(message)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


LINES = [
    b"From: claire@hopital-a.mssante.fr",
    b"Message-ID: <a1@hopital-a.mssante.fr>",
    b"message-id:<b2@x>",
    b"MESSAGE-ID:   \t<c3@x>  ",
    b"Message-ID:",
    b"Message-ID: <d4@x",
    b" folded@x>",
    b"\t(comment)",
    b"Message-ID : <space-before-colon@x>",  # another name for the email package: "Message-ID "
    b"Message-ID: <\xc3\xa9@x>",  # non-ASCII: compat32 gives a Header object
    b"Content-Type: text/plain; charset=utf-8",
    b'Content-Type: multipart/mixed; boundary="b1"',
    b"From claire Mon Nov 23 08:00:00 2026",  # an mbox line: ends the field before it
    b": no name",  # ends the field before it too
    b"X-\xc3\xa9: non-ASCII name",
    b"not a header line",
    b"Message-ID\x00: <nul@x>",
    b"",
]
ENDS = [b"\r\n", b"\n", b"\r"]


@given(st.lists(st.tuples(st.sampled_from(LINES), st.sampled_from(ENDS)), max_size=14), st.booleans())
def test_generated_headers_read_as_the_whole_header_does(lines: list[tuple[bytes, bytes]], tail: bool) -> None:
    message = b"".join(line + end for line, end in lines)
    if tail:
        message += b"\r\nbody line\r\nMessage-ID: <in-the-body@x>\r\n"
    whole = _whole(message)
    for name in ("message-id", "content-type"):
        assert fields_of(message, (name.encode(),)).get_all(name) == whole.get_all(name)
    assert field_value(message, b"message-id") == _text(whole.get("Message-ID"))
    assert field_value(message, b"content-type") == _text(whole.get("Content-Type"))


@pytest.mark.parametrize(
    ("message", "value"),
    [
        (b"Subject: x\r\nMessage-ID: <m1@x>\r\n\r\nbody", "<m1@x>"),
        (b"Message-ID: <m2@x>", "<m2@x>"),  # no line end at all
        (b"Message-ID: <m3\r\n @x>\r\n\r\n", "<m3\r\n @x>"),  # continuation kept as it is
        (b"Message-ID: <m4@x>\r\nMessage-ID: <second@x>\r\n\r\n", "<m4@x>"),  # the first counts
        (b"Message-ID: <m5@x>\nFrom x\n (not the id)\n\n", "<m5@x>"),  # the mbox line ends the field
        (b"Message-ID: <m6@x>\r:\r (not the id)\r\r", "<m6@x>"),  # so does ":...", with CR line ends
        (b"Subject: x\r\n\r\nMessage-ID: <in-the-body@x>\r\n", None),
        (b"Subject: x\r\nbody line\r\nMessage-ID: <after-a-non-header@x>\r\n", None),
        (b"Message-ID: <\xff@x>\r\n\r\n", None),
        (b"", None),
    ],
)
def test_the_message_id(message: bytes, value: str | None) -> None:
    assert _text(_whole(message).get("Message-ID")) == value
    assert field_value(message, b"message-id") == value


def test_the_header_end_is_found_without_reading_past_it() -> None:
    head = b"Subject: x\r\nMessage-ID: <big@x>\r\n"
    assert header_end(head + b"\r\n" + b"y" * 100) == len(head)
    assert header_end(b"A: 1\n\nB") == 5
    assert header_end(b"A: 1\r\rB") == 5
    assert header_end(b"A: 1\r\n") == 6  # no empty line: all of it
    body = b"Message-ID: <long@x>\r\n" + b"z" * 70 + b"\r\n"
    assert header_end(body * 3) == len(body * 3)


def test_appended_messages_are_audited_with_their_unfolded_message_id() -> None:
    assert _message_id(b"Message-ID:\r\n  <a1@hopital-a.mssante.fr>\r\n\r\nx") == "<a1@hopital-a.mssante.fr>"
    assert _message_id(b"Message-ID: <a\r\n\tb@x>\r\n\r\n") == "<a b@x>"
    assert _message_id(b"Message-ID: <" + b"m" * 300 + b">\r\n\r\n") == "<" + "m" * 249
    assert _message_id(b"Message-ID: <\x01@x>\r\n\r\n") is None  # not printable
    assert _message_id(b"Message-ID:   \r\n\r\n") is None
    assert _message_id(b"Subject: no id\r\n\r\n") is None
