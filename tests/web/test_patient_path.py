"""The patient path end to end, in a real browser, across two operators (issue 6, "Done means").

A professional of operator A writes over SMTP submission to a patient of operator B (signed and
encrypted across operators); the patient reads it in B's web inbox (headless Chromium), downloads the
attachment, sees the XDM's documents, replies; the professional reads the reply over IMAP on A. After
`[FIN]` the patient's reply is refused; after the patient's opposition the professional gets a bounce.
Also: enrolment with the activation code and a TOTP app, a forged form without CSRF token, hostile HTML.
"""

from __future__ import annotations

import imaplib
import io
import json
import re
import ssl
import subprocess
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pyotp
import pytest

from tests.smtp.test_federation import TrustSpace, wait
from tests.web.conftest import totp_code

A, B = "hopital-a.mssante.test", "clinique-b.mssante.test"
CLAIRE = f"claire.martin@{A}"
PAUL = f"paul.durand@{B}"
EVIL = "http://tracker.invalid/pixel.png"
METADATA = b"""<?xml version="1.0" encoding="UTF-8"?>
<lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
  xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"><rim:RegistryObjectList>
<rim:ExtrinsicObject id="Document01" mimeType="text/xml">
  <rim:Slot name="URI"><rim:ValueList><rim:Value>DOC0001.XML</rim:Value></rim:ValueList></rim:Slot>
  <rim:Name><rim:LocalizedString value="Compte rendu de consultation"/></rim:Name>
</rim:ExtrinsicObject>
<rim:ExtrinsicObject id="Document02" mimeType="application/pdf">
  <rim:Slot name="URI"><rim:ValueList><rim:Value>DOC0002.PDF</rim:Value></rim:ValueList></rim:Slot>
  <rim:Name><rim:LocalizedString value="Compte rendu (PDF/A)"/></rim:Name>
</rim:ExtrinsicObject></rim:RegistryObjectList></lcm:SubmitObjectsRequest>
"""
PDF = b"%PDF-1.7\n% compte rendu\n" + bytes(range(256)) * 20 + b"\n%%EOF\n"


def stored(space: TrustSpace, address: str, marker: bytes) -> bytes:
    """`wait` in a thread: the sync Playwright API keeps an event loop running in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(wait, space.node("operator-b"), address, marker).result()


def patient_of(space: TrustSpace) -> dict[str, Any]:
    return next(m for m in space.operator("operator-b")["mailboxes"] if m["type"] == "PAT")


def base_url(space: TrustSpace) -> str:
    return f"https://127.0.0.1:{space.operator('operator-b')['ports']['https']}"


def xdm() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("README.TXT", "IHE XDM")
        z.writestr("INDEX.HTM", "<html></html>")
        z.writestr("IHE_XDM/SUBSET01/METADATA.XML", METADATA)
        z.writestr("IHE_XDM/SUBSET01/DOC0001.XML", "<ClinicalDocument/>")
        z.writestr("IHE_XDM/SUBSET01/DOC0002.PDF", PDF)
    return buf.getvalue()


def letter(sender: str, rcpt: str, subject: str, *, html: str, reply_to: str | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Dr Claire Martin <{sender}>"
    msg["To"] = rcpt
    msg["Subject"] = subject
    msg["X-MSS-INS"] = "O"
    if reply_to:
        msg["Reply-To"] = reply_to
    msg.set_content("Bonjour, voici votre compte rendu.")
    msg.add_alternative(html, subtype="html")
    msg.add_attachment(xdm(), maintype="application", subtype="zip", filename="IHE_XDM.zip")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="../compte rendu é.pdf")
    return msg.as_bytes(policy=policy.SMTP)


def login(page: Any, space: TrustSpace, patient: dict[str, Any]) -> None:
    page.goto(base_url(space) + "/connexion")
    page.get_by_label("Adresse de messagerie").fill(patient["address"])
    page.get_by_label("Mot de passe").fill(patient["password"])
    page.get_by_label("Code de l'application").fill(totp_code(patient["address"], patient["totp_secret"]))
    page.get_by_role("button", name="Se connecter").click()
    assert page.url == base_url(space) + "/"


def imap_fetch(space: TrustSpace, address: str, marker: bytes, timeout: float = 30) -> bytes:
    """The first message in `address`'s INBOX on operator A containing `marker`, over IMAP (STARTTLS)."""
    ctx = ssl.create_default_context(cafile=space.creds["trust_anchor"])
    ctx.check_hostname = False
    deadline = time.monotonic() + timeout
    while True:
        with imaplib.IMAP4("127.0.0.1", space.operator("operator-a")["ports"]["imap"]) as imap:
            imap.starttls(ssl_context=ctx)
            imap.login(address, space.password(address))
            imap.select("INBOX")
            _, data = imap.uid("SEARCH", "ALL")
            for uid in data[0].split():
                _, fetched = imap.uid("FETCH", uid, "(BODY.PEEK[])")
                body = fetched[0][1]
                assert isinstance(body, bytes)
                if marker in body:
                    return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{marker!r} never reached {address} over IMAP")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def context(browser: Any, space: TrustSpace) -> Any:
    ctx = browser.new_context(ignore_https_errors=True, locale="fr-FR", viewport={"width": 1000, "height": 900})
    yield ctx
    ctx.close()


