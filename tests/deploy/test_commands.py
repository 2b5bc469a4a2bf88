"""Every `mssgw` command line the operations pages show exists: it parses with the CLI's own parser.

Sources: shell code blocks (```sh) and inline code spans of docs/operations.md and deploy/**/*.md, and the
ExecStart= lines of the systemd units. A shell line is cut into commands at `|`, `&&`, `||` and `;`;
environment assignments (`VAR=value`) and `runuser -u USER --` in front are dropped, and a command counts
when its program is `mssgw` (any path ending in /mssgw). In code blocks and units each such command must
parse whole (required arguments included). An inline span that names only a command (`mssgw pki
issue-address`) must name an existing one; with any argument or option it must parse whole too. A bare
`mssgw` in a span names the program (or the PostgreSQL role): not a command line.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "docs" / "operations.md", *sorted((ROOT / "deploy").rglob("*.md"))]
UNITS = sorted((ROOT / "deploy").glob("*.service"))
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Quoted:
    where: str  # file:line
    argv: tuple[str, ...]  # after the program name
    whole: bool  # must parse whole (else: may name a command only)


def _commands(line: str) -> list[list[str]]:
    """The commands of one shell line, as argv lists without leading assignments and runuser."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;")
    lexer.whitespace_split = True
    out: list[list[str]] = [[]]
    for token in lexer:
        if token in ("|", "||", "&&", ";", "&"):
            out.append([])
        else:
            out[-1].append(token)
    commands = []
    for words in out:
        while words and ASSIGNMENT.match(words[0]):
            words = words[1:]
        if words[:2] == ["runuser", "-u"] and "--" in words:
            words = words[words.index("--") + 1 :]
        if words:
            commands.append(words)
    return commands


def _is_mssgw(program: str) -> bool:
    return program == "mssgw" or program.endswith("/mssgw")


def quoted_in_page(path: Path) -> list[Quoted]:
    found: list[Quoted] = []
    rel = path.relative_to(ROOT)
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence:
            language = fence.group(2)
            j = i + 1
            while not FENCE.match(lines[j]):
                j += 1
            if language == "sh":
                logical = ""
                for k in range(i + 1, j):
                    text = lines[k].strip()
                    if text.endswith("\\"):
                        logical += text[:-1] + " "
                        continue
                    logical += text
                    if logical and not logical.startswith("#"):
                        for words in _commands(logical):
                            if _is_mssgw(words[0]):
                                found.append(Quoted(f"{rel}:{k + 1}", tuple(words[1:]), whole=True))
                    logical = ""
            i = j + 1
            continue
        for span in INLINE.findall(lines[i]):
            for words in _commands(span):
                if _is_mssgw(words[0]) and len(words) > 1:  # a bare `mssgw` names the program, or a role
                    found.append(Quoted(f"{rel}:{i + 1}", tuple(words[1:]), whole=False))
        i += 1
    return found


def quoted_in_unit(path: Path) -> list[Quoted]:
    found = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("ExecStart="):
            words = shlex.split(line.removeprefix("ExecStart="))
            assert _is_mssgw(words[0]), line
            found.append(Quoted(f"{path.relative_to(ROOT)}:{n}", tuple(words[1:]), whole=True))
    return found


ALL = [q for page in PAGES for q in quoted_in_page(page)] + [q for unit in UNITS for q in quoted_in_unit(unit)]


def _parse(argv: tuple[str, ...]) -> tuple[bool, str]:
    """Whether the CLI's parser accepts `argv`, and what it printed when it did not."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(list(argv))
    except SystemExit as exc:
        return exc.code == 0, errors.getvalue().strip().splitlines()[-1] if errors.getvalue() else ""
    return True, ""


def _command_path_exists(argv: tuple[str, ...]) -> bool:
    """`argv` is only command words (no option, no argument) and names an existing command."""
    parser: argparse.ArgumentParser = build_parser()
    for word in argv:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None or word not in sub.choices:
            return False
        parser = sub.choices[word]
    return True


def test_the_pages_quote_commands() -> None:
    # Not vacuous: each page and unit quotes what it is expected to.
    per_file: dict[str, int] = {}
    for q in ALL:
        name = q.where.split(":")[0]
        per_file[name] = per_file.get(name, 0) + 1
    assert per_file["docs/operations.md"] >= 25
    assert per_file["deploy/postgresql.md"] >= 2
    assert per_file["deploy/examples/README.md"] >= 7
    assert per_file["deploy/README.md"] >= 2
    for unit in ("mssgw.service", "mssgw@.service", "mssgw-audit-verify.service", "mssgw-audit-verify@.service"):
        assert per_file[f"deploy/{unit}"] == 1
    shown = {q.argv[:2] for q in ALL}
    for command in [("serve",), ("queue", "list"), ("queue", "show"), ("queue", "retry"), ("queue", "delete")]:
        assert any(argv[: len(command)] == command for argv in shown), command
    for command in [("audit", "verify"), ("audit", "export"), ("audit", "search"), ("audit", "checkpoint")]:
        assert command in shown
    for command in [("pki", "issue-server"), ("pki", "revoke"), ("trust", "import"), ("trust", "add-domain")]:
        assert command in shown


@pytest.mark.parametrize("quoted", ALL, ids=[f"{q.where} {' '.join(q.argv)[:60]}" for q in ALL])
def test_quoted_command_parses(quoted: Quoted) -> None:
    ok, error = _parse(quoted.argv)
    if ok:
        return
    if not quoted.whole and _command_path_exists(quoted.argv):
        return
    pytest.fail(f"{quoted.where}: `mssgw {' '.join(quoted.argv)}` does not parse: {error}")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("mssgw queue list -c x.toml", [["mssgw", "queue", "list", "-c", "x.toml"]]),
        ("A='a b' B=1 /opt/mssgw/.venv/bin/mssgw trust list", [["/opt/mssgw/.venv/bin/mssgw", "trust", "list"]]),
        ("runuser -u mssgw -- mssgw audit verify && echo ok", [["mssgw", "audit", "verify"], ["echo", "ok"]]),
        ('echo "show stat" | socat stdio /run/x.sock', [["echo", "show stat"], ["socat", "stdio", "/run/x.sock"]]),
    ],
)
def test_shell_lines_are_cut_into_commands(line: str, expected: list[list[str]]) -> None:
    assert _commands(line) == expected


def test_a_wrong_command_is_caught() -> None:
    assert _parse(("queue", "list", "-c", "x.toml")) == (True, "")
    ok, error = _parse(("queue", "lst"))
    assert not ok
    assert "invalid choice: 'lst'" in error
    ok, error = _parse(("queue", "show"))  # the id is required
    assert not ok
    assert "the following arguments are required: id" in error
    assert _command_path_exists(("pki", "issue-address"))
    assert not _command_path_exists(("pki", "issue-address", "a@b.fr"))
    assert not _command_path_exists(("pki", "rotate"))
