"""Is the hand-written gradient right? The original write-up's Table 1, computed fresh.

    python -m compare.gradcheck                       # all four comparisons, every entry
    python -m compare.gradcheck --with-original       # the original's figures beside them
    python -m compare.gradcheck --json gradcheck.json # the numbers, for scripts and tests

One forward/backward pass from a zero hidden state on the first ``seq_length``
characters of the corpus, weights from ``compare.init.init_params`` (the original's
N(0, 0.01^2), biases zero). For every entry of b, c, U, W, V the relative error

    |ga - gn| / max(eps, |ga| + |gn|)

between two gradient estimates; the table shows its max and average per parameter.
The comparisons (columns), see ``compare.gradcheck_methods`` for the estimates:

    central             manual BPTT  vs  centred differences of the manual loss
    complex             manual BPTT  vs  complex step Im L(theta + ih) / h, manual loss in complex128
    torch-central       autograd     vs  centred differences of the torch loss (float64)
    manual-vs-autograd  manual BPTT  vs  autograd
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from compare.cli_errors import UsageError, add_debug_flag, run_cli
from compare.data import StreamBatches, Vocab
from compare.gradcheck_methods import (
    table_order,
    Problem,
    TorchLoss,
    autograd_gradient,
    compare_gradients,
    central_differences,
    complex_step,
    manual_gradient,
    manual_loss_function,
    torch_single_thread,
)
from compare.init import INIT_STD, init_params
from manual import zero_state
from compare.inputs import check_encoding, check_vocabulary, read_corpus

PROG = "python -m compare.gradcheck"

METHODS = {  # name -> what its column compares (printed under the table)
    "central": "manual BPTT vs centred differences (L(θ+h) − L(θ−h)) / 2h of the manual loss",
    "complex": "manual BPTT vs complex step Im L(θ + ih) / h of the manual loss in complex128",
    "torch-central": "torch autograd vs centred differences of the torch loss (float64)",
    "manual-vs-autograd": "manual BPTT vs torch autograd",
}

# The original write-up's Table 1: (max, avg); it gave no average over all weights.
ORIGINAL_TABLE1 = {
    "b": (6.21e-09, 3.45e-09),
    "c": (9.74e-10, 7.07e-10),
    "U": (5.38e-08, 7.64e-10),
    "W": (1.87e-06, 1.92e-07),
    "V": (2.72e-07, 1.58e-08),
    "All": (1.87e-06, None),
}


@dataclass
class GradcheckSettings:
    """Everything the numbers depend on; the defaults are the original's settings."""

    hidden_size: int = 5
    cell: str = "rnn"  # rnn, lstm or gru
    num_layers: int = 1
    seq_length: int = 25
    batch_size: int = 1
    seed: int = 42  # weights (init_params) and, with --sample, which entries are checked
    init_scale: float = 1.0  # U, W, V are init_params' N(0, 0.01^2) draws times this
    data: str | None = None  # None: the built-in corpus
    encoding: str = "utf-8"  # of --data
    errors: str = "strict"  # what decoding does with bytes the encoding cannot read
    step: float = 1e-4  # h of the centred differences
    complex_step: float = 1e-30  # h of the complex step
    eps: float = 1e-16  # floor of the relative error's denominator
    sample: int | None = None  # None: every entry; N: N random entries per parameter
    methods: list = field(default_factory=lambda: list(METHODS))


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a bad flag prints one line (no usage block) before exiting with code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    defaults = GradcheckSettings()
    parser = OneLineErrorParser(
        prog=PROG,
        description="Relative errors between the hand-written BPTT gradients and numerical or autograd "
                    "gradients, as a Markdown table (the original write-up's Table 1).",
    )
    model = parser.add_argument_group("model and batch")
    model.add_argument("--hidden-size", type=int, default=defaults.hidden_size, metavar="H",
                       help="size of the hidden state (default: %(default)s)")
    model.add_argument("--cell", choices=["rnn", "lstm", "gru"], default=defaults.cell,
                       help="recurrent cell (default: %(default)s, the original's)")
    model.add_argument("--num-layers", type=int, default=defaults.num_layers, metavar="L",
                       help="stacked recurrent layers (default: %(default)s)")
    model.add_argument("--seq-length", type=int, default=defaults.seq_length, metavar="T",
                       help="characters in the batch (default: %(default)s)")
    model.add_argument("--batch-size", type=int, default=defaults.batch_size, metavar="B",
                       help="parallel streams (default: %(default)s)")
    model.add_argument("--seed", type=int, default=defaults.seed,
                       help="seed of the initial weights and of the --sample draw (default: %(default)s)")
    model.add_argument("--init-scale", type=float, default=defaults.init_scale, metavar="S",
                       help=f"multiply every weight matrix (N(0, {INIT_STD}^2) from init_params) by S; biases stay "
                            "(default: %(default)s, the original's weights)")
    model.add_argument("--data", default=defaults.data, metavar="PATH",
                       help="UTF-8 text file whose first characters form the batch (default: the built-in corpus)")
    model.add_argument("--encoding", default=defaults.encoding, help="encoding of --data (default: %(default)s)")
    model.add_argument("--errors", choices=["strict", "replace", "ignore"], default=defaults.errors,
                       help="bytes --encoding cannot decode: an error, U+FFFD, or dropped (default: %(default)s)")
    check = parser.add_argument_group("gradient check")
    check.add_argument("--methods", nargs="+", choices=list(METHODS), default=defaults.methods, metavar="METHOD",
                       help=f"comparisons to run, one column pair each, from: {', '.join(METHODS)} (default: all)")
    check.add_argument("--step", type=float, default=defaults.step, metavar="H",
                       help="step of the centred differences (default: %(default)s)")
    check.add_argument("--complex-step", type=float, default=defaults.complex_step, metavar="H",
                       help="step of the complex-step derivative (default: %(default)s)")
    check.add_argument("--eps", type=float, default=defaults.eps,
                       help="floor of the denominator in |ga-gn| / max(eps, |ga|+|gn|) (default: %(default)s)")
    check.add_argument("--sample", type=int, default=defaults.sample, metavar="N",
                       help="check N random entries per parameter instead of every entry, for large models")
    output = parser.add_argument_group("output")
    output.add_argument("--json", metavar="PATH", help="also write the numbers to PATH as JSON")
    output.add_argument("--with-original", action="store_true",
                        help="add a column pair with the original write-up's figures")
    add_debug_flag(parser)
    return parser


