"""docs/gradflow.md's figures: compare.gradflow's lag table for rnn, lstm and gru, and docs/gradflow.png.

The table is the one the command prints, inserted as it is; the sentence under it and the
figure come from the same run (its --json and --out).
"""

from __future__ import annotations

import json

from compare.reporting.runner import Block, Context

FLAGS = ["--train-steps", 5000]  # the defaults otherwise: H 100, a chunk of T 100, float64, seed 42
TINY_FLAGS = ["--hidden-size", 4, "--seq-length", 10, "--train-steps", 3]
FIGURE = "gradflow.png"


def gradflow(ctx: Context) -> list:
    json_path = ctx.workdir / "gradflow.json"
    draw, drawn = ctx.figure(FIGURE, "g_k / g_0 against the lag k, per cell")
    args = [*(TINY_FLAGS if ctx.tiny else FLAGS), "--json", json_path, *draw]
    finished = ctx.run("compare.gradflow", args)
    settings = json.loads(json_path.read_text(encoding="utf-8"))["settings"]
    steps, trained = settings["seq_length"], settings["train_steps"]
    body = (
        f"{finished.stdout.strip()}\n\n"
        f"H {settings['hidden_size']}, the chunk the first {steps + 1:,} characters of the built-in corpus, "
        f"{settings['dtype']}; *init*: init_params (seed {settings['seed']}), *trained*: after {trained:,} steps "
        f"of compare.train's defaults. *> {steps}*: still above 1e-3 g_0 at h_0, the chunk's start.\n\n{drawn}"
    )
    return [Block("gradflow", body, [finished.shown])]
