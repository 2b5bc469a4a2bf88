"""TOTP codes (gateway/auth/totp.py): six ASCII digits of a step within the window, nothing else."""

from __future__ import annotations

import pyotp
import pytest

from gateway.auth import totp

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
NOW = 1_767_600_000.0  # a step boundary: 2026-01-05 08:00:00 UTC


def test_the_code_of_a_step_within_the_window_gives_that_step() -> None:
    step = int(NOW // 30)
    for offset in (-1, 0, 1):
        code = pyotp.TOTP(SECRET).at(NOW + 30 * offset)
        assert totp.matched_step(SECRET, f" {code} ", now=NOW) == step + offset
    assert totp.matched_step(SECRET, pyotp.TOTP(SECRET).at(NOW + 60), now=NOW) is None


@pytest.mark.parametrize(
    "code",
    [
        "\u0661\u0662\u0663\u0664\u0665\u0666",  # Arabic-Indic digits: str.isdigit() says yes
        "\uff11\uff12\uff13\uff14\uff15\uff16",  # fullwidth digits
        "12345\u0666",
        "²³⁴⁵⁶⁷",  # superscripts: isdigit() too
        "12345",
        "1234567",
        "12 456",
        "",
    ],
)
def test_anything_but_six_ascii_digits_is_no_code(code: str) -> None:
    """Not a TypeError from compare_digest (a 500 after the password matched): the same None as a wrong code."""
    assert totp.matched_step(SECRET, code, now=NOW) is None
    assert totp.verify(SECRET, code) is False
