"""Interoperability with real mail programs run as subprocesses: mbsync (isync) and neomutt in batch mode.

TLS is always used and the certificate is always verified against the node's root (`box.gw.root`)
only, never the system store: the node certificate names `localhost` and 127.0.0.1 besides the mail
domain (`mssgw init` adds them when the node listens on 127.0.0.1), so no client needs its host
check turned off.
- mbsync (isync 1.4) compares the host name only with DNS names of the certificate, not IP
  addresses: it connects to `Host localhost` (resolved by the system, which maps it to 127.0.0.1),
  builds the chain from `CertificateFile` (the root, `SystemCertificates no`) and checks `localhost`
  against the certificate. A run with `Host 127.0.0.1` or without the root must fail (tested).
- neomutt (Debian's build uses GnuTLS) checks 127.0.0.1 against the certificate's IP address, and the
  chain against `ssl_ca_certificates_file` (the root). When either check fails it asks on the terminal,
  which a test sees as the "SSL Certificate check" screen (tested).

Both programs are skipped when they are not installed; `tests/run.sh` installs them (isync, neomutt).
"""

from __future__ import annotations

import imaplib
import os
import pty
import re
import select
import shutil
import signal
import socket
import subprocess
import termios
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from tests.imap.conftest import Box, message
from tests.smtp.conftest import PASSWORD

MBSYNC = shutil.which("mbsync")
NEOMUTT = shutil.which("neomutt")
needs_mbsync = pytest.mark.skipif(MBSYNC is None, reason="mbsync is not installed (Debian package isync)")
needs_neomutt = pytest.mark.skipif(NEOMUTT is None, reason="neomutt is not installed (Debian package neomutt)")


def lf(raw: bytes) -> bytes:
    """A message as mail programs keep it on disk: LF line ends (IMAP carries CRLF)."""
    return raw.replace(b"\r\n", b"\n")


# mbsync


def mbsyncrc(
    box: Box,
    home: Path,
    *,
    ssl: str = "IMAPS",
    host: str = "localhost",
    ca: Path | None = None,
    system: bool = False,
    auth: str = "PLAIN",
) -> Path:
    """One IMAP store (the box) and one Maildir tree under `home`, synchronised both ways, all folders.

    `AuthMechs PLAIN` by default: with mbsync's own default (`*`) it picks AUTH=EXTERNAL whenever the
    server offers it, even without a client certificate (see `test_mbsync_default_auth_mechs`)."""
    port = box.gw.port("imaps" if ssl == "IMAPS" else "imap")
    ca_line = f'CertificateFile "{ca}"' if ca else "# no CertificateFile"  # a blank line would end the section
    config = home / "mbsyncrc"
    (home / "mail").mkdir(parents=True, exist_ok=True)
    (home / "state").mkdir(exist_ok=True)
    config.write_text(
        f"""\
IMAPAccount gw
Host {host}
Port {port}
User {box.address}
Pass {PASSWORD}
AuthMechs {auth}
SSLType {ssl}
SSLVersions TLSv1.2 TLSv1.3
SystemCertificates {"yes" if system else "no"}
{ca_line}
Timeout 20

IMAPStore far
Account gw

MaildirStore near
Path {home}/mail/
Inbox {home}/mail/INBOX
SubFolders Verbatim

Channel gw
Far :far:
Near :near:
Patterns *
Create Both
Remove None
Expunge Both
Sync All
CopyArrivalDate yes
SyncState {home}/state/
"""
    )
    return config


