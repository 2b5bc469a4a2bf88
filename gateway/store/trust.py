"""Repository of the trust list: the domains this node may exchange mail with.

Domains come from the national allow-list (`source = "list"`, replaced as a whole on each import, so
a domain dropped nationally stops being trusted) or are added by hand (`source = "manual"`, kept across
imports). The node's own domains are trusted implicitly and are not stored here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from gateway.store.db import Database
from gateway.store.models import TrustDomain, utcnow


@dataclass(frozen=True)
class ListChange:
    added: list[str]
    removed: list[str]
    kept: int


class TrustRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, domain: str) -> bool:
        """Add a manual entry; False if the domain was already trusted."""
        try:
            async with self.db.write() as s:
                if await s.get(TrustDomain, domain) is not None:
                    return False
                s.add(TrustDomain(domain=domain, source="manual", added_at=utcnow()))
        except IntegrityError:  # another node added it between the look and the insert (PostgreSQL)
            return False
        return True

    async def remove(self, domain: str) -> str | None:
        """Remove a domain whatever its source; returns that source, None if it was not trusted."""
        async with self.db.write() as s:
            row = await s.get(TrustDomain, domain)
            if row is None:
                return None
            source = row.source
            await s.delete(row)
            return source

    async def list(self) -> list[dict[str, Any]]:
        async with self.db.read() as s:
            rows = (await s.execute(select(TrustDomain).order_by(TrustDomain.domain))).scalars()
            return [{"domain": r.domain, "source": r.source, "added_at": r.added_at.isoformat()} for r in rows]

    async def domains(self) -> set[str]:
        # Read for every message crossing operators (Database.rows: one statement, no ORM session).
        return {str(r[0]) for r in await self.db.rows("SELECT domain FROM trust_domains", {})}

    async def is_trusted(self, domain: str) -> bool:
        async with self.db.read() as s:
            return await s.get(TrustDomain, domain.lower()) is not None

    async def replace_list(self, domains: Iterable[str]) -> ListChange:
        """Make the list-sourced entries exactly `domains`, in one transaction; manual entries stay."""
        wanted = set(domains)
        async with self.db.write() as s:
            rows = {r.domain: r.source for r in (await s.execute(select(TrustDomain))).scalars()}
            listed = {d for d, src in rows.items() if src == "list"}
            removed = sorted(listed - wanted)
            added = sorted(d for d in wanted if d not in rows)
            if removed:
                await s.execute(delete(TrustDomain).where(TrustDomain.domain.in_(removed)))
            now = utcnow()
            s.add_all(TrustDomain(domain=d, source="list", added_at=now) for d in added)
            return ListChange(added=added, removed=removed, kept=len(wanted) - len(added))
