"""gradflow --truncation: the bias of truncated BPTT, measured against the exact gradient (docs/forward.md#truncation).

Training in chunks of K characters carries the state from chunk to chunk but treats each chunk's
starting state as a constant: the gradient of the stream's loss is cut at every boundary. On one long
stream (B = 1, from h_0 = 0, the loss summed over every character) this compares, for each K,

    g_K    the truncated gradient: the sum over the chunks of BPTT within each chunk (manual.backward)
    g      the exact gradient, by RTRL over the whole stream (manual.rtrl.stream)

on the recurrent parameters (U, W, b, flattened together; V and c see the same states either way, so
theirs are exact), as the relative error ||g_K - g|| / ||g|| and the cosine <g_K, g> / (||g_K|| ||g||).
Beside them, the gradient-flow curve of compare.gradflow at lag K, g_K / g_0 = ||dL_T/dh_{T-K}|| / ||dL_T/dh_T||
on the stream's first characters: the truncation drops the paths longer than the chunk, and the flow says
how much such a path still carries (Aicher, Foti & Fox, 2019: a geometric decay of the one bounds the other).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import manual
from compare.gradients.flow import Chunk, manual_flow
from manual import rtrl

LENGTHS = (1, 2, 5, 10, 25, 50, 100, 250, 500)  # K, characters per chunk


@dataclass
class TruncationRow:
    """One chunk length K on one model."""

    length: int  # K
    relative_error: float  # ||g_K - g|| / ||g|| over U, W, b
    cosine: float  # <g_K, g> / (||g_K|| ||g||)
    flow: float  # g_K / g_0 of the gradient-flow curve (nan when the stream is shorter than K)


def recurrent_vector(grads: dict[str, np.ndarray]) -> np.ndarray:
    """U, W, b of a gradient, flattened into one vector."""
    return np.concatenate([grads[name].ravel() for name in rtrl.RECURRENT])


def exact_gradient(params: dict[str, np.ndarray], cell: str, tokens: np.ndarray) -> np.ndarray:
    """g: RTRL over the whole stream, one chunk, the loss summed (B = 1, h_0 = 0)."""
    state0 = manual.zero_state(cell, 1, 1, params["W"].shape[1])
    inputs, targets = tokens[None, :-1], tokens[None, 1:]
    _, grads, _, _ = rtrl.stream(params, [(inputs, targets)], state0, cell, "sum")
    return recurrent_vector(grads)


def truncated_gradient(params: dict[str, np.ndarray], cell: str, tokens: np.ndarray, length: int) -> np.ndarray:
    """g_K: BPTT within each chunk of K characters, the state carried, each chunk's start a constant."""
    state = manual.zero_state(cell, 1, 1, params["W"].shape[1])
    total = {name: np.zeros_like(params[name]) for name in rtrl.RECURRENT}
    inputs, targets = tokens[None, :-1], tokens[None, 1:]
    for start in range(0, inputs.shape[1], length):
        piece = slice(start, start + length)  # the last chunk may be shorter
        _, cache = manual.forward(params, inputs[:, piece], targets[:, piece], state, cell, "sum")
        for name, grad in manual.backward(cache).items():
            if name in total:
                total[name] += grad
        state = cache.state_last
    return recurrent_vector(total)


def flow_curve(params: dict[str, np.ndarray], cell: str, tokens: np.ndarray, steps: int) -> np.ndarray:
    """g_k / g_0 for k = 0..steps, (steps + 1,): compare.gradflow's curve on the stream's first steps + 1 characters."""
    chunk = Chunk(
        params,
        tokens[None, :steps],
        tokens[None, 1 : steps + 1],
        manual.zero_state(cell, 1, 1, params["W"].shape[1]),
        cell,
    )
    norms = manual_flow(chunk)  # g_k = ||dL_T/dh_{T-k}||
    return norms / norms[0]


def flow_steps(tokens: np.ndarray, lengths: tuple[int, ...] = LENGTHS) -> int:
    """How far back the flow curve beside a table reaches: the longest K, or the whole stream if shorter."""
    return min(max(lengths), len(tokens) - 1)


def truncation_bias(
    params: dict[str, np.ndarray], cell: str, tokens: np.ndarray, lengths: tuple[int, ...] = LENGTHS
) -> list[TruncationRow]:
    """One row per K in ``lengths`` (those shorter than the stream), tokens (N,) ids: a stream of N - 1 steps."""
    exact = exact_gradient(params, cell, tokens)
    steps = flow_steps(tokens, lengths)
    flow = flow_curve(params, cell, tokens, steps)
    rows = []
    for length in lengths:
        if length >= len(tokens) - 1:
            continue
        truncated = truncated_gradient(params, cell, tokens, length)
        error = float(np.linalg.norm(truncated - exact) / np.linalg.norm(exact))
        cosine = float(truncated @ exact / (np.linalg.norm(truncated) * np.linalg.norm(exact)))
        reach = float(flow[length]) if length <= steps else float("nan")
        rows.append(TruncationRow(length, error, cosine, reach))
    return rows


