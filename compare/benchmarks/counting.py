"""What one call executes, counted: C calls, Python calls and operators (CPython 3.11's hooks).

At batch 1 a training step is microseconds of arithmetic and the Python-level operations
are the cost, so their number is the measure of how much a rewrite saves. Three counts,
all taken while ``count_operations(step)`` runs ``step()`` (the call of ``step`` itself
is not counted; everything it runs, at any depth, is):

    C calls       every call, from Python code, of something not written in Python: the
                  profiler's 'c_call' events (built-in functions and methods: len, float,
                  np.empty, np.add.at, ndarray.sum, ...), plus the call sites that entered
                  neither a Python frame nor a 'c_call', counted from the CALL opcode
                  (ufuncs called by name: np.tanh, np.multiply; NumPy's array-function
                  dispatchers written in C: np.dot, np.vdot; classes written in C)
    Python calls  the profiler's 'call' events: every Python frame entered, called from
                  Python or from C (a dataclass's __init__, NumPy's functions written in
                  Python such as np.stack and np.clip, with everything they call counted
                  too), and every resumption of a generator
    operators     executed BINARY_OP (a + b, a += b, a @ b), BINARY_SUBSCR (x[t]),
                  STORE_SUBSCR (x[t] = y), DELETE_SUBSCR, COMPARE_OP (a > b) and
                  UNARY_NEGATIVE / UNARY_INVERT opcodes (sys.settrace with f_trace_opcodes)

Not counted: what C code does inside (a BLAS call, the loops of a ufunc, a C function that
calls another C function), calls and operators in the code that calls ``step``, and the cost
of anything. The operator opcodes cannot see their operands' types: a dict look-up
(``params["V"]``) or integer arithmetic (``t + 1``) counts as one operator, as an array
operation does. The counts depend on the path the step takes (the clip runs only on a
gradient with an entry out of range), so they are of one step, with its data.
"""

from __future__ import annotations

import dis
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import Any

from compare.cli.errors import CliError

COUNTED_PYTHON = (3, 11)  # the opcodes below are 3.11's; another version's bytecode is not counted
OPERATOR_NAMES = (
    "BINARY_OP",
    "BINARY_SUBSCR",
    "STORE_SUBSCR",
    "DELETE_SUBSCR",
    "COMPARE_OP",
    "UNARY_NEGATIVE",
    "UNARY_INVERT",
)
# .get: the module imports on any version; count_operations refuses to count on another than 3.11
CALL_OPCODES = frozenset(dis.opmap.get(name, -1) for name in ("CALL", "CALL_FUNCTION_EX"))
OPERATOR_OPCODES = frozenset(dis.opmap.get(name, -1) for name in OPERATOR_NAMES)
EXTENDED_ARG = dis.opmap["EXTENDED_ARG"]


class UncountedPython(CliError):
    """The counts are defined on CPython 3.11's bytecode and profiler events."""


@dataclass
class OperationCounts:
    """What one call executed (see the module doc for what each count includes)."""

    c_functions: int = 0  # 'c_call' events: built-in functions and methods
    c_callables: int = 0  # call sites that entered no Python frame and no 'c_call': ufuncs, C dispatchers, C classes
    python_calls: int = 0  # 'call' events: Python frames entered, generators resumed
    operators: int = 0  # BINARY_OP, BINARY_SUBSCR, STORE_SUBSCR, ... opcodes executed

    @property
    def c_calls(self) -> int:
        return self.c_functions + self.c_callables

    @property
    def operations(self) -> int:
        return self.c_calls + self.python_calls + self.operators


@dataclass
class Counter:
    """The profile and trace functions of one count, and what they have seen so far."""

    counts: OperationCounts = field(default_factory=OperationCounts)
    depth: int = 0  # Python frames open below the counted call; 0: outside it
    call_pending: bool = False  # a CALL opcode ran and neither a frame nor a 'c_call' has followed yet
    opcodes: dict = field(default_factory=dict)  # code object -> its co_code, read once

    def profile(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            if self.depth > 0:
                self.counts.python_calls += 1
            self.depth += 1
            self.call_pending = False
        elif event == "return":
            self.depth -= 1
        elif event == "c_call" and self.depth > 0:
            self.counts.c_functions += 1
            self.call_pending = False

    def trace(self, frame: FrameType, event: str, arg: Any) -> Callable | None:
        if event == "call":
            frame.f_trace_lines = False
            frame.f_trace_opcodes = True
        elif event == "opcode":
            self.opcode(frame)
        return self.trace

    def opcode(self, frame: FrameType) -> None:
        """One opcode, about to execute; a CALL before it that entered nothing traced was a C callable."""
        if self.call_pending:
            self.counts.c_callables += 1
            self.call_pending = False
        code = self.code_bytes(frame.f_code)
        offset = frame.f_lasti
        while code[offset] == EXTENDED_ARG:  # the instruction it extends runs without an event of its own
            offset += 2
        if code[offset] in OPERATOR_OPCODES:
            self.counts.operators += 1
        elif code[offset] in CALL_OPCODES:
            self.call_pending = True

    def code_bytes(self, code: CodeType) -> bytes:
        if code not in self.opcodes:
            self.opcodes[code] = code.co_code
        return self.opcodes[code]


def count_operations(step: Callable[[], object]) -> OperationCounts:
    """Run ``step()`` once under the profiler and the opcode tracer; what it executed (not the call itself)."""
    if sys.version_info[:2] != COUNTED_PYTHON or sys.implementation.name != "cpython":
        raise UncountedPython(f"the operation counts are defined for CPython 3.11, not {sys.version.split()[0]}")
    counter = Counter()
    previous_profile, previous_trace = sys.getprofile(), sys.gettrace()
    sys.setprofile(counter.profile)  # the 'c_call' of settrace below comes at depth 0: not counted
    sys.settrace(counter.trace)
    try:
        step()
    finally:
        sys.settrace(previous_trace)
        sys.setprofile(previous_profile)
    return counter.counts
