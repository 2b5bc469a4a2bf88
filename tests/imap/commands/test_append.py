"""APPEND against the real server: RFC 3501 §6.3.11, APPENDUID (RFC 4315 §3), LITERAL+ (RFC 7888),
APPENDLIMIT (RFC 7889), TRYCREATE (RFC 3501 §7.1) and OVERQUOTA (RFC 9208 §4.3, RFC 5530).

Exact responses for the success paths (flags, date-time, synchronising and non-synchronising literals),
every refusal (missing folder, empty message, over the size limit, over quota, bad flags, bad date-time,
a synchronising literal the client abandons, the wrong state), and a second session on the same folder.
"""

from __future__ import annotations

import re

from gateway.node import Node
from gateway.smtp.content import MAX_HEADER_BYTES
from gateway.store.mailstore import Mailstore
from gateway.store.messages import MessageStore
from tests.imap.conftest import Box, Raw, message, run


def test_append_with_flags_and_date_answers_appenduid(box: Box) -> None:
    raw = box.raw()
    body = message(1)
    raw.send(b'a1 APPEND Drafts (\\Draft \\Seen) "05-Mar-2026 14:00:00 +0100" {%d}\r\n' % len(body))
    assert raw.line() == b"+ Ready for literal data"
    raw.send(body + b"\r\n")
    reply = raw.until(b"a1")
    found = re.fullmatch(rb"a1 OK \[APPENDUID (\d+) 1\] APPEND completed", reply[-1])
    assert found is not None, reply
    raw.command("a2", "EXAMINE Drafts")
    assert raw.command("a3", "FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE)") == [
        b'* 1 FETCH (FLAGS (\\Draft \\Seen \\Recent) INTERNALDATE " 5-Mar-2026 13:00:00 +0000" RFC822.SIZE %d)'
        % len(body),  # EXAMINE shows \\Recent without taking it (RFC 3501 §6.3.2)
        b"a3 OK FETCH completed",
    ]
    raw.close()


def test_append_with_a_non_synchronising_literal_to_the_selected_folder(box: Box) -> None:
    raw = box.raw()
    raw.command("a0", "SELECT INBOX")
    body = message(2)
    raw.send(b"a1 APPEND INBOX {%d+}\r\n" % len(body) + body + b"\r\n")
    reply = raw.until(b"a1")
    assert reply[:2] == [b"* 1 EXISTS", b"* 1 RECENT"]
    assert re.fullmatch(rb"a1 OK \[APPENDUID \d+ 1\] APPEND completed", reply[2])
    raw.close()


def test_append_refusals(box: Box) -> None:
    raw = box.raw()
    assert raw.command("a1", "APPEND Nulle {1+}\r\nx") == [b"a1 NO [TRYCREATE] no folder Nulle"]
    assert raw.command("a2", "APPEND INBOX {0+}\r\n") == [b"a2 NO an empty message cannot be appended"]
    raw.send(b"a3 APPEND INBOX {26214401}\r\n")  # one octet over APPENDLIMIT: no "+", refused at once
    assert raw.line() == b"a3 BAD [TOOBIG] literal too big (max 26214400 octets)"
    assert raw.command("a4", "NOOP") == [b"a4 OK NOOP completed"]
    raw.close()


