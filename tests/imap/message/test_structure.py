"""ENVELOPE / BODYSTRUCTURE building blocks: IMAP strings, addresses, MIME parameters.

The expected values were checked against Dovecot 2.3.19.1 (the whole-message cases are also in the
recorded corpus); these tests pin the rules one at a time.
"""

from __future__ import annotations

import pytest

from gateway.imap.message import bodystructure, envelope, parse
from gateway.imap.message.quote import nstring, nstring_nolf, string_for_humans
from gateway.imap.message.rfc822 import Scanner, parse_addresses, parse_parameters


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (None, b"NIL"),
        (b"", b'""'),
        (b"plain", b'"plain"'),
        (b'a "b" \\c', b'"a \\"b\\" \\\\c"'),  # up to four escapes: still quoted
        (b'""""\\', b'{5}\r\n""""\\'),  # a fifth: a literal is shorter
        (b"caf\xc3\xa9", b"{5}\r\ncaf\xc3\xa9"),  # 8-bit never goes in a quoted string (RFC 3501 §4.3)
        (b"a\r\nb", b"{4}\r\na\r\nb"),
        (b"a\x00b", b'"a"'),  # a NUL ends the value, as C strings do
    ],
)
def test_nstring(value: bytes | None, wire: bytes) -> None:
    assert nstring(value) == wire


def test_nstring_nolf_unfolds() -> None:
    assert nstring_nolf(b"Thu, 13 Jun 2024\n 15:00:00") == b'"Thu, 13 Jun 2024 15:00:00"'
    assert nstring_nolf(b"a\nb") == b'"a b"'  # no white space at the fold: one is inserted


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (b"Compte rendu", b'"Compte rendu"'),
        (b"", b'""'),
        (b" \t ", b'""'),
        (b"  a  b\n\tc  ", b"{5}\r\na b c"),
        (b'say "hi"', b'{8}\r\nsay "hi"'),  # any quote: a literal, even without folding
        (b"R\xc3\xa9sultats", b"{10}\r\nR\xc3\xa9sultats"),
        (b"a\x00b", b"{3}\r\na\x80b"),
    ],
)
def test_string_for_humans(value: bytes, wire: bytes) -> None:
    assert string_for_humans(value) == wire


def addresses(value: bytes) -> list[tuple[bytes | None, bytes | None, bytes | None, bytes | None]]:
    return [(a.name, a.route, a.mailbox, a.domain) for a in parse_addresses(value)]


def test_addresses() -> None:
    assert addresses(b'"Martin, Jean" <jean.martin@ch.fr>, b@c.fr') == [
        (b"Martin, Jean", None, b"jean.martin", b"ch.fr"),
        (None, None, b"b", b"c.fr"),
    ]
    # RFC 5322 §3.4 groups, RFC 3501 §7.4.2 markers
    assert addresses(b"Team: a@x.fr, b@y.fr;, c@z.fr") == [
        (None, None, b"Team", None),
        (None, None, b"a", b"x.fr"),
        (None, None, b"b", b"y.fr"),
        (None, None, None, None),
        (None, None, b"c", b"z.fr"),
    ]
    assert addresses(b"undisclosed-recipients:;") == [(None, None, b"undisclosed-recipients", None), (None,) * 4]
    # obsolete route (RFC 5322 §4.4), the comment as a name when there is no phrase
    assert addresses(b"<@a.example,@b.example:u@c.example>") == [(None, b"@a.example,@b.example", b"u", b"c.example")]
    assert addresses(b"u@c.example (Jean Martin)") == [(b"Jean Martin", None, b"u", b"c.example")]
    assert addresses(b"") == []


