"""The built-in prose corpus: CPython's pydoc topics with the code, grammar and tables taken out.

``pydoc_data.topics`` (the text ``help("if")`` shows) ships with every CPython, but a third
of it is indented code, grammar productions and ASCII tables, which a character model
learns first. ``prose_corpus`` keeps the sentences:

1. each topic (in sorted key order) is cut into blocks at blank lines;
2. a block is dropped if it is a table (a line starting with ``+-``, ``+=`` or ``|``, or a
   line of ``=`` columns), an interactive example (``>>>``), a grammar production
   (``::=``), a literal block (indented deeper than the paragraph before it, which ends in
   ``:``, and every deeper block after it; the body of ``Note:`` and the like is kept), a
   rubric (``-[ Footnotes ]-``) or a line that is not a sentence (fewer than 4 words of
   2+ letters, under 85% letters and spaces, or a call: ``object.__init__(self[, ...])``);
3. a heading keeps its title and loses its underline;
4. every kept block (each list item on its own) is re-flowed: whitespace collapsed to one
   space, the emphasis marks of ``*word*`` and ``**word**`` removed, curly quotes, dashes,
   the ellipsis and ``ß`` spelled in ASCII, any other character outside printable ASCII
   removed (a byte order mark included), then wrapped at 72 columns;
5. paragraphs are joined by a blank line;
6. a character that occurs fewer than MIN_COUNT (20) times in the result is removed, or
   lowercased if it is a capital letter whose lowercase is common (``J`` becomes ``j``).

The result depends only on the Python version's ``pydoc_data``. This file imports only the
standard library, so the report runs it as a script under every Python it finds:
``python3.X compare/data/prose.py`` prints the corpus's size, distinct characters and digest.
"""

from __future__ import annotations

import collections
import hashlib
import json
import platform
import re
import sys
import textwrap
import unicodedata
from typing import Any

WIDTH = 72  # columns of the re-flowed paragraphs
MIN_WORDS = 4  # a kept block has at least this many words of two or more letters
MIN_LETTER_SHARE = 0.85  # ... and at least this share of letters and spaces
# A character seen this rarely is never learned: its input column stays near its initial
# N(0, 0.01^2), so the state after it is one no training text leads to. Measured: with '~', '#'
# and '&' kept (once each), two runs of seed 42 (5,000 and 25,000 steps, lr 0.1) printed final
# samples made of little else ("~~~~").
MIN_COUNT = 20
ADMONITIONS = frozenset(
    {"Note:", "Warning:", "See also:", "Seealso:", "Attention:", "Caution:", "Important:", "Tip:", "Hint:", "Danger:"}
)
ASCII_SPELLING = {
    "\u2018": "'",  # curly single quotes
    "\u2019": "'",
    "\u201c": '"',  # curly double quotes
    "\u201d": '"',
    "\u2026": "...",  # ellipsis
    "\u2014": "-",  # em dash
    "\u2013": "-",  # en dash
    "\u00df": "ss",  # German sharp s
}
UNDERLINE = re.compile(r"^([*=\-~^#])\1{2,}$")
SIMPLE_TABLE_RULE = re.compile(r"^=+( +=+)+$")
LIST_ITEM = re.compile(r"^(\* |- |\d+\. |\(\d+\) |\[\d+\] )")
WORD = re.compile(r"[A-Za-z]{2,}")
SIGNATURE = re.compile(r"^[\w.]+[(\[].*[)\]]$")  # object.__init__(self[, ...]), d[key]
EMPHASIS = re.compile(r'(?<![\w*"])\*{1,2}([^*\s](?:[^*]*[^*\s])?)\*{1,2}(?![\w*])')  # *word*, **words**


def blocks(topic: str) -> list[list[str]]:
    """The runs of non-blank lines of ``topic``, tabs expanded, trailing spaces removed."""
    found: list[list[str]] = [[]]
    for line in topic.expandtabs(8).splitlines():
        if line.strip():
            found[-1].append(line.rstrip())
        elif found[-1]:
            found.append([])
    return [block for block in found if block]


def indent(block: list[str]) -> int:
    return min(len(line) - len(line.lstrip(" ")) for line in block)


def content_indent(block: list[str]) -> int:
    """Where the block's text starts: past the marker of a list item (``* ``, ``1. ``)."""
    first = block[0].lstrip(" ")
    marker = LIST_ITEM.match(first)
    return indent(block) + (len(marker.group()) if marker else 0)


