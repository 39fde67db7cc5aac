"""The gradient check (gradcheck's Table 1): one problem, every oracle, the relative errors per parameter, as Markdown.

For every entry of each parameter the relative error

    |ga - gn| / max(eps, |ga| + |gn|)

between two gradient estimates (see compare.gradients.oracles); the report keeps its
max and average per parameter, for each comparison in METHODS. As Markdown: the settings,
the table, a legend of its columns, the verdict.

Its verdict is a separate measurement: manual against autograd on every entry, whatever --methods
and --sample say, as a norm-wise relative difference per parameter (compare.training.agreement),
judged against float64's bound. An entry's relative error above is no verdict: an entry whose
gradient is a near-cancelling sum has a large one from rounding alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

import manual
from compare.cli.errors import UsageError
from compare.cli.parser import seed_problem
from compare.data.corpus import StreamBatches, Vocab, check_encoding, check_vocabulary, read_corpus
from compare.gradients.oracles import (
    Problem,
    TorchLoss,
    autograd_gradient,
    central_differences,
    compare_gradients,
    complex_step,
    manual_gradient,
    manual_loss_function,
    table_order,
    torch_single_thread,
)
from compare.model.cells import cell_pair, cell_problem, check_run_sizes, manual_cell
from compare.model.init import INIT_STD, SIZE_LIMITS, estimated_memory, init_params, memory_problem, size_problem
from compare.training.agreement import Agreement, Verdict, relative_difference
from manual import zero_state

METHODS = {  # name -> what its column compares (printed under the table)
    "central": "manual BPTT vs centred differences (L(θ+h) − L(θ−h)) / 2h of the manual loss",
    "complex": "manual BPTT vs complex step Im L(θ + ih) / h of the manual loss in complex128",
    "torch-central": "torch autograd vs centred differences of the torch loss (float64)",
    "manual-vs-autograd": "manual BPTT vs torch autograd",
}


@dataclass
class GradcheckSettings:
    """Everything the numbers depend on; the defaults are the original's settings."""

    hidden_size: int = 5
    cell: str = "rnn"  # rnn, lstm, gru, or an import path or file of a cell (compare.model.cells)
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
    methods: list[str] = field(default_factory=lambda: list(METHODS))


def invalid_setting(settings: GradcheckSettings) -> str | None:
    """A one-line description of the first invalid setting, or None."""
    for name in ("hidden_size", "num_layers", "seq_length", "batch_size"):
        if getattr(settings, name) <= 0:
            return f"--{name.replace('_', '-')} must be positive, got {getattr(settings, name)}"
    problem = size_problem({name: getattr(settings, name) for name in SIZE_LIMITS})
    if problem:
        return problem
    for name in ("step", "complex_step", "eps", "init_scale"):
        value = getattr(settings, name)
        if not (np.isfinite(value) and value > 0):  # also rejects nan
            return f"--{name.replace('_', '-')} must be a positive number, got {value}"
    if settings.sample is not None and settings.sample <= 0:
        return f"--sample must be positive, got {settings.sample}"
    return seed_problem(settings.seed) or cell_problem(settings.cell) or check_encoding(settings.encoding)


def build_problem(settings: GradcheckSettings) -> Problem:
    """The first batch of the corpus, the scaled initial weights and a zero initial state.

    The vocabulary is built from the whole text, as training does, so V matches training.
    """
    text = read_corpus(settings.data, settings.encoding, settings.errors)
    vocab = Vocab.from_text(text)
    check_vocabulary(vocab, settings.data)
    needed = estimated_memory(
        len(vocab), settings.hidden_size, settings.cell, settings.num_layers, settings.batch_size, settings.seq_length
    )
    problem = memory_problem(needed, "the gradient check", "lower --hidden-size, --num-layers or --seq-length")
    if problem:
        raise UsageError(problem)
    batches = StreamBatches(vocab.encode(text), settings.batch_size, settings.seq_length)
    inputs, targets = batches.get_batch(0)  # B = 1: the first seq_length + 1 characters
    check_run_sizes(settings.cell, manual_cell(settings.cell), inputs.shape, settings.hidden_size, "float64")
    params = init_params(len(vocab), settings.hidden_size, settings.seed, settings.cell, settings.num_layers)
    for value in params.values():
        if value.ndim == 2:  # the weight matrices; biases keep init_params' values
            value *= settings.init_scale
    state0 = zero_state(manual_cell(settings.cell), settings.num_layers, settings.batch_size, settings.hidden_size)
    return Problem(params, inputs, targets, state0, settings.cell)


def choose_entries(params: dict[str, np.ndarray], sample: int | None, seed: int) -> dict[str, np.ndarray]:
    """name -> sorted flat indices to check: all of them, or ``sample`` drawn without replacement."""
    if sample is None:
        return {name: np.arange(params[name].size) for name in table_order(params)}
    rng = np.random.default_rng(seed)
    return {
        name: np.sort(rng.choice(params[name].size, size=min(sample, params[name].size), replace=False))
        for name in table_order(params)
    }


