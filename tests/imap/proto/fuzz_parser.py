"""Coverage-guided fuzz target (atheris, libFuzzer) for the IMAP framing and command parser.

Run from the repository root (atheris is not a project dependency: `pip install atheris`):

    PYTHONPATH=. python tests/imap/proto/fuzz_parser.py -max_total_time=600 /tmp/imap-corpus

Each input is fed to a `CommandReader` in chunks whose size the first octet chooses; the events must be
the same as when the input is fed whole (framing is split-invariant), and every command is parsed: only
`ParseError` may come out. Any other exception or a failed assertion is a finding (libFuzzer saves the
input as crash-*). `tests/imap/proto/test_fuzz.py` runs a bounded number of iterations when atheris is
installed.
"""

from __future__ import annotations

import contextlib
import sys

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports():
    from gateway.imap.proto.framing import CommandLine, CommandReader, Event
    from gateway.imap.proto.lexer import ParseError
    from gateway.imap.proto.parser import parse_command
    from gateway.imap.proto.utf7 import decode

LIMITS = {"max_line": 512, "max_text": 2048, "max_literal": 4096, "max_command": 8192}


def _events(data: bytes, chunk: int) -> list[Event]:
    reader = CommandReader(**LIMITS)
    events: list[Event] = []
    for i in range(0, len(data), chunk):
        reader.feed(data[i : i + chunk])
        events.extend(reader.events())
    return events


def TestOneInput(data: bytes) -> None:  # the name atheris expects
    if not data:
        return
    chunk, stream = data[0] % 16 + 1, data[1:]
    events = _events(stream, len(stream) or 1)
    assert _events(stream, chunk) == events, "framing depends on how the octets were split"
    for event in events:
        if isinstance(event, CommandLine):
            text = ""
            try:
                parse_command(event)
            except ParseError as exc:
                text = exc.text
            assert all(0x20 <= ord(c) < 0x7F for c in text), "unsafe octets in an error text"
    with contextlib.suppress(ValueError):
        decode(stream.decode("latin-1"))


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
