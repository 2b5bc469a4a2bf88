"""gateway/smime/service.py: the node's S/MIME built from its configuration: who signs (the sender's own
certificate, the organisation's for bounces), which key opens a peer's message, CRLs kept fresh."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509

from certs.pki import TrustSpacePKI
from gateway.node import Node
from gateway.smime import cms, mime
from gateway.smime.service import Smime
from tests.conftest import DOMAIN, NodeDir, copy_node

PEER = "clinique-b.mssante.fr"


@pytest.fixture
async def node(template_node: NodeDir, tmp_path: Path) -> AsyncIterator[tuple[Node, TrustSpacePKI]]:
    nd = copy_node(template_node, tmp_path / "node")
    cfg = nd.cfg()
    cfg.smime = cfg.smime.model_copy(update={"workers": 0})
    async with Node(cfg) as n:
        yield n, TrustSpacePKI(nd.data / "pki")


async def test_a_bounce_is_signed_by_the_organisation_certificate(node: tuple[Node, TrustSpacePKI]) -> None:
    n, _ = node
    smime = Smime(n)
    [org] = smime.organisations
    assert org.domains == frozenset({DOMAIN, f"patient.{DOMAIN}"})  # written by `mssgw init`: it signs for patients
    bounce = f"From: Mail Delivery System <mailer-daemon@{DOMAIN}>\r\nSubject: x\r\n\r\nx\r\n".encode()
    assert await smime.identity_for("", bounce) == org.identity
    # A personal sender without a certificate of her own: nobody signs, unless the fallback is on.
    await n.mailboxes.create(f"sans.cert@{DOMAIN}", "ORG")
    assert await smime.identity_for(f"sans.cert@{DOMAIN}", bounce) is None
    n.cfg.smime.organisation_fallback = True
    assert await Smime(n).identity_for(f"sans.cert@{DOMAIN}", bounce) == org.identity
    smime.close()


async def test_a_message_encrypted_to_the_domain_certificate_opens_with_the_organisation_key(
    node: tuple[Node, TrustSpacePKI],
) -> None:
    n, pki = node
    rcpt = f"accueil@{DOMAIN}"
    await n.mailboxes.create(rcpt, "ORG")
    smime = Smime(n)
    [org] = smime.organisations
    sender = pki.issue_address(f"dr.durand@{PEER}")
    plain = f"From: dr.durand@{PEER}\r\nTo: {rcpt}\r\nSubject: pour le domaine\r\n\r\nx\r\n".encode()
    raw = mime.protect(
        plain,
        signer=sender.certificate,
        key=sender.key,
        chain=sender.chain,
        recipients=[cms.Recipient(org.certificate)],
    )
    opened = await smime.open(raw, sender=f"dr.durand@{PEER}", recipients=[rcpt])
    assert (opened.ok, opened.binding) == (True, "address")
    assert opened.message.endswith(plain)
    smime.close()


async def test_lapsing_development_crls_are_published_again(node: tuple[Node, TrustSpacePKI]) -> None:
    n, pki = node
    pki.publish_crls(now=dt.datetime.now(dt.UTC) - dt.timedelta(days=6))  # one day left of seven
    crl = pki.path / "crl" / "personnes.crl"
    before = x509.load_der_x509_crl(crl.read_bytes()).next_update_utc
    smime = Smime(n)
    task = asyncio.create_task(smime.keep_dev_crls(every=0.05))
    for _ in range(100):
        await asyncio.sleep(0.05)
        after = x509.load_der_x509_crl(crl.read_bytes()).next_update_utc
        if after != before:
            break
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert after is not None
    assert after - dt.datetime.now(dt.UTC) > dt.timedelta(days=6, hours=23)
    smime.close()


async def test_crls_are_fetched_checked_and_cached(template_node: NodeDir, tmp_path: Path) -> None:
    from aiohttp import web

    nd = copy_node(template_node, tmp_path / "node")
    pki = TrustSpacePKI(nd.data / "pki")
    signer = pki.issue_address(f"dr.durand@{PEER}")
    pki.revoke(signer.serial, x509.ReasonFlags.key_compromise)
    pki.publish_crls()
    rogue = TrustSpacePKI.create(tmp_path / "rogue", label="rogue.test", crl_base_url="http://crl.rogue.test")
    files = {
        "/personnes.crl": (pki.path / "crl" / "personnes.crl").read_bytes(),
        "/root.crl": (pki.path / "crl" / "root.crl").read_bytes(),
        "/rogue.crl": (rogue.path / "crl" / "personnes.crl").read_bytes(),
        "/junk.crl": b"not a CRL",
    }

    async def serve(request: web.Request) -> web.Response:
        found = files.get(request.path)
        return web.Response(body=found) if found is not None else web.Response(status=404)

    app = web.Application()
    app.router.add_get("/{name}", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    cfg = nd.cfg()
    urls = [f"{base}/personnes.crl", f"{base}/rogue.crl", f"{base}/junk.crl", f"{base}/missing.crl", f"{base}/root.crl"]
    urls.append("http://a..b/bad-host.crl")  # aiohttp's IDNA encoding raised UnicodeError out of keep_crls
    cfg.smime = cfg.smime.model_copy(update={"workers": 0, "crl_urls": urls})
    async with Node(cfg) as n:
        smime = Smime(n)
        assert smime.crl_dir == nd.data / "crl-cache"
        idna = "label empty or too long"
        assert await smime.fetch_crls() == {
            urls[0]: "updated",
            urls[1]: "not signed by a trust-space CA",
            urls[2]: "not a CRL",
            urls[3]: f"unavailable: {urls[3]}: HTTP 404",
            urls[4]: "updated",
            urls[5]: f"unavailable: {urls[5]}: encoding with 'idna' codec failed (UnicodeError: {idna})",
        }
        assert sorted(p.suffix for p in (nd.data / "crl-cache").iterdir()) == [".crl", ".crl"]
        # Both the signer's CA and the root's CRLs are needed (hard-fail): the path checks out revoked.
        verdict = await smime.trust.check(signer.certificate, signer.chain, [f"dr.durand@{PEER}"])
        assert (verdict.ok, verdict.reason) == (False, "revoked")
        assert (await smime.fetch_crls())[urls[0]] == "unchanged"
        smime.close()
    await runner.cleanup()


async def test_a_missing_organisation_key_is_a_configuration_error(template_node: NodeDir, tmp_path: Path) -> None:
    from gateway.config import SmimeIdentity
    from gateway.errors import ConfigError

    nd = copy_node(template_node, tmp_path / "node")
    cfg = nd.cfg()
    cfg.smime = cfg.smime.model_copy(
        update={"organisation": [SmimeIdentity(cert=Path("smime/domain/fullchain.pem"), key=Path("nowhere.pem"))]}
    )
    async with Node(cfg) as n:
        with pytest.raises(ConfigError) as exc:
            Smime(n)
    assert str(exc.value).startswith("[[smime.organisation]]: [Errno 2] No such file or directory")


async def test_an_organisation_certificate_rotates_with_overlap(template_node: NodeDir, tmp_path: Path) -> None:
    """Several entries for a domain: all decrypt (peers encrypt to the old one until they see the new),
    the one valid now that expires last signs, whatever the order of the entries."""
    from certs.pki import write_bundle
    from gateway.config import SmimeIdentity

    nd = copy_node(template_node, tmp_path / "node")
    pki = TrustSpacePKI(nd.data / "pki")  # the peer's signer
    now = dt.datetime.now(dt.UTC)
    # Organisation certificates of several ages come from a PKI made two years ago (the node's is new);
    # the organisation key only decrypts here, the signer is judged against the node's trust space.
    aged = TrustSpacePKI.create(
        tmp_path / "aged", label=DOMAIN, crl_base_url="http://crl.aged.test", now=now - dt.timedelta(days=800)
    )
    entries = []
    for name, issued_at in (("old", now - dt.timedelta(days=400)), ("new", now), ("next", now + dt.timedelta(days=2))):
        issued = aged.issue_domain(DOMAIN, f"patient.{DOMAIN}", now=issued_at)
        files = write_bundle(issued, tmp_path / name, name=name, root=aged.root)
        entries.append(SmimeIdentity(cert=files["fullchain"], key=files["key"]))
    crls = tmp_path / "crls"  # the trust space's current CRLs: the node's PKI's and the aged one's
    crls.mkdir()

    def fetched() -> None:
        for source, prefix in ((pki, ""), (aged, "aged-")):
            for crl in (source.path / "crl").glob("*.crl"):
                (crls / (prefix + crl.name)).write_bytes(crl.read_bytes())

    fetched()
    cfg = nd.cfg()
    cfg.smime = cfg.smime.model_copy(update={"workers": 0, "organisation": entries, "crl_dir": crls})
    async with Node(cfg) as n:
        smime = Smime(n)
        old, new, later = smime.organisations
        assert smime.organisations_for(DOMAIN.upper()) == [old, new, later]
        # "next" expires last but is not valid yet; "old" comes first but expires before "new".
        assert smime.organisation_for(f"patient.{DOMAIN}") == new
        bounce = f"From: <mailer-daemon@{DOMAIN}>\r\nSubject: x\r\n\r\nx\r\n".encode()
        assert await smime.identity_for("", bounce) == new.identity
        rcpt = f"accueil@{DOMAIN}"
        await n.mailboxes.create(rcpt, "ORG")
        sender = pki.issue_address(f"dr.durand@{PEER}")
        for org in (old, new, later):
            plain = f"From: dr.durand@{PEER}\r\nTo: {rcpt}\r\nSubject: {org.certificate.serial_number}\r\n\r\nx\r\n"
            raw = mime.protect(
                plain.encode(),
                signer=sender.certificate,
                key=sender.key,
                chain=sender.chain,
                recipients=[cms.Recipient(org.certificate)],
            )
            opened = await smime.open(raw, sender=f"dr.durand@{PEER}", recipients=[rcpt])
            assert (opened.ok, opened.reason) == (True, ""), org
            assert opened.message.endswith(plain.encode())
        # A certificate of the trust space that is not configured here opens nothing.
        stranger = aged.issue_domain(DOMAIN, now=now)
        raw = mime.protect(
            b"Subject: x\r\n\r\nx\r\n",
            signer=sender.certificate,
            key=sender.key,
            chain=sender.chain,
            recipients=[cms.Recipient(stranger.certificate)],
        )
        opened = await smime.open(raw, sender=f"dr.durand@{PEER}", recipients=[rcpt])
        assert (opened.ok, opened.reason, opened.detail) == (False, "not-for-us", rcpt)
        # The new certificate revoked: it stops signing once its CRL is here, the old one takes over.
        aged.revoke(new.certificate.serial_number, x509.ReasonFlags.key_compromise)
        aged.publish_crls()
        assert smime.organisation_for(DOMAIN) == new  # published, not yet fetched
        fetched()
        assert smime.organisation_for(DOMAIN) == old
        smime.close()
