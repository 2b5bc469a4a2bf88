"""gateway/smime/discovery.py against a real DNS server (Debian's dnsmasq on a loopback port) serving
CERT records (RFC 4398), with certificates of a real trust-space PKI (certs.pki) and its CRLs: the
discovery cases of the domain brief §9 that involve DNS (address- and domain-bound, found but not used,
one server down, over 512 octets by TCP, no record), the local directory first, IPKIX URLs, the cache."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import secrets
import struct
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.query
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from certs.pki import TrustSpacePKI, parse_reason
from gateway.config import SmimeSection
from gateway.lookups import Reach
from gateway.smime.discovery import (
    CERT_IPKIX,
    CERT_PKIX,
    FETCH_LIMIT,
    IPKIX_DOWN_TTL,
    IPKIX_MAX,
    NEGATIVE_TTL,
    REASONS,
    Discovery,
    FetchError,
    Found,
    Outcome,
    Rejected,
    Step,
    cert_names,
    fetch_ipkix,
    load_certificates,
)
from gateway.smime.trust import TrustStore
from gateway.store.crypto import KeyEncryptionKey
from gateway.store.db import Database
from gateway.store.mailboxes import MailboxRepository
from tests.dns import Dnsmasq, Query, Zone, dnsmasq, servfail_server, silent_server
from tests.smime.test_trust import _named

CERT = 37


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pkix(name: str, data: bytes) -> tuple[str, int, bytes]:
    """A CERT record: type PKIX, key tag 0, algorithm 0, the DER certificate (RFC 4398 §2)."""
    return name, CERT, struct.pack("!HHB", CERT_PKIX, 0, 0) + data


def ipkix(name: str, url: str) -> tuple[str, int, bytes]:
    return name, CERT, struct.pack("!HHB", CERT_IPKIX, 0, 0) + url.encode()


def unknown_version(cert: x509.Certificate) -> bytes:
    """`cert`'s DER with version 6 for v3: cryptography raises x509.InvalidVersion, not a ValueError."""
    data = bytearray(der(cert))
    at = data.index(bytes([0xA0, 0x03, 0x02, 0x01, 0x02]))  # [0] EXPLICIT INTEGER 2
    data[at + 4] = 0x05
    return bytes(data)


