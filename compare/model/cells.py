"""--cell: a built-in cell by name, or a cell of your own by import path or file (docs/cells.md).

    rnn, lstm, gru                 the built-in cells: manual/{rnn,lstm,gru}.py and torchref/{rnn,lstm,gru}.py
    mypackage.mycell               a module importable from sys.path (the working directory is on it)
    path/to/mycell.py              a Python file, loaded under a name derived from its absolute path

A plugged-in cell is ONE module that holds both implementations of the recurrence (the
interface is in docs/cells.md#writing-a-cell):

    GATES, STATE_PARTS             ints: G gate blocks in the rows of U, W, b; P parts of the carried state
    recurrence_forward(x_proj, W, state0) -> (hidden, state_T, cache)   NumPy, over a chunk
    recurrence_backward(d_hidden, cache) -> (d_x_proj, d_W)             NumPy, hand-written BPTT
    step(x_proj_t, W, state) -> (h_t, state_t)                          torch, one step; autograd differentiates it

Optional: GATE_NAMES; ``trace`` in recurrence_backward (gradcheck --diagnose's per-step dL/dh_t and
carry); step_backward(d_state, t, cache), one step of the backward alone, which gradflow and train
--gradflow-every need (``flow_problem``).

``manual`` and ``torchref`` never import this module: they take the resolved module objects.
The resolver is the one every command uses (train, gradcheck, bench, sample, and gradflow).

A checkpoint records its cell's name and, for a cell of your own, the SHA-256 of the module's source
file (cell_digest). Loading never imports a module because a checkpoint names it: a plugged-in cell
loads only when --cell names it too, and only if its source is the one recorded (checkpoint_cell).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

import manual
from compare.cli.errors import UsageError

BUILTIN_CELLS = ("rnn", "lstm", "gru")
DOC = "docs/cells.md#writing-a-cell"
FLOW_DOC = "docs/cells.md#one-step-backward-step_backward"  # the optional part gradflow needs
INTERFACE = ("GATES", "STATE_PARTS", "recurrence_forward", "recurrence_backward", "step")  # in the docs' order
COUNTS = ("GATES", "STATE_PARTS")  # the two positive ints; the rest are functions
NAMES = (("GATE_NAMES", "GATES", "gate block"), ("STATE_NAMES", "STATE_PARTS", "part of the carried state"))


class CellError(UsageError):
    """A --cell value that names no usable cell; the message is the one line the user sees."""


@dataclass(frozen=True)
class CellPair:
    """One cell, both sides: ``manual`` has recurrence_forward/backward, ``torch`` has step."""

    name: str  # the --cell value as recorded in configs and checkpoints
    manual: ModuleType
    torch: ModuleType

    @property
    def gates(self) -> int:
        return int(self.manual.GATES)

    @property
    def state_parts(self) -> int:
        return int(self.manual.STATE_PARTS)

    def check_sizes(self, module: ModuleType, inputs_shape: tuple[int, ...], hidden: int, dtype: str) -> None:
        """check_run_sizes for this cell's ``module`` (its manual or its torch side) at a call's own sizes."""
        check_run_sizes(self.name, module, inputs_shape, hidden, dtype)


def is_file_path(name: str) -> bool:
    return name.endswith(".py") or "/" in name or "\\" in name


def cell_label(name: str) -> str:
    """A short name for run directories and tables: 'lstm', 'mgu' for compare.examples.mgu or path/to/mgu.py."""
    if is_file_path(name):
        return Path(name).stem
    return name.rsplit(".", 1)[-1]


def record_name(name: str) -> str:
    """The --cell value to record in a config: a file path made absolute, so that a resume elsewhere finds it."""
    return str(Path(name).resolve()) if is_file_path(name) else name


def load_file(name: str) -> ModuleType:
    """The module in the file ``name``, loaded once per process (sys.modules keeps it, as for an import)."""
    path = Path(name).resolve()
    if not path.is_file():
        raise CellError(f"--cell {name}: no such file")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    module_name = f"bptt_cell_{path.stem}_{digest}"  # two files with one stem are two modules
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None  # a .py file always has a source loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # before exec, as the import system does, so the module can refer to itself
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[module_name]
        raise CellError(f"--cell {name}: importing it failed ({type(error).__name__}: {error})") from error
    return module


def load_module(name: str) -> ModuleType:
    """The module a --cell value names: by file path or by dotted import path."""
    if is_file_path(name):
        return load_file(name)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is not None and name.startswith(error.name):  # the module itself is missing, not one it imports
            raise CellError(
                f"--cell {name}: no cell of that name (built-in: {', '.join(BUILTIN_CELLS)}) "
                f"and no module to import (see {DOC})"
            ) from error
        raise CellError(f"--cell {name}: importing it failed (ModuleNotFoundError: {error})") from error
    except Exception as error:
        raise CellError(f"--cell {name}: importing it failed ({type(error).__name__}: {error})") from error


def interface_problem(name: str, module: ModuleType) -> str | None:
    """The one-line complaint about the first part of the interface the module lacks, or None."""
    for part in INTERFACE:
        if not hasattr(module, part):
            return f"--cell {name}: the module has no {part} (see {DOC})"
        value = getattr(module, part)
        if part in COUNTS:
            if not (isinstance(value, int) and value > 0):
                return f"--cell {name}: {part} is {value!r}, expected a positive int (see {DOC})"
        elif not callable(value):
            return f"--cell {name}: {part} is not a function (see {DOC})"
    for names, count, each in NAMES:  # optional: the diagnosis's names of the gate blocks and state parts
        value = getattr(module, names, None)
        expected = getattr(module, count)
        if value is not None and not (isinstance(value, (tuple, list)) and len(value) == expected):
            return f"--cell {name}: {names} is {value!r}, expected one name per {each}, {count} = {expected}"
    return None


# What a plugged-in cell returns, checked by running it: once on a small probe when it loads, and again at
# a run's own sizes (check_run_sizes, from the engines and gradcheck). A broken promise is one CellError
# naming the function, what it returned and what the interface expects, never an IndexError deep in the model.


class Sizes(NamedTuple):
    """T, B, H of one call of the cell."""

    steps: int
    streams: int
    hidden: int


PROBE = Sizes(steps=5, streams=3, hidden=4)  # distinct, so that a shape in a message says which axis is which
SAMPLING = Sizes(steps=1, streams=1, hidden=4)  # one character of one stream, as sampling calls it
PROBE_DTYPES = ("float64", "float32")  # the dtypes a run computes in; each side must return the one it is given
CHECKED: set[tuple[ModuleType, Sizes, str, bool]] = set()  # (module, sizes, dtype, step_backward too) passed


def traces(cell: ModuleType) -> bool:
    """Whether the cell's recurrence_backward takes the optional ``trace`` dict."""
    return "trace" in inspect.signature(cell.recurrence_backward).parameters


