"""The generated blocks of a Markdown page, and the page with new ones put in.

A block is everything between an opening and a closing marker, each an HTML comment
(invisible on GitHub):

    <!-- report:quickstart -->
    ...generated; rewritten whole...
    <!-- /report:quickstart -->

A name is a section's name, or a section's name, a dot and a part (``cells.speed``).
Everything outside the markers is kept byte for byte. A page whose markers do not pair up
is refused with a one-line error before any section runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from compare.cli.errors import UsageError

MARKER = re.compile(r"<!-- (/?)report:([A-Za-z0-9_.-]+) -->")


@dataclass
class Span:
    """One block of one page: its name and where its content lies (between the two markers)."""

    name: str
    start: int  # just after the opening marker
    end: int  # at the closing marker
    line: int  # of the opening marker, for messages


def opening(name: str) -> str:
    return f"<!-- report:{name} -->"


def closing(name: str) -> str:
    return f"<!-- /report:{name} -->"


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def find_blocks(text: str, where: str) -> list[Span]:
    """The blocks of ``text`` in page order; UsageError naming ``where`` and the line if a marker is unpaired."""
    spans: list[Span] = []
    opened: re.Match | None = None  # the opening marker of the block we are inside, if any
    for match in MARKER.finditer(text):
        is_closing, name = match.group(1) == "/", match.group(2)
        line = line_of(text, match.start())
        if opened is None:
            if is_closing:
                raise UsageError(f"{where} line {line}: {closing(name)} closes no open {opening(name)}")
            opened = match
            continue
        open_name, open_line = opened.group(2), line_of(text, opened.start())
        if not is_closing:
            raise UsageError(
                f"{where} line {line}: {opening(name)} opens inside report:{open_name} "
                f"(opened on line {open_line}); close it first with {closing(open_name)}"
            )
        if name != open_name:
            raise UsageError(f"{where} line {line}: {closing(name)} closes no open {opening(name)}")
        spans.append(Span(name, opened.end(), match.start(), open_line))
        opened = None
    if opened is not None:
        raise UsageError(
            f"{where} line {line_of(text, opened.start())}: {opening(opened.group(2))} is never closed; "
            f"add {closing(opened.group(2))} after the block"
        )
    return spans


def outside_blocks(text: str, spans: list[Span]) -> list[str]:
    """The text around the blocks, in order: what a rewrite must leave exactly as it was."""
    pieces, position = [], 0
    for span in spans:
        pieces.append(text[position : span.start])
        position = span.end
    pieces.append(text[position:])
    return pieces


def block_content(body: str) -> str:
    """What goes between the markers: the body, with a blank line on either side so that Markdown renders it."""
    return f"\n\n{body.strip(chr(10))}\n\n"


def rewrite(text: str, spans: list[Span], bodies: dict) -> str:
    """``text`` with every block named in ``bodies`` replaced by its new body; the rest unchanged."""
    pieces, position = [], 0
    for span in spans:
        if span.name not in bodies:
            continue
        pieces.append(text[position : span.start])
        pieces.append(block_content(bodies[span.name]))
        position = span.end
    pieces.append(text[position:])
    return "".join(pieces)


@dataclass
class Page:
    """One Markdown file, as read, with its blocks."""

    path: Path
    shown_as: str  # the name messages use, e.g. docs/speed.md
    text: str
    spans: list

    @classmethod
    def read(cls, path: Path, shown_as: str) -> Page:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise UsageError(f"{shown_as}: cannot read it ({error.strerror or error})") from None
        return cls(path, shown_as, text, find_blocks(text, shown_as))

    def names(self) -> set[str]:
        return {span.name for span in self.spans}
