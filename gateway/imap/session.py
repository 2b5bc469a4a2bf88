"""One IMAP connection: the state machine of RFC 3501 §3, command dispatch, and mailbox updates.

Implementation notes
- States: not authenticated → authenticated → selected → logout (RFC 3501 §3). Each command module
  declares the states it runs in; anything else is `BAD` (a command the state does not allow).
- One error boundary per command: a handler raises `No` / `Bad` (typed replies) or a store error; any
  other exception becomes `NO [SERVERBUG]`, is logged without content and audited, and the session goes
  on. Malformed input is the parser's `ParseError` → `BAD` with its text.
- The selected folder is mirrored in `Selection` (UIDs in order, flags, modseqs): sequence numbers are
  positions in it (RFC 3501 §2.3.1.2). `sync()` brings it up to date with the store and sends what
  changed: `EXPUNGE` (only where allowed: never during FETCH, STORE, SEARCH — RFC 3501 §7.4.1), `EXISTS`,
  `RECENT`, and `FETCH (FLAGS)` for flags changed by other sessions.
- Message bodies are audited as `imap.fetch.body` (folder, UIDs, Message-IDs), never logged.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from gateway.audit.events import AuditEvent
from gateway.audit.oplog import get_logger
from gateway.imap.proto import serialize as ser
from gateway.imap.proto.framing import CommandLine, CommandReader, Continuation, FramingError, RawLine
from gateway.imap.proto.lexer import BadCharsetError, ParseError
from gateway.imap.proto.parser import parse_command
from gateway.imap.proto.sequence import SequenceSet
from gateway.store.mailstore import FolderGone, FolderInfo, MessageMeta

if TYPE_CHECKING:
    from gateway.imap.server import ImapService

NOT_AUTH, AUTH, SELECTED, LOGOUT = "not authenticated", "authenticated", "selected", "logout"
PRE_LOGIN_LITERAL = 8192
PRE_LOGIN_LINE = 16 * 1024 + 256  # AUTHENTICATE with a bearer token: 12,288 octets of SASL message in base64


class No(Exception):
    """A refused command: `<tag> NO [code] text` (RFC 3501 §7.1.2)."""

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.text, self.code = text, code


class Bad(Exception):
    """A protocol error: `<tag> BAD [code] text` (RFC 3501 §7.1.3)."""

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.text, self.code = text, code


class Closed(Exception):
    """The client went away or the session must end."""


OUT_BUFFER = 256 << 10
"""Octets of responses gathered before they are written without waiting for the tagged reply."""


class _Sent:
    """A handler's result meaning: the tagged reply is already sent (STARTTLS, AUTHENTICATE)."""


SENT = _Sent()


@dataclass
class Selection:
    folder: FolderInfo
    read_only: bool
    uids: list[int] = field(default_factory=list)
    meta: dict[int, MessageMeta] = field(default_factory=dict)
    recent: set[int] = field(default_factory=set)
    highestmodseq: int = 0
    condstore: bool = False

    def load(self, messages: Iterable[MessageMeta]) -> None:
        self.meta = {m.uid: m for m in messages}
        self.uids = sorted(self.meta)

    def seq(self, uid: int) -> int:
        """The sequence number of a UID in the session's view (1-based)."""
        return bisect.bisect_left(self.uids, uid) + 1

    def resolve(self, seqset: SequenceSet, *, uid: bool) -> list[int]:
        """UIDs addressed by a set (RFC 3501 §6.4.8: a UID set may name UIDs that do not exist; a sequence
        number past the last message is an error, §9 `seq-number`)."""
        if uid:
            return seqset.select(self.uids)
        count = len(self.uids)
        if count == 0 or seqset.highest_explicit > count:
            raise Bad(f"invalid message sequence number: the folder has {count} messages")
        return [self.uids[n - 1] for n in seqset.select(range(1, count + 1))]


BYE: dict[str, tuple[str | None, str]] = {
    # RFC 5530 §3: UNAVAILABLE, the server cannot serve now; clients connect again (to another node).
    "node-stopping": ("UNAVAILABLE", "This server is stopping: connect again"),
}
"""The BYE a revoked session ends with, by reason; otherwise its mailbox was disabled."""


