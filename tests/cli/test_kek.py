"""`mssgw kek new|rewrap`: rotating the key-encryption key, run as the operator runs it (subprocesses), on a
node holding every kind of KEK-sealed item: mailbox data keys, a TOTP seed, a queued body."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import pyotp
import pytest

from gateway.node import Node
from gateway.queue.store import Queue
from gateway.store.crypto import DecryptionError, KeyEncryptionKey
from gateway.store.messages import MessageStore
from tests.cli.test_mailbox import DOCTOR, add_doctor
from tests.cli.test_queue import BODY, enqueue, on_node
from tests.conftest import NodeDir, run_cli
from tests.test_serve import start_node

LETTER = b"Subject: compte rendu\r\n\r\nCORPS-7f3a\r\n"


def key_id(path: Path) -> str:
    return KeyEncryptionKey(base64.b64decode(path.read_text())).key_id


def use_keys(node: NodeDir, current: Path, previous: list[Path]) -> None:
    """The node's configuration with `current` as kek_file and `previous` as previous_kek_files."""
    lines = [
        line
        for line in node.config.read_text().splitlines()
        if not line.startswith(("kek_file = ", "previous_kek_files = "))
    ]
    at = lines.index("[store]") + 1
    lines[at:at] = [f'kek_file = "{current}"', f"previous_kek_files = {json.dumps([str(p) for p in previous])}"]
    node.config.write_text("\n".join(lines) + "\n")


def state(node: NodeDir) -> tuple[bytes, bytes, bytes]:
    """The letter in the doctor's mailbox, the queued body and the doctor's TOTP seed, opened as the node
    opens them (DecryptionError when its keys cannot)."""

    async def go(n: Node) -> tuple[bytes, bytes, bytes]:
        store = MessageStore(n.mailboxes)
        [(mid,)] = await n.db.rows("SELECT id FROM messages WHERE address = :a", {"a": DOCTOR})
        [(qid,)] = await n.db.rows("SELECT id FROM queue_messages", {})
        [(seed,)] = await n.db.rows("SELECT totp_secret FROM accounts WHERE address = :a", {"a": DOCTOR})
        return (
            await store.get(DOCTOR, mid),
            await Queue(n.db, n.kek).body(qid),
            n.kek.open(seed, b"totp\0" + DOCTOR.encode()),
        )

    return on_node(node, go)


@pytest.fixture
def sealed(node: NodeDir) -> tuple[NodeDir, str]:
    """The node with a mailbox holding a letter, its TOTP seed, and a queued message; the seed."""
    add_doctor(node)
    seed = pyotp.parse_uri(node.cli("mailbox", "totp", DOCTOR, "--json").json()["otpauth_uri"]).secret  # type: ignore[index]
    on_node(node, lambda n: MessageStore(n.mailboxes).put(DOCTOR, LETTER))
    enqueue(node)
    return node, seed


def test_rotation_seals_everything_anew_and_the_old_key_can_go(sealed: tuple[NodeDir, str], tmp_path: Path) -> None:
    node, seed = sealed
    old = node.keys / "kek.key"
    new = tmp_path / "keys-2026" / "kek.key"
    r = node.cli("kek", "new", "--out", new, "--json")
    assert r.code == 0, r.err
    assert r.json() == {"path": str(new), "kek_id": key_id(new)}
    assert new.stat().st_mode & 0o777 == 0o600
    assert len(base64.b64decode(new.read_text())) == 32
    with sqlite3.connect(node.data / "mssgw.db") as conn:
        accounts = conn.execute("SELECT count(*) FROM accounts").fetchone()[0]
    assert accounts >= 1

    use_keys(node, new, [old])  # the new key seals, the old one still opens
    assert state(node) == (LETTER, BODY, seed.encode())
    r = node.cli("kek", "rewrap", "--json")
    assert r.code == 0, r.err
    assert r.json() == {
        "kek_id": key_id(new),
        "previous": [key_id(old)],
        "data_keys": accounts,
        "totp_seeds": 1,
        "queued_bodies": 1,
        "data_keys_by_kek": {key_id(new): accounts},
    }
    again = node.cli("kek", "rewrap")
    assert again.code == 0, again.err
    assert again.out.splitlines()[1:] == [
        "re-wrapped 0 data keys; re-sealed 0 TOTP seeds and 0 queued bodies",
        "everything sealed now opens with the current key alone: the previous keys can leave the configuration",
    ]

    use_keys(node, new, [])  # the old key gone: everything still opens
    assert state(node) == (LETTER, BODY, seed.encode())
    use_keys(node, old, [])  # and the old key alone opens nothing any more
    with pytest.raises(DecryptionError):
        state(node)

    use_keys(node, new, [])
    found = node.cli("audit", "search", "--event", "admin.kek.", "--json").json()
    assert [(e["action"], e["response"].get("result")) for e in found] == [  # type: ignore[index,union-attr]
        ("admin.kek.created", "done"),
        ("admin.kek.rewrapped", "done"),
        ("admin.kek.rewrapped", "done"),
    ]
    assert found[1]["response"]["queued_bodies"] == 1  # type: ignore[index]
    assert all(new.read_text().strip() not in json.dumps(e) for e in found)