class Contract:
    """One call of each of a cell's functions on random inputs of ``sizes`` and ``dtype``, and the checks
    on what each returns; ``broken`` words the first promise it breaks."""

    def __init__(self, name: str, module: ModuleType, sizes: Sizes, dtype: str) -> None:
        self.name, self.module, self.sizes, self.dtype = name, module, sizes, np.dtype(dtype)
        gates, parts = int(module.GATES), int(module.STATE_PARTS)
        self.axes = {"T": sizes.steps, "B": sizes.streams, "H": sizes.hidden, "P": parts, "G*H": gates * sizes.hidden}
        self.rng = np.random.default_rng(0)
        self.W = self.random("G*H", "H")  # the one recurrent weight every call uses

    def broken(self, complaint: str) -> CellError:
        sizes = self.sizes
        return CellError(
            f"--cell {self.name}: {complaint} (called with T {sizes.steps}, B {sizes.streams}, H {sizes.hidden}, "
            f"G {self.module.GATES}, P {self.module.STATE_PARTS}, {self.dtype.name}; see {DOC})"
        )

    def shape(self, axes: tuple[str, ...]) -> tuple[int, ...]:
        return tuple(self.axes[axis] for axis in axes)

    def random(self, *axes: str) -> np.ndarray:
        """An input of the named axes' sizes, N(0, 0.5^2) in the contract's dtype."""
        return self.rng.normal(0.0, 0.5, size=self.shape(axes)).astype(self.dtype)

    def call(self, function: str, names: tuple[str, ...], *args: object, **kwargs: object) -> tuple:
        """The cell's ``function`` called, its result unpacked into ``names``; CellError if it raises."""
        try:
            returned = getattr(self.module, function)(*args, **kwargs)
        except Exception as error:
            raise self.broken(f"{function} raised {type(error).__name__}: {error}") from error
        if len(names) == 1:
            return (returned,)
        if not (isinstance(returned, tuple) and len(returned) == len(names)):
            got = f"{len(returned)} values" if isinstance(returned, tuple) else type(returned).__name__
            raise self.broken(f"{function} returned {got}, expected the {len(names)} values ({', '.join(names)})")
        return returned

    def expect(self, function: str, what: str, value: Any, axes: tuple[str, ...]) -> None:
        """``value``, which ``function`` returned as ``what``, is an array of the named axes in the contract's
        dtype: a NumPy array from the NumPy side, a tensor from ``step``."""
        import torch

        torch_side = function == "step"
        is_array = isinstance(value, torch.Tensor) if torch_side else isinstance(value, np.ndarray)
        label = "torch tensor" if torch_side else "NumPy array"
        dtype = getattr(torch, self.dtype.name) if torch_side else self.dtype
        expected = f"({', '.join(axes)}) = {self.shape(axes)}"
        if not is_array:
            raise self.broken(f"{function} returned {what} as {type(value).__name__}, expected a {label} {expected}")
        if tuple(value.shape) != self.shape(axes):
            raise self.broken(f"{function} returned {what} of shape {tuple(value.shape)}, expected {expected}")
        if value.dtype != dtype:
            actual = str(value.dtype).removeprefix("torch.")
            expected_dtype = f"expected {self.dtype.name}, its inputs' dtype"
            raise self.broken(f"{function} returned {what} of dtype {actual}, {expected_dtype}")

    def check_recurrence(self) -> object:
        """recurrence_forward and recurrence_backward (with its trace, if it takes one); returns the cache."""
        forward = "recurrence_forward"
        hidden, state_T, cache = self.call(
            forward, ("hidden", "state_T", "cache"), self.random("T", "B", "G*H"), self.W, self.random("P", "B", "H")
        )
        self.expect(forward, "hidden", hidden, ("T", "B", "H"))
        self.expect(forward, "state_T", state_T, ("P", "B", "H"))
        backward = "recurrence_backward"
        trace: dict[str, np.ndarray] | None = {} if traces(self.module) else None
        options = {} if trace is None else {"trace": trace}
        d_x_proj, d_W = self.call(backward, ("d_x_proj", "d_W"), self.random("T", "B", "H"), cache, **options)
        self.expect(backward, "d_x_proj", d_x_proj, ("T", "B", "G*H"))
        self.expect(backward, "d_W", d_W, ("G*H", "H"))
        if trace is not None:
            for key, axes in (("d_h", ("T", "B", "H")), ("d_carry", ("T", "P", "B", "H"))):
                self.expect(backward, f'trace["{key}"]', trace.get(key), axes)
        return cache

    def check_step(self) -> None:
        """The torch step, once, from a random state."""
        import torch

        x_proj, state = (torch.from_numpy(self.random(*axes)) for axes in (("B", "G*H"), ("P", "B", "H")))
        h_t, state_t = self.call("step", ("h_t", "state_t"), x_proj, torch.from_numpy(self.W), state)
        self.expect("step", "h_t", h_t, ("B", "H"))
        self.expect("step", "state_t", state_t, ("P", "B", "H"))

    def check_step_backward(self, cache: object) -> None:
        """The optional one step of the backward, at the last step t = T."""
        (d_state,) = self.call("step_backward", ("d_state",), self.random("P", "B", "H"), self.sizes.steps, cache)
        self.expect("step_backward", "d_state", d_state, ("P", "B", "H"))


