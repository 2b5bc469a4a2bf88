"""Mailbox retention on a real node store: warn after inactive_after - warn_before, delete warn_before later."""

from __future__ import annotations

import asyncio
import email
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from gateway.audit.verify import query
from gateway.node import Node
from gateway.store import retention as retention_module
from gateway.store.mailstore import Mailstore
from gateway.store.messages import MessageStore
from gateway.store.models import Account
from gateway.store.retention import Idle, Retention
from tests.conftest import DOMAIN, NodeDir, copy_node

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
IDLE = f"dormant@{DOMAIN}"
NEVER = f"jamais@{DOMAIN}"
BUSY = f"actif@{DOMAIN}"


@pytest.fixture
async def node(template_node: NodeDir, tmp_path: Path) -> AsyncIterator[Node]:
    nd = copy_node(template_node, tmp_path / "node")
    async with Node(nd.cfg()) as n:
        for address in (IDLE, NEVER, BUSY):
            await n.mailboxes.create(address, "ORG")
        await since(n, IDLE, last_login=NOW - timedelta(days=340))  # past 365d - 30d - 3d: due for its notice
        await since(n, NEVER, created=NOW - timedelta(days=400))  # never logged in, long ago
        await since(n, BUSY, last_login=NOW - timedelta(days=10), created=NOW - timedelta(days=900))
        yield n


async def since(n: Node, address: str, *, last_login: datetime | None = None, created: datetime | None = None) -> None:
    values: dict[str, datetime] = {}
    if last_login is not None:
        values["last_login_at"] = last_login
    if created is not None:
        values["created_at"] = created
    async with n.db.write() as s:
        await s.execute(update(Account).where(Account.address == address).values(**values))


async def inbox(n: Node, address: str) -> list[email.message.EmailMessage]:
    box = Mailstore(MessageStore(n.mailboxes))
    selected = await box.select(address, "INBOX", read_write=False)
    if not selected.messages:
        return []
    bodies = await box.bodies(address, [m.id for m in selected.messages])
    return [email.message_from_bytes(bodies[m.id], policy=default) for m in selected.messages]  # type: ignore[misc]


def retention(n: Node) -> Retention:
    return Retention(n.cfg, n.mailboxes, n.audit)


async def test_an_idle_mailbox_is_warned_then_deleted_after_warn_before(node: Node) -> None:
    first = await retention(node).run(NOW)
    assert sorted(mb.address for mb in first.warned) == [IDLE, NEVER]
    assert (first.deleted, first.waiting) == ([], [])
    [notice] = await inbox(node, IDLE)
    assert notice["Subject"] == "Votre boîte aux lettres sera supprimée après le 24/12/2026 faute de connexion"
    assert (notice["From"], notice["To"], notice["Auto-Submitted"]) == (
        f"Messagerie sécurisée <postmaster@{DOMAIN}>",
        IDLE,
        "auto-generated",
    )
    text = notice.get_content()
    assert f"Aucune connexion à la boîte aux lettres {IDLE} n'a eu lieu depuis le 19/12/2025." in text
    assert "inutilisée pendant un an est supprimée" in text
    assert await inbox(node, BUSY) == []
    warned = await query(node.audit_db, action="retention.mailbox.warned")
    assert [(r["principal"], r["author"], r["response"]["deletion_after"]) for r in warned] == [
        (IDLE, "retention", (NOW + timedelta(days=30)).isoformat()),
        (NEVER, "retention", (NOW + timedelta(days=30)).isoformat()),
    ]

    again = await retention(node).run(NOW + timedelta(days=29))  # the notice is not 30 days old yet
    assert (again.warned, again.deleted) == ([], [])
    assert sorted(mb.address for mb in again.waiting) == [IDLE, NEVER]
    assert len(await inbox(node, IDLE)) == 1  # one notice, not one a run

    last = await retention(node).run(NOW + timedelta(days=30, minutes=1))
    assert sorted(mb.address for mb in last.deleted) == [IDLE, NEVER]
    assert await node.mailboxes.state(IDLE) is None
    assert await node.mailboxes.state(NEVER) is None
    assert (await node.mailboxes.state(BUSY)) is not None
    deleted = await query(node.audit_db, action="retention.mailbox.deleted")
    assert [r["principal"] for r in deleted] == [IDLE, NEVER]


async def test_a_login_after_the_notice_keeps_the_mailbox(node: Node) -> None:
    await retention(node).run(NOW)
    await node.mailboxes.touch_login(IDLE)  # the owner read the notice and logged in (now, the real clock)
    later = await retention(node).run(NOW + timedelta(days=31))
    assert [mb.address for mb in later.deleted] == [NEVER]
    assert await node.mailboxes.state(IDLE) is not None
    rest = await retention(node).run(NOW + timedelta(days=31))  # IDLE logged in: no longer concerned
    assert (rest.warned, rest.deleted, rest.waiting) == ([], [], [])
    assert len(await inbox(node, IDLE)) == 1


