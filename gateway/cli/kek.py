"""`mssgw kek ...`: rotate the key-encryption key (KEK) that wraps the mailboxes' data keys and seals the
TOTP seeds and queued bodies (gateway/store/crypto.py). docs/operations.md gives the whole procedure:

1. `kek new --out FILE` writes a fresh key (mode 0600, never over an existing file, never inside the data
   directory);
2. every node gets it as `[store] kek_file` with the old file in `previous_kek_files`, and restarts: new
   items are sealed with the new key, old ones still open;
3. `kek rewrap` seals every old item anew under the current key, and says which keys still wrap data
   keys: once only the current one does, the old key can leave the configuration (keep it with the
   backups made before: they need it).
"""

from __future__ import annotations

import argparse
import base64
from pathlib import Path

from gateway.audit.events import AuditEvent
from gateway.cli.base import Command, Context, Outcome
from gateway.errors import Conflict, UsageError
from gateway.queue.store import Queue
from gateway.store.crypto import KeyEncryptionKey, generate_kek_b64, write_secret_file


async def new(ctx: Context, args: argparse.Namespace) -> Outcome:
    path = Path(args.out).expanduser().absolute()
    data = ctx.cfg.base_dir.resolve()
    if path.resolve() == data or data in path.resolve().parents:
        raise UsageError(f"{path} is inside the data directory {data}: keep keys apart from the data they protect")
    value = generate_kek_b64()
    try:
        write_secret_file(path, value.encode() + b"\n")
    except FileExistsError:
        raise Conflict(f"{path} exists: a key file is never overwritten") from None
    kek_id = KeyEncryptionKey(base64.b64decode(value)).key_id
    text = (
        f"key-encryption key {kek_id} written to {path} (mode 0600)\n"
        "next: on every node, make it [store] kek_file, list the current key file in previous_kek_files, "
        "restart; then run `mssgw kek rewrap`"
    )
    return Outcome({"path": str(path), "kek_id": kek_id}, text, audit={"path": str(path), "kek_id": kek_id})


async def rewrap(ctx: Context, args: argparse.Namespace) -> Outcome:
    kek = ctx.node.kek
    keys, seeds = await ctx.node.mailboxes.rewrap_keys()
    bodies = await Queue(ctx.node.db, kek).reseal_bodies()
    by_kek = await ctx.node.mailboxes.kek_ids()
    data = {
        "kek_id": kek.key_id,
        "previous": kek.previous_ids,
        "data_keys": keys,
        "totp_seeds": seeds,
        "queued_bodies": bodies,
        "data_keys_by_kek": by_kek,
    }
    done = set(by_kek) <= {kek.key_id}
    text = (
        f"current key-encryption key {kek.key_id}; previous: {', '.join(kek.previous_ids) or 'none'}\n"
        f"re-wrapped {keys} data keys; re-sealed {seeds} TOTP seeds and {bodies} queued bodies\n"
        + (
            "everything sealed now opens with the current key alone: the previous keys can leave the configuration"
            if done
            else f"data keys by KEK: {', '.join(f'{k} {n}' for k, n in by_kek.items())}"
        )
    )
    return Outcome(data, text, audit=data)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    grp = sub.add_parser("kek", help="rotate the key-encryption key").add_subparsers(required=True, metavar="ACTION")
    p = grp.add_parser("new", parents=[common], help="write a new key-encryption key file")
    p.add_argument("--out", required=True, help="the new key file (outside the data directory)")
    p.set_defaults(_command=Command(AuditEvent.KEK_CREATED, new))
    p = grp.add_parser(
        "rewrap", parents=[common], help="seal everything a previous key sealed anew under the current key"
    )
    p.set_defaults(_command=Command(AuditEvent.KEK_REWRAPPED, rewrap))
