"""The patient web inbox on a running node (`mssgw serve`, HTTPS), driven by a plain HTTP client: refusals and
failures the browser tests cannot produce (codes in other scripts, hostile stored messages, a full mailbox,
forms no browser sends). Exact statuses, the audit trail and the store's state."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import io
import json
import re
import socket
import sqlite3
import ssl
import time
import zipfile
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlencode

import pyotp
import pytest
from sqlalchemy import update

from directory.identifiers import ins_key
from gateway.auth.passwords import hash_password
from gateway.node import Node
from gateway.policy.patients import Open
from gateway.store.mailstore import Mailstore
from gateway.store.messages import MessageStore
from gateway.store.models import StoredMessage
from gateway.store.patients import Identity, PatientRepository
from tests.conftest import DOMAIN, NodeDir, copy_node
from tests.smtp.conftest import Gateway, inbox, serve, wait_for_message

PAT = f"patient.{DOMAIN}"
DOC = f"claire.martin@{DOMAIN}"
PASSWORD = "un mot de passe long"
ACTIVATION = "ABCD-EFGH-IJKL-MNOP-QRST"
ARABIC_INDIC = "\u0661\u0662\u0663\u0664\u0665\u0666"  # str.isdigit() is True for these
# One patient per scenario (a TOTP step logs in once), enrolled unless named here.
FIRST13 = {
    "digits": "1850375123456",
    "reset": "2920699123456",
    "forms": "2790175123456",
    "probe": "2700175000002",
    "bombs": "1690575000003",
    "hostile": "1851275123457",
    "quota": "2020133123456",
    "reply": "1850375123458",
    "fresh": "2850375123456",
    "fresh-digits": "1700175000001",
    "fresh-policy": "2880175000004",
}
NOT_ENROLLED = {"fresh", "fresh-digits", "fresh-policy"}
BOMBS = 12
P = {name: f"{first13}{ins_key(first13)}@{PAT}" for name, first13 in FIRST13.items()}
SECRETS = {name: pyotp.random_base32() for name in FIRST13}


def letter(to: str, subject: str, text: str = "Bonjour, voici vos résultats.") -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = f"Dr Claire Martin <{DOC}>", to, subject
    msg["Message-ID"] = f"<{subject.replace(' ', '.')}@{DOMAIN}>"
    msg.set_content(text)
    return msg.as_bytes()


def corrupt_xdm(to: str) -> bytes:
    """An XDM archive whose METADATA.XML is a broken deflate stream (zlib.error, not BadZipFile)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("IHE_XDM/SUBSET01/METADATA.XML", b"<a>" + b"x" * 5000 + b"</a>")
    data = bytearray(buf.getvalue())
    start = 30 + len("IHE_XDM/SUBSET01/METADATA.XML")
    data[start : start + 2] = b"\xff\xff"
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = f"Dr Claire Martin <{DOC}>", to, "Archive abimee"
    msg.set_content("Ci-joint.")
    msg.add_attachment(bytes(data), maintype="application", subtype="zip", filename="IHE_XDM.zip")
    return msg.as_bytes()


