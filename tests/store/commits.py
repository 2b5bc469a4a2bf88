"""The commit thread's jobs, altered for a test: delayed, counted or failing (SQLite's `_Committer`)."""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.store.db import Database, _Job

Commit = Callable[[], object]


def wrap_commits(db: Database, wrap: Callable[[Commit], Commit]) -> Callable[[], None]:
    """Every COMMIT `db` hands its commit thread from now on runs as `wrap(commit)`; returns the undo."""
    submit = db._commits.submit

    def wrapped(fn: Commit) -> _Job:
        return submit(wrap(fn))

    db._commits.submit = wrapped  # type: ignore[method-assign]
    return lambda: setattr(db._commits, "submit", submit)


def slow_commits(db: Database, delay: float = 0.3) -> Callable[[], None]:
    """COMMITs start `delay` seconds late on the commit thread: what the test does next lands while one
    is pending."""

    def late(fn: Commit) -> Commit:
        def slow() -> object:
            time.sleep(delay)
            return fn()

        return slow

    return wrap_commits(db, late)
