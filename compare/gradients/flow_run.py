"""What ``python -m compare.gradflow`` measures: each cell's curve at initialization and after training.

The chunk is the first T + 1 characters of the text (B = 1, from a zero state). The initial
weights are ``compare.model.init.init_params``'; the trained ones come from a checkpoint, or
from ``train_steps`` steps of the manual engine with compare.train's defaults (AdaGrad at the default --lr,
clip 5, chunks of 25, one stream), in float64, on the same text.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from compare.cli.errors import TrainingFailed, UsageError
from compare.data.corpus import StreamBatches, Vocab, check_vocabulary, read_corpus
from compare.gradients.flow import THRESHOLD, Chunk, autograd_flow, lag_below, manual_flow, max_relative_difference
from compare.gradients.oracles import torch_single_thread
from compare.model.cells import manual_cell
from compare.model.checkpoint import find_checkpoint, load_checkpoint
from compare.model.engines import NUMPY_DTYPES, make_engine
from compare.model.init import init_params
from compare.training.agreement import Verdict, relative_difference, worst
from compare.training.config import TrainConfig
from manual import zero_state

CELL_NAMES = ("rnn", "lstm", "gru")


@dataclass
class FlowSettings:
    """Everything the curves depend on."""

    cells: list[str] = field(default_factory=lambda: list(CELL_NAMES))  # with checkpoint: [--cell] or []
    hidden_size: int = 100
    seq_length: int = 100  # T of the measured chunk: the longest lag is T
    seed: int = 42  # of init_params
    dtype: str = "float64"  # of the measurement (training is always float64)
    train_steps: int = 1000  # 0: initialization only
    checkpoint: str | None = None  # trained weights from here instead of train_steps
    data: str | None = None  # None: the built-in corpus


@dataclass
class Curve:
    """One cell in one state: both computations of g_k, k = 0..T."""

    cell: str
    state: str  # "init" or "trained"
    manual: np.ndarray  # (T + 1,)
    autograd: np.ndarray  # (T + 1,)

    @property
    def lag(self) -> int | None:
        return lag_below(self.manual)

    @property
    def difference(self) -> float:
        return max_relative_difference(self.manual, self.autograd)

    @property
    def where(self) -> str:
        return f"the {self.cell} curve, {self.state}"

    def as_json(self) -> dict[str, Any]:
        return {
            "cell": self.cell,
            "state": self.state,
            "lag_below_threshold": self.lag,
            "max_relative_difference": self.difference,
            "manual": self.manual.tolist(),
            "autograd": self.autograd.tolist(),
        }


@dataclass
class Model:
    """The weights of one cell to measure, and the text and vocabulary they read."""

    cell: str
    init: dict[str, np.ndarray]
    trained: dict[str, np.ndarray] | None  # None: train_steps 0
    tokens: np.ndarray  # (N,) the text's ids


def check_fits(tokens: np.ndarray, steps: int) -> None:
    """The chunk is the text's first steps + 1 characters: UsageError if it is shorter."""
    if len(tokens) < steps + 1:
        raise UsageError(f"the text has {len(tokens)} characters, too few for --seq-length {steps}")


def checkpoint_model(settings: FlowSettings) -> Model:
    """The checkpoint's cell, its weights as trained, and init_params as its run started."""
    assert settings.checkpoint is not None  # the caller chose this path because it is set
    vouched = settings.cells[0] if settings.cells else None  # --cell: how a cell of your own loads
    checkpoint = load_checkpoint(find_checkpoint(settings.checkpoint), vouched)
    config = checkpoint.config
    vocab = Vocab(checkpoint.vocab)
    try:
        tokens = vocab.encode(read_corpus(settings.data))
    except ValueError as error:
        raise UsageError(
            f"the text does not fit the checkpoint's vocabulary ({error}): pass --data with the text it was trained on"
        ) from None
    check_fits(tokens, settings.seq_length)
    init = init_params(len(vocab), config["hidden_size"], config["seed"], config["cell"], config["num_layers"])
    return Model(config["cell"], init, checkpoint.engine.params, tokens)


