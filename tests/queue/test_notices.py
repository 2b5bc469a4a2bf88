"""The sending side's notice tracking (gateway.queue.notices) on SQLite and PostgreSQL: one final notice per
relayed message and recipient, intermediate ones held back, late ones dropped, races settled once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from gateway.queue.mdn import Outcome, Report
from gateway.queue.notices import Notices, Plan, Raced, judge
from gateway.store.db import Database
from gateway.store.models import utcnow
from tests.store.conftest import db_url  # noqa: F401 - the fixture, parametrised over both backends

SENDER, PAUL, ACCUEIL = "claire.martin@a.test", "paul.durand@b.test", "accueil@b.test"
MID = "<cr.1@a.test>"
PEER = ("B.test.",)  # the reporting peer's domains, as its certificate names them


@pytest.fixture
async def notices(db_url: str) -> AsyncIterator[Notices]:  # noqa: F811
    async with Database(db_url) as db:
        await db.migrate()
        yield Notices(db)


def report(*outcomes: tuple[str, Outcome], mid: str = MID) -> Report:
    return Report("mdn", mid, tuple(outcomes))


async def receive(n: Notices, rep: Report, senders: tuple[str, ...] = (SENDER,)) -> Plan:
    """What the relay handler does: plan, then settle the rows in the transaction that would store it."""
    plan = await n.plan(rep, list(senders), PEER)
    async with n.db.raw_writing() as tx:
        await n.apply(tx, plan)
    return plan


async def track(
    n: Notices, final_delivery: bool = False, rcpts: tuple[str, ...] = (PAUL,), queue_id: str = "q1"
) -> None:
    await n.track(
        sender=SENDER.upper(),
        message_id=MID,
        recipients=list(rcpts),
        queue_id=queue_id,
        final_delivery=final_delivery,
        wait=timedelta(hours=1),
    )


async def test_a_processed_mdn_is_the_one_final_notice_and_a_second_is_dropped(notices: Notices) -> None:
    await track(notices, rcpts=(PAUL, ACCUEIL))
    await track(notices, rcpts=(PAUL,))  # relayed twice (a crash before it was recorded): still one row
    first = await receive(notices, report((PAUL, "processed")))
    assert (first.deliver, first.verdicts) == (True, {PAUL: "given"})
    assert await notices.state(SENDER, MID, PAUL) == ("done", "processed")
    assert await notices.state(SENDER, MID, ACCUEIL) == ("waiting", None)
    again = await receive(notices, report((PAUL, "processed")))
    assert (again.deliver, again.verdicts, again.changes) == (False, {PAUL: "late"}, [])


async def test_a_report_on_several_recipients_is_delivered_whole_when_one_is_new(notices: Notices) -> None:
    """docs/operations.md: a DSN is judged per recipient and, when any outcome is new to the sender, delivered
    as it came (its late recipients repeated: a notice is never rewritten); the late row is left as it was."""
    await track(notices, rcpts=(PAUL, ACCUEIL))
    await receive(notices, Report("dsn", MID, ((PAUL, "failed"),)))
    both = await receive(notices, Report("dsn", MID, ((PAUL, "delivered"), (ACCUEIL, "delivered"))))
    assert (both.deliver, both.verdicts) == (True, {PAUL: "late", ACCUEIL: "given"})
    assert [(c.expected, c.state, c.outcome) for c in both.changes] == [("waiting", "done", "delivered")]
    assert await notices.state(SENDER, MID, PAUL) == ("done", "failed")
    assert await notices.state(SENDER, MID, ACCUEIL) == ("done", "delivered")
    again = await receive(notices, Report("dsn", MID, ((PAUL, "delivered"), (ACCUEIL, "delivered"))))
    assert (again.deliver, again.verdicts) == (False, {PAUL: "late", ACCUEIL: "late"})


async def test_with_the_dispatched_mdn_asked_for_processed_is_held_back(notices: Notices) -> None:
    await track(notices, final_delivery=True)
    processed = await receive(notices, report((PAUL, "processed")))
    assert (processed.deliver, processed.verdicts) == (False, {PAUL: "intermediate"})
    assert await notices.state(SENDER, MID, PAUL) == ("processed", None)
    dispatched = await receive(notices, report((PAUL, "dispatched")))
    assert (dispatched.deliver, dispatched.verdicts) == (True, {PAUL: "given"})
    assert await notices.state(SENDER, MID, PAUL) == ("done", "dispatched")
    late = await receive(notices, report((PAUL, "processed")))  # arriving after the dispatched one
    assert (late.deliver, late.verdicts) == (False, {PAUL: "late"})


async def test_a_failure_corrects_a_processed_notice_once(notices: Notices) -> None:
    await track(notices)
    await receive(notices, report((PAUL, "processed")))
    failure = await receive(notices, Report("dsn", MID, ((PAUL, "failed"),)))
    assert (failure.deliver, failure.verdicts) == (True, {PAUL: "given"})
    assert await notices.state(SENDER, MID, PAUL) == ("done", "failed")
    second = await receive(notices, report((PAUL, "failed")))
    assert (second.deliver, second.verdicts) == (False, {PAUL: "late"})


async def test_a_delay_is_not_given_and_moves_nothing(notices: Notices) -> None:
    await track(notices)
    delayed = await receive(notices, Report("dsn", MID, ((PAUL, "delayed"),)))
    assert (delayed.deliver, delayed.verdicts, delayed.changes) == (False, {PAUL: "intermediate"}, [])
    assert await notices.state(SENDER, MID, PAUL) == ("waiting", None)


async def test_read_receipts_and_untracked_notices_are_delivered_as_they_came(notices: Notices) -> None:
    await track(notices)
    displayed = await receive(notices, report((PAUL, "displayed")))
    assert (displayed.deliver, displayed.verdicts, displayed.changes) == (True, {PAUL: "passthrough"}, [])
    other = await receive(notices, report((PAUL, "processed"), mid="<other@a.test>"))
    assert (other.deliver, other.verdicts) == (True, {PAUL: "untracked"})
    stranger = await receive(notices, report((PAUL, "processed")), senders=("someone@a.test",))
    assert (stranger.deliver, stranger.verdicts) == (True, {PAUL: "untracked"})  # not that sender's message
    assert await notices.state(SENDER, MID, PAUL) == ("waiting", None)


async def test_a_peer_settles_nothing_for_another_operators_recipient(notices: Notices) -> None:
    """A peer that got the same message (it knows its Message-ID and the other recipients) reports on a
    recipient at another operator: delivered as it came, moving nothing, so that operator's real notice (a
    failure, say) still reaches the sender."""
    other = "bob@q.test"
    await track(notices, rcpts=(PAUL, other))
    forged = await notices.plan(report((other, "dispatched"), (PAUL, "processed")), [SENDER], PEER)
    assert forged.verdicts == {other: "foreign", PAUL: "given"}
    assert [c.id for c in forged.changes] == [
        c.id for c in (await notices.plan(report((PAUL, "processed")), [SENDER], PEER)).changes
    ]
    async with notices.db.raw_writing() as tx:
        await notices.apply(tx, forged)
    assert await notices.state(SENDER, MID, other) == ("waiting", None)
    real = await notices.plan(report((other, "failed")), [SENDER], ("q.test",))
    assert (real.deliver, real.verdicts) == (True, {other: "given"})
    nothing = await notices.plan(report((other, "failed")), [], ("q.test",))  # no local recipient named
    assert nothing.verdicts == {other: "untracked"}
    await notices.track(
        sender=SENDER, message_id=MID, recipients=[], queue_id="q2", final_delivery=False, wait=timedelta(hours=1)
    )


async def test_a_patient_is_given_failures_only(notices: Notices) -> None:
    """Patients read their conversations in the web inbox: a positive notice settles their message's row and is
    not delivered; a failure still reaches them."""
    patient = "285037512345688@patient.a.test"
    await notices.track(
        sender=patient, message_id=MID, recipients=[PAUL], queue_id="q", final_delivery=False, wait=timedelta(hours=1)
    )
    quiet = ("patient.a.test",)
    processed = await notices.plan(report((PAUL, "processed")), [patient], PEER, quiet)
    assert (processed.deliver, processed.verdicts) == (False, {PAUL: "quiet"})
    async with notices.db.raw_writing() as tx:
        await notices.apply(tx, processed)
    assert await notices.state(patient, MID, PAUL) == ("done", "processed")
    failed = await notices.plan(report((PAUL, "failed")), [patient], PEER, quiet)
    assert (failed.deliver, failed.verdicts) == (True, {PAUL: "given"})
    other = report((PAUL, "dispatched"), mid="<x@a.test>")
    assert (await notices.plan(other, [patient], PEER, quiet)).verdicts == {PAUL: "quiet"}
    assert (await notices.plan(other, [patient], PEER, quiet)).deliver is False
    assert (await notices.plan(other, [SENDER], PEER, quiet)).verdicts == {PAUL: "untracked"}  # not a patient


async def test_two_notices_judged_at_once_settle_the_row_once(notices: Notices) -> None:
    await track(notices)
    one = await notices.plan(report((PAUL, "processed")), [SENDER], PEER)
    two = await notices.plan(Report("dsn", MID, ((PAUL, "delivered"),)), [SENDER], PEER)
    assert (one.deliver, two.deliver) == (True, True)  # both judged before either committed (two nodes)
    async with notices.db.raw_writing() as tx:
        await notices.apply(tx, two)
    with pytest.raises(Raced):
        async with notices.db.raw_writing() as tx:
            await notices.apply(tx, one)
    assert await notices.state(SENDER, MID, PAUL) == ("done", "delivered")


async def test_overdue_rows_time_out_once_and_later_notices_are_late(notices: Notices) -> None:
    await track(notices, rcpts=(PAUL, ACCUEIL))
    await receive(notices, report((ACCUEIL, "processed")))
    assert await notices.due() == []
    later = utcnow() + timedelta(hours=1, seconds=1)
    [row] = await notices.due(later)
    assert (row.sender, row.recipient, row.message_id, row.state) == (SENDER.lower(), PAUL, MID, "waiting")
    async with notices.db.raw_writing() as tx:
        assert await notices.settle_timeout(tx, row, later)
    async with notices.db.raw_writing() as tx:
        assert not await notices.settle_timeout(tx, row, later)  # another node's sweep got there first
    assert await notices.state(SENDER, MID, PAUL) == ("done", "timeout")
    assert await notices.due(later) == []
    late = await receive(notices, report((PAUL, "processed")))
    assert (late.deliver, late.verdicts) == (False, {PAUL: "late"})
    assert await notices.prune(utcnow() - timedelta(seconds=1)) == 0
    assert await notices.prune(later) == 2


async def test_a_message_sent_again_with_its_message_id_is_tracked_again(notices: Notices) -> None:
    """After the timeout DSN, the sender's client sends the message again, same Message-ID, as a new queue
    message: its recipient is waited for again, and the peer's notice is given, not dropped as late. The
    first message relayed again (same queue message) moves nothing."""
    await track(notices, rcpts=(PAUL, ACCUEIL))
    later = utcnow() + timedelta(hours=1, seconds=1)
    [row, _] = await notices.due(later)  # PAUL first: same deadline, tracked first
    assert row.recipient == PAUL
    async with notices.db.raw_writing() as tx:
        assert await notices.settle_timeout(tx, row, later)
    assert await notices.state(SENDER, MID, PAUL) == ("done", "timeout")
    await track(notices, rcpts=(PAUL,), queue_id="q2", final_delivery=True)
    await track(notices, rcpts=(ACCUEIL,))  # q1 relayed twice: its waiting row stays as it was
    await track(notices, rcpts=(ACCUEIL,), queue_id="q2")  # still waiting for q1's notice: stays too
    rows = {r.recipient: r for r in await notices.find()}
    again, kept = rows[PAUL], rows[ACCUEIL]
    assert (again.queue_id, again.state, again.outcome, again.final_delivery) == ("q2", "waiting", None, True)
    assert again.settled_at is None
    assert again.deadline > kept.deadline  # its own hour, from the second sending
    assert again.created_at > kept.created_at
    assert (kept.queue_id, kept.state, kept.final_delivery) == ("q1", "waiting", False)
    held = await receive(notices, report((PAUL, "processed")))
    assert (held.deliver, held.verdicts) == (False, {PAUL: "intermediate"})  # the dispatched MDN was asked for
    given = await receive(notices, report((PAUL, "dispatched")))
    assert (given.deliver, given.verdicts) == (True, {PAUL: "given"})
    assert await notices.state(SENDER, MID, PAUL) == ("done", "dispatched")
    # Sent a third time (its client lost the 250): the sender had a positive notice, and a peer dropping the
    # copy as a duplicate sends no other; starting over would end in a timeout DSN for a delivered message.
    await track(notices, rcpts=(PAUL,), queue_id="q3")
    [settled] = [r for r in await notices.find() if r.recipient == PAUL]
    assert (settled.queue_id, settled.state, settled.outcome) == ("q2", "done", "dispatched")


async def test_the_timeout_sweep_leaves_a_row_started_over_since_it_read_it(notices: Notices) -> None:
    """A sweep reads an overdue row; another node's sweep times it out, and the sender's client sends the
    message again at once (the row starts over, with its own hour). The first sweep's settlement must not
    time the new sending out."""
    await track(notices)
    later = utcnow() + timedelta(hours=1, seconds=1)
    [stale] = await notices.due(later)
    async with notices.db.raw_writing() as tx:
        assert await notices.settle_timeout(tx, stale, later)  # the other node
    await track(notices, queue_id="q2")
    async with notices.db.raw_writing() as tx:
        assert not await notices.settle_timeout(tx, stale, later)
    assert await notices.state(SENDER, MID, PAUL) == ("waiting", None)


@pytest.mark.parametrize(
    ("state", "settled_by", "final", "outcome", "expected"),
    [
        ("waiting", None, False, "processed", ("given", "done")),
        ("waiting", None, True, "processed", ("intermediate", "processed")),
        ("processed", None, True, "processed", ("late", None)),
        ("processed", None, True, "failed", ("given", "done")),
        ("waiting", None, True, "delivered", ("given", "done")),
        ("waiting", None, False, "delayed", ("intermediate", None)),
        ("done", "processed", False, "failed", ("given", "done")),
        ("done", "processed", False, "dispatched", ("late", None)),
        ("done", "timeout", False, "failed", ("late", None)),
        ("done", "failed", False, "failed", ("late", None)),
        ("done", "dispatched", True, "other", ("passthrough", None)),
    ],
)
def test_judge(
    state: str, settled_by: str | None, final: bool, outcome: Outcome, expected: tuple[str, str | None]
) -> None:
    assert judge(state, settled_by, final, outcome) == expected


async def test_find_filters_and_orders_newest_first(notices: Notices) -> None:
    """`mssgw queue notices`' query, on both backends (the CLI's own tests run on SQLite)."""
    start = utcnow()
    await notices.track(
        sender=SENDER,
        message_id=MID,
        recipients=[PAUL],
        queue_id="q1",
        final_delivery=False,
        wait=timedelta(hours=1),
        now=start,
    )
    await notices.track(
        sender=SENDER,
        message_id="<cr.2@a.test>",
        recipients=[PAUL, ACCUEIL],
        queue_id="q2",
        final_delivery=True,
        wait=timedelta(hours=1),
        now=start + timedelta(seconds=1),
    )
    await receive(notices, report((PAUL, "processed")))
    every = await notices.find()
    assert [(t.message_id, t.recipient, t.state, t.outcome) for t in every] == [
        ("<cr.2@a.test>", ACCUEIL, "waiting", None),
        ("<cr.2@a.test>", PAUL, "waiting", None),
        (MID, PAUL, "done", "processed"),
    ]
    assert every[2].settled_at is not None
    assert every[0].settled_at is None
    assert [t.recipient for t in await notices.find(message_id=MID)] == [PAUL]
    assert len(await notices.find(sender=SENDER.upper(), waiting=True)) == 2
    assert len(await notices.find(limit=1)) == 1
    assert await notices.find(sender="nobody@a.test") == []
