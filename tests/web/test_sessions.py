"""WebSessions against a real migrated SQLite database: only the token's SHA-256 is stored, idle and absolute
expiry delete the row, last_seen_at is written at most once a minute, logout ends one session or all of them."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from gateway.store.crypto import KeyEncryptionKey
from gateway.store.db import Database
from gateway.store.mailboxes import MailboxRepository
from gateway.store.models import WebSession
from gateway.web.sessions import Current, WebSessions, tokens_match

DOMAIN = "ch-test.mssante.fr"
PATIENT = f"185037512345641@patient.{DOMAIN}"
PATIENT2 = f"292069912345618@patient.{DOMAIN}"
IDLE = 300
ABSOLUTE = 1000
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """The application database in a SQLite file, migrated to head, with two local mailboxes."""
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}") as db:
        await db.migrate()
        mailboxes = MailboxRepository(db, KeyEncryptionKey(secrets.token_bytes(32)))
        await mailboxes.create(PATIENT, "PER")
        await mailboxes.create(PATIENT2, "PER")
        yield db


@pytest.fixture
def sessions(db: Database) -> WebSessions:
    return WebSessions(db, idle=IDLE, absolute=ABSOLUTE)


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def rows(db: Database) -> list[WebSession]:
    async with db.read() as s:
        return list((await s.execute(select(WebSession).order_by(WebSession.created_at))).scalars().all())


async def row(db: Database, token: str) -> WebSession | None:
    async with db.read() as s:
        return await s.get(WebSession, sha256(token))


async def insert(db: Database, token: str, *, address: str = PATIENT, created: datetime = T0) -> None:
    """A session row for `token` with known times (start() takes the clock's)."""
    async with db.write() as s:
        s.add(
            WebSession(digest=sha256(token), address=address, csrf="c" * 43, created_at=created, last_seen_at=created)
        )


# -- start --------------------------------------------------------------------------------------------


async def test_start_stores_only_the_sha256_of_the_token(db: Database, sessions: WebSessions) -> None:
    before = datetime.now(UTC)
    token = await sessions.start(PATIENT)
    after = datetime.now(UTC)

    assert len(token) == 43  # 32 random bytes, base64url without padding
    (stored,) = await rows(db)
    assert stored.digest == sha256(token)
    assert stored.address == PATIENT
    assert len(stored.csrf) == 43
    assert token not in (stored.digest, stored.csrf)
    assert before <= stored.created_at <= after
    assert stored.last_seen_at == stored.created_at


async def test_each_start_is_a_new_session_with_its_own_csrf_token(db: Database, sessions: WebSessions) -> None:
    first = await sessions.start(PATIENT)
    second = await sessions.start(PATIENT)

    assert first != second
    stored = await rows(db)
    assert len(stored) == 2
    assert {r.digest for r in stored} == {sha256(first), sha256(second)}
    assert stored[0].csrf != stored[1].csrf


async def test_start_for_an_address_without_mailbox_fails(db: Database, sessions: WebSessions) -> None:
    with pytest.raises(IntegrityError, match="FOREIGN KEY constraint failed"):
        await sessions.start(f"nobody@patient.{DOMAIN}")
    assert await rows(db) == []


# -- current ------------------------------------------------------------------------------------------


async def test_current_gives_the_address_and_the_csrf_token(db: Database, sessions: WebSessions) -> None:
    token = await sessions.start(PATIENT)
    stored = await row(db, token)
    assert stored is not None

    current = await sessions.current(token)

    assert current == Current(address=PATIENT, csrf=stored.csrf, created_at=stored.created_at)
    # a request within the minute does not write
    after = await row(db, token)
    assert after is not None
    assert after.last_seen_at == stored.last_seen_at


async def test_sessions_are_told_apart(db: Database, sessions: WebSessions) -> None:
    mine = await sessions.start(PATIENT)
    theirs = await sessions.start(PATIENT2)

    current_mine, current_theirs = await sessions.current(mine), await sessions.current(theirs)

    assert current_mine is not None
    assert current_theirs is not None
    assert (current_mine.address, current_theirs.address) == (PATIENT, PATIENT2)
    assert current_mine.csrf != current_theirs.csrf


@pytest.mark.parametrize("token", [None, "", "x", "A" * 43])
async def test_missing_or_unknown_token_gives_none(db: Database, sessions: WebSessions, token: str | None) -> None:
    await sessions.start(PATIENT)

    assert await sessions.current(token) is None
    assert len(await rows(db)) == 1


async def test_the_csrf_token_is_not_a_session_token(db: Database, sessions: WebSessions) -> None:
    token = await sessions.start(PATIENT)
    stored = await row(db, token)
    assert stored is not None

    assert await sessions.current(stored.csrf) is None
    assert await sessions.current(stored.digest) is None  # a copy of the database opens no session


async def test_tokens_longer_than_100_characters_are_not_looked_up(db: Database, sessions: WebSessions) -> None:
    at_limit, over = "a" * 100, "a" * 101
    await insert(db, at_limit)
    await insert(db, over)

    assert await sessions.current(at_limit, now=T0) == Current(PATIENT, "c" * 43, T0)
    assert await sessions.current(over, now=T0) is None


async def test_last_seen_is_written_once_a_minute_at_most(db: Database, sessions: WebSessions) -> None:
    token = "t" * 43
    await insert(db, token)

    assert await sessions.current(token, now=T0 + timedelta(seconds=59)) is not None
    stored = await row(db, token)
    assert stored is not None
    assert stored.last_seen_at == T0

    assert await sessions.current(token, now=T0 + timedelta(seconds=60)) is not None
    stored = await row(db, token)
    assert stored is not None
    assert stored.last_seen_at == T0 + timedelta(seconds=60)

    assert await sessions.current(token, now=T0 + timedelta(seconds=119)) is not None
    stored = await row(db, token)
    assert stored is not None
    assert stored.last_seen_at == T0 + timedelta(seconds=60)
    assert stored.created_at == T0


async def test_idle_expiry_deletes_the_session(db: Database, sessions: WebSessions) -> None:
    token, other = "t" * 43, "o" * 43
    await insert(db, token)
    await insert(db, other)

    current = await sessions.current(token, now=T0 + timedelta(seconds=IDLE - 1))
    assert current == Current(PATIENT, "c" * 43, T0)
    # touched at T0 + IDLE - 1: idle counts from there
    assert await sessions.current(token, now=T0 + timedelta(seconds=2 * IDLE - 2)) is not None
    assert await row(db, token) is not None

    assert await sessions.current(token, now=T0 + timedelta(seconds=3 * IDLE - 2)) is None
    assert await row(db, token) is None
    # once deleted, the token stays dead even at a time where it would have been valid
    assert await sessions.current(token, now=T0 + timedelta(seconds=IDLE)) is None
    assert [r.digest for r in await rows(db)] == [sha256(other)]


async def test_idle_expiry_from_creation(db: Database, sessions: WebSessions) -> None:
    token = "t" * 43
    await insert(db, token)

    assert await sessions.current(token, now=T0 + timedelta(seconds=IDLE)) is None
    assert await rows(db) == []


async def test_absolute_expiry_deletes_an_active_session(db: Database, sessions: WebSessions) -> None:
    token = "t" * 43
    await insert(db, token)

    # kept alive by a request every 250 s (within IDLE) ...
    for seconds in (250, 500, 750, ABSOLUTE - 1):
        assert await sessions.current(token, now=T0 + timedelta(seconds=seconds)) is not None
    stored = await row(db, token)
    assert stored is not None
    assert stored.last_seen_at == T0 + timedelta(seconds=ABSOLUTE - 1)

    # ... but not past ABSOLUTE after login
    assert await sessions.current(token, now=T0 + timedelta(seconds=ABSOLUTE)) is None
    assert await rows(db) == []


async def test_a_fresh_session_is_not_expired(db: Database, sessions: WebSessions) -> None:
    """The clock's `now` (no argument) against a row written with the clock's time."""
    token = await sessions.start(PATIENT)
    assert await sessions.current(token) is not None
    assert await sessions.current(token, now=datetime.now(UTC) + timedelta(seconds=IDLE + 1)) is None
    assert await rows(db) == []


# -- end, end_all -------------------------------------------------------------------------------------


async def test_end_deletes_only_that_session(db: Database, sessions: WebSessions) -> None:
    first = await sessions.start(PATIENT)
    second = await sessions.start(PATIENT)

    await sessions.end(first)

    assert await sessions.current(first) is None
    assert await sessions.current(second) is not None
    assert [r.digest for r in await rows(db)] == [sha256(second)]


async def test_end_of_an_unknown_token_changes_nothing(db: Database, sessions: WebSessions) -> None:
    token = await sessions.start(PATIENT)

    await sessions.end("")
    await sessions.end("A" * 43)

    assert [r.digest for r in await rows(db)] == [sha256(token)]


async def test_end_all_ends_every_session_of_one_address(db: Database, sessions: WebSessions) -> None:
    mine = [await sessions.start(PATIENT) for _ in range(3)]
    theirs = await sessions.start(PATIENT2)

    assert await sessions.end_all(PATIENT) == 3

    for token in mine:
        assert await sessions.current(token) is None
    current = await sessions.current(theirs)
    assert current is not None
    assert current.address == PATIENT2
    assert [r.digest for r in await rows(db)] == [sha256(theirs)]
    assert await sessions.end_all(PATIENT) == 0


async def test_deleting_the_mailbox_ends_its_sessions(db: Database, sessions: WebSessions) -> None:
    mine = await sessions.start(PATIENT)
    theirs = await sessions.start(PATIENT2)

    await MailboxRepository(db).delete(PATIENT)

    assert await sessions.current(mine) is None
    assert [r.digest for r in await rows(db)] == [sha256(theirs)]


# -- tokens_match ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("Zm9vYmFy", "Zm9vYmFy", True),
        ("é-token", "é-token", True),  # non-ASCII is compared as UTF-8, not refused
        (None, None, False),
        ("", "", False),
        (None, "Zm9vYmFy", False),
        ("Zm9vYmFy", None, False),
        ("", "Zm9vYmFy", False),
        ("Zm9vYmFy", "", False),
        ("Zm9vYmFy", "Zm9vYmFz", False),
        ("Zm9vYmFy", "Zm9vYmFyX", False),
        ("Zm9vYmFyX", "Zm9vYmFy", False),
        ("Zm9vYmFy", "zm9vYmFy", False),
    ],
)
def test_tokens_match(a: str | None, b: str | None, expected: bool) -> None:
    assert tokens_match(a, b) is expected
