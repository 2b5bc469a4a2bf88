"""What a parsed IMAP command is: `Command(tag, name, uid, args)` and the typed arguments of each command.

Implementation notes
- `name` is the upper-case command name; `UID FETCH` is `name="FETCH", uid=True` (RFC 3501 §6.4.8), likewise
  UID COPY / MOVE (RFC 6851) / SEARCH / STORE / EXPUNGE (RFC 4315 §2.1). Commands without arguments
  (CAPABILITY, NOOP, LOGOUT, STARTTLS, CHECK, CLOSE, EXPUNGE, UNSELECT, IDLE, NAMESPACE) have `args=None`.
- Mailbox names are the names *as sent* (str): modified UTF-7 (RFC 3501 §5.1.3) unless the client enabled
  UTF8=ACCEPT (RFC 6855), so decoding with `utf7.decode` is the session's choice, not the parser's. The
  name `INBOX` is case-insensitive and is always given as "INBOX" (RFC 3501 §5.1). Control characters are
  refused in mailbox names.
- Flags are str: system flags in their canonical case (`\\Seen`), keywords as sent (RFC 3501 §2.3.2).
- Header field names (FETCH HEADER.FIELDS, SEARCH HEADER) are upper-cased: they match case-insensitively
  (RFC 5322 §1.2.2) and the FETCH response echoes them so (as Dovecot does).
- Secrets (LOGIN password, AUTHENTICATE initial response) and message bodies are left out of `repr`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from gateway.imap.proto.sequence import SequenceSet

__all__ = [
    "AndKey",
    "AppendArgs",
    "Args",
    "AuthenticateArgs",
    "BodySection",
    "Command",
    "CopyArgs",
    "DateKey",
    "EnableArgs",
    "ExpungeArgs",
    "FetchArgs",
    "FetchAtt",
    "FetchItem",
    "HeaderKey",
    "IdArgs",
    "KeywordKey",
    "ListArgs",
    "LoginArgs",
    "MailboxArgs",
    "ModSeqKey",
    "NotKey",
    "OrKey",
    "Partial",
    "RenameArgs",
    "ReturnOption",
    "SearchArgs",
    "SearchKey",
    "Section",
    "SectionText",
    "SelectArgs",
    "SeqKey",
    "SimpleKey",
    "SizeKey",
    "StatusArgs",
    "StatusItem",
    "StoreArgs",
    "StoreMode",
    "TextKey",
]


# -- STATUS, STORE ----------------------------------------------------------------------------------


class StatusItem(StrEnum):
    """RFC 3501 §6.3.10 `status-att`; HIGHESTMODSEQ from RFC 7162 §3.1.8."""

    MESSAGES = "MESSAGES"
    RECENT = "RECENT"
    UIDNEXT = "UIDNEXT"
    UIDVALIDITY = "UIDVALIDITY"
    UNSEEN = "UNSEEN"
    HIGHESTMODSEQ = "HIGHESTMODSEQ"


class StoreMode(StrEnum):
    """RFC 3501 §6.4.6: FLAGS replaces, +FLAGS adds, -FLAGS removes."""

    REPLACE = "FLAGS"
    ADD = "+FLAGS"
    REMOVE = "-FLAGS"


# -- FETCH ------------------------------------------------------------------------------------------


class FetchAtt(StrEnum):
    """RFC 3501 §6.4.5 fetch attributes without a section; MODSEQ from RFC 7162 §3.1.4.1.

    `BODY` here is the non-extensible BODYSTRUCTURE; `BODY[...]` is a `BodySection`.
    """

    ENVELOPE = "ENVELOPE"
    FLAGS = "FLAGS"
    INTERNALDATE = "INTERNALDATE"
    RFC822 = "RFC822"
    RFC822_HEADER = "RFC822.HEADER"
    RFC822_SIZE = "RFC822.SIZE"
    RFC822_TEXT = "RFC822.TEXT"
    BODY = "BODY"
    BODYSTRUCTURE = "BODYSTRUCTURE"
    UID = "UID"
    MODSEQ = "MODSEQ"


class SectionText(StrEnum):
    """RFC 3501 §9 `section-msgtext` / `section-text`."""

    HEADER = "HEADER"
    HEADER_FIELDS = "HEADER.FIELDS"
    HEADER_FIELDS_NOT = "HEADER.FIELDS.NOT"
    TEXT = "TEXT"
    MIME = "MIME"


@dataclass(frozen=True, slots=True)
class Section:
    """RFC 3501 §6.4.5 `section-spec`: `[]` is `Section()`, `[1.2.HEADER.FIELDS (FROM)]` is
    `Section(part=(1, 2), text=SectionText.HEADER_FIELDS, fields=("FROM",))`."""

    part: tuple[int, ...] = ()
    text: SectionText | None = None
    fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Partial:
    """RFC 3501 §6.4.5 `<start.count>`."""

    start: int
    count: int


@dataclass(frozen=True, slots=True)
class BodySection:
    """`BODY[section]<partial>` or, with `peek`, `BODY.PEEK[...]` (which does not set \\Seen)."""

    section: Section = Section()
    peek: bool = False
    partial: Partial | None = None


FetchItem = FetchAtt | BodySection


# -- SEARCH (RFC 3501 §6.4.4, RFC 7162 §3.1.5) ------------------------------------------------------

SimpleKeyName = Literal[
    "ALL",
    "ANSWERED",
    "DELETED",
    "DRAFT",
    "FLAGGED",
    "NEW",
    "OLD",
    "RECENT",
    "SEEN",
    "UNANSWERED",
    "UNDELETED",
    "UNDRAFT",
    "UNFLAGGED",
    "UNSEEN",
]
TextKeyName = Literal["BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"]
DateKeyName = Literal["BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"]
SizeKeyName = Literal["LARGER", "SMALLER"]
EntryType = Literal["priv", "shared", "all"]
ReturnOption = Literal["MIN", "MAX", "ALL", "COUNT"]


@dataclass(frozen=True, slots=True)
class SimpleKey:
    """A key without argument: ALL, SEEN, UNSEEN, NEW, OLD, RECENT ..."""

    name: SimpleKeyName


@dataclass(frozen=True, slots=True)
class TextKey:
    """BCC / BODY / CC / FROM / SUBJECT / TEXT / TO <string>: substring, case-insensitive."""

    name: TextKeyName
    value: str


@dataclass(frozen=True, slots=True)
class HeaderKey:
    """HEADER <field-name> <string>; `field` upper-cased."""

    field: str
    value: str


@dataclass(frozen=True, slots=True)
class KeywordKey:
    """KEYWORD <flag> (present=True) or UNKEYWORD <flag> (present=False)."""

    keyword: str
    present: bool = True


@dataclass(frozen=True, slots=True)
class DateKey:
    """BEFORE / ON / SINCE (internal date) and SENTBEFORE / SENTON / SENTSINCE (Date: header)."""

    name: DateKeyName
    date: dt.date


@dataclass(frozen=True, slots=True)
class SizeKey:
    """LARGER / SMALLER <n> (RFC822.SIZE)."""

    name: SizeKeyName
    size: int


@dataclass(frozen=True, slots=True)
class SeqKey:
    """A sequence set (uid=False) or UID <sequence set> (uid=True)."""

    set: SequenceSet
    uid: bool = False


@dataclass(frozen=True, slots=True)
class ModSeqKey:
    """RFC 7162 §3.1.5 MODSEQ ["/flags/<flag>" priv|shared|all] <mod-sequence-valzer>."""

    modseq: int
    entry: str | None = None
    entry_type: EntryType | None = None


@dataclass(frozen=True, slots=True)
class NotKey:
    key: SearchKey


@dataclass(frozen=True, slots=True)
class OrKey:
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class AndKey:
    """Several keys that must all match: a parenthesised group, or the keys of the command."""

    keys: tuple[SearchKey, ...]


SearchKey = (
    SimpleKey | TextKey | HeaderKey | KeywordKey | DateKey | SizeKey | SeqKey | ModSeqKey | NotKey | OrKey | AndKey
)


# -- per-command arguments --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoginArgs:
    """RFC 3501 §6.2.3 LOGIN userid password."""

    userid: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class AuthenticateArgs:
    """RFC 3501 §6.2.2 AUTHENTICATE mechanism, with the RFC 4959 initial response decoded (b"" for `=`)."""

    mechanism: str
    initial_response: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class MailboxArgs:
    """CREATE / DELETE / SUBSCRIBE / UNSUBSCRIBE mailbox (RFC 3501 §6.3.3, 6.3.4, 6.3.6, 6.3.7)."""

    mailbox: str


@dataclass(frozen=True, slots=True)
class SelectArgs:
    """SELECT / EXAMINE mailbox [(CONDSTORE)] (RFC 3501 §6.3.1, 6.3.2; RFC 7162 §3.1.8)."""

    mailbox: str
    condstore: bool = False


@dataclass(frozen=True, slots=True)
class RenameArgs:
    """RFC 3501 §6.3.5 RENAME existing new."""

    source: str
    destination: str


@dataclass(frozen=True, slots=True)
class ListArgs:
    """LIST (RFC 3501 §6.3.8, LIST-EXTENDED RFC 5258, SPECIAL-USE RFC 6154, LIST-STATUS RFC 5819) and LSUB.

    `extended` is True when the command used LIST-EXTENDED syntax (selection options, several patterns,
    or RETURN). Options are upper-case names; `status_items` are those of `RETURN (STATUS (...))`.
    """

    reference: str
    patterns: tuple[str, ...]
    select_options: tuple[str, ...] = ()
    return_options: tuple[str, ...] = ()
    status_items: tuple[StatusItem, ...] = ()
    extended: bool = False


@dataclass(frozen=True, slots=True)
class StatusArgs:
    """RFC 3501 §6.3.10 STATUS mailbox (items)."""

    mailbox: str
    items: tuple[StatusItem, ...]


@dataclass(frozen=True, slots=True)
class AppendArgs:
    """RFC 3501 §6.3.11 APPEND mailbox [(flags)] ["date-time"] literal."""

    mailbox: str
    message: bytes = field(repr=False)
    flags: tuple[str, ...] = ()
    internal_date: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class SearchArgs:
    """SEARCH [RETURN (...)] [CHARSET x] keys (RFC 3501 §6.4.4, ESEARCH RFC 4731 §3.1).

    `charset` is the upper-cased charset named (None when absent: US-ASCII); `return_options` is None for
    a plain SEARCH (answer `* SEARCH`) and a tuple for ESEARCH (`RETURN ()` is `("ALL",)`, §3.1).
    """

    key: SearchKey
    charset: str | None = None
    return_options: tuple[ReturnOption, ...] | None = None


@dataclass(frozen=True, slots=True)
class FetchArgs:
    """RFC 3501 §6.4.5 FETCH set items, with the RFC 7162 §3.1.4.1 CHANGEDSINCE modifier.

    Macros are expanded (ALL, FAST, FULL). CHANGEDSINCE implies MODSEQ and UID FETCH implies UID in the
    response: the server adds those, the parser gives the items as asked.
    """

    sequence_set: SequenceSet
    items: tuple[FetchItem, ...]
    changed_since: int | None = None


@dataclass(frozen=True, slots=True)
class StoreArgs:
    """RFC 3501 §6.4.6 STORE set [(UNCHANGEDSINCE n)] [+|-]FLAGS[.SILENT] flags (RFC 7162 §3.1.3)."""

    sequence_set: SequenceSet
    mode: StoreMode
    flags: tuple[str, ...]
    silent: bool = False
    unchanged_since: int | None = None


@dataclass(frozen=True, slots=True)
class CopyArgs:
    """COPY (RFC 3501 §6.4.7) and MOVE (RFC 6851 §3.1): set mailbox."""

    sequence_set: SequenceSet
    mailbox: str


@dataclass(frozen=True, slots=True)
class ExpungeArgs:
    """UID EXPUNGE set (RFC 4315 §2.1). Plain EXPUNGE has no arguments."""

    sequence_set: SequenceSet


@dataclass(frozen=True, slots=True)
class EnableArgs:
    """RFC 5161 §3.1 ENABLE capabilities (upper-cased)."""

    capabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class IdArgs:
    """RFC 2971 §3.1 ID: field/value pairs, or None for `ID NIL`. Field names keep their case."""

    params: tuple[tuple[str, str | None], ...] | None


Args = (
    LoginArgs
    | AuthenticateArgs
    | MailboxArgs
    | SelectArgs
    | RenameArgs
    | ListArgs
    | StatusArgs
    | AppendArgs
    | SearchArgs
    | FetchArgs
    | StoreArgs
    | CopyArgs
    | ExpungeArgs
    | EnableArgs
    | IdArgs
)


@dataclass(frozen=True, slots=True)
class Command:
    """One parsed command. See the module notes for `name`, `uid` and `args`."""

    tag: str
    name: str
    args: Args | None = None
    uid: bool = False
