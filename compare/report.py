"""Regenerate every figure the docs quote, and rewrite the generated blocks of README.md and docs/*.md.

    python -m compare.report                         # every section: tens of minutes on 2 cores
    python -m compare.report --sections quickstart,samples
    python -m compare.report --tiny --dry-run        # toy sizes, print the diff: checks the plumbing

Each block sits between ``<!-- report:NAME -->`` and ``<!-- /report:NAME -->`` and opens
with its provenance: the commit, the CPU, the thread count, the share of the CPUs other
processes used while it ran, the date and the exact commands. Text outside the markers is
never touched.
"""

from __future__ import annotations

import sys
from pathlib import Path

from compare.cli.errors import run_cli
from compare.cli.parser import CommandParser, comma_list
from compare.reporting.generate import ReportSettings, report
from compare.reporting.provenance import usable_cores
from compare.reporting.sections import SECTIONS

PROG = "python -m compare.report"
REPO = Path(__file__).resolve().parents[1]


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog=PROG,
        description="Run the commands behind every figure in README.md and docs/*.md, and rewrite "
        "the generated blocks (between <!-- report:NAME --> markers) with the results and their provenance.",
    )
    what = parser.add_argument_group("what to run")
    what.add_argument(
        "--sections",
        type=comma_list,
        default=None,
        help="comma-separated sections, from: "
        + "; ".join(f"{name} ({section.about})" for name, section in SECTIONS.items())
        + " (default: every section a page has a marker for; samples runs quickstart first and rewrites its block too)",
    )
    what.add_argument(
        "--tiny",
        action="store_true",
        help="every section at toy sizes (a few steps, a 1 MB text): checks the machinery in a few minutes; "
        "its figures measure nothing",
    )
    what.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for NumPy's BLAS and torch in every command (default: every core this process may use)",
    )
    where = parser.add_argument_group("where to write")
    where.add_argument("--readme", type=Path, default=REPO / "README.md", help="the front page (default: README.md)")
    where.add_argument(
        "--docs", type=Path, default=REPO / "docs", help="the directory of the *.md pages (default: docs)"
    )
    where.add_argument("--dry-run", action="store_true", help="print the change as a diff; write nothing")
    where.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if any block would change other than its provenance line",
    )
    return parser


def parse_args(argv: list[str] | None) -> ReportSettings:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be positive, got {args.threads}")
    if args.sections == []:
        parser.error("--sections is empty; name at least one section, or leave it out for all")
    shown = [PROG] + (["--tiny"] if args.tiny else [])
    shown += [f"--sections {','.join(args.sections)}"] if args.sections else []
    shown += [f"--threads {args.threads}"] if args.threads else []
    return ReportSettings(
        readme=args.readme,
        docs=args.docs,
        sections=args.sections,
        tiny=args.tiny,
        threads=args.threads or usable_cores(),
        threads_given=args.threads is not None,
        dry_run=args.dry_run,
        check=args.check,
        report_command=" ".join(shown),
        repo=REPO,
    )


def main(argv: list[str] | None = None) -> int:
    """The command line; errors end as one line on stderr (exit 2 for a bad page or flag, 1 for a failed section)."""
    return run_cli(PROG, report_command, argv)


def report_command(argv: list) -> int:
    return report(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
