"""SEARCH arguments (RFC 3501 §6.4.4, §9 `search`; ESEARCH RFC 4731 §3.1; CONDSTORE RFC 7162 §3.1.5).

Implementation notes
- `SEARCH [RETURN (opts)] [CHARSET name] key *(SP key)` (RFC 4466 §2.6 `search-program`). The keys of
  the command form one `AndKey` (a single key stands alone); a parenthesised group likewise.
- CHARSET: UTF-8 and US-ASCII are supported (RFC 3501 §6.4.4 requires US-ASCII; RFC 9051 §6.4.4 UTF-8).
  Any other raises `BadCharsetError`, answered `NO [BADCHARSET (UTF-8 US-ASCII)]`. Search strings are
  decoded as UTF-8 either way (a client naming US-ASCII while sending UTF-8 is common and harmless).
- RETURN options (RFC 4731 §3.1): MIN MAX ALL COUNT; `RETURN ()` means `RETURN (ALL)`. SAVE (RFC 5182)
  is refused: SEARCHRES is not offered.
- Sizes (LARGER, SMALLER) accept number64 (RFC 9051 §9), mod-sequences mod-sequence-valzer.
- NOT, OR and groups nest at most `lexer.MAX_DEPTH` deep.
"""

from __future__ import annotations

from gateway.imap.proto.command import (
    AndKey,
    DateKey,
    DateKeyName,
    EntryType,
    HeaderKey,
    KeywordKey,
    ModSeqKey,
    NotKey,
    OrKey,
    ReturnOption,
    SearchArgs,
    SearchKey,
    SeqKey,
    SimpleKey,
    SimpleKeyName,
    SizeKey,
    SizeKeyName,
    TextKey,
    TextKeyName,
)
from gateway.imap.proto.fetch import header_field_name, parse_modseq
from gateway.imap.proto.lexer import DQUOTE, LPAREN, RPAREN, SP, SYSTEM_FLAGS, BadCharsetError, Cursor, show

__all__ = ["SUPPORTED_CHARSETS", "parse_search"]

SUPPORTED_CHARSETS = ("UTF-8", "US-ASCII")

_SIMPLE: dict[str, SimpleKeyName] = {
    "ALL": "ALL",
    "ANSWERED": "ANSWERED",
    "DELETED": "DELETED",
    "DRAFT": "DRAFT",
    "FLAGGED": "FLAGGED",
    "NEW": "NEW",
    "OLD": "OLD",
    "RECENT": "RECENT",
    "SEEN": "SEEN",
    "UNANSWERED": "UNANSWERED",
    "UNDELETED": "UNDELETED",
    "UNDRAFT": "UNDRAFT",
    "UNFLAGGED": "UNFLAGGED",
    "UNSEEN": "UNSEEN",
}
_TEXT: dict[str, TextKeyName] = {
    "BCC": "BCC",
    "BODY": "BODY",
    "CC": "CC",
    "FROM": "FROM",
    "SUBJECT": "SUBJECT",
    "TEXT": "TEXT",
    "TO": "TO",
}
_DATE: dict[str, DateKeyName] = {
    "BEFORE": "BEFORE",
    "ON": "ON",
    "SINCE": "SINCE",
    "SENTBEFORE": "SENTBEFORE",
    "SENTON": "SENTON",
    "SENTSINCE": "SENTSINCE",
}
_SIZE: dict[str, SizeKeyName] = {"LARGER": "LARGER", "SMALLER": "SMALLER"}
_RETURN: dict[str, ReturnOption] = {"MIN": "MIN", "MAX": "MAX", "ALL": "ALL", "COUNT": "COUNT"}
_ENTRY_TYPES: dict[str, EntryType] = {"PRIV": "priv", "SHARED": "shared", "ALL": "all"}


def parse_search(c: Cursor) -> SearchArgs:
    """RFC 3501 §9 `search = "SEARCH" [SP "CHARSET" SP astring] 1*(SP search-key)`, with RFC 4731 RETURN."""
    c.sp("search key")
    return_options: tuple[ReturnOption, ...] | None = None
    if c.next_word_is(b"RETURN"):
        c.atom("RETURN")
        return_options = _return_options(c)
        c.sp("search key")
    charset: str | None = None
    if c.next_word_is(b"CHARSET"):
        c.atom("CHARSET")
        c.sp("charset")
        charset = c.astring_text("charset").upper()
        if charset not in SUPPORTED_CHARSETS:
            raise BadCharsetError(c.tag, f"unsupported charset {show(charset)}")
        c.sp("search key")
    keys = [_search_key(c)]
    while c.maybe_sp():
        if c.at_end():
            raise c.error("missing search key")
        keys.append(_search_key(c))
    c.end()
    return SearchArgs(_all_of(keys), charset, return_options)


def _all_of(keys: list[SearchKey]) -> SearchKey:
    return keys[0] if len(keys) == 1 else AndKey(tuple(keys))