def test_professional_writes_patient_reads_replies_and_reads_the_reply_over_imap(
    space: TrustSpace, context: Any, artifacts: Path
) -> None:
    patient = patient_of(space)
    html = f'<p>Bonjour <b>Marie</b></p><script>window.pwned = 1</script><img src="{EVIL}" alt="pixel">'
    space.submit_raw(
        "operator-a", CLAIRE, [patient["address"]], letter(CLAIRE, patient["address"], "Vos résultats", html=html)
    )
    original_bytes = stored(space, patient["address"], b"IHE_XDM.zip")
    head = original_bytes.split(b"\r\n\r\n", 1)[0].decode()
    assert f"smime=pass body.smime-identifier={CLAIRE}" in head  # it crossed signed and encrypted

    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    login(page, space, patient)
    row = page.locator("table.inbox tbody tr").first
    assert row.get_attribute("class") == "unread"
    assert "Dr Claire Martin" in row.inner_text()
    assert "Vos résultats" in row.inner_text()
    assert row.locator(".state").inner_text() == "Ouvert"
    page.screenshot(path=artifacts / "inbox.png", full_page=True)

    page.get_by_role("link", name="Vos résultats").click()
    assert page.locator("h1").inner_text() == "Vos résultats"
    body = page.locator(".body")
    assert body.inner_html().strip() == "<p>Bonjour <b>Marie</b></p>"
    assert page.evaluate("window.pwned === undefined")
    assert page.locator("script").count() == 0
    assert page.locator("main img").count() == 0
    assert not [u for u in requested if "tracker.invalid" in u]
    assert page.locator(".documents li").all_inner_texts() == [
        "Compte rendu de consultation (text/xml)",
        "Compte rendu (PDF/A) (application/pdf)",
    ]
    page.screenshot(path=artifacts / "message.png", full_page=True)

    with page.expect_download() as info:
        page.get_by_role("link", name="compte rendu é.pdf").click()
    download = info.value
    assert download.suggested_filename == "compte rendu é.pdf"
    assert Path(download.path()).read_bytes() == PDF

    page.get_by_label("Votre réponse").fill("Merci docteur, bien reçu.")
    page.get_by_role("button", name="Envoyer la réponse").click()
    assert page.locator("h1").inner_text() == "Réponse envoyée"
    assert CLAIRE in page.locator("main").inner_text()
    page.screenshot(path=artifacts / "reply-sent.png", full_page=True)

    reply = imap_fetch(space, CLAIRE, b"Merci docteur")
    parsed = message_from_bytes(reply, policy=policy.default)
    original = message_from_bytes(original_bytes, policy=policy.default)
    assert parsed["From"].addresses[0].addr_spec == patient["address"]
    assert parsed["Subject"] == "Re: Vos résultats"
    assert parsed["In-Reply-To"] == original["Message-ID"]
    # Signed by the operator for the patient (domain-bound certificate of the patient domain), verified by A.
    head = reply.split(b"\r\n\r\n", 1)[0].decode()
    assert f" smime=pass body.smime-identifier=patient.{B}\r\n" in head
    assert "(domain-bound, validated " in head
    node_b = space.node("operator-b")
    for event in ("web.login.succeeded", "web.message.opened", "web.attachment.downloaded", "web.reply.sent"):
        found = node_b.cli("audit", "search", "--event", event, "--principal", patient["address"], "--json").json()
        assert found, event
    sent = node_b.cli("audit", "search", "--event", "web.reply.sent", "--json").json()
    assert sent[-1]["response"]["rcpt"] == CLAIRE  # type: ignore[index]
    assert "body" not in json.dumps(sent)  # what was written never reaches the audit log


