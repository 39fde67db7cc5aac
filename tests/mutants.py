"""The real code with one slip in it: for the tests that show a check fails on a wrong backward pass.

``mutant(module, name, correct, slip)`` compiles the source of ``module.name`` with the one
fragment ``correct`` replaced by ``slip`` (a realistic one-line bug), in a copy of the
module's namespace; a test monkeypatches it in. The fragment must occur exactly once, so a
change to the code that moves it fails here, loudly, instead of testing nothing.
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable
from types import ModuleType


def mutant(module: ModuleType, name: str, correct: str, slip: str) -> Callable:
    lines, first_line = inspect.getsourcelines(getattr(module, name))
    source = textwrap.dedent("".join(lines))
    assert source.count(correct) == 1, f"{module.__name__}.{name} holds {correct!r} {source.count(correct)} times"
    namespace = dict(vars(module))
    padded = "\n" * (first_line - 1) + source.replace(correct, slip)  # tracebacks show the file's own line numbers
    exec(compile(padded, module.__file__, "exec"), namespace)
    return namespace[name]
