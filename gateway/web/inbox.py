"""The patient secure web inbox (domain brief §6): ASGI (Starlette) in the node's loop, HTTPS with the node's
certificate, server-rendered French HTML, no JavaScript.

Implementation notes
- Pages: `/connexion` (address, password, TOTP code), `/activation` (first login: the address and the
  one-time activation code, then a password and an authenticator app, proven by one valid code), `/` (the
  inbox: sender's name and profession from the directory, subject, date, unread, conversation open or
  closed), `/messages/{id}` (text or sanitised HTML, attachments, XDM documents, the reply form when the
  exchange rules allow), `/messages/{id}/pieces/{n}` (download), POST `/messages/{id}/reponse`, POST
  `/deconnexion`. `/healthz` stays the node's health endpoint.
- One error boundary (`_guard`): every handler's exception becomes a French error page (500), logged
  without content; refusals are precise pages with their HTTP status (400 bad input, 403 CSRF, 404 not
  yours or not there, 409 the exchange rules, 429 locked out).
- Every response carries a strict Content-Security-Policy (nothing but our own stylesheet: no script,
  no remote image, no frame, forms only to ourselves), no-store, nosniff, no referrer, HSTS.
- A reply is a message like any other: built here (From: the patient, To: the correspondent or the
  Reply-To address, In-Reply-To/References), judged by the same exchange rules as SMTP
  (`PatientRepository.decide`), queued with its effects in one transaction (the worker signs it with the
  patient domain's certificate and encrypts it for a peer), and filed in the patient's Sent folder in that
  transaction (over the quota, it leaves without the Sent copy: page and audit record say so).
- Stored messages are untrusted: render.py runs in a worker thread; the listing reads header fields only,
  and a message it cannot read is a placeholder row.
- Audit: web.login.succeeded/failed/locked, web.enrolled, web.logout, web.message.opened,
  web.attachment.downloaded, web.reply.sent, patient.refused, web.refused (CSRF, expired session, bad
  input) - with the patient's address and client address, never content.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates
from starlette.types import Message

from gateway.audit import oplog
from gateway.audit.events import AuditEvent
from gateway.auth import totp
from gateway.auth.lockout import Lockout
from gateway.auth.passwords import MAX_LENGTH, MIN_LENGTH, hash_async, policy_violation
from gateway.auth.service import PatientLogin
from gateway.node import Node
from gateway.policy.verdict import Refusal
from gateway.queue.store import Queue
from gateway.smtp import content
from gateway.store.mailstore import Mailstore, QuotaExceeded
from gateway.store.messages import MessageStore
from gateway.store.patients import PatientRepository
from gateway.web import render
from gateway.web.sessions import PRE_COOKIE, SESSION_COOKIE, Current, WebSessions, new_token, tokens_match

HERE = Path(__file__).parent
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
    (b"strict-transport-security", b"max-age=31536000"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]
MAX_REPLY = 100_000
MAX_FORM = 200_000
_log = oplog.get_logger(component="web")


def _version() -> str:
    try:
        return version("mssgw")
    except PackageNotFoundError:
        return "dev"


class Refused(Exception):
    """A precise refusal shown as a page: HTTP status, French message, audited reason."""

    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.message, self.reason = status, message, reason


@dataclass
class InboxEntry:
    id: str
    uid: int
    sender_name: str
    sender_address: str
    profession: str
    subject: str
    date: datetime | None
    unread: bool
    open: bool | None  # the conversation with that sender: open, closed, None (no conversation)


def security_headers(app: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """ASGI middleware: the security headers on every response (pages, files, errors)."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in SECURITY_HEADERS if h[0] not in names)]
            await send(message)

        await app(scope, receive, send_with_headers)

    return wrapped