class Session:
    def __init__(
        self,
        service: ImapService,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        tls: bool,
        client: tuple[str, int] | None = None,
    ) -> None:
        self.service = service
        self.node = service.node
        self.reader = reader
        self.writer = writer
        self.tls = tls
        self.state = NOT_AUTH
        self.user: str | None = None
        self.user_kind: str | None = None
        self.selection: Selection | None = None
        self.enabled: set[str] = set()
        self.busy = False  # a command is running: a revocation waits for its end (or IDLE's next look)
        self.revoked: str | None = None  # why the session must end (an admin disabled the mailbox)
        self.wake = asyncio.Event()  # set for an IDLE session: its folder changed elsewhere, or it is revoked
        # The real client when the connection came through a load balancer (PROXY protocol).
        peer = client or writer.get_extra_info("peername") or ("?", 0)
        self.client_ip = str(peer[0])
        self.frames = self.new_reader()
        self._out: list[bytes] = []  # responses not written yet (see write())
        self._pending = 0  # their octets
        self.log = get_logger(component="imap", node=service.cfg.node.name)
        self._login_by = asyncio.get_running_loop().time() + service.cfg.imap.login_deadline
        # Seconds the command under way has left, as of _budget_at ([imap] min_command_rate); None between
        # commands.
        self._budget: float | None = None
        self._budget_at = 0.0

    def new_reader(self) -> CommandReader:
        # Before login a literal can only be a user name or a password: a client that has not logged in
        # cannot make the server hold megabytes (APPEND's limit applies once authenticated).
        if self.state == NOT_AUTH:
            return CommandReader(
                max_line=PRE_LOGIN_LINE, max_literal=PRE_LOGIN_LITERAL, max_command=PRE_LOGIN_LITERAL * 4
            )
        return CommandReader(max_literal=self.service.cfg.smtp.max_message_size)

    def buffered(self) -> bool:
        """Whether octets the framing has not seen yet wait in the stream (STARTTLS must find none)."""
        # asyncio's StreamReader has no public way to ask; its buffer is a bytearray.
        return bool(getattr(self.reader, "_buffer", b""))

    def client_certificate(self) -> bytes | None:
        """The DER of the TLS client certificate, when the client sent one (verified in the handshake)."""
        ssl_object = self.writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        return der or None

    # -- output ----------------------------------------------------------------------------------

    # A command's responses are gathered and go out with its tagged reply, in one TLS record and one send
    # where they fit: a small FETCH was three writes (each an encryption and a system call), now one.
    # Anything that waits for the client (a continuation request, IDLE) goes through send(), which flushes.

    def write(self, data: bytes) -> None:
        if self._pending + len(data) < OUT_BUFFER:
            self._out.append(data)
            self._pending += len(data)
            return
        # Past OUT_BUFFER (a FETCH of many messages, a STORE or an expunge over thousands) what waits goes
        # to the transport now, in order; a large piece goes as it is, not copied into a join.
        self._write_out()
        if len(data) >= OUT_BUFFER:
            self.writer.write(data)
        else:
            self._out.append(data)
            self._pending = len(data)

    def _write_out(self) -> None:
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self._pending = 0
            self.writer.write(data)

    def untagged(self, data: bytes | str) -> None:
        self.write(ser.untagged(data))

    async def flush(self) -> None:
        self._write_out()
        await self.writer.drain()

    async def send(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self.write(chunk)
        await self.flush()

    # -- input -----------------------------------------------------------------------------------

    async def _fill(self) -> None:
        clock = asyncio.get_running_loop().time
        seconds = self._read_timeout(clock())
        try:
            if seconds <= 0:  # a deadline is past: even octets already buffered are not read
                raise TimeoutError
            async with asyncio.timeout(seconds):  # not wait_for: 3.11's can swallow a cancellation
                data = await self.reader.read(65536)
        except TimeoutError:
            await self._timed_out(clock())
            raise Closed from None
        except (ConnectionError, ssl.SSLError):
            raise Closed from None
        if not data:
            raise Closed
        if self._budget is not None:
            cfg, now = self.service.cfg.imap, clock()
            credit = len(data) / cfg.min_command_rate if cfg.min_command_rate else cfg.command_timeout
            self._budget = min(cfg.command_timeout, self._left(now) + credit)
            self._budget_at = now
        self.frames.feed(data)

    def _read_timeout(self, now: float) -> float:
        # RFC 3501 §5.4: at least 30 minutes once authenticated; less before (a login takes seconds), and
        # no later than [imap] login_deadline after the connection, however busy the client keeps it.
        cfg = self.service.cfg.imap
        if self.state == NOT_AUTH:
            return max(0.0, min(cfg.login_timeout, self._login_by - now))
        if self.frames.pending:
            # Mid-command (a literal under way, a line not ended): [imap] command_timeout of silence, and
            # the command must average [imap] min_command_rate, as a DATA does in SMTP.
            if self._budget is None:
                self._budget, self._budget_at = cfg.command_timeout, now
            return self._left(now)
        return cfg.autologout

    def _left(self, now: float) -> float:
        assert self._budget is not None
        return max(0.0, self._budget - (now - self._budget_at))

    def _command_ended(self) -> None:
        self._budget = None

    async def _timed_out(self, now: float) -> None:
        cfg = self.service.cfg.imap
        if self.state == NOT_AUTH:
            late = now >= self._login_by
            text = "Autologout; no login in time" if late else "Autologout; idle for too long"
            await self.send(ser.untagged_status("BYE", text))
            return
        # A budget below command_timeout means octets came, too slowly (as Postfix's smtpd_min_data_rate).
        slow = self._budget is not None and self._budget < cfg.command_timeout
        with contextlib.suppress(ConnectionError, ssl.SSLError):  # audited even if the client is gone
            text = "Autologout; command too slow" if slow else "Autologout; idle for too long"
            await self.send(ser.untagged_status("BYE", text))
        if slow:
            reason = "command rate below [imap] min_command_rate"
        else:
            reason = f"client silent for [imap] {'autologout' if self._budget is None else 'command_timeout'}"
        await self.audit(AuditEvent.IMAP_LOGOUT, result="timeout", reason=reason)

    async def read_line(self) -> bytes:
        """The next line, raw (AUTHENTICATE responses, IDLE's DONE)."""
        self.frames.expect_line()
        while True:
            event = self.frames.next_event()
            if event is None:
                await self._fill()
                continue
            if isinstance(event, RawLine):
                self._command_ended()
                return event.data
            if isinstance(event, FramingError):
                if not event.fatal:  # the command that asked for the line is refused, the session goes on
                    raise ParseError(None, event.text)
                await self.send(ser.untagged_status("BYE", event.text))
                raise Closed

    async def run(self) -> None:
        await self.send(self.service.greeting(self))
        try:
            while self.state != LOGOUT:
                event = self.frames.next_event()
                if event is None:
                    await self._fill()
                elif isinstance(event, Continuation):
                    await self.send(ser.continuation("Ready for literal data"))
                elif isinstance(event, FramingError):
                    self._command_ended()
                    await self._framing_error(event)
                elif isinstance(event, CommandLine):
                    self._command_ended()
                    if self.ending():
                        raise Closed  # revoked between commands: revoke() is saying BYE, not this loop
                    self.busy = True
                    try:
                        await self.command(event)
                    finally:
                        self.busy = False
                    if self.revoked is not None:
                        await self.end_revoked()
                        raise Closed
        except Closed:
            pass
        finally:
            if self.state == LOGOUT and self.user is not None:
                await self.audit(AuditEvent.IMAP_LOGOUT, result="done")
            self.writer.close()

    def ending(self) -> bool:
        """Revoked: the session ends (a method, so that type checkers do not narrow it across awaits)."""
        return self.revoked is not None

    async def revoke(self, reason: str) -> None:
        """End the session because its mailbox may no longer be used; between commands at once, else
        when the running command ends (IDLE looks every second)."""
        if self.revoked is not None or self.state == LOGOUT:
            return  # revoked already, or ending by LOGOUT (audited once, by run())
        self.revoked = reason
        self.wake.set()
        if not self.busy:
            await self.end_revoked()
            self.writer.close()
            # The read waiting for the next command ends now: a TLS transport tells its reader only once
            # the close is through, which a silent client can stretch to the TLS shutdown timeout.
            self.reader.feed_eof()

    async def end_revoked(self) -> None:
        # The BYE first: it is in the transport before anything else runs, so a command line arriving
        # during the audit write (the run loop then closes the session) cannot leave the client without it.
        code, text = BYE.get(self.revoked or "", (None, "This mailbox has been disabled"))
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.send(ser.untagged_status("BYE", text, code))
        await self.audit(AuditEvent.IMAP_LOGOUT, result="revoked", reason=self.revoked)

    async def _framing_error(self, event: FramingError) -> None:
        await self.audit(AuditEvent.IMAP_COMMAND_REFUSED, result="bad", reason=event.text)
        if event.fatal:
            await self.send(ser.untagged_status("BYE", event.text))
            raise Closed
        if event.tag is None:
            await self.send(ser.untagged_status("BAD", event.text, event.code))
        else:
            await self.send(ser.tagged(event.tag, "BAD", event.text, event.code))

    # -- dispatch --------------------------------------------------------------------------------

    async def command(self, line: CommandLine) -> None:
        from gateway.imap.commands import HANDLERS

        try:
            cmd = parse_command(line)
        except BadCharsetError as exc:
            tag = exc.tag or "*"
            await self.audit(AuditEvent.IMAP_COMMAND_REFUSED, result="no", reason=exc.text)
            await self.send(ser.tagged(tag, "NO", exc.text, "BADCHARSET (UTF-8 US-ASCII)"))
            return
        except ParseError as exc:
            await self.audit(AuditEvent.IMAP_COMMAND_REFUSED, result="bad", reason=exc.text)
            if exc.tag is None:
                await self.send(ser.untagged_status("BAD", ser.printable_text(exc.text)))
            else:
                await self.send(ser.tagged(exc.tag, "BAD", ser.printable_text(exc.text)))
            return
        name = f"UID {cmd.name}" if cmd.uid else cmd.name
        handler = HANDLERS.get(cmd.name)
        try:
            if handler is None:
                raise Bad(f"{name} is not supported")
            if self.state not in handler.states:
                raise Bad(f"{name} is not allowed in the {self.state} state")
            text = await handler.run(self, cmd)
            if handler.sync is not None and self.selection is not None and self.state == SELECTED:
                await self.sync(expunges=handler.sync)
        except FolderGone:
            # RFC 3501 §7.1.5: the selected folder was deleted or renamed away by another session
            await self.send(ser.untagged_status("BYE", "The selected folder no longer exists"))
            raise Closed from None
        except (No, Bad) as exc:
            status: Literal["NO", "BAD"] = "NO" if isinstance(exc, No) else "BAD"
            await self.audit(AuditEvent.IMAP_COMMAND_REFUSED, result=status.lower(), command=name, reason=exc.text)
            await self.send(ser.tagged(cmd.tag, status, ser.printable_text(exc.text), exc.code))
            return
        except ParseError as exc:  # raised by a handler reading more input (an AUTHENTICATE response)
            await self.audit(AuditEvent.IMAP_COMMAND_REFUSED, result="bad", command=name, reason=exc.text)
            await self.send(ser.tagged(cmd.tag, "BAD", ser.printable_text(exc.text)))
            return
        except Closed:
            raise
        except Exception as exc:  # the one boundary: a bug must not end other sessions or this one
            self.log.exception("imap command failed", command=name, error=type(exc).__name__)
            await self.audit(AuditEvent.IMAP_COMMAND_REFUSED, result="no", command=name, reason="internal error")
            await self.send(ser.tagged(cmd.tag, "NO", f"{name} failed: internal server error", "SERVERBUG"))
            return
        if isinstance(text, _Sent):
            return
        if self.state == LOGOUT:
            await self.send(ser.tagged(cmd.tag, "OK", f"{name} completed"))
            return
        code = None
        if isinstance(text, tuple):
            code, text = text
        await self.send(ser.tagged(cmd.tag, "OK", text or f"{name} completed", code))

    # -- the selected folder ---------------------------------------------------------------------

    async def sync(self, *, expunges: bool) -> None:
        """Tell the client what changed in the selected folder since it last heard (RFC 3501 §7.3, §7.4)."""
        sel = self.selection
        if sel is None or self.user is None:
            return
        box = self.service.mailstore
        if await box.modseq(self.user, sel.folder.id) == sel.highestmodseq:
            return  # the usual case, one indexed look: every change moves the folder's HIGHESTMODSEQ
        folder, changed = await box.changes(self.user, sel.folder.id, sel.highestmodseq)
        if folder.highestmodseq < sel.highestmodseq:
            # A folder's HIGHESTMODSEQ never goes down (RFC 7162 §3.1.2; a RENAME keeps it): this is a new
            # folder that took the deleted one's id (SQLite reuses the highest rowid).
            raise FolderGone(f"no folder {sel.folder.name}")
        if folder.highestmodseq == sel.highestmodseq:
            return  # every change (delivery, flags, expunge) moves the folder's HIGHESTMODSEQ
        present = set(await box.uids(sel.folder.id))
        gone = sorted(set(sel.uids) - present)
        if expunges:
            for uid in reversed(gone):  # highest first: each number stays right for the next (RFC 3501 §7.4.1)
                self.untagged(f"{sel.seq(uid)} EXPUNGE")
                sel.uids.remove(uid)
                sel.meta.pop(uid, None)
                sel.recent.discard(uid)
        known = set(sel.uids)
        new = [m for m in changed if m.uid not in known and m.uid in present]
        if new:
            for m in new:
                sel.meta[m.uid] = m
            if not sel.read_only:
                sel.recent |= await box.claim_recent(self.user, sel.folder.id, max(m.uid for m in new))
            sel.uids = sorted(known | {m.uid for m in new})
            self.untagged(f"{len(sel.uids)} EXISTS")
            self.untagged(f"{len(sel.recent)} RECENT")
        for m in changed:
            if m.uid in known and m.uid in present and sel.meta[m.uid] != m:
                sel.meta[m.uid] = m
                self.untagged(self.flags_response(m))
        if expunges or not gone:  # otherwise the expunges are still owed: look again next time
            sel.highestmodseq = folder.highestmodseq

    def flags_response(self, m: MessageMeta, *, with_uid: bool = False) -> bytes:
        sel = self.selection
        assert sel is not None
        items = [b"FLAGS " + ser.flag_list(self.flags_of(m))]
        if with_uid or sel.condstore:  # RFC 7162 §3.1: UID and MODSEQ in every FETCH once enabled
            items.append(b"UID %d" % m.uid)
        if sel.condstore:
            items.append(b"MODSEQ (%d)" % m.modseq)
        return b"%d FETCH (%s)" % (sel.seq(m.uid), b" ".join(items))

    def enable_condstore(self) -> None:
        """A CONDSTORE-enabling command was seen (RFC 7162 §3.1): for the rest of the connection."""
        self.enabled.add("CONDSTORE")
        if self.selection is not None:
            self.selection.condstore = True

    def flags_of(self, m: MessageMeta) -> list[str]:
        sel = self.selection
        flags = sorted(m.flags)
        if sel is not None and m.uid in sel.recent:
            flags.append("\\Recent")
        return flags

    # -- audit -----------------------------------------------------------------------------------

    async def audit(self, event: AuditEvent, **response: Any) -> None:
        await self.node.audit.record(
            event,
            author=f"imap:{self.user}" if self.user else "imap",
            principal=self.user,
            peer=self.client_ip,
            response=response,
        )