@dataclass
class World:
    pki: TrustSpacePKI
    trust: TrustStore
    alice: x509.Certificate  # alice.martin@ch-a.test
    alice_other: x509.Certificate  # a second valid one for alice (what DNS says when the local store wins)
    domain_b: x509.Certificate  # domain-bound, ch-b.test
    domain_a: x509.Certificate  # domain-bound, ch-a.test
    bob_revoked: x509.Certificate  # bob@ch-a.test, revoked
    dave: x509.Certificate  # dave@ch-a.test
    team: tuple[x509.Certificate, ...]  # three for team@ch-a.test: over 512 octets together
    accueil: x509.Certificate  # accueil@ch-a.test, registered to the local mailbox
    crowd: x509.Certificate = None  # type: ignore[assignment]  # crowd@ch-a.test, beside 8 CA certificates of nobody

    def discovery(self, server: str, **kw: object) -> Discovery:
        host, port = server.rsplit(":", 1)
        intermediates = [self.pki.ca("personnes"), self.pki.ca("organisations")]
        kw.setdefault("allow_networks", ["127.0.0.0/8"])  # the test's web servers
        return Discovery(self.trust, nameservers=[host], port=int(port), intermediates=intermediates, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    pki = TrustSpacePKI.create(
        tmp_path_factory.mktemp("discovery") / "pki", label="Discovery Test", crl_base_url="http://crl.test/"
    )
    bob = pki.issue_address("bob@ch-a.test")
    pki.revoke(bob.serial, parse_reason("keyCompromise"))
    world = World(
        pki=pki,
        trust=TrustStore([pki.root]),
        alice=pki.issue_address("alice.martin@ch-a.test").certificate,
        alice_other=pki.issue_address("alice.martin@ch-a.test").certificate,
        domain_b=pki.issue_domain("ch-b.test").certificate,
        domain_a=pki.issue_domain("ch-a.test").certificate,
        bob_revoked=bob.certificate,
        dave=pki.issue_address("dave@ch-a.test").certificate,
        team=tuple(pki.issue_address("team@ch-a.test").certificate for _ in range(3)),
        accueil=pki.issue_address("accueil@ch-a.test").certificate,
    )
    world.trust = TrustStore([pki.root], [p.read_bytes() for p in pki.publish_crls().values()])
    world.crowd = pki.issue_address("crowd@ch-a.test").certificate
    return world


def _nobody(n: int) -> x509.Certificate:
    """A self-signed CA certificate no trust space knows."""
    key = ec.generate_private_key(ec.SECP256R1())
    return _named(f"CA of nobody {n}", f"CA of nobody {n}", key, key)


CROWD = [_nobody(n) for n in range(8)]


@pytest.fixture(scope="module")
def server(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dnsmasq]:
    zone = Zone(
        rr=[
            pkix("alice.martin.ch-a.test", der(world.alice)),
            pkix("ch-b.test", der(world.domain_b)),
            pkix("bob.ch-a.test", der(world.bob_revoked)),
            pkix("ch-a.test", der(world.domain_a)),
            pkix("carol.ch-a.test", b"not a certificate"),
            pkix("carol.ch-a.test", der(world.dave)),
            *(pkix("team.ch-a.test", der(c)) for c in world.team),
            pkix("accueil.ch-a.test", der(world.alice_other)),
            ("pgp.ch-b.test", CERT, struct.pack("!HHB", 3, 0, 0) + b"an OpenPGP packet"),
            pkix("odd.ch-a.test", unknown_version(world.dave)),
            pkix("crowd.ch-a.test", der(world.crowd)),
            *(pkix("crowd.ch-a.test", der(c)) for c in CROWD),
        ],
    )
    with dnsmasq(zone, tmp_path_factory.mktemp("dnsmasq")) as running:
        yield running


async def cert_queries(server: Dnsmasq, since: int, count: int) -> list[Query]:
    """The CERT queries logged after the first `since` ones, once `count` are there or after a second
    (dnsmasq writes its log a moment later, its TCP child later still)."""
    for _ in range(50):
        found = [q for q in server.queries() if q.type == "CERT"][since:]
        if len(found) >= count:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)  # and nothing more comes
    return [q for q in server.queries() if q.type == "CERT"][since:]


def by_tcp(name: str) -> list[Query]:
    """One certificate of this PKI is over 512 octets already: the UDP answer is truncated (TC) and
    the resolver asks again over TCP."""
    return [Query("CERT", name, tcp=False), Query("CERT", name, tcp=True)]


def logged(server: Dnsmasq) -> int:
    return len([q for q in server.queries() if q.type == "CERT"])


async def test_an_address_bound_certificate_at_the_address_name(world: World, server: Dnsmasq) -> None:
    before = logged(server)
    found = await world.discovery(server.address).find("alice.martin@ch-a.test")
    assert found == Found("alice.martin@ch-a.test", Outcome.FOUND, Step.DNS_ADDRESS, (world.alice,))
    assert await cert_queries(server, before, 2) == by_tcp("alice.martin.ch-a.test")


async def test_a_peers_records_cannot_crowd_out_the_configured_intermediates(world: World, server: Dnsmasq) -> None:
    """crowd@ch-a.test's records carry 8 CA certificates of nobody beside its certificate: path building
    takes 8 candidates at most, and the node's configured intermediates come first among them."""
    found = await world.discovery(server.address).find("crowd@ch-a.test")
    assert (found.outcome, found.step, found.certificates) == (Outcome.FOUND, Step.DNS_ADDRESS, (world.crowd,))
    assert sorted(r.reason for r in found.rejected) == ["no-key-transport"] * 8  # each CA judged as a candidate


async def test_a_domain_bound_certificate_at_the_domain(world: World, server: Dnsmasq) -> None:
    before = logged(server)
    found = await world.discovery(server.address).find("Secretariat@CH-B.test")
    assert found == Found("Secretariat@CH-B.test", Outcome.FOUND, Step.DNS_DOMAIN, (world.domain_b,))
    queries = await cert_queries(server, before, 3)
    assert [(q.name.lower(), q.tcp) for q in queries] == [
        ("secretariat.ch-b.test", False),
        ("ch-b.test", False),
        ("ch-b.test", True),
    ]