class Inbox:
    def __init__(self, node: Node, queue: Queue, wake: Callable[[], None], lockout: Lockout) -> None:
        self.node = node
        self.cfg = node.cfg
        self.queue = queue
        self.wake = wake
        self.sessions = WebSessions(node.db, idle=self.cfg.web.idle_timeout, absolute=self.cfg.web.absolute_timeout)
        self.login = PatientLogin(node.mailboxes, lockout)
        self.lockout = lockout
        self.mailstore = Mailstore(MessageStore(node.mailboxes), default_quota=self.cfg.store.default_quota or None)
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.author = f"web:{self.cfg.node.name}"

    @property
    def patients(self) -> PatientRepository:
        return self.node.patients

    # -- plumbing --------------------------------------------------------------------------------

    def app(self) -> Starlette:
        g = self._guard
        routes = [
            Route("/", g(self.inbox), methods=["GET"]),
            Route("/connexion", g(self.login_page), methods=["GET"]),
            Route("/connexion", g(self.login_submit), methods=["POST"]),
            Route("/activation", g(self.activation_page), methods=["GET"]),
            Route("/activation", g(self.activation_submit), methods=["POST"]),
            Route("/activation/fin", g(self.activation_complete), methods=["POST"]),
            Route("/deconnexion", g(self.logout), methods=["POST"]),
            Route("/messages/{id:str}", g(self.message), methods=["GET"]),
            Route("/messages/{id:str}/pieces/{part:int}", g(self.download), methods=["GET"]),
            Route("/messages/{id:str}/reponse", g(self.reply), methods=["POST"]),
            Route("/static/style.css", g(self.stylesheet), methods=["GET"]),
        ]
        return Starlette(routes=routes, exception_handlers={HTTPException: self._http_error})

    def _guard(self, handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        """The one error boundary per request: refusals become their page, anything else a 500 page."""

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except Refused as exc:
                # Who was refused: the session's patient (set by _current), None before login.
                principal = getattr(request.state, "address", None)
                await self.audit(AuditEvent.WEB_REFUSED, request, principal, result="refused", reason=exc.reason)
                return self.page(request, "error.html", {"message": exc.message}, status=exc.status)
            except Exception as exc:
                _log.error("web request failed", path=request.url.path, error=type(exc).__name__)
                return self.page(
                    request, "error.html", {"message": "Une erreur interne est survenue. Réessayez plus tard."}, 500
                )

        return run

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        message = {404: "Cette page n'existe pas.", 405: "Méthode non autorisée."}.get(status, "Requête refusée.")
        return self.page(request, "error.html", {"message": message}, status=status)

    def page(
        self, request: Request, name: str, context: dict[str, Any], status: int = 200, current: Current | None = None
    ) -> Response:
        ctx = {"current": current, "csrf": current.csrf if current else None, "domain": self.cfg.node.domain, **context}
        return self.templates.TemplateResponse(request, name, ctx, status_code=status)

    def _pre_page(self, request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
        """A page with a pre-login form: the double-submit CSRF token in a cookie and in the form."""
        token = request.cookies.get(PRE_COOKIE) or new_token()
        response = self.page(request, name, {**context, "csrf": token}, status)
        response.set_cookie(PRE_COOKIE, token, httponly=True, secure=True, samesite="strict", path="/")
        return response

    @staticmethod
    def client_ip(request: Request) -> str:
        return request.client.host if request.client else ""

    async def audit(self, event: AuditEvent, request: Request, principal: str | None, **response: Any) -> None:
        await self.node.audit.record(
            event,
            author=self.author,
            principal=principal,
            peer=self.client_ip(request),
            request={"method": request.method, "path": request.url.path},
            response=response,
        )

    async def form(self, request: Request) -> FormData:
        # A form's size is known before it is read: no length (a chunked body) would let it grow unbounded.
        length = request.headers.get("content-length", "")
        if not length.isdigit():
            raise Refused(411, "Formulaire invalide : longueur absente.", "form-length")
        if "transfer-encoding" in request.headers:
            # RFC 9112 §6.1: with both, the server frames the body by Transfer-Encoding (h11 does), so the
            # length said nothing of it; such a request may be refused, as smuggling attempts look so.
            raise Refused(400, "Formulaire invalide.", "form-framing")
        if int(length) > MAX_FORM:
            raise Refused(413, "Le formulaire envoyé est trop volumineux.", "form-too-large")
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            raise Refused(400, "Formulaire invalide.", "form-content-type")
        body = bytearray()
        async for chunk in request.stream():  # counted as it comes, whatever the headers said
            body += chunk
            if len(body) > MAX_FORM:
                raise Refused(413, "Le formulaire envoyé est trop volumineux.", "form-too-large")
        read = bytes(body)

        async def replay() -> Message:
            return {"type": "http.request", "body": read, "more_body": False}

        try:
            return await Request(request.scope, replay).form(max_files=0, max_fields=20)
        except HTTPException as exc:  # Starlette's own refusal of the body (too many fields): a 4xx, not a 500
            raise Refused(exc.status_code, "Formulaire invalide.", "form-fields") from None

    async def _current(self, request: Request) -> Current | None:
        current = await self.sessions.current(request.cookies.get(SESSION_COOKIE))
        if current is not None and not (await self.node.mailboxes.active_among([current.address])):
            await self.sessions.end_all(current.address)
            return None
        if current is not None:
            request.state.address = current.address
        return current

    async def _require(self, request: Request) -> Current | Response:
        current = await self._current(request)
        if current is None:
            if request.cookies.get(SESSION_COOKIE):
                await self.audit(AuditEvent.WEB_REFUSED, request, None, result="refused", reason="session-expired")
            return RedirectResponse("/connexion", status_code=303)
        return current

    async def _checked(self, request: Request) -> tuple[Current, FormData] | Response:
        """A logged-in POST whose CSRF token matches the session's."""
        current = await self._require(request)
        if isinstance(current, Response):
            return current
        form = await self.form(request)
        if not tokens_match(str(form.get("csrf") or ""), current.csrf):
            await self.audit(AuditEvent.WEB_REFUSED, request, current.address, result="refused", reason="csrf")
            return self.page(
                request, "error.html", {"message": "Formulaire expiré ou invalide : rechargez la page."}, 403, current
            )
        return current, form

    async def _pre_checked(self, request: Request) -> FormData | Response:
        form = await self.form(request)
        if not tokens_match(str(form.get("csrf") or ""), request.cookies.get(PRE_COOKIE)):
            await self.audit(AuditEvent.WEB_REFUSED, request, None, result="refused", reason="csrf")
            return self.page(
                request, "error.html", {"message": "Formulaire expiré ou invalide : rechargez la page."}, 403
            )
        return form

    # -- login, enrolment, logout ----------------------------------------------------------------

    async def stylesheet(self, request: Request) -> Response:
        return FileResponse(HERE / "static" / "style.css", media_type="text/css")

    async def login_page(self, request: Request) -> Response:
        if await self._current(request) is not None:
            return RedirectResponse("/", status_code=303)
        return self._pre_page(request, "login.html", {})

    async def login_submit(self, request: Request) -> Response:
        form = await self._pre_checked(request)
        if isinstance(form, Response):
            return form
        address = str(form.get("address") or "").strip().lower()[:320]
        outcome = await self.login.check(
            address, str(form.get("password") or ""), str(form.get("code") or ""), self.client_ip(request)
        )
        if outcome.result == "locked":
            await self.audit(
                AuditEvent.WEB_LOGIN_LOCKED, request, address, result="refused", seconds=round(outcome.wait)
            )
            message = f"Trop de tentatives échouées : réessayez dans {int(outcome.wait) + 1} secondes."
            return self._pre_page(request, "login.html", {"error": message, "address": address}, 429)
        if outcome.account is None:
            await self.audit(
                AuditEvent.WEB_LOGIN_FAILED,
                request,
                address,
                result="refused",
                reason=outcome.reason,
                locked_for=round(outcome.locked_for),
            )
            message = "Adresse, mot de passe ou code de vérification incorrect."
            return self._pre_page(request, "login.html", {"error": message, "address": address}, 401)
        token = await self.sessions.start(outcome.address)
        await self.audit(AuditEvent.WEB_LOGIN_SUCCEEDED, request, outcome.address, result="done")
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(SESSION_COOKIE, token, httponly=True, secure=True, samesite="strict", path="/")
        response.delete_cookie(PRE_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response

    async def activation_page(self, request: Request) -> Response:
        return self._pre_page(request, "activation.html", {})

    def _sealed_secret(self, address: str, secret: str) -> str:
        return self.node.kek.seal(secret.encode(), b"web-enrol\0" + address.encode()).hex()

    def _open_secret(self, address: str, sealed: str) -> str | None:
        try:
            return self.node.kek.open(bytes.fromhex(sealed), b"web-enrol\0" + address.encode()).decode()
        except Exception:  # tampered or foreign: the enrolment starts again
            return None

    async def _code_ok(self, request: Request, address: str, code: str) -> bool | Response:
        wait = await self.lockout.wait(address, self.client_ip(request))
        if wait:
            await self.audit(AuditEvent.WEB_LOGIN_LOCKED, request, address, result="refused", step="activation")
            message = f"Trop de tentatives échouées : réessayez dans {int(wait) + 1} secondes."
            return self._pre_page(request, "activation.html", {"error": message, "address": address}, 429)
        if not await self.patients.activation_matches(address, code):
            self.lockout.failure(address, self.client_ip(request))
            await self.audit(
                AuditEvent.WEB_LOGIN_FAILED, request, address, result="refused", reason="bad-activation-code"
            )
            message = "Adresse ou code d'activation incorrect, ou code expiré."
            return self._pre_page(request, "activation.html", {"error": message, "address": address}, 401)
        return True

    async def _activation(self, request: Request) -> tuple[FormData, str, str] | Response:
        """A pre-login activation form with a valid token and a pending activation code: (form, address, code)."""
        form = await self._pre_checked(request)
        if isinstance(form, Response):
            return form
        address = str(form.get("address") or "").strip().lower()[:320]
        code = str(form.get("activation") or "").strip()[:64]
        ok = await self._code_ok(request, address, code)
        return ok if isinstance(ok, Response) else (form, address, code)

    def _enrol_context(self, address: str, code: str, secret: str, sealed: str) -> dict[str, Any]:
        return {
            "address": address,
            "activation": code,
            "sealed": sealed,
            "secret": " ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
            "uri": totp.provisioning_uri(secret, address, issuer=f"MSSanté {self.cfg.node.domain}"),
        }

    async def activation_submit(self, request: Request) -> Response:
        checked = await self._activation(request)
        if isinstance(checked, Response):
            return checked
        _, address, code = checked
        secret = totp.new_secret()
        context = self._enrol_context(address, code, secret, self._sealed_secret(address, secret))
        return self._pre_page(request, "enrol.html", context)

    async def activation_complete(self, request: Request) -> Response:
        checked = await self._activation(request)
        if isinstance(checked, Response):
            return checked
        form, address, code = checked
        secret = self._open_secret(address, str(form.get("sealed") or ""))
        if secret is None:
            raise Refused(400, "Formulaire d'activation invalide : recommencez l'activation.", "enrol-secret")
        password, confirm = str(form.get("password") or ""), str(form.get("confirm") or "")
        error = None
        # The policy hash_password enforces, checked here first: a refusal is this page, not a 500.
        if (violation := policy_violation(password)) == "short":
            error = f"Le mot de passe doit compter au moins {MIN_LENGTH} caractères."
        elif violation == "long":
            error = f"Le mot de passe doit compter au plus {MAX_LENGTH} caractères."
        elif violation == "spaces":
            error = "Le mot de passe ne doit ni commencer ni finir par un espace, ni contenir de caractère de contrôle."
        elif password != confirm:
            error = "Les deux mots de passe ne sont pas identiques."
        elif (step := totp.matched_step(secret, str(form.get("code") or ""))) is None:
            error = "Le code de l'application d'authentification est incorrect : vérifiez l'heure du téléphone."
        if error is not None:
            await self.audit(AuditEvent.WEB_ENROLLED, request, address, result="refused", reason=error[:60])
            context = {**self._enrol_context(address, code, secret, str(form.get("sealed"))), "error": error}
            return self._pre_page(request, "enrol.html", context, 400)
        # The code that proved the secret is spent: it must not also open the first session (RFC 6238 §5.2).
        enrolled = await self.patients.enrol(
            address, code, password_hash=await hash_async(password), totp_secret=secret, totp_step=step
        )
        if not enrolled:
            raise Refused(409, "Ce code d'activation a déjà servi ou a expiré.", "activation-used")
        self.lockout.success(address, self.client_ip(request))
        await self.audit(AuditEvent.WEB_ENROLLED, request, address, result="done")
        return self.page(request, "enrolled.html", {"address": address})

    async def logout(self, request: Request) -> Response:
        checked = await self._checked(request)
        if isinstance(checked, Response):
            return checked
        current, _ = checked
        await self.sessions.end(request.cookies.get(SESSION_COOKIE, ""))
        await self.audit(AuditEvent.WEB_LOGOUT, request, current.address, result="done")
        response = RedirectResponse("/connexion", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response

    # -- reading ----------------------------------------------------------------------------------

    async def inbox(self, request: Request) -> Response:
        current = await self._require(request)
        if isinstance(current, Response):
            return current
        selected = await self.mailstore.select(current.address, "INBOX", read_write=False)
        states = await self.patients.conversation_states(current.address)
        directory = self.node.directory
        entries: list[InboxEntry] = []
        for meta in reversed(selected.messages):
            try:  # the listing shows header fields only: no MIME tree, no attachment is parsed for it
                shown = await asyncio.to_thread(render.summary, await self.mailstore.body(current.address, meta.id))
            except Exception as exc:  # one unreadable message is a row that says so, not a failed inbox
                _log.warning("message not listed", message=meta.id, error=type(exc).__name__)
                shown = render.Rendered("", "", (), (), "(message illisible)", None, None, "")
            known = await directory.show(shown.from_address) if shown.from_address else None
            entries.append(
                InboxEntry(
                    id=meta.id,
                    uid=meta.uid,
                    sender_name=(known or {}).get("name") or shown.from_name or shown.from_address,
                    sender_address=shown.from_address,
                    profession=(known or {}).get("profession") or "",
                    subject=shown.subject or "(sans objet)",
                    date=shown.date or meta.internal_date,
                    unread="\\Seen" not in meta.flags,
                    open=states.get(shown.from_address),
                )
            )
        unread = sum(1 for e in entries if e.unread)
        return self.page(request, "inbox.html", {"entries": entries, "unread": unread}, current=current)

    async def _message(self, current: Current, message_id: str) -> tuple[int, int, bytes]:
        """(folder id, UID, body) of one of this patient's INBOX messages; 404 otherwise."""
        selected = await self.mailstore.select(current.address, "INBOX", read_write=False)
        meta = next((m for m in selected.messages if m.id == message_id), None)
        if meta is None:
            raise Refused(404, "Ce message n'existe pas.", "no-such-message")
        return selected.folder.id, meta.uid, await self.mailstore.body(current.address, meta.id)

    async def _reply_target(self, current: Current, shown: render.Rendered) -> tuple[str | None, str | None]:
        """(address the reply goes to, why no reply is possible)."""
        target = _target(shown)
        if not target:
            return None, "Ce message n'indique pas d'expéditeur : il n'est pas possible d'y répondre."
        decision = await self.patients.decide(current.address, [target], _UNWRITTEN, 0)
        if isinstance(decision.verdict, Refusal):
            return target, _rule_message(decision.rule, target)
        return target, None

    async def message(self, request: Request) -> Response:
        current = await self._require(request)
        if isinstance(current, Response):
            return current
        message_id = request.path_params["id"]
        folder_id, uid, raw = await self._message(current, message_id)
        shown = await asyncio.to_thread(render.render, raw)  # untrusted MIME and ZIP: off the event loop
        await self.mailstore.store_flags(current.address, folder_id, [uid], "add", ["\\Seen"])
        self.node.notices.publish(current.address)
        known = await self.node.directory.show(shown.from_address) if shown.from_address else None
        target, no_reply = await self._reply_target(current, shown)
        await self.audit(
            AuditEvent.WEB_MESSAGE_OPENED, request, current.address, result="done", uid=uid, message_id=shown.message_id
        )
        context = {"m": shown, "id": message_id, "known": known or {}, "target": target, "no_reply": no_reply}
        return self.page(request, "message.html", context, current=current)

    async def download(self, request: Request) -> Response:
        current = await self._require(request)
        if isinstance(current, Response):
            return current
        _, uid, raw = await self._message(current, request.path_params["id"])
        found = await asyncio.to_thread(render.attachment, raw, request.path_params["part"])
        if found is None:
            raise Refused(404, "Cette pièce jointe n'existe pas.", "no-such-attachment")
        filename, data = found
        await self.audit(
            AuditEvent.WEB_ATTACHMENT_DOWNLOADED,
            request,
            current.address,
            result="done",
            uid=uid,
            part=request.path_params["part"],
            size=len(data),
        )
        return Response(
            data,
            media_type="application/octet-stream",
            headers={"content-disposition": render.content_disposition(filename)},
        )

    # -- replying ----------------------------------------------------------------------------------

    async def reply(self, request: Request) -> Response:
        checked = await self._checked(request)
        if isinstance(checked, Response):
            return checked
        current, form = checked
        message_id = request.path_params["id"]
        _, uid, raw = await self._message(current, message_id)
        shown = await asyncio.to_thread(render.render, raw)
        text = str(form.get("body") or "").replace("\r\n", "\n").strip()
        if not text:
            raise Refused(400, "Le message de réponse est vide.", "empty-reply")
        if len(text.encode()) > MAX_REPLY:
            raise Refused(413, "La réponse est trop longue (100 000 caractères au plus).", "reply-too-long")
        target = _target(shown)
        body = self._compose(current.address, await self.patients.describe(current.address), target or "", shown, text)
        facts = content.parse_headers(body)
        if isinstance(facts, Refusal) or target is None:
            raise Refused(400, "La réponse n'a pas pu être composée.", "compose")
        decision = await self.patients.decide(current.address, [target], facts, len(body))
        if isinstance(decision.verdict, Refusal):
            await self.audit(
                AuditEvent.PATIENT_REFUSED,
                request,
                current.address,
                result="refused",
                rule=decision.rule,
                rcpt=target,
                reply=decision.verdict.smtp,
            )
            message = _rule_message(decision.rule, target)
            context = {"m": shown, "id": message_id, "known": {}, "target": target, "no_reply": message}
            return self.page(request, "message.html", context, status=409, current=current)
        # The Sent copy is filed in the transaction that queues the reply: a reply queued is a reply filed, and
        # a failure leaves neither (a retry sends one copy, not two). A mailbox over its quota does not stop
        # the reply (the patient cannot delete anything here, and a professional waits for the answer): it
        # leaves without a Sent copy, which the page and the audit record say.
        async with self.node.db.write() as s:
            await PatientRepository.apply(s, decision.effects)
            queue_id = await self.queue.enqueue(
                source="web",
                sender=current.address,
                recipients=[target],
                body=body,
                local_domains=self.cfg.node.local_domains,
                principal=current.address,
                peer=self.client_ip(request),
                header_message_id=facts.message_id,
                session=s,
            )
            try:
                await self.mailstore.append_within(s, current.address, "Sent", body, flags=["\\Seen"])
                sent_copy = "kept"
            except QuotaExceeded:
                sent_copy = "over-quota"
        self.wake()
        await self.audit(
            AuditEvent.WEB_REPLY_SENT,
            request,
            current.address,
            result="done",
            queue_id=queue_id,
            rcpt=target,
            in_reply_to_uid=uid,
            message_id=facts.message_id,
            size=len(body),
            sent_copy=sent_copy,
        )
        context = {"target": target, "copy_kept": sent_copy == "kept"}
        return self.page(request, "sent.html", context, current=current)

    def _compose(self, sender: str, patient: dict[str, Any], target: str, shown: render.Rendered, text: str) -> bytes:
        msg = EmailMessage()
        msg["From"] = render.display_address(f"{patient['given_name'].title()} {patient['birth_name']}", sender)
        msg["To"] = target
        subject = shown.subject or ""
        msg["Subject"] = subject if subject.lower().startswith(("re:", "re :")) else f"Re: {subject}".strip()
        msg["Date"] = format_datetime(datetime.now(UTC))
        msg["Message-ID"] = make_msgid(secrets.token_hex(8), domain=self.cfg.node.patient)
        if shown.message_id:
            msg["In-Reply-To"] = shown.message_id
            msg["References"] = f"{shown.references} {shown.message_id}".strip()
        msg["X-MSS-NIL"] = f"mssgw/{_version()}"
        msg.set_content(text, charset="utf-8", cte="quoted-printable")
        return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n", max_line_length=78))


@dataclass(frozen=True)
class _Unwritten:
    """The header facts of a reply not yet written: a patient's rules read only its recipients."""

    subject: str | None = None
    x_mss: dict[str, str] = field(default_factory=dict)
    reply_to: tuple[str, ...] = ()


_UNWRITTEN = _Unwritten()


def _target(shown: render.Rendered) -> str | None:
    """Where a reply to `shown` goes: its Reply-To address, else its author."""
    return shown.reply_to[0] if shown.reply_to else (shown.from_address or None)


def _rule_message(rule: str | None, target: str) -> str:
    """The exchange rule that refused, in the patient's words."""
    return {
        "conversation-closed": f"{target} a clôturé cet échange : il n'est plus possible d'y répondre.",
        "patient-reply-only": (
            f"Vous ne pouvez écrire qu'à un professionnel qui vous a écrit ; {target} ne l'a pas fait."
        ),
        "patient-to-patient": "Un patient ne peut pas écrire à un autre patient.",
        "patient-opposed": "Vous vous êtes opposé(e) à la messagerie sécurisée : l'envoi n'est pas possible.",
    }.get(rule or "", f"Envoi refusé par les règles d'échange ({rule}).")


def web_app(node: Node, queue: Queue, wake: Callable[[], None], lockout: Lockout, health: Any) -> Any:
    """The node's HTTPS application: `/healthz` (JSON) and the patient inbox, with the security headers."""
    inbox = Inbox(node, queue, wake, lockout).app()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/healthz":
            await health(scope, receive, send)
        else:
            await inbox(scope, receive, send)

    return security_headers(app)