def opens_literal(block: list[str], previous: list[str] | None) -> bool:
    """A block set deeper than the paragraph before it, which ends in ``:`` or is a sentence, is code.

    reST renders ``text::`` as ``text:`` and ``text ::`` as ``text``: so the paragraph that
    introduces code ends either way. The body of ``Note:`` and its kind is prose; so is the
    description under a signature (``len(d)``), which is no sentence.
    """
    if previous is None or indent(block) <= content_indent(previous):
        return False
    text = " ".join(line.strip() for line in previous)
    return text not in ADMONITIONS and (text.endswith(":") or is_sentence(text))


def is_table(block: list[str]) -> bool:
    return any(line.lstrip().startswith(("+-", "+=", "|")) or SIMPLE_TABLE_RULE.match(line.strip()) for line in block)


def is_code(block: list[str]) -> bool:
    return any(">>>" in line or "::=" in line for line in block)


def is_sentence(text: str) -> bool:
    """Enough words, and mostly letters and spaces: prose rather than a signature or an expression."""
    letters = sum(char.isalpha() or char == " " for char in text)
    enough = len(WORD.findall(text)) >= MIN_WORDS and letters >= MIN_LETTER_SHARE * len(text)
    return enough and not SIGNATURE.match(text)


def ascii_text(text: str) -> str:
    """``text`` in printable ASCII: the spellings above, accents dropped (NFKD), anything else removed."""
    spelled = "".join(ASCII_SPELLING.get(char, char) for char in text)
    decomposed = unicodedata.normalize("NFKD", spelled)
    return "".join(char for char in decomposed if " " <= char <= "~")


def reflow(lines: list[str]) -> str:
    """One paragraph: the lines joined, cleaned, wrapped at WIDTH columns."""
    words = EMPHASIS.sub(r"\1", ascii_text(" ".join(line.strip() for line in lines))).split()
    return textwrap.fill(" ".join(words), width=WIDTH, break_long_words=False, break_on_hyphens=False)


def list_items(block: list[str]) -> list[list[str]]:
    """The block cut before each line that opens a list item (``* ``, ``1. ``, ``[1] `` ...)."""
    items: list[list[str]] = []
    for line in block:
        if not items or LIST_ITEM.match(line.lstrip()):
            items.append([])
        items[-1].append(LIST_ITEM.sub("", line.lstrip()))
    return items


def topic_paragraphs(topic: str) -> list[str]:
    """The prose paragraphs of one pydoc topic, in order (the rules in the module docstring)."""
    paragraphs: list[str] = []
    literal_indent: int | None = None  # inside a literal block: the indent that continues it
    previous: list[str] | None = None
    for block in blocks(topic):
        depth, literal = indent(block), opens_literal(block, previous)
        previous = block
        if literal_indent is not None and depth >= literal_indent:
            continue
        literal_indent = depth if literal else None
        if literal or is_table(block) or is_code(block):
            continue
        if len(block) == 2 and UNDERLINE.match(block[1].strip()):
            paragraphs.append(reflow(block[:1]))  # a heading: its title
            continue
        for item in list_items(block):
            text = " ".join(line.strip() for line in item)
            if is_sentence(text):
                paragraphs.append(reflow(item))
    return paragraphs


def without_rare_characters(text: str) -> str:
    """``text`` with each character seen fewer than MIN_COUNT times removed (a capital letter: lowercased).

    The spaces a removed character leaves are collapsed to one, as the re-flow left them.
    """
    counts = collections.Counter(text)
    rare = {char for char, count in counts.items() if count < MIN_COUNT}
    spelling = {char: char.lower() if char.isupper() and counts[char.lower()] >= MIN_COUNT else "" for char in rare}
    kept = "".join(spelling.get(char, char) for char in text)
    return "\n".join(" ".join(line.split()) for line in kept.split("\n"))  # "P1 | P2" left "P1  P2"


def prose_corpus() -> str:
    """The prose of ``pydoc_data.topics``, topics in sorted key order, paragraphs joined by a blank line."""
    from pydoc_data.topics import topics

    text = "\n\n".join(paragraph for key in sorted(topics) for paragraph in topic_paragraphs(topics[key]))
    return without_rare_characters(text)


def corpus_facts(text: str) -> dict[str, Any]:
    """What the docs say of a corpus: size, distinct characters, digest of the UTF-8 bytes."""
    return {
        "python": platform.python_version(),
        "characters": len(text),
        "distinct": len(set(text)),
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
    }


if __name__ == "__main__":
    json.dump(corpus_facts(prose_corpus()), sys.stdout)
    print()
