"""Limits of an IMAP server (issue: connections per user and per address, auto-logout, line length)."""

from __future__ import annotations

import secrets
import select
import threading
import time
from collections.abc import Iterator

import pytest

from gateway.auth.passwords import hash_password
from gateway.node import Node
from tests.conftest import DOMAIN, NodeDir, copy_node
from tests.imap.conftest import Raw, run
from tests.smtp.conftest import PASSWORD, Gateway, serve

LIMITS = {
    "MSSGW_IMAP__LOGIN_TIMEOUT": "1",
    "MSSGW_IMAP__LOGIN_DEADLINE": "3",
    "MSSGW_IMAP__MAX_CONNECTIONS_PER_USER": "2",
    "MSSGW_IMAP__MAX_CONNECTIONS_PER_ADDRESS": "4",
    "MSSGW_AUTH__LOCKOUT_THRESHOLD": "2",
    "MSSGW_IMAP__ACCOUNT_CHECK": "0.5",
    "MSSGW_STORE__MAX_FOLDERS": "10",
    "MSSGW_IMAP__COMMAND_TIMEOUT": "1.5",
    "MSSGW_IMAP__MIN_COMMAND_RATE": "2000",
}


@pytest.fixture(scope="module")
def limited(template_node: NodeDir, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    node = copy_node(template_node, tmp_path_factory.mktemp("limits") / "node")
    yield from serve(node, LIMITS)


def mailbox(gw: Gateway) -> str:
    address = f"limite-{secrets.token_hex(3)}@{DOMAIN}"

    async def job(n: Node) -> None:
        await n.mailboxes.create(address, "ORG", service="Limites", password_hash=hash_password(PASSWORD))

    run(gw.node, job)
    return address


def test_sessions_per_mailbox_and_per_address(limited: Gateway) -> None:
    address = mailbox(limited)
    sessions = [Raw(limited) for _ in range(3)]
    assert sessions[0].command("a", f'LOGIN {address} "{PASSWORD}"')[-1].endswith(b"Logged in")
    assert sessions[1].command("a", f'LOGIN {address} "{PASSWORD}"')[-1].endswith(b"Logged in")
    assert sessions[2].command("a", f'LOGIN {address} "{PASSWORD}"') == [
        b"a NO [LIMIT] Too many sessions for this mailbox"
    ]
    sessions[0].command("z", "LOGOUT")  # a freed slot can be taken again
    assert sessions[2].command("b", f'LOGIN {address} "{PASSWORD}"')[-1].endswith(b"Logged in")
    sessions[0].close()
    time.sleep(0.2)  # its close reaches the server
    more = [Raw(limited), Raw(limited)]  # with sessions 1 and 2: four connections from 127.0.0.1
    fifth = Raw(limited, tls=False)
    assert fifth.greeting == b"* BYE Too many connections from your address"
    for raw in (*sessions[1:], *more, fifth):
        raw.close()
    deadline = time.monotonic() + 10
    while not (found := limited.node.cli("audit", "search", "--event", "imap.connection.refused", "--json").json()):
        assert time.monotonic() < deadline, "not audited"
        time.sleep(0.1)
    assert [(event["peer"], event["response"]) for event in found] == [  # type: ignore[index]
        ("127.0.0.1", {"result": "refused", "reply": "* BYE Too many connections from your address", "limit": 4})
    ]


def test_a_silent_client_is_logged_out_before_login(limited: Gateway) -> None:
    time.sleep(0.5)  # let the previous test's connections be counted out
    raw = Raw(limited, tls=False)
    started = time.monotonic()
    assert raw.line() == b"* BYE Autologout; idle for too long"
    assert 0.9 < time.monotonic() - started < 5
    assert raw.line() == b""
    raw.close()


def test_an_overlong_line_ends_the_session(limited: Gateway) -> None:
    raw = Raw(limited)
    raw.send(b"a1 NOOP " + b"x" * 17000 + b"\r\n")  # beyond the pre-login limit (AUTHENTICATE's bearer token)
    assert raw.line() == b"* BYE line too long (max 16640 octets)"
    assert raw.line() == b""
    raw.close()


def test_folders_per_mailbox(limited: Gateway) -> None:
    time.sleep(0.5)  # the previous tests' connections are counted out
    address = mailbox(limited)
    raw = Raw(limited)
    raw.command("l", f'LOGIN {address} "{PASSWORD}"')
    for n in range(4):  # INBOX and the five special-use folders, then four more: ten
        assert raw.command(f"c{n}", f"CREATE Dossier{n}") == [f"c{n} OK CREATE completed".encode()]
    assert raw.command("c9", "CREATE Encore") == [b"c9 NO [LIMIT] a mailbox holds at most 10 folders"]
    assert raw.command("d", "DELETE Dossier0") == [b"d OK DELETE completed"]
    assert raw.command("c10", "CREATE Encore") == [b"c10 OK CREATE completed"]
    raw.close()


def test_disabling_a_mailbox_ends_its_sessions(limited: Gateway) -> None:
    """Between commands, in IDLE, and the next login: an admin's `mailbox disable` takes effect within
    `[imap] account_check` seconds even for sessions opened before it (here 0.5 s)."""
    time.sleep(0.5)  # the previous tests' connections are counted out
    address = mailbox(limited)
    waiting, idling = Raw(limited), Raw(limited)
    for raw in (waiting, idling):
        assert raw.command("l", f'LOGIN {address} "{PASSWORD}"')[-1].endswith(b"Logged in")
    idling.command("s", "SELECT INBOX")
    idling.send(b"i IDLE\r\n")
    assert idling.line() == b"+ idling"
    assert limited.node.cli("mailbox", "disable", address).code == 0
    started = time.monotonic()
    assert waiting.line() == b"* BYE This mailbox has been disabled"
    assert waiting.line() == b""  # closed
    assert idling.line() == b"* BYE This mailbox has been disabled"  # no tagged reply to IDLE
    assert idling.line() == b""
    assert time.monotonic() - started < 5
    again = Raw(limited)
    assert again.command("l", f'LOGIN {address} "{PASSWORD}"') == [b"l NO [AUTHENTICATIONFAILED] Authentication failed"]
    again.close()
    ended = limited.node.cli("audit", "search", "--event", "imap.logout", "--json").json()
    revoked = [e for e in ended if e["response"].get("result") == "revoked"]  # type: ignore[union-attr,index]
    assert len(revoked) == 2
    assert {e["response"]["reason"] for e in revoked} == {"mailbox-disabled"}  # type: ignore[index]
    for raw in (waiting, idling):
        raw.close()


def logouts(gw: Gateway, address: str) -> list[object]:
    deadline = time.monotonic() + 10
    while not (
        found := gw.node.cli("audit", "search", "--event", "imap.logout", "--principal", address, "--json").json()
    ):
        assert time.monotonic() < deadline, "not audited"
        time.sleep(0.1)
    return [event["response"] for event in found]  # type: ignore[index]


def logged_in(gw: Gateway) -> tuple[str, Raw]:
    """A new mailbox and a session logged in to it (after the previous tests' connections are counted out)."""
    time.sleep(0.5)
    address = mailbox(gw)
    raw = Raw(gw)
    assert raw.command("l", f'LOGIN {address} "{PASSWORD}"')[-1].endswith(b"Logged in")
    return address, raw


def trickle(raw: Raw, rate: int, seconds: float) -> tuple[int, list[bytes]]:
    """Send a literal's octets at `rate` a second, 10 times a second, for `seconds` or until the server
    speaks; the octets sent and what it said."""
    sent, started = 0, time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            raw.send(b"x" * (rate // 10))
        except OSError:
            break
        sent += rate // 10
        if select.select([raw.sock], [], [], 0.1)[0]:
            return sent, [raw.line()]
    return sent, []


def test_a_literal_trickled_after_login_is_cut(limited: Gateway) -> None:
    """[imap] min_command_rate (2,000 octets/s here, command_timeout 1.5 s): an APPEND whose literal comes at
    400 octets/s, never silent, loses 0.8 s of its 1.5 s a second and is cut after about 1.9 s, where the
    autologout (30 min) alone would have let it run for ever."""
    address, raw = logged_in(limited)
    time.sleep(2)  # between commands the autologout applies, not command_timeout
    raw.send(b"a APPEND INBOX {100000+}\r\n")
    started = time.monotonic()
    sent, said = trickle(raw, 400, 10)
    assert said == [b"* BYE Autologout; command too slow"]
    assert 1.5 < time.monotonic() - started < 4
    assert sent < 2000
    assert raw.line() == b""  # closed
    raw.close()
    assert logouts(limited, address) == [{"result": "timeout", "reason": "command rate below [imap] min_command_rate"}]
    check = Raw(limited)
    check.command("l", f'LOGIN {address} "{PASSWORD}"')
    assert b"* STATUS INBOX (MESSAGES 0)" in check.command("s", "STATUS INBOX (MESSAGES)")
    check.close()


def test_a_literal_at_the_rate_is_not_cut(limited: Gateway) -> None:
    """4,000 octets/s for 3 s, twice command_timeout: each octet's credit keeps the APPEND going."""
    _, raw = logged_in(limited)
    body = b"Subject: lent\r\n\r\n" + b"y" * 11_980 + b"\r\n"
    raw.send(b"a APPEND INBOX {%d+}\r\n" % len(body))
    started = time.monotonic()
    for i in range(0, len(body), 400):
        raw.send(body[i : i + 400])
        time.sleep(0.1)
    raw.send(b"\r\n")
    reply = raw.until(b"a")
    assert time.monotonic() - started > 2.9
    assert reply[-1].startswith(b"a OK [APPENDUID ")
    assert raw.command("n", "NOOP")[-1] == b"n OK NOOP completed"
    raw.close()


def test_silence_in_the_middle_of_a_command_ends_the_session(limited: Gateway) -> None:
    """A command begun and not ended: command_timeout (1.5 s) of silence, not the autologout."""
    address, raw = logged_in(limited)
    raw.send(b"a NOOP")
    started = time.monotonic()
    assert raw.line() == b"* BYE Autologout; idle for too long"
    assert 1.4 < time.monotonic() - started < 4
    assert raw.line() == b""
    raw.close()
    assert logouts(limited, address) == [{"result": "timeout", "reason": "client silent for [imap] command_timeout"}]


def test_parallel_guesses_cannot_outrun_the_lock_out(limited: Gateway) -> None:
    """Last in this module: it leaves 127.0.0.1 locked out for a while."""
    time.sleep(0.5)  # the previous tests' connections are counted out
    address = mailbox(limited)
    answers: list[bytes] = []

    def guess() -> None:
        raw = Raw(limited)
        answers.append(raw.command("g", f'LOGIN {address} "wrong password"')[-1])
        raw.close()

    threads = [threading.Thread(target=guess) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    checked = [a for a in answers if a == b"g NO [AUTHENTICATIONFAILED] Authentication failed"]
    assert len(answers) == 4
    assert len(checked) <= 2  # MSSGW_AUTH__LOCKOUT_THRESHOLD: the others were refused before any password check
    assert all(a.startswith(b"g NO [UNAVAILABLE] Too many failed logins") for a in answers if a not in checked)


def test_sessions_that_logged_out_are_not_ended_again_by_the_stop(
    template_node: NodeDir, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A session that answered LOGOUT is ending (its logout audited once): the node stopping right after
    must not revoke it again (found by bench/imap.py: a second imap.logout, 'revoked', for one of them)."""
    import signal
    import socket

    node = copy_node(template_node, tmp_path_factory.mktemp("stopping") / "node")
    served = serve(node)
    gw = next(served)
    sessions = 12
    try:
        address = mailbox(gw)
        ctx = gw.tls()
        socks = []
        for i in range(sessions):
            sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", gw.port("imaps")), timeout=30))
            reader = sock.makefile("rb")
            assert reader.readline().startswith(b"* OK")
            sock.sendall(f'a{i} LOGIN {address} "{PASSWORD}"\r\n'.encode())
            assert reader.readline().startswith(f"a{i} OK".encode())
            socks.append((sock, reader))
        for i, (sock, _) in enumerate(socks):
            sock.sendall(b"b%d LOGOUT\r\n" % i)
        for i, (_, reader) in enumerate(socks):
            assert reader.readline() == b"* BYE mssgw logging out\r\n"
            assert reader.readline() == b"b%d OK LOGOUT completed\r\n" % i
        gw.running.proc.send_signal(signal.SIGTERM)  # at once: some sessions are still writing their record
        assert gw.running.proc.wait(timeout=30) == 0
        for sock, _ in socks:
            sock.close()
    finally:
        served.close()
    events = node.cli("audit", "search", "--event", "imap.logout", "--principal", address, "--json").json()
    assert [e["response"] for e in events] == [{"result": "done"}] * sessions  # type: ignore[index]


def test_a_busy_client_that_never_logs_in_is_logged_out_at_the_login_deadline(limited: Gateway) -> None:
    """[imap] login_deadline (3 s here): a NOOP every 0.3 s, never silent for the 1 s login timeout, is still
    logged out, as Dovecot's login processes do; a login within it is not affected (the other tests)."""
    raw = Raw(limited, tls=False)
    started = time.monotonic()
    answered = 0
    while True:
        lines = raw.command(f"n{answered}", "NOOP")
        if lines[-1] != f"n{answered} OK NOOP completed".encode():
            break
        answered += 1
        assert time.monotonic() - started < 10, "never logged out"
        time.sleep(0.3)
    assert lines == [b"* BYE Autologout; no login in time", b""]  # then closed
    assert 2.5 < time.monotonic() - started < 6
    assert answered >= 5
    raw.close()
