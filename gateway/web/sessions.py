"""Web inbox sessions and CSRF tokens.

Implementation notes
- The session cookie `__Host-mssgw` (HttpOnly, Secure, SameSite=Strict, Path=/, no Domain: the `__Host-`
  prefix makes browsers enforce the last three) holds 32 random bytes; the store keeps only their SHA-256,
  so a copy of the database opens no session. Rows live in the application database: every node of the
  operator sees the same sessions, and logout or a disabled mailbox ends them everywhere.
- Expiry: `idle_timeout` after the last request, `absolute_timeout` after login, whichever is first; an
  expired row is deleted when met. `last_seen_at` is written at most once a minute (reads stay reads).
- CSRF (OWASP synchroniser token): each session has its token; every form carries it in a hidden field
  and every POST is refused (403) unless it matches, compared in constant time. Before login the forms
  (login, activation) use a double-submit token: the `__Host-mssgw-pre` cookie and the hidden field must
  match. SameSite=Strict already keeps other sites' requests cookie-less; the tokens are the second wall.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete

from gateway.store.db import Database
from gateway.store.models import WebSession, utcnow

SESSION_COOKIE = "__Host-mssgw"
PRE_COOKIE = "__Host-mssgw-pre"
TOUCH_EVERY = timedelta(seconds=60)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def tokens_match(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())


@dataclass(frozen=True)
class Current:
    """A valid session: who, and the CSRF token its forms carry."""

    address: str
    csrf: str
    created_at: datetime


class WebSessions:
    def __init__(self, db: Database, *, idle: float, absolute: float) -> None:
        self.db = db
        self.idle = timedelta(seconds=idle)
        self.absolute = timedelta(seconds=absolute)

    async def start(self, address: str) -> str:
        """A new session for `address`; returns the cookie token (shown to the browser only)."""
        token = new_token()
        now = utcnow()
        async with self.db.write() as s:
            s.add(
                WebSession(digest=_digest(token), address=address, csrf=new_token(), created_at=now, last_seen_at=now)
            )
        return token

    async def current(self, token: str | None, now: datetime | None = None) -> Current | None:
        """The live session of this cookie token, or None (missing, unknown, or expired: then deleted)."""
        if not token or len(token) > 100:
            return None
        now = now or utcnow()
        digest = _digest(token)
        async with self.db.read() as s:
            row = await s.get(WebSession, digest)
            if row is None:
                return None
            found = Current(row.address, row.csrf, row.created_at)
            last_seen = row.last_seen_at
        if now - last_seen >= self.idle or now - found.created_at >= self.absolute:
            await self.end(token)
            return None
        if now - last_seen >= TOUCH_EVERY:
            async with self.db.write() as s:
                row = await s.get(WebSession, digest)
                if row is not None:
                    row.last_seen_at = now
        return found

    async def end(self, token: str) -> None:
        async with self.db.write() as s:
            await s.execute(delete(WebSession).where(WebSession.digest == _digest(token)))

    async def end_all(self, address: str) -> int:
        async with self.db.write() as s:
            result = await s.execute(delete(WebSession).where(WebSession.address == address))
            return int(result.rowcount)  # type: ignore[attr-defined]
