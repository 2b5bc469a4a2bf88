"""Routing of remote domains against a real DNS server (dnsmasq on loopback), and static routes.

Every lookup goes over UDP to dnsmasq serving the records below; SERVFAIL and timeouts come from the
loopback stand-ins of tests.dns. Errors are compared whole: type, permanence, status and text.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator

import pytest

from gateway.smtp.routes import (
    BadRoute,
    LookupFailed,
    NoAddress,
    NoMailHost,
    NoSuchDomain,
    NullMX,
    RouteError,
    Target,
    addresses,
    resolve,
    split_host_port,
)
from tests.dns import Dnsmasq, Zone, dnsmasq, servfail_server, silent_server

ZONE = Zone(
    mx=[
        ("order.test", "c.order.test", 30),
        ("order.test", "a.order.test", 10),
        ("order.test", "b.order.test", 20),
        ("equal.test", "x1.equal.test", 10),
        ("equal.test", "x2.equal.test", 10),
        ("equal.test", "last.equal.test", 20),
        ("mixednull.test", "real.mixednull.test", 10),
        ("routed.test", "mx.routed.test", 10),
    ],
    null_mx=["nullmx.test", "mixednull.test"],
    hosts=[
        ("aonly.test", "127.0.0.2"),
        ("v6only.test", "::1"),
        ("a.order.test", "127.0.0.3"),
        ("both.test", "127.0.0.4"),
        ("both.test", "::1"),
    ],
    txt=[("txtonly.test", "no mail here")],
)


@pytest.fixture(scope="module")
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dnsmasq]:
    with dnsmasq(ZONE, tmp_path_factory.mktemp("dns")) as server:
        yield server


async def test_static_route_wins_over_dns(dns_server: Dnsmasq) -> None:
    routes = {"Routed.Test": "relay.example:2525"}
    got = await resolve("ROUTED.test.", routes=routes, resolver=dns_server.address)
    assert got == [Target("relay.example", 2525, 0, "route")]
    # Without the route the same domain resolves through its MX record.
    assert await resolve("routed.test", routes={}, resolver=dns_server.address) == [
        Target("mx.routed.test", 25, 10, "mx")
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("relay.example", Target("relay.example", 25, 0, "route")),
        ("127.0.0.1:2526", Target("127.0.0.1", 2526, 0, "route")),
        ("[::1]:2527", Target("::1", 2527, 0, "route")),
        ("[::1]", Target("::1", 25, 0, "route")),
        ("::1", Target("::1", 25, 0, "route")),
        ("Relay.Example:25", Target("relay.example", 25, 0, "route")),
    ],
)
async def test_static_route_forms(value: str, expected: Target) -> None:
    # No resolver is reachable at this address: a static route never touches the DNS.
    assert await resolve("peer.test", routes={"peer.test": value}, resolver="127.0.0.1:9") == [expected]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("relay.example:smtp", "bad static route for peer.test: bad host or port in 'relay.example:smtp'"),
        ("relay.example:0", "bad static route for peer.test: bad host or port in 'relay.example:0'"),
        (":25", "bad static route for peer.test: bad host or port in ':25'"),
        ("[::1", "bad static route for peer.test: unclosed '[' in '[::1'"),
    ],
)
async def test_malformed_static_route_is_temporary(value: str, text: str) -> None:
    with pytest.raises(BadRoute) as err:
        await resolve("peer.test", routes={"peer.test": value})
    assert (err.value.permanent, err.value.status, err.value.text) == (False, "4.3.5", text)
    assert err.value.diagnostic == f"smtp; 451 4.3.5 {text}"


async def test_mx_records_in_preference_order(dns_server: Dnsmasq) -> None:
    got = await resolve("order.test", routes={}, resolver=dns_server.address, port=2525)
    assert got == [
        Target("a.order.test", 2525, 10, "mx"),
        Target("b.order.test", 2525, 20, "mx"),
        Target("c.order.test", 2525, 30, "mx"),
    ]
    assert "query[MX] order.test from 127.0.0.1" in dns_server.log.read_text()  # it came from dnsmasq


async def test_equal_preferences_come_in_random_order(dns_server: Dnsmasq) -> None:
    rng = random.Random(5321)
    orders = set()
    for _ in range(40):
        got = await resolve("equal.test", routes={}, resolver=dns_server.address, rng=rng)
        assert got[2] == Target("last.equal.test", 25, 20, "mx")
        assert {t.preference for t in got[:2]} == {10}
        orders.add(tuple(t.host for t in got[:2]))
    assert orders == {("x1.equal.test", "x2.equal.test"), ("x2.equal.test", "x1.equal.test")}


async def test_null_mx_accepts_no_mail(dns_server: Dnsmasq) -> None:
    with pytest.raises(NullMX) as err:
        await resolve("nullmx.test", routes={}, resolver=dns_server.address)
    e = err.value
    assert (e.permanent, e.status, e.text) == (True, "5.1.10", "domain nullmx.test accepts no mail (null MX)")
    assert e.diagnostic == "smtp; 556 5.1.10 domain nullmx.test accepts no mail (null MX)"


async def test_root_exchange_beside_real_mx_is_not_a_null_mx(dns_server: Dnsmasq) -> None:
    got = await resolve("mixednull.test", routes={}, resolver=dns_server.address)
    assert got == [Target("real.mixednull.test", 25, 10, "mx")]


@pytest.mark.parametrize("domain", ["aonly.test", "v6only.test"])
async def test_no_mx_means_the_domain_itself(dns_server: Dnsmasq, domain: str) -> None:
    assert await resolve(domain, routes={}, resolver=dns_server.address, port=587) == [Target(domain, 587, 0, "a")]


async def test_no_mx_and_no_address_is_permanent(dns_server: Dnsmasq) -> None:
    with pytest.raises(NoMailHost) as err:
        await resolve("txtonly.test", routes={}, resolver=dns_server.address)
    e = err.value
    assert (e.permanent, e.status, e.text) == (
        True,
        "5.4.4",
        "unable to route: domain txtonly.test has no MX and no address record",
    )
    assert e.diagnostic == "smtp; 550 5.4.4 unable to route: domain txtonly.test has no MX and no address record"


async def test_nxdomain_is_permanent(dns_server: Dnsmasq) -> None:
    with pytest.raises(NoSuchDomain) as err:
        await resolve("nowhere.test", routes={}, resolver=dns_server.address)
    e = err.value
    assert (e.permanent, e.status, e.text) == (
        True,
        "5.1.2",
        "bad destination system: domain nowhere.test does not exist",
    )
    assert e.diagnostic == "smtp; 550 5.1.2 bad destination system: domain nowhere.test does not exist"


async def test_refused_is_temporary(dns_server: Dnsmasq) -> None:
    # dnsmasq has no upstream server: names outside its local domains are REFUSED.
    with pytest.raises(LookupFailed) as err:
        await resolve("elsewhere.example", routes={}, resolver=dns_server.address)
    e = err.value
    assert (e.permanent, e.status, e.text) == (
        False,
        "4.4.3",
        "DNS lookup of MX records of elsewhere.example failed: REFUSED",
    )
    assert e.diagnostic == "smtp; 451 4.4.3 DNS lookup of MX records of elsewhere.example failed: REFUSED"


async def test_servfail_is_temporary() -> None:
    async with servfail_server() as (address, responder):
        with pytest.raises(LookupFailed) as err:
            await resolve("peer.test", routes={}, resolver=address)
    e = err.value
    assert (e.permanent, e.status, e.text) == (False, "4.4.3", "DNS lookup of MX records of peer.test failed: SERVFAIL")
    assert responder.queries == 1


async def test_timeout_is_temporary() -> None:
    async with silent_server() as (address, responder):
        with pytest.raises(LookupFailed) as err:
            await resolve("peer.test", routes={}, resolver=address, lifetime=0.6)
    e = err.value
    assert (e.permanent, e.status, e.text) == (
        False,
        "4.4.3",
        "DNS lookup of MX records of peer.test timed out after 0.6 s",
    )
    assert responder.queries >= 1


@pytest.mark.parametrize(
    ("resolver", "text"),
    [
        (
            "dns.example:53",
            "bad DNS resolver setting 'dns.example:53': 'dns.example' does not appear to be an IPv4 or IPv6 address",
        ),
        ("127.0.0.1:port", "bad DNS resolver setting '127.0.0.1:port': bad host or port in '127.0.0.1:port'"),
    ],
)
async def test_bad_resolver_setting_is_temporary(resolver: str, text: str) -> None:
    with pytest.raises(BadRoute) as err:
        await resolve("peer.test", routes={}, resolver=resolver)
    assert (err.value.permanent, err.value.status, err.value.text) == (False, "4.3.5", text)


async def test_addresses_through_the_configured_resolver(dns_server: Dnsmasq) -> None:
    assert await addresses("a.order.test", resolver=dns_server.address) == ["127.0.0.3"]
    assert await addresses("both.test", resolver=dns_server.address) == ["127.0.0.4", "::1"]
    assert await addresses("v6only.test", resolver=dns_server.address) == ["::1"]
    assert await addresses("192.0.2.7", resolver=dns_server.address) == ["192.0.2.7"]


@pytest.mark.parametrize(
    ("host", "cls", "text"),
    [
        ("ghost.test", NoAddress, "unable to route: host ghost.test does not exist"),
        ("txtonly.test", NoAddress, "unable to route: host txtonly.test has no address"),
    ],
)
async def test_addresses_errors(dns_server: Dnsmasq, host: str, cls: type[RouteError], text: str) -> None:
    with pytest.raises(cls) as err:
        await addresses(host, resolver=dns_server.address)
    assert (err.value.permanent, err.value.status, err.value.text) == (True, "5.4.4", text)


async def test_addresses_through_the_system_resolver() -> None:
    expected = sorted(
        {str(i[4][0]) for i in socket.getaddrinfo("localhost", None, type=socket.SOCK_STREAM)},
        key=lambda a: ":" in a,
    )
    got = await addresses("localhost")
    assert sorted(got) == sorted(expected)
    assert got == sorted(got, key=lambda a: ":" in a)  # IPv4 first
    assert "127.0.0.1" in got


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("mx.example", ("mx.example", 25)),
        ("mx.example:2525", ("mx.example", 2525)),
        ("[2001:db8::1]:26", ("2001:db8::1", 26)),
        ("2001:db8::1", ("2001:db8::1", 25)),
    ],
)
def test_split_host_port(value: str, expected: tuple[str, int]) -> None:
    assert split_host_port(value, 25) == expected
