"""Gradient flow through time: how far back the loss at a chunk's last step still reaches, per cell.

    python -m compare.gradflow                                   # rnn, lstm, gru: init and after 1000 steps
    python -m compare.gradflow --cell lstm --out gradflow.png --json gradflow.json
    python -m compare.gradflow --checkpoint runs/<run>/manual    # a trained run instead of --train-steps
    python -m compare.gradflow --truncation                      # truncated BPTT's error against K, by RTRL

For the loss at the last step T of a chunk, L_T, the norm g_k = ||dL_T/dh_{T-k}|| for every
lag k = 0..T, computed twice: by the hand-written per-step backward recursion and by autograd
(retain_grad() on every h_t of torchref's cell). Prints, per cell and state (init, trained),
the lag at which g_k first falls below 1e-3 g_0 and how far the two computations are apart;
--out draws both curves (compare.gradients.flow has the definitions).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from compare.cli.errors import UsageError, run_cli
from compare.cli.parser import CommandParser, comma_list, seed_problem
from compare.gradients.flow_run import CELL_NAMES, FlowSettings, flow_verdict, format_table, report_json, run_gradflow
from compare.model.cells import CHECKPOINT_DOC, FLOW_DOC, flow_problem
from compare.model.init import size_problem
from compare.plotting.events import PlotError
from compare.plotting.figure import require_matplotlib, save_png

PROG = "python -m compare.gradflow"
FIXED_BY_CHECKPOINT = ("hidden_size", "seed", "train_steps")  # the checkpoint's run decides these


def build_parser() -> CommandParser:
    defaults = FlowSettings()
    parser = CommandParser(
        prog=PROG,
        description="The norm of dL_T/dh_{T-k} against the lag k, by hand-written BPTT and by autograd, "
        "for rnn, lstm and gru at initialization and after training.",
    )
    model = parser.add_argument_group("model and chunk")
    model.add_argument(
        "--cell",
        dest="cells",
        type=comma_list,
        metavar="CELLS",
        help=f"cells to measure, a comma list of {', '.join(CELL_NAMES)} (default: all three) or cells of your own "
        f"by import path or file that have step_backward ({FLOW_DOC}); with --checkpoint, the one cell of your "
        f"own it was trained with (a module a checkpoint names is imported only when --cell names it, "
        f"{CHECKPOINT_DOC})",
    )
    model.add_argument("--hidden-size", type=int, metavar="H", help=f"H (default: {defaults.hidden_size})")
    model.add_argument(
        "--seq-length",
        type=int,
        default=defaults.seq_length,
        metavar="T",
        help="steps in the measured chunk, the first T + 1 characters of the text: the longest lag",
    )
    model.add_argument("--seed", type=int, help=f"seed of the initial weights (default: {defaults.seed})")
    model.add_argument(
        "--dtype", choices=["float32", "float64"], default=defaults.dtype, help="floating-point type of the measurement"
    )
    model.add_argument("--data", metavar="PATH", help="UTF-8 text file (default: the built-in corpus)")
    trained = parser.add_argument_group("trained weights")
    trained.add_argument(
        "--train-steps",
        type=int,
        metavar="N",
        help=f"train each cell N steps (compare.train's defaults, float64) and measure again; 0: init only "
        f"(default: {defaults.train_steps})",
    )
    trained.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="measure a trained checkpoint (a .npz file or a run directory) instead: its cell, size and seed",
    )
    output = parser.add_argument_group("output")
    output.add_argument("--out", metavar="PNG", help="draw the curves into this PNG (needs matplotlib)")
    output.add_argument("--json", metavar="PATH", help="also write the curves and the table's numbers as JSON")
    return parser


def settings_from(parser: CommandParser, argv: list[str]) -> tuple[FlowSettings, str | None, str | None]:
    """The settings, --out and --json; parser.error (one line, exit code 2) on bad input."""
    args = vars(parser.parse_args(argv))
    out, json_path = args.pop("out"), args.pop("json")
    if args["checkpoint"]:
        typed = [name for name in FIXED_BY_CHECKPOINT if args[name] is not None]
        if typed:
            flags = ", ".join("--" + name.replace("_", "-") for name in typed)
            parser.error(f"--checkpoint fixes the size, seed and training: leave out {flags}")
        if args["cells"] is not None and len(args["cells"]) != 1:
            parser.error(f"--checkpoint was trained with one cell: --cell names it, got {len(args['cells'])}")
        args["cells"] = args["cells"] or []  # none typed: the checkpoint's, which must be built in
    settings = FlowSettings(**{name: value for name, value in args.items() if value is not None})
    if not settings.cells and not settings.checkpoint:
        parser.error(f"--cell takes a comma list of {', '.join(CELL_NAMES)} or cells of your own, got ''")
    for cell in settings.cells:
        problem = None if cell in CELL_NAMES else flow_problem(cell)
        if problem:
            parser.error(problem)
    for name in ("hidden_size", "seq_length"):
        if getattr(settings, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(settings, name)}")
    problem = size_problem({"hidden_size": settings.hidden_size, "seq_length": settings.seq_length})
    if problem:
        parser.error(problem)
    if problem := seed_problem(settings.seed):
        parser.error(problem)
    if settings.train_steps < 0:
        parser.error(f"--train-steps must be >= 0 (0: initialization only), got {settings.train_steps}")
    for flag, path in (("--out", out), ("--json", json_path)):
        if path and not Path(path).absolute().parent.is_dir():  # say so before the work, not after
            parser.error(f"{flag} {path}: no such directory to write it in")
    return settings, out, json_path


def main(argv: list[str] | None = None) -> int:
    """The command line; errors end as one line on stderr, exit code 2 for bad input.

    The table ends with the verdict's line: exit code 0 when the hand-written and autograd curves agree
    within the dtype's bound, 1 when they do not (compare.gradients.flow_run.flow_verdict).
    """
    return run_cli(PROG, gradflow_command, argv)


def gradflow_command(argv: list[str]) -> int:
    if "--truncation" in argv:  # truncated BPTT against the exact gradient (RTRL), against K (docs/forward.md)
        from compare.gradients.truncation import main as truncation_main

        return truncation_main([arg for arg in argv if arg != "--truncation"])
    settings, out, json_path = settings_from(build_parser(), argv)
    try:
        if out:
            require_matplotlib()  # before the work, not after
        curves = run_gradflow(settings)
        print(format_table(curves, settings.seq_length))
        verdict = flow_verdict(curves, settings.dtype)
        print(f"\n{verdict.line()}")  # a paragraph of its own: Markdown would read a line under the table as a row
        if out:
            from compare.plotting.flow_figure import draw_flow

            save_png(draw_flow(curves), Path(out))
    except PlotError as error:
        raise UsageError(str(error)) from None
    if json_path:
        try:
            Path(json_path).write_text(json.dumps(report_json(settings, curves), indent=1) + "\n")
        except OSError as error:
            raise UsageError(f"--json {json_path}: cannot write it ({error.strerror or error})") from None
    return verdict.exit_code


if __name__ == "__main__":
    sys.exit(main())
