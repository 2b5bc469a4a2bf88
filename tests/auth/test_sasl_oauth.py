"""The SASL messages of OAUTHBEARER (RFC 7628 §3.1, its §4 examples) and XOAUTH2, and their error challenge."""

from __future__ import annotations

import json

import pytest

from gateway.auth.sasl_oauth import BearerResponse, error_challenge, parse_oauthbearer, parse_xoauth2

TOKEN = "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="


def test_rfc_7628_examples() -> None:
    # §4.1 (IMAP) and §4.2 (SMTP): the client response, with host and port pairs.
    got = parse_oauthbearer(
        b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer " + TOKEN.encode() + b"\x01\x01"
    )
    assert got == BearerResponse("user@example.com", TOKEN)
    assert TOKEN not in repr(got)
    got = parse_oauthbearer(b"n,,\x01auth=Bearer " + TOKEN.encode() + b"\x01\x01")
    assert got == BearerResponse(None, TOKEN)
    # RFC 5801 saslname escapes, the y flag, a case-insensitive scheme
    got = parse_oauthbearer(b"y,a=a=2Cb=3Dc@example.com,\x01auth=bearer  abc.def-ghi\x01\x01")
    assert got == BearerResponse("a,b=c@example.com", "abc.def-ghi")


def test_xoauth2() -> None:
    got = parse_xoauth2(b"user=claire.martin@ch-test.mssante.fr\x01auth=Bearer " + TOKEN.encode() + b"\x01\x01")
    assert got == BearerResponse("claire.martin@ch-test.mssante.fr", TOKEN)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"n,,\x01auth=Bearer abc\x01", "two \\^A"),
        (b"n,,", "no \\^A after the GS2 header"),
        (b"n,,auth=Bearer abc\x01\x01", "flag,authzid,"),
        (b"p=tls-unique,,\x01auth=Bearer abc\x01\x01", "channel binding"),
        (b"x,,\x01auth=Bearer abc\x01\x01", "flag is not n or y"),
        (b"n,u=claire,\x01auth=Bearer abc\x01\x01", "not a=name"),
        (b"n,a=,\x01auth=Bearer abc\x01\x01", "not a=name"),
        (b"n,a=x=41y,\x01auth=Bearer abc\x01\x01", "bad = escape"),
        (b"n,a=\xff,\x01auth=Bearer abc\x01\x01", "not UTF-8"),
        (b"n,a=x,y,\x01auth=Bearer abc\x01\x01", "flag,authzid,"),
        (b"n,,\x01host=a\x01\x01", "no auth=Bearer"),
        (b"n,,\x01auth=Basic abc\x01\x01", "not Bearer"),
        (b"n,,\x01auth=Bearer \x01\x01", "not Bearer"),
        (b"n,,\x01auth=Bearer a b\x01\x01", "not Bearer"),
        (b"n,,\x01auth=Bearer abc\x01auth=Bearer def\x01\x01", "repeated"),
        (b"n,,\x01au th=x\x01auth=Bearer abc\x01\x01", "malformed"),
        (b"n,,\x01auth=Bearer abc\x01host=\x00\x01\x01", "malformed"),
        (b"n,,\x01" + b"x=" + b"a" * 12300 + b"\x01\x01", "over 12288"),
    ],
)
def test_malformed_oauthbearer(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_oauthbearer(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"auth=Bearer abc\x01\x01", "no user="),
        (b"user=\x01auth=Bearer abc\x01\x01", "no user="),
        (b"user=\xff\x01auth=Bearer abc\x01\x01", "malformed"),  # not VCHAR
        (b"user=a@b.fr\x01auth=Bearer abc", "two \\^A"),
        (b"user=a@b.fr\x01\x01", "no auth=Bearer"),
    ],
)
def test_malformed_xoauth2(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_xoauth2(data)


def test_error_challenges() -> None:
    oauthbearer = json.loads(error_challenge("OAUTHBEARER", scope="openid", openid_configuration="https://idp/x"))
    assert oauthbearer == {"status": "invalid_token", "scope": "openid", "openid-configuration": "https://idp/x"}
    xoauth2 = json.loads(error_challenge("XOAUTH2", scope="openid", openid_configuration="https://idp/x"))
    assert xoauth2 == {"status": "401", "schemes": "bearer", "scope": "openid"}
