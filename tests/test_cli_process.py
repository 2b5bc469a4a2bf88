"""The test runner of `mssgw` commands (tests/cli_process.py): a forked command answers byte for byte as
`python -m gateway.cli.main` does, in its own environment and working directory, within its timeout."""

from __future__ import annotations

import os
import subprocess

import psutil
import pytest

from tests import cli_process
from tests.conftest import NodeDir, run_cli


def both(argv: list[str], *, input: str | None = None, env: dict[str, str] | None = None) -> list[tuple[int, str, str]]:
    full = {**os.environ, "MSSGW_OPERATOR": "tester@ci", **(env or {})}
    results = []
    for mode in ("fork", "subprocess"):
        os.environ[cli_process.MODE_ENV] = mode
        try:
            results.append(cli_process.run(argv, input=input, env=full, timeout=120))
        finally:
            del os.environ[cli_process.MODE_ENV]
    return results


@pytest.mark.parametrize(
    ("argv", "code", "where", "text"),
    [
        (["--help"], 0, 1, "usage: mssgw [-h]"),
        (["mailbox"], 2, 2, "mssgw mailbox: error: the following arguments are required: ACTION"),  # argparse
        (["mailbox", "list", "-c", "/nonexistent/mssgw.toml"], 2, 2, "mssgw: no configuration file at /nonexistent"),
    ],
    ids=["help", "usage-error", "missing-config"],
)
def test_a_forked_command_answers_as_a_new_interpreter(argv: list[str], code: int, where: int, text: str) -> None:
    forked, spawned = both(argv)
    assert forked == spawned
    assert forked[0] == code
    assert text in forked[where]


def test_standard_input_environment_and_directory_are_the_commands_own(
    node: NodeDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = "claire.martin@ch-test.mssante.fr"
    add = ["mailbox", "add", address, "--type", "PER", "--idnat", "810000000009", "--password-stdin"]
    r = run_cli(*add, "-c", node.config, input="Horse-Battery-Staple-42\n", env={"MSSGW_OPERATOR": "alice@ops"})
    assert (r.code, r.err) == (0, "")
    # No -c: the configuration is ./mssgw.toml of the directory the test is in when it runs the command.
    monkeypatch.chdir(node.data)
    listed = run_cli("mailbox", "list", "--json")
    assert listed.code == 0, listed.err
    assert [m["address"] for m in listed.json()] == [address]  # type: ignore[union-attr,index]
    # The operator named by the first command's environment, not the next one's (tester@ci).
    audit = run_cli("audit", "search", "--event", "admin.mailbox.created", "--json")
    assert audit.code == 0, audit.err
    assert [e["author"] for e in audit.json()] == ["operator:alice@ops"]  # type: ignore[union-attr,index]


def test_a_command_past_its_timeout_is_killed(node: NodeDir) -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        run_cli("serve", "-c", node.config, timeout=3)  # serves until stopped
    if cli_process.forked():
        # The fork server's only child was the command, gone (killed and reaped) when run() raised.
        servers = [p for p in psutil.Process().children() if "forkserver" in " ".join(p.cmdline())]
        assert len(servers) == 1
        assert servers[0].children() == []
