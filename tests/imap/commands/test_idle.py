"""IDLE against the real server (RFC 2177): `+ idling`, a delivery over SMTP pushed within a second,
another session's STORE and EXPUNGE pushed, DONE ending it, a line other than DONE, the wrong state.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest

from gateway.auth.passwords import hash_password
from gateway.node import Node
from tests.conftest import DOMAIN, NodeDir, copy_node
from tests.imap.conftest import Box, Raw, message, run
from tests.smtp.conftest import PASSWORD, Gateway, serve


def test_idle_reports_a_delivery_and_ends_on_done(box: Box) -> None:
    raw = box.selected()
    raw.send(b"a1 IDLE\r\n")
    assert raw.line() == b"+ idling"
    client = box.gw.submission(login=None)
    client.login(box.address, PASSWORD)
    started = time.monotonic()
    own = message(1).replace(b"Dr Claire Martin <claire.martin@ch-test.mssante.fr>", box.address.encode())
    client.sendmail(box.address, [box.address], own)
    client.quit()
    assert raw.line() == b"* 1 EXISTS"
    assert raw.line() == b"* 1 RECENT"
    assert time.monotonic() - started < 3  # submission, queue, delivery and the wake-up, well under 3 s
    raw.send(b"DONE\r\n")
    assert raw.line() == b"a1 OK IDLE completed"
    raw.close()


def test_idle_sees_changes_from_another_process_and_other_sessions(box: Box) -> None:
    box.put(message(1))
    idler, other = box.selected(), box.selected()
    idler.send(b"a1 IDLE\r\n")
    assert idler.line() == b"+ idling"
    box.put(message(2))  # written by another process: found by the session's periodic look
    assert idler.line() == b"* 2 EXISTS"
    assert idler.line() == b"* 2 RECENT"  # 1 (since SELECT) and the new 2
    other.command("b1", "STORE 1 +FLAGS.SILENT (\\Deleted)")
    other.command("b2", "EXPUNGE")
    seen = [idler.line()]
    if seen[0] != b"* 1 EXPUNGE":  # the STORE may be reported first, if the idler woke between the two
        seen.append(idler.line())
    assert seen in ([b"* 1 EXPUNGE"], [b"* 1 FETCH (FLAGS (\\Deleted \\Recent))", b"* 1 EXPUNGE"])
    idler.send(b"done\r\n")
    assert idler.line() == b"a1 OK IDLE completed"
    idler.send(b"a2 IDLE\r\n")
    assert idler.line() == b"+ idling"
    idler.send(b"NOT DONE\r\n")
    assert idler.line() == b"a2 BAD expected DONE to end IDLE"
    idler.close()
    other.close()


def test_another_sessions_store_is_pushed_at_once(box: Box) -> None:
    box.put(message(1))
    idler, other = box.selected(), box.selected()
    idler.send(b"c1 IDLE\r\n")
    assert idler.line() == b"+ idling"
    started = time.monotonic()
    assert other.command("c2", "STORE 1 +FLAGS.SILENT (\\Flagged)") == [b"c2 OK STORE completed"]
    assert idler.line() == b"* 1 FETCH (FLAGS (\\Flagged \\Recent))"
    assert time.monotonic() - started < 1
    other.send(b"c3 MOVE 1 Archive\r\n")
    assert idler.line() == b"* 1 EXPUNGE"
    assert other.until(b"c3")[-1] == b"c3 OK MOVE completed"
    idler.send(b"DONE\r\n")
    assert idler.line() == b"c1 OK IDLE completed"
    idler.close()
    other.close()


def test_idle_without_a_selected_folder_and_in_the_wrong_state(box: Box) -> None:
    raw = box.raw()  # authenticated, nothing selected: IDLE is allowed (RFC 2177 §3), and ends on DONE
    raw.send(b"d1 IDLE\r\n")
    assert raw.line() == b"+ idling"
    raw.send(b"DONE\r\n")
    assert raw.line() == b"d1 OK IDLE completed"
    assert raw.command("d2", "IDLE now") == [b"d2 BAD unexpected extra arguments"]
    raw.close()
    unauthenticated = Raw(box.gw)
    assert unauthenticated.command("d3", "IDLE") == [b"d3 BAD IDLE is not allowed in the not authenticated state"]
    unauthenticated.close()


@pytest.fixture(scope="module")
def slow_look(template_node: NodeDir, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A node whose periodic look for IDLE sessions comes every 30 s: only a push reaches them sooner."""
    node = copy_node(template_node, tmp_path_factory.mktemp("idle") / "node")
    yield from serve(node, {"MSSGW_IMAP__IDLE_CHECK": "30"})


def test_close_pushes_its_expunges_to_idle_sessions(slow_look: Gateway) -> None:
    """CLOSE expunges silently (RFC 3501 §6.4.2) and, as EXPUNGE, tells the other sessions at once."""
    box = Box(slow_look, f"close-{secrets.token_hex(3)}@{DOMAIN}")

    async def job(n: Node) -> None:
        await n.mailboxes.create(box.address, "ORG", service="Tests IMAP", password_hash=hash_password(PASSWORD))

    run(slow_look.node, job)
    box.put(message(1))
    idler, other = box.selected(), box.selected()
    idler.send(b"c1 IDLE\r\n")
    assert idler.line() == b"+ idling"
    assert other.command("c2", "STORE 1 +FLAGS (\\Deleted)")[-1] == b"c2 OK STORE completed"
    assert idler.line() == b"* 1 FETCH (FLAGS (\\Deleted \\Recent))"
    started = time.monotonic()
    assert other.command("c3", "CLOSE") == [b"c3 OK CLOSE completed"]
    assert idler.line() == b"* 1 EXPUNGE"
    assert time.monotonic() - started < 5  # the periodic look would take up to 30 s
    idler.send(b"DONE\r\n")
    assert idler.line() == b"c1 OK IDLE completed"
    idler.close()
    other.close()