async def test_a_local_part_that_cannot_be_a_dns_name_asks_the_domain_only(world: World, server: Dnsmasq) -> None:
    before = logged(server)
    found = await world.discovery(server.address).find("a..b@ch-b.test")
    assert (found.outcome, found.step, found.certificates) == (Outcome.FOUND, Step.DNS_DOMAIN, (world.domain_b,))
    assert await cert_queries(server, before, 2) == by_tcp("ch-b.test")


async def test_records_of_other_types_are_no_certificate(world: World, server: Dnsmasq) -> None:
    """pgp.ch-b.test holds an OpenPGP CERT record: not found there, so the domain answers."""
    found = await world.discovery(server.address).find("pgp@ch-b.test")
    assert (found.outcome, found.step, found.certificates) == (Outcome.FOUND, Step.DNS_DOMAIN, (world.domain_b,))


async def test_the_local_directory_first_without_any_dns_query(world: World, server: Dnsmasq, tmp_path: Path) -> None:
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}") as db:
        await db.migrate()
        repo = MailboxRepository(db, KeyEncryptionKey(secrets.token_bytes(32)))
        await repo.create("accueil@ch-a.test", "ORG", service="Accueil")
        await repo.create("alice.martin@ch-a.test", "ORG", service="Sans certificat S/MIME")
        await repo.add_certificate("accueil@ch-a.test", world.accueil, "smime")
        await repo.add_certificate("alice.martin@ch-a.test", world.alice_other, "tls")  # not for S/MIME
        assert await repo.smime_certificates("ACCUEIL@ch-a.test") == (world.accueil,)
        assert await repo.smime_certificates("alice.martin@ch-a.test") == ()
        assert await repo.smime_certificates("nobody@ch-a.test") == ()
        discovery = world.discovery(server.address, local=repo.smime_certificates)
        before = logged(server)
        # DNS holds another valid certificate at accueil.ch-a.test: the registered one wins, unasked.
        found = await discovery.find("accueil@ch-a.test")
        assert found == Found("accueil@ch-a.test", Outcome.FOUND, Step.LOCAL, (world.accueil,))
        # A local mailbox without an S/MIME certificate: DNS answers.
        found = await discovery.find("alice.martin@ch-a.test")
        assert (found.step, found.certificates) == (Step.DNS_ADDRESS, (world.alice,))
        assert await cert_queries(server, before, 2) == by_tcp("alice.martin.ch-a.test")


async def test_an_invalid_local_certificate_drops_the_recipient(world: World, server: Dnsmasq, tmp_path: Path) -> None:
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}") as db:
        await db.migrate()
        repo = MailboxRepository(db, KeyEncryptionKey(secrets.token_bytes(32)))
        await repo.create("bob@ch-a.test", "ORG", service="Révoqué")
        await repo.add_certificate("bob@ch-a.test", world.bob_revoked, "smime")
        before = logged(server)
        found = await world.discovery(server.address, local=repo.smime_certificates).find("bob@ch-a.test")
        assert found == Found(
            "bob@ch-a.test", Outcome.INVALID, Step.LOCAL, (), (Rejected("local", "revoked", world.bob_revoked),)
        )
        assert await cert_queries(server, before, 1) == []


async def test_an_invalid_certificate_found_first_drops_the_recipient(world: World, server: Dnsmasq) -> None:
    """bob.ch-a.test holds a revoked certificate; ch-a.test a valid domain-bound one, never asked for."""
    before = logged(server)
    found = await world.discovery(server.address).find("bob@ch-a.test")
    assert found == Found(
        "bob@ch-a.test",
        Outcome.INVALID,
        Step.DNS_ADDRESS,
        (),
        (Rejected("bob.ch-a.test.", "revoked", world.bob_revoked),),
    )
    assert found.rejected[0].text == "the certificate is revoked"
    assert await cert_queries(server, before, 3) == by_tcp("bob.ch-a.test")  # and not ch-a.test


