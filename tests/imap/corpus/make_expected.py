"""Record Dovecot's FETCH answers for the corpus into `dovecot-expected.json` (run once, by hand).

    sudo apt-get install -y dovecot-imapd      # Debian 12: Dovecot 2.3.19.1
    python tests/imap/corpus/make_expected.py  # as root or as any user

The test suite (`tests/imap/test_mime.py`) compares `gateway.imap.mime` with the recorded answers and
needs no Dovecot. Re-run this script only when the corpus changes, and review the diff of the JSON.

How Dovecot is driven
- No daemon and no listening socket: the `imap` binary is started directly in PREAUTH mode with a
  private configuration in a temporary directory (`mail_location = maildir:`, `ssl = no`) and spoken
  to over its stdin/stdout, which is exactly the session an IMAP login would give. As root the binary
  runs as `nobody` (Dovecot refuses mail access as root); the process ends with LOGOUT and is waited
  for, so nothing is left running.
- Each `*.eml` file is appended byte for byte (LITERAL+), in name order, then fetched with ENVELOPE,
  BODY, BODYSTRUCTURE, RFC822.SIZE and one FETCH per section: the whole message, HEADER, TEXT,
  HEADER.FIELDS(.NOT), every part number up to 3 levels derived from the BODYSTRUCTURE (with .MIME,
  .1 for leaves, and .HEADER, .TEXT, .HEADER.FIELDS for message/rfc822 parts), a few nonexistent part
  numbers and some partials.

Output format: `{"dovecot_version": ..., "messages": {file name: {"envelope", "body",
"bodystructure", "size", "sections": {section text: value}}}}`. Every value is the exact IMAP bytes
Dovecot sent (a structure as written on the wire, literals included; a section's octets without the
literal prefix; `null` for NIL) decoded as Latin-1, so that any octet string round-trips through JSON
(`value.encode("latin-1")` gives the bytes back).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

HERE = Path(__file__).resolve().parent
OUT = HERE / "dovecot-expected.json"
IMAP_BIN = "/usr/lib/dovecot/imap"

CONFIG = """\
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
ssl = no
mail_location = maildir:{d}/home/Maildir
first_valid_uid = 1
first_valid_gid = 1
"""

Value = bytes | list["Value"] | None


class Imap:
    """A minimal IMAP client over a pipe that keeps the raw bytes of every response."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.w: IO[bytes] = self.proc.stdin
        self.r: IO[bytes] = self.proc.stdout
        self.n = 0
        greeting = self.r.readline()
        assert greeting.startswith(b"* PREAUTH"), greeting

    def _response(self) -> bytes:
        """One response line with its literals inlined as sent."""
        out = b""
        while True:
            line = self.r.readline()
            if not line:
                raise EOFError("imap process ended")
            out += line
            m = re.search(rb"\{(\d+)\}\r\n$", line)
            if not m:
                return out
            out += self.r.read(int(m.group(1)))

    def command(self, cmd: bytes) -> list[bytes]:
        self.n += 1
        tag = b"a%d" % self.n
        self.w.write(tag + b" " + cmd + b"\r\n")
        self.w.flush()
        untagged: list[bytes] = []
        while True:
            resp = self._response()
            if resp.startswith(tag + b" "):
                if not resp.startswith(tag + b" OK"):
                    raise RuntimeError(resp)
                return untagged
            untagged.append(resp)

    def close(self) -> None:
        self.command(b"LOGOUT")
        self.w.close()
        self.proc.wait(timeout=10)


