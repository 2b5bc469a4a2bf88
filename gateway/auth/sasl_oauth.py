"""SASL messages of bearer-token logins, OAUTHBEARER (RFC 7628) and XOAUTH2: sans-I/O, bytes in, facts out.

Implementation notes
- OAUTHBEARER's client response (RFC 7628 §3.1): `gs2-header kvsep *kvpair kvsep` with `kvsep = %x01`,
  the GS2 header of RFC 5801 §4 (`n,` or `y,`, then an optional `a=` authorization identity with `=2C`
  for `,` and `=3D` for `=`, then `,`), and key=value pairs of which `auth` carries the HTTP Authorization
  value, `Bearer` then the token (RFC 6750 §2.1 `b64token`). `p=` (channel binding) is refused: the
  mechanism has none (§3.1). `host` and `port` are informative and not checked.
- XOAUTH2 (Google's, as Thunderbird, Outlook and most clients send it): `user=` address `^A`
  `auth=Bearer ` token `^A^A`. No RFC; the same error exchange as OAUTHBEARER.
- After a refusal the server sends the error as a JSON challenge (RFC 7628 §3.2.2: `status`, `scope`,
  `openid-configuration`) and the client answers with one `%x01` (OAUTHBEARER) or nothing (XOAUTH2)
  before the final failure reply; whatever it answers, the login has failed (§3.2.3).
- Every malformed message is a `ValueError` naming what is wrong, never an exception of another kind;
  the token itself is never in a message (it is a credential, and a client may have put it anywhere).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

KVSEP = b"\x01"
MAX_RESPONSE = 12288  # RFC 4954 §4: the AUTH command line, the bound for a SASL message in SMTP and IMAP
_B64TOKEN = re.compile(rb"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 §2.1
_KEY = re.compile(rb"[A-Za-z]+")  # RFC 7628 §3.1 `key = 1*(ALPHA)`
_VALUE = re.compile(rb"[\x20-\x7e\t\r\n]*")  # `value = *(VCHAR / SP / HTAB / CR / LF)`


@dataclass(frozen=True)
class BearerResponse:
    user: str | None  # the mailbox asked for (XOAUTH2 `user=`, OAUTHBEARER `a=`), None when not given
    token: str = ""

    def __repr__(self) -> str:  # the token never reaches a log line through a repr
        return f"BearerResponse(user={self.user!r}, token=<{len(self.token)} characters>)"


def _pairs(data: bytes) -> dict[bytes, bytes]:
    """`*kvpair kvsep`: the key=value pairs ended by an empty one; each key once."""
    if not data.endswith(KVSEP + KVSEP) and data != KVSEP:
        raise ValueError("the message does not end with two ^A separators")
    pairs: dict[bytes, bytes] = {}
    for item in data[:-2].split(KVSEP) if data != KVSEP else []:
        key, eq, value = item.partition(b"=")
        if not eq or not _KEY.fullmatch(key) or not _VALUE.fullmatch(value):
            raise ValueError("a key=value pair is malformed")
        if key.lower() in pairs:
            raise ValueError(f"the key {key.decode()!r} is repeated")
        pairs[key.lower()] = value
    return pairs


def _bearer(pairs: dict[bytes, bytes]) -> str:
    auth = pairs.get(b"auth")
    if auth is None:
        raise ValueError("no auth=Bearer pair")
    scheme, _, token = auth.partition(b" ")
    token = token.lstrip(b" ")
    if scheme.lower() != b"bearer" or not _B64TOKEN.fullmatch(token):
        raise ValueError("the auth pair is not Bearer and a token")
    return token.decode("ascii")


def _saslname(raw: bytes) -> str:
    """RFC 5801 §4 `saslname`: UTF-8, `,` as `=2C` and `=` as `=3D`, no other `=` escape."""
    if re.search(rb"=(?!2C|3D)", raw):
        raise ValueError("the authorization identity has a bad = escape")
    try:
        return raw.replace(b"=2C", b",").replace(b"=3D", b"=").decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the authorization identity is not UTF-8") from None


def parse_oauthbearer(data: bytes) -> BearerResponse:
    """RFC 7628 §3.1 client response."""
    if len(data) > MAX_RESPONSE:
        raise ValueError(f"the message is over {MAX_RESPONSE} octets")
    head, sep, rest = data.partition(KVSEP)
    if not sep:
        raise ValueError("no ^A after the GS2 header")
    fields = head.split(b",")
    if len(fields) != 3 or fields[2] != b"":
        raise ValueError("the GS2 header is not flag,authzid,")
    if fields[0].startswith(b"p="):
        raise ValueError("channel binding is not supported by OAUTHBEARER")
    if fields[0] not in (b"n", b"y"):
        raise ValueError("the GS2 header's flag is not n or y")
    user: str | None = None
    if fields[1]:
        if not fields[1].startswith(b"a=") or len(fields[1]) == 2:
            raise ValueError("the authorization identity is not a=name")
        user = _saslname(fields[1][2:])
    return BearerResponse(user, _bearer(_pairs(rest)))


def parse_xoauth2(data: bytes) -> BearerResponse:
    """Google's XOAUTH2 client response: user=address ^A auth=Bearer token ^A ^A."""
    if len(data) > MAX_RESPONSE:
        raise ValueError(f"the message is over {MAX_RESPONSE} octets")
    pairs = _pairs(data)
    user = pairs.get(b"user")
    if not user:
        raise ValueError("no user= pair")
    try:
        name = user.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the user is not UTF-8") from None
    return BearerResponse(name, _bearer(pairs))


PARSERS = {"OAUTHBEARER": parse_oauthbearer, "XOAUTH2": parse_xoauth2}
MECHANISMS = tuple(sorted(PARSERS))


def error_challenge(mechanism: str, *, scope: str, openid_configuration: str) -> bytes:
    """The JSON the server sends after a refused token (RFC 7628 §3.2.2; XOAUTH2's form has the HTTP status
    and the schemes instead): the client learns to get a new token, never why this one was refused."""
    if mechanism == "XOAUTH2":
        body: dict[str, str] = {"status": "401", "schemes": "bearer", "scope": scope}
    else:
        body = {"status": "invalid_token", "scope": scope, "openid-configuration": openid_configuration}
    return json.dumps(body, separators=(",", ":")).encode()
