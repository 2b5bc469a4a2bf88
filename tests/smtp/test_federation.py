"""Two operators, separate data directories, federating over mutual TLS: the demo trust space, run."""

from __future__ import annotations

import json
import secrets
import smtplib
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import NodeDir, run_cli
from tests.smtp.conftest import inbox

A, B = "hopital-a.mssante.test", "clinique-b.mssante.test"


@dataclass
class TrustSpace:
    root: Path
    creds: dict[str, Any]
    proc: subprocess.Popen[str]

    def operator(self, name: str) -> dict[str, Any]:
        return next(op for op in self.creds["operators"] if op["name"] == name)

    def node(self, name: str) -> NodeDir:
        return NodeDir(self.root / name, self.root / "secrets" / name)

    def password(self, address: str) -> str:
        for op in self.creds["operators"]:
            for m in op["mailboxes"]:
                if m["address"] == address:
                    return str(m["password"])
        raise KeyError(address)

    def mailbox(self, address: str) -> dict[str, Any]:
        return next(m for op in self.creds["operators"] for m in op["mailboxes"] if m["address"] == address)

    def submit_raw(self, name: str, sender: str, rcpts: list[str], raw: bytes) -> None:
        ctx = ssl.create_default_context(cafile=self.creds["trust_anchor"])
        ctx.check_hostname = False
        with smtplib.SMTP("127.0.0.1", self.operator(name)["ports"]["submission"], timeout=30) as client:
            client.starttls(context=ctx)
            client.login(sender, self.password(sender))
            assert client.sendmail(sender, rcpts, raw) == {}

    def submit(self, name: str, sender: str, rcpts: list[str], subject: str) -> None:
        op = self.operator(name)
        ctx = ssl.create_default_context(cafile=self.creds["trust_anchor"])
        ctx.check_hostname = False
        with smtplib.SMTP("127.0.0.1", op["ports"]["submission"], timeout=30) as client:
            client.starttls(context=ctx)
            client.login(sender, self.password(sender))
            body = (
                f"From: {sender}\r\nTo: {', '.join(rcpts)}\r\nSubject: {subject}\r\n"
                "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + "Compte rendu.\r\n" * 700
            )
            assert client.sendmail(sender, rcpts, body.encode()) == {}


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrustSpace]:
    root = tmp_path_factory.mktemp("space") / "demo"
    r = run_cli("demo", "init", root)
    assert r.code == 0, r.err
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli.main", "demo", "run", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    ready = 0
    for line in proc.stdout:
        if line.strip().endswith(": ready"):
            ready += 1
            if ready == 2:
                break
    assert ready == 2, proc.stderr.read() if proc.stderr else ""
    yield TrustSpace(root, json.loads((root / "credentials.json").read_text()), proc)
    proc.terminate()
    proc.wait(timeout=30)


def wait(node: NodeDir, address: str, marker: bytes, timeout: float = 30) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for body in inbox(node, address):
            if marker in body:
                return body
        time.sleep(0.2)
    raise AssertionError(f"{marker!r} never reached {address}")


