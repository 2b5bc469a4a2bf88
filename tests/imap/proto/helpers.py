"""Shared helpers for the IMAP protocol tests."""

from __future__ import annotations

import pytest

from gateway.imap.proto.command import Command
from gateway.imap.proto.lexer import ParseError
from gateway.imap.proto.parser import parse_bytes


def parse(data: bytes) -> Command:
    """Parse one command given as wire octets, without its final CRLF."""
    return parse_bytes(data)


def error(data: bytes) -> tuple[str | None, str]:
    """The (tag, text) of the ParseError the command raises."""
    with pytest.raises(ParseError) as info:
        parse_bytes(data)
    return info.value.tag, info.value.text
