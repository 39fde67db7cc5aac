"""The built-in prose corpus (compare/data/prose.py) and the report's count of table characters in a sample."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from compare.data.corpus import PROSE, PYDOC_TOPICS, Vocab, builtin_corpus
from compare.data.prose import MIN_COUNT, prose_corpus, topic_paragraphs, without_rare_characters
from compare.reporting.quickstart import final_sample, junk_share
from compare.training.logger import SAMPLE_LENGTH

ROOT = Path(__file__).resolve().parents[1]

TOPIC = """\
The "if" statement
******************

The \u201cif\u201d statement is used for *conditional* execution \u2014 as in
the   **reference**:

   if_stmt ::= "if" assignment_expression ":" suite
               ["else" ":" suite]

It selects exactly one of the suites by evaluating the expressions
one by one, which is equivalent to

   if x:
       pass

   y = 2

Back at the first level, this paragraph is prose again and it stays.

+-----------+---------+
| Operation | Result  |
|===========|=========|
| "x + y"   | the sum |
+-----------+---------+

| the rows of a table without its rules are a table still, however wordy |
| and so is this second row of words, which would read like a sentence  |

=======  =======
simple   table
=======  =======

>>> print("spam")
spam

Note:

  The body of a note is prose and is kept, re-flowed into one line.

* First item of a list, with words enough.

* Second item of the list, also with words.

object.__init__(self[, ...])

   The description under a signature is kept as a paragraph.
"""

EXPECTED = [
    'The "if" statement',
    'The "if" statement is used for conditional execution - as in the reference:',
    "It selects exactly one of the suites by evaluating the expressions one by one, which is equivalent to",
    "Back at the first level, this paragraph is prose again and it stays.",
    "The body of a note is prose and is kept, re-flowed into one line.",
    "First item of a list, with words enough.",
    "Second item of the list, also with words.",
    "The description under a signature is kept as a paragraph.",
]


def test_a_topic_keeps_its_sentences_and_loses_code_grammar_tables_and_examples():
    found = [" ".join(paragraph.split()) for paragraph in topic_paragraphs(TOPIC)]  # undo the wrapping at 72
    assert found == EXPECTED


def test_paragraphs_are_wrapped_at_72_columns():
    long = "Words " * 40
    (paragraph,) = topic_paragraphs(long.strip() + ".")
    assert max(map(len, paragraph.splitlines())) <= 72 and len(paragraph.splitlines()) > 1


def test_a_byte_order_mark_and_other_non_ascii_never_reach_the_text():
    (paragraph,) = topic_paragraphs("\ufeffCaf\u00e9 na\u00efve stra\u00dfe words \u2026 here \U0001f600 and more.")
    assert paragraph == "Cafe naive strasse words ... here and more."


def test_rare_characters_are_removed_and_rare_capitals_lowercased():
    text = "j" * MIN_COUNT + "a" * MIN_COUNT + "J~" + "Q"
    assert without_rare_characters(text) == "j" * MIN_COUNT + "a" * MIN_COUNT + "j"  # no common q: Q goes
    assert without_rare_characters("a ~ b\n" + "ab \n" * MIN_COUNT) == "a b\n" + "ab\n" * MIN_COUNT + ""


def test_the_prose_corpus_is_stable_clean_and_smaller_than_the_topics():
    text = builtin_corpus()
    assert text == builtin_corpus(PROSE) == prose_corpus()
    assert 200_000 < len(text) < len(builtin_corpus(PYDOC_TOPICS))
    vocab = Vocab.from_text(text)
    assert set(vocab.chars) <= {"\n", *map(chr, range(32, 127))} and len(vocab) < 90
    assert "  " not in text and "\n\n\n" not in text
    assert junk_share(text) < 0.005  # no tables, no padding: what a sample should not learn
    lines = text.splitlines()
    assert not any(line.startswith(("+-", "+=", "|", ">>>")) or (line and set(line) <= {"=", " "}) for line in lines)


def test_the_script_prints_the_facts_the_report_tabulates():
    printed = subprocess.run(
        [sys.executable, ROOT / "compare" / "data" / "prose.py"], capture_output=True, text=True, check=True
    )
    assert f'"characters": {len(prose_corpus())}' in printed.stdout


def test_junk_share_counts_runs_of_spaces_and_table_borders():
    assert junk_share("") == 0
    assert junk_share("a b  c") == 0  # runs of 1 and 2 spaces are prose
    assert junk_share("ab   cd") == pytest.approx(3 / 7)
    assert junk_share("+--+\n| a |") == pytest.approx(4 / 10)  # "+--+" is a run; "| a |" has none of 3
    assert junk_share("x == y") == pytest.approx(4 / 6)  # " == " counts too: code is not prose either


def test_final_sample_is_the_sample_train_printed():
    sample = ("word  " * 100)[:SAMPLE_LENGTH]
    stdout = f"\nrun directory: runs/x  (3 steps)\n\n--- sample (manual, temperature 0.8) ---\n{sample}\n\nnext:\n  a\n"
    assert final_sample(stdout) == sample


def test_the_corpus_is_recorded_and_a_resume_keeps_it(tmp_path, capsys):
    from compare import train
    from compare.model.checkpoint import load_checkpoint

    common = ["--hidden-size", "8", "--logdir", str(tmp_path), "--run-name", "old", "--checkpoint-every", "1"]
    assert train.main(["--corpus", PYDOC_TOPICS, "--max-steps", "2", *common]) == 0
    checkpoint = load_checkpoint(tmp_path / "old" / "manual" / "latest.npz")
    assert checkpoint.config["corpus"] == PYDOC_TOPICS and len(checkpoint.vocab) > 100  # the topics' 103
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:  # the parser's one-line error
        train.main(["--resume", str(tmp_path / "old"), "--corpus", PROSE, "--max-steps", "3"])
    assert refused.value.code == 2
    assert "--corpus prose (checkpoint: pydoc-topics)" in capsys.readouterr().err
    assert train.main(["--resume", str(tmp_path / "old"), "--max-steps", "3"]) == 0  # the same text: same digest
    assert load_checkpoint(tmp_path / "old" / "manual" / "latest.npz").step == 3