def parse_value(data: bytes, i: int) -> tuple[Value, int]:
    """Parse one IMAP value at `data[i:]`: NIL, number/atom, quoted string, literal or list."""
    c = data[i : i + 1]
    if c == b"(":
        items: list[Value] = []
        i += 1
        while data[i : i + 1] != b")":
            if data[i : i + 1] == b" ":
                i += 1
                continue
            v, i = parse_value(data, i)
            items.append(v)
        return items, i + 1
    if c == b'"':
        out = bytearray()
        i += 1
        while data[i : i + 1] != b'"':
            if data[i : i + 1] == b"\\":
                i += 1
            out += data[i : i + 1]
            i += 1
        return bytes(out), i + 1
    if c == b"{":
        m = re.compile(rb"\{(\d+)\}\r\n").match(data, i)
        assert m
        n = int(m.group(1))
        return data[m.end() : m.end() + n], m.end() + n
    m = re.compile(rb"[^ ()]+").match(data, i)
    assert m, data[i:]
    atom = m.group(0)
    return (None if atom == b"NIL" else atom), m.end()


def fetch_items(resp: bytes) -> dict[bytes, tuple[bytes, Value]]:
    """`* n FETCH (NAME value ...)` -> {NAME: (raw value bytes, parsed value)}."""
    m = re.match(rb"\* \d+ FETCH \(", resp)
    assert m, resp
    i = m.end()
    out = {}
    while resp[i : i + 1] != b")":
        if resp[i : i + 1] == b" ":
            i += 1
            continue
        # Item names such as BODY[HEADER.FIELDS (A B)]<0> contain spaces inside the brackets.
        nm = re.compile(rb"[A-Z0-9.]+(\[[^\]]*\](<\d+>)?)?").match(resp, i)
        assert nm, resp[i:]
        name = nm.group(0)
        start = nm.end() + 1
        value, i = parse_value(resp, start)
        out[name] = (resp[start:i], value)
    return out


def part_paths(bs: Value) -> list[tuple[tuple[int, ...], bool]]:
    """Part numbers (RFC 3501 §6.4.5) found in a BODYSTRUCTURE, each with "is message/rfc822"."""
    out: list[tuple[tuple[int, ...], bool]] = []

    def is_multi(node: Value) -> bool:
        return isinstance(node, list) and bool(node) and isinstance(node[0], list)

    def is_rfc822(node: Value) -> bool:
        return (
            isinstance(node, list)
            and isinstance(node[0], bytes)
            and isinstance(node[1], bytes)
            and node[0].lower() == b"message"
            and node[1].lower() in (b"rfc822", b"global")
        )

    def children(node: Value, prefix: tuple[int, ...]) -> None:
        assert isinstance(node, list)
        kids = []
        for k in node:  # the body parts come first, then the subtype (RFC 3501 §7.4.2)
            if not isinstance(k, list):
                break
            kids.append(k)
        for n, kid in enumerate(kids, 1):
            leaf(kid, (*prefix, n))
        out.append(((*prefix, len(kids) + 1), False))  # one past the last: nonexistent

    def leaf(node: Value, path: tuple[int, ...]) -> None:
        out.append((path, is_rfc822(node)))
        if is_multi(node):
            children(node, path)
        elif is_rfc822(node):
            assert isinstance(node, list)
            inner = node[8]
            if is_multi(inner):
                children(inner, path)
            else:
                leaf(inner, (*path, 1))

    if is_multi(bs):
        children(bs, ())
    else:
        leaf(bs, (1,))
        out.append(((2,), False))
    return out


def sections_for(bs: Value) -> list[bytes]:
    secs = [
        b"",
        b"HEADER",
        b"TEXT",
        b"HEADER.FIELDS (FROM SUBJECT DATE X-EMPTY)",
        b"HEADER.FIELDS.NOT (FROM SUBJECT RECEIVED)",
        b"HEADER.FIELDS (X-NONEXISTENT)",
        b"HEADER.FIELDS (X-SPACE-BEFORE-COLON x-LowerCase MESSAGE-ID CONTENT-ID)",
        b"HEADER.FIELDS.NOT (CONTENT-TYPE MIME-VERSION)",
        b"1.HEADER",
        b"99",
        b"1.99",
    ]
    for path, rfc822 in part_paths(bs):
        if len(path) > MAX_DEPTH:
            continue
        p = ".".join(map(str, path)).encode()
        secs += [p, p + b".MIME"]
        if not rfc822:
            secs.append(p + b".1")  # a non-multipart part is its own part 1
        if rfc822:
            secs += [
                p + b".HEADER",
                p + b".TEXT",
                p + b".HEADER.FIELDS (SUBJECT FROM)",
                p + b".HEADER.FIELDS.NOT (SUBJECT)",
            ]
    return list(dict.fromkeys(secs))  # in order, without repeats


