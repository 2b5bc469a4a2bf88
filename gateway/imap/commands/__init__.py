"""IMAP commands, one module each: the states a command runs in, what it does, and how it syncs.

`sync` says what the session reports of other sessions' changes before the tagged OK: None nothing,
False everything but EXPUNGE (FETCH, STORE, SEARCH: RFC 3501 §7.4.1), True everything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.imap.session import AUTH, LOGOUT, NOT_AUTH, SELECTED, _Sent

if TYPE_CHECKING:
    from gateway.imap.proto.command import Command
    from gateway.imap.session import Session

Reply = str | tuple[str, str] | _Sent | None  # the OK text, optionally with its response code
Run = Callable[["Session", "Command"], Awaitable[Reply]]

ANY = frozenset({NOT_AUTH, AUTH, SELECTED})
AUTHED = frozenset({AUTH, SELECTED})
ONLY_SELECTED = frozenset({SELECTED})
ONLY_NOT_AUTH = frozenset({NOT_AUTH})
_ = LOGOUT


@dataclass(frozen=True)
class Handler:
    states: frozenset[str]
    run: Run
    sync: bool | None = True


def _registry() -> dict[str, Handler]:
    from gateway.imap.commands import (
        any_state,
        append,
        authenticate,
        close,
        copy,
        expunge,
        fetch,
        folders,
        idle,
        login,
        search,
        select,
        starttls,
        status,
        store,
    )

    return {
        "CAPABILITY": Handler(ANY, any_state.capability),
        "NOOP": Handler(ANY, any_state.noop),
        "LOGOUT": Handler(ANY, any_state.logout, None),
        "ID": Handler(ANY, any_state.id_),
        "ENABLE": Handler(AUTHED, any_state.enable),
        "NAMESPACE": Handler(AUTHED, any_state.namespace),
        "CHECK": Handler(ONLY_SELECTED, any_state.noop),
        "STARTTLS": Handler(ONLY_NOT_AUTH, starttls.run, None),
        "LOGIN": Handler(ONLY_NOT_AUTH, login.run, None),
        "AUTHENTICATE": Handler(ONLY_NOT_AUTH, authenticate.run, None),
        "SELECT": Handler(AUTHED, select.run, None),
        "EXAMINE": Handler(AUTHED, select.run, None),
        "CREATE": Handler(AUTHED, folders.create),
        "DELETE": Handler(AUTHED, folders.delete),
        "RENAME": Handler(AUTHED, folders.rename),
        "SUBSCRIBE": Handler(AUTHED, folders.subscribe),
        "UNSUBSCRIBE": Handler(AUTHED, folders.subscribe),
        "LIST": Handler(AUTHED, folders.list_),
        "LSUB": Handler(AUTHED, folders.list_),
        "STATUS": Handler(AUTHED, status.run),
        "CLOSE": Handler(ONLY_SELECTED, close.close, None),
        "UNSELECT": Handler(ONLY_SELECTED, close.unselect, None),
        "EXPUNGE": Handler(ONLY_SELECTED, expunge.run),
        "STORE": Handler(ONLY_SELECTED, store.run, False),
        "FETCH": Handler(ONLY_SELECTED, fetch.run, False),
        "COPY": Handler(ONLY_SELECTED, copy.run),
        "MOVE": Handler(ONLY_SELECTED, copy.run),
        "IDLE": Handler(AUTHED, idle.run),
        "APPEND": Handler(AUTHED, append.run),
        "SEARCH": Handler(ONLY_SELECTED, search.run, False),
    }


HANDLERS = _registry()
