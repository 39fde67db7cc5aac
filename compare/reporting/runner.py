"""Running the documented commands for a section, and what a section hands back.

Each command runs as its own process (``python -m compare.<command> ...``), exactly as a
reader would type it, in a scratch directory (shown as ``$TMP`` in the docs) so that
nothing lands in the checkout. The sections read what the commands print or log; they do
not reach into the commands' internals.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from compare.cli.errors import CliError
from compare.reporting.text import shell_quote

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class SectionFailed(CliError):
    """A command of a section failed; the message names the command and its last line of stderr."""

    exit_code = 1


@dataclass
class Block:
    """One generated block: its marker name, its Markdown body, and the commands behind it."""

    name: str
    body: str
    commands: list
    threads: str | None = None  # e.g. "1 thread": where the commands chose their own thread count


@dataclass
class Finished:
    """A command that has run: what it printed, and how it is shown in the docs."""

    shown: str
    stdout: str
    stderr: str
    returncode: int

    def last_error_line(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1].strip() if lines else "(nothing on stderr)"


@dataclass
class Context:
    """What every section may use: the scratch directory, the mode, the environment, shared results."""

    workdir: Path  # scratch: logdirs, JSON files; shown as $TMP
    docs: Path  # the docs directory being rewritten (the loss plot is drawn into it)
    tiny: bool  # toy sizes: checks the machinery, measures nothing
    threads: int
    threads_given: bool  # --threads was passed to the report: pass it on to the benchmarks too
    results: dict = field(default_factory=dict)  # e.g. the quickstart's run directory, for the samples

    def environment(self) -> dict:
        env = dict(os.environ, PYTHONIOENCODING="utf-8")
        env.update({name: str(self.threads) for name in THREAD_VARIABLES})  # the threads the blocks state
        return env

    def show(self, module: str, args: list) -> str:
        """The command as the docs print it: the scratch directory as $TMP, the docs directory as docs."""
        shown = []
        for argument in map(str, args):
            argument = argument.replace(str(self.workdir), "$TMP").replace(str(self.docs), "docs")
            shown.append(shell_quote(argument))
        return " ".join(["python -m", module, *shown])

    def figure(self, name: str, caption: str) -> tuple[list, str]:
        """(the flags that draw docs/``name``, the Markdown that shows it), or, without matplotlib, ([], why not)."""
        try:
            import matplotlib  # noqa: F401  (only to know whether the command can draw)
        except ImportError:
            return [], f'docs/{name} was not redrawn: matplotlib is missing (`pip install -e ".[plot]"`).'
        return ["--out", self.docs / name], f"![{caption}]({name})"

    def bench_threads(self) -> list:
        return ["--threads", str(self.threads)] if self.threads_given else []

    def run(self, module: str, args: list, expect_failure: bool = False, either: bool = False) -> Finished:
        """Run ``python -m module args``; SectionFailed unless it succeeds (or, with expect_failure, fails).

        ``either``: the outcome itself is the measurement (a run that may diverge); never SectionFailed.
        """
        shown = self.show(module, args)
        completed = subprocess.run(
            [sys.executable, "-m", module, *map(str, args)],
            cwd=self.workdir,
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        finished = Finished(shown, completed.stdout, completed.stderr, completed.returncode)
        if not either and (completed.returncode != 0) != expect_failure:
            outcome = "succeeded, but it was expected to fail" if expect_failure else "failed"
            raise SectionFailed(f"`{shown}` {outcome} (exit code {completed.returncode}): {finished.last_error_line()}")
        return finished
