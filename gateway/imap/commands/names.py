"""Folder names between the wire (modified UTF-7, RFC 3501 §5.1.3) and the store, and in response texts."""

from __future__ import annotations

from gateway.imap.proto import serialize as ser
from gateway.imap.proto import utf7
from gateway.imap.session import Bad, No


def name_of(wire: str) -> str:
    """A folder name as stored (Unicode) from its wire form."""
    try:
        return utf7.decode(wire)
    except ValueError as exc:
        raise Bad(f"invalid mailbox name: {exc}") from None


def wire(name: str) -> bytes:
    return ser.mailbox(utf7.encode(name))


def shown(name: str) -> str:
    """A folder name inside a response text: its wire form, quoted when it must be. Response texts are 7-bit
    (RFC 3501 §9 `TEXT-CHAR`): "Résultats" is shown "R&AOk-sultats", as the client named it."""
    text = wire(name)
    return text.decode("ascii") if b"\r" not in text else ascii(name)


def said(exc: Exception) -> str:
    """The store's message for a response text, its folder names (and any other non-ASCII) in modified UTF-7."""
    return utf7.encode(str(exc))


def no_folder(name: str) -> No:
    return No(f"no folder {shown(name)}", "NONEXISTENT")
