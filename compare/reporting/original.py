"""The section of docs/original.md: --preset original against PyTorch's rule, on the built-in corpus.

Both runs train the same model from the same init on the same text for the same steps; the only
difference is the training rule (the loss's reduction and AdaGrad's eps). The smooth loss is read
back from TensorBoard (``loss/smooth``, nats per character) and also shown times T, in the unit
min-char-rnn prints (``iter %d, loss: %f``: nats per 25-character chunk).
"""

from __future__ import annotations

import math

from compare.reporting.runner import Block, Context
from compare.reporting.text import table
from compare.reporting.training import scalars, train

SEQ_LENGTH = 25  # the preset's T: the factor between the two units
PYTORCH_RULE = ["--loss-reduction", "mean", "--adagrad-eps", "1e-10", "--adagrad-eps-placement", "outside"]


def original(ctx: Context) -> list:
    """Two runs of --preset original, min-char-rnn's rule and PyTorch's: the smooth loss along the way."""
    from compare.data.corpus import builtin_corpus

    vocab_size = len(set(builtin_corpus()))  # --preset original trains on all of it: --val-frac 0
    steps = (1, 2, 5) if ctx.tiny else (100, 1000, 10000)
    tiny = ["--hidden-size", 8, "--log-every", 1, "--sample-every", 5]
    rules = [("min-char-rnn's: `--preset original`", []), (f"PyTorch's: `{' '.join(PYTORCH_RULE)}`", PYTORCH_RULE)]
    rows, commands = [], []
    for index, (rule, flags) in enumerate(rules):
        run_dir, shown, _ = train(
            ctx, f"original-{index}", ["--preset", "original", *flags, "--max-steps", steps[-1]], tiny
        )
        series = scalars(run_dir, "manual", ("loss/smooth",))["loss/smooth"]
        by_step = dict(zip(series.steps, series.values, strict=True))
        rows.append([rule, *(f"{SEQ_LENGTH * by_step[step]:.2f}" for step in steps), f"{by_step[steps[-1]]:.3f}"])
        commands.append(shown)
    header = [
        "training rule",
        *(f"smooth loss after step {step:,} (nats/chunk)" for step in steps),
        f"after step {steps[-1]:,} (nats/char)",
    ]
    body = (
        "The smooth loss in min-char-rnn's unit (nats per 25-character chunk, `loss/smooth` x 25), "
        "one run per rule, the same model, init and text:\n\n" + table(header, rows) + "\n\nBoth start from "
        f"25 ln V = {SEQ_LENGTH * math.log(vocab_size):.2f} (V = {vocab_size} characters), the value min-char-rnn's "
        "`smooth_loss` starts from."
    )
    return [Block("original", body, commands)]