def mbsync(config: Path) -> subprocess.CompletedProcess[str]:
    assert MBSYNC is not None
    argv = [MBSYNC, "-V", "-c", str(config), "gw"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def synced(config: Path) -> None:
    run = mbsync(config)
    assert run.returncode == 0, run.stdout + run.stderr
    problems = [line for line in run.stderr.splitlines() if re.search(r"error|warning|fail", line, re.I)]
    assert not problems, run.stdout + run.stderr


def without_tuid(raw: bytes) -> bytes:
    """A message mbsync copied, less the one header it adds to every message it copies (either way):
    `X-TUID: <12 characters>` at the end of the header, how it finds the copy again."""
    eol = b"\r\n" if b"\r\n" in raw else b"\n"
    head, sep, body = raw.partition(eol + eol)
    return re.sub(rb"\r?\nX-TUID: [A-Za-z0-9+/]{12}$", b"", head) + sep + body


def maildir(folder: Path) -> dict[bytes, Path]:
    """A Maildir folder's messages: content (less mbsync's X-TUID) -> file."""
    return {without_tuid(p.read_bytes()): p for sub in ("new", "cur") for p in sorted((folder / sub).iterdir())}


def maildir_flags(path: Path) -> str:
    return path.name.partition(":2,")[2]


def set_maildir_flags(path: Path, flags: str) -> Path:
    """What a Maildir mail reader does to change a message's flags: rename it into cur/ with sorted flags."""
    target = path.parent.parent / "cur" / f"{path.name.partition(':2,')[0]}:2,{''.join(sorted(flags))}"
    path.rename(target)
    return target


def pushed(client: imaplib.IMAP4) -> dict[str, list[bytes]]:
    """What a session selected on a folder is told, at its next NOOP, of other sessions' changes."""
    assert client.noop()[0] == "OK"
    return {name: client.response(name)[1] for name in ("EXISTS", "EXPUNGE", "FETCH")}


def seen_by(client: imaplib.IMAP4) -> list[tuple[int, set[str]]]:
    """(UID, flags) by sequence number in the selected folder; \\Recent left out (one session has it)."""
    typ, data = client.fetch("1:*", "(UID FLAGS)")
    assert typ == "OK"
    out = []
    for item in data:
        found = re.match(rb"\d+ \(UID (\d+) FLAGS \(([^)]*)\)\)", item if isinstance(item, bytes) else b"")
        assert found, data
        out.append((int(found.group(1)), set(found.group(2).decode().split()) - {"\\Recent"}))
    return out


def server_view(client: imaplib.IMAP4, folder: str) -> dict[bytes, set[str]]:
    """Exact message bytes -> flags, read over IMAP (\\Recent left out: EXAMINE shows it, RFC 3501 §6.3.2)."""
    typ, _ = client.select(f'"{folder}"', readonly=True)
    assert typ == "OK", folder
    typ, data = client.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
    assert typ == "OK"
    out = {}
    for item in data:
        if isinstance(item, tuple):
            flags = re.search(rb"FLAGS \(([^)]*)\)", item[0])
            assert flags is not None, item[0]
            out[item[1]] = set(flags.group(1).decode().split()) - {"\\Recent"}
    return out


@needs_mbsync
def test_mbsync_synchronises_a_maildir_both_ways(box: Box, tmp_path: Path) -> None:
    a = message(1, subject="Un: arrives on the server, flagged locally")
    b = message(2, subject="Deux: read, deleted locally")
    c = message(3, subject="Trois: flagged and answered on the server")
    d = message(4, subject="Quatre: in a folder made on the server")
    box.put(a)
    box.put(b, flags=["\\Seen"])
    box.put(c)
    client = box.login()
    assert client.create("Patients")[0] == "OK"
    assert client.create("Patients/Dupont")[0] == "OK"
    box.put(d, folder="Patients/Dupont")
    config = mbsyncrc(box, tmp_path, ca=box.gw.root)
    mail = tmp_path / "mail"

    synced(config)
    inbox = maildir(mail / "INBOX")
    assert set(inbox) == {lf(a), lf(b), lf(c)}
    assert [maildir_flags(inbox[lf(m)]) for m in (a, b, c)] == ["", "S", ""]
    assert set(maildir(mail / "Patients" / "Dupont")) == {lf(d)}
    assert {p.name for p in mail.iterdir()} >= {"INBOX", "Patients", "Sent", "Drafts", "Trash", "Junk", "Archive"}

    # Local changes: a new message, a new folder with a message, a flag change, a deletion.
    e = b"From: poste@example.org\nSubject: Cinq: written locally\nMessage-ID: <e5@example.org>\n\nLocal.\n"
    (mail / "INBOX" / "new" / "1772442930.M1P1.poste").write_bytes(e)
    f = b"From: poste@example.org\nSubject: Six: in a folder made locally\n\nClasse.\n"
    for sub in ("cur", "new", "tmp"):
        (mail / "Locale" / sub).mkdir(parents=True)
    (mail / "Locale" / "new" / "1772442931.M2P1.poste").write_bytes(f)
    set_maildir_flags(inbox[lf(a)], "FS")
    set_maildir_flags(inbox[lf(b)], "ST")
    # A change on the server, made by a second session that stays open and watches mbsync's.
    watcher = box.login()
    watcher.select("INBOX")
    assert watcher.uid("STORE", "3", "+FLAGS", "(\\Flagged \\Answered)")[0] == "OK"

    synced(config)
    told = pushed(watcher)
    assert told["EXPUNGE"] == [b"2"]  # b
    assert any(re.match(rb"1 \(.*FLAGS \(\\Flagged \\Seen\)", x or b"") for x in told["FETCH"]), told
    assert told["EXISTS"]  # e
    assert seen_by(watcher) == [(1, {"\\Flagged", "\\Seen"}), (3, {"\\Answered", "\\Flagged"}), (4, set())]
    watcher.logout()

    # On the server, the exact bytes: CRLF line ends, plus mbsync's X-TUID header in what it uploaded.
    server = server_view(client, "INBOX")
    assert {without_tuid(m): flags for m, flags in server.items()} == {
        a: {"\\Flagged", "\\Seen"},
        c: {"\\Answered", "\\Flagged"},
        e.replace(b"\n", b"\r\n"): set(),
    }
    assert a in server  # untouched
    assert c in server
    assert {without_tuid(m) for m in server_view(client, "Locale")} == {f.replace(b"\n", b"\r\n")}
    client.logout()
    inbox = maildir(mail / "INBOX")
    assert set(inbox) == {lf(a), lf(c), e}
    assert maildir_flags(inbox[lf(c)]) == "FR"
    assert maildir_flags(inbox[lf(a)]) == "FS"
    assert ",U=4" in inbox[e].name  # e's server UID, from APPENDUID

    # Nothing left to do: a third run changes nothing on either side.
    before = sorted(p.relative_to(mail) for p in mail.rglob("*") if p.is_file())
    synced(config)
    assert sorted(p.relative_to(mail) for p in mail.rglob("*") if p.is_file()) == before


@needs_mbsync
def test_mbsync_over_starttls_verifies_the_chain_and_the_name(box: Box, tmp_path: Path) -> None:
    body = message(1, subject="Via mbsync STARTTLS")
    box.put(body)
    synced(mbsyncrc(box, tmp_path / "ok", ssl="STARTTLS", ca=box.gw.root))
    assert set(maildir(tmp_path / "ok" / "mail" / "INBOX")) == {lf(body)}

    # Without the node's root (system store only), the chain does not verify.
    run = mbsync(mbsyncrc(box, tmp_path / "no-root", ssl="STARTTLS", system=True))
    assert run.returncode != 0
    assert "unable to get local issuer certificate" in run.stdout + run.stderr
    assert "Logging in" not in run.stdout
    # isync 1.4 does not match IP addresses against the certificate's IP SANs: 127.0.0.1 is refused.
    run = mbsync(mbsyncrc(box, tmp_path / "by-ip", ssl="STARTTLS", host="127.0.0.1", ca=box.gw.root))
    assert run.returncode != 0
    assert "certificate owner does not match hostname 127.0.0.1" in run.stdout + run.stderr
    assert "Logging in" not in run.stdout


@needs_mbsync
def test_mbsync_default_auth_mechs(box: Box, tmp_path: Path) -> None:
    """mbsync as most people configure it: `AuthMechs *`, no client certificate. Found by this test: with
    AUTH=EXTERNAL offered to every TLS client, mbsync 1.4 picked it, failed, and did not fall back."""
    body = message(1, subject="Default AuthMechs")
    box.put(body)
    run = mbsync(mbsyncrc(box, tmp_path, auth="*", ca=box.gw.root))
    assert run.returncode == 0, run.stdout + run.stderr
    assert set(maildir(tmp_path / "mail" / "INBOX")) == {lf(body)}


# neomutt


def on_a_terminal(argv: list[str], home: Path, *, timeout: float = 30) -> tuple[int | None, str]:
    """Run a full-screen program on a pseudo-terminal (80x24) until it exits; its screen output.

    Stops it early (return code None) if it shows neomutt's certificate question, which would wait
    for a key forever, or after `timeout` seconds."""
    master, slave = pty.openpty()
    termios.tcsetwinsize(slave, (24, 80))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TERM": "xterm", "LANG": "C.UTF-8"}
    proc = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, cwd=home, env=env, start_new_session=True, close_fds=True
    )
    os.close(slave)
    screen = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and b"SSL Certificate check" not in screen:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the program exited and closed the terminal
                    break
                if not chunk:
                    break
                screen += chunk
            elif proc.poll() is not None:
                break
        try:
            return proc.wait(timeout=1), screen.decode(errors="replace")
        except subprocess.TimeoutExpired:
            return None, screen.decode(errors="replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(master)


@contextmanager
def relay(port: int, host: str = "127.0.0.2") -> Iterator[int]:
    """A TCP relay from `host` (a new port) to 127.0.0.1:`port`: the server under an address its
    certificate does not name."""
    listener = socket.create_server((host, 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    opened: list[socket.socket] = [listener]

    def pump(src: socket.socket, dst: socket.socket) -> None:
        with suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def serve() -> None:
        while not stop.is_set():
            try:
                near, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            far = socket.create_connection(("127.0.0.1", port), timeout=30)
            opened.extend((near, far))
            threading.Thread(target=pump, args=(near, far), daemon=True).start()
            threading.Thread(target=pump, args=(far, near), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for s in opened:
            s.close()


def muttrc(box: Box, home: Path, *, ca: Path, url: str | None = None) -> Path:
    """neomutt on the box's INBOX over implicit TLS, nothing cached, nothing asked."""
    url = url or f"imaps://127.0.0.1:{box.gw.port('imaps')}/"
    config = home / "muttrc"
    config.write_text(
        f"""\
set ssl_ca_certificates_file="{ca}"
set certificate_file="{home}/certificates"
set ssl_verify_host=yes
set ssl_verify_dates=yes
set ssl_force_tls=yes
set imap_user="{box.address}"
set imap_pass="{PASSWORD}"
set folder="{url}"
set spoolfile="+INBOX"
set header_cache=""
set message_cachedir=""
set imap_check_subscribed=no
set mail_check=60
set mail_check_stats=no
set sort=unsorted
set resolve=no
set wait_key=no
set delete=yes
set quit=yes
set confirmappend=no
set confirmcreate=no
set pipe_decode=no
"""
    )
    return config


def neomutt(config: Path, home: Path, keys: str) -> tuple[int | None, str, str]:
    """neomutt in batch: opens the spool folder, types `keys`, quits. Return code, screen, debug log."""
    assert NEOMUTT is not None
    code, screen = on_a_terminal(
        [NEOMUTT, "-n", "-F", str(config), "-d", "5", "-l", str(home / "log"), "-e", f'push "{keys}"'], home
    )
    logs = sorted(home.glob("log*"))
    return code, screen, logs[-1].read_text(errors="replace") if logs else ""


@needs_neomutt
def test_neomutt_batch_reads_flags_deletes_and_saves(box: Box, tmp_path: Path) -> None:
    a = message(1, subject="Un: read", body="Resultats d'analyse: normaux.")
    b = message(2, subject="Deux: flagged")
    c = message(3, subject="Trois: deleted")
    d = message(4, subject="Quatre: saved to Archive")
    for m in (a, b, c, d):
        box.put(m)
    watcher = box.login()  # a second session, open while neomutt works
    watcher.select("INBOX")
    out = tmp_path / "read.eml"
    keys = (
        f"<pipe-message>cat > {out}<enter>"
        "<next-entry><flag-message>"
        "<next-entry><delete-message>"
        "<next-entry><save-message>=Archive<enter>"
        "<sync-mailbox><quit>"
    )
    code, screen, log = neomutt(muttrc(box, tmp_path, ca=box.gw.root), tmp_path, keys)
    assert "SSL Certificate check" not in screen, screen
    assert code == 0, log[-4000:]
    assert out.read_bytes() == lf(a)
    assert "tls_negotiate() SSL/TLS connection using TLS1." in log
    errors = [line for line in log.splitlines() if "<E>" in line or re.search(r"< a\d+ (NO|BAD)", line)]
    assert not errors, errors

    told = pushed(watcher)
    # c (3) and d (4) expunged together: either order of EXPUNGE responses is valid, numbers differ.
    assert told["EXPUNGE"] in ([b"4", b"3"], [b"3", b"3"]), told
    assert any(re.match(rb"2 \(.*FLAGS \(.*\\Flagged", x or b"") for x in told["FETCH"]), told
    # neomutt marks the unread messages it listed as "Old" (a keyword) when it leaves the folder.
    assert seen_by(watcher) == [(1, {"Old"}), (2, {"\\Flagged", "Old"})]
    watcher.logout()
    client = box.login()
    assert server_view(client, "INBOX") == {a: {"Old"}, b: {"\\Flagged", "Old"}}
    assert server_view(client, "Archive") == {d: set()}
    client.logout()


@needs_neomutt
@pytest.mark.parametrize("wrong", ["root", "address"])
def test_neomutt_stops_at_a_certificate_it_cannot_verify(box: Box, tmp_path: Path, wrong: str) -> None:
    """Another root, or an address the certificate does not name (127.0.0.2, relayed to the node)."""
    box.put(message(1))
    root = box.gw.root
    if wrong == "root":
        root = tmp_path / "other-root.pem"
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"),
                *("-days", "1", "-subj", "/CN=Some other root", "-keyout", str(tmp_path / "k.pem")),
                *("-out", str(root)),
            ],
            capture_output=True,
            check=True,
            timeout=30,
        )
    out = tmp_path / "read.eml"
    with relay(box.gw.port("imaps")) as port:
        url = f"imaps://127.0.0.2:{port}/" if wrong == "address" else None
        code, screen, log = neomutt(
            muttrc(box, tmp_path, ca=root, url=url), tmp_path, f"<pipe-message>cat > {out}<enter><quit>"
        )
    assert code is None  # stopped at the question
    assert "SSL Certificate check" in screen
    if wrong == "address":
        assert "WARNING: Server hostname does not match certificate" in screen
    assert not out.exists()
    assert "AUTHENTICATE" not in log  # the password never left
