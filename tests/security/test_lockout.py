"""Password guessing over the wire: one lock-out for SMTP and IMAP (gateway/auth/lockout.py), whatever
the protocol, port or mechanism a guesser switches to; unknown accounts answered like bad passwords;
one address spraying many accounts locked; a stranger's guesses do not lock the owner out of their usual
address.

A node of its own, with a threshold of 2 failures per (account, address) and 4 per address or per account,
and 60 s locks. Each test guesses from its own loopback address (127.0.0.N: the node sees that as the
client address), so that the lock-out counters of one test do not touch another's.
"""

from __future__ import annotations

import ast
import base64
import imaplib
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.auth.lockout import CONFIRM_AFTER
from gateway.auth.passwords import hash_password
from gateway.node import Node
from tests.conftest import DOMAIN, NodeDir, copy_node
from tests.imap.conftest import run
from tests.security.conftest import serve
from tests.smtp.conftest import PASSWORD, Gateway

SETTINGS = {
    "MSSGW_AUTH__LOCKOUT_THRESHOLD": "2",
    "MSSGW_AUTH__LOCKOUT_WIDE_THRESHOLD": "4",
    "MSSGW_AUTH__LOCKOUT_BASE_DELAY": "60",
}
ACCOUNTS = [f"cible{n}@{DOMAIN}" for n in range(1, 11)]
WRONG = "not-the-password"
SMTP_FAILED = (535, b"5.7.8 Authentication credentials invalid")
SMTP_LOCKED = re.compile(rb"4\.7\.0 Too many failed logins, try again in 6[01] s")
IMAP_FAILED = r"^\[AUTHENTICATIONFAILED\] Authentication failed$"
IMAP_LOCKED = r"^\[UNAVAILABLE\] Too many failed logins, try again in 6[01] s$"
IMAP_STILL_LOCKED = r"^\[UNAVAILABLE\] Too many failed logins, try again in [1-5][0-9] s$"


def _provisioned(template_node: NodeDir, where: Path) -> NodeDir:
    node = copy_node(template_node, where)
    digest = hash_password(PASSWORD)

    async def job(n: Node) -> None:
        for address in ACCOUNTS:
            await n.mailboxes.create(address, "ORG", service="Lock-out", password_hash=digest)

    run(node, job)
    return node


