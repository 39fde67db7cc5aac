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


def mutant(module: ModuleType, name: str, correct: str, slip: str, calls: tuple[str, ...] = ()) -> Callable:
    """``module.name`` with ``correct`` replaced by ``slip``; ``calls`` names the module's functions that ``name``
    calls and that may hold the fragment instead (compiled into the same namespace, so the slip takes effect)."""
    namespace = dict(vars(module))
    sources = {}
    for function in (name, *calls):
        lines, first_line = inspect.getsourcelines(getattr(module, function))
        sources[function] = (textwrap.dedent("".join(lines)), first_line)
    found = sum(source.count(correct) for source, _ in sources.values())
    assert found == 1, f"{module.__name__}.{'/'.join(sources)} holds {correct!r} {found} times"
    for source, first_line in sources.values():
        padded = "\n" * (first_line - 1) + source.replace(correct, slip)  # tracebacks show the file's own line numbers
        exec(compile(padded, module.__file__, "exec"), namespace)
    return namespace[name]