def _return_options(c: Cursor) -> tuple[ReturnOption, ...]:
    """RFC 4731 §3.1 `search-return-opts = SP "RETURN" SP "(" [search-return-opt *(SP search-return-opt)] ")"`."""
    c.sp("RETURN options")
    c.open("RETURN options")
    options: list[ReturnOption] = []
    if c.peek() != RPAREN:
        while True:
            name = c.atom("RETURN option").upper()
            if name == "SAVE":
                raise c.error("RETURN option SAVE needs SEARCHRES, which is not supported")
            if name not in _RETURN:
                raise c.error(f"unknown RETURN option {show(name)}")
            if _RETURN[name] not in options:
                options.append(_RETURN[name])
            if not c.maybe_sp():
                break
    c.close("RETURN options")
    return tuple(options) or ("ALL",)  # RFC 4731 §3.1: "RETURN ()" is "RETURN (ALL)"


def _search_key(c: Cursor) -> SearchKey:
    """RFC 3501 §9 `search-key` (and RFC 7162 §3.1.5 `search-modsequence`)."""
    if c.at_end():
        raise c.error("missing search key")
    first = c.peek()
    if first == LPAREN:  # "(" search-key *(SP search-key) ")"
        c.enter()
        c.pos += 1
        if c.peek() == RPAREN:
            raise c.error("missing search key in ( )")
        keys = [_search_key(c)]
        while c.maybe_sp():
            keys.append(_search_key(c))
        c.close("search keys")
        c.leave()
        return _all_of(keys)
    if first == 0x2A or first == 0x24 or 0x30 <= first <= 0x39:  # sequence-set: digit, "*" or "$"
        return SeqKey(c.sequence_set())
    if first == SP:
        raise c.error("extra space before search key")
    start = c.pos
    name = c.atom("search key").upper()
    if name in _SIMPLE:
        return SimpleKey(_SIMPLE[name])
    if name in _TEXT:
        c.sp(f"{name} string")
        return TextKey(_TEXT[name], c.astring_text(f"{name} string"))
    if name in _DATE:
        c.sp(f"{name} date")
        return DateKey(_DATE[name], c.date(f"{name} date"))
    if name in _SIZE:
        c.sp(f"{name} size")
        return SizeKey(_SIZE[name], c.number(f"{name} size", 0, 2**63 - 1))
    if name in ("KEYWORD", "UNKEYWORD"):
        c.sp(f"{name} flag")
        return KeywordKey(c.atom(f"{name} flag"), present=name == "KEYWORD")
    if name == "HEADER":
        c.sp("HEADER field name")
        field = header_field_name(c, "HEADER field name")
        c.sp("HEADER string")
        return HeaderKey(field, c.astring_text("HEADER string"))
    if name == "UID":
        c.sp("UID sequence set")
        return SeqKey(c.sequence_set("UID sequence set"), uid=True)
    if name == "NOT":
        c.sp("search key after NOT")
        c.enter()
        key = _search_key(c)
        c.leave()
        return NotKey(key)
    if name == "OR":
        c.sp("first search key of OR")
        c.enter()
        left = _search_key(c)
        c.sp("second search key of OR")
        right = _search_key(c)
        c.leave()
        return OrKey(left, right)
    if name == "MODSEQ":
        return _modseq(c)
    c.pos = start
    raise c.error(f"unknown search key {show(c.word())}")


def _modseq(c: Cursor) -> ModSeqKey:
    """RFC 7162 §3.1.5 `search-modsequence = "MODSEQ" [search-modseq-ext] SP mod-sequence-valzer`,
    `search-modseq-ext = SP entry-name SP entry-type-req`, `entry-name = DQUOTE "/flags/" attr-flag DQUOTE`."""
    c.sp("MODSEQ value")
    if c.peek() != DQUOTE:
        return ModSeqKey(parse_modseq(c, "MODSEQ value", zero=True))
    entry = c.text(c.quoted("MODSEQ entry name"), "MODSEQ entry name")
    flag = entry[len("/flags/") :]
    valid_flag = flag[1:] if flag.startswith("\\") else flag
    if not entry.lower().startswith("/flags/") or not valid_flag or not all(_atom_char(ch) for ch in valid_flag):
        raise c.error(f"invalid MODSEQ entry name {show(entry)}")
    entry = "/flags/" + SYSTEM_FLAGS.get(flag.upper(), flag)
    c.sp("MODSEQ entry type")
    entry_type = _ENTRY_TYPES.get(c.atom("MODSEQ entry type").upper())
    if entry_type is None:
        raise c.error("invalid MODSEQ entry type: expected priv, shared or all")
    c.sp("MODSEQ value")
    return ModSeqKey(parse_modseq(c, "MODSEQ value", zero=True), entry, entry_type)


def _atom_char(ch: str) -> bool:
    return 0x21 <= ord(ch) < 0x7F and ch not in '(){%*"\\]'
