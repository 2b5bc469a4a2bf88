"""IMAP4rev1 command parser (RFC 3501 §6, §9 and the extensions below): `CommandLine` in, `Command` out.

Implementation notes
- One parse function per command (as Stalwart does), each starting at the SP after the command name and
  ending with `Cursor.end()`: nothing may follow the last argument. The command table is `_COMMANDS`.
- Commands: RFC 3501 (CAPABILITY NOOP LOGOUT STARTTLS AUTHENTICATE LOGIN SELECT EXAMINE CREATE DELETE
  RENAME SUBSCRIBE UNSUBSCRIBE LIST LSUB STATUS APPEND CHECK CLOSE EXPUNGE SEARCH FETCH STORE COPY UID),
  IDLE (RFC 2177), UID EXPUNGE (RFC 4315), MOVE (RFC 6851), NAMESPACE (RFC 2342), ENABLE (RFC 5161), ID
  (RFC 2971), UNSELECT (RFC 3691), SASL-IR (RFC 4959), CONDSTORE (RFC 7162), ESEARCH (RFC 4731),
  LIST-EXTENDED (RFC 5258) with SPECIAL-USE (RFC 6154) and LIST-STATUS (RFC 5819).
- The parser knows no session state: whether a command is allowed now (not authenticated, selected...)
  and whether an extension was advertised or enabled are the session's checks.
- Errors: `ParseError(tag, text)` (reply BAD), `BadCharsetError` for SEARCH CHARSET (reply NO
  [BADCHARSET]). Nothing else escapes `parse_command` for any input (property- and fuzz-tested).
- Flags a client may set (STORE, APPEND): the five system flags of RFC 3501 §2.3.2 except \\Recent, and
  keywords. `\\*` (only meaningful in PERMANENTFLAGS, §7.1), `\\Recent` and unknown system flags are
  refused, so a client cannot invent system flags.
- ID (RFC 2971 §3.3): at most 30 pairs, field names of at most 30 octets, values of at most 1024 octets,
  no field twice.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

from gateway.imap.proto.command import (
    AppendArgs,
    Args,
    AuthenticateArgs,
    Command,
    CopyArgs,
    EnableArgs,
    ExpungeArgs,
    IdArgs,
    ListArgs,
    LoginArgs,
    MailboxArgs,
    RenameArgs,
    SelectArgs,
    StatusArgs,
    StatusItem,
    StoreArgs,
    StoreMode,
)
from gateway.imap.proto.fetch import parse_fetch, parse_modseq
from gateway.imap.proto.framing import CommandLine, CommandReader
from gateway.imap.proto.lexer import DQUOTE, LBRACE, LPAREN, RPAREN, BadCharsetError, Cursor, ParseError, show
from gateway.imap.proto.search import parse_search

__all__ = [
    "BadCharsetError",
    "ParseError",
    "is_idle_done",
    "parse_bytes",
    "parse_command",
    "parse_sasl_response",
]

_SETTABLE_SYSTEM_FLAGS = frozenset({"\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"})
_STATUS_ITEMS = {item.value: item for item in StatusItem}
_STORE_ITEMS = {f"{mode.value}{suffix}": (mode, bool(suffix)) for mode in StoreMode for suffix in ("", ".SILENT")}
_UID_COMMANDS = ("COPY", "MOVE", "FETCH", "SEARCH", "STORE", "EXPUNGE")
_LIST_SELECT = ("SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE")
_LIST_RETURN = ("SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS")
_ID_MAX_PAIRS, _ID_MAX_FIELD, _ID_MAX_VALUE = 30, 30, 1024


def parse_command(line: CommandLine) -> Command:
    """RFC 3501 §9 `command = tag SP (command-any / command-auth / command-nonauth / command-select) CRLF`."""
    c = Cursor(line)
    tag = c.tag_token()
    c.sp("command name")
    name = c.atom("command name").upper()
    uid = False
    if name == "UID":  # RFC 3501 §6.4.8 `uid = "UID" SP (copy / fetch / search / store)`, RFC 4315, RFC 6851
        uid = True
        c.sp("UID command")
        name = c.atom("UID command").upper()
        if name not in _UID_COMMANDS:
            raise c.error(f"invalid UID command {show(name)}: expected COPY, MOVE, FETCH, SEARCH, STORE or EXPUNGE")
        if name == "EXPUNGE":  # RFC 4315 §2.1 `uid-expunge = "UID" SP "EXPUNGE" SP sequence-set`
            c.sp("sequence set")
            sequence_set = c.sequence_set()
            c.end()
            return Command(tag, name, ExpungeArgs(sequence_set), uid=True)
    parse = _COMMANDS.get(name)
    if parse is None:
        raise c.error(f"unknown command {show(name)}")
    return Command(tag, name, parse(c), uid=uid)


def parse_bytes(data: bytes) -> Command:
    """Parse one command given as wire octets without its final CRLF (tests, transcripts)."""
    data += b"\r\n"
    reader = CommandReader(max_line=len(data), max_text=len(data), max_literal=len(data), max_command=len(data))
    reader.feed(data)
    lines = [event for event in reader.events() if isinstance(event, CommandLine)]
    if len(lines) != 1 or reader.pending:
        raise ValueError(f"expected one whole command, got {len(lines)}")
    return parse_command(lines[0])


def parse_sasl_response(data: bytes) -> bytes | None:
    """A client's line during AUTHENTICATE (RFC 3501 §6.2.2): base64, decoded; None when it is `*` (cancel:
    reply BAD). An empty line is an empty response."""
    if data == b"*":
        return None
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ParseError(None, "invalid base64 in authentication response") from None


def is_idle_done(data: bytes) -> bool:
    """RFC 2177 §3 `idle = "IDLE" CRLF "DONE"`: the line that ends IDLE (case-insensitive, as ABNF strings)."""
    return data.upper() == b"DONE"


# -- command-any, command-nonauth (RFC 3501 §6.1, §6.2) ----------------------------------------------


def _no_args(c: Cursor) -> None:
    c.end()


def _authenticate(c: Cursor) -> AuthenticateArgs:
    """RFC 3501 §9 `authenticate = "AUTHENTICATE" SP auth-type`, RFC 4959 §7 `[SP (base64 / "=")]`."""
    c.sp("authentication mechanism")
    mechanism = c.atom("authentication mechanism").upper()
    initial: bytes | None = None
    if c.maybe_sp():
        if c.at_end():
            raise c.error("missing initial response")
        encoded = c.atom("initial response")
        if encoded == "=":  # RFC 4959 §3: an empty initial response
            initial = b""
        else:
            try:
                initial = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise c.error("invalid base64 in initial response") from None
    c.end()
    return AuthenticateArgs(mechanism, initial)


def _login(c: Cursor) -> LoginArgs:
    """RFC 3501 §9 `login = "LOGIN" SP userid SP password`, both astrings."""
    c.sp("user name")
    userid = c.astring_text("user name")
    c.sp("password")
    password = c.astring_text("password")
    c.end()
    return LoginArgs(userid, password)


def _enable(c: Cursor) -> EnableArgs:
    """RFC 5161 §4 `enable = "ENABLE" 1*(SP capability)`."""
    c.sp("capability name")
    names = [c.atom("capability name").upper()]
    while c.maybe_sp():
        names.append(c.atom("capability name").upper())
    c.end()
    return EnableArgs(tuple(names))


def _id(c: Cursor) -> IdArgs:
    """RFC 2971 §4 `id = "ID" SPACE id_params_list`, `id_params_list = "(" #(string SPACE nstring) ")" / nil`."""
    c.sp("ID parameters")
    if c.next_word_is(b"NIL"):
        c.pos += 3
        c.end()
        return IdArgs(None)
    c.open("ID parameters")
    params: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    if c.peek() != RPAREN:
        while True:
            if c.peek() not in (DQUOTE, LBRACE):
                raise c.error("invalid ID field name: expected a quoted string or a literal")
            field = c.text(c.string("ID field name"), "ID field name")
            c.sp("ID field value")
            raw = c.nstring("ID field value")
            value = None if raw is None else c.text(raw, "ID field value")
            if len(field.encode()) > _ID_MAX_FIELD:
                raise c.error(f"ID field name longer than {_ID_MAX_FIELD} octets")
            if raw is not None and len(raw) > _ID_MAX_VALUE:
                raise c.error(f"ID field value longer than {_ID_MAX_VALUE} octets")
            if field.lower() in seen:
                raise c.error(f"duplicate ID field {show(field)}")
            seen.add(field.lower())
            params.append((field, value))
            if len(params) > _ID_MAX_PAIRS:
                raise c.error(f"more than {_ID_MAX_PAIRS} ID fields")
            if not c.maybe_sp():
                break
    c.close("ID parameters")
    c.end()
    return IdArgs(tuple(params))


# -- command-auth (RFC 3501 §6.3) ------------------------------------------------------------------


def _mailbox_only(c: Cursor) -> MailboxArgs:
    """CREATE / DELETE / SUBSCRIBE / UNSUBSCRIBE: `"<NAME>" SP mailbox` (RFC 3501 §9)."""
    c.sp("mailbox name")
    mailbox = c.mailbox()
    c.end()
    return MailboxArgs(mailbox)


def _select(c: Cursor) -> SelectArgs:
    """RFC 3501 §9 `select = "SELECT" SP mailbox` (EXAMINE alike), RFC 4466 §2.1 `[select-params]`,
    RFC 7162 §3.1.8 `select-param =/ condstore-param`."""
    c.sp("mailbox name")
    mailbox = c.mailbox()
    condstore = False
    if c.maybe_sp():
        c.open("SELECT parameters")
        if c.peek() == RPAREN:
            raise c.error("missing SELECT parameter")
        while True:
            param = c.atom("SELECT parameter").upper()
            if param == "CONDSTORE":
                condstore = True
            elif param == "QRESYNC":
                raise c.error("SELECT parameter QRESYNC is not supported")
            else:
                raise c.error(f"unknown SELECT parameter {show(param)}")
            if not c.maybe_sp():
                break
        c.close("SELECT parameters")
    c.end()
    return SelectArgs(mailbox, condstore)


def _rename(c: Cursor) -> RenameArgs:
    """RFC 3501 §9 `rename = "RENAME" SP mailbox SP mailbox`."""
    c.sp("mailbox name")
    source = c.mailbox()
    c.sp("new mailbox name")
    destination = c.mailbox("new mailbox name")
    c.end()
    return RenameArgs(source, destination)


def _status_items(c: Cursor, what: str) -> tuple[StatusItem, ...]:
    """RFC 3501 §9 `"(" status-att *(SP status-att) ")"`."""
    c.open(what)
    if c.peek() == RPAREN:
        raise c.error("missing STATUS item")
    items: list[StatusItem] = []
    while True:
        name = c.atom("STATUS item").upper()
        if name not in _STATUS_ITEMS:
            raise c.error(f"unknown STATUS item {show(name)}")
        items.append(_STATUS_ITEMS[name])
        if not c.maybe_sp():
            break
    c.close(what)
    return tuple(items)


def _status(c: Cursor) -> StatusArgs:
    """RFC 3501 §9 `status = "STATUS" SP mailbox SP "(" status-att *(SP status-att) ")"`."""
    c.sp("mailbox name")
    mailbox = c.mailbox()
    c.sp("STATUS items")
    items = _status_items(c, "STATUS items")
    c.end()
    return StatusArgs(mailbox, items)


def _list(c: Cursor) -> ListArgs:
    """RFC 5258 §6 `list = "LIST" [SP list-select-opts] SP mailbox SP mbox-or-pat [SP list-return-opts]`
    (RFC 3501 §9 `list = "LIST" SP mailbox SP list-mailbox` is the case without options)."""
    c.sp("mailbox reference")
    extended = False
    select: list[str] = []
    if c.peek() == LPAREN:  # list-select-opts
        extended = True
        c.open("LIST selection options")
        if c.peek() != RPAREN:
            while True:
                option = c.atom("LIST selection option").upper()
                if option not in _LIST_SELECT:
                    raise c.error(f"unknown LIST selection option {show(option)}")
                select.append(option)
                if not c.maybe_sp():
                    break
        c.close("LIST selection options")
        # RFC 5258 §3.1: RECURSIVEMATCH needs a base option (SUBSCRIBED; SPECIAL-USE, RFC 6154 §3)
        if "RECURSIVEMATCH" in select and not {"SUBSCRIBED", "SPECIAL-USE"} & set(select):
            raise c.error("LIST selection option RECURSIVEMATCH needs SUBSCRIBED or SPECIAL-USE")
        c.sp("mailbox reference")
    reference = c.mailbox("mailbox reference")
    c.sp("mailbox pattern")
    patterns: list[str] = []
    if c.peek() == LPAREN:  # RFC 5258 §6 `patterns = "(" list-mailbox *(SP list-mailbox) ")"`
        extended = True
        c.open("mailbox patterns")
        patterns.append(c.list_mailbox())
        while c.maybe_sp():
            patterns.append(c.list_mailbox())
        c.close("mailbox patterns")
    else:
        patterns.append(c.list_mailbox())
    returns: list[str] = []
    status: tuple[StatusItem, ...] = ()
    if c.maybe_sp():
        if not c.next_word_is(b"RETURN"):
            raise c.error("unexpected extra arguments")
        extended = True
        c.atom("RETURN")
        c.sp("LIST return options")  # RFC 5258 §6 `list-return-opts = "RETURN" SP "(" [return-option ...] ")"`
        c.open("LIST return options")
        if c.peek() != RPAREN:
            while True:
                option = c.atom("LIST return option").upper()
                if option not in _LIST_RETURN:
                    raise c.error(f"unknown LIST return option {show(option)}")
                if option == "STATUS":  # RFC 5819 §6 `return-option =/ "STATUS" SP "(" status-att ... ")"`
                    c.sp("STATUS items")
                    status = _status_items(c, "STATUS items")
                returns.append(option)
                if not c.maybe_sp():
                    break
        c.close("LIST return options")
    c.end()
    return ListArgs(reference, tuple(patterns), tuple(select), tuple(returns), status, extended)


def _lsub(c: Cursor) -> ListArgs:
    """RFC 3501 §9 `lsub = "LSUB" SP mailbox SP list-mailbox`."""
    c.sp("mailbox reference")
    reference = c.mailbox("mailbox reference")
    c.sp("mailbox pattern")
    pattern = c.list_mailbox()
    c.end()
    return ListArgs(reference, (pattern,))


def _settable_flags(c: Cursor, flags: list[str]) -> tuple[str, ...]:
    """Flags a client may store or append (see the module notes)."""
    for flag in flags:
        if flag == "\\*":
            raise c.error("\\* is not a flag")
        if flag == "\\Recent":
            raise c.error("\\Recent cannot be set")  # RFC 3501 §2.3.2
        if flag.startswith("\\") and flag not in _SETTABLE_SYSTEM_FLAGS:
            raise c.error(f"unknown system flag {show(flag)}")
    return tuple(flags)


def _append(c: Cursor) -> AppendArgs:
    """RFC 3501 §9 `append = "APPEND" SP mailbox [SP flag-list] [SP date-time] SP literal`."""
    c.sp("mailbox name")
    mailbox = c.mailbox()
    c.sp("message literal")
    flags: tuple[str, ...] = ()
    if c.peek() == LPAREN:
        flags = _settable_flags(c, c.flag_list("APPEND flags"))
        c.sp("message literal")
    internal_date = None
    if c.peek() == DQUOTE:
        internal_date = c.date_time("APPEND date-time")
        c.sp("message literal")
    if c.peek() != LBRACE:
        raise c.error("invalid message: expected a literal")
    message = c.literal("message")
    c.end()
    return AppendArgs(mailbox, message, flags, internal_date)


# -- command-select (RFC 3501 §6.4) ----------------------------------------------------------------


def _store(c: Cursor) -> StoreArgs:
    """RFC 3501 §9 `store = "STORE" SP sequence-set SP store-att-flags`, RFC 7162 §3.1.3
    `[SP "(" "UNCHANGEDSINCE" SP mod-sequence-valzer ")"]` before the item;
    `store-att-flags = (["+" / "-"] "FLAGS" [".SILENT"]) SP (flag-list / (flag *(SP flag)))`."""
    c.sp("sequence set")
    sequence_set = c.sequence_set()
    c.sp("STORE item")
    unchanged_since = None
    if c.peek() == LPAREN:  # RFC 4466 §2.5 store-modifiers
        c.open("STORE modifiers")
        if c.peek() == RPAREN:
            raise c.error("missing STORE modifier")
        while True:
            name = c.atom("STORE modifier").upper()
            if name != "UNCHANGEDSINCE":
                raise c.error(f"unknown STORE modifier {show(name)}")
            if unchanged_since is not None:
                raise c.error("duplicate STORE modifier UNCHANGEDSINCE")
            c.sp("UNCHANGEDSINCE value")
            unchanged_since = parse_modseq(c, "UNCHANGEDSINCE value", zero=True)
            if not c.maybe_sp():
                break
        c.close("STORE modifiers")
        c.sp("STORE item")
    item = c.atom("STORE item").upper()
    if item not in _STORE_ITEMS:
        raise c.error(f"invalid STORE item {show(item)}: expected [+|-]FLAGS[.SILENT]")
    mode, silent = _STORE_ITEMS[item]
    c.sp("flags")
    if c.peek() == LPAREN:
        flags = c.flag_list("flag list")
    else:
        flags = [c.flag()]
        while c.maybe_sp():
            flags.append(c.flag())
    c.end()
    return StoreArgs(sequence_set, mode, _settable_flags(c, flags), silent, unchanged_since)


def _copy(c: Cursor) -> CopyArgs:
    """RFC 3501 §9 `copy = "COPY" SP sequence-set SP mailbox`; RFC 6851 §4 `move` alike."""
    c.sp("sequence set")
    sequence_set = c.sequence_set()
    c.sp("mailbox name")
    mailbox = c.mailbox()
    c.end()
    return CopyArgs(sequence_set, mailbox)


_COMMANDS: dict[str, Callable[[Cursor], Args | None]] = {
    # RFC 3501 §6.1 command-any
    "CAPABILITY": _no_args,
    "NOOP": _no_args,
    "LOGOUT": _no_args,
    # RFC 3501 §6.2 command-nonauth
    "STARTTLS": _no_args,
    "AUTHENTICATE": _authenticate,
    "LOGIN": _login,
    # RFC 3501 §6.3 command-auth
    "SELECT": _select,
    "EXAMINE": _select,
    "CREATE": _mailbox_only,
    "DELETE": _mailbox_only,
    "RENAME": _rename,
    "SUBSCRIBE": _mailbox_only,
    "UNSUBSCRIBE": _mailbox_only,
    "LIST": _list,
    "LSUB": _lsub,
    "STATUS": _status,
    "APPEND": _append,
    # RFC 3501 §6.4 command-select
    "CHECK": _no_args,
    "CLOSE": _no_args,
    "EXPUNGE": _no_args,
    "SEARCH": parse_search,
    "FETCH": parse_fetch,
    "STORE": _store,
    "COPY": _copy,
    # extensions
    "IDLE": _no_args,  # RFC 2177 §3
    "MOVE": _copy,  # RFC 6851 §3.1
    "NAMESPACE": _no_args,  # RFC 2342 §5
    "ENABLE": _enable,  # RFC 5161 §3.1
    "ID": _id,  # RFC 2971 §3.1
    "UNSELECT": _no_args,  # RFC 3691 §2
}
