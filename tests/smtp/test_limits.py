"""Session limits: a stalled client is dropped, recipients are capped, password guessing is locked out."""

from __future__ import annotations

import base64
import select
import socket
import time
from collections.abc import Iterator

import pytest

from tests.conftest import NodeDir, copy_node
from tests.smtp.conftest import DOCTOR, NURSE, PASSWORD, SECRETARIAT, Gateway, RawSMTP, provision, serve

LIMITS = {
    "MSSGW_SMTP__TIMEOUT": "1.5",
    "MSSGW_SMTP__MIN_DATA_RATE": "2000",
    "MSSGW_SMTP__MAX_CONNECTIONS_PER_ADDRESS": "3",
    "MSSGW_SMTP__MAX_RECIPIENTS": "2",
    "MSSGW_AUTH__LOCKOUT_THRESHOLD": "2",
    "MSSGW_AUTH__LOCKOUT_BASE_DELAY": "60",
}


@pytest.fixture(scope="module")
def limited(template_node: NodeDir, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    node = copy_node(template_node, tmp_path_factory.mktemp("limits") / "node")
    provision(node)
    yield from serve(node, LIMITS)


def test_stall_after_data_times_out(limited: Gateway) -> None:
    raw = open_data(limited)
    raw.send(b"Subject: half a message\r\n")  # then nothing
    started = time.monotonic()
    code, text = raw.reply()
    waited = time.monotonic() - started
    assert (code, text) == (421, "4.4.2 mail.ch-test.mssante.fr Error: timeout exceeded")
    assert 1.4 < waited < 5
    assert raw.reply() == (0, "connection closed")
    cut = content_refusals(limited)[-1]
    assert cut == {
        "result": "refused",
        "reply": "421 4.4.2 mail.ch-test.mssante.fr Error: timeout exceeded",
        "size": len(b"Subject: half a message\r\n"),
        "reason": "client silent for [smtp] timeout",
    }


def audit_responses(gw: Gateway, event: str, at_least: int) -> list[dict[str, object]]:
    """The responses of `event`'s records, once the node has written `at_least` (audits are batched)."""
    deadline = time.monotonic() + 10
    while True:
        found = gw.node.cli("audit", "search", "--event", event, "--json").json()
        if len(found) >= at_least or time.monotonic() > deadline:
            return [record["response"] for record in found]  # type: ignore[index]
        time.sleep(0.1)


def content_refusals(gw: Gateway, *, at_least: int = 1) -> list[dict[str, object]]:
    return audit_responses(gw, "smtp.content.refused", at_least)


def open_data(gw: Gateway) -> RawSMTP:
    raw = RawSMTP(gw)
    raw.command("AUTH PLAIN " + base64.b64encode(f"\0{DOCTOR}\0{PASSWORD}".encode()).decode())
    assert raw.command(f"MAIL FROM:<{DOCTOR}>")[0] == 250
    assert raw.command(f"RCPT TO:<{NURSE}>")[0] == 250
    assert raw.command("DATA")[0] == 354
    return raw


LINE = b"x" * 98 + b"\r\n"  # 100 octets


def test_trickled_data_below_the_minimum_rate_is_cut_off(limited: Gateway) -> None:
    """Never silent for the 1.5 s timeout, but 400 octets/s against a minimum of 2,000: each 0.25 s costs
    0.25 s of the time left and gives back 0.05 s, so it runs out after about 1.9 s (Postfix's
    smtpd_min_data_rate); without the rate the client could hold the session for ever."""
    before = len(content_refusals(limited, at_least=0))
    raw = open_data(limited)
    header = b"Subject: trickled\r\n"
    raw.send(header)
    started = time.monotonic()
    sent = 0
    while True:
        if raw.sock.pending() or select.select([raw.sock], [], [], 0.25)[0]:
            break
        assert time.monotonic() - started < 10, "never cut off"
        raw.send(LINE)
        sent += 1
    waited = time.monotonic() - started
    assert raw.reply() == (421, "4.4.2 mail.ch-test.mssante.fr Error: timeout exceeded")
    assert raw.reply() == (0, "connection closed")
    assert 1.6 < waited < 5  # past the silence timeout: only the rate cut it
    assert sent >= 6
    cut = content_refusals(limited, at_least=before + 1)[before:]
    assert len(cut) == 1
    size = cut[0].pop("size")
    assert isinstance(size, int)
    lines, odd = divmod(size - len(header), len(LINE))  # what had arrived when the time ran out
    assert odd == 0
    assert sent - 1 <= lines <= sent
    assert cut[0] == {
        "result": "refused",
        "reply": "421 4.4.2 mail.ch-test.mssante.fr Error: timeout exceeded",
        "reason": "data rate below [smtp] min_data_rate",
    }


def test_data_at_the_minimum_rate_may_last_longer_than_the_timeout(limited: Gateway) -> None:
    """4,000 octets/s for 3 s, twice the 1.5 s timeout: the time left stays full, and the message is taken."""
    raw = open_data(limited)
    raw.send(b"From: <" + DOCTOR.encode() + b">\r\nTo: <" + NURSE.encode() + b">\r\nSubject: steady\r\n\r\n")
    started = time.monotonic()
    while time.monotonic() - started < 3:
        raw.send(LINE * 10)
        assert not select.select([raw.sock], [], [], 0.25)[0], raw.reply()
    assert raw.command(".")[0] == 250
    raw.close()


def test_recipients_are_capped(limited: Gateway) -> None:
    client = limited.submission(login=DOCTOR)
    client.mail(DOCTOR)
    assert client.rcpt(NURSE) == (250, b"2.1.5 OK")
    assert client.rcpt(SECRETARIAT) == (250, b"2.1.5 OK")
    assert client.rcpt(DOCTOR) == (452, b"4.5.3 too many recipients")
    client.quit()


def test_repeated_failures_lock_the_account_and_the_address_out(limited: Gateway) -> None:
    client = limited.submission(login=None)

    def plain(password: str) -> tuple[int, bytes]:  # one attempt each (smtplib.login tries every mechanism)
        return client.docmd("AUTH", "PLAIN " + base64.b64encode(f"\0{SECRETARIAT}\0{password}".encode()).decode())

    assert plain("not the password") == (535, b"5.7.8 Authentication credentials invalid")
    assert plain("not the password") == (535, b"5.7.8 Authentication credentials invalid")  # locks for 60 s
    assert plain(PASSWORD) == (454, b"4.7.0 Too many failed logins, try again in 60 s")  # even the right one
    client.close()
    locked = limited.node.cli("audit", "search", "--event", "smtp.auth.locked", "--json").json()
    assert locked[-1]["response"]["login"] == SECRETARIAT  # type: ignore[index]


def greeting(gw: Gateway, listener: str = "submission") -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", gw.port(listener)), timeout=10)
    return sock, sock.makefile("rb").readline()


def test_connections_per_address_are_capped_per_listener(limited: Gateway) -> None:
    """Postfix's smtpd_client_connection_count_limit: 3 here. STARTTLS does not count a connection twice, a
    closed one frees its slot, the relay listener counts apart, and the refusals are audited once a minute."""
    time.sleep(0.5)  # the other tests' connections are counted out
    tls = [RawSMTP(limited), RawSMTP(limited)]  # through STARTTLS
    plain, text = greeting(limited)
    assert text.startswith(b"220 mail.ch-test.mssante.fr ")
    refused = b"421 4.7.0 mail.ch-test.mssante.fr Error: too many connections from 127.0.0.1\r\n"
    for _ in range(2):
        extra, text = greeting(limited)
        assert text == refused
        assert extra.recv(1) == b""  # closed, nothing more said
        extra.close()
    peer, text = greeting(limited, "relay")
    assert text.startswith(b"220 mail.ch-test.mssante.fr ")
    peer.close()
    plain.close()
    deadline = time.monotonic() + 5
    while True:  # the freed slot, once the server has seen the close
        again, text = greeting(limited)
        if text != refused or time.monotonic() > deadline:
            break
        again.close()
        time.sleep(0.05)
    assert text.startswith(b"220 mail.ch-test.mssante.fr ")
    assert tls[0].command("NOOP") == (250, "2.0.0 OK")  # the sessions under TLS go on
    for conn in (again, *[raw.sock for raw in tls]):
        conn.close()
    deadline = time.monotonic() + 10
    while True:
        found = limited.node.cli("audit", "search", "--event", "smtp.connection.refused", "--json").json()
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [(event["peer"], event["response"]) for event in found] == [  # type: ignore[index]
        (
            "127.0.0.1",
            {"result": "refused", "reply": refused.decode().rstrip(), "limit": 3},
        )
    ]  # the second refusal, within the minute, is counted in the next record (`unrecorded`)


def test_after_a_slow_data_the_next_command_has_the_whole_timeout(limited: Gateway) -> None:
    """The rate's budget is DATA's: silent 1.2 s of the 1.5 s timeout inside DATA (0.3 s left), the message
    is still taken, and the session then waits the whole timeout for its next command, not what was left
    (a 421 while the message is stored would have the client send it twice)."""
    raw = open_data(limited)
    raw.send(f"From: <{DOCTOR}>\r\nTo: <{NURSE}>\r\nSubject: slow end\r\n\r\nbody\r\n".encode())
    time.sleep(1.2)
    code, text = raw.command(".")
    assert (code, text[: len("2.0.0 OK delivered as ")]) == (250, "2.0.0 OK delivered as ")
    time.sleep(0.9)
    assert raw.command("NOOP") == (250, "2.0.0 OK")
    raw.close()


def test_a_starttls_left_without_its_handshake_frees_its_slot(limited: Gateway) -> None:
    """The timeout ends a STARTTLS whose client never starts the handshake; asyncio then reports the
    handshake as done and the connection's loss to nobody, so the session must end it itself: else
    its slot of the address's 3 stays taken until the node restarts."""
    time.sleep(0.5)  # the other tests' connections are counted out
    stalled, text = greeting(limited)
    assert text.startswith(b"220 ")
    stalled.sendall(b"EHLO stalled.example\r\nSTARTTLS\r\n")
    replies = stalled.makefile("rb")
    while not (line := replies.readline()).startswith(b"250 "):
        assert line.startswith(b"250-"), line
    assert replies.readline() == b"220 2.0.0 Ready to start TLS\r\n"
    time.sleep(2.5)  # past the 1.5 s timeout, no ClientHello sent
    stalled.close()
    time.sleep(0.5)
    opened = [greeting(limited) for _ in range(3)]
    assert [text[:4] for _, text in opened] == [b"220 "] * 3
    for sock, _ in opened:
        sock.close()


@pytest.fixture(scope="module")
def short_lived(template_node: NodeDir, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    node = copy_node(template_node, tmp_path_factory.mktemp("lifetime") / "node")
    provision(node)
    yield from serve(node, {"MSSGW_SMTP__TIMEOUT": "1.5", "MSSGW_SMTP__SESSION_LIFETIME": "2"})


EXPIRED = "4.4.2 mail.ch-test.mssante.fr Error: session open for over 2 s, connect again"


def expirations(gw: Gateway, at_least: int) -> list[dict[str, object]]:
    return audit_responses(gw, "smtp.session.expired", at_least)


def test_a_session_kept_open_with_noops_ends_at_its_lifetime(short_lived: Gateway) -> None:
    """NOOP every 0.4 s, never silent for the 1.5 s timeout: the session still ends at its 2 s lifetime,
    with a 421 sent by itself between commands, and is audited."""
    before = len(expirations(short_lived, 0))
    started = time.monotonic()  # the lifetime counts from the connection
    raw = RawSMTP(short_lived)
    replies = []
    while time.monotonic() - started < 5:
        reply = raw.command("NOOP")
        replies.append(reply)
        if reply[0] != 250:
            break
        time.sleep(0.4)
    waited = time.monotonic() - started
    assert replies[-1] == (421, EXPIRED)
    assert set(replies[:-1]) == {(250, "2.0.0 OK")}
    assert 1.9 < waited < 3.5
    assert raw.reply() == (0, "connection closed")
    found = expirations(short_lived, before + 1)
    assert found[before:] == [{"result": "refused", "reply": f"421 {EXPIRED}"}]


def test_a_transaction_under_way_at_the_lifetime_is_finished_first(short_lived: Gateway) -> None:
    """The lifetime passes between RCPT and DATA: the message is still accepted (250), and the 421 follows
    at once, unasked."""
    raw = RawSMTP(short_lived)
    raw.command("AUTH PLAIN " + base64.b64encode(f"\0{DOCTOR}\0{PASSWORD}".encode()).decode())
    assert raw.command(f"MAIL FROM:<{DOCTOR}>")[0] == 250
    assert raw.command(f"RCPT TO:<{NURSE}>")[0] == 250
    for _ in range(2):  # 2.1 s and more since the connection: past the lifetime, never silent for 1.5 s
        time.sleep(0.9)
        assert raw.command("NOOP") == (250, "2.0.0 OK")
    time.sleep(0.3)
    assert raw.command("DATA")[0] == 354
    raw.send(f"From: {DOCTOR}\r\nTo: {NURSE}\r\nSubject: juste avant\r\n\r\nCorps.\r\n.\r\n".encode())
    code, text = raw.reply()
    assert code == 250
    assert text.startswith("2.0.0 OK ")
    assert raw.reply() == (421, EXPIRED)
    assert raw.reply() == (0, "connection closed")


def test_a_transaction_dragged_past_the_lifetime_is_cut_a_timeout_later(short_lived: Gateway) -> None:
    """A client that stays in its transaction (RCPT after RCPT, each within the timeout) is cut one
    timeout (1.5 s) after the lifetime, before any 250 for its message."""
    started = time.monotonic()
    raw = RawSMTP(short_lived)
    raw.command("AUTH PLAIN " + base64.b64encode(f"\0{DOCTOR}\0{PASSWORD}".encode()).decode())
    assert raw.command(f"MAIL FROM:<{DOCTOR}>")[0] == 250
    replies = []
    while time.monotonic() - started < 8:
        reply = raw.command(f"RCPT TO:<{NURSE}>")
        replies.append(reply)
        if reply[0] == 421:
            break
        time.sleep(0.4)
    waited = time.monotonic() - started
    assert replies[-1] == (421, EXPIRED)
    assert 3.3 < waited < 5.5
    assert raw.reply() == (0, "connection closed")


def test_a_message_arriving_when_the_grace_ends_is_not_cut(short_lived: Gateway) -> None:
    """The lifetime passes during a transaction and its DATA is still arriving (at 1,000 octets/s, above
    min_data_rate) when the grace (one timeout) ends: the DATA's own limits bound it, so it is accepted,
    then the 421 follows."""
    started = time.monotonic()
    raw = RawSMTP(short_lived)
    raw.command("AUTH PLAIN " + base64.b64encode(f"\0{DOCTOR}\0{PASSWORD}".encode()).decode())
    assert raw.command(f"MAIL FROM:<{DOCTOR}>")[0] == 250
    assert raw.command(f"RCPT TO:<{NURSE}>")[0] == 250
    assert raw.command("DATA")[0] == 354
    raw.send(f"From: {DOCTOR}\r\nTo: {NURSE}\r\nSubject: long\r\n\r\n".encode())
    while time.monotonic() - started < 4.5:  # past lifetime (2 s) + grace (1.5 s)
        raw.send(LINE * 3)
        time.sleep(0.3)
    raw.send(b".\r\n")
    code, text = raw.reply()
    assert code == 250
    assert text.startswith("2.0.0 OK ")
    assert raw.reply() == (421, EXPIRED)
    assert raw.reply() == (0, "connection closed")
