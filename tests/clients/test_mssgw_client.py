"""mssgw-client, the professionals' reference client, between the two operators of the demo trust space:
signed and encrypted on the sender's machine, submitted on 587, read over IMAPS with aioimaplib, the
signer shown."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from certs.pki import TrustSpacePKI, write_bundle
from tests.smtp.test_federation import A, B, TrustSpace, wait

CLAIRE, PAUL = f"claire.martin@{A}", f"paul.durand@{B}"


def client(space: TrustSpace, user: str, *args: str | Path, body: str = "", p12: Path | None = None) -> tuple[int, str]:
    box = space.mailbox(user)
    op = next(o for o in space.creds["operators"] if any(m["address"] == user for m in o["mailboxes"]))
    keys = ["--p12", str(p12)] if p12 else ["--cert", box["certificate"], "--key", box["key"]]
    done = subprocess.run(
        [
            sys.executable, "-m", "clients.mssgw_client", "--user", user, *keys,
            "--ca", Path(box["certificate"]).parent / "chain.pem", "--crl-dir", str(space.root / "pki" / "crl"),
            "--smtp-port", str(op["ports"]["submission"]), "--imap-port", str(op["ports"]["imaps"]),
            *map(str, args),
        ],
        input=body, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "MSSGW_PASSWORD": box["password"], "MSSGW_P12_PASSWORD": "p12-secret"},
    )  # fmt: skip
    return done.returncode, (done.stdout + done.stderr).strip()


def test_claire_sends_from_her_machine_and_paul_reads_who_signed(space: TrustSpace) -> None:
    code, out = client(
        space, CLAIRE, "send", "--to", PAUL, "--subject", "Avis cardiologique", "--published", space.root / "published",
        body="Patient vu ce jour.\n",
    )  # fmt: skip
    assert (code, out) == (0, f"sent to {PAUL}: signed by {CLAIRE}, encrypted for 2 certificates")
    wait(space.node("operator-b"), PAUL, b"Subject: Avis cardiologique")
    code, listing = client(space, PAUL, "list")
    assert code == 0, listing
    line = next(x for x in listing.splitlines() if "Avis cardiologique" in x)
    serial = subprocess.run(
        ["openssl", "x509", "-noout", "-serial", "-in", space.mailbox(CLAIRE)["certificate"]],
        capture_output=True, text=True, check=True,
    ).stdout.strip().split("=")[1].lstrip("0")  # fmt: skip
    signer = f"{CLAIRE} (certificate {serial}), verified by mail.{B}"
    assert line.endswith(f"[{signer}]")
    uid = line.split()[0]
    code, shown = client(space, PAUL, "read", uid)
    assert code == 0, shown
    assert shown.splitlines()[:2] == [f"Signed-By: {signer}", f"From: {CLAIRE}"]
    assert "Subject: Avis cardiologique" in shown
    assert shown.endswith("Patient vu ce jour.")


def test_a_recipient_without_a_published_certificate_is_not_sent_to(space: TrustSpace, tmp_path: Path) -> None:
    code, out = client(
        space, CLAIRE, "send", "--to", "inconnu@cabinet-z.mssante.test", "--subject", "x", "--published", tmp_path,
        body="x\n",
    )  # fmt: skip
    assert (code, out) == (1, "mssgw-client: no usable certificate for inconnu@cabinet-z.mssante.test: no-certificate")


def test_keys_from_a_pkcs12(space: TrustSpace, tmp_path: Path) -> None:
    # A fresh certificate for claire in a PKCS#12, as a professional's card or key store exports it.
    issued = TrustSpacePKI(space.root / "pki").issue_address(CLAIRE)
    files = write_bundle(
        issued, tmp_path, name="claire", p12_password=b"p12-secret", root=TrustSpacePKI(space.root / "pki").root
    )
    code, out = client(
        space, CLAIRE, "send", "--to", PAUL, "--subject", "Depuis le PKCS12", "--published", space.root / "published",
        body="ok\n", p12=files["p12"],
    )  # fmt: skip
    assert (code, out) == (0, f"sent to {PAUL}: signed by {CLAIRE}, encrypted for 2 certificates")
    got = wait(space.node("operator-b"), PAUL, b"Subject: Depuis le PKCS12")
    assert f"body.smime-serial={issued.certificate.serial_number:X}\r\n".encode() in got