def train_briefly(params: dict[str, np.ndarray], cell: str, tokens: np.ndarray, steps: int) -> dict[str, np.ndarray]:
    """``steps`` steps of the manual engine, compare.train's defaults, float64; the weights after them."""
    defaults = TrainConfig()
    engine = make_engine("manual", params, defaults.lr, defaults.clip, "float64", cell)
    batches = StreamBatches(tokens, defaults.batch_size, defaults.seq_length)
    for step in tqdm(range(steps), desc=f"train {cell}", unit="step", disable=None, leave=False):
        index = step % len(batches)
        if index == 0:
            engine.reset_hidden(defaults.batch_size)  # each epoch starts from h_0 = 0, as compare.train does
        stats = engine.train_step(*batches.get_batch(index))
        if not np.isfinite(stats.loss):
            raise TrainingFailed(f"training the {cell} diverged at step {step + 1} (loss {stats.loss})")
    return engine.numpy_params()


def fresh_models(settings: FlowSettings) -> list[Model]:
    """init_params for each cell, and each trained for settings.train_steps steps."""
    text = read_corpus(settings.data)
    vocab = Vocab.from_text(text)
    check_vocabulary(vocab, settings.data)
    tokens = vocab.encode(text)
    check_fits(tokens, settings.seq_length)  # before any training
    models = []
    for cell in settings.cells:
        init = init_params(len(vocab), settings.hidden_size, settings.seed, cell)
        trained = train_briefly(init, cell, tokens, settings.train_steps) if settings.train_steps else None
        models.append(Model(cell, init, trained, tokens))
    return models


def measure(params: dict[str, np.ndarray], model: Model, state: str, settings: FlowSettings) -> Curve:
    """Both computations of the curve on the first seq_length + 1 characters."""
    steps = settings.seq_length
    dtype = NUMPY_DTYPES[settings.dtype]
    inputs, targets = model.tokens[None, :steps].astype(np.int64), model.tokens[None, 1 : steps + 1].astype(np.int64)
    layers, hidden_size = sum(name.startswith("W") for name in params), params["W"].shape[1]
    state0 = zero_state(manual_cell(model.cell), layers, 1, hidden_size, dtype)
    chunk = Chunk({name: value.astype(dtype) for name, value in params.items()}, inputs, targets, state0, model.cell)
    with torch_single_thread():  # a (1, H) step at a time: threads only add overhead
        return Curve(model.cell, state, manual_flow(chunk), autograd_flow(chunk))


def run_gradflow(settings: FlowSettings) -> list[Curve]:
    """The curves, per cell: init, then trained (when there are trained weights)."""
    models = [checkpoint_model(settings)] if settings.checkpoint else fresh_models(settings)
    curves = []
    for model in models:
        curves.append(measure(model.init, model, "init", settings))
        if model.trained is not None:
            curves.append(measure(model.trained, model, "trained", settings))
    return curves


def flow_verdict(curves: list[Curve], dtype: str) -> Verdict:
    """The two computations of every curve, judged: max_k |manual g_k - autograd g_k| / max_k autograd g_k.

    Relative to the curve's largest norm, not to each g_k (the table's column): far lags, where g_k has
    shrunk by orders of magnitude (to 0 in float32), carry rounding that is large relative to themselves.
    """
    found: Verdict | None = None
    for curve in curves:
        found = worst(found, Verdict(relative_difference(curve.manual, curve.autograd), curve.where, dtype))
    assert found is not None, "run_gradflow measures at least one curve"
    return found


def report_json(settings: FlowSettings, curves: list[Curve]) -> dict[str, Any]:
    return {
        "settings": asdict(settings),
        "threshold": THRESHOLD,
        "curves": [curve.as_json() for curve in curves],
        "verdict": flow_verdict(curves, settings.dtype).as_json(),
    }


def format_table(curves: list[Curve], steps: int) -> str:
    """The Markdown table the command prints."""
    rows = [
        "| cell | state | g_0 = ‖dL_T/dh_T‖ | lag where g_k < 1e-3 g_0 | max relative difference, manual vs autograd |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for curve in curves:
        lag = f"> {steps}" if curve.lag is None else str(curve.lag)
        rows.append(f"| {curve.cell} | {curve.state} | {curve.manual[0]:.3g} | {lag} | {curve.difference:.1e} |")
    return "\n".join(rows)
