"""gateway.lookups: blocking lookups kept off the threads the database needs; the addresses a fetch may reach."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from gateway import lookups
from gateway.lookups import Reach
from gateway.node import Node
from gateway.smime.discovery import FetchError, fetch_ipkix
from gateway.smtp.routes import LookupFailed, addresses
from tests.conftest import DOMAIN, NodeDir, copy_node


async def test_a_stuck_system_resolver_holds_only_the_lookup_threads(
    template_node: NodeDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The system resolver hangs for names under lent.test (a silent DNS server: the machine's own cannot be
    pointed at one in a test, so its getaddrinfo is held here). Twenty relay address lookups and IPKIX
    fetches time out, each after its own limit, while the node's SQLite statements and `to_thread` work go
    on: they used to share asyncio's default executor, six threads on two cores, all then held."""
    held = threading.Event()
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".lent.test"):
            held.wait(30)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    nd = copy_node(template_node, tmp_path / "node")
    try:
        async with Node(nd.cfg()) as node:
            stuck = [asyncio.ensure_future(addresses(f"mx{n}.lent.test", lifetime=1.0)) for n in range(16)]
            stuck += [asyncio.ensure_future(fetch_ipkix(f"http://c{n}.lent.test/a.cer", seconds=1.0)) for n in range(4)]
            await asyncio.sleep(0.2)  # every lookup thread is taken
            async with asyncio.timeout(5):  # the stuck threads are held 30 s: these do not wait for them
                await node.mailboxes.create(f"nouveau@{DOMAIN}", "ORG")
                assert (await node.mailboxes.state(f"nouveau@{DOMAIN}")) is not None
                assert await asyncio.to_thread(sum, [1, 2]) == 3
            outcomes = await asyncio.gather(*stuck, return_exceptions=True)
    finally:
        held.set()
    assert [str(o) for o in outcomes[:16]] == [
        f"4.4.3 address lookup of mx{n}.lent.test timed out after 1 s" for n in range(16)
    ]
    assert all(isinstance(o, LookupFailed) for o in outcomes[:16])
    assert all(isinstance(o, FetchError) and o.reason == "" for o in outcomes[16:])  # temporary: tried again later
    assert [str(o) for o in outcomes[16:]] == [f"http://c{n}.lent.test/a.cer: TimeoutError" for n in range(4)]


async def test_lookups_run_in_their_own_threads() -> None:
    assert await lookups.blocking(lambda: threading.current_thread().name.startswith("mssgw-lookup")) is True
    assert await lookups.blocking(lambda: threading.current_thread().name.startswith("mssgw-ldap"), pool="ldap")
    infos = await lookups.getaddrinfo("127.0.0.1", 80)
    assert {(info[0], info[4]) for info in infos} == {(socket.AF_INET, ("127.0.0.1", 80))}


@pytest.mark.parametrize(
    ("address", "public_only", "with_extra"),
    [
        ("192.0.2.1", False, False),  # documentation (TEST-NET-1): not global
        ("8.8.8.8", True, True),
        ("2001:4860:4860::8888", True, True),
        ("127.0.0.1", False, False),
        ("10.1.2.3", False, True),  # in the extra 10.1.0.0/16
        ("10.2.0.1", False, False),
        ("169.254.169.254", False, False),  # a cloud's metadata service
        ("100.64.0.1", False, False),  # carrier-grade NAT
        ("224.0.0.1", False, False),  # multicast
        ("0.0.0.0", False, False),  # noqa: S104 (an address judged, nothing bound)
        ("::1", False, False),
        ("::ffff:127.0.0.1", False, False),  # IPv4-mapped loopback
        ("::ffff:10.1.0.9", False, True),
        ("fe80::1%eth0", False, False),  # link-local, with a zone
        ("fd00::1", False, False),  # unique local
        ("not-an-address", False, False),
        # IPv6 forms that carry an IPv4 address are judged by it
        ("::7f00:1", False, False),  # IPv4-compatible 127.0.0.1
        ("::ffff:0:7f00:1", False, False),  # SIIT
        ("64:ff9b::a9fe:a9fe", False, False),  # NAT64 well-known prefix to 169.254.169.254
        ("64:ff9b::808:808", True, True),  # ... to 8.8.8.8
        ("2002:7f00:1::", False, False),  # 6to4 of 127.0.0.1
        ("2002:808:808::1", True, True),  # 6to4 of 8.8.8.8
        ("64:ff9b:1::1", False, False),  # a local NAT64 prefix (RFC 8215): it leads anywhere
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False, False),  # Teredo
        ("fec0::1", False, False),  # site-local (deprecated)
        ("::", False, False),
    ],
)
def test_reach(address: str, public_only: bool, with_extra: bool) -> None:
    assert Reach().permits(address) is public_only
    assert Reach.of(["10.1.0.0/16"]).permits(address) is with_extra