def test_broken_addresses_keep_what_was_readable() -> None:
    assert addresses(b"localonly") == [(None, None, b"localonly", b"MISSING_DOMAIN")]
    assert addresses(b"<>") == [(None, None, b"MISSING_MAILBOX", b"MISSING_DOMAIN")]
    assert addresses(b'"Display Only"') == [(b"Display Only", None, b"MISSING_MAILBOX", b"MISSING_DOMAIN")]
    assert addresses(b"Name <broken") == [(b"Name", None, b"broken", b"SYNTAX_ERROR")]
    assert addresses(b"<@route-without-colon") == [(None, b"INVALID_ROUTE", b"MISSING_MAILBOX", b"SYNTAX_ERROR")]


def test_second_from_field_is_not_hidden() -> None:
    """Two From: fields: ENVELOPE reports both mailboxes, so a client cannot be shown one address
    while another was checked (Dovecot merges repeated address fields for this reason)."""
    msg = parse(b"From: checked@ch.fr\r\nFrom: shown@evil.example\r\nSubject: s\r\n\r\nx\r\n")
    assert envelope(msg) == (
        b'(NIL "s" ((NIL NIL "checked" "ch.fr")(NIL NIL "shown" "evil.example")) '
        b'((NIL NIL "checked" "ch.fr")(NIL NIL "shown" "evil.example")) '
        b'((NIL NIL "checked" "ch.fr")(NIL NIL "shown" "evil.example")) NIL NIL NIL NIL NIL)'
    )


def params(value: bytes) -> list[tuple[bytes, bytes]]:
    return parse_parameters(Scanner(value))


def test_parameters() -> None:
    """RFC 2045 §5.1 parameters; RFC 2231 continuations merged, values left encoded."""
    assert params(b'; charset="utf-8"; format=flowed') == [(b"charset", b"utf-8"), (b"format", b"flowed")]
    assert params(b"; name*0*=utf-8''a%20; name*1=b%.pdf") == [(b"name*", b"utf-8''a%20b%25.pdf")]
    assert params(b"; name*0=a; name*2=c") == [(b"name*0", b"a"), (b"name*2", b"c")]  # a gap: not RFC 2231
    # After a broken parameter the rest is skipped octet by octet to the next ";" ... which the
    # broken one already reached, so "ok" is lost too: Dovecot's answer, kept.
    assert params(b"; broken; ok=1") == []
    assert params(b"; n==?utf-8?q?x?=") == [(b"n", b"=?utf-8?q?x?=")]
    assert params(b"; " + b"x" * 200 + b"; ok=1") == []  # garbage: at most 128 steps (RFC2231_MAX_PARAMS)


def test_text_part_without_charset_gets_us_ascii_appended() -> None:
    msg = parse(b"Content-Type: TEXT/HTML; name=a.html\r\n\r\n<p>x</p>\r\n")
    assert bodystructure(msg, False) == b'("TEXT" "HTML" ("name" "a.html" "charset" "us-ascii") NIL NIL "7bit" 10 1)'


def test_smime_parts() -> None:
    """S/MIME shapes (RFC 8551 §3.4-§3.5) are ordinary MIME for BODYSTRUCTURE: multipart/signed
    keeps protocol and micalg, pkcs7-mime keeps smime-type and name."""
    signed = parse(
        b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256; boundary=s\r\n\r\n'
        b"--s\r\nContent-Type: text/plain\r\n\r\nsigned text\r\n"
        b"--s\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"MIIB\r\n--s--\r\n"
    )
    assert bodystructure(signed, True) == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 11 0 NIL NIL NIL NIL)'
        b'("application" "pkcs7-signature" ("name" "smime.p7s") NIL NIL "base64" 4 NIL NIL NIL NIL) "signed" '
        b'("protocol" "application/pkcs7-signature" "micalg" "sha-256" "boundary" "s") NIL NIL NIL)'
    )
    enveloped = parse(
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHA6CAMIACAQAx\r\n"
    )
    assert bodystructure(enveloped, False) == (
        b'("application" "pkcs7-mime" ("smime-type" "enveloped-data" "name" "smime.p7m") NIL NIL "base64" 30)'
    )
