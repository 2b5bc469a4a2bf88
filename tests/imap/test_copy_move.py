"""COPY / UID COPY (RFC 3501 §6.4.7, COPYUID RFC 4315 §3) and MOVE / UID MOVE (RFC 6851)."""

from __future__ import annotations

import re

from tests.imap.conftest import Box, Raw, message
from tests.smtp.conftest import PASSWORD


def login(box: Box) -> Raw:
    raw = Raw(box.gw)
    assert raw.command("l", f'LOGIN {box.address} "{PASSWORD}"')[-1].startswith(b"l OK")
    assert raw.command("s", "SELECT INBOX")[-1] == b"s OK [READ-WRITE] SELECT completed"
    return raw


def validity(raw: Raw, folder: str) -> int:
    reply = raw.command("v", f"STATUS {folder} (UIDVALIDITY)")
    found = re.fullmatch(rb"\* STATUS \S+ \(UIDVALIDITY (\d+)\)", reply[0])
    assert found is not None
    return int(found.group(1))


def test_copy_answers_copyuid_and_keeps_flags(box: Box) -> None:
    for n in (1, 2, 3):
        box.put(message(n), flags=["\\Flagged"] if n == 2 else [])
    raw = login(box)
    archive = validity(raw, "Archive")
    assert raw.command("a1", "COPY 2:3 Archive") == [f"a1 OK [COPYUID {archive} 2:3 1:2] COPY completed".encode()]
    assert raw.command("a2", "UID COPY 1,3 Archive") == [
        f"a2 OK [COPYUID {archive} 1,3 3:4] UID COPY completed".encode()
    ]
    assert raw.command("a3", "COPY 1 Nulle") == [b"a3 NO [TRYCREATE] no folder Nulle"]
    raw.command("a4", "EXAMINE Archive")
    assert raw.command("a5", "FETCH 1:* (UID FLAGS)") == [
        b"* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent))",  # EXAMINE shows \\Recent (RFC 3501 §6.3.2)
        b"* 2 FETCH (UID 2 FLAGS (\\Recent))",
        b"* 3 FETCH (UID 3 FLAGS (\\Recent))",
        b"* 4 FETCH (UID 4 FLAGS (\\Recent))",
        b"a5 OK FETCH completed",
    ]
    raw.close()


def test_move_expunges_from_the_source(box: Box) -> None:
    for n in (1, 2, 3):
        box.put(message(n))
    raw = login(box)
    trash = validity(raw, "Trash")
    assert raw.command("a1", "MOVE 1,3 Trash") == [
        f"* OK [COPYUID {trash} 1,3 1:2] Moved".encode(),
        b"* 3 EXPUNGE",
        b"* 1 EXPUNGE",
        b"a1 OK MOVE completed",
    ]
    assert raw.command("a2", "UID MOVE 2 Archive")[-2:] == [b"* 1 EXPUNGE", b"a2 OK UID MOVE completed"]
    assert raw.command("a3", "STATUS Trash (MESSAGES)")[0] == b"* STATUS Trash (MESSAGES 2)"
    events = box.gw.node.cli("audit", "search", "--event", "imap.move", "--principal", box.address, "--json")
    assert [(e["response"]["to"], e["response"]["uids"]) for e in events.json()] == [  # type: ignore[index]
        ("Trash", [1, 3]),
        ("Archive", [2]),
    ]
    raw.close()
