"""docs/bptt.md quotes the code it derives: every quoted line is still in the file it names, in that order.

The page's convention: a ```python block whose first line is ``# <path>`` is a quote of that file;
every other line, whitespace normalized, is a whole line of it, later in the file than the line before;
a line ``...`` only marks lines left out.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "bptt.md"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", flags=re.M | re.S)
LABEL = re.compile(r"# (\S+\.py)")
ELISION = "..."
# the files the derivation walks through: the model, the vanilla cell, the gated cells and their sigmoid
DERIVED_FILES = {"manual/model.py", "manual/rnn.py", "manual/lstm.py", "manual/gru.py", "manual/activations.py"}
MIN_QUOTED_LINES = 60  # the page quotes about 80: far fewer means quotes were lost, not just reworded


def normalized(line: str) -> str:
    return " ".join(line.split())


def quotes(page: str) -> list[tuple[str, list[str]]]:
    """(path, quoted lines) for every python block of the page, elisions and blank lines left out.
    A block without a ``# path`` first line is reported with path ''."""
    found = []
    for block in PYTHON_BLOCK.findall(page):
        first, *rest = block.splitlines()
        label = LABEL.fullmatch(first.strip())
        lines = [normalized(line) for line in rest if normalized(line) not in ("", ELISION)]
        found.append((label[1] if label else "", lines))
    return found


def missing_lines(quoted: list[str], source: str) -> list[str]:
    """The quoted lines not found as whole lines of ``source``, each searched after the previous one found."""
    lines = [normalized(line) for line in source.splitlines()]
    missing, position = [], 0
    for line in quoted:
        try:
            position = lines.index(normalized(line), position) + 1
        except ValueError:
            missing.append(line)
    return missing


def test_every_python_block_names_a_file_that_exists():
    for path, lines in quotes(PAGE.read_text(encoding="utf-8")):
        assert path, f"a python block of docs/bptt.md does not start with '# <file>.py': {lines[:1]}"
        assert (ROOT / path).is_file(), f"docs/bptt.md quotes {path}, which does not exist"


def test_every_quoted_line_is_in_its_file_in_order():
    for path, lines in quotes(PAGE.read_text(encoding="utf-8")):
        missing = missing_lines(lines, (ROOT / path).read_text(encoding="utf-8"))
        assert not missing, f"docs/bptt.md quotes lines that are not in {path} (or not in this order): {missing}"


def test_the_page_quotes_every_file_it_derives():
    found = quotes(PAGE.read_text(encoding="utf-8"))
    assert DERIVED_FILES <= {path for path, _ in found}
    assert sum(len(lines) for _, lines in found) >= MIN_QUOTED_LINES


def test_the_check_catches_a_changed_line_and_a_changed_order():
    source = "def f(x):\n    y = x + 1  # one\n    return y * 2\n"
    assert missing_lines(["y = x + 1 # one", "return   y * 2"], source) == []  # whitespace does not count
    assert missing_lines(["y = x + 2  # one"], source) == ["y = x + 2  # one"]
    assert missing_lines(["y = x + 1"], source) == ["y = x + 1"]  # a whole line, comment included
    assert missing_lines(["return y * 2", "y = x + 1  # one"], source) == ["y = x + 1  # one"]
