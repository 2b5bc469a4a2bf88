"""gateway/smime/pool.py: the same results in a worker process as in the caller, errors intact, and the
event loop free while the work runs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import psutil
import pytest
from cryptography.hazmat.primitives import serialization

from gateway.smime import cms
from gateway.smime.pool import CryptoPool
from tests.smime.conftest import Holder, Space
from tests.smime.test_mime import MESSAGE


def der(holder: Holder) -> bytes:
    return holder.certificate.public_bytes(serialization.Encoding.DER)


def pkcs8(holder: Holder) -> bytes:
    return holder.issued.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(params=[1, 0], ids=["process", "thread"])
async def pool(request: pytest.FixtureRequest) -> AsyncIterator[CryptoPool]:
    p = CryptoPool(request.param)
    yield p
    p.close()


async def test_protect_then_open_through_the_pool(space: Space, pool: CryptoPool) -> None:
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    beat = asyncio.create_task(heartbeat())
    protected = await asyncio.gather(
        *(
            pool.protect(
                MESSAGE,
                signer=der(space.alice),
                key=pkcs8(space.alice),
                chain=[c.public_bytes(serialization.Encoding.DER) for c in space.alice.issued.chain],
                recipients=[(der(space.bob), True), (der(space.alice), False)],
            )
            for _ in range(4)
        )
    )
    beat.cancel()
    assert ticks > 4  # the loop kept turning while the four messages were signed and encrypted
    assert len(set(protected)) == 4  # fresh keys and IVs each time
    opened = await pool.unprotect(protected[0], certificate=der(space.bob), key=pkcs8(space.bob))
    assert (opened.message, opened.wrapped) == (MESSAGE, True)
    assert opened.signers == [(der(space.alice), True, "")]
    assert der(space.alice) in opened.certificates


async def test_a_refusal_crosses_the_pool_with_its_reason(space: Space, pool: CryptoPool) -> None:
    with pytest.raises(cms.CmsError) as refused:
        await pool.unprotect(MESSAGE, certificate=der(space.bob), key=pkcs8(space.bob))
    assert (type(refused.value).__name__, refused.value.reason) == ("MimeError", "plaintext")
    protected = await pool.protect(
        MESSAGE, signer=der(space.alice), key=pkcs8(space.alice), recipients=[(der(space.bob), True)]
    )
    with pytest.raises(cms.CmsError) as refused:
        await pool.unprotect(protected, certificate=der(space.carol), key=pkcs8(space.carol))
    assert (refused.value.reason, str(refused.value)) == ("not-for-us", "no recipient entry for our certificate")


ORPHANING = """
import asyncio, os, sys
from gateway.smime.pool import CryptoPool

async def main() -> None:
    pool = CryptoPool(2)
    # Two calls at once: both workers start (the executor starts them as work comes).
    await asyncio.gather(*(pool.encrypt_signed(b"x", recipients=[]) for _ in range(2)), return_exceptions=True)
    print(" ".join(str(p.pid) for p in pool._executor._processes.values()), flush=True)
    sys.stdin.read()  # until killed

asyncio.run(main())
"""


def test_workers_leave_when_their_node_is_killed() -> None:
    """A node SIGKILLed (the crash tests, an OOM kill outside systemd) leaves no worker behind."""
    node = subprocess.Popen([sys.executable, "-c", ORPHANING], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert node.stdout is not None
    workers = [psutil.Process(int(pid)) for pid in node.stdout.readline().split()]
    assert len(workers) == 2
    assert all(w.ppid() == node.pid for w in workers)
    os.kill(node.pid, signal.SIGKILL)
    node.wait()
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert alive == []
