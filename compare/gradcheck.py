"""Is the hand-written gradient right? The original write-up's Table 1, computed fresh.

    python -m compare.gradcheck                       # all four comparisons, every entry
    python -m compare.gradcheck --with-original       # the original's figures beside them
    python -m compare.gradcheck --json gradcheck.json # the numbers, for scripts and tests
    python -m compare.gradcheck --cell my_cell.py --diagnose   # where a hand-written backward is wrong
    python -m compare.gradcheck --routes --cell lstm  # BPTT, RTRL, reverse and forward autograd, pair by pair

One forward/backward pass from a zero hidden state on the first ``seq_length``
characters of the corpus, weights from ``compare.model.init.init_params`` (the original's
N(0, 0.01^2), biases zero). For every entry of b, c, U, W, V the relative error

    |ga - gn| / max(eps, |ga| + |gn|)

between two gradient estimates; the table shows its max and average per parameter.
The comparisons (columns), see ``compare.gradients.oracles`` for the estimates:

    central             manual BPTT  vs  centred differences of the manual loss
    complex             manual BPTT  vs  complex step Im L(theta + ih) / h, manual loss in complex128
    torch-central       autograd     vs  centred differences of the torch loss (float64)
    manual-vs-autograd  manual BPTT  vs  autograd
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from compare.cli.errors import UsageError, run_cli
from compare.cli.parser import CommandParser
from compare.gradients.check import (
    METHODS,
    GradcheckSettings,
    build_problem,
    check_problem,
    choose_entries,
    format_report,
    invalid_setting,
    report_verdict,
    run_gradcheck,
)
from compare.gradients.oracles import Problem
from compare.gradients.routes import routes_problem
from compare.model.cells import CELL_HELP
from compare.model.init import INIT_STD, forward_mode_cost

PROG = "python -m compare.gradcheck"
DEFAULT_HEATMAP = "diagnosis.png"
__all__ = ["GradcheckSettings", "choose_entries", "format_report", "main", "run_gradcheck"]  # what the tests use


def build_parser() -> CommandParser:
    defaults = GradcheckSettings()
    parser = CommandParser(
        prog=PROG,
        description="Relative errors between the hand-written BPTT gradients and numerical or autograd "
        "gradients, as a Markdown table (the original write-up's Table 1).",
    )
    model = parser.add_argument_group("model and batch")
    model.add_argument(
        "--hidden-size",
        type=int,
        default=defaults.hidden_size,
        metavar="H",
        help="size of the hidden state (default: %(default)s)",
    )
    model.add_argument(
        "--cell",
        default=defaults.cell,
        metavar="CELL",
        help=CELL_HELP + " (default: %(default)s, the original's)",
    )
    model.add_argument(
        "--num-layers",
        type=int,
        default=defaults.num_layers,
        metavar="L",
        help="stacked recurrent layers (default: %(default)s)",
    )
    model.add_argument(
        "--seq-length",
        type=int,
        default=defaults.seq_length,
        metavar="T",
        help="characters in the batch (default: %(default)s)",
    )
    model.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        metavar="B",
        help="parallel streams (default: %(default)s)",
    )
    model.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        help="seed of the initial weights and of the --sample draw (default: %(default)s)",
    )
    model.add_argument(
        "--init-scale",
        type=float,
        default=defaults.init_scale,
        metavar="S",
        help=f"multiply every weight matrix (N(0, {INIT_STD}^2) from init_params) by S; biases stay "
        "(default: %(default)s, the original's weights)",
    )
    model.add_argument(
        "--data",
        default=defaults.data,
        metavar="PATH",
        help="UTF-8 text file whose first characters form the batch (default: the built-in corpus)",
    )
    model.add_argument("--encoding", default=defaults.encoding, help="encoding of --data (default: %(default)s)")
    model.add_argument(
        "--errors",
        choices=["strict", "replace", "ignore"],
        default=defaults.errors,
        help="bytes --encoding cannot decode: an error, U+FFFD, or dropped (default: %(default)s)",
    )
    check = parser.add_argument_group("gradient check")
    check.add_argument(
        "--methods",
        nargs="+",
        choices=list(METHODS),
        default=defaults.methods,
        metavar="METHOD",
        help=f"comparisons to run, one column pair each, from: {', '.join(METHODS)} (default: all)",
    )
    check.add_argument(
        "--step",
        type=float,
        default=defaults.step,
        metavar="H",
        help="step of the centred differences (default: %(default)s)",
    )
    check.add_argument(
        "--complex-step",
        type=float,
        default=defaults.complex_step,
        metavar="H",
        help="step of the complex-step derivative (default: %(default)s)",
    )
    check.add_argument(
        "--eps",
        type=float,
        default=defaults.eps,
        help="floor of the denominator in |ga-gn| / max(eps, |ga|+|gn|) (default: %(default)s)",
    )
    check.add_argument(
        "--sample",
        type=int,
        default=defaults.sample,
        metavar="N",
        help="check N random entries per parameter instead of every entry, for large models",
    )
    diagnosis = parser.add_argument_group("diagnosis (docs/cells.md#reading-a-diagnosis)")
    diagnosis.add_argument(
        "--diagnose",
        action="store_true",
        help="instead of the table: run every oracle at every entry and, where they disagree, say which "
        "parameter, layer, gate, time step and path is wrong (exit code 1 when the backward is wrong); "
        "for small models: use a small --hidden-size, --seq-length and --data",
    )
    diagnosis.add_argument(
        "--heatmap",
        metavar="PNG",
        default=DEFAULT_HEATMAP,
        help="with --diagnose: where to draw the relative error per time step and gate block (default: %(default)s)",
    )
    second = parser.add_argument_group("second order (docs/second-order.md)")
    second.add_argument(
        "--second-order",
        action="store_true",
        help="instead of the table: the Hessian-vector product H v along a random direction three ways (by hand, "
        "by double backward, by the complex step of the hand-written gradient) and the Gauss-Newton product G v "
        "two ways, the errors per parameter; exit code 1 beyond 1e-12 (built-in cells only)",
    )
    routes = parser.add_argument_group("four routes (docs/forward.md)")
    routes.add_argument(
        "--routes",
        action="store_true",
        help="instead of the table: the gradient by BPTT by hand, RTRL by hand, reverse- and forward-mode "
        "autograd, each pair's relative difference per parameter (exit code 1 beyond float64's bound); "
        "one layer, small sizes",
    )
    output = parser.add_argument_group("output")
    output.add_argument("--json", metavar="PATH", help="also write the numbers to PATH as JSON")
    output.add_argument(
        "--with-original", action="store_true", help="add a column pair with the original write-up's figures"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """The command line; errors end as one line on stderr, exit code 2 for bad input.

    Every mode ends with the verdict's line: exit code 0 when manual BPTT and autograd agree within
    float64's bound, 1 when they do not (compare.training.agreement.Verdict).
    """
    return run_cli(PROG, gradcheck_command, argv)


def gradcheck_command(argv: list[str]) -> int:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    json_path, with_original = args.pop("json"), args.pop("with_original")
    diagnose_it, heatmap = args.pop("diagnose"), Path(args.pop("heatmap"))
    second_order = args.pop("second_order")
    four_routes = args.pop("routes")
    settings = GradcheckSettings(**args)
    invalid = invalid_setting(settings)
    if invalid:
        parser.error(invalid)  # one line on stderr, exit code 2
    if json_path and not Path(json_path).absolute().parent.is_dir():  # say so before the work, not after
        parser.error(f"--json {json_path}: no such directory to write it in")
    if four_routes:
        for flag, given in (
            ("--diagnose", diagnose_it),
            ("--with-original", with_original),
            ("--sample", settings.sample),
            ("--second-order", second_order),
        ):
            if given:
                parser.error(f"--routes compares whole gradients route against route: leave out {flag}")
        refused = routes_problem(settings.cell, settings.num_layers)
        if refused:
            parser.error(refused)
    try:
        problem = build_problem(settings)
    except (UsageError, ValueError) as error:  # unusable --data, or too short for one batch
        parser.error(str(error))
    if four_routes:
        return routes_command(problem, settings, json_path)
    if second_order:
        return second_order_command(
            parser, problem, settings.seed, json_path, diagnose_it, with_original, settings.sample is not None
        )
    if diagnose_it:
        for flag, given in (("--json", json_path), ("--with-original", with_original), ("--sample", settings.sample)):
            if given:
                parser.error(f"--diagnose prints a diagnosis of every entry, not the table: leave out {flag}")
        if not heatmap.absolute().parent.is_dir():
            parser.error(f"--heatmap {heatmap}: no such directory to write it in")
        return diagnose_command(problem, heatmap)
    report = check_problem(problem, settings)
    print(format_report(report, with_original))
    if json_path:
        write_json(json_path, report)
    return report_verdict(report).exit_code


def write_json(path: str, report: dict) -> None:
    try:
        Path(path).write_text(json.dumps(report, indent=2) + "\n")
    except OSError as error:
        raise UsageError(f"--json {path}: cannot write it ({error.strerror or error})") from None


def second_order_command(
    parser: CommandParser, problem: Problem, seed: int, json_path: str | None, *excluded: bool
) -> int:
    """Print the second order's table and verdict; 0 when the routes agree within the bound, 1 when not."""
    from compare.gradients.second_order import format_second_order, second_order_check

    if any(excluded):
        parser.error(
            "--second-order prints its own table of whole products: leave out --diagnose, --with-original and --sample"
        )
    try:
        report = second_order_check(problem, seed)
    except ValueError as error:  # a cell of the user's own: no R-pass written for it
        parser.error(f"--second-order: {error}")
    print(format_second_order(report))
    if json_path:
        write_json(json_path, report)
    return 0 if report["agree"] else 1