def xdm_bomb(to: str, n: int) -> bytes:
    """25 KB whose archive's metadata inflates to 5 MB of ExtrinsicObjects: about 0.4 s of parsing to show."""
    obj = b'<rim:ExtrinsicObject id="d"><rim:Name><rim:LocalizedString value="x"/></rim:Name></rim:ExtrinsicObject>'
    head = (
        b'<?xml version="1.0"?><lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"'
        b' xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"><rim:RegistryObjectList>'
    )
    tail = b"</rim:RegistryObjectList></lcm:SubmitObjectsRequest>"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("IHE_XDM/SUBSET01/METADATA.XML", head + obj * ((5_000_000 - len(head)) // len(obj)) + tail)
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = f"Dr Claire Martin <{DOC}>", to, f"Dossier {n}"
    msg.set_content("Ci-joint.")
    msg.add_attachment(buf.getvalue(), maintype="application", subtype="zip", filename="IHE_XDM.zip")
    return msg.as_bytes()


def deep(to: str, depth: int = 1200) -> bytes:
    """Multiparts `depth` levels deep: past Python's recursion limit in the email parser."""
    head = f"From: Dr Claire Martin <{DOC}>\r\nTo: {to}\r\nSubject: Profond\r\n".encode()
    levels = b"".join(
        b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1) for i in range(depth)
    )
    return head + b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n" + levels + b"--b%d\r\n\r\nfond\r\n" % depth


def provision(node: NodeDir) -> dict[str, dict[str, str]]:
    """Patients and their INBOX (each from DOC, conversation open); returns message ids by patient and subject."""
    ids: dict[str, dict[str, str]] = {}

    async def job() -> None:
        async with Node(node.cfg()) as n:
            await n.mailboxes.create(DOC, "PER")
            store = Mailstore(MessageStore(n.mailboxes))
            for name, address in P.items():
                identity = Identity(address.split("@")[0], "1.2.250.1.213.1.4.8", "MARTIN", "JEANNE", "1985-03-14", "F")
                await n.patients.create(address, identity, ACTIVATION)
                if name not in NOT_ENROLLED:
                    hashed = hash_password(PASSWORD)
                    assert await n.patients.enrol(address, ACTIVATION, password_hash=hashed, totp_secret=SECRETS[name])
                bodies = [letter(address, "Bonjour")]
                if name == "hostile":
                    bodies += [corrupt_xdm(address), deep(address), letter(address, "Abime")]
                if name == "bombs":
                    bodies += [xdm_bomb(address, n) for n in range(BOMBS)]
                for body in bodies:
                    await store.append(address, "INBOX", body)
                async with n.db.write() as s:
                    await PatientRepository.apply(s, [Open(address, DOC, frozenset())])
                selected = await store.select(address, "INBOX", read_write=False)
                ids[name] = {_subject(await store.body(address, m.id)): m.id for m in selected.messages}
            # A stored body that no longer opens (damaged on disk): its row must not take the inbox down.
            async with n.db.write() as s:
                await s.execute(
                    update(StoredMessage).where(StoredMessage.id == ids["hostile"]["Abime"]).values(body=b"\0" * 64)
                )
            used, _ = await store.usage(P["quota"])
            await store.set_quota(P["quota"], used + 10)  # full: the next message, the Sent copy, goes over

    asyncio.run(job())
    return ids


def _subject(body: bytes) -> str:
    found = re.search(rb"^Subject: (.*?)\r?\n", body, re.MULTILINE)
    assert found is not None
    return found.group(1).decode()


REQUEST_TIMEOUT = 3  # [web] request_timeout of this module's node


@pytest.fixture(scope="module")
def web(template_node: NodeDir, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, dict]]:
    node = copy_node(template_node, tmp_path_factory.mktemp("web") / "node")
    ids = provision(node)
    for gw in serve(node, {"MSSGW_WEB__REQUEST_TIMEOUT": str(REQUEST_TIMEOUT)}):
        yield gw, ids


