"""PasswordLogin: the one password check behind SMTP AUTH and IMAP LOGIN, with the shared lock-out."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pyotp
import pytest

from gateway.auth import totp
from gateway.auth.lockout import Lockout
from gateway.auth.passwords import hash_password
from gateway.auth.service import LoginOutcome, PasswordLogin, PatientLogin
from gateway.store.crypto import KeyEncryptionKey
from gateway.store.db import Database
from gateway.store.mailboxes import MailboxRepository

DOMAIN = "ch-test.mssante.fr"
ORG = f"secretariat@{DOMAIN}"
PASSWORD = "correct horse battery staple"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def mailboxes(tmp_path: Path) -> AsyncIterator[MailboxRepository]:
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}") as db:
        await db.migrate()
        repo = MailboxRepository(db, KeyEncryptionKey(secrets.token_bytes(32)))
        await repo.create(ORG, "ORG", service="Secrétariat", password_hash=hash_password(PASSWORD))
        await repo.create(f"nopass@{DOMAIN}", "ORG", service="Sans mot de passe")
        yield repo


def login(mailboxes: MailboxRepository, clock: Clock | None = None) -> PasswordLogin:
    return PasswordLogin(mailboxes, Lockout(threshold=3, base_delay=10, clock=clock or Clock()))


async def test_a_good_password_logs_in_and_records_the_login(mailboxes: MailboxRepository) -> None:
    outcome = await login(mailboxes).check("  Secretariat@CH-test.mssante.fr ", PASSWORD, "192.0.2.1")
    assert (outcome.result, outcome.address) == ("ok", ORG)
    assert outcome.account is not None
    assert outcome.account.kind == "ORG"
    assert (await mailboxes.describe(ORG))["last_login_at"] is not None


@pytest.mark.parametrize(
    ("username", "password", "reason"),
    [
        (ORG, "not the password", "bad-password"),
        (f"nobody@{DOMAIN}", PASSWORD, "unknown-account"),
        (f"nopass@{DOMAIN}", "", "no-password"),
    ],
)
async def test_each_refusal_is_one_outcome_with_its_reason(
    mailboxes: MailboxRepository, username: str, password: str, reason: str
) -> None:
    outcome = await login(mailboxes).check(username, password, "192.0.2.1")
    assert outcome == LoginOutcome("refused", username.lower(), reason=reason)


async def test_a_disabled_mailbox_is_refused_even_with_its_password(mailboxes: MailboxRepository) -> None:
    await mailboxes.set_active(ORG, False)
    outcome = await login(mailboxes).check(ORG, PASSWORD, "192.0.2.1")
    assert (outcome.result, outcome.reason) == ("refused", "mailbox-disabled")


async def test_lock_out_after_the_threshold_then_free_again(mailboxes: MailboxRepository) -> None:
    clock = Clock()
    service = login(mailboxes, clock)
    outcomes = [await service.check(ORG, "guess", "192.0.2.1") for _ in range(3)]
    assert [o.locked_for for o in outcomes] == [0.0, 0.0, 10.0]
    locked = await service.check(ORG, PASSWORD, "192.0.2.1")  # even the right password
    assert (locked.result, locked.wait) == ("locked", 10.0)
    clock.now += 10.0
    assert (await service.check(ORG, PASSWORD, "192.0.2.1")).result == "ok"


async def test_a_strangers_guesses_do_not_lock_the_owner_out(mailboxes: MailboxRepository) -> None:
    """The lock-out DoS: anyone who knows an address could keep its owner out. Not any more."""
    clock = Clock()
    service = login(mailboxes, clock)  # threshold 3, wide threshold 20 (the default)
    assert (await service.check(ORG, PASSWORD, "192.0.2.1")).result == "ok"  # the owner's usual address
    guesses = [await service.check(ORG, "guess", f"203.0.113.{n // 2}") for n in range(24)]  # 2 per address
    assert [g.result for g in guesses] == ["refused"] * 20 + ["locked"] * 4  # the wide threshold, 20
    assert guesses[19].locked_for == 10.0
    stranger = await service.check(ORG, PASSWORD, "198.51.100.7")  # the account is locked for strangers
    assert (stranger.result, stranger.wait) == ("locked", 10.0)
    owner = await service.check(ORG, PASSWORD, "192.0.2.1")
    assert owner.result == "ok"
    assert (await service.check(ORG, PASSWORD, "198.51.100.7")).result == "locked"  # the owner's success frees
    clock.now += 10.0  # the lock runs out
    assert (await service.check(ORG, PASSWORD, "198.51.100.7")).result == "ok"


async def test_many_users_behind_one_address_log_in_together(mailboxes: MailboxRepository) -> None:
    """Found by the IMAP benchmark: counting attempts before the check locked out parallel good logins."""
    service = login(mailboxes)
    outcomes = await asyncio.gather(*(service.check(ORG, PASSWORD, "192.0.2.9") for _ in range(8)))
    assert [o.result for o in outcomes] == ["ok"] * 8


async def test_parallel_guesses_on_one_account_take_turns(mailboxes: MailboxRepository) -> None:
    service = login(mailboxes)  # threshold 3
    outcomes = await asyncio.gather(*(service.check(ORG, "guess", "192.0.2.1") for _ in range(8)))
    assert [o.result for o in outcomes] == ["refused"] * 3 + ["locked"] * 5


async def test_a_patient_never_logs_in_with_a_password(mailboxes: MailboxRepository) -> None:
    """Patients read in the web inbox, with a second factor: over SMTP and IMAP even their password is refused."""
    patient = "185037512345641@patient.ch-test.mssante.fr"
    await mailboxes.create(patient, "PAT", password_hash=hash_password(PASSWORD))
    service = login(mailboxes)  # threshold 3
    outcome = await service.check(patient.upper(), PASSWORD, "192.0.2.1")
    assert outcome == LoginOutcome("refused", patient, reason="patient-web-only")
    # A wrong password is told apart in the audit only; each refusal counts toward the lock-out.
    wrong = await service.check(patient, "not the password", "192.0.2.1")
    assert (wrong.result, wrong.reason, wrong.locked_for) == ("refused", "bad-password", 0.0)
    third = await service.check(patient, PASSWORD, "192.0.2.1")
    assert (third.result, third.reason, third.locked_for) == ("refused", "patient-web-only", 10.0)
    assert (await mailboxes.describe(patient))["last_login_at"] is None
    await mailboxes.set_active(patient, False)
    disabled = await login(mailboxes).check(patient, PASSWORD, "192.0.2.1")
    assert (disabled.result, disabled.reason) == ("refused", "mailbox-disabled")


async def test_a_patient_totp_code_is_single_use_across_nodes(mailboxes: MailboxRepository) -> None:
    """Two nodes (two PatientLogin on one store): a code accepted on one is refused on the other, and so
    is a code of an earlier time step (RFC 6238 §5.2); the next step's code is accepted."""
    patient = "185037512345641@patient.ch-test.mssante.fr"
    await mailboxes.create(patient, "PAT", password_hash=hash_password(PASSWORD))
    secret = totp.new_secret()
    await mailboxes.set_totp(patient, secret)
    node1 = PatientLogin(mailboxes, Lockout(threshold=5, clock=Clock()))
    node2 = PatientLogin(mailboxes, Lockout(threshold=5, clock=Clock()))
    otp = pyotp.TOTP(secret)
    now = time.time()
    code = otp.at(now)
    assert (await node1.check(patient, PASSWORD, code, "192.0.2.1")).result == "ok"
    replayed = await node2.check(patient, PASSWORD, code, "192.0.2.2")
    assert (replayed.result, replayed.reason) == ("refused", "code-replayed")
    earlier = await node2.check(patient, PASSWORD, otp.at(now - 30), "192.0.2.2")  # still in the window
    assert (earlier.result, earlier.reason) == ("refused", "code-replayed")
    assert (await node2.check(patient, PASSWORD, otp.at(now + 30), "192.0.2.2")).result == "ok"  # clock ahead
    valid = {otp.at(now + d) for d in (-60, -30, 0, 30, 60)}
    never = next(c for c in ("000000", "111111", "222222", "333333", "444444", "555555") if c not in valid)
    wrong = await node1.check(patient, PASSWORD, never, "192.0.2.1")
    assert (wrong.result, wrong.reason) == ("refused", "bad-code")


def test_matched_step_is_the_codes_own_time_step() -> None:
    secret = totp.new_secret()
    otp = pyotp.TOTP(secret)
    now = 1_800_000_015.0  # 15 s into step 60,000,000
    assert totp.matched_step(secret, otp.at(now), now=now) == 60_000_000
    assert totp.matched_step(secret, otp.at(now - 30), now=now) == 59_999_999
    assert totp.matched_step(secret, " " + otp.at(now + 30) + " ", now=now) == 60_000_001
    assert totp.matched_step(secret, otp.at(now - 60), now=now) is None  # outside the ±1 window
    assert totp.matched_step(secret, "12345", now=now) is None
    assert totp.matched_step(secret, "12345a", now=now) is None
