"""Limits of an IMAP server (issue: connections per user and per address, auto-logout, line length)."""

from __future__ import annotations

import secrets
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
    "MSSGW_IMAP__MAX_CONNECTIONS_PER_USER": "2",
    "MSSGW_IMAP__MAX_CONNECTIONS_PER_ADDRESS": "4",
    "MSSGW_AUTH__LOCKOUT_THRESHOLD": "2",
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
    raw.send(b"a1 NOOP " + b"x" * 9000 + b"\r\n")
    assert raw.line().startswith(b"* BYE ")
    assert raw.line() == b""
    raw.close()


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