def test_a_message_crosses_operators_over_mutual_tls(space: TrustSpace) -> None:
    sender, rcpt = f"claire.martin@{A}", f"paul.durand@{B}"
    space.submit("operator-a", sender, [rcpt], "Lettre de liaison")
    got = wait(space.node("operator-b"), rcpt, b"Subject: Lettre de liaison")
    head = got.split(b"\r\n\r\n", 1)[0].decode()
    # B's Received (relay, TLS) above A's (submission, TLS): both hops encrypted.
    assert head.count("Received: ") == 2
    first, second = head.split("Received: ")[1:3]
    assert " with ESMTPS id " in first
    assert " with ESMTPSA id " in second
    assert "(using TLSv1.3 with cipher " in first
    assert got.endswith(b"Compte rendu.\r\n" * 700)
    # It crossed signed by claire's address-bound certificate (found by A in the published
    # certificates) and encrypted; B stored the verified inner message under its verdict.
    assert f"Authentication-Results: mail.{B};\r\n smime=pass body.smime-identifier={sender}\r\n" in head
    protected = space.node("operator-a").cli("audit", "search", "--event", "smime.protected", "--json").json()
    verified = space.node("operator-b").cli("audit", "search", "--event", "smime.verified", "--json").json()
    assert protected[-1]["response"]["rcpts"] == [rcpt]  # type: ignore[index]
    assert verified[-1]["response"]["signer_serial"] == protected[-1]["response"]["signer_serial"]  # type: ignore[index]
    assert verified[-1]["response"]["binding"] == "address"  # type: ignore[index]
    # A audited the relay; B audited the peer by its certificate's trust-list domain.
    relayed = space.node("operator-a").cli("audit", "search", "--event", "queue.relayed", "--json").json()
    assert relayed[-1]["response"]["rcpt"] == rcpt  # type: ignore[index]
    accepted = space.node("operator-b").cli("audit", "search", "--event", "smtp.message.accepted", "--json").json()
    assert accepted[-1]["principal"] == A  # type: ignore[index]
    assert accepted[-1]["author"] == "relay:node1"  # type: ignore[index]


def test_replies_travel_back_and_local_copies_stay_local(space: TrustSpace) -> None:
    space.submit("operator-b", f"paul.durand@{B}", [f"claire.martin@{A}", f"accueil@{B}"], "Réponse")
    wait(space.node("operator-a"), f"claire.martin@{A}", b"Subject: R")
    wait(space.node("operator-b"), f"accueil@{B}", b"Subject: R")


def test_unknown_remote_mailbox_bounces_with_a_dsn(space: TrustSpace) -> None:
    sender = f"lucas.bernard@{A}"
    space.submit("operator-a", sender, [f"nobody@{B}"], "perdu")
    dsn = wait(space.node("operator-a"), sender, b"report-type=delivery-status")
    assert dsn.startswith(b"Return-Path: <>\r\n")  # the worker's final delivery of a null-sender message
    assert dsn.count(b"Return-Path:") == 1
    assert b"Final-Recipient: rfc822; nobody@clinique-b.mssante.test" in dsn
    assert b"Status: 5.1.1" in dsn
    assert b"Compte rendu." not in dsn  # headers only, never the content


def test_a_bounce_for_a_peers_sender_crosses_back(space: TrustSpace) -> None:
    """B accepts a message for a mailbox whose whole quota is smaller than it: its worker bounces it (5.2.3)
    to the sender at A. The DSN crosses null-sender, signed with B's domain certificate, and A takes it:
    its From: is MAILER-DAEMON at B's domain, which that certificate's dNSName binds."""
    sender, rcpt = f"lucas.bernard@{A}", f"accueil@{B}"
    with sqlite3.connect(space.node("operator-b").data / "mssgw.db", timeout=30) as db:
        db.execute("UPDATE accounts SET quota_bytes = 100 WHERE address = ?", (rcpt,))
    try:
        space.submit("operator-a", sender, [rcpt], "trop grand")
        # After B's processed MDN (it took the message), its DSN: a failure corrects that notice.
        dsn = wait(space.node("operator-a"), sender, f"Final-Recipient: rfc822; {rcpt}\r\nAction: failed".encode())
    finally:
        with sqlite3.connect(space.node("operator-b").data / "mssgw.db", timeout=30) as db:
            db.execute("UPDATE accounts SET quota_bytes = NULL WHERE address = ?", (rcpt,))
    assert f"From: Postmaster <MAILER-DAEMON@{B}>\r\n".encode() in dsn
    assert b"Status: 5.2.3\r\n" in dsn
    assert f"Authentication-Results: mail.{A};\r\n smime=pass body.smime-identifier={B}\r\n".encode() in dsn
    verified = space.node("operator-a").cli("audit", "search", "--event", "smime.verified", "--json").json()
    assert verified[-1]["response"]["binding"] == "domain"  # type: ignore[index]


