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
        append,
        authenticate,
        capability,
        close,
        copy,
        create,
        delete,
        enable,
        expunge,
        fetch,
        id,
        idle,
        login,
        logout,
        move,
        namespace,
        noop,
        rename,
        search,
        select,
        starttls,
        status,
        store,
        subscribe,
        unselect,
    )
    from gateway.imap.commands import list as list_

    return {
        "CAPABILITY": Handler(ANY, capability.run),
        "NOOP": Handler(ANY, noop.run),
        "LOGOUT": Handler(ANY, logout.run, None),
        "ID": Handler(ANY, id.run),
        "ENABLE": Handler(AUTHED, enable.run),
        "NAMESPACE": Handler(AUTHED, namespace.run),
        "CHECK": Handler(ONLY_SELECTED, noop.run),
        "STARTTLS": Handler(ONLY_NOT_AUTH, starttls.run, None),
        "LOGIN": Handler(ONLY_NOT_AUTH, login.run, None),
        "AUTHENTICATE": Handler(ONLY_NOT_AUTH, authenticate.run, None),
        "SELECT": Handler(AUTHED, select.run, None),
        "EXAMINE": Handler(AUTHED, select.run, None),
        "CREATE": Handler(AUTHED, create.run),
        "DELETE": Handler(AUTHED, delete.run),
        "RENAME": Handler(AUTHED, rename.run),
        "SUBSCRIBE": Handler(AUTHED, subscribe.run),
        "UNSUBSCRIBE": Handler(AUTHED, subscribe.run),
        "LIST": Handler(AUTHED, list_.run),
        "LSUB": Handler(AUTHED, list_.run),
        "STATUS": Handler(AUTHED, status.run),
        "CLOSE": Handler(ONLY_SELECTED, close.run, None),
        "UNSELECT": Handler(ONLY_SELECTED, unselect.run, None),
        "EXPUNGE": Handler(ONLY_SELECTED, expunge.run),
        "STORE": Handler(ONLY_SELECTED, store.run, False),
        "FETCH": Handler(ONLY_SELECTED, fetch.run, False),
        "COPY": Handler(ONLY_SELECTED, copy.run),
        "MOVE": Handler(ONLY_SELECTED, move.run),
        "IDLE": Handler(AUTHED, idle.run),
        "APPEND": Handler(AUTHED, append.run),
        "SEARCH": Handler(ONLY_SELECTED, search.run, False),
    }


HANDLERS = _registry()