class Client:
    """HTTPS with cookies, one connection per request: what the tests need of a browser, and forms none sends."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.cookies: dict[str, str] = {}

    def request(
        self, method: str, path: str, form: dict[str, str] | list[tuple[str, str]] | None = None
    ) -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.gw.port("https"), context=self.gw.tls(), timeout=30)
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}
        body = None
        if form is not None:
            body = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            text = response.read().decode()
        finally:
            conn.close()
        for value in response.headers.get_all("set-cookie") or []:
            name, _, rest = value.partition("=")
            cookie = rest.split(";", 1)[0]
            if cookie and "max-age=0" not in value.lower():
                self.cookies[name] = cookie
            else:
                self.cookies.pop(name, None)
        return response.status, {k.lower(): v for k, v in response.headers.items()}, text

    def csrf(self, path: str) -> str:
        status, _, page = self.request("GET", path)
        found = re.search(r'name="csrf" value="([^"]+)"', page)
        assert status == 200, (status, page)
        assert found, page
        return found.group(1)

    def login(self, address: str, code: str) -> tuple[int, str]:
        form = {"csrf": self.csrf("/connexion"), "address": address, "password": PASSWORD, "code": code}
        status, _, page = self.request("POST", "/connexion", form)
        return status, page


def logged_in(gw: Gateway, name: str) -> Client:
    client = Client(gw)
    status, page = client.login(P[name], pyotp.TOTP(SECRETS[name]).now())
    assert status == 303, page
    return client


def audit(gw: Gateway, action: str, principal: str | None = None) -> list[dict[str, Any]]:
    with sqlite3.connect(gw.node.data / "audit.db") as conn:
        found = conn.execute(
            "SELECT principal, request, response FROM audit_records WHERE action = ? ORDER BY seq", (action,)
        ).fetchall()
    records = [{"principal": p, "request": json.loads(q), "response": json.loads(r)} for p, q, r in found]
    return [r for r in records if principal is None or r["principal"] == principal]


def store_rows(gw: Gateway, sql: str, *args: object) -> list[tuple[Any, ...]]:
    with sqlite3.connect(gw.node.data / "mssgw.db") as conn:
        return conn.execute(sql, args).fetchall()


def folder_count(gw: Gateway, address: str, folder: str) -> int:
    sql = "SELECT count(*) FROM messages m JOIN folders f ON f.id = m.folder_id WHERE f.address = ? AND f.name = ?"
    return int(store_rows(gw, sql, address, folder)[0][0])


def enrolment_page(client: Client, address: str) -> tuple[str, str, str]:
    """(csrf, sealed secret, secret) of the enrolment page the activation code opens."""
    csrf = client.csrf("/activation")
    status, _, page = client.request(
        "POST", "/activation", {"csrf": csrf, "address": address, "activation": ACTIVATION}
    )
    assert status == 200, page
    sealed = re.search(r'name="sealed" value="([0-9a-f]+)"', page)
    secret = re.search(r'id="secret">([A-Z2-7 ]+)<', page)
    assert sealed, page
    assert secret, page
    return csrf, sealed.group(1), secret.group(1).replace(" ", "")


# -- second factor -------------------------------------------------------------------------------------------


def test_a_code_in_other_digits_is_a_wrong_code_and_counts_towards_the_lockout(web: tuple[Gateway, dict]) -> None:
    """Arabic-Indic digits pass str.isdigit(); compare_digest then raised TypeError: a 500 once the password
    matched (a password oracle without the second factor), never counted by the lock-out."""
    gw, _ = web
    address = P["digits"]
    client = Client(gw)
    for _ in range(5):
        status, page = client.login(address, ARABIC_INDIC)
        assert status == 401
        assert "Adresse, mot de passe ou code de vérification incorrect." in page
    failed = audit(gw, "web.login.failed", address)
    assert [r["response"]["reason"] for r in failed] == ["bad-code"] * 5
    # The fifth failure locked the account from this address: even the right code waits now.
    status, _ = client.login(address, pyotp.TOTP(SECRETS["digits"]).now())
    assert status == 429
    assert [r["response"]["result"] for r in audit(gw, "web.login.locked", address)] == ["refused"]
    assert audit(gw, "web.login.succeeded", address) == []


def test_a_code_in_other_digits_does_not_enrol(web: tuple[Gateway, dict]) -> None:
    gw, _ = web
    address = P["fresh-digits"]
    client = Client(gw)
    csrf, sealed, _ = enrolment_page(client, address)
    form = {"csrf": csrf, "address": address, "activation": ACTIVATION, "sealed": sealed,
            "password": PASSWORD, "confirm": PASSWORD, "code": ARABIC_INDIC}  # fmt: skip
    status, _, page = client.request("POST", "/activation/fin", form)
    assert status == 400
    assert "Le code de l&#39;application d&#39;authentification est incorrect" in page
    refused = audit(gw, "web.enrolled", address)
    assert [(r["response"]["result"], r["response"]["reason"][:40]) for r in refused] == [
        ("refused", "Le code de l'application d'authentificat")
    ]
    assert store_rows(
        gw, "SELECT enrolled_at, activation_digest IS NOT NULL FROM patients WHERE address = ?", address
    ) == [(None, 1)]


SPACES = "Le mot de passe ne doit ni commencer ni finir par un espace, ni contenir de caractère de contrôle."


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("  espaces autour du mot de passe", SPACES),
        ("tabulation\tdans le mot de passe", SPACES),
        ("x" * 1025, "Le mot de passe doit compter au plus 1024 caractères."),
    ],
)
def test_a_password_the_policy_refuses_is_an_enrolment_error_not_a_500(
    web: tuple[Gateway, dict], password: str, reason: str
) -> None:
    """The enrolment form checked the length's minimum only; hash_password's policy (at most 1024
    characters, no surrounding spaces, no control characters) then raised: a 500 page, unaudited."""
    gw, _ = web
    address = P["fresh-policy"]
    client = Client(gw)
    csrf, sealed, secret = enrolment_page(client, address)
    form = {"csrf": csrf, "address": address, "activation": ACTIVATION, "sealed": sealed,
            "password": password, "confirm": password, "code": pyotp.TOTP(secret).now()}  # fmt: skip
    status, _, page = client.request("POST", "/activation/fin", form)
    assert status == 400, page
    assert reason in page.replace("&#39;", "'")
    refused = audit(gw, "web.enrolled", address)
    assert (refused[-1]["response"]["result"], refused[-1]["response"]["reason"]) == ("refused", reason[:60])
    assert store_rows(gw, "SELECT enrolled_at FROM patients WHERE address = ?", address) == [(None,)]


def test_the_code_that_proved_the_authenticator_does_not_also_log_in(web: tuple[Gateway, dict]) -> None:
    """RFC 6238 §5.2: one use. The enrolment's code logged in straight away (its step was never spent)."""
    gw, _ = web
    address = P["fresh"]
    client = Client(gw)
    csrf, sealed, secret = enrolment_page(client, address)
    code = pyotp.TOTP(secret).now()
    form = {"csrf": csrf, "address": address, "activation": ACTIVATION, "sealed": sealed,
            "password": PASSWORD, "confirm": PASSWORD, "code": code}  # fmt: skip
    status, _, page = client.request("POST", "/activation/fin", form)
    assert status == 200, page
    assert [r["response"]["result"] for r in audit(gw, "web.enrolled", address)] == ["done"]

    status, _ = Client(gw).login(address, code)

    assert status == 401
    assert [r["response"]["reason"] for r in audit(gw, "web.login.failed", address)] == ["code-replayed"]
    assert audit(gw, "web.login.succeeded", address) == []


