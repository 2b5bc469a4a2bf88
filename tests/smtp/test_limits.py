"""Session limits: a stalled client is dropped, recipients are capped, password guessing is locked out."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import pytest

from tests.conftest import NodeDir, copy_node
from tests.smtp.conftest import DOCTOR, NURSE, PASSWORD, SECRETARIAT, Gateway, RawSMTP, provision, serve

LIMITS = {
    "MSSGW_SMTP__TIMEOUT": "1.5",
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
    raw = RawSMTP(limited)
    raw.command("AUTH PLAIN " + base64.b64encode(f"\0{DOCTOR}\0{PASSWORD}".encode()).decode())
    assert raw.command(f"MAIL FROM:<{DOCTOR}>")[0] == 250
    assert raw.command(f"RCPT TO:<{NURSE}>")[0] == 250
    assert raw.command("DATA")[0] == 354
    raw.send(b"Subject: half a message\r\n")  # then nothing
    started = time.monotonic()
    code, text = raw.reply()
    waited = time.monotonic() - started
    assert (code, text) == (421, "4.4.2 mail.ch-test.mssante.fr Error: timeout exceeded")
    assert 1.4 < waited < 5
    assert raw.reply() == (0, "connection closed")


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
