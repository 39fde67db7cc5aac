"""How every command of this project reports a failure: one line on stderr and an exit code.

    def main(argv=None) -> int:
        return run_cli("python -m compare.tool", tool_command, argv)

``tool_command(argv)`` does the work and returns the exit code; when something goes
wrong it raises

    UsageError       exit 2: the user handed us something wrong (a flag, a file, a checkpoint)
    TrainingFailed   exit 1: the input was fine but the work could not finish (divergence, disk full)

and ``run_cli`` prints ``<prog>: error: <message>`` as one line, without a traceback.
Any other exception is a bug: one line too, saying so, and exit code 1. ``--debug``
anywhere on the command line prints the full traceback above that line (the exit code
stays the same); ``compare.cli.parser.CommandParser`` lists the flag in ``--help`` and
accepts it.
Errors argparse finds itself (an unknown flag, a bad number) exit with 2 before
``tool_command`` runs, as usual.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Sequence

DEBUG_FLAG = "--debug"


class CliError(Exception):
    """An error the user can fix; the message says what is wrong and how to fix it."""

    exit_code = 1


class UsageError(CliError):
    """Bad input: a flag value, a data file, a checkpoint, an output directory."""

    exit_code = 2


class TrainingFailed(CliError):
    """Good input, but training could not go on (the loss diverged, the disk is full)."""

    exit_code = 1


def one_line(message: str) -> str:
    """``message`` with its line breaks turned into spaces, so that stderr gets exactly one line."""
    return " ".join(message.split("\n")).strip()


def report(prog: str, message: str, debug: bool = False) -> None:
    """One line on stderr; with --debug, the traceback of the exception being handled comes first."""
    if debug:
        traceback.print_exc()
    print(f"{prog}: error: {one_line(message)}", file=sys.stderr)


def run_cli(prog: str, command: Callable[[list[str]], int], argv: Sequence[str] | None = None) -> int:
    """Run ``command(argv)`` and turn its exceptions into one line on stderr and an exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = DEBUG_FLAG in argv
    try:
        return command(argv)
    except CliError as error:
        report(prog, str(error), debug)
        return error.exit_code
    except KeyboardInterrupt:
        report(prog, "interrupted", debug)
        return 130
    except BrokenPipeError:  # whoever read our output has gone (`... | head`): nothing is wrong
        silence_stdout()
        return 141  # what a shell reports for a process killed by SIGPIPE
    except MemoryError:
        report(prog, "out of memory; try a smaller --hidden-size, --batch-size or --seq-length", debug)
        return 1
    except Exception as error:  # a bug: still one line, and the way to see more
        report(
            prog,
            f"unexpected {type(error).__name__}: {error} (a bug; rerun with {DEBUG_FLAG} "
            "to see the traceback, and report it)",
            debug,
        )
        return 1


def silence_stdout() -> None:
    """Point stdout at /dev/null, so that Python's final flush does not fail on the closed pipe again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
