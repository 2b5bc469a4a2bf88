"""gateway/smime/outbound.py: recipients found over DNS CERT (dnsmasq on loopback) get the message signed
and encrypted, each one without a usable certificate is refused alone with its DSN status; the sender
can read its own copy; no signing key refuses everyone."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.pki import Issued, TrustSpacePKI
from gateway.smime import mime, outbound
from gateway.smime.discovery import Discovery
from gateway.smime.pool import CryptoPool
from gateway.smime.trust import TrustStore
from gateway.store.mailboxes import SigningIdentity
from tests.dns import Dnsmasq, Zone, dnsmasq, silent_server
from tests.smime.test_discovery import pkix

A = "alice.martin@ch-a.test"
MESSAGE = (
    f"From: <{A}>\r\nTo: bob@ch-b.test, accueil@ch-b.test, carol@ch-b.test, nobody@ch-b.test\r\n"
    "Subject: Compte rendu\r\nMessage-ID: <o1@ch-a.test>\r\n\r\nCompte rendu.\r\n"
).encode()


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pkcs8(issued: Issued) -> bytes:
    return issued.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class World:
    pki: TrustSpacePKI
    trust: TrustStore
    alice: Issued
    bob: Issued
    domain_b: Issued
    carol_revoked: Issued

    @property
    def identity(self) -> SigningIdentity:
        return SigningIdentity(der(self.alice.certificate), pkcs8(self.alice), [der(c) for c in self.alice.chain])

    def finder(self, server: str) -> Discovery:
        host, port = server.rsplit(":", 1)
        cas = [self.pki.ca("personnes"), self.pki.ca("organisations")]
        return Discovery(self.trust, nameservers=[host], port=int(port), intermediates=cas)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    pki = TrustSpacePKI.create(tmp_path_factory.mktemp("outbound") / "pki", label="Out", crl_base_url="http://c/")
    carol = pki.issue_address("carol@ch-b.test")
    pki.revoke(carol.serial, x509.ReasonFlags.key_compromise)
    crls = [p.read_bytes() for p in pki.publish_crls(now=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).values()]
    return World(
        pki,
        TrustStore([pki.root], crls, [pki.ca("personnes"), pki.ca("organisations")]),
        pki.issue_address(A),
        pki.issue_address("bob@ch-b.test"),
        pki.issue_domain("ch-b.test"),
        carol,
    )


@pytest.fixture(scope="module")
def server(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dnsmasq]:
    zone = Zone(
        rr=[
            pkix("bob.ch-b.test", der(world.bob.certificate)),
            pkix("carol.ch-b.test", der(world.carol_revoked.certificate)),
            pkix("ch-b.test", der(world.domain_b.certificate)),  # accueil@ and anyone without their own
        ],
    )
    with dnsmasq(zone, tmp_path_factory.mktemp("dns")) as running:
        yield running


@pytest.fixture(scope="module")
def pool() -> Iterator[CryptoPool]:
    p = CryptoPool(0)
    yield p
    p.close()


async def test_each_recipient_with_a_certificate_gets_it_the_others_are_refused(
    world: World, server: Dnsmasq, pool: CryptoPool
) -> None:
    recipients = ["bob@ch-b.test", "accueil@ch-b.test", "carol@ch-b.test", "nobody@ch-c.test"]
    done = await outbound.protect(
        MESSAGE,
        sender=A,
        recipients=recipients,
        identity=world.identity,
        finder=world.finder(server.address),
        pool=pool,
    )
    assert done.recipients == ["bob@ch-b.test", "accueil@ch-b.test"]
    assert done.refused == [
        outbound.Refused("carol@ch-b.test", True, "5.7.5", "no usable certificate for the recipient (revoked)"),
        outbound.Refused("nobody@ch-c.test", True, "5.7.5", "no certificate found for the recipient (S/MIME required)"),
    ]
    assert done.message is not None
    for holder in (world.bob, world.domain_b, world.alice):  # each recipient, and the sender's own copy
        opened = mime.unprotect(done.message, holder.certificate, holder.key)
        assert opened.message == MESSAGE
        assert [(s.ok, s.certificate) for s in opened.signed.signers] == [(True, world.alice.certificate)]
    with pytest.raises(Exception, match="no recipient entry for our certificate"):
        mime.unprotect(done.message, world.carol_revoked.certificate, world.carol_revoked.key)


async def test_a_dns_failure_defers_the_recipient(world: World, pool: CryptoPool) -> None:
    async with silent_server() as (address, _):
        host, port = address.rsplit(":", 1)
        finder = Discovery(world.trust, nameservers=[host], port=int(port), timeout=0.5)
        done = await outbound.protect(
            MESSAGE, sender=A, recipients=["bob@ch-b.test"], identity=world.identity, finder=finder, pool=pool
        )
    assert (done.message, done.recipients) == (None, [])
    [refused] = done.refused
    assert (refused.recipient, refused.permanent, refused.status) == ("bob@ch-b.test", False, "4.7.5")
    assert refused.diagnostic == "certificate discovery failed for now: bob.ch-b.test.: DNS timeout"


async def test_no_signing_key_refuses_everyone(world: World, server: Dnsmasq, pool: CryptoPool) -> None:
    done = await outbound.protect(
        MESSAGE,
        sender=A,
        recipients=["bob@ch-b.test", "accueil@ch-b.test"],
        identity=None,
        finder=world.finder(server.address),
        pool=pool,
    )
    text = f"the sender {A} has no S/MIME signing certificate at this operator"
    assert done == outbound.Protected(
        None,
        [],
        [
            outbound.Refused("bob@ch-b.test", True, "5.7.1", text),
            outbound.Refused("accueil@ch-b.test", True, "5.7.1", text),
        ],
    )


async def test_an_ec_recipient_certificate_is_refused_alone(world: World, pool: CryptoPool) -> None:
    """A valid P-256 certificate: our key transport is RSA only, so discovery does not count it, and that
    recipient alone gets a DSN naming why (not a failure of the whole message at cms.encrypt)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.smime.test_trust import custom

    curved, _ = custom(world.pki, "ec@ch-b.test", enciphering=False, key=ec.generate_private_key(ec.SECP256R1()))
    found = {"bob@ch-b.test": [world.bob.certificate], "ec@ch-b.test": [curved]}

    async def local(address: str) -> list[x509.Certificate]:
        return found.get(address, [])

    cas = [world.pki.ca("personnes"), world.pki.ca("organisations")]
    finder = Discovery(world.trust, local=local, use_dns=False, intermediates=cas)
    done = await outbound.protect(
        MESSAGE, sender=A, recipients=[*found], identity=world.identity, finder=finder, pool=pool
    )
    assert done.recipients == ["bob@ch-b.test"]
    assert done.refused == [
        outbound.Refused("ec@ch-b.test", True, "5.7.5", "no usable certificate for the recipient (no-key-transport)")
    ]
    assert done.message is not None
    assert mime.unprotect(done.message, world.bob.certificate, world.bob.key).message == MESSAGE


async def test_missing_crls_on_our_side_defer_the_recipient(world: World, pool: CryptoPool) -> None:
    """Hard-fail without a current CRL is ours to fix: 4.7.5 (the message waits), as inbound answers 451."""

    async def local(address: str) -> list[x509.Certificate]:
        return [world.bob.certificate] if address == "bob@ch-b.test" else []

    cas = [world.pki.ca("personnes"), world.pki.ca("organisations")]
    finder = Discovery(TrustStore([world.pki.root], [], cas), local=local, use_dns=False)
    done = await outbound.protect(
        MESSAGE, sender=A, recipients=["bob@ch-b.test"], identity=world.identity, finder=finder, pool=pool
    )
    text = "certificate discovery failed for now: no current revocation list for the recipient's certificate"
    assert done == outbound.Protected(None, [], [outbound.Refused("bob@ch-b.test", False, "4.7.5", text)])
