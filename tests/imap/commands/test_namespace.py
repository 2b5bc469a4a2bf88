"""NAMESPACE (RFC 2342 §5): authenticated and selected states; one personal namespace with the prefix ""
and the hierarchy delimiter "/" (the one LIST answers, RFC 3501 §6.3.8), no other users' and no shared
namespaces (NIL NIL).
"""

from __future__ import annotations

from tests.imap.conftest import Box, Raw
from tests.smtp.conftest import Gateway

REPLY = b'* NAMESPACE (("" "/")) NIL NIL'


def test_namespace_once_authenticated_and_selected(box: Box) -> None:
    raw = box.raw()
    assert raw.command("a1", "NAMESPACE") == [REPLY, b"a1 OK NAMESPACE completed"]
    assert raw.command("a2", 'LIST "" ""') == [b'* LIST (\\Noselect) "/" ""', b"a2 OK LIST completed"]
    assert raw.command("s", "SELECT INBOX")[-1] == b"s OK [READ-WRITE] SELECT completed"
    assert raw.command("a3", "namespace") == [REPLY, b"a3 OK NAMESPACE completed"]
    raw.close()


def test_namespace_before_login_is_bad(imap_gw: Gateway) -> None:
    raw = Raw(imap_gw, tls=False)
    assert raw.command("a1", "NAMESPACE") == [b"a1 BAD NAMESPACE is not allowed in the not authenticated state"]
    raw.close()
    raw = Raw(imap_gw)
    assert raw.command("a2", "NAMESPACE") == [b"a2 BAD NAMESPACE is not allowed in the not authenticated state"]
    raw.close()


def test_namespace_takes_no_arguments(box: Box) -> None:
    raw = box.raw()
    assert raw.command("a1", "NAMESPACE INBOX") == [b"a1 BAD unexpected extra arguments"]
    assert raw.command("a2", "NAMESPACE") == [REPLY, b"a2 OK NAMESPACE completed"]
    raw.close()


def test_imaplib_namespace(box: Box) -> None:
    client = box.login()
    assert client.namespace() == ("OK", [b'(("" "/")) NIL NIL'])
    client.logout()
