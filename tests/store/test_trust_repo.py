"""TrustRepository: manual entries and the national list, replaced as a whole."""

from __future__ import annotations

from datetime import datetime, timedelta

from gateway.store.db import Database
from gateway.store.trust import ListChange, TrustRepository


def _sources(rows: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(r["domain"], r["source"]) for r in rows]


async def test_add_remove_list(store_db: Database) -> None:
    trust = TrustRepository(store_db)
    assert await trust.list() == []
    assert await trust.add("peer-b.mssante.fr") is True
    assert await trust.add("peer-a.mssante.fr") is True
    assert await trust.add("peer-b.mssante.fr") is False
    rows = await trust.list()
    assert _sources(rows) == [("peer-a.mssante.fr", "manual"), ("peer-b.mssante.fr", "manual")]
    for row in rows:
        added = datetime.fromisoformat(row["added_at"])
        assert added.utcoffset() == timedelta(0)
    assert await trust.is_trusted("PEER-A.mssante.fr") is True
    assert await trust.is_trusted("peer-c.mssante.fr") is False

    assert await trust.remove("peer-a.mssante.fr") == "manual"
    assert await trust.remove("peer-a.mssante.fr") is None
    assert await trust.is_trusted("peer-a.mssante.fr") is False
    assert _sources(await trust.list()) == [("peer-b.mssante.fr", "manual")]


async def test_replace_list_keeps_manual_entries(store_db: Database) -> None:
    trust = TrustRepository(store_db)
    await trust.add("manual.mssante.fr")
    await trust.add("both.mssante.fr")

    first = await trust.replace_list(["b.mssante.fr", "a.mssante.fr", "both.mssante.fr", "a.mssante.fr"])
    assert first == ListChange(added=["a.mssante.fr", "b.mssante.fr"], removed=[], kept=1)
    assert _sources(await trust.list()) == [
        ("a.mssante.fr", "list"),
        ("b.mssante.fr", "list"),
        ("both.mssante.fr", "manual"),
        ("manual.mssante.fr", "manual"),
    ]

    second = await trust.replace_list(["b.mssante.fr", "c.mssante.fr"])
    assert second == ListChange(added=["c.mssante.fr"], removed=["a.mssante.fr"], kept=1)
    assert _sources(await trust.list()) == [
        ("b.mssante.fr", "list"),
        ("both.mssante.fr", "manual"),
        ("c.mssante.fr", "list"),
        ("manual.mssante.fr", "manual"),
    ]

    # Same list again: nothing changes. An empty list removes every list entry and no manual one.
    assert await trust.replace_list(iter(["c.mssante.fr", "b.mssante.fr"])) == ListChange([], [], 2)
    assert await trust.replace_list([]) == ListChange(added=[], removed=["b.mssante.fr", "c.mssante.fr"], kept=0)
    assert _sources(await trust.list()) == [("both.mssante.fr", "manual"), ("manual.mssante.fr", "manual")]

    # A list entry removed by hand comes back with the next import; a manual one survives imports.
    await trust.replace_list(["x.mssante.fr"])
    assert await trust.remove("x.mssante.fr") == "list"
    assert await trust.replace_list(["x.mssante.fr"]) == ListChange(added=["x.mssante.fr"], removed=[], kept=0)
    assert await trust.is_trusted("manual.mssante.fr") is True