async def test_garbage_and_a_certificate_of_someone_else(world: World, server: Dnsmasq) -> None:
    found = await world.discovery(server.address).find("carol@ch-a.test")
    assert found == Found(
        "carol@ch-a.test",
        Outcome.INVALID,
        Step.DNS_ADDRESS,
        (),
        (
            Rejected("carol.ch-a.test.", "unparsable"),
            Rejected("carol.ch-a.test.", "address-mismatch", world.dave),
        ),
    )
    assert [r.text for r in found.rejected] == [REASONS["unparsable"], REASONS["address-mismatch"]]


async def test_a_certificate_of_an_unknown_version_is_unparsable(world: World, server: Dnsmasq) -> None:
    found = await world.discovery(server.address).find("odd@ch-a.test")
    assert found == Found(
        "odd@ch-a.test", Outcome.INVALID, Step.DNS_ADDRESS, (), (Rejected("odd.ch-a.test.", "unparsable"),)
    )
    data = unknown_version(world.dave)
    armored = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(data) + b"-----END CERTIFICATE-----\n"
    assert (load_certificates(data), load_certificates(armored)) == ([], [])


async def test_the_domain_certificate_serves_every_address_of_the_domain(world: World, server: Dnsmasq) -> None:
    found = await world.discovery(server.address).find("eve@ch-a.test")
    assert (found.outcome, found.step, found.certificates) == (Outcome.FOUND, Step.DNS_DOMAIN, (world.domain_a,))


async def test_an_answer_over_512_octets_comes_by_tcp(world: World, server: Dnsmasq) -> None:
    query = dns.message.make_query("team.ch-a.test.", CERT)
    udp = dns.query.udp(query, server.host, port=server.port, timeout=5, raise_on_truncation=False)
    assert udp.flags & dns.flags.TC
    assert udp.answer == []
    assert len(dns.query.tcp(query, server.host, port=server.port, timeout=5).to_wire()) > 3 * 1000
    before = logged(server)
    found = await world.discovery(server.address).find("team@ch-a.test")
    assert (found.outcome, found.step, found.rejected) == (Outcome.FOUND, Step.DNS_ADDRESS, ())
    assert sorted(der(c) for c in found.certificates) == sorted(der(c) for c in world.team)
    assert await cert_queries(server, before, 2) == by_tcp("team.ch-a.test")


async def test_no_record_is_no_certificate(world: World, server: Dnsmasq) -> None:
    before = logged(server)
    found = await world.discovery(server.address).find("nobody@ch-c.test")
    assert found == Found("nobody@ch-c.test", Outcome.NO_CERTIFICATE)
    assert not found.temporary
    assert await cert_queries(server, before, 2) == [
        Query("CERT", "nobody.ch-c.test", False),
        Query("CERT", "ch-c.test", False),
    ]


async def test_a_silent_server_is_a_temporary_failure_never_cached(world: World) -> None:
    async with silent_server() as (address, responder):
        discovery = world.discovery(address, timeout=0.5)
        found = await discovery.find("alice.martin@ch-a.test")
        assert (found.outcome, found.temporary, found.step, found.certificates) == (Outcome.UNAVAILABLE, True, None, ())
        assert found.detail == "alice.martin.ch-a.test.: DNS timeout"
        asked = responder.queries
        assert asked >= 1
        again = await discovery.find("alice.martin@ch-a.test")
        assert again.outcome is Outcome.UNAVAILABLE
        assert responder.queries > asked


async def test_servfail_is_a_temporary_failure(world: World) -> None:
    async with servfail_server() as (address, responder):
        found = await world.discovery(address).find("alice.martin@ch-a.test")
        assert (found.outcome, found.temporary) == (Outcome.UNAVAILABLE, True)
        assert found.detail.startswith("alice.martin.ch-a.test.: no server answered (")
        assert "SERVFAIL" in found.detail
        assert responder.queries == 1


