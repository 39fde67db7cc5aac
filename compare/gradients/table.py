"""The gradient-check report as Markdown: the settings, the table, a legend of its columns, the verdict."""

from __future__ import annotations

from typing import Any

from compare.gradients.report import METHODS
from compare.model.init import INIT_STD
from compare.training.agreement import Verdict

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
    """The verdict the report holds (compare.gradients.report.implementation_verdict), as a Verdict."""
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
