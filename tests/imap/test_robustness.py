"""Attacks and races found in review of the IMAP server, each reproduced here against the real server."""

from __future__ import annotations

import socket
import time

from gateway.node import Node
from gateway.store.mailstore import Mailstore
from gateway.store.messages import MessageStore
from tests.imap.conftest import Box, Raw, message, run
from tests.smtp.conftest import PASSWORD, Gateway


def login(box: Box, folder: str | None = "INBOX") -> Raw:
    raw = Raw(box.gw)
    assert raw.command("l", f'LOGIN {box.address} "{PASSWORD}"')[-1].endswith(b"Logged in")
    if folder is not None:
        assert raw.command("s", f"SELECT {folder}")[-1] == b"s OK [READ-WRITE] SELECT completed"
    return raw


def test_clear_text_pipelined_behind_starttls_never_runs_under_tls(imap_gw: Gateway) -> None:
    """CVE-2011-0411 class: a man in the middle appends a command to STARTTLS, even across a read boundary."""
    for pad in (0, 65536 - len(b"s STARTTLS\r\n")):
        plain = socket.create_connection(("127.0.0.1", imap_gw.port("imap")), timeout=30)
        file = plain.makefile("rb")
        file.readline()  # greeting
        filler = b""
        if pad:  # NOOPs filling exactly `pad` octets, so that STARTTLS ends the client's first 64 KiB
            count, rest = divmod(pad, 8)
            filler = b"p NOOP\r\n" * (count - 1) + b"p" + b"x" * rest + b" NOOP\r\n"
            assert len(filler) == pad
        plain.sendall(filler + b"s STARTTLS\r\ny CAPABILITY\r\n")
        while True:
            line = file.readline()
            if not line or line.startswith(b"s "):
                break
        if line == b"s OK Begin TLS negotiation now\r\n":
            # The CAPABILITY reached the server after its first look (the client's last segment came
            # late, as under load): it is found once the OK is out, or read as a broken TLS handshake.
            # Either way the session ends there and the command never runs.
            plain.settimeout(10)
            rest = b""
            while chunk := plain.recv(4096):
                rest += chunk
            assert b"y " not in rest, rest
        else:  # refused before TLS, or the connection dropped
            assert line in (b"s BAD commands after STARTTLS must wait for TLS\r\n", b""), line
        plain.close()


def test_list_patterns_cannot_stall_the_node(box: Box) -> None:
    raw = login(box, None)
    for n in range(3):
        raw.command("c", f"CREATE {chr(97 + n) * 250}")
    started = time.monotonic()
    assert raw.command("a1", 'LIST "" "*a*a*a*a*a*a*ab"') == [b"a1 OK LIST completed"]
    assert time.monotonic() - started < 1
    assert raw.command("a2", 'LIST "" "' + "%" * 1100 + '"') == [b"a2 BAD LIST pattern longer than 1024 characters"]
    raw.close()


def test_sequence_sets_in_search_cannot_stall_the_node(box: Box) -> None:
    # SEARCH evaluated its sequence-set keys again for every message, sorting all their ranges each time: a
    # 1,700-range set over 1,500 messages held the event loop (every session of the node) for over a second.
    async def fill(n: Node) -> None:
        store = Mailstore(MessageStore(n.mailboxes))
        for i in range(1500):
            await store.append(box.address, "INBOX", message(i))

    run(box.gw.node, fill)
    raw = login(box)
    odd = ",".join(str(i) for i in range(1, 3400, 2))  # 1,3,5...3399: one line under 8 KB
    started = time.monotonic()
    reply = raw.command("s1", f"SEARCH {odd}")
    assert time.monotonic() - started < 0.5
    assert reply == [b"* SEARCH " + " ".join(str(i) for i in range(1, 1500, 2)).encode(), b"s1 OK SEARCH completed"]
    started = time.monotonic()
    reply = raw.command("s2", f"UID SEARCH NOT UID {odd}")
    assert time.monotonic() - started < 0.5
    assert reply == [b"* SEARCH " + " ".join(str(i) for i in range(2, 1501, 2)).encode(), b"s2 OK UID SEARCH completed"]
    raw.close()