@pytest.fixture(scope="module")
def guarded(template_node: NodeDir, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    yield from serve(_provisioned(template_node, tmp_path_factory.mktemp("lockout") / "node"), SETTINGS)


def smtp(gw: Gateway, source: str, *, implicit: bool = False) -> smtplib.SMTP:
    """A submission session from loopback address `source`, under TLS, not logged in."""
    if implicit:
        client: smtplib.SMTP = smtplib.SMTP_SSL(
            "127.0.0.1", gw.port("submissions"), timeout=30, context=gw.tls(), source_address=(source, 0)
        )
        client.ehlo("guesser.example")
        return client
    client = smtplib.SMTP("127.0.0.1", gw.port("submission"), timeout=30, source_address=(source, 0))
    client.starttls(context=gw.tls())
    client.ehlo("guesser.example")
    return client


def plain(client: smtplib.SMTP, user: str, password: str) -> tuple[int, bytes]:
    """One AUTH PLAIN attempt (smtplib.login would try every mechanism in turn)."""
    return client.docmd("AUTH", "PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode())


def login_mechanism(client: smtplib.SMTP, user: str, password: str) -> tuple[int, bytes]:
    """One AUTH LOGIN attempt, user name and password as two challenges' answers."""
    code, _ = client.docmd("AUTH", "LOGIN " + base64.b64encode(user.encode()).decode())
    if code != 334:
        return code, _
    return client.docmd(base64.b64encode(password.encode()).decode())


class SourcedIMAP(imaplib.IMAP4_SSL):
    """imaplib over 993 from a chosen loopback address."""

    def __init__(self, gw: Gateway, source: str) -> None:
        self.source = source
        super().__init__("127.0.0.1", gw.port("imaps"), ssl_context=gw.tls(), timeout=30)

    def _create_socket(self, timeout: float | None) -> ssl.SSLSocket:
        sock = socket.create_connection((self.host, self.port), timeout, source_address=(self.source, 0))
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


def refusal(exc: imaplib.IMAP4.error) -> str:
    """The text of a tagged NO (imaplib gives LOGIN's as the repr of bytes, AUTHENTICATE's as text)."""
    text = str(exc)
    return str(ast.literal_eval(text).decode()) if text.startswith("b'") else text


def imap_login(gw: Gateway, source: str, user: str, password: str) -> str:
    """LOGIN over 993 from `source`: "OK", or the refusal's text."""
    client = SourcedIMAP(gw, source)
    try:
        return client.login(user, password)[0]  # type: ignore[no-any-return]
    except imaplib.IMAP4.error as exc:
        return refusal(exc)
    finally:
        client.shutdown()


def imap_authenticate(gw: Gateway, source: str, user: str, password: str) -> str:
    client = SourcedIMAP(gw, source)
    try:
        return client.authenticate("PLAIN", lambda _: f"\0{user}\0{password}".encode())[0]  # type: ignore[no-any-return]
    except imaplib.IMAP4.error as exc:
        return refusal(exc)
    finally:
        client.shutdown()


def test_smtp_guesses_lock_imap_too(guarded: Gateway) -> None:
    source, target = "127.0.0.11", ACCOUNTS[0]
    client = smtp(guarded, source)
    assert plain(client, target, WRONG) == SMTP_FAILED
    assert plain(client, target, WRONG) == SMTP_FAILED  # the threshold: locked for 60 s
    client.close()
    assert re.match(IMAP_LOCKED, imap_login(guarded, source, target, PASSWORD))  # the right password, too
    assert re.match(IMAP_LOCKED, imap_authenticate(guarded, source, target, PASSWORD))
    locked = guarded.node.cli("audit", "search", "--event", "imap.login.locked", "--json").json()
    assert locked[-1]["response"]["login"] == target  # type: ignore[index]


def test_imap_guesses_lock_smtp_too_on_both_ports_and_mechanisms(guarded: Gateway) -> None:
    source, target = "127.0.0.12", ACCOUNTS[1]
    assert re.match(IMAP_FAILED, imap_login(guarded, source, target, WRONG))
    assert re.match(IMAP_FAILED, imap_authenticate(guarded, source, target, WRONG))
    for implicit in (False, True):
        client = smtp(guarded, source, implicit=implicit)
        code, text = plain(client, target, PASSWORD)
        assert code == 454, text
        assert SMTP_LOCKED.fullmatch(text), text
        code, text = login_mechanism(client, target, PASSWORD)
        assert code == 454, text
        assert SMTP_LOCKED.fullmatch(text), text
        client.close()


def test_the_lock_is_for_that_account_from_that_address(guarded: Gateway) -> None:
    """After the pair is locked, the same account from another address, and another account from the same
    address, still log in: the pair threshold does not lock the user or the site out."""
    source, target = "127.0.0.13", ACCOUNTS[2]
    client = smtp(guarded, source)
    assert login_mechanism(client, target, WRONG) == SMTP_FAILED
    assert login_mechanism(client, target, WRONG) == SMTP_FAILED
    code, text = plain(client, target, PASSWORD)
    assert code == 454
    assert SMTP_LOCKED.fullmatch(text)
    client.close()
    assert imap_login(guarded, "127.0.0.14", target, PASSWORD) == "OK"
    assert imap_login(guarded, source, ACCOUNTS[3], PASSWORD) == "OK"


def test_unknown_accounts_are_answered_like_bad_passwords_and_counted(guarded: Gateway) -> None:
    source, nobody = "127.0.0.15", f"personne@{DOMAIN}"
    client = smtp(guarded, source)
    assert plain(client, nobody, WRONG) == SMTP_FAILED  # the same reply as a bad password
    client.close()
    assert re.match(IMAP_FAILED, imap_login(guarded, source, nobody, WRONG))
    # Two failures for that (unknown) account from this address: locked like a real one, same reply.
    assert re.match(IMAP_LOCKED, imap_login(guarded, source, nobody, WRONG))


def test_one_address_spraying_many_accounts_is_locked(guarded: Gateway) -> None:
    """One failure per account (under the pair threshold) on four accounts: the address is locked (wide
    threshold 4), for every account, over both protocols."""
    source = "127.0.0.16"
    for target in ACCOUNTS[4:6]:
        client = smtp(guarded, source)
        assert plain(client, target, WRONG) == SMTP_FAILED
        client.close()
    for target in ACCOUNTS[6:8]:
        assert re.match(IMAP_FAILED, imap_login(guarded, source, target, WRONG))
    assert re.match(IMAP_LOCKED, imap_login(guarded, source, ACCOUNTS[8], PASSWORD))
    client = smtp(guarded, source)
    code, text = plain(client, ACCOUNTS[8], PASSWORD)
    assert code == 454
    assert SMTP_LOCKED.fullmatch(text)
    client.close()
    assert imap_login(guarded, "127.0.0.17", ACCOUNTS[8], PASSWORD) == "OK"  # elsewhere, the owner is fine


def test_a_distributed_guesser_does_not_lock_the_owner_out_of_their_usual_address(guarded: Gateway) -> None:
    """Four addresses guessing one account (one failure each) lock the account everywhere (wide threshold),
    except at the address its owner logged in from before (OWASP: no lock-out of a user by a stranger)."""
    target, home = ACCOUNTS[9], "127.0.0.20"
    assert imap_login(guarded, home, target, PASSWORD) == "OK"  # the owner's usual place
    for n in range(21, 25):
        assert re.match(IMAP_FAILED, imap_login(guarded, f"127.0.0.{n}", target, WRONG))
    assert re.match(IMAP_LOCKED, imap_login(guarded, "127.0.0.25", target, PASSWORD))  # a new address
    assert imap_login(guarded, home, target, PASSWORD) == "OK"


def test_a_restart_does_not_forgive_and_the_operator_unlocks_a_running_node(
    template_node: NodeDir, tmp_path: Path
) -> None:
    """The counters outlive the node (gateway/store/logins.py): a guesser locked before a restart is still
    locked after it. `mssgw mailbox unlock`, run beside the serving node, frees the account there."""
    node = _provisioned(template_node, tmp_path / "node")
    source, target = "127.0.0.40", ACCOUNTS[0]
    first = serve(node, SETTINGS)
    gw = next(first)
    assert re.match(IMAP_FAILED, imap_login(gw, source, target, WRONG))
    assert re.match(IMAP_FAILED, imap_login(gw, source, target, WRONG))  # the threshold: locked for 60 s
    locked_at = time.monotonic()
    first.close()  # SIGTERM: the node writes what its counters still owe the database, and stops
    second = serve(node, SETTINGS)
    gw = next(second)
    try:
        assert re.match(IMAP_STILL_LOCKED, imap_login(gw, source, target, PASSWORD))  # the right password, too
        assert imap_login(gw, "127.0.0.41", target, PASSWORD) == "OK"  # the pair's lock: elsewhere, free
        r = node.cli("mailbox", "unlock", target, "--json")
        assert r.code == 0, r.err
        assert r.json() == {
            "address": target,
            "removed": [
                {"kind": "account", "account": target},  # 2 failures: under the wide threshold (4)
                {"kind": "pair", "account": target, "client": source},
            ],
        }
        time.sleep(max(0.0, locked_at + CONFIRM_AFTER + 0.5 - time.monotonic()))
        assert imap_login(gw, source, target, PASSWORD) == "OK"
    finally:
        second.close()
