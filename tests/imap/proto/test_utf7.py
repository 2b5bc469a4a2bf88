"""Modified UTF-7 mailbox names (RFC 3501 §5.1.3): encoding, strict decoding, exact errors."""

from __future__ import annotations

import pytest

from gateway.imap.proto.utf7 import decode, encode


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        ("", ""),
        ("INBOX", "INBOX"),
        ("&", "&-"),
        ("a&b&&", "a&-b&-&-"),
        ("Entwürfe", "Entw&APw-rfe"),
        ("Éléments envoyés", "&AMk-l&AOk-ments envoy&AOk-s"),
        ("日本語", "&ZeVnLIqe-"),
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # RFC 3501 §5.1.3 example
        ("😀", "&2D3eAA-"),  # outside the BMP: a surrogate pair
        ("a\tb", "a&AAk-b"),  # a control character is encoded, never sent raw
        ("\x7f", "&AH8-"),
        ("é&", "&AOk-&-"),
        ("é é", "&AOk- &AOk-"),
    ],
)
def test_round_trip(text: str, wire: str) -> None:
    assert encode(text) == wire
    assert decode(wire) == text


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ("é", "invalid character 0xe9 at offset 0 in modified UTF-7"),
        ("a\tb", "invalid character 0x09 at offset 1 in modified UTF-7"),
        ("&", "unterminated & sequence at offset 0 in modified UTF-7"),
        ("ab&AOk", "unterminated & sequence at offset 2 in modified UTF-7"),
        ("&AOk=-", "invalid modified BASE64 in & sequence at offset 0"),
        ("&AO/-", "invalid modified BASE64 in & sequence at offset 0"),
        ("&A-", "invalid modified BASE64 length in & sequence at offset 0"),
        ("&AOl-", "non-zero padding bits in & sequence at offset 0"),
        ("&AM-", "non-zero padding bits in & sequence at offset 0"),
        ("&AOkA-", "incomplete UTF-16 in & sequence at offset 0"),
        ("&2D0-", "invalid UTF-16 (unpaired surrogate) in & sequence at offset 0"),
        ("&3gA-", "invalid UTF-16 (unpaired surrogate) in & sequence at offset 0"),
        ("&AGEAYg-", "printable US-ASCII encoded in & sequence at offset 0"),
        ("&ACY-", "printable US-ASCII encoded in & sequence at offset 0"),
        ("&U,BTFw-&ZeVnLIqe-", "adjacent & sequences at offset 8 in modified UTF-7"),
    ],
)
def test_strict_decoding(wire: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        decode(wire)


def test_encode_refuses_lone_surrogate() -> None:
    with pytest.raises(ValueError, match="unpaired surrogate"):
        encode("a\ud800b")