def audited(node: NodeDir, event: str, key: str, value: str, timeout: float = 30) -> list[dict[str, Any]]:
    """The `event` records whose response has `key` = `value`, once there is one."""
    deadline = time.monotonic() + timeout
    while True:
        records = node.cli("audit", "search", "--event", event, "--json").json()
        found = [r for r in records if r["response"].get(key) == value]  # type: ignore[union-attr]
        if found or time.monotonic() > deadline:
            return found  # type: ignore[return-value]
        time.sleep(0.3)


def tracked_message(sender: str, rcpt: str, *extra: str) -> tuple[str, bytes]:
    mid = f"<suivi.{secrets.token_hex(6)}@{A}>"
    head = [f"From: {sender}", f"To: {rcpt}", "Subject: Suivi", f"Message-ID: {mid}", *extra]
    return mid, ("\r\n".join(head) + "\r\n\r\nSuivi du patient.\r\n").encode()


def test_a_relayed_message_gets_its_sender_one_processed_notice(space: TrustSpace) -> None:
    """Domain brief §7: B sends a signed, encrypted processed MDN for the message it accepted; A binds it to
    B's domain certificate, matches it to the message it relayed, and gives it to the sender, once."""
    sender, rcpt = f"claire.martin@{A}", f"paul.durand@{B}"
    mid, raw = tracked_message(sender, rcpt)
    space.submit_raw("operator-a", sender, [rcpt], raw)
    notice = wait(space.node("operator-a"), sender, f"Original-Message-ID: {mid}\r\n".encode())
    head = notice.split(b"\r\n\r\n", 1)[0].decode()
    assert f"\r\nFrom: {rcpt}\r\nTo: {sender}\r\n" in head
    assert f"\r\nIn-Reply-To: {mid}\r\n" in head
    assert "report-type=disposition-notification" in head
    assert f"Authentication-Results: mail.{A};\r\n smime=pass body.smime-identifier={B}\r\n" in head
    assert b"Disposition: automatic-action/MDN-sent-automatically; processed\r\n" in notice
    assert b"Suivi du patient" not in notice  # never the content
    [queued] = audited(space.node("operator-b"), "notice.mdn.queued", "message_id", mid)
    assert queued["response"]["to"] == sender
    [tracked] = audited(space.node("operator-a"), "notice.tracked", "message_id", mid)
    assert tracked["response"]["rcpts"] == [rcpt]
    received = space.node("operator-a").cli("audit", "search", "--event", "notice.received", "--json").json()
    assert received[-1]["response"]["verdicts"] == {rcpt: "given"}  # type: ignore[index]
    # The notice itself gets no notice back: A queued no MDN for it (null sender).
    [notice_id] = [line[12:] for line in head.split("\r\n") if line.startswith("Message-ID: ")]
    assert notice_id.startswith("<mdn.")
    assert audited(space.node("operator-a"), "notice.mdn.queued", "message_id", notice_id, timeout=2) == []
    assert [b for b in inbox(space.node("operator-a"), sender) if mid.encode() in b] == [notice]


def test_asking_for_the_dispatched_notice_gives_that_one_and_holds_processed_back(space: TrustSpace) -> None:
    sender, rcpt = f"lucas.bernard@{A}", f"paul.durand@{B}"
    options = "Disposition-Notification-Options: X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true"
    mid, raw = tracked_message(sender, rcpt, options)
    space.submit_raw("operator-a", sender, [rcpt], raw)
    notice = wait(space.node("operator-a"), sender, f"Original-Message-ID: {mid}\r\n".encode())
    assert b"; dispatched\r\nX-DIRECT-FINAL-DESTINATION-DELIVERY:\r\n" in notice
    [dropped] = audited(space.node("operator-a"), "notice.dropped", "original_message_id", mid)
    # Processed came first (held back: the sender asked for more) or after (late): either way, not given.
    assert dropped["response"]["verdicts"][rcpt] in ("intermediate", "late")
    [queued] = audited(space.node("operator-b"), "notice.mdn.queued", "message_id", mid)
    assert len(queued["response"]["mdn_queue_ids"]) == 2  # processed and dispatched, with the delivery
    assert [b for b in inbox(space.node("operator-a"), sender) if mid.encode() in b] == [notice]


