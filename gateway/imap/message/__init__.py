"""The message side of IMAP FETCH and SEARCH: pure functions over the raw RFC 5322 octets.

    msg = parse(raw)                                   # once per message; never raises
    envelope(msg)                                      # b'("Mon, 3 Jun 2024 ..." "Subject" ...)'
    bodystructure(msg, extensible=False)               # FETCH BODY
    bodystructure(msg, extensible=True)                # FETCH BODYSTRUCTURE
    section(msg, SectionSpec((1, 2), "MIME"))          # FETCH BODY[1.2.MIME]
    partial(section(msg, SectionSpec()), 0, 1024)      # FETCH BODY[]<0.1024>
    header_fields(msg).date, text_for_search(msg)      # SEARCH SENTON / BODY

Implementation notes
- No I/O and no asyncio: callers hand in the stored octets (decrypted) and get IMAP-ready bytes.
  ENVELOPE and BODYSTRUCTURE come back serialised (parenthesised, strings quoted or as literals)
  because their quoting choices are part of matching what clients see from common servers.
- Behaviour is Dovecot 2.3's, recorded once from Dovecot 2.3.19.1 over tests/imap/corpus and
  asserted octet for octet by tests/imap/message. Deliberate differences (documented in the tests):
  sizes and returned octets are those stored, never LF-to-CRLF converted; NUL octets in returned
  sections are not replaced by 0x80; HEADER.FIELDS inside a message/rfc822 part stops at that
  part's header end.
- Modules: parser (part tree and offsets), rfc822 (tokens, parameters, addresses), quote (IMAP
  strings, private until gateway/imap/proto/serialize.py exists), structure (ENVELOPE, BODY,
  BODYSTRUCTURE writers), fetch (ParsedMessage, the FETCH functions), search (decoded text for SEARCH).
"""

from __future__ import annotations

from gateway.imap.message.fetch import (
    ParsedMessage,
    SectionSpec,
    bodystructure,
    envelope,
    parse,
    partial,
    section,
)
from gateway.imap.message.parser import MimePart
from gateway.imap.message.search import SearchHeaders, header_fields, text_for_search

__all__ = [
    "MimePart",
    "ParsedMessage",
    "SearchHeaders",
    "SectionSpec",
    "bodystructure",
    "envelope",
    "header_fields",
    "parse",
    "partial",
    "section",
    "text_for_search",
]
