"""Mailbox retention on a real node store: warn after inactive_after - warn_before, delete warn_before later."""

from __future__ import annotations

import asyncio
import email
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.policy import default
from pathlib import Path

import pytest
from sqlalchemy import update

from gateway.audit.verify import query
from gateway.node import Node
from gateway.store.mailstore import Mailstore
from gateway.store.messages import MessageStore
from gateway.store.models import Account
from gateway.store.retention import Retention
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
        await since(n, IDLE, last_login=NOW - timedelta(days=340))  # 365d - 30d: due for its notice
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
