"""The LDAP step of recipient certificate discovery (gateway/smime/ldap.py) against real servers: Debian's
OpenLDAP (slapd) on loopback ports, named by SRV records that Debian's dnsmasq serves, with
certificates of a real trust-space PKI: address- and domain-bound entries, found but not used, one
server down and one silent, SRV priority, every server down, no SRV, PKCS #7 bags carrying their chain,
filter escaping, DNS CERT first (domain brief §7 and §9, discovery cases)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from certs.pki import TrustSpacePKI, parse_reason
from gateway.config import SmimeSection
from gateway.smime.discovery import Discovery, Found, Outcome, Rejected, Step
from gateway.smime.ldap import LDAP_DOWN_TTL, LDAP_GRACE, LDAP_MAX_OCTETS, Target, certificates_of, escape, srv_order
from gateway.smime.trust import TrustStore
from tests.dns import Dnsmasq, Zone, dnsmasq
from tests.ldap import Entry, Search, Slapd, free_port, slapd
from tests.smime.test_discovery import der, pkix

SMIME = "userSMIMECertificate"


@dataclass
class World:
    pki: TrustSpacePKI
    trust: TrustStore
    alice: x509.Certificate  # alice@ch-l.test, in LDAP
    domain_l: x509.Certificate  # ch-l.test, domain-bound, in LDAP (mail=ch-l.test)
    bob_revoked: x509.Certificate  # bob@ch-l.test, revoked, in LDAP
    carol: x509.Certificate  # carol@ch-l.test, in LDAP as a PKCS #7 bag with its CA
    dave: x509.Certificate  # dave@ch-l.test, in LDAP as userCertificate;binary
    eve: x509.Certificate  # eve@ch-l.test, in DNS
    eve_other: x509.Certificate  # eve@ch-l.test, in LDAP
    zoe: x509.Certificate  # zoe@ch-m.test, on the priority-10 server
    zoe_other: x509.Certificate  # zoe@ch-m.test, on the priority-20 server

    def discovery(self, server: Dnsmasq, *, chain: bool = True, **kw: object) -> Discovery:
        cas = [self.pki.ca("personnes"), self.pki.ca("organisations")] if chain else []
        kw.setdefault("allow_networks", ["127.0.0.0/8"])  # the test's LDAP servers
        return Discovery(self.trust, nameservers=["127.0.0.1"], port=server.port, intermediates=cas, **kw)  # type: ignore[arg-type]


class Hostile:
    """An LDAP server that answers the anonymous bind, then answers the root DSE search with a message
    it never finishes: "flood" announces 2 GiB and streams zeros as fast as the client reads, "drip"
    announces 100 octets and sends one every 0.3 s (each within the client's receive timeout). Records,
    for each connection, how many octets of the answer it sent and when the client went away.
    "tarpit" accepts and never answers, not even the bind; "empty" answers every search with success and
    no entry; "late" does as "empty" after holding its first answer back LATE seconds; "refuse" answers
    the root DSE, then every other search with unwillingToPerform. The mode is read as each connection
    comes, then the connection is counted."""

    def __init__(self, mode: str, refer_to: int = 0) -> None:
        self.mode = mode
        self.connections = 0
        self.refer_to = refer_to  # "refer": the port its referral names on 127.0.0.1
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.gone: list[tuple[int, float]] = []  # (octets of the answer sent, monotonic time the client left)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.listener.accept()
                threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        sent = 0
        mode = self.mode  # before counting: a test changes the mode once it sees the count rise
        self.connections += 1
        with conn, contextlib.suppress(OSError):
            if mode == "tarpit":
                conn.recv(4096)  # the bind, then nothing until the client hangs up
                conn.recv(4096)
                return
            bind = conn.recv(4096)  # RFC 4511 §4.2: LDAPMessage { messageID, BindRequest }, short form here
            conn.sendall(b"\x30\x0c\x02\x01" + bind[4:5] + b"\x61\x07\x0a\x01\x00\x04\x00\x04\x00")
            if mode in ("empty", "late", "refuse"):
                self._answer_empty(conn, LATE if mode == "late" else 0.0, refuse=mode == "refuse")
                return
            search = conn.recv(4096)
            message_id = b"\x02\x01" + search[4:5]
            if self.mode == "refer":  # SearchResultDone: referral (10), to an address inside (RFC 4511 §4.1.10)
                url = f"ldap://127.0.0.1:{self.refer_to}/".encode()
                urls = b"\x04" + bytes([len(url)]) + url
                result = b"\x0a\x01\x0a\x04\x00\x04\x00\xa3" + bytes([len(urls)]) + urls
                done = b"\x65" + bytes([len(result)]) + result
                conn.sendall(b"\x30" + bytes([len(message_id) + len(done)]) + message_id + done)
                conn.recv(4096)  # the unbind, or the hang-up
                return
            if self.mode == "flood":  # SEQUENCE of 2 GiB - 1 (long form, 4 length octets)
                conn.sendall(b"\x30\x84\x7f\xff\xff\xff" + message_id + b"\x64\x84\x7f\xff\xff\xf0")
                chunk = bytes(1 << 16)
                while True:
                    conn.sendall(chunk)
                    sent += len(chunk)
            conn.sendall(b"\x30\x64" + message_id + b"\x64\x5f")
            while True:
                time.sleep(0.3)
                conn.sendall(b"\x00")
                sent += 1
        self.gone.append((sent, time.monotonic()))

    @staticmethod
    def _answer_empty(conn: socket.socket, hold: float, *, refuse: bool = False) -> None:
        code = 0  # the root DSE's answer: success
        while request := conn.recv(4096):
            # LDAPMessage: SEQUENCE (short or long length), messageID INTEGER, then the operation's tag
            at = 2 + (request[1] & 0x7F if request[1] & 0x80 else 0)
            message_id, operation = request[at : at + 3], request[at + 3]
            if operation != 0x63:  # anything but a SearchRequest (the UnbindRequest): the end
                return
            time.sleep(hold)
            hold = 0.0
            done = b"\x65\x07\x0a\x01" + bytes([code]) + b"\x04\x00\x04\x00"  # SearchResultDone, no entry
            conn.sendall(b"\x30" + bytes([len(message_id) + len(done)]) + message_id + done)
            code = 53 if refuse else 0  # RFC 4511 §4.1.9 unwillingToPerform

    def close(self) -> None:
        self.listener.close()


LATE = 4.0  # "late": its first answer held back this long


@dataclass
class Servers:
    dns: Dnsmasq
    first: Slapd  # ch-l.test's server, priority 20 for ch-m.test
    second: Slapd  # ch-m.test's priority-10 server
    flood: Hostile  # ch-q.test's server
    drip: Hostile  # ch-r.test's server
    refer: Hostile  # ch-t.test's server: a referral to `inside`
    inside: socket.socket  # listening, and must never be connected to
    turning: Hostile  # ch-u.test's server: a tarpit to begin with, the tests change its mode


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    pki = TrustSpacePKI.create(
        tmp_path_factory.mktemp("ldap") / "pki", label="LDAP Test", crl_base_url="http://crl.test/"
    )
    bob = pki.issue_address("bob@ch-l.test")
    pki.revoke(bob.serial, parse_reason("keyCompromise"))
    world = World(
        pki=pki,
        trust=TrustStore([pki.root]),
        alice=pki.issue_address("alice@ch-l.test").certificate,
        domain_l=pki.issue_domain("ch-l.test").certificate,
        bob_revoked=bob.certificate,
        carol=pki.issue_address("carol@ch-l.test").certificate,
        dave=pki.issue_address("dave@ch-l.test").certificate,
        eve=pki.issue_address("eve@ch-l.test").certificate,
        eve_other=pki.issue_address("eve@ch-l.test").certificate,
        zoe=pki.issue_address("zoe@ch-m.test").certificate,
        zoe_other=pki.issue_address("zoe@ch-m.test").certificate,
    )
    world.trust = TrustStore([pki.root], [p.read_bytes() for p in pki.publish_crls().values()])
    return world


def bag(*certs: x509.Certificate) -> bytes:
    """A certs-only PKCS #7 SignedData (RFC 2798's userSMIMECertificate form)."""
    return pkcs7.serialize_certificates(list(certs), serialization.Encoding.DER)


@pytest.fixture(scope="module")
def servers(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    workdir = tmp_path_factory.mktemp("ldap-servers")
    first_entries = [
        Entry("alice", "alice@ch-l.test", [(SMIME, der(world.alice))]),
        Entry("ch-l", "ch-l.test", [(SMIME, der(world.domain_l))]),
        Entry("bob", "bob@ch-l.test", [(SMIME, der(world.bob_revoked))]),
        Entry("carol", "carol@ch-l.test", [(SMIME, bag(world.carol, world.pki.ca("personnes")))]),
        Entry("dave", "dave@ch-l.test", [("userCertificate;binary", der(world.dave))]),
        Entry("eve", "eve@ch-l.test", [(SMIME, der(world.eve_other))]),
        Entry("odd", "odd@ch-l.test", [(SMIME, b"not a certificate")]),
        Entry("nocert", "nocert@ch-l.test"),
        Entry("zoe", "zoe@ch-m.test", [(SMIME, der(world.zoe_other))]),
    ]
    second_entries = [Entry("zoe", "zoe@ch-m.test", [(SMIME, der(world.zoe))])]
    with (
        slapd("o=ch-l", first_entries, workdir / "first") as first,
        slapd("dc=ch-m,dc=test", second_entries, workdir / "second") as second,
        socket.socket() as silent,
        contextlib.closing(Hostile("flood")) as flood,
        contextlib.closing(Hostile("drip")) as drip,
        contextlib.closing(Hostile("tarpit")) as turning,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mute,
        socket.socket() as inside,
    ):
        inside.bind(("127.0.0.1", 0))
        inside.listen(8)
        inside.setblocking(False)
        refer = Hostile("refer", refer_to=inside.getsockname()[1])
        mute.bind(("127.0.0.1", 0))  # a DNS server that never answers: slow.ch-s.test's names are asked there
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections (the kernel does) and never answers
        closed = free_port()  # nothing listens there: refused at once
        zone = Zone(
            hosts=[("ldap.ch-l.test", "127.0.0.1"), ("down.ch-l.test", "127.0.0.1")],
            srv=[
                ("_ldap._tcp.ch-l.test", "ldap.ch-l.test", first.port, 0, 0),
                ("_ldap._tcp.ch-m.test", "down.ch-l.test", closed, 0, 0),
                ("_ldap._tcp.ch-m.test", "down.ch-l.test", silent.getsockname()[1], 5, 0),
                ("_ldap._tcp.ch-m.test", "ldap.ch-l.test", second.port, 10, 0),
                ("_ldap._tcp.ch-m.test", "ldap.ch-l.test", first.port, 20, 0),
                ("_ldap._tcp.ch-n.test", "down.ch-l.test", closed, 0, 0),
                ("_ldap._tcp.ch-n.test", "nowhere.ch-l.test", 389, 1, 0),
                ("_ldap._tcp.ch-p.test", ".", 389, 0, 0),
                ("_ldap._tcp.ch-q.test", "ldap.ch-l.test", flood.port, 0, 0),
                ("_ldap._tcp.ch-r.test", "ldap.ch-l.test", drip.port, 0, 0),
                ("_ldap._tcp.ch-s.test", "ldap.slow.ch-s.test", 389, 0, 0),
                ("_ldap._tcp.ch-t.test", "ldap.ch-l.test", refer.port, 0, 0),
                ("_ldap._tcp.ch-u.test", "ldap.ch-l.test", turning.port, 0, 0),
            ],
            forward=[("slow.ch-s.test", "127.0.0.1", mute.getsockname()[1])],
            rr=[pkix("eve.ch-l.test", der(world.eve))],
        )
        with dnsmasq(zone, workdir / "dns") as dns:
            yield Servers(dns, first, second, flood, drip, refer, inside, turning)
        refer.close()


def person_searches(server: Slapd, since: int = 0) -> list[Search]:
    return [s for s in server.searches()[since:] if s.base]


async def test_an_address_bound_certificate_in_ldap(world: World, servers: Servers) -> None:
    before = len(servers.first.searches())
    found = await world.discovery(servers.dns).find("alice@ch-l.test")
    assert found == Found("alice@ch-l.test", Outcome.FOUND, Step.LDAP_ADDRESS, (world.alice,))
    # the root DSE for the naming contexts, then the address under the one it lists
    assert servers.first.searches()[before:] == [
        Search("", "(objectClass=*)"),
        Search("o=ch-l", "(mail=alice@ch-l.test)"),
    ]


async def test_a_domain_bound_certificate_when_the_address_has_no_entry(world: World, servers: Servers) -> None:
    before = len(servers.first.searches())
    found = await world.discovery(servers.dns).find("Secretariat@CH-L.test")
    assert (found.outcome, found.step, found.certificates) == (Outcome.FOUND, Step.LDAP_DOMAIN, (world.domain_l,))
    assert person_searches(servers.first, before) == [  # slapd logs the filter normalised (mail ignores case)
        Search("o=ch-l", "(mail=secretariat@ch-l.test)"),
        Search("o=ch-l", "(mail=ch-l.test)"),
    ]


async def test_an_entry_without_certificate_falls_to_the_domain(world: World, servers: Servers) -> None:
    found = await world.discovery(servers.dns).find("nocert@ch-l.test")
    assert (found.outcome, found.step, found.certificates) == (Outcome.FOUND, Step.LDAP_DOMAIN, (world.domain_l,))


async def test_found_but_not_used_drops_the_recipient(world: World, servers: Servers) -> None:
    """DCDT "found but not used": a revoked certificate at the address; the domain's valid one is not
    asked for."""
    before = len(servers.first.searches())
    found = await world.discovery(servers.dns).find("bob@ch-l.test")
    source = f"ldap://127.0.0.1:{servers.first.port}/cn=bob,o=ch-l"
    assert found == Found(
        "bob@ch-l.test", Outcome.INVALID, Step.LDAP_ADDRESS, (), (Rejected(source, "revoked", world.bob_revoked),)
    )
    assert person_searches(servers.first, before) == [Search("o=ch-l", "(mail=bob@ch-l.test)")]


async def test_a_value_that_is_no_certificate(world: World, servers: Servers) -> None:
    found = await world.discovery(servers.dns).find("odd@ch-l.test")
    source = f"ldap://127.0.0.1:{servers.first.port}/cn=odd,o=ch-l"
    assert found == Found("odd@ch-l.test", Outcome.INVALID, Step.LDAP_ADDRESS, (), (Rejected(source, "unparsable"),))


async def test_a_pkcs7_bag_carries_the_chain(world: World, servers: Servers) -> None:
    """Without the configured intermediates the path needs the bag's CA; its CA is no candidate."""
    found = await world.discovery(servers.dns, chain=False).find("carol@ch-l.test")
    assert found == Found("carol@ch-l.test", Outcome.FOUND, Step.LDAP_ADDRESS, (world.carol,))
    # the same certificate alone, without its chain: the path cannot be built
    alone = await world.discovery(servers.dns, chain=False).find("alice@ch-l.test")
    assert (alone.outcome, [r.reason for r in alone.rejected]) == (Outcome.INVALID, ["untrusted"])


async def test_user_certificate_binary(world: World, servers: Servers) -> None:
    found = await world.discovery(servers.dns).find("dave@ch-l.test")
    assert found == Found("dave@ch-l.test", Outcome.FOUND, Step.LDAP_ADDRESS, (world.dave,))


async def test_dns_cert_comes_first(world: World, servers: Servers) -> None:
    before = len(servers.first.searches())
    found = await world.discovery(servers.dns).find("eve@ch-l.test")
    assert found == Found("eve@ch-l.test", Outcome.FOUND, Step.DNS_ADDRESS, (world.eve,))
    assert servers.first.searches()[before:] == []


async def test_srv_priority_with_one_server_down_and_one_silent(world: World, servers: Servers) -> None:
    """Priority 0 refuses the connection, priority 5 never answers, priority 10 answers: its certificate,
    not priority 20's."""
    first, second = len(servers.first.searches()), len(servers.second.searches())
    finder = world.discovery(servers.dns, timeout=0.5)
    found = await finder.find("zoe@ch-m.test")
    assert found == Found("zoe@ch-m.test", Outcome.FOUND, Step.LDAP_ADDRESS, (world.zoe,))
    assert person_searches(servers.second, second) == [Search("dc=ch-m,dc=test", "(mail=zoe@ch-m.test)")]
    assert servers.first.searches()[first:] == []


async def test_ldap_servers_are_reached_only_on_public_addresses_and_allowed_networks(
    world: World, servers: Servers
) -> None:
    """The SRV records of a peer's DNS name the servers: without `allow_networks` none on loopback or a
    private network is connected to (SSRF), and the step is unavailable, saying why."""
    before = len(servers.first.searches())
    found = await world.discovery(servers.dns, allow_networks=[]).find("alice@ch-l.test")
    assert (found.outcome, found.temporary) == (Outcome.UNAVAILABLE, True)
    assert found.detail == "no LDAP server answered: ldap.ch-l.test.: not an address this node may reach (127.0.0.1)"
    assert servers.first.searches()[before:] == []  # never connected to
    found = await world.discovery(servers.dns, allow_networks=["127.0.0.1/32"]).find("alice@ch-l.test")
    assert found == Found("alice@ch-l.test", Outcome.FOUND, Step.LDAP_ADDRESS, (world.alice,))


async def test_a_referral_is_not_followed(world: World, servers: Servers) -> None:
    """A peer's server answers with a referral to another address (ldap3 follows them by default, to any
    host, past the address check): not followed, the server counts as failed."""
    found = await world.discovery(servers.dns, timeout=1.0).find("x@ch-t.test")
    assert (found.outcome, found.temporary, found.step) == (Outcome.UNAVAILABLE, True, None)
    assert found.detail.startswith("no LDAP server answered: ldap.ch-l.test. (127.0.0.1:")
    assert "): LDAPOperationResult LDAPOperationResult - root DSE: referral - " in found.detail
    with pytest.raises(BlockingIOError):
        servers.inside.accept()  # nobody came


async def test_every_server_down_is_temporary_and_not_cached(world: World, servers: Servers) -> None:
    finder = world.discovery(servers.dns, timeout=0.5)
    found = await finder.find("x@ch-n.test")
    assert (found.outcome, found.temporary, found.step) == (Outcome.UNAVAILABLE, True, None)
    assert found.detail.startswith("no LDAP server answered: down.ch-l.test. (127.0.0.1:")
    assert "nowhere.ch-l.test.: no address" in found.detail
    assert finder._cache == {}


async def connected(server: Hostile, count: int) -> None:
    for _ in range(250):
        if server.connections >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{server.connections} connections, not {count}")


async def test_a_domain_whose_servers_all_failed_is_not_asked_again_for_a_while(world: World, servers: Servers) -> None:
    """A directory that accepts connections and never answers costs one discovery the step's deadline; the
    domain's next recipients are unavailable at once, without a connection, for LDAP_DOWN_TTL. Other
    domains are asked as before; once the memo lapses, or is forgotten, the domain is asked again."""
    servers.turning.mode = "tarpit"
    now = [1000.0]
    finder = world.discovery(servers.dns, timeout=2.0, ldap_deadline=1.0, clock=lambda: now[0])
    before = servers.turning.connections
    started = time.monotonic()
    first = await finder.find("a@ch-u.test")
    assert 1.0 <= time.monotonic() - started < 1.0 + LDAP_GRACE
    detail = f"no LDAP server answered: ldap.ch-l.test. (127.0.0.1:{servers.turning.port}): TimeoutError"
    assert first == Found("a@ch-u.test", Outcome.UNAVAILABLE, detail=detail)
    assert servers.turning.connections == before + 1
    now[0] += LDAP_DOWN_TTL - 1
    started = time.monotonic()
    second = await finder.find("b@ch-u.test")
    assert time.monotonic() - started < 0.5
    remembered = f"{detail} [{LDAP_DOWN_TTL - 1:.0f} s ago; not asked again for 1 s]"
    assert second == Found("b@ch-u.test", Outcome.UNAVAILABLE, detail=remembered)
    assert second.temporary
    assert servers.turning.connections == before + 1
    assert (await finder.find("alice@ch-l.test")).certificates == (world.alice,)
    now[0] += 1.0  # LDAP_DOWN_TTL since the failure: asked again
    assert await finder.find("c@ch-u.test") == Found("c@ch-u.test", Outcome.UNAVAILABLE, detail=detail)
    assert servers.turning.connections == before + 2
    finder.forget()
    assert await finder.find("d@ch-u.test") == Found("d@ch-u.test", Outcome.UNAVAILABLE, detail=detail)
    assert servers.turning.connections == before + 3


async def test_an_answer_after_the_domain_failed_clears_the_memo(world: World, servers: Servers) -> None:
    """Two searches of one domain under way: the first, tarpitted, fails at its deadline; the second,
    started later on a server back in service, is answered after that. The domain is asked again at once."""
    servers.turning.mode = "tarpit"
    finder = world.discovery(servers.dns, timeout=5.0, ldap_deadline=5.0)
    before = servers.turning.connections
    failing = asyncio.create_task(finder.find("a@ch-u.test"))
    await connected(servers.turning, before + 1)
    await asyncio.sleep(2.0)
    servers.turning.mode = "late"  # its answer comes LATE (4 s) after: past the first search's deadline
    answered = asyncio.create_task(finder.find("b@ch-u.test"))
    await connected(servers.turning, before + 2)
    servers.turning.mode = "empty"
    failed = await failing
    assert (failed.outcome, failed.detail.startswith("no LDAP server answered")) == (Outcome.UNAVAILABLE, True)
    remembered = await finder.find("x@ch-u.test")  # between the failure and the late answer
    assert remembered.detail == f"{failed.detail} [0 s ago; not asked again for {LDAP_DOWN_TTL:.0f} s]"
    assert servers.turning.connections == before + 2
    assert not answered.done()
    assert await answered == Found("b@ch-u.test", Outcome.NO_CERTIFICATE)
    assert await finder.find("c@ch-u.test") == Found("c@ch-u.test", Outcome.NO_CERTIFICATE)
    assert servers.turning.connections == before + 3


async def test_an_error_answer_to_one_address_is_not_remembered_for_the_domain(world: World, servers: Servers) -> None:
    """The server answers its root DSE, then refuses the address's search: that recipient is unavailable,
    but the server is up, and the domain's next recipient is asked."""
    servers.turning.mode = "refuse"
    finder = world.discovery(servers.dns, timeout=2.0)
    before = servers.turning.connections
    found = await finder.find("a@ch-u.test")
    assert (found.outcome, found.temporary) == (Outcome.UNAVAILABLE, True)
    port = servers.turning.port
    assert found.detail.startswith(f"no LDAP server answered: ldap.ch-l.test. (127.0.0.1:{port}): LDAPOperationResult")
    assert " - search: unwillingToPerform - " in found.detail
    assert finder.ldap is not None
    assert len(finder.ldap.down) == 0
    assert (await finder.find("b@ch-u.test")).detail == found.detail
    assert servers.turning.connections == before + 2


async def test_a_server_streaming_an_endless_answer_is_cut_at_the_octet_bound(world: World, servers: Servers) -> None:
    """A reply announcing 2 GiB: ldap3 would buffer it all; the client stops reading past LDAP_MAX_OCTETS
    and hangs up at once, long before the step's deadline, and the step is temporarily unavailable."""
    finder = world.discovery(servers.dns, timeout=2.0)
    started = time.monotonic()
    found = await finder.find("x@ch-q.test")
    assert (found.outcome, found.temporary, found.step) == (Outcome.UNAVAILABLE, True, None)
    assert f"LDAPSocketReceiveError error receiving data: the answer passed {LDAP_MAX_OCTETS} octets" in found.detail
    for _ in range(50):  # the server notices the hang-up at its next send
        if servers.flood.gone:
            break
        await asyncio.sleep(0.1)
    [(sent, left)] = servers.flood.gone
    # what the client read, plus what the two sockets' buffers held when it hung up (at most tcp_rmem's max)
    assert LDAP_MAX_OCTETS < sent < LDAP_MAX_OCTETS + (40 << 20)
    assert left - started < 5.0
    assert finder._cache == {}


async def test_a_server_dripping_its_answer_is_left_at_the_step_deadline(world: World, servers: Servers) -> None:
    """One octet every 0.3 s keeps each read within the receive timeout (1 s): the step gives up at its
    deadline and so does the thread reading the answer, which hangs up rather than read on for 30 s."""
    finder = world.discovery(servers.dns, timeout=1.0, ldap_deadline=2.0)
    started = time.monotonic()
    found = await finder.find("x@ch-r.test")
    assert (found.outcome, found.temporary, found.step) == (Outcome.UNAVAILABLE, True, None)
    assert found.detail.startswith("no LDAP server answered: ldap.ch-l.test. (127.0.0.1:")
    for _ in range(50):
        if servers.drip.gone:
            break
        await asyncio.sleep(0.1)
    [(sent, left)] = servers.drip.gone
    assert 2.0 <= left - started < 4.5  # the deadline, then one read and the server's next send
    assert sent < 15


async def test_the_address_lookups_count_in_the_step_deadline(world: World, servers: Servers) -> None:
    """The SRV target's addresses are asked of a server that never answers: each lookup would take the
    DNS timeout (5 s, A then AAAA); the step ends at its deadline (1 s) plus LDAP_GRACE."""
    finder = world.discovery(servers.dns, timeout=5.0, ldap_deadline=1.0)
    started = time.monotonic()
    found = await finder.find("x@ch-s.test")
    assert (found.outcome, found.temporary, found.step) == (Outcome.UNAVAILABLE, True, None)
    assert found.detail == "no LDAP server answered within 1 s"
    assert time.monotonic() - started < 1.0 + LDAP_GRACE + 2.5
    assert finder.ldap is not None
    assert len(finder.ldap.down) == 0  # no server tried: DNS's trouble, not remembered


async def test_no_srv_record_and_a_dot_target_find_nothing(world: World, servers: Servers) -> None:
    finder = world.discovery(servers.dns)
    assert await finder.find("x@ch-o.test") == Found("x@ch-o.test", Outcome.NO_CERTIFICATE)
    # RFC 2782: a target of "." says the service is not offered at this domain
    assert await finder.find("x@ch-p.test") == Found("x@ch-p.test", Outcome.NO_CERTIFICATE)


async def test_filter_metacharacters_are_escaped(world: World, servers: Servers) -> None:
    """An address crafted to widen the filter (RFC 4515 metacharacters) matches nothing: the domain's
    certificate answers, not a wildcard's first entry."""
    before = len(servers.first.searches())
    found = await world.discovery(servers.dns).find("*)(mail=*@ch-l.test")
    assert (found.outcome, found.step, found.certificates) == (Outcome.FOUND, Step.LDAP_DOMAIN, (world.domain_l,))
    assert person_searches(servers.first, before)[0] == Search("o=ch-l", r"(mail=\2A\29\28mail=\2A@ch-l.test)")


async def test_ldap_off_in_the_configuration(world: World, servers: Servers) -> None:
    section = SmimeSection(
        dns_servers=["127.0.0.1"], dns_port=servers.dns.port, ldap=False, allow_networks=["127.0.0.0/8"]
    )
    finder = Discovery.from_config(section, world.trust, intermediates=[world.pki.ca("personnes")])
    before = len(servers.first.searches())
    assert await finder.find("alice@ch-l.test") == Found("alice@ch-l.test", Outcome.NO_CERTIFICATE)
    assert servers.first.searches()[before:] == []
    cas = [world.pki.ca("personnes")]
    on = Discovery.from_config(section.model_copy(update={"ldap": True}), world.trust, intermediates=cas)
    assert (await on.find("alice@ch-l.test")).certificates == (world.alice,)


async def test_concurrent_finds_share_nothing(world: World, servers: Servers) -> None:
    finder = world.discovery(servers.dns)
    found = await asyncio.gather(*(finder.find(a) for a in ("alice@ch-l.test", "dave@ch-l.test", "zoe@ch-m.test")))
    assert [f.certificates for f in found[:2]] == [(world.alice,), (world.dave,)]


def test_srv_order_priority_then_weight() -> None:
    """RFC 2782: lowest priority first; within one, weight-0 records first in the list, then each pick is
    the first record whose running sum of weights reaches the number drawn in [0, sum]."""
    a, b, c = Target("a.", 1, 10, 0), Target("b.", 2, 10, 10), Target("c.", 3, 10, 90)
    low = Target("low.", 4, 5, 50)
    draws = iter([0, 95, 10, 0])  # low (alone), then among a(0) b(10) c(90): 95 -> c, then 10 -> b, 0 -> a
    seen: list[int] = []

    def uniform(n: int) -> int:
        seen.append(n)
        return next(draws)

    assert srv_order([a, b, c, low], uniform) == [low, c, b, a]
    assert seen == [50, 100, 10, 0]
    # draws of 0: the weight-0 record first, then the others in the order given
    assert srv_order([c, a, b], lambda n: 0) == [a, c, b]


def test_certificates_of_each_form(world: World) -> None:
    pem = world.alice.public_bytes(serialization.Encoding.PEM)
    assert certificates_of(der(world.alice)) == ([world.alice], [])
    assert certificates_of(pem) == ([world.alice], [])
    assert certificates_of(bag(world.carol, world.pki.ca("personnes"))) == ([world.carol], [world.pki.ca("personnes")])
    assert certificates_of(b"\x30\x03\x02\x01") == ([], [])
    assert certificates_of(b"-----BEGIN CERTIFICATE-----\nnot base64\n") == ([], [])
    assert escape("a*(b)\\c\x00") == r"a\2a\28b\29\5cc\00"