def invalid_setting(settings: GradcheckSettings) -> str | None:
    """A one-line description of the first invalid setting, or None."""
    for name in ("hidden_size", "num_layers", "seq_length", "batch_size"):
        if getattr(settings, name) <= 0:
            return f"--{name.replace('_', '-')} must be positive, got {getattr(settings, name)}"
    for name in ("step", "complex_step", "eps", "init_scale"):
        value = getattr(settings, name)
        if not (np.isfinite(value) and value > 0):  # also rejects nan
            return f"--{name.replace('_', '-')} must be a positive number, got {value}"
    if settings.sample is not None and settings.sample <= 0:
        return f"--sample must be positive, got {settings.sample}"
    return check_encoding(settings.encoding)


def build_problem(settings: GradcheckSettings) -> Problem:
    """The first batch of the corpus, the scaled initial weights and a zero initial state.

    The vocabulary is built from the whole text, as training does, so V matches training.
    """
    text = read_corpus(settings.data, settings.encoding, settings.errors)
    vocab = Vocab.from_text(text)
    check_vocabulary(vocab, settings.data)
    batches = StreamBatches(vocab.encode(text), settings.batch_size, settings.seq_length)
    inputs, targets = batches.get_batch(0)  # B = 1: the first seq_length + 1 characters
    params = init_params(len(vocab), settings.hidden_size, settings.seed, settings.cell, settings.num_layers)
    for name, value in params.items():
        if value.ndim == 2:  # the weight matrices; biases keep init_params' values
            value *= settings.init_scale
    state0 = zero_state(settings.cell, settings.num_layers, settings.batch_size, settings.hidden_size)
    return Problem(params, inputs, targets, state0, settings.cell)


def choose_entries(params: dict, sample: int | None, seed: int) -> dict:
    """name -> sorted flat indices to check: all of them, or ``sample`` drawn without replacement."""
    if sample is None:
        return {name: np.arange(params[name].size) for name in table_order(params)}
    rng = np.random.default_rng(seed)
    return {name: np.sort(rng.choice(params[name].size, size=min(sample, params[name].size), replace=False))
            for name in table_order(params)}


