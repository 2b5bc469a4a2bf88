"""LOGIN (RFC 3501 §6.2.3): refused before TLS (LOGINDISABLED, RFC 2595 §3.1; `NO [PRIVACYREQUIRED]`, RFC 5530
§3), quoted, atom and literal arguments (§4.3, RFC 7888 LITERAL+), the capabilities in the tagged OK (§7.1),
`NO [AUTHENTICATIONFAILED]` for every refused credential (RFC 5530 §3), audited without the password.

Few failed logins here: each counts toward the lock-out of 127.0.0.1 on this module's node
(gateway/auth/lockout.py).
"""

from __future__ import annotations

import imaplib
import secrets

import pytest

from tests.conftest import DOMAIN
from tests.imap.commands.test_capability import AFTER_LOGIN
from tests.imap.conftest import Box, Raw, connect
from tests.smtp.conftest import PASSWORD, Gateway

LOGGED_IN = b"OK [CAPABILITY " + AFTER_LOGIN.encode() + b"] Logged in"


def audit(gw: Gateway, event: str) -> list[dict[str, object]]:
    return gw.node.cli("audit", "search", "--event", event, "--json").json()  # type: ignore[return-value]


def test_login_before_tls_is_refused(imap_gw: Gateway, box: Box) -> None:
    raw = Raw(imap_gw, tls=False)
    assert raw.command("a1", f'LOGIN {box.address} "{PASSWORD}"') == [
        b"a1 NO [PRIVACYREQUIRED] LOGIN is disabled before STARTTLS"
    ]
    assert raw.command("a2", "AUTHENTICATE PLAIN") == [b"a2 NO [PRIVACYREQUIRED] authentication requires TLS"]
    raw.close()


def test_bad_password_is_no_and_audited(imap_gw: Gateway, box: Box) -> None:
    client = connect(imap_gw)
    with pytest.raises(imaplib.IMAP4.error, match=r"\[AUTHENTICATIONFAILED\] Authentication failed"):
        client.login(box.address, "not the password")
    client.login(box.address, PASSWORD)  # below the lock-out threshold: the right password works
    client.logout()
    events = imap_gw.node.cli("audit", "search", "--event", "imap.login.failed", "--json").json()
    mine = [e for e in events if e["response"].get("login") == box.address]  # type: ignore[index,union-attr]
    assert [e["response"]["reason"] for e in mine] == ["bad-password"]  # type: ignore[index]
    assert "not the password" not in str(events)


def test_login_answers_capabilities_and_logout(imap_gw: Gateway, box: Box) -> None:
    client = connect(imap_gw)
    typ, data = client.login(box.address, PASSWORD)
    assert (typ, data) == ("OK", [b"[CAPABILITY " + AFTER_LOGIN.encode() + b"] Logged in"])
    typ, data = client.capability()  # imaplib also keeps the login's CAPABILITY code: the last is ours
    assert (typ, data[-1]) == ("OK", AFTER_LOGIN.encode())
    assert client.logout() == ("BYE", [b"mssgw logging out"])


def test_implicit_tls_login(imap_gw: Gateway, box: Box) -> None:
    client = connect(imap_gw, tls="implicit")
    assert client.login(box.address, PASSWORD)[0] == "OK"
    client.logout()


def test_raw_login_is_audited_with_its_mechanism(imap_gw: Gateway, box: Box) -> None:
    raw = Raw(imap_gw)
    assert raw.command("a1", f'LOGIN {box.address} "{PASSWORD}"') == [b"a1 " + LOGGED_IN]
    assert raw.command("a2", "NOOP") == [b"a2 OK NOOP completed"]  # authenticated: the session goes on
    raw.close()
    mine = [e for e in audit(imap_gw, "imap.login.succeeded") if e["principal"] == box.address]
    assert [(e["author"], e["response"]) for e in mine] == [
        (f"imap:{box.address}", {"result": "done", "mechanism": "LOGIN"})
    ]


