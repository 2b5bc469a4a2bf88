"""Real IMAP clients against the server: curl, imapclient and aioimaplib (imaplib is used throughout)."""

from __future__ import annotations

import asyncio
import subprocess

import imapclient
from aioimaplib import aioimaplib

from tests.imap.conftest import Box, message
from tests.smtp.conftest import PASSWORD


def test_curl_reads_a_message_over_starttls(box: Box) -> None:
    body = message(1, subject="Via curl")
    box.put(body)
    url = f"imap://127.0.0.1:{box.gw.port('imap')}/INBOX;UID=1"
    out = subprocess.run(
        # -k: the node's certificate names its host, not 127.0.0.1 (TLS itself is required: --ssl-reqd)
        ["curl", "-sS", "--ssl-reqd", "-k", "-u", f"{box.address}:{PASSWORD}", url],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == body
    listing = subprocess.run(
        [
            "curl",
            "-sS",
            "--ssl-reqd",
            "-k",
            "-u",
            f"{box.address}:{PASSWORD}",
            f"imap://127.0.0.1:{box.gw.port('imap')}/",
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert b'* LIST (\\HasNoChildren \\Sent) "/" Sent' in listing.stdout


def test_imapclient_over_implicit_tls(box: Box) -> None:
    box.put(message(1, subject="Un"), flags=["\\Seen"])
    box.put(message(2, subject="Deux"))
    client = imapclient.IMAPClient("127.0.0.1", port=box.gw.port("imaps"), ssl=True, ssl_context=box.gw.tls())
    client.login(box.address, PASSWORD)
    assert client.has_capability("IDLE")
    assert client.has_capability("MOVE")
    info = client.select_folder("INBOX")
    assert (info[b"EXISTS"], info[b"UIDNEXT"]) == (2, 3)
    assert client.search(["UNSEEN"]) == [2]
    fetched = client.fetch([1, 2], ["ENVELOPE", "FLAGS"])
    assert [fetched[u][b"ENVELOPE"].subject for u in (1, 2)] == [b"Un", b"Deux"]
    client.move([2], "Archive")
    assert client.folder_status("Archive", ["MESSAGES"])[b"MESSAGES"] == 1
    special = {name: flags for flags, _, name in client.list_folders()}
    assert b"\\Trash" in special["Trash"]
    client.logout()


def test_aioimaplib_idles_until_an_append(box: Box) -> None:
    async def run() -> list[bytes]:
        client = aioimaplib.IMAP4_SSL(host="127.0.0.1", port=box.gw.port("imaps"), timeout=30, ssl_context=box.gw.tls())
        await client.wait_hello_from_server()
        await client.login(box.address, PASSWORD)
        await client.select("INBOX")
        idle = await client.idle_start(timeout=10)
        box_task = asyncio.get_running_loop().run_in_executor(None, box.put, message(1))
        pushed = await client.wait_server_push()
        client.idle_done()
        await asyncio.wait_for(idle, 10)
        await box_task
        await client.logout()
        return list(pushed)

    pushed = asyncio.run(run())
    assert b"1 EXISTS" in pushed