def routes_command(problem: Problem, settings: GradcheckSettings, json_path: str | None) -> int:
    """Print the route table and the verdict; 0 when the four routes agree within float64's bound, 1 when not."""
    from compare.gradients.routes import format_routes, route_differences, route_gradients, routes_verdict

    vocab_size = int(problem.params["c"].size)
    cost = forward_mode_cost(vocab_size, settings.hidden_size, settings.cell, settings.batch_size, settings.seq_length)
    refused = cost.problem("--routes")
    if refused:
        raise UsageError(refused)
    differences = route_differences(route_gradients(problem))
    verdict = routes_verdict(differences)
    print(
        f"{settings.cell}, hidden size {settings.hidden_size}, seq_length {settings.seq_length}, batch size "
        f"{settings.batch_size}, vocabulary {vocab_size}, seed {settings.seed}, zero initial state, float64."
    )
    print()
    print(format_routes(differences))
    print()
    print(verdict.line())
    if json_path:
        record = {
            "settings": {**asdict(settings), "vocab_size": vocab_size},
            "routes": {pair: {"loss": found.loss, "grads": found.grads} for pair, found in differences.items()},
            "verdict": verdict.as_json(),
        }
        write_json(json_path, record)
    return verdict.exit_code


def diagnose_command(problem: Problem, heatmap: Path) -> int:
    """Print the diagnosis, draw its heat map, then the verdict; 0 when the backward is right, 1 when it is not."""
    from compare.gradients.check import implementation_verdict
    from compare.gradients.diagnose import diagnose, save_heatmap

    diagnosis = diagnose(problem)
    print("\n".join(diagnosis.lines))
    if diagnosis.heat is not None:
        save_heatmap(diagnosis, heatmap)
        print(f"Heat map (time step x gate block, dL/dh_t, carry): {heatmap}")
    verdict = implementation_verdict(problem)
    print(verdict.line())
    # the diagnosis localizes at its own, looser threshold; either finding a difference is a disagreement
    return 1 if diagnosis.verdict != "agree" else verdict.exit_code


if __name__ == "__main__":
    sys.exit(main())