def test_a_forged_form_without_csrf_token_is_refused(space: TrustSpace, context: Any) -> None:
    patient = patient_of(space)
    page = context.new_page()
    page.goto(base_url(space) + "/")
    if page.url.endswith("/connexion"):
        login(page, space, patient)
    page.get_by_role("link", name="Vos résultats").click()
    action = str(page.locator("form[action$='/reponse']").get_attribute("action"))
    before = len(space.node("operator-b").cli("audit", "search", "--event", "web.reply.sent", "--json").json())  # type: ignore[arg-type]
    for form in ({"body": "sans jeton"}, {"body": "mauvais jeton", "csrf": "x" * 43}):
        response = page.request.post(base_url(space) + action, form=form)
        assert response.status == 403
        assert "Formulaire expiré ou invalide" in response.text()
    after = space.node("operator-b").cli("audit", "search", "--event", "web.reply.sent", "--json").json()
    assert len(after) == before  # type: ignore[arg-type]
    refused = space.node("operator-b").cli("audit", "search", "--event", "web.refused", "--json").json()
    assert [r["response"]["reason"] for r in refused[-2:]] == ["csrf", "csrf"]  # type: ignore[index]
    # A form without a length (chunked) or over 200 kB is refused before it is read.
    url = base_url(space) + "/connexion"
    curl = ["curl", "-sS", "--cacert", space.creds["trust_anchor"], "-o", "/dev/null", "-w", "%{http_code}"]
    chunked = [*curl, "-H", "Transfer-Encoding: chunked", "--data-binary", "csrf=x&address=y", url]
    assert subprocess.run(chunked, capture_output=True, text=True, check=True).stdout == "411"
    big = [*curl, "--data-binary", "@-", url]
    out = subprocess.run(big, input="body=" + "x" * 200_001, capture_output=True, text=True, check=True)
    assert out.stdout == "413"
    # Logout without a token is refused too: the session survives.
    assert page.request.post(base_url(space) + "/deconnexion", form={}).status == 403
    page.goto(base_url(space) + "/")
    assert page.locator("h1").inner_text() == "Boîte de réception"