# -- sessions ------------------------------------------------------------------------------------------------


def test_a_new_activation_code_ends_the_open_sessions(web: tuple[Gateway, dict]) -> None:
    """`mssgw patient activation` (lost phone, leaked password) left the patient's cookies working."""
    gw, _ = web
    address = P["reset"]
    client = logged_in(gw, "reset")
    assert client.request("GET", "/")[0] == 200
    assert store_rows(gw, "SELECT count(*) FROM web_sessions WHERE address = ?", address) == [(1,)]

    reset = gw.node.cli("patient", "activation", address)
    assert reset.code == 0, reset.err

    assert store_rows(gw, "SELECT count(*) FROM web_sessions WHERE address = ?", address) == [(0,)]
    status, headers, _ = client.request("GET", "/")
    assert (status, headers["location"]) == (303, "/connexion")
    expired = audit(gw, "web.refused")
    assert (expired[-1]["principal"], expired[-1]["response"]["reason"]) == (None, "session-expired")


# -- refusals ------------------------------------------------------------------------------------------------


def test_a_form_with_too_many_fields_is_a_400_refusal_of_the_patient(web: tuple[Gateway, dict]) -> None:
    """Starlette's HTTPException(400) from request.form() was turned into a 500 by the error boundary, unaudited."""
    gw, ids = web
    address = P["forms"]
    client = logged_in(gw, "forms")
    message_id = ids["forms"]["Bonjour"]
    csrf = client.csrf(f"/messages/{message_id}")
    form = [("csrf", csrf), ("body", "Merci")] + [(f"f{i}", "x") for i in range(25)]

    status, _, page = client.request("POST", f"/messages/{message_id}/reponse", form)

    assert status == 400
    assert "Formulaire invalide." in page
    refused = audit(gw, "web.refused", address)
    assert [(r["response"]["reason"], r["request"]["path"]) for r in refused] == [
        ("form-fields", f"/messages/{message_id}/reponse")
    ]
    assert audit(gw, "web.reply.sent", address) == []
    assert folder_count(gw, address, "Sent") == 0