def format_truncation(tables: dict[str, list[TruncationRow]]) -> str:
    """Markdown: a row per K, for each model (cell and state) the relative error, the cosine and the flow."""
    models = list(tables)
    header = (
        "| K | " + " | ".join(f"{model} rel. error | {model} cosine | {model} flow g_K/g_0" for model in models) + " |"
    )
    rule = "|---:|" + "---:|---:|---:|" * len(models)
    lengths = sorted({row.length for rows in tables.values() for row in rows})
    lines = [header, rule]
    for length in lengths:
        cells = []
        for model in models:
            row = next((row for row in tables[model] if row.length == length), None)
            cells += (
                ["", "", ""] if row is None else [f"{row.relative_error:.2e}", f"{row.cosine:.6f}", f"{row.flow:.2e}"]
            )
        lines.append(f"| {length} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """python -m compare.gradflow --truncation: the table, per cell, at init and (with --train-steps) trained."""
    from pathlib import Path

    from compare.cli.errors import UsageError
    from compare.cli.parser import CommandParser, comma_list
    from compare.data.corpus import Vocab, read_corpus
    from compare.gradients.flow_run import train_briefly
    from compare.model.init import init_params
    from compare.plotting.events import PlotError
    from compare.plotting.figure import figure_problem, save_png

    parser = CommandParser(
        prog="python -m compare.gradflow --truncation",
        description="The truncated BPTT gradient against the exact one (RTRL) on a long stream, against K.",
    )
    parser.add_argument("--cells", default="rnn,lstm,gru", help="comma-separated cells (default: %(default)s)")
    parser.add_argument("--hidden-size", type=int, default=16, metavar="H", help="(default: %(default)s)")
    parser.add_argument(
        "--stream-length", type=int, default=2000, metavar="N", help="characters in the stream (default: %(default)s)"
    )
    parser.add_argument(
        "--train-steps", type=int, default=0, help="also measure after this many training steps (default: init only)"
    )
    parser.add_argument("--seed", type=int, default=42, help="of init_params (default: %(default)s)")
    parser.add_argument(
        "--out",
        metavar="PNG",
        help="also draw the errors against K beside the gradient flow, log-log (needs matplotlib)",
    )
    args = parser.parse_args(argv)
    cells = comma_list(args.cells)
    if not cells or any(cell not in ("rnn", "lstm", "gru") for cell in cells):
        parser.error(f"--cells must name built-in cells (rnn, lstm, gru), got {args.cells!r}")
    if not 1 <= args.hidden_size <= 64:
        parser.error(f"--hidden-size must be between 1 and 64 (RTRL is O(H^4) a step), got {args.hidden_size}")
    if not 2 <= args.stream_length <= 100_000:
        parser.error(f"--stream-length must be between 2 and 100,000, got {args.stream_length}")
    if args.train_steps < 0:
        parser.error(f"--train-steps must be >= 0, got {args.train_steps}")
    if problem := figure_problem(args.out):
        parser.error(problem)
    text = read_corpus(None)
    vocab = Vocab.from_text(text)
    tokens = vocab.encode(text).astype(np.int64)
    stream = tokens[: args.stream_length + 1]
    weights = {}  # model ("<cell> <state>") -> its parameters
    for cell in cells:
        weights[f"{cell} init"] = init_params(len(vocab), args.hidden_size, args.seed, cell)
        if args.train_steps:
            weights[f"{cell} trained"] = train_briefly(weights[f"{cell} init"], cell, tokens, args.train_steps)
    tables = {model: truncation_bias(params, model.split()[0], stream) for model, params in weights.items()}
    print(
        f"H = {args.hidden_size}, a stream of {len(stream) - 1} characters of the built-in corpus, B = 1, "
        "from h_0 = 0, the loss summed; errors over U, W, b; float64."
    )
    print()
    print(format_truncation(tables))
    if args.out:
        from compare.plotting.forward_figure import draw_truncation

        flows = {model: flow_curve(weights[model], model.split()[0], stream, flow_steps(stream)) for model in tables}
        try:
            save_png(draw_truncation(tables, flows), Path(args.out))
        except PlotError as error:
            raise UsageError(str(error)) from None
    return 0