MAX_DEPTH = 3  # part numbers deeper than this are not fetched (41/42 nest 105 levels)
PARTIALS = [(b"", 0, 20), (b"", 20, 10), (b"TEXT", 5, 1_000_000), (b"", 1_000_000, 10), (b"1", 0, 0)]


def main() -> None:
    if not os.path.exists(IMAP_BIN):
        sys.exit(f"{IMAP_BIN} not found: apt-get install dovecot-imapd")
    version = subprocess.run(["dovecot", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    files = sorted(HERE.glob("*.eml"))
    with tempfile.TemporaryDirectory(prefix="mssgw-dovecot-") as d:
        (Path(d) / "home").mkdir()
        conf = Path(d) / "dovecot.conf"
        conf.write_text(CONFIG.format(d=d))
        env = {"HOME": f"{d}/home", "USER": "corpus", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        argv = [IMAP_BIN, "-c", str(conf)]
        if os.geteuid() == 0:
            os.chmod(d, 0o711)  # noqa: S103 - the imap process runs as nobody and must reach its home
            shutil.chown(f"{d}/home", "nobody", "nogroup")
            argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv]
        imap = Imap(argv, env)
        try:
            for f in files:
                raw = f.read_bytes()
                imap.command(b"APPEND INBOX {%d+}\r\n" % len(raw) + raw)
            imap.command(b"SELECT INBOX")
            messages = {}
            for seq, f in enumerate(files, 1):
                (resp,) = imap.command(b"FETCH %d (ENVELOPE BODY BODYSTRUCTURE RFC822.SIZE)" % seq)
                items = fetch_items(resp)
                bs_raw, bs = items[b"BODYSTRUCTURE"]
                sections: dict[str, str | None] = {}
                for sec in sections_for(bs):
                    (resp,) = imap.command(b"FETCH %d (BODY.PEEK[%s])" % (seq, sec))
                    ((_, value),) = fetch_items(resp).values()
                    assert value is None or isinstance(value, bytes)
                    sections[sec.decode()] = None if value is None else value.decode("latin-1")
                for sec, start, count in PARTIALS:
                    (resp,) = imap.command(b"FETCH %d (BODY.PEEK[%s]<%d.%d>)" % (seq, sec, start, count))
                    ((_, value),) = fetch_items(resp).values()
                    assert value is None or isinstance(value, bytes)
                    key = f"{sec.decode()}<{start}.{count}>"
                    sections[key] = None if value is None else value.decode("latin-1")
                messages[f.name] = {
                    "envelope": items[b"ENVELOPE"][0].decode("latin-1"),
                    "body": items[b"BODY"][0].decode("latin-1"),
                    "bodystructure": bs_raw.decode("latin-1"),
                    "size": int(items[b"RFC822.SIZE"][0]),
                    "sections": sections,
                }
        finally:
            imap.close()
    doc = {
        "dovecot_version": version,
        "generated_by": "tests/imap/corpus/make_expected.py",
        "encoding": "every string is the IMAP octets decoded as Latin-1; null is NIL",
        "messages": messages,
    }
    OUT.write_text(json.dumps(doc, indent=1, ensure_ascii=True) + "\n")
    print(f"{OUT.name}: {len(messages)} messages, Dovecot {version}")


if __name__ == "__main__":
    main()