async def test_a_login_between_listing_and_deletion_keeps_the_mailbox(node: Node) -> None:
    await retention(node).run(NOW)
    rule = retention(node)
    [idle, never] = [mb for mb in await rule.idle(NOW + timedelta(days=31))]
    await since(node, idle.address, last_login=NOW + timedelta(days=30, hours=23))  # logs in meanwhile
    assert not await rule._delete(idle, NOW + timedelta(days=31))
    assert await node.mailboxes.state(IDLE) is not None
    assert await rule._delete(never, NOW + timedelta(days=31))


async def test_a_dry_run_changes_nothing(node: Node) -> None:
    planned = await retention(node).run(NOW + timedelta(days=400), dry_run=True)
    assert sorted(mb.address for mb in planned.warned) == [BUSY, IDLE, NEVER]
    assert planned.deleted == []
    assert await inbox(node, IDLE) == []
    assert await query(node.audit_db, action="retention.mailbox.warned") == []


async def test_two_runs_at_once_warn_once(node: Node) -> None:
    results = await asyncio.gather(retention(node).run(NOW), retention(node).run(NOW))
    assert sorted(mb.address for r in results for mb in r.warned) == [IDLE, NEVER]
    assert len(await inbox(node, IDLE)) == 1
    assert len(await query(node.audit_db, action="retention.mailbox.warned")) == 2


async def test_a_login_since_the_listing_gets_no_notice(node: Node) -> None:
    """The run lists IDLE, its owner logs in, then the run reaches it: no notice, no warning recorded (it
    was recorded, older than the login, and a year later the mailbox went without a new notice)."""
    rule = retention(node)
    idle = [mb for mb in await rule.idle(NOW) if mb.address == IDLE]
    await node.mailboxes.touch_login(IDLE)
    assert not await rule._warn(idle[0], NOW)
    assert await inbox(node, IDLE) == []
    assert [mb.address for mb in (await rule.idle(NOW)) if mb.address == IDLE] == []


async def test_a_warning_older_than_the_last_login_counts_for_nothing(node: Node) -> None:
    async with node.db.write() as s:
        await s.execute(
            update(Account).where(Account.address == IDLE).values(retention_warned_at=NOW - timedelta(days=400))
        )
    result = await retention(node).run(NOW)
    assert IDLE in [mb.address for mb in result.warned]  # warned afresh, not deleted on the old warning
    assert IDLE not in [mb.address for mb in result.deleted]
    assert len(await inbox(node, IDLE)) == 1


async def test_with_daily_runs_the_deletion_comes_within_inactive_after(node: Node) -> None:
    """Runs at 00:30 every day (plus the timer's hour of random delay), a last login at 10:00: warned, then
    deleted at least warn_before later, and before 365 days without a login."""
    login = datetime(2025, 1, 10, 10, 0, tzinfo=UTC)
    await since(node, BUSY, last_login=login)
    warned_at = deleted_at = None
    day = datetime(2025, 11, 1, 1, 30, tzinfo=UTC)  # 00:30 plus the hour's delay: the latest a run comes
    while deleted_at is None:
        result = await retention(node).run(day)
        if BUSY in [mb.address for mb in result.warned]:
            warned_at = day
        if BUSY in [mb.address for mb in result.deleted]:
            deleted_at = day
        day += timedelta(days=1)
        assert day < login + timedelta(days=400)
    assert warned_at is not None
    assert deleted_at - warned_at >= timedelta(days=30)
    assert deleted_at - login < timedelta(days=365)


async def test_one_mailbox_that_fails_does_not_stop_the_run(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    real = retention_module.notice

    def notice(cfg: Any, mb: Idle, deadline: datetime, now: datetime) -> bytes:
        if mb.address == IDLE:
            raise RuntimeError("no data key")
        return real(cfg, mb, deadline, now)

    monkeypatch.setattr(retention_module, "notice", notice)
    result = await retention(node).run(NOW)
    assert ([mb.address for mb in result.failed], [mb.address for mb in result.warned]) == ([IDLE], [NEVER])
    failed = [r for r in await query(node.audit_db, action="retention.mailbox.warned") if r["principal"] == IDLE]
    assert [r["response"] for r in failed] == [{"result": "failed", "error": "RuntimeError"}]
    assert await inbox(node, IDLE) == []  # nothing recorded for it: warned at the next run
