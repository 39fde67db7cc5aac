"""The one argument parser every command uses: a bad flag is one line and exit code 2.

    parser = CommandParser(prog="python -m compare.tool", description="...")

It also accepts ``--debug`` (read by ``compare.cli.errors.run_cli``, listed in ``--help``)
and shows each flag's default once: a help string that already names its default, or a
flag whose default is None or off, gets no second ``(default: ...)``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, NoReturn

from compare.cli.errors import DEBUG_FLAG


class ReadByRunCli(argparse.Action):
    """Accepts --debug and stores nothing: run_cli has already looked for it in argv."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        pass


class DefaultOnceFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's ``(default: X)`` suffix, only where the help does not already say it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        says_default = "default" in help_text
        meaningless = action.default in (None, False, argparse.SUPPRESS) or action.option_strings == []
        if says_default or meaningless:
            return help_text
        return super()._get_help_string(action)


class CommandParser(argparse.ArgumentParser):
    """argparse, but an error is one line (no usage block) before exit code 2, and ``--debug`` is known."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultOnceFormatter)
        super().__init__(*args, **kwargs)
        self.add_argument(
            DEBUG_FLAG,
            nargs=0,
            action=ReadByRunCli,
            default=argparse.SUPPRESS,
            help="on an error, also print the full Python traceback",
        )

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def comma_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``: the value of a flag that takes a list."""
    return [item.strip() for item in text.split(",") if item.strip()]


def seed_problem(seed: int) -> str | None:
    """'--seed must be in [0, 2^63), got S', or None.

    NumPy's generators refuse a negative seed; the upper bound is the one compare.train and the
    demo's page take, so that a seed one command accepts, every command accepts.
    """
    return None if 0 <= seed < 2**63 else f"--seed must be in [0, 2^63), got {seed}"