def run_method(
    method: str, problem: Problem, entries: dict[str, np.ndarray], settings: GradcheckSettings
) -> dict[str, dict[str, float]]:
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
            return compare_gradients(
                manual_gradient(problem, entries), autograd_gradient(problem, entries), settings.eps
            )
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def run_gradcheck(settings: GradcheckSettings) -> dict[str, Any]:
    """The report as the JSON interface: {"settings": {...}, "results": {METHOD: {PARAM: {"max", "avg"}}}}."""
    return check_problem(build_problem(settings), settings)


def check_problem(problem: Problem, settings: GradcheckSettings) -> dict[str, Any]:
    """run_gradcheck on a problem already built from the settings."""
    entries = choose_entries(problem.params, settings.sample, settings.seed)
    record = asdict(settings)
    record["vocab_size"] = int(problem.params["c"].size)
    record["entries_checked"] = {name: int(indices.size) for name, indices in entries.items()}
    results = {method: run_method(method, problem, entries, settings) for method in dict.fromkeys(settings.methods)}
    return {"settings": record, "results": results, "verdict": implementation_verdict(problem).as_json()}


def implementation_verdict(problem: Problem) -> Verdict:
    """Manual BPTT against autograd on the whole problem: the losses and every gradient, float64."""
    recurrence = cell_pair(problem.cell).manual
    manual_loss, cache = manual.forward(problem.params, problem.inputs, problem.targets, problem.state0, recurrence)
    mine = manual.backward(cache)
    with torch_single_thread():
        twin = TorchLoss(problem)
        theirs = twin.gradient()
        torch_loss = twin(problem.params)
    loss = relative_difference(np.asarray(manual_loss), np.asarray(torch_loss))
    grads = {name: relative_difference(mine[name], theirs[name]) for name in mine}
    return Agreement(loss, grads).verdict("float64")


# ----- the report as Markdown ---------------------------------------------------------------------

# The original write-up's Table 1: (max, avg); it gave no average over all weights.
ORIGINAL_TABLE1: dict[str, tuple[float, float | None]] = {
    "b": (6.21e-09, 3.45e-09),
    "c": (9.74e-10, 7.07e-10),
    "U": (5.38e-08, 7.64e-10),
    "W": (1.87e-06, 1.92e-07),
    "V": (2.72e-07, 1.58e-08),
    "All": (1.87e-06, None),
}


def describe_settings(record: dict[str, Any]) -> str:
    """One Markdown paragraph stating what the table was computed from."""
    corpus = "the built-in corpus" if record["data"] is None else f"`{record['data']}`"
    checked = sum(record["entries_checked"].values())
    forget_gates = " (LSTM forget gates 1)" if record["cell"] == "lstm" else ""
    which = "every entry" if record["sample"] is None else f"{record['sample']} random entries per parameter"
    return (
        f"Settings: {record['num_layers']}-layer {record['cell']}, hidden size {record['hidden_size']}, "
        f"seq_length {record['seq_length']}, "
        f"batch size {record['batch_size']}, vocabulary {record['vocab_size']} characters from {corpus}, "
        f"one forward/backward pass from a zero hidden state; weights N(0, {INIT_STD}²) × {record['init_scale']:g} "
        f"(seed {record['seed']}), biases zero{forget_gates}; centred-difference step {record['step']:g}, "
        f"complex step {record['complex_step']:g}, eps {record['eps']:g}; {which} ({checked} in all), float64."
    )


def format_number(value: float | None) -> str:
    return "" if value is None else f"{value:.2e}"


def format_table(results: dict[str, dict[str, dict[str, float]]], with_original: bool = False) -> str:
    """Markdown table: a "weights" column, then a max/avg column pair per comparison."""
    columns: dict[str, dict[str, tuple[float, float | None]]] = {"original": ORIGINAL_TABLE1} if with_original else {}
    columns.update(
        {
            method: {row: (cell["max"], cell["avg"]) for row, cell in summary.items()}
            for method, summary in results.items()
        }
    )
    header = "| weights | " + " | ".join(f"{name} max | {name} avg" for name in columns) + " |"
    rule = "|---|" + "---:|---:|" * len(columns)
    rows = [
        f"| {row} | "
        + " | ".join(" | ".join(map(format_number, cells.get(row, (None, None)))) for cells in columns.values())
        + " |"
        for row in next(iter(results.values()))
    ]
    return "\n".join([header, rule, *rows])


def report_verdict(report: dict[str, Any]) -> Verdict:
    """The verdict the report holds (implementation_verdict, above), as a Verdict."""
    return Verdict.from_json(report["verdict"])


def format_report(report: dict[str, Any], with_original: bool = False) -> str:
    """Settings, table and a legend of the columns, all Markdown; the verdict's line last."""
    legend = [f"- `{method}`: {METHODS[method]}" for method in report["results"]]
    if with_original:
        legend.insert(0, "- `original`: the original write-up's Table 1 (manual vs centred differences, h = 1e-4)")
    legend.append("- `All`: max over every entry; avg over every entry pooled.")
    return "\n".join(
        [
            describe_settings(report["settings"]),
            "",
            format_table(report["results"], with_original),
            "",
            *legend,
            "",
            report_verdict(report).line(),
        ]
    )