def test_a_form_framed_by_both_length_and_chunks_is_refused_unread(web: tuple[Gateway, dict]) -> None:
    """Content-Length 10 and a chunked body of 900 kB: h11 frames by the chunks (RFC 9112 §6.1), so the
    length checked against the 200 kB cap said nothing; the form parsed all of it. Now a 400, audited."""
    gw, _ = web
    before = len(audit(gw, "web.refused"))
    field = b"address=" + b"x" * 900_000
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (field[:450_000], field[450_000:]))
    head = (
        b"POST /connexion HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 10\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    with (
        socket.create_connection(("127.0.0.1", gw.port("https")), timeout=30) as raw,
        gw.tls().wrap_socket(raw, server_hostname="127.0.0.1") as conn,
    ):
        conn.sendall(head)
        with contextlib.suppress(OSError):  # the server may answer and close before all of it is sent
            conn.sendall(chunks + b"0\r\n\r\n")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert "Formulaire invalide." in answer.decode()
    refused = audit(gw, "web.refused")[before:]
    assert [(r["response"]["reason"], r["request"]["path"]) for r in refused] == [("form-framing", "/connexion")]


def _tls_connection(gw: Gateway) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", gw.port("https")), timeout=4 * REQUEST_TIMEOUT)
    return gw.tls().wrap_socket(raw, server_hostname="127.0.0.1")


def _answer(conn: ssl.SSLSocket) -> bytes:
    """What the server sends until it closes the connection (b"" when it closes without a word)."""
    answer = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize(
    "sent",
    [
        b"",  # nothing at all
        b"GET /connexion HTTP/1.1\r\nHost: 127.0.0.1\r\n",  # a header block never ended
        b"POST /connexion HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 100\r\n\r\naddress=y",  # a body short of its length
    ],
    ids=["silent", "headers", "body"],
)
def test_a_request_not_sent_whole_in_time_loses_its_connection(web: tuple[Gateway, dict], sent: bytes) -> None:
    """uvicorn times only the wait after a response, and any octet cancels it: a client sending nothing, or
    a request an octet at a time, held its connection (and a task) for ever. Now [web] request_timeout."""
    gw, _ = web
    with _tls_connection(gw) as conn:
        started = time.monotonic()
        conn.sendall(sent)
        for _ in range(4 * REQUEST_TIMEOUT if sent else 0):  # two octets a second: each restarted uvicorn's timer
            time.sleep(0.5)
            try:
                conn.sendall(b" ")
            except OSError:
                break
        assert _answer(conn) == b""
        assert time.monotonic() - started < 3 * REQUEST_TIMEOUT