def test_no_mdn_answers_an_automatic_message_or_a_read_receipt(space: TrustSpace) -> None:
    """RFC 3834 §2: B's user's automatic reply gets no MDN from A. A mail client's read receipt, sent from the
    user's own address (not the null sender), is judged as a notice all the same: not ours to track
    (`displayed`), it passes through to the sender, and gets no MDN either."""
    sender, rcpt = f"paul.durand@{B}", f"claire.martin@{A}"
    auto_mid = f"<auto.{secrets.token_hex(6)}@{B}>"
    auto = (
        f"From: {sender}\r\nTo: {rcpt}\r\nSubject: Absent\r\nMessage-ID: {auto_mid}\r\n"
        "Auto-Submitted: auto-replied\r\n\r\nAbsent.\r\n"
    ).encode()
    space.submit_raw("operator-b", sender, [rcpt], auto)
    wait(space.node("operator-a"), rcpt, f"Message-ID: {auto_mid}".encode())
    # claire's message to paul, then paul's client's read receipt for it.
    mid, raw = tracked_message(rcpt, sender)
    space.submit_raw("operator-a", rcpt, [sender], raw)
    wait(space.node("operator-a"), rcpt, f"Original-Message-ID: {mid}\r\nDisposition: automatic-action".encode())
    receipt_mid = f"<lu.{secrets.token_hex(6)}@{B}>"
    receipt = (
        f"From: {sender}\r\nTo: {rcpt}\r\nSubject: Lu\r\nMessage-ID: {receipt_mid}\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=disposition-notification; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nLu.\r\n"
        "--b\r\nContent-Type: message/disposition-notification\r\n\r\n"
        f"Reporting-UA: poste; Thunderbird\r\nFinal-Recipient: rfc822;{sender}\r\nOriginal-Message-ID: {mid}\r\n"
        "Disposition: manual-action/MDN-sent-manually; displayed\r\n\r\n--b--\r\n"
    ).encode()
    space.submit_raw("operator-b", sender, [rcpt], receipt)
    wait(space.node("operator-a"), rcpt, f"Message-ID: {receipt_mid}".encode())
    judged = audited(space.node("operator-a"), "notice.received", "original_message_id", mid)
    assert [r["response"]["verdicts"] for r in judged] == [{sender: "given"}, {sender: "passthrough"}]
    for answered in (auto_mid, receipt_mid):
        assert audited(space.node("operator-a"), "notice.mdn.queued", "message_id", answered, timeout=2) == []


def test_a_message_the_professional_signed_is_encrypted_and_verified_across(space: TrustSpace) -> None:
    # End-to-end mode: claire's mail client signs with her key (openssl here); A encrypts without a
    # second signature; B verifies her own signature.
    sender, rcpt = f"claire.martin@{A}", f"paul.durand@{B}"
    box = space.mailbox(sender)
    plain = b"Subject: Avis de Claire\nContent-Type: text/plain\n\nAvis signe.\n"
    signed = subprocess.run(
        ["openssl", "cms", "-sign", "-md", "sha256", "-signer", box["certificate"], "-inkey", box["key"],
         "-from", sender, "-to", rcpt],
        input=plain, capture_output=True, check=True, timeout=60,
    ).stdout.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # fmt: skip
    space.submit_raw("operator-a", sender, [rcpt], signed)
    got = wait(space.node("operator-b"), rcpt, b"Avis sign")
    head = got.split(b"\r\n\r\n", 1)[0].decode()
    serial = (
        subprocess.run(
            ["openssl", "x509", "-noout", "-serial", "-in", box["certificate"]],
            capture_output=True,
            check=True,
            text=True,
        )
        .stdout.strip()
        .split("=")[1]
    )
    assert f"smime=pass body.smime-identifier={sender}\r\n body.smime-serial={serial.lstrip('0')}\r\n" in head
    protected = space.node("operator-a").cli("audit", "search", "--event", "smime.protected", "--json").json()
    assert protected[-1]["response"]["signer_serial"] == ""  # type: ignore[index]  # not signed again by A
