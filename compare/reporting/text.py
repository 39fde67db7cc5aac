"""Small formatting helpers the sections share: durations, numbers, tables, code fences."""

from __future__ import annotations

import re


def duration(seconds: float) -> str:
    """``73.4`` -> ``1 min 13 s``; ``4.2`` -> ``4 s``; ``3700`` -> ``1 h 2 min``."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def small(value: float) -> str:
    """Two significant digits, as the docs write a drift: ``7.7e-15``, ``0.45``, ``4.3``."""
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e4:
        return f"{value:.2g}"
    return f"{value:.1e}"


def table(header: list, rows: list, right_from: int = 1) -> str:
    """A Markdown table; the columns from ``right_from`` on are right-aligned (numbers)."""
    align = ["---" if index < right_from else "---:" for index in range(len(header))]
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


def fenced(text: str, info: str = "text") -> str:
    """``text`` in a code fence longer than any run of backticks inside it, so that nothing closes it early."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"


def shell_quote(argument: str) -> str:
    """An argument as a reader would type it: double quotes around anything with a space."""
    if argument and re.fullmatch(r"[A-Za-z0-9_./$:=,+-]+", argument):
        return argument
    return '"' + argument.replace("\\", "\\\\").replace('"', '\\"') + '"'