def check_contract(name: str, module: ModuleType, sizes: Sizes, dtype: str, flow: bool = False) -> None:
    """Run the cell at ``sizes`` in ``dtype`` (and with ``flow`` its step_backward too), once per process;
    CellError (one line) at the first returned shape or dtype that breaks the interface, or at an exception."""
    key = (module, sizes, dtype, flow)
    if key in CHECKED:
        return
    contract = Contract(name, module, sizes, dtype)
    cache = contract.check_recurrence()
    contract.check_step()
    if flow:
        contract.check_step_backward(cache)
    CHECKED.add(key)


def check_run_sizes(name: str, module: ModuleType, inputs_shape: tuple[int, ...], hidden: int, dtype: str) -> None:
    """The contract again at a call's own sizes, for a cell that is not built in: inputs (B, T) ids, or (B,)
    tokens of one step. A shape that depends on T, B or H is named here, before the model meets it."""
    if name not in BUILTIN_CELLS:
        streams, steps = (*inputs_shape, 1)[:2]
        check_contract(name, module, Sizes(steps, streams, hidden), dtype)


def plugged_in(name: str) -> ModuleType:
    """The module of a cell that is not built in, its interface checked; CellError (one line) when unusable."""
    module = load_module(name)
    problem = interface_problem(name, module)
    if problem:
        raise CellError(problem)
    for sizes in (PROBE, SAMPLING):
        for dtype in PROBE_DTYPES:
            check_contract(name, module, sizes, dtype)
    return module


def manual_cell(name: str | CellPair) -> ModuleType:
    """The NumPy side alone (GATES, STATE_PARTS, the recurrence): for a built-in cell, without importing torch;
    of a pair already resolved, its manual side."""
    if isinstance(name, CellPair):
        return name.manual
    return manual.CELLS[name] if name in BUILTIN_CELLS else plugged_in(name)


