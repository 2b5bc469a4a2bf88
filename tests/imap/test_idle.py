"""IDLE (RFC 2177): a delivery through SMTP reaches an idling client within a second; DONE ends it."""

from __future__ import annotations

import time

from tests.imap.conftest import Box, Raw, message
from tests.smtp.conftest import PASSWORD


def login(box: Box) -> Raw:
    raw = Raw(box.gw)
    assert raw.command("l", f'LOGIN {box.address} "{PASSWORD}"')[-1].startswith(b"l OK")
    assert raw.command("s", "SELECT INBOX")[-1] == b"s OK [READ-WRITE] SELECT completed"
    return raw


def test_idle_reports_a_delivery_and_ends_on_done(box: Box) -> None:
    raw = login(box)
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
    idler, other = login(box), login(box)
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
