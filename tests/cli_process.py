"""`mssgw` commands in their own processes, forked from a server that has imported the CLI once.

Starting Python and importing the CLI (SQLAlchemy, pydantic, cryptography: about 770 modules) takes
1.2–2 s on the CI machines, and the suite runs several hundred commands: a quarter of its time was
imports. A multiprocessing fork server imports `gateway.cli.main` once; each command is a fresh child
forked from it, with its own environment, working directory, standard streams (files, read back once it
exits), exit status and timeout, running the same `main(argv)` as `python -m gateway.cli.main`.
Nothing runs before the fork but imports (no event loop, thread, logging set-up or database), and every
setting the CLI reads from the environment it reads when it runs, so the child behaves as a new process.

What is read when an interpreter starts (PYTHON* variables, the locale, TZ) is the fork server's: a test
that changes those for a command runs it with `MSSGW_TEST_CLI=subprocess`, which runs every command as
`python -m gateway.cli.main`.
"""

from __future__ import annotations

import atexit
import io
import multiprocessing
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

MODE_ENV = "MSSGW_TEST_CLI"
_context: multiprocessing.context.ForkServerContext | None = None


def forked() -> bool:
    return os.environ.get(MODE_ENV, "fork") != "subprocess"


def _streams(stdin: Path, out: Path, err: Path) -> None:
    for fd, path, flags in ((0, stdin, os.O_RDONLY), (1, out, os.O_WRONLY), (2, err, os.O_WRONLY)):
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    # As Python sets them up for a process whose streams are files (PEP 540: UTF-8 here).
    # POSIX: no newline translation on stdin; surrogateescape under a C.UTF-8 locale, as in CI.
    sys.stdin = io.TextIOWrapper(
        io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8", errors="surrogateescape", newline="\n"
    )
    sys.stdout = io.TextIOWrapper(
        io.BufferedWriter(io.FileIO(1, "w", closefd=False)), encoding="utf-8", errors="surrogateescape"
    )
    sys.stderr = io.TextIOWrapper(
        io.BufferedWriter(io.FileIO(2, "w", closefd=False)),
        encoding="utf-8",
        errors="backslashreplace",
        line_buffering=True,
    )


def _child(argv: list[str], env: dict[str, str], cwd: str, stdin: Path, out: Path, err: Path) -> None:
    """Runs in the forked process: what `python -m gateway.cli.main ARGV` does, then exits."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    _streams(stdin, out, err)
    code: int
    try:
        from gateway.cli.main import main

        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors; as the interpreter maps sys.exit(arg)
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()  # what the interpreter runs at exit (logging.shutdown among them)
    except BaseException:
        traceback.print_exc()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            code = code or 120  # as the interpreter does when flushing stdout at exit fails
    os._exit(code)


def _fork_server() -> multiprocessing.context.ForkServerContext:
    global _context
    if _context is None:
        ctx = multiprocessing.get_context("forkserver")
        assert isinstance(ctx, multiprocessing.context.ForkServerContext)
        ctx.set_forkserver_preload(["gateway.cli.main", __name__])
        _context = ctx
    return _context


def run(argv: list[str], *, input: str | None, env: dict[str, str], timeout: float) -> tuple[int, str, str]:
    """Run `mssgw ARGV`; returns (exit status, standard output, standard error)."""
    if not forked():
        done = subprocess.run(
            [sys.executable, "-m", "gateway.cli.main", *argv],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
        return done.returncode, done.stdout, done.stderr
    with tempfile.TemporaryDirectory(prefix="mssgw-cli-") as tmp:
        stdin, out, err = Path(tmp, "stdin"), Path(tmp, "stdout"), Path(tmp, "stderr")
        stdin.write_text(input or "", encoding="utf-8")
        out.touch()
        err.touch()
        proc = _fork_server().Process(target=_child, args=(argv, env, os.getcwd(), stdin, out, err))
        proc.start()
        try:
            proc.join(timeout)
            if proc.exitcode is None:
                raise subprocess.TimeoutExpired(["mssgw", *argv], timeout)
        finally:
            if proc.exitcode is None:  # timed out, or the test run was interrupted: as subprocess.run does
                proc.kill()
                proc.join()
        code = proc.exitcode
        proc.close()
        # A signal's death reads as -N, as subprocess reports it.
        return code, out.read_text(encoding="utf-8"), err.read_text(encoding="utf-8", errors="replace")
