"""APPEND (RFC 3501 §6.3.11, APPENDUID RFC 4315, LITERAL+ RFC 7888, APPENDLIMIT RFC 7889)."""

from __future__ import annotations

import re

from gateway.node import Node
from gateway.store.mailstore import Mailstore
from gateway.store.messages import MessageStore
from tests.imap.conftest import Box, Raw, message, run
from tests.smtp.conftest import PASSWORD


def login(box: Box) -> Raw:
    raw = Raw(box.gw)
    assert raw.command("l", f'LOGIN {box.address} "{PASSWORD}"')[-1].startswith(b"l OK")
    return raw


def test_append_with_flags_and_date_answers_appenduid(box: Box) -> None:
    raw = login(box)
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
    raw = login(box)
    raw.command("a0", "SELECT INBOX")
    body = message(2)
    raw.send(b"a1 APPEND INBOX {%d+}\r\n" % len(body) + body + b"\r\n")
    reply = raw.until(b"a1")
    assert reply[:2] == [b"* 1 EXISTS", b"* 1 RECENT"]
    assert re.fullmatch(rb"a1 OK \[APPENDUID \d+ 1\] APPEND completed", reply[2])
    raw.close()


def test_append_refusals(box: Box) -> None:
    raw = login(box)
    assert raw.command("a1", "APPEND Nulle {1+}\r\nx") == [b"a1 NO [TRYCREATE] no folder Nulle"]
    assert raw.command("a2", "APPEND INBOX {0+}\r\n") == [b"a2 NO an empty message cannot be appended"]
    raw.send(b"a3 APPEND INBOX {26214401}\r\n")  # one octet over APPENDLIMIT: no "+", refused at once
    assert raw.line() == b"a3 BAD [TOOBIG] literal too big (max 26214400 octets)"
    assert raw.command("a4", "NOOP") == [b"a4 OK NOOP completed"]
    raw.close()


def test_append_past_the_quota_is_refused(box: Box) -> None:
    body = message(1)

    async def job(n: Node) -> None:
        await Mailstore(MessageStore(n.mailboxes)).set_quota(box.address, len(body) + 10)

    run(box.gw.node, job)
    raw = login(box)
    raw.send(b"a1 APPEND INBOX {%d+}\r\n" % len(body) + body + b"\r\n")
    assert re.fullmatch(rb"a1 OK \[APPENDUID \d+ 1\] APPEND completed", raw.until(b"a1")[-1])
    raw.send(b"a2 APPEND INBOX {%d+}\r\n" % len(body) + body + b"\r\n")
    assert raw.until(b"a2") == [b"a2 NO [OVERQUOTA] the mailbox is over its quota"]
    raw.command("a3", "SELECT INBOX")
    assert raw.command("a4", "COPY 1 Archive") == [b"a4 NO [OVERQUOTA] the mailbox is over its quota"]
    assert raw.command("a5", "MOVE 1 Archive")[-1] == b"a5 OK MOVE completed"  # a move adds nothing
    raw.close()