def test_login_arguments_as_atoms_quoted_strings_and_literals(imap_gw: Gateway, box: Box) -> None:
    raw = Raw(imap_gw)  # atom user name, quoted password with an escaped quote: refused like any bad password
    user, password = box.address.encode(), PASSWORD.encode()
    raw.send(b"a1 LOGIN {%d}\r\n" % len(user))  # synchronising literals: "+" before each (RFC 3501 §7.5)
    assert raw.line() == b"+ Ready for literal data"
    raw.send(user + b" {%d}\r\n" % len(password))
    assert raw.line() == b"+ Ready for literal data"
    raw.send(password + b"\r\n")
    assert raw.until(b"a1") == [b"a1 " + LOGGED_IN]
    raw.close()
    raw = Raw(imap_gw)  # non-synchronising literals (RFC 7888 LITERAL+): no "+" at all
    raw.send(b"b1 LOGIN {%d+}\r\n%s {%d+}\r\n%s\r\n" % (len(user), user, len(password), password))
    assert raw.until(b"b1") == [b"b1 " + LOGGED_IN]
    raw.close()
    raw = Raw(imap_gw)  # the user name in another case, quoted
    assert raw.command("c1", f'LOGIN "{box.address.upper()}" {PASSWORD}') == [b"c1 " + LOGGED_IN]
    assert raw.command("c2", "NAMESPACE")[-1] == b"c2 OK NAMESPACE completed"
    raw.close()


def test_login_syntax_errors_are_bad(imap_gw: Gateway) -> None:
    raw = Raw(imap_gw)
    assert raw.command("a1", "LOGIN") == [b"a1 BAD missing user name"]
    assert raw.command("a2", "LOGIN onlyone") == [b"a2 BAD missing password"]
    assert raw.command("a3", "LOGIN user pass extra") == [b"a3 BAD unexpected extra arguments"]
    assert raw.command("a4", 'LOGIN "user pass') == [b"a4 BAD unterminated quoted user name"]
    assert raw.command("a5", 'LOGIN user "pa\\ss"') == [b"a5 BAD invalid escape \\s in quoted password"]
    assert raw.command("a6", "LOGIN  user pass") == [b"a6 BAD extra space before user name"]
    assert raw.command("a7", "LOGIN (user) pass") == [b"a7 BAD invalid user name"]
    raw.send(b'a8 LOGIN user "pa\x00ss"\r\n')
    assert raw.until(b"a8") == [b"a8 BAD NUL in quoted password"]
    raw.send(b"a9 LOGIN user \xff\xfe\r\n")
    assert raw.until(b"a9") == [b"a9 BAD invalid password"]
    raw.send(b"a10 LOGIN {9000}\r\n")  # before login a literal can only be a name or a password
    assert raw.until(b"a10") == [b"a10 BAD [TOOBIG] literal too big (max 8192 octets)"]
    assert raw.command("a11", "NOOP") == [b"a11 OK NOOP completed"]  # none of these ended the session
    raw.close()


def test_unknown_account_is_refused_like_a_bad_password(imap_gw: Gateway) -> None:
    stranger = f"inconnu-{secrets.token_hex(3)}@{DOMAIN}"
    raw = Raw(imap_gw)
    assert raw.command("a1", f'LOGIN {stranger} "{PASSWORD}"') == [
        b"a1 NO [AUTHENTICATIONFAILED] Authentication failed"
    ]
    assert raw.command("a2", "SELECT INBOX") == [b"a2 BAD SELECT is not allowed in the not authenticated state"]
    raw.close()
    mine = [e for e in audit(imap_gw, "imap.login.failed") if e["response"].get("login") == stranger]  # type: ignore[union-attr]
    assert [e["response"] for e in mine] == [
        {"result": "refused", "login": stranger, "reason": "unknown-account", "locked_for": 0}
    ]
    assert PASSWORD not in str(mine)


def test_login_only_before_authentication(box: Box) -> None:
    raw = box.raw()
    assert raw.command("a1", f'LOGIN {box.address} "{PASSWORD}"') == [
        b"a1 BAD LOGIN is not allowed in the authenticated state"
    ]
    assert raw.command("a2", "SELECT INBOX")[-1] == b"a2 OK [READ-WRITE] SELECT completed"
    assert raw.command("a3", f'LOGIN {box.address} "{PASSWORD}"') == [
        b"a3 BAD LOGIN is not allowed in the selected state"
    ]
    raw.close()