def test_a_connection_kept_alive_gets_the_time_again_for_each_request(web: tuple[Gateway, dict]) -> None:
    gw, _ = web
    request = b"GET /connexion HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with _tls_connection(gw) as conn:
        for _ in range(3):  # 3 x 2 s on one connection: longer than one request_timeout
            conn.sendall(request)
            head = conn.recv(65536)
            assert head.startswith(b"HTTP/1.1 200 "), head[:100]
            length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE).group(1))  # type: ignore[union-attr]
            body = head.split(b"\r\n\r\n", 1)[1]
            while len(body) < length:
                body += conn.recv(65536)
            time.sleep(2)  # within uvicorn's 5 s keep-alive, and 2/3 of the request time
        conn.sendall(b"GET /connexion HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert _answer(conn).startswith(b"HTTP/1.1 200 ")


def test_a_refusal_during_a_session_names_the_patient(web: tuple[Gateway, dict]) -> None:
    """web.refused for a logged-in patient (probing message ids) was audited with no principal."""
    gw, _ = web
    before = len(audit(gw, "web.refused"))
    client = logged_in(gw, "probe")

    status, _, _ = client.request("GET", "/messages/0123456789abcdef0123456789abcdef")

    assert status == 404
    refused = audit(gw, "web.refused")[before:]
    assert [(r["principal"], r["response"]["reason"]) for r in refused] == [(P["probe"], "no-such-message")]


# -- hostile stored messages ---------------------------------------------------------------------------------


def test_messages_that_cannot_be_shown_do_not_take_the_inbox_down(web: tuple[Gateway, dict]) -> None:
    """A corrupt deflate stream (zlib.error) and MIME past the recursion limit made GET / a 500 for as long as
    the message stayed; a body that no longer opens is a row that says so."""
    gw, ids = web
    address = P["hostile"]
    client = logged_in(gw, "hostile")

    status, _, page = client.request("GET", "/")

    assert status == 200
    assert "4 messages, dont 4 non lus." in page
    subjects = re.findall(r'<a href="/messages/([0-9a-f]+)">([^<]*)</a>', page)
    assert sorted(subjects) == sorted(
        [
            (ids["hostile"]["Bonjour"], "Bonjour"),
            (ids["hostile"]["Archive abimee"], "Archive abimee"),
            (ids["hostile"]["Profond"], "Profond"),
            (ids["hostile"]["Abime"], "(message illisible)"),
        ]
    )

    status, _, page = client.request("GET", f"/messages/{ids['hostile']['Archive abimee']}")
    assert status == 200
    assert "IHE_XDM.zip" in page
    assert '<ul class="documents"></ul>' in page  # metadata unreadable, no other file in the subset
    status, _, page = client.request("GET", f"/messages/{ids['hostile']['Profond']}")
    assert status == 200
    assert "Le contenu de ce message ne peut pas être affiché" in page
    opened = audit(gw, "web.message.opened", address)
    assert [r["response"]["uid"] for r in opened] == [2, 3]


def test_the_inbox_listing_reads_headers_only(web: tuple[Gateway, dict]) -> None:
    """GET / rendered every INBOX message in full, archives included, on the event loop that also serves SMTP
    and IMAP: 12 archives of 5 MB metadata took about 5 s. Header fields are all the listing shows."""
    gw, ids = web
    client = logged_in(gw, "bombs")

    started = time.monotonic()
    status, _, page = client.request("GET", "/")
    elapsed = time.monotonic() - started

    assert status == 200
    assert f"{BOMBS + 1} messages, dont {BOMBS + 1} non lus." in page
    assert elapsed < 1.5  # a few milliseconds a message; each full rendering alone takes about 0.4 s
    status, _, page = client.request("GET", f"/messages/{ids['bombs']['Dossier 0']}")
    assert status == 200
    assert page.count("<li>x <span") + page.count("<li>x</li>") == 200  # MAX_DOCUMENTS listed


# -- replies -------------------------------------------------------------------------------------------------


def reply(gw: Gateway, name: str, ids: dict, text: str) -> tuple[int, str]:
    client = logged_in(gw, name)
    message_id = ids[name]["Bonjour"]
    csrf = client.csrf(f"/messages/{message_id}")
    status, _, page = client.request("POST", f"/messages/{message_id}/reponse", {"csrf": csrf, "body": text})
    return status, page


def test_a_reply_is_filed_in_sent_with_its_queueing(web: tuple[Gateway, dict]) -> None:
    gw, ids = web
    status, page = reply(gw, "reply", ids, "Merci docteur, reponse classee.")
    assert status == 200
    assert "Votre réponse a été envoyée" in page
    assert "aucune copie" not in page
    sent = audit(gw, "web.reply.sent", P["reply"])
    assert [(r["response"]["rcpt"], r["response"]["sent_copy"]) for r in sent] == [(DOC, "kept")]
    assert folder_count(gw, P["reply"], "Sent") == 1
    wait_for_message(gw.node, DOC, b"reponse classee")


def test_a_reply_from_a_full_mailbox_leaves_once_without_a_sent_copy(web: tuple[Gateway, dict]) -> None:
    """The reply was queued (committed), then the Sent copy raised QuotaExceeded: a 500, no web.reply.sent, and
    the patient's retry sent it twice."""
    gw, ids = web
    address = P["quota"]

    status, page = reply(gw, "quota", ids, "Merci docteur, boite pleine.")

    assert status == 200
    assert "Votre réponse a été envoyée" in page
    assert "Votre messagerie est pleine : aucune copie de cette réponse n'a été conservée." in page
    sent = audit(gw, "web.reply.sent", address)
    assert [(r["response"]["rcpt"], r["response"]["sent_copy"]) for r in sent] == [(DOC, "over-quota")]
    assert folder_count(gw, address, "Sent") == 0
    wait_for_message(gw.node, DOC, b"boite pleine")
    assert sum(b"boite pleine" in body for body in inbox(gw.node, DOC)) == 1