def test_rewrap_without_the_key_that_sealed_refuses_and_changes_nothing(
    sealed: tuple[NodeDir, str], tmp_path: Path
) -> None:
    node, seed = sealed
    old = node.keys / "kek.key"
    stranger = tmp_path / "other" / "kek.key"
    assert node.cli("kek", "new", "--out", stranger).code == 0
    use_keys(node, stranger, [])  # the old key forgotten: its items cannot be opened, so nothing is touched
    r = node.cli("kek", "rewrap")
    assert r.code == 2
    assert r.err.strip().startswith("mssgw: mailbox ")
    assert r.err.strip().endswith(": no key-encryption key given opens its keys")
    use_keys(node, old, [])
    assert state(node) == (LETTER, BODY, seed.encode())
    refused = node.cli("audit", "search", "--event", "admin.kek.rewrapped", "--json").json()
    assert [e["response"]["result"] for e in refused] == ["refused"]  # type: ignore[index]


def test_new_never_overwrites_and_keeps_keys_out_of_the_data(node: NodeDir, tmp_path: Path) -> None:
    out = tmp_path / "k" / "kek.key"
    assert node.cli("kek", "new", "--out", out).code == 0
    before = out.read_text()
    r = node.cli("kek", "new", "--out", out)
    assert (r.code, r.err.strip()) == (2, f"mssgw: {out} exists: a key file is never overwritten")
    assert out.read_text() == before
    inside = node.data / "kek-2.key"
    r = node.cli("kek", "new", "--out", inside)
    assert r.code == 2
    assert r.err.strip() == (
        f"mssgw: {inside} is inside the data directory {node.data.resolve()}: "
        "keep keys apart from the data they protect"
    )
    assert not inside.exists()


def test_serve_refuses_a_key_that_wraps_no_mailbox_data_key(sealed: tuple[NodeDir, str], tmp_path: Path) -> None:
    """A wrong KEK at start (another node's file, a typo in MSSGW_STORE__KEK, the old key dropped before
    `kek rewrap`): the node served anyway, gave 250 to mail it sealed in the queue under that key (lost
    once the right key is back) and failed every local delivery. It now refuses to start."""
    node, seed = sealed
    old = node.keys / "kek.key"
    stranger = tmp_path / "other" / "kek.key"
    assert node.cli("kek", "new", "--out", stranger).code == 0
    use_keys(node, stranger, [])
    r = run_cli("serve", "-c", node.config, timeout=30)
    assert r.code == 2
    assert r.err.strip() == (
        f"mssgw: the key-encryption key {key_id(stranger)} (and previous keys: none) does not open the data keys"
        f" of 1 mailbox, wrapped by {key_id(old)}: give that key as [store] kek_file or in previous_kek_files"
    )
    use_keys(node, old, [])
    assert state(node) == (LETTER, BODY, seed.encode())  # nothing sealed under the wrong key
    use_keys(node, stranger, [old])  # the old key as a previous one: served (a rotation under way)
    running = start_node(node)
    running.proc.terminate()
    assert running.proc.wait(timeout=30) == 0
