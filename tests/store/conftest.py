"""Store fixtures: fresh databases on both backends (the PostgreSQL cluster is tests/conftest.py's `pg_cluster`).

`db_url` is parametrised over SQLite and PostgreSQL, so a test taking it runs on both; `make_db_url`
gives further empty databases of the same backend (the audit database beside the store's). PostgreSQL
tests are skipped when the server is not installed, unless MSSGW_REQUIRE_POSTGRES is set (CI), where
a missing server fails them.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType

import pytest
from sqlalchemy.engine import make_url

from gateway.store.crypto import KeyEncryptionKey
from gateway.store.db import Database

# `tests.pg` is found from the repository root, however pytest was started (tests/ is no package).
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.pg import PostgresCluster  # noqa: E402

BACKENDS = ["sqlite", "postgresql"]


def _new_url(request: pytest.FixtureRequest, backend: str, tmp_path: Path, name: str) -> str:
    if backend == "sqlite":
        path = tmp_path / f"{name}.db"
        assert not path.exists(), f"database {name} made twice in one test"
        return f"sqlite+aiosqlite:///{path}"
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    db = cluster.create_database(f"{request.node.name}_{name}")
    request.addfinalizer(lambda: cluster.drop_database(db))
    return cluster.url(db)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a new, empty database: a SQLite file in tmp_path, or a database of the test cluster."""
    return _new_url(request, request.param, tmp_path, "store")


@pytest.fixture
def make_db_url(db_url: str, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], str]:
    """More empty databases of `db_url`'s backend, by name."""
    backend = make_url(db_url).get_backend_name()
    return lambda name: _new_url(request, backend, tmp_path, name)


@pytest.fixture
def pg_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty PostgreSQL database (PostgreSQL-only tests)."""
    return _new_url(request, "postgresql", tmp_path, "pg")


@pytest.fixture
async def store_db(db_url: str) -> AsyncIterator[Database]:
    """The application database on `db_url`, migrated to head."""
    async with Database(db_url) as db:
        await db.migrate()
        yield db


@pytest.fixture
def kek() -> KeyEncryptionKey:
    return KeyEncryptionKey(secrets.token_bytes(32))


class LoopTicks:
    """Counts the event loop's turns, one every 10 ms, while a test waits on something: a loop that a
    statement blocks turns once in that time, a free one keeps counting."""

    def __init__(self) -> None:
        self.count = 0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            self.count += 1

    async def __aenter__(self) -> LoopTicks:
        self._task = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