def test_a_header_block_over_the_smtp_bound_is_refused(box: Box) -> None:
    """The header is bounded as SMTP bounds it (256 KiB): FETCH and SEARCH parse it on the node's loop. A
    header of the bound with its body appends; one octet more is refused, audited, and nothing is stored."""
    raw = box.raw()
    field = b"X-Pad: " + b"a" * 70 + b"\r\n"
    fits = b"".join([field] * ((MAX_HEADER_BYTES - 2) // len(field)))
    ok = fits + b"\r\nbody\r\n"
    raw.send(b"a1 APPEND INBOX {%d+}\r\n" % len(ok) + ok + b"\r\n")
    assert re.fullmatch(rb"a1 OK \[APPENDUID \d+ 1\] APPEND completed", raw.until(b"a1")[-1])
    over = fits + b"X" * (MAX_HEADER_BYTES - len(fits)) + b"\r\n\r\nbody\r\n"  # blank line past the bound
    raw.send(b"a2 APPEND INBOX {%d+}\r\n" % len(over) + over + b"\r\n")
    refusal = f"header block larger than {MAX_HEADER_BYTES} octets refused"
    assert raw.until(b"a2") == [b"a2 NO [LIMIT] " + refusal.encode()]
    lf_only = b"X-Pad: " + b"a" * MAX_HEADER_BYTES + b"\n\nbody\n"
    raw.send(b"a3 APPEND INBOX {%d+}\r\n" % len(lf_only) + lf_only + b"\r\n")
    assert raw.until(b"a3") == [b"a3 NO [LIMIT] " + refusal.encode()]
    raw.command("a4", "SELECT INBOX")
    assert raw.command("a5", "SEARCH ALL") == [b"* SEARCH 1", b"a5 OK SEARCH completed"]
    raw.close()
    events = box.gw.node.cli("audit", "search", "--event", "imap.command.refused", "--json").json()
    mine = [e["response"] for e in events if e["principal"] == box.address]  # type: ignore[index]
    assert mine[-2:] == [{"result": "no", "command": "APPEND", "reason": refusal}] * 2


def test_append_past_the_quota_is_refused(box: Box) -> None:
    body = message(1)

    async def job(n: Node) -> None:
        await Mailstore(MessageStore(n.mailboxes)).set_quota(box.address, len(body) + 10)

    run(box.gw.node, job)
    raw = box.raw()
    raw.send(b"a1 APPEND INBOX {%d+}\r\n" % len(body) + body + b"\r\n")
    assert re.fullmatch(rb"a1 OK \[APPENDUID \d+ 1\] APPEND completed", raw.until(b"a1")[-1])
    raw.send(b"a2 APPEND INBOX {%d+}\r\n" % len(body) + body + b"\r\n")
    assert raw.until(b"a2") == [b"a2 NO [OVERQUOTA] the mailbox is over its quota"]
    raw.command("a3", "SELECT INBOX")
    assert raw.command("a4", "COPY 1 Archive") == [b"a4 NO [OVERQUOTA] the mailbox is over its quota"]
    assert raw.command("a5", "MOVE 1 Archive")[-1] == b"a5 OK MOVE completed"  # a move adds nothing
    raw.close()


def test_bad_flags_date_times_and_syntax(box: Box) -> None:
    raw = box.raw()
    assert raw.command("b1", "APPEND INBOX (\\Recent) {1+}\r\nx") == [b"b1 BAD \\Recent cannot be set"]
    assert raw.command("b2", "APPEND INBOX (\\Bogus) {1+}\r\nx") == [b"b2 BAD unknown system flag \\Bogus"]
    assert raw.command("b3", 'APPEND INBOX "31-Feb-2026 10:00:00 +0100" {1+}\r\nx') == [
        b"b3 BAD invalid APPEND date-time 31-Feb-2026 10:00:00 +0100"
    ]
    assert raw.command("b4", 'APPEND INBOX "01-Mar-2026 10:00:00" {1+}\r\nx') == [  # no zone
        b"b4 BAD invalid APPEND date-time 01-Mar-2026 10:00:00"
    ]
    assert raw.command("b5", "APPEND INBOX") == [b"b5 BAD missing message literal"]
    assert raw.command("b6", "APPEND INBOX (\\Seen") == [b"b6 BAD missing ) after APPEND flags"]
    assert raw.command("b7", "STATUS INBOX (MESSAGES)") == [b"* STATUS INBOX (MESSAGES 0)", b"b7 OK STATUS completed"]
    # A keyword and a one-digit day (RFC 3501 §9 date-day-fixed allows " 1" and "1") are fine.
    reply = raw.command("b8", 'APPEND INBOX ($Urgent \\Seen) "1-Mar-2026 10:00:00 +0100" {1+}\r\nx')
    assert re.fullmatch(rb"b8 OK \[APPENDUID \d+ 1\] APPEND completed", reply[-1]), reply
    raw.close()


def test_an_abandoned_synchronising_literal_appends_nothing(box: Box) -> None:
    raw = box.raw()
    raw.send(b"c1 APPEND INBOX {26214400}\r\n")  # exactly APPENDLIMIT: accepted
    assert raw.line() == b"+ Ready for literal data"
    raw.send(b"x" * 10)
    raw.close()  # the client goes away in the middle of the literal
    other = box.raw()
    assert other.command("c2", "STATUS INBOX (MESSAGES)") == [
        b"* STATUS INBOX (MESSAGES 0)",
        b"c2 OK STATUS completed",
    ]
    other.close()


def test_append_in_the_wrong_state(box: Box) -> None:
    raw = Raw(box.gw)
    assert raw.command("d1", "APPEND INBOX {1+}\r\nx") == [
        b"d1 BAD APPEND is not allowed in the not authenticated state"
    ]
    raw.close()


def test_another_session_on_the_folder_sees_the_append(box: Box) -> None:
    box.put(message(1))
    watcher, writer = box.raw(), box.raw()
    assert watcher.command("e0", "SELECT INBOX")[-1] == b"e0 OK [READ-WRITE] SELECT completed"
    body = message(2)
    writer.send(b"e1 APPEND INBOX (\\Flagged) {%d+}\r\n" % len(body) + body + b"\r\n")
    assert re.fullmatch(rb"e1 OK \[APPENDUID \d+ 2\] APPEND completed", writer.until(b"e1")[-1])
    assert watcher.command("e2", "NOOP") == [b"* 2 EXISTS", b"* 2 RECENT", b"e2 OK NOOP completed"]
    assert watcher.command("e3", "FETCH 2 (UID FLAGS)") == [
        b"* 2 FETCH (UID 2 FLAGS (\\Flagged \\Recent))",
        b"e3 OK FETCH completed",
    ]
    watcher.close()
    writer.close()