def test_every_page_carries_the_security_headers(space: TrustSpace, context: Any) -> None:
    response = context.request.get(base_url(space) + "/connexion")
    assert response.status == 200
    headers = response.headers
    assert headers["content-security-policy"] == (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-frame-options"] == "DENY"
    missing = context.request.get(base_url(space) + "/nulle-part")
    assert missing.status == 404
    assert missing.headers["content-security-policy"].startswith("default-src 'none'")
    assert "Cette page n&#39;existe pas." in missing.text()  # Jinja escapes the apostrophe


def test_the_inbox_names_the_sender_from_the_directory(space: TrustSpace, context: Any) -> None:
    patient = patient_of(space)
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = PAUL, patient["address"], "Rappel de vaccination"
    msg.set_content("Pensez au rappel.")
    space.submit_raw("operator-b", PAUL, [patient["address"]], msg.as_bytes(policy=policy.SMTP))
    stored(space, patient["address"], b"Pensez au rappel")
    page = context.new_page()
    page.goto(base_url(space) + "/")
    if page.url.endswith("/connexion"):
        login(page, space, patient)
    row = page.locator("table.inbox tbody tr").first
    assert row.locator(".name").inner_text() == "M Paul DURAND"
    assert row.locator(".profession").inner_text() == "Médecin"
    assert row.get_attribute("class") == "unread"
    assert page.locator("[role=status]").first.inner_text() == "2 messages, dont 1 non lu."


def test_after_fin_the_patient_can_no_longer_reply(space: TrustSpace, context: Any, artifacts: Path) -> None:
    patient = patient_of(space)
    page = context.new_page()
    page.goto(base_url(space) + "/")
    if page.url.endswith("/connexion"):
        login(page, space, patient)
    # A reply form as the patient had it before the professional closed the exchange.
    page.get_by_role("link", name="Vos résultats").click()
    form_action = page.locator("form[action$='/reponse']").get_attribute("action")
    csrf = page.locator("form[action$='/reponse'] input[name=csrf]").get_attribute("value")

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = CLAIRE, patient["address"], "[FIN]"
    msg.set_content("Je clôture notre échange.")
    space.submit_raw("operator-a", CLAIRE, [patient["address"]], msg.as_bytes(policy=policy.SMTP))
    stored(space, patient["address"], b"Je cl")

    page.goto(base_url(space) + "/")
    assert page.locator("table.inbox tbody tr .state").all_inner_texts() == ["Clôturé", "Ouvert", "Clôturé"]
    page.get_by_role("link", name="[FIN]").click()
    assert page.locator("form[action$='/reponse']").count() == 0
    assert page.locator("[role=alert]").inner_text() == (
        f"{CLAIRE} a clôturé cet échange : il n'est plus possible d'y répondre."
    )
    page.screenshot(path=artifacts / "closed.png", full_page=True)

    # The old form, sent anyway, is refused by the server (not only hidden by the page).
    response = page.request.post(
        base_url(space) + str(form_action), form={"csrf": str(csrf), "body": "Encore une question"}
    )
    assert response.status == 409
    assert "a clôturé cet échange" in response.text()
    refused = space.node("operator-b").cli("audit", "search", "--event", "patient.refused", "--json").json()
    assert refused[-1]["response"]["rule"] == "conversation-closed"  # type: ignore[index]
    assert refused[-1]["principal"] == patient["address"]  # type: ignore[index]


def test_an_opposed_patient_is_not_written_to(space: TrustSpace) -> None:
    patient = patient_of(space)
    node_b = space.node("operator-b")
    assert node_b.cli("patient", "oppose", patient["address"]).code == 0
    try:
        # Across operators: A accepts and relays, B refuses at the door, A bounces to the author.
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = CLAIRE, patient["address"], "Rendez-vous"
        msg.set_content("Votre rendez-vous est confirmé.")
        space.submit_raw("operator-a", CLAIRE, [patient["address"]], msg.as_bytes(policy=policy.SMTP))
        bounce = imap_fetch(space, CLAIRE, b"rule patient-opposed")
        assert (
            f"550 5.7.1 the patient {patient['address']} has opposed secure messaging (rule patient-opposed)".encode()
            in (re.sub(rb"\r\n\s+", b" ", bounce))
        )
        # Within operator B: refused at submission, with the rule.
        with pytest.raises(Exception, match="rule patient-opposed") as refused:
            space.submit_raw(
                "operator-b",
                PAUL,
                [patient["address"]],
                msg.as_bytes(policy=policy.SMTP).replace(CLAIRE.encode(), PAUL.encode()),
            )
        assert "550" in str(refused.value)
    finally:
        assert node_b.cli("patient", "unoppose", patient["address"]).code == 0


def test_enrolment_with_activation_code_and_totp(space: TrustSpace, browser: Any, artifacts: Path) -> None:
    node_b = space.node("operator-b")
    first13 = "19012" + "2A" + "123456"
    from directory.identifiers import ins_key

    ins = first13 + ins_key(first13)
    added = node_b.cli(
        "patient", "add", ins, "--birth-name", "Santoni", "--given-name", "Ange", "--birth-date", "1990-12-02",
        "--sex", "M", "--json",
    )  # fmt: skip
    assert added.code == 0, added.err
    info = added.json()
    assert isinstance(info, dict)
    address, code = info["address"], info["activation_code"]
    assert address == f"{ins.lower()}@patient.{B}"

    ctx = browser.new_context(ignore_https_errors=True, locale="fr-FR", viewport={"width": 390, "height": 844})
    page = ctx.new_page()
    page.goto(base_url(space) + "/activation")
    page.get_by_label("Adresse de messagerie").fill(address)
    page.get_by_label("Code d'activation").fill("AAAA-BBBB-CCCC-DDDD-EEEE")
    page.get_by_role("button", name="Continuer").click()
    assert page.locator("[role=alert]").inner_text() == "Adresse ou code d'activation incorrect, ou code expiré."

    page.get_by_label("Code d'activation").fill(code)
    page.get_by_role("button", name="Continuer").click()
    secret = page.locator("#secret").inner_text().replace(" ", "")
    assert len(secret) == 32
    page.screenshot(path=artifacts / "enrolment-phone.png", full_page=True)
    page.get_by_label("Nouveau mot de passe").fill("un mot de passe long")
    page.get_by_label("Confirmez le mot de passe").fill("un mot de passe long")
    page.get_by_label("Code affiché").fill("000000" if pyotp.TOTP(secret).now() != "000000" else "111111")
    page.get_by_role("button", name="Activer").click()
    assert "application d'authentification est incorrect" in page.locator("[role=alert]").inner_text()
    page.get_by_label("Nouveau mot de passe").fill("un mot de passe long")
    page.get_by_label("Confirmez le mot de passe").fill("un mot de passe long")
    # totp_code: the enrolment's code is spent (RFC 6238 §5.2), the first login needs the next period's.
    page.get_by_label("Code affiché").fill(totp_code(address, secret))
    page.get_by_role("button", name="Activer").click()
    assert page.locator("h1").inner_text() == "Votre messagerie est activée"
    shown = node_b.cli("patient", "show", address, "--json").json()
    assert isinstance(shown, dict)
    assert (shown["enrolled"], shown["activation_pending"]) == (True, False)

    # The code worked once.
    page.goto(base_url(space) + "/activation")
    page.get_by_label("Adresse de messagerie").fill(address)
    page.get_by_label("Code d'activation").fill(code)
    page.get_by_role("button", name="Continuer").click()
    assert page.locator("[role=alert]").inner_text() == "Adresse ou code d'activation incorrect, ou code expiré."

    # Login: the password alone is not enough; with the code it is.
    page.goto(base_url(space) + "/connexion")
    page.get_by_label("Adresse de messagerie").fill(address)
    page.get_by_label("Mot de passe").fill("un mot de passe long")
    page.get_by_label("Code de l'application").fill("123456" if pyotp.TOTP(secret).now() != "123456" else "654321")
    page.get_by_role("button", name="Se connecter").click()
    assert page.locator("[role=alert]").inner_text() == "Adresse, mot de passe ou code de vérification incorrect."
    page.get_by_label("Mot de passe").fill("un mot de passe long")
    page.get_by_label("Code de l'application").fill(totp_code(address, secret))
    page.get_by_role("button", name="Se connecter").click()
    assert page.locator("h1").inner_text() == "Boîte de réception"
    cookie = next(c for c in ctx.cookies() if c["name"] == "__Host-mssgw")
    assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"], cookie["path"]) == (True, True, "Strict", "/")
    page.screenshot(path=artifacts / "inbox-phone.png", full_page=True)

    # Logout ends the session server-side: the old cookie opens nothing.
    page.get_by_role("button", name="Se déconnecter").click()
    assert page.url == base_url(space) + "/connexion"
    ctx.add_cookies([{**cookie}])
    page.goto(base_url(space) + "/")
    assert page.url == base_url(space) + "/connexion"
    # Lock-out: five wrong codes from this address, then even the right one is refused for a while
    # (2 s after the fifth failure, doubling with each further one).
    right = totp_code(address, secret)  # may wait for a fresh period: before the failures, not after
    page.goto(base_url(space) + "/connexion")
    for _ in range(5):
        page.get_by_label("Adresse de messagerie").fill(address)
        page.get_by_label("Mot de passe").fill("un mot de passe long")
        page.get_by_label("Code de l'application").fill("000000" if pyotp.TOTP(secret).now() != "000000" else "111111")
        page.get_by_role("button", name="Se connecter").click()
    page.get_by_label("Adresse de messagerie").fill(address)
    page.get_by_label("Mot de passe").fill("un mot de passe long")
    page.get_by_label("Code de l'application").fill(right)
    with page.expect_response(lambda r: r.url.endswith("/connexion") and r.request.method == "POST") as answer:
        page.get_by_role("button", name="Se connecter").click()
    assert answer.value.status == 429
    assert page.locator("[role=alert]").inner_text().startswith("Trop de tentatives échouées : réessayez dans ")
    events = [r["action"] for r in node_b.cli("audit", "search", "--principal", address, "--json").json()]  # type: ignore[index, union-attr]
    assert {"web.enrolled", "web.login.failed", "web.login.locked", "web.login.succeeded", "web.logout"} <= set(events)
    ctx.close()
