"""The demo trust space and a real browser: headless Chromium from Debian (`/usr/bin/chromium`), driven by
Playwright for Python (no browser download). Screenshots go to `build/test-artifacts/web/` (or
`$MSSGW_ARTIFACTS/web/`), kept as CI artefacts."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest

from tests.smtp.test_federation import space

__all__ = ["space"]

CHROMIUM = "/usr/bin/chromium"
_used_codes: dict[str, str] = {}


@pytest.fixture(scope="session")
def artifacts() -> Path:
    base = Path(os.environ.get("MSSGW_ARTIFACTS") or Path(__file__).resolve().parents[2] / "build" / "test-artifacts")
    out = base / "web"
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")  # not session: sync Playwright keeps a loop running, async tests need none
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("MSSGW_REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} is required (apt-get install chromium)")
        pytest.skip(f"no {CHROMIUM}: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def totp_code(address: str, secret: str) -> str:
    """The current TOTP code, waiting for the next period when this one was already used for `address`
    (the server refuses a replayed code)."""
    totp = pyotp.TOTP(secret)
    code = totp.now()
    while _used_codes.get(address) == code:
        time.sleep(30.5 - time.time() % 30)
        code = totp.now()
    _used_codes[address] = code
    return code
