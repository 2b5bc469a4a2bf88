"""CAPABILITY, NOOP/CHECK, LOGOUT (RFC 3501 §6.1, §6.4.1), ID (RFC 2971), ENABLE (RFC 5161), NAMESPACE (RFC 2342)."""

from __future__ import annotations

from gateway.imap.commands import Reply
from gateway.imap.proto import serialize as ser
from gateway.imap.proto.command import Command, EnableArgs
from gateway.imap.session import LOGOUT, Session

ENABLEABLE = frozenset({"CONDSTORE"})


async def capability(s: Session, cmd: Command) -> Reply:
    s.untagged("CAPABILITY " + " ".join(s.service.capabilities(s)))
    return None


async def noop(s: Session, cmd: Command) -> Reply:
    return None  # the session's sync after the command is the point (RFC 3501 §6.1.2)


async def logout(s: Session, cmd: Command) -> Reply:
    s.writer.write(ser.untagged_status("BYE", "mssgw logging out"))
    s.state = LOGOUT
    return "LOGOUT completed"


async def id_(s: Session, cmd: Command) -> Reply:
    # RFC 2971 §3.2: the server's identity; the client's is not recorded (it may identify the user).
    s.untagged(b'ID ("name" "mssgw" "vendor" "mssgw")')
    return None


async def enable(s: Session, cmd: Command) -> Reply:
    assert isinstance(cmd.args, EnableArgs)
    now = [c for c in cmd.args.capabilities if c in ENABLEABLE and c not in s.enabled]
    s.enabled.update(now)
    if "CONDSTORE" in now and s.selection is not None:
        s.selection.condstore = True
    s.untagged(("ENABLED " + " ".join(now)).rstrip())
    return None


async def namespace(s: Session, cmd: Command) -> Reply:
    s.untagged(b'NAMESPACE (("" "/")) NIL NIL')  # one personal namespace, no shared ones (RFC 2342 §5)
    return None