async def test_the_cache_answers_within_the_ttl_and_asks_again_after(world: World, tmp_path: Path) -> None:
    zone = Zone(rr=[pkix("alice.martin.ch-a.test", der(world.alice))])
    now = [1000.0]
    with dnsmasq(zone, tmp_path) as own:
        discovery = world.discovery(own.address, ttl=600, timeout=0.5, clock=lambda: now[0])
        first = await discovery.find("alice.martin@ch-a.test")
        missing = await discovery.find("nobody@ch-a.test")
        assert (first.outcome, missing.outcome) == (Outcome.FOUND, Outcome.NO_CERTIFICATE)
    # The server is gone: only the cache can answer, and does, case-insensitively.
    now[0] += 599
    assert await discovery.find("Alice.Martin@ch-a.test") is first
    now[0] = 1000 + NEGATIVE_TTL - 1
    assert await discovery.find("nobody@ch-a.test") is missing
    now[0] = 1000 + NEGATIVE_TTL + 1
    assert (await discovery.find("nobody@ch-a.test")).outcome is Outcome.UNAVAILABLE
    now[0] = 1000 + 601
    gone = await discovery.find("alice.martin@ch-a.test")
    assert gone.outcome is Outcome.UNAVAILABLE
    assert gone.detail.startswith("alice.martin.ch-a.test.: ")  # a timeout, or refused by ICMP
    discovery.forget()
    assert (await discovery.find("alice.martin@ch-a.test")).outcome is Outcome.UNAVAILABLE


@pytest.mark.parametrize(
    "address", ["no-at-sign", "@ch-a.test", "alice@", "alice@bad..domain", "alice@.", "alice@" + "x" * 64 + ".test"]
)
async def test_a_bad_address_asks_nothing(world: World, address: str) -> None:
    async with silent_server() as (server, responder):
        found = await world.discovery(server, timeout=0.5).find(address)
        assert found == Found(address, Outcome.BAD_ADDRESS, detail="not local-part@domain with a valid domain name")
        assert responder.queries == 0


def test_cert_names() -> None:
    assert cert_names("alice.martin@CH-A.test.") == (
        dns.name.from_text("alice.martin.ch-a.test."),
        dns.name.from_text("ch-a.test."),
    )
    assert cert_names("x" * 64 + "@ch-a.test") == (None, dns.name.from_text("ch-a.test."))
    assert cert_names("a.@ch-a.test") == (None, dns.name.from_text("ch-a.test."))
    assert cert_names("plain") is None


# ----------------------------------------------------------------- IPKIX: URLs fetched over HTTP