def test_the_structure_of_a_large_message_does_not_stall_the_node(box: Box) -> None:
    # ENVELOPE and BODYSTRUCTURE parse addresses octet by octet in Python (~2 s a megabyte at worst): a message
    # (submitted, relayed or appended) embedding a message/rfc822 part with megabytes of addresses held the
    # event loop, every session of the node, for seconds each time a client opened it.
    addresses = b"a@b, " * 500_000  # 2.5 MB
    box.put(
        b"From: a@b\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: message/rfc822\r\n\r\nTo: " + addresses + b"\r\n\r\nhello\r\n--b--\r\n"
    )
    raw, other = login(box), login(box, None)
    raw.send(b"f FETCH 1 BODYSTRUCTURE\r\n")
    time.sleep(0.2)  # the FETCH is under way
    started = time.monotonic()
    assert other.command("n", "NOOP") == [b"n OK NOOP completed"]
    assert time.monotonic() - started < 1
    reply = raw.until(b"f")
    assert reply[0].startswith(b'* 1 FETCH (BODYSTRUCTURE (("message" "rfc822" NIL NIL NIL "7bit" ')
    assert reply[-1] == b"f OK FETCH completed"
    raw.close()
    other.close()


def test_the_selected_folder_deleted_elsewhere_ends_the_session_cleanly(box: Box) -> None:
    other = login(box, None)
    other.command("c", "CREATE Dossier")
    raw = login(box, "Dossier")
    assert other.command("d", "DELETE Dossier") == [b"d OK DELETE completed"]
    assert raw.command("n", "NOOP") == [b"* BYE The selected folder no longer exists", b""]  # then closed
    # renamed then deleted by the same session: the INUSE check follows the folder, not its old name
    raw = login(box, None)
    raw.command("c", "CREATE Foo")
    raw.command("s", "SELECT Foo")
    raw.command("r", "RENAME Foo Bar")
    assert raw.command("d", "DELETE Bar") == [b"d NO [INUSE] cannot delete the selected folder"]
    raw.close()
    other.close()


def test_select_a_folder_with_an_accented_name(box: Box) -> None:
    raw = login(box, None)
    assert raw.command("c", "CREATE M&AOk-dical") == [b"c OK CREATE completed"]
    assert raw.command("s", "SELECT M&AOk-dical")[-1] == b"s OK [READ-WRITE] SELECT completed"
    raw.close()


def test_rename_touches_only_the_folder_and_its_children(box: Box) -> None:
    raw = login(box, None)
    for name in ("a_b/c", "axb/c", "foo/bar", "Foo"):
        raw.command("c", f"CREATE {name}")
    raw.command("r1", "RENAME a_b z")
    raw.command("r2", "RENAME Foo Baz")
    names = sorted(line.rsplit(b" ", 1)[1] for line in raw.command("l", 'LIST "" *')[:-1])
    assert b"axb/c" in names
    assert b"foo/bar" in names
    assert b"z/c" in names
    assert b"Baz" in names
    raw.close()


def test_no_big_literal_before_login(imap_gw: Gateway) -> None:
    raw = Raw(imap_gw, tls=False)
    raw.send(b"a LOGIN {26214000}\r\n")
    assert raw.line() == b"a BAD [TOOBIG] literal too big (max 8192 octets)"
    raw.close()


def test_condstore_puts_uid_and_modseq_in_every_fetch(box: Box) -> None:
    box.put(message(1))
    raw, other = login(box), login(box)
    assert raw.command("e", "ENABLE CONDSTORE") == [b"* ENABLED CONDSTORE", b"e OK ENABLE completed"]
    other.command("s1", "STORE 1 +FLAGS.SILENT (\\Flagged)")
    assert raw.command("n", "NOOP") == [
        b"* 1 FETCH (FLAGS (\\Flagged \\Recent) UID 1 MODSEQ (3))",
        b"n OK NOOP completed",
    ]
    reply = raw.command("f", "FETCH 1 (BODY[HEADER.FIELDS (SUBJECT)])")
    assert reply[1:] == [
        b"Subject: message 1",
        b"",
        b" UID 1 MODSEQ (4) FLAGS (\\Flagged \\Seen \\Recent))",  # \\Seen set: reported with UID and MODSEQ
        b"f OK FETCH completed",
    ]
    raw.close()
    other.close()


def test_examine_shows_recent_without_taking_it(box: Box) -> None:
    box.put(message(1))
    raw = login(box, None)
    assert b"* 1 RECENT" in raw.command("e", "EXAMINE INBOX")
    assert b"* 1 RECENT" in raw.command("s", "SELECT INBOX")  # still recent: EXAMINE did not take it
    raw.close()


def test_content_is_on_record_even_when_the_client_hangs_up(box: Box) -> None:
    for n in (1, 2, 3):
        box.put(message(n, body="x" * 200_000))
    raw = login(box)
    raw.send(b"f FETCH 1:* BODY.PEEK[]\r\n")
    raw.line()  # the first literal's announcement, then hang up
    raw.close()
    time.sleep(0.5)
    events = box.gw.node.cli("audit", "search", "--event", "imap.fetch.body", "--principal", box.address, "--json")
    assert [e["response"]["uids"] for e in events.json()] == [[1, 2, 3]]  # type: ignore[index]