def run_method(method: str, problem: Problem, entries: dict, settings: GradcheckSettings) -> dict:
    """The summary (param -> {"max", "avg"}) of one comparison; see METHODS."""
    if method == "central":
        numerical = central_differences(manual_loss_function(problem), problem.params, entries, settings.step)
        return compare_gradients(manual_gradient(problem, entries), numerical, settings.eps)
    if method == "complex":
        numerical = complex_step(problem, entries, settings.complex_step)
        return compare_gradients(manual_gradient(problem, entries), numerical, settings.eps)
    if method == "torch-central":
        with torch_single_thread():
            numerical = central_differences(TorchLoss(problem), problem.params, entries, settings.step)
            return compare_gradients(autograd_gradient(problem, entries), numerical, settings.eps)
    if method == "manual-vs-autograd":
        with torch_single_thread():
            return compare_gradients(manual_gradient(problem, entries), autograd_gradient(problem, entries), settings.eps)
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def run_gradcheck(settings: GradcheckSettings) -> dict:
    """The report as the JSON interface: {"settings": {...}, "results": {METHOD: {PARAM: {"max", "avg"}}}}."""
    return check_problem(build_problem(settings), settings)


def check_problem(problem: Problem, settings: GradcheckSettings) -> dict:
    """run_gradcheck on a problem already built from the settings."""
    entries = choose_entries(problem.params, settings.sample, settings.seed)
    record = asdict(settings)
    record["vocab_size"] = int(problem.params["c"].size)
    record["entries_checked"] = {name: int(indices.size) for name, indices in entries.items()}
    results = {method: run_method(method, problem, entries, settings) for method in dict.fromkeys(settings.methods)}
    return {"settings": record, "results": results}


def describe_settings(record: dict) -> str:
    """One Markdown paragraph stating what the table was computed from."""
    corpus = "the built-in corpus" if record["data"] is None else f"`{record['data']}`"
    checked = sum(record["entries_checked"].values())
    forget_gates = " (LSTM forget gates 1)" if record["cell"] == "lstm" else ""
    which = "every entry" if record["sample"] is None else f"{record['sample']} random entries per parameter"
    return (
        f"Settings: {record['num_layers']}-layer {record['cell']}, hidden size {record['hidden_size']}, seq_length {record['seq_length']}, "
        f"batch size {record['batch_size']}, vocabulary {record['vocab_size']} characters from {corpus}, "
        f"one forward/backward pass from a zero hidden state; weights N(0, {INIT_STD}²) × {record['init_scale']:g} "
        f"(seed {record['seed']}), biases zero{forget_gates}; centred-difference step {record['step']:g}, "
        f"complex step {record['complex_step']:g}, eps {record['eps']:g}; {which} ({checked} in all), float64."
    )


def format_number(value) -> str:
    return "" if value is None else f"{value:.2e}"


def format_table(results: dict, with_original: bool = False) -> str:
    """Markdown table: a "weights" column, then a max/avg column pair per comparison."""
    columns = {"original": ORIGINAL_TABLE1} if with_original else {}
    columns.update({method: {row: (cell["max"], cell["avg"]) for row, cell in summary.items()}
                    for method, summary in results.items()})
    header = "| weights | " + " | ".join(f"{name} max | {name} avg" for name in columns) + " |"
    rule = "|---|" + "---:|---:|" * len(columns)
    rows = [
        f"| {row} | " + " | ".join(" | ".join(map(format_number, cells.get(row, (None, None)))) for cells in columns.values()) + " |"
        for row in next(iter(results.values()))
    ]
    return "\n".join([header, rule, *rows])


def format_report(report: dict, with_original: bool = False) -> str:
    """Settings, table and a legend of the columns, all Markdown."""
    legend = [f"- `{method}`: {METHODS[method]}" for method in report["results"]]
    if with_original:
        legend.insert(0, "- `original`: the original write-up's Table 1 (manual vs centred differences, h = 1e-4)")
    legend.append("- `All`: max over every entry; avg over every entry pooled.")
    return "\n".join([describe_settings(report["settings"]), "", format_table(report["results"], with_original),
                      "", *legend])


def main(argv=None) -> int:
    """The command line; errors end as one line on stderr, exit code 2 for bad input."""
    return run_cli(PROG, gradcheck_command, argv)


def gradcheck_command(argv: list) -> int:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    json_path, with_original = args.pop("json"), args.pop("with_original")
    settings = GradcheckSettings(**args)
    invalid = invalid_setting(settings)
    if invalid:
        parser.error(invalid)  # one line on stderr, exit code 2
    if json_path and not Path(json_path).absolute().parent.is_dir():  # say so before the work, not after
        parser.error(f"--json {json_path}: no such directory to write it in")
    try:
        problem = build_problem(settings)
    except (UsageError, ValueError) as error:  # unusable --data, or too short for one batch
        parser.error(str(error))
    report = check_problem(problem, settings)
    print(format_report(report, with_original))
    if json_path:
        try:
            Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
        except OSError as error:
            raise UsageError(f"--json {json_path}: cannot write it ({error.strerror or error})") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
