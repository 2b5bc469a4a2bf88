"""FETCH arguments (RFC 3501 §6.4.5, §9 `fetch`; RFC 7162 §3.1.4 MODSEQ and CHANGEDSINCE).

Implementation notes
- The macros ALL, FAST and FULL are expanded here, and only stand alone (not inside a list), as in the
  RFC 3501 §9 grammar.
- `BODY[section]<start.count>` / `BODY.PEEK[...]`: the section is `[part *("." part)] ["." text]` where
  text is HEADER, HEADER.FIELDS[.NOT] (header-list), TEXT, or MIME (MIME only after a part number,
  RFC 3501 §9 `section-text`). Part numbers are nz-number; `count` in a partial is nz-number.
- Header field names in HEADER.FIELDS lists are astrings of printable ASCII without ":" (RFC 5322
  §2.2 field names), upper-cased (they match case-insensitively).
- FETCH modifiers (RFC 4466 §2.4): only CHANGEDSINCE (RFC 7162 §3.1.4.1, mod-sequence-value up to
  2**63 - 1; 0 is accepted too, as iPhone Mail sends it). VANISHED needs QRESYNC, which is not offered.
"""

from __future__ import annotations

import re

from gateway.imap.proto.command import BodySection, FetchArgs, FetchAtt, FetchItem, Partial, Section, SectionText
from gateway.imap.proto.lexer import RPAREN, SP, Cursor, show

__all__ = ["MAX_MODSEQ", "header_field_name", "parse_fetch", "parse_modseq"]

MAX_MODSEQ = 2**63 - 1  # RFC 7162 §7 mod-sequence-value: positive unsigned 63-bit integer

# RFC 3501 §6.4.5 macros
_MACROS: dict[str, tuple[FetchItem, ...]] = {
    "ALL": (FetchAtt.FLAGS, FetchAtt.INTERNALDATE, FetchAtt.RFC822_SIZE, FetchAtt.ENVELOPE),
    "FAST": (FetchAtt.FLAGS, FetchAtt.INTERNALDATE, FetchAtt.RFC822_SIZE),
    "FULL": (FetchAtt.FLAGS, FetchAtt.INTERNALDATE, FetchAtt.RFC822_SIZE, FetchAtt.ENVELOPE, FetchAtt.BODY),
}
_ATTS = {att.value: att for att in FetchAtt}

_ATT_NAME = re.compile(rb"[A-Za-z0-9.]+")
_SECTION_SPEC = re.compile(rb"[A-Za-z0-9.]*")
_PART = re.compile(rb"[1-9][0-9]{0,9}\Z")
_PARTIAL = re.compile(rb"<([0-9]{1,10})\.([0-9]{1,10})>")
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+\Z")  # RFC 5322 §3.6.8 ftext
_TEXTS = {t.value: t for t in SectionText}
_MAX_NUMBER = 4294967295


def parse_modseq(c: Cursor, what: str, *, zero: bool = False) -> int:
    """RFC 7162 §7 `mod-sequence-value` (1..2**63-1), or `mod-sequence-valzer` (0..) with zero=True."""
    return c.number(what, 0 if zero else 1, MAX_MODSEQ)


def parse_fetch(c: Cursor) -> FetchArgs:
    """RFC 3501 §9 `fetch = "FETCH" SP sequence-set SP ("ALL" / "FULL" / "FAST" / fetch-att /
    "(" fetch-att *(SP fetch-att) ")")`, RFC 4466 §2.4 `[fetch-modifiers]`."""
    c.sp("sequence set")
    sequence_set = c.sequence_set()
    c.sp("FETCH attribute")
    items: tuple[FetchItem, ...]
    if c.peek() == 0x28:
        c.pos += 1
        if c.peek() == RPAREN:
            raise c.error("missing FETCH attribute")
        found = list(_fetch_att(c, top=False))
        while c.maybe_sp():
            found.extend(_fetch_att(c, top=False))
        c.close("FETCH attributes")
        items = tuple(found)
    else:
        items = _fetch_att(c, top=True)
    changed_since = None
    if c.maybe_sp():
        changed_since = _fetch_modifiers(c)
    c.end()
    return FetchArgs(sequence_set, items, changed_since)


def _peek_name(c: Cursor) -> str:
    match = _ATT_NAME.match(c.line, c.pos)
    return match.group().decode("ascii") if match else ""