def resolve_cell(name: str) -> CellPair:
    """The cell a --cell value names, both sides; CellError (one line) when it names none."""
    if name in BUILTIN_CELLS:
        import torchref  # imports torch: only where the torch side is wanted

        return CellPair(name, manual.CELLS[name], torchref.CELLS[name])
    module = plugged_in(name)
    return CellPair(name, module, module)


def cell_problem(name: str) -> str | None:
    """resolve_cell's complaint as a string, for the commands' config checks; None when the cell loads."""
    try:
        manual_cell(name)
    except CellError as error:
        return str(error)
    return None


def flow_problem(name: str) -> str | None:
    """Why gradient flow cannot measure the cell (it does not load, or has no step_backward); None when it can."""
    try:
        module = manual_cell(name)
    except CellError as error:
        return str(error)
    if not callable(getattr(module, "step_backward", None)):
        return (
            f"--cell {name}: the module has no step_backward, the one step of the hand-written backward "
            f"that gradient flow needs (see {FLOW_DOC})"
        )
    if name in BUILTIN_CELLS:
        return None
    try:
        check_contract(name, module, PROBE, "float64", flow=True)
    except CellError as error:
        return str(error)
    return None


def source_digest(name: str) -> str:
    """SHA-256 of the source file of the plugged-in cell ``name`` (imported, as a --cell value the user typed)."""
    source = getattr(plugged_in(name), "__file__", None)
    if not source or not Path(source).is_file():
        raise CellError(f"--cell {name}: the module has no source file, so a checkpoint could not recognise it")
    return hashlib.sha256(Path(source).read_bytes()).hexdigest()


def cell_digest(name: str) -> str | None:
    """What a checkpoint records to recognise its cell besides the name: None for a built-in cell."""
    return None if name in BUILTIN_CELLS else source_digest(name)


def checkpoint_cell(recorded: str, recorded_digest: str | None, given: str | None) -> str:
    """The cell to load a checkpoint with: the one it records (config.cell), checked against --cell (None: not typed).

    A checkpoint is untrusted, so a module that only it names is never imported: a built-in cell
    loads by name; a cell of your own only when --cell names it, and only if its source's SHA-256
    is the recorded one (from a checkpoint that records none, written before digests were, only if
    --cell is the very name it records). Returns the --cell value to use; CellError (one line) otherwise.
    """
    trained = f"config.cell is {recorded}"
    if recorded in BUILTIN_CELLS:
        if given is not None and given != recorded:
            raise CellError(f"{trained}, the built-in cell it was trained with, not --cell {given}: leave --cell out")
        return recorded
    if given is None:
        raise CellError(
            f"{trained}, a cell of your own, and a checkpoint's module is imported only when --cell names it: "
            f"pass --cell {recorded} if you trust that module"
        )
    if given in BUILTIN_CELLS:
        raise CellError(f"{trained}, a cell of your own, not the built-in --cell {given}: pass --cell {recorded}")
    if recorded_digest is None:
        if record_name(given) != recorded:
            raise CellError(
                f"{trained}, and the checkpoint, written before checkpoints recorded their cell's SHA-256, can only "
                f"be checked by that name: pass --cell {recorded}, not --cell {given}"
            )
        plugged_in(given)  # its interface checked, as for a checkpoint with a digest
        return record_name(given)
    digest = source_digest(given)
    if digest != recorded_digest:
        raise CellError(
            f"--cell {given} is not the cell it was trained with: its source's SHA-256 is {digest[:16]}..., "
            f"that of {recorded} when it was trained {recorded_digest[:16]}...; pass the module it was trained with"
        )
    return record_name(given)


def cell_pair(cell: str | CellPair) -> CellPair:
    """A --cell value resolved, or a pair the caller built (a test's deliberately broken variant, say)."""
    return cell if isinstance(cell, CellPair) else resolve_cell(cell)


CHECKPOINT_DOC = "docs/cells.md#checkpoints-of-a-cell-of-your-own"
CHECKPOINT_CELL_HELP = (
    "the cell of your own the checkpoint was trained with, as an import path or a file: a module a checkpoint "
    "names is imported only when --cell names it too, and only if its source is the one the checkpoint "
    f"recorded (SHA-256); a checkpoint of rnn, lstm or gru needs no --cell, see {CHECKPOINT_DOC}"
)
CELL_HELP = (
    "recurrent cell: rnn (vanilla tanh), lstm (forget-gate bias 1), gru (PyTorch's variant), "
    f"or your own as an import path (mypackage.mycell) or a file (path/to/mycell.py), see {DOC}"
)
