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


def truncation_bias(
    params: dict[str, np.ndarray], cell: str, tokens: np.ndarray, lengths: tuple[int, ...] = LENGTHS
) -> list[TruncationRow]:
    """One row per K in ``lengths`` (those shorter than the stream), tokens (N,) ids: a stream of N - 1 steps."""
    exact = exact_gradient(params, cell, tokens)
    steps = min(max(lengths), len(tokens) - 1)
    flow_chunk = Chunk(
        params,
        tokens[None, :steps],
        tokens[None, 1 : steps + 1],
        manual.zero_state(cell, 1, 1, params["W"].shape[1]),
        cell,
    )
    flow = manual_flow(flow_chunk)  # (steps + 1,): g_k for k = 0..steps
    rows = []
    for length in lengths:
        if length >= len(tokens) - 1:
            continue
        truncated = truncated_gradient(params, cell, tokens, length)
        error = float(np.linalg.norm(truncated - exact) / np.linalg.norm(exact))
        cosine = float(truncated @ exact / (np.linalg.norm(truncated) * np.linalg.norm(exact)))
        reach = float(flow[length] / flow[0]) if length <= steps else float("nan")
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
    from compare.cli.parser import CommandParser, comma_list
    from compare.data.corpus import Vocab, read_corpus
    from compare.gradients.flow_run import train_briefly
    from compare.model.init import init_params

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
    text = read_corpus(None)
    vocab = Vocab.from_text(text)
    tokens = vocab.encode(text).astype(np.int64)
    stream = tokens[: args.stream_length + 1]
    tables = {}
    for cell in cells:
        init = init_params(len(vocab), args.hidden_size, args.seed, cell)
        tables[f"{cell} init"] = truncation_bias(init, cell, stream)
        if args.train_steps:
            trained = train_briefly(init, cell, tokens, args.train_steps)
            tables[f"{cell} trained"] = truncation_bias(trained, cell, stream)
    print(
        f"H = {args.hidden_size}, a stream of {len(stream) - 1} characters of the built-in corpus, B = 1, "
        "from h_0 = 0, the loss summed; errors over U, W, b; float64."
    )
    print()
    print(format_truncation(tables))
    return 0
