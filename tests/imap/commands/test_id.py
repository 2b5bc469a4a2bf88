"""ID (RFC 2971): in every state; the client's identification is a parenthesised list of string / nstring
pairs or NIL (§3.1, §4), at most 30 pairs, field names of at most 30 octets, values of at most 1024 (§3.3);
the server answers its own identity in `* ID` (§3.2) and does not record the client's.
"""

from __future__ import annotations

import imaplib

import pytest

from tests.imap.conftest import Box, Raw
from tests.smtp.conftest import Gateway

SERVER_ID = b'* ID ("name" "mssgw" "vendor" "mssgw")'


def test_id_nil_before_tls(imap_gw: Gateway) -> None:
    raw = Raw(imap_gw, tls=False)
    assert raw.command("a1", "ID NIL") == [SERVER_ID, b"a1 OK ID completed"]
    assert raw.command("a2", "id nil") == [SERVER_ID, b"a2 OK ID completed"]
    raw.close()


def test_id_with_a_list_in_every_state(box: Box) -> None:
    raw = Raw(box.gw)
    client_id = '("name" "Thunderbird" "version" "128.3.0" "os" NIL)'
    assert raw.command("a1", f"ID {client_id}") == [SERVER_ID, b"a1 OK ID completed"]
    raw.close()
    raw = box.raw()
    assert raw.command("a2", f"ID {client_id}") == [SERVER_ID, b"a2 OK ID completed"]
    assert raw.command("s", "SELECT INBOX")[-1] == b"s OK [READ-WRITE] SELECT completed"
    assert raw.command("a3", "ID ()") == [SERVER_ID, b"a3 OK ID completed"]  # `#` allows an empty list
    raw.send(b'a4 ID ("name" {5}\r\n')  # a value as a literal
    assert raw.line() == b"+ Ready for literal data"
    raw.send(b"mutt!)\r\n")
    assert raw.until(b"a4") == [SERVER_ID, b"a4 OK ID completed"]
    raw.close()


def test_id_syntax_errors(imap_gw: Gateway) -> None:
    raw = Raw(imap_gw)
    assert raw.command("a1", "ID") == [b"a1 BAD missing ID parameters"]
    assert raw.command("a2", 'ID ("name")') == [b"a2 BAD missing ID field value"]
    assert raw.command("a3", 'ID (name "x")') == [
        b"a3 BAD invalid ID field name: expected a quoted string or a literal"
    ]
    assert raw.command("a4", 'ID ("name" "a" "NAME" "b")') == [b"a4 BAD duplicate ID field NAME"]
    assert raw.command("a5", 'ID ("name" "a"') == [b"a5 BAD missing ) after ID parameters"]
    assert raw.command("a6", 'ID ("name" "a") extra') == [b"a6 BAD unexpected extra arguments"]
    assert raw.command("a7", 'ID "name"') == [b"a7 BAD expected ( before ID parameters"]
    assert raw.command("a8", f'ID ("{"f" * 31}" "x")') == [b"a8 BAD ID field name longer than 30 octets"]
    assert raw.command("a9", f'ID ("name" "{"v" * 1025}")') == [b"a9 BAD ID field value longer than 1024 octets"]
    pairs = " ".join(f'"f{n}" "v"' for n in range(31))
    assert raw.command("a10", f"ID ({pairs})") == [b"a10 BAD more than 30 ID fields"]
    pairs = " ".join(f'"f{n}" "v"' for n in range(30))  # the limits themselves are fine
    assert raw.command("a11", f"ID ({pairs})") == [SERVER_ID, b"a11 OK ID completed"]
    assert raw.command("a12", f'ID ("{"f" * 30}" "{"v" * 1024}")') == [SERVER_ID, b"a12 OK ID completed"]
    raw.close()


def test_the_client_identity_is_not_recorded(imap_gw: Gateway, box: Box) -> None:
    raw = box.raw()
    marker = "Poste-Dr-Martin-Cabinet-12"
    assert raw.command("a1", f'ID ("name" "{marker}")') == [SERVER_ID, b"a1 OK ID completed"]
    raw.close()
    events = imap_gw.node.cli("audit", "search", "--principal", box.address, "--json").json()
    assert [e["response"] for e in events] == [{"result": "done", "mechanism": "LOGIN"}]  # type: ignore[index]
    assert marker not in str(events)


def test_imaplib_id(box: Box, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(imaplib.Commands, "ID", ("AUTH", "SELECTED"))  # imaplib has no ID of its own
    client = box.login()
    assert client._simple_command("ID", '("name" "imaplib")') == ("OK", [b"ID completed"])
    assert client.untagged_responses["ID"] == [b'("name" "mssgw" "vendor" "mssgw")']
    client.logout()