def _fetch_att(c: Cursor, *, top: bool) -> tuple[FetchItem, ...]:
    """RFC 3501 §9 `fetch-att`, or a macro when `top` (not inside a list)."""
    if c.at_end():
        raise c.error("missing FETCH attribute")
    raw = _peek_name(c)
    if not raw and c.peek() in (SP, RPAREN):
        raise c.error("missing FETCH attribute")
    name = raw.upper()
    c.pos += len(raw)
    delimited = c.at_end() or c.peek() in (SP, RPAREN)
    if name in ("BODY", "BODY.PEEK") and c.peek() == 0x5B:  # "["
        item = BodySection(_section(c), peek=name == "BODY.PEEK", partial=_partial(c))
        if not c.at_end() and c.peek() not in (SP, RPAREN):
            raise c.error(f"invalid FETCH attribute {show(c.word())}")
        return (item,)
    if name == "BODY.PEEK" and delimited:
        raise c.error("BODY.PEEK needs a section")
    if name in _ATTS and delimited:
        return (_ATTS[name],)
    if name in _MACROS and delimited:
        if not top:
            raise c.error(f"FETCH macro {name} cannot be in a list")
        return _MACROS[name]
    c.pos -= len(raw)
    raise c.error(f"unknown FETCH attribute {show(c.word())}")


def _section(c: Cursor) -> Section:
    """RFC 3501 §9 `section = "[" [section-spec] "]"`."""
    c.pos += 1  # "["
    spec_match = _SECTION_SPEC.match(c.line, c.pos)
    assert spec_match is not None
    spec = spec_match.group()
    c.pos = spec_match.end()
    parts: list[int] = []
    pieces = spec.split(b".") if spec else []
    while pieces and pieces[0][:1].isdigit():
        piece = pieces.pop(0)
        if _PART.match(piece) is None or int(piece) > _MAX_NUMBER:
            raise c.error(f"invalid section part {show(piece)}")
        parts.append(int(piece))
    text_name = b".".join(pieces).decode("ascii").upper()
    text = _TEXTS.get(text_name) if text_name else None
    if text_name and text is None:
        raise c.error(f"invalid section {show(spec)}")
    if text is SectionText.MIME and not parts:
        raise c.error("section MIME needs a part number")
    fields: tuple[str, ...] = ()
    if text in (SectionText.HEADER_FIELDS, SectionText.HEADER_FIELDS_NOT):
        fields = _header_list(c)
    if c.at_end():
        raise c.error("missing ] after section")
    if c.peek() != 0x5D:
        raise c.error(f"invalid section {show(spec + c.word())}")
    c.pos += 1
    return Section(tuple(parts), text, fields)


def _header_list(c: Cursor) -> tuple[str, ...]:
    """RFC 3501 §9 `header-list = "(" header-fld-name *(SP header-fld-name) ")"`."""
    c.sp("header list")
    c.open("header list")
    names = [header_field_name(c)]
    while c.maybe_sp():
        names.append(header_field_name(c))
    if c.at_end():
        raise c.error("missing ) after header list")
    if c.peek() != RPAREN:
        raise c.error("expected ) after header list")
    c.pos += 1
    return tuple(names)


def header_field_name(c: Cursor, what: str = "header field name") -> str:
    """RFC 3501 §9 `header-fld-name = astring`, restricted to RFC 5322 ftext; upper-cased."""
    if c.peek() == RPAREN:
        raise c.error(f"missing {what}")
    name = c.astring(what)
    if _FIELD_NAME.match(name) is None:
        raise c.error(f"invalid {what} {show(name)}")
    return name.decode("ascii").upper()


def _partial(c: Cursor) -> Partial | None:
    """RFC 3501 §9 `"<" number "." nz-number ">"`."""
    if c.peek() != 0x3C:
        return None
    match = _PARTIAL.match(c.line, c.pos)
    if match is None or int(match.group(2)) == 0 or max(int(g) for g in match.groups()) > _MAX_NUMBER:
        raise c.error(f"invalid partial range {show(c.word())}")
    c.pos = match.end()
    return Partial(int(match.group(1)), int(match.group(2)))


def _fetch_modifiers(c: Cursor) -> int:
    """RFC 4466 §2.4 `fetch-modifiers = SP "(" fetch-modifier *(SP fetch-modifier) ")"`."""
    c.open("FETCH modifier")
    if c.peek() == RPAREN:
        raise c.error("missing FETCH modifier")
    changed_since: int | None = None
    while True:
        name = c.atom("FETCH modifier").upper()
        if name == "CHANGEDSINCE":  # RFC 7162 §3.1.4.1
            if changed_since is not None:
                raise c.error("duplicate FETCH modifier CHANGEDSINCE")
            c.sp("CHANGEDSINCE value")
            # The grammar says mod-sequence-value (>= 1), but iPhone Mail sends CHANGEDSINCE 0 (known client
            # defect, modern-email/defects#29); every mod-sequence is above 0, so 0 simply means "all".
            changed_since = parse_modseq(c, "CHANGEDSINCE value", zero=True)
        elif name == "VANISHED":
            raise c.error("FETCH modifier VANISHED needs QRESYNC, which is not supported")
        else:
            raise c.error(f"unknown FETCH modifier {show(name)}")
        if not c.maybe_sp():
            break
    c.close("FETCH modifiers")
    return changed_since
