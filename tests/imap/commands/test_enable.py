"""ENABLE (RFC 5161): authenticated state (§3.1); `* ENABLED` lists what this command enabled, possibly
nothing: unknown or unadvertised extensions are ignored (§3.1), and an extension already enabled is not
listed again. Only CONDSTORE can be enabled here; its effects (RFC 7162 §3.1): HIGHESTMODSEQ in every later
SELECT/EXAMINE (§3.1.2.1), UID and MODSEQ in every FETCH response (§3.1.4), for the rest of the connection.
"""

from __future__ import annotations

from tests.imap.conftest import Box, Raw, message
from tests.smtp.conftest import Gateway


def select_lines(raw: Raw, tag: str, command: str = "SELECT INBOX") -> list[bytes]:
    """The SELECT reply without its UIDVALIDITY (different for every mailbox)."""
    return [line for line in raw.command(tag, command) if b"UIDVALIDITY" not in line]


def test_enable_condstore_once(box: Box) -> None:
    raw = box.raw()
    assert raw.command("a1", "ENABLE CONDSTORE") == [b"* ENABLED CONDSTORE", b"a1 OK ENABLE completed"]
    assert raw.command("a2", "ENABLE CONDSTORE") == [b"* ENABLED", b"a2 OK ENABLE completed"]  # already
    raw.close()
    raw = box.raw()
    assert raw.command("b1", "enable condstore X-UNKNOWN") == [b"* ENABLED CONDSTORE", b"b1 OK ENABLE completed"]
    raw.close()


def test_enable_ignores_what_it_cannot_enable(box: Box) -> None:
    raw = box.raw()
    assert raw.command("a1", "ENABLE X-UNKNOWN") == [b"* ENABLED", b"a1 OK ENABLE completed"]
    assert raw.command("a2", "ENABLE QRESYNC UTF8=ACCEPT IMAP4rev2") == [b"* ENABLED", b"a2 OK ENABLE completed"]
    assert raw.command("a3", "ENABLE IDLE") == [b"* ENABLED", b"a3 OK ENABLE completed"]  # not an ENABLE one
    raw.close()


def test_enable_syntax_and_state(imap_gw: Gateway, box: Box) -> None:
    raw = Raw(imap_gw)
    assert raw.command("a1", "ENABLE CONDSTORE") == [b"a1 BAD ENABLE is not allowed in the not authenticated state"]
    raw.close()
    raw = box.raw()
    assert raw.command("a2", "ENABLE") == [b"a2 BAD missing capability name"]
    assert raw.command("a3", "ENABLE ") == [b"a3 BAD missing capability name"]
    assert raw.command("a4", 'ENABLE "CONDSTORE"') == [b"a4 BAD invalid capability name"]
    assert raw.command("a5", "ENABLE (CONDSTORE)") == [b"a5 BAD invalid capability name"]
    raw.close()


def test_condstore_effects_on_select_and_fetch(box: Box) -> None:
    box.put(message(1), flags=["\\Seen"])
    plain = box.raw()  # without ENABLE: no HIGHESTMODSEQ, no MODSEQ
    before = select_lines(plain, "s", "EXAMINE INBOX")
    assert not [line for line in before if b"HIGHESTMODSEQ" in line]
    assert plain.command("f", "FETCH 1 (FLAGS)") == [b"* 1 FETCH (FLAGS (\\Seen \\Recent))", b"f OK FETCH completed"]
    plain.close()
    raw = box.raw()
    assert raw.command("e", "ENABLE CONDSTORE") == [b"* ENABLED CONDSTORE", b"e OK ENABLE completed"]
    after = select_lines(raw, "s", "EXAMINE INBOX")
    highest = [line for line in after if b"HIGHESTMODSEQ" in line]
    assert len(highest) == 1
    modseq = int(highest[0].split(b"HIGHESTMODSEQ ")[1].split(b"]")[0])
    assert highest == [b"* OK [HIGHESTMODSEQ %d] Highest" % modseq]
    assert [line for line in after if line not in highest] == before  # nothing else changed
    assert raw.command("f", "FETCH 1 (FLAGS)") == [
        b"* 1 FETCH (FLAGS (\\Seen \\Recent) UID 1 MODSEQ (%d))" % modseq,
        b"f OK FETCH completed",
    ]
    raw.close()


def test_enable_in_the_selected_state_applies_to_the_selected_folder(box: Box) -> None:
    box.put(message(1))
    raw = box.raw()
    assert raw.command("s", "SELECT INBOX")[-1] == b"s OK [READ-WRITE] SELECT completed"
    assert raw.command("f1", "FETCH 1 (FLAGS)") == [b"* 1 FETCH (FLAGS (\\Recent))", b"f1 OK FETCH completed"]
    assert raw.command("e", "ENABLE CONDSTORE") == [b"* ENABLED CONDSTORE", b"e OK ENABLE completed"]
    reply = raw.command("f2", "FETCH 1 (FLAGS)")
    assert reply[0].startswith(b"* 1 FETCH (FLAGS (\\Recent) UID 1 MODSEQ (")
    assert reply[1:] == [b"f2 OK FETCH completed"]
    raw.close()


def test_select_condstore_enables_it_for_enable(box: Box) -> None:
    raw = box.raw()
    assert raw.command("s", "SELECT INBOX (CONDSTORE)")[-1] == b"s OK [READ-WRITE] SELECT completed"
    assert raw.command("e", "ENABLE CONDSTORE") == [b"* ENABLED", b"e OK ENABLE completed"]  # already on
    raw.close()