@pytest.fixture
async def web_server(world: World) -> AsyncIterator[str]:
    routes = web.RouteTableDef()

    @routes.get("/ivan.cer")
    async def ivan(_: web.Request) -> web.Response:
        return web.Response(body=der(world.alice), content_type="application/pkix-cert")

    @routes.get("/alice.pem")
    async def alice_pem(_: web.Request) -> web.Response:
        return web.Response(body=world.alice.public_bytes(serialization.Encoding.PEM))

    @routes.get("/big.cer")
    async def big(_: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no Content-Length to refuse it early
        await response.prepare(_)
        await response.write(b"\0" * (FETCH_LIMIT + 1))
        return response

    @routes.get("/unavailable.cer")
    async def unavailable(_: web.Request) -> web.Response:
        return web.Response(status=503)

    async with http_site("127.0.0.1", routes) as (base, _):
        yield base


async def test_ipkix_urls(world: World, web_server: str, tmp_path: Path) -> None:
    zone = Zone(
        rr=[
            ipkix("alice.martin.ch-a.test", f"{web_server}/ivan.cer"),
            ipkix("pem.ch-a.test", f"{web_server}/alice.pem"),
            ipkix("refused.ch-a.test", "ftp://127.0.0.1/alice.cer"),
            ipkix("refused.ch-a.test", f"{web_server}/missing.cer"),
            ipkix("refused.ch-a.test", f"{web_server}/big.cer"),
            ipkix("later.ch-a.test", f"{web_server}/unavailable.cer"),
            ipkix("later.ch-a.test", f"{web_server}/ivan.cer"),  # valid for alice, not for later@
        ]
    )
    with dnsmasq(zone, tmp_path) as own:
        discovery = world.discovery(own.address)
        found = await discovery.find("alice.martin@ch-a.test")
        assert found == Found("alice.martin@ch-a.test", Outcome.FOUND, Step.DNS_ADDRESS, (world.alice,))
        pem = await discovery.find("pem@ch-a.test")
        assert pem.rejected == (Rejected(f"{web_server}/alice.pem", "address-mismatch", world.alice),)
        refused = await discovery.find("refused@ch-a.test")
        assert (refused.outcome, refused.step, refused.certificates) == (Outcome.INVALID, Step.DNS_ADDRESS, ())
        assert sorted((r.source, r.reason) for r in refused.rejected) == [
            ("ftp://127.0.0.1/alice.cer", "url-refused"),
            (f"{web_server}/big.cer", "url-too-large"),
            (f"{web_server}/missing.cer", "url-failed"),
        ]
        later = await discovery.find("later@ch-a.test")
        assert (later.outcome, later.step, later.temporary) == (Outcome.UNAVAILABLE, Step.DNS_ADDRESS, True)
        assert later.detail == f"{web_server}/unavailable.cer: HTTP 503"
        assert later.rejected == (Rejected(f"{web_server}/ivan.cer", "address-mismatch", world.alice),)


async def test_an_ipkix_url_that_cannot_be_fetched_is_a_rejection(world: World, tmp_path: Path) -> None:
    """A host aiohttp cannot IDNA-encode (an empty or over-long label) is a refused URL; anything else a
    fetch raises is a failed one: never an exception out of find()."""
    long_label = "http://" + "x" * 64 + ".example/c.cer"

    async def fetch(url: str) -> bytes:
        if url == "http://broken.test/d.cer":
            raise RuntimeError("a bug in the fetcher")
        return await fetch_ipkix(url)

    zone = Zone(
        rr=[
            ipkix("badhost.ch-a.test", "http://a..b/eve.cer"),
            ipkix("badhost.ch-a.test", long_label),
            ipkix("broken.ch-a.test", "http://broken.test/d.cer"),
        ]
    )
    with dnsmasq(zone, tmp_path) as own:
        discovery = world.discovery(own.address, fetch=fetch)
        found = await discovery.find("badhost@ch-a.test")
        assert (found.outcome, found.step, found.certificates) == (Outcome.INVALID, Step.DNS_ADDRESS, ())
        assert sorted(found.rejected, key=lambda r: r.source) == [
            Rejected("http://a..b/eve.cer", "url-refused"),
            Rejected(long_label, "url-refused"),
        ]
        found = await discovery.find("broken@ch-a.test")
        assert found == Found(
            "broken@ch-a.test",
            Outcome.INVALID,
            Step.DNS_ADDRESS,
            (),
            (Rejected("http://broken.test/d.cer", "url-failed"),),
        )
    with pytest.raises(FetchError) as refused:
        await fetch_ipkix("http://a..b/eve.cer")
    assert refused.value.reason == "url-refused"


@contextlib.asynccontextmanager
async def http_site(host: str, routes: web.RouteTableDef) -> AsyncIterator[tuple[str, list[str]]]:
    """An HTTP server on `host` (a loopback address): its base URL, and the paths it was asked for."""
    asked: list[str] = []

    @web.middleware
    async def log(request: web.Request, handler: Handler) -> web.StreamResponse:
        asked.append(request.path)
        return await handler(request)

    app = web.Application(middlewares=[log])
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    try:
        yield f"http://{host}:{site._server.sockets[0].getsockname()[1]}", asked  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


async def test_ipkix_urls_reach_only_public_addresses_and_allowed_networks(world: World, tmp_path: Path) -> None:
    """A peer's CERT record names the URL: without `allow_networks` the node fetches from no loopback or
    private address (SSRF), whether the URL names it, a host name resolves to it, or a redirection leads
    there, and nothing is sent. Host names are asked of discovery's own DNS servers."""
    serving = web.RouteTableDef()

    @serving.get("/alice.cer")
    async def alice(_: web.Request) -> web.Response:
        return web.Response(body=der(world.alice), content_type="application/pkix-cert")

    async with http_site("127.0.0.1", serving) as (inside, asked):
        port = inside.rsplit(":", 1)[1]
        redirecting = web.RouteTableDef()

        @redirecting.get("/alice.cer")
        async def moved(_: web.Request) -> web.Response:
            raise web.HTTPFound(f"{inside}/alice.cer")

        async with http_site("127.0.0.2", redirecting) as (outside, _):
            zone = Zone(
                hosts=[("certs.ch-a.test", "127.0.0.1")],
                rr=[
                    ipkix("alice.martin.ch-a.test", f"http://certs.ch-a.test:{port}/alice.cer"),
                    ipkix("literal.ch-a.test", f"{inside}/alice.cer"),
                    ipkix("moved.ch-a.test", f"{outside}/alice.cer"),
                ],
            )
            with dnsmasq(zone, tmp_path) as own:
                closed = world.discovery(own.address, allow_networks=[])
                by_name = await closed.find("alice.martin@ch-a.test")
                assert (by_name.outcome, by_name.rejected) == (
                    Outcome.INVALID,
                    (Rejected(f"http://certs.ch-a.test:{port}/alice.cer", "url-refused"),),
                )
                literal = await closed.find("literal@ch-a.test")
                assert literal.rejected == (Rejected(f"{inside}/alice.cer", "url-refused"),)
                assert asked == []  # nothing reached the inside server
                # 127.0.0.2 allowed, not 127.0.0.1: the redirection to the inside is refused, not followed.
                half = world.discovery(own.address, allow_networks=["127.0.0.2/32"])
                moved_there = await half.find("moved@ch-a.test")
                assert moved_there.rejected == (Rejected(f"{outside}/alice.cer", "url-refused"),)
                assert asked == []
                # Allowed: found by its host name through discovery's DNS server (not the system's).
                opened = world.discovery(own.address, allow_networks=["127.0.0.0/8"])
                found = await opened.find("alice.martin@ch-a.test")
                assert found == Found("alice.martin@ch-a.test", Outcome.FOUND, Step.DNS_ADDRESS, (world.alice,))
                assert asked == ["/alice.cer"]
                followed = await opened.find("moved@ch-a.test")  # a redirection within reach is followed
                assert followed.rejected == (Rejected(f"{outside}/alice.cer", "address-mismatch", world.alice),)
                assert asked == ["/alice.cer", "/alice.cer"]


async def test_ipkix_urls_share_one_deadline_and_a_cap(world: World, tmp_path: Path) -> None:
    """Six IPKIX records whose servers never answer: the first IPKIX_MAX are fetched together, the rest
    skipped, and the step waits ipkix_deadline in all (not 5 s per URL, one after another)."""
    urls = [f"http://127.0.0.1:9/{i}.cer" for i in range(IPKIX_MAX + 2)]
    asked: list[str] = []

    async def hang(url: str) -> bytes:
        asked.append(url)
        await asyncio.sleep(3)  # cancelled at the deadline before this
        raise FetchError("", f"{url}: slow")

    with dnsmasq(Zone(rr=[ipkix("slow.ch-a.test", u) for u in urls]), tmp_path) as own:
        discovery = world.discovery(own.address, fetch=hang, ipkix_deadline=0.5)
        started = time.monotonic()
        found = await discovery.find("slow@ch-a.test")
        assert time.monotonic() - started < 2.0
    assert len(asked) == IPKIX_MAX == 4
    skipped = sorted(set(urls) - set(asked))
    assert (found.outcome, found.step, found.certificates, found.temporary) == (
        Outcome.UNAVAILABLE,
        Step.DNS_ADDRESS,
        (),
        True,
    )
    assert sorted(found.rejected, key=lambda r: r.source) == [Rejected(u, "url-skipped") for u in skipped]
    assert sorted(found.detail.split("; ")) == [f"{u}: no answer within 0.5 s" for u in sorted(asked)]


async def test_an_ipkix_url_that_failed_is_not_fetched_again_for_a_while(world: World, tmp_path: Path) -> None:
    """A domain's IPKIX record names one URL for all its recipients. Its host accepts the request and never
    answers: the first recipient waits the step's deadline, the next ones are unavailable at once, without
    a request, for IPKIX_DOWN_TTL. An answer, even to a fetch started before the failure, clears that: the
    next recipient is fetched again."""
    requests: list[float] = []
    routes = web.RouteTableDef()

    @routes.get("/lent.cer")
    async def lent(_: web.Request) -> web.Response:
        requests.append(time.monotonic())
        if len(requests) == 1:
            await asyncio.sleep(6)  # past the step's deadline
        elif len(requests) == 2:
            await asyncio.sleep(3.25)  # after the first one's deadline, within its own
        return web.Response(body=der(world.alice), content_type="application/pkix-cert")

    async with http_site("127.0.0.1", routes) as (base, _):
        url = f"{base}/lent.cer"
        with dnsmasq(Zone(rr=[ipkix("lent.test", url)]), tmp_path) as own:
            discovery = world.discovery(own.address, ipkix_deadline=4.0)
            first = asyncio.create_task(discovery.find("a@lent.test"))
            for _ in range(250):
                if requests:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(1.5)
            second = asyncio.create_task(discovery.find("b@lent.test"))  # nothing remembered yet: fetched
            failed = await first
            assert failed == Found(
                "a@lent.test", Outcome.UNAVAILABLE, Step.DNS_DOMAIN, detail=f"{url}: no answer within 4 s"
            )
            remembered = await discovery.find("c@lent.test")
            detail = f"{failed.detail} [0 s ago; not fetched again for {IPKIX_DOWN_TTL:.0f} s]"
            assert remembered == Found("c@lent.test", Outcome.UNAVAILABLE, Step.DNS_DOMAIN, detail=detail)
            assert len(requests) == 2
            assert not second.done()
            mismatch = (Rejected(url, "address-mismatch", world.alice),)
            assert (await second).rejected == mismatch
            assert (await discovery.find("d@lent.test")).rejected == mismatch
            assert len(requests) == 3


async def test_without_current_crls_the_recipient_waits_and_new_crls_count_at_once(world: World) -> None:
    """Our own CRLs missing or stale (hard-fail) is ours to fix: temporary (4.7.5 in the DSN), never
    cached; and a result judged before new CRLs (TrustStore.set_crls) is not reused after them."""
    zoe = world.pki.issue_address("zoe@ch-a.test")
    trust = TrustStore([world.pki.root])

    async def local(address: str) -> list[x509.Certificate]:
        return [zoe.certificate] if address == "zoe@ch-a.test" else []

    cas = [world.pki.ca("personnes"), world.pki.ca("organisations")]
    discovery = Discovery(trust, local=local, use_dns=False, intermediates=cas)
    found = await discovery.find("zoe@ch-a.test")
    assert found == Found(
        "zoe@ch-a.test",
        Outcome.UNAVAILABLE,
        Step.LOCAL,
        (),
        (Rejected("local", "no-revocation-info", zoe.certificate),),
        detail="no current revocation list for the recipient's certificate",
    )
    assert discovery._ttl(found) == 0.0
    trust.set_crls([p.read_bytes() for p in world.pki.publish_crls().values()])
    found = await discovery.find("zoe@ch-a.test")
    assert found == Found("zoe@ch-a.test", Outcome.FOUND, Step.LOCAL, (zoe.certificate,))
    world.pki.revoke(zoe.serial, parse_reason("keyCompromise"))
    trust.set_crls([p.read_bytes() for p in world.pki.publish_crls().values()])
    found = await discovery.find("zoe@ch-a.test")
    assert found == Found(
        "zoe@ch-a.test", Outcome.INVALID, Step.LOCAL, (), (Rejected("local", "revoked", zoe.certificate),)
    )


def test_configuration(world: World) -> None:
    section = SmimeSection(dns_servers=["127.0.0.1", "::1"], dns_port=5353, discovery_ttl=60)
    discovery = Discovery.from_config(section, world.trust)
    assert (discovery.resolver.nameservers, discovery.resolver.port) == (["127.0.0.1", "::1"], 5353)
    assert (discovery.ttl, discovery.negative_ttl) == (60, 60)
    assert SmimeSection() == SmimeSection(dns_servers=[], dns_port=53, discovery_ttl=3600)
    with pytest.raises(ValidationError, match="does not appear to be an IPv4 or IPv6 address"):
        SmimeSection(dns_servers=["dns.example"])
    assert discovery.reach == Reach()  # public addresses only, by default
    opened = Discovery.from_config(SmimeSection(allow_networks=["10.20.0.0/16", "fd00::/8"]), world.trust)
    assert opened.reach == Reach((ipaddress.ip_network("10.20.0.0/16"), ipaddress.ip_network("fd00::/8")))
    assert opened.ldap is not None
    assert opened.ldap.reach is opened.reach
    with pytest.raises(ValidationError, match="does not appear to be an IPv4 or IPv6 network"):
        SmimeSection(allow_networks=["intranet"])
