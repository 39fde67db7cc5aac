"""What --data may be and how it is read: regular files only, streamed, BOMs named or dropped, the validation cap.

The special files (/dev/zero, a FIFO) and the memory measurement run in child processes
with a timeout, so that a regression fails the test instead of hanging it or filling memory.
"""

from __future__ import annotations

import codecs
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from error_cases import FAST
from tiny_runs import PHRASE

from compare.cli.errors import UsageError
from compare.data.corpus import Vocab, check_encoding, load_corpus, read_corpus, text_digest
from compare.train import main
from compare.training.config import TrainConfig, config_conflicts, parse_args

TIMEOUT_S = 60  # the refusals take a second or two; a special file read "forever" takes longer


def settings(data: Path | str | None, **overrides) -> SimpleNamespace:
    """What load_corpus reads of a TrainConfig, with the defaults."""
    config = TrainConfig(data=None if data is None else str(data))
    values = {
        name: getattr(config, name)
        for name in ("data", "corpus", "encoding", "errors", "val_frac", "val_max_chars", "batch_size", "seq_length")
    }
    values.update(overrides)
    return SimpleNamespace(**values)


def train_process(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    """``python -m compare.train ARGV`` in a child process, killed after TIMEOUT_S."""
    return subprocess.run(
        [sys.executable, "-m", "compare.train", *argv, *FAST, "--logdir", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


def assert_one_line_usage_error(result: subprocess.CompletedProcess, *phrases: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, (phrase, result.stderr)


# Special files


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_character_device_is_refused_at_once(tmp_path, device):
    if not os.path.exists(device):
        pytest.skip(f"no {device} here")
    result = train_process(tmp_path, "--data", device)
    assert_one_line_usage_error(result, f"--data {device} is not a regular file (a character device)")


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    result = train_process(tmp_path, "--data", str(fifo))  # opening a FIFO would block until a writer comes
    assert_one_line_usage_error(result, f"--data {fifo} is not a regular file (a FIFO)")


def test_a_directory_is_refused(tmp_path):
    with pytest.raises(UsageError, match="is a directory"):
        load_corpus(settings(tmp_path))


def test_a_symlink_to_a_regular_file_is_followed(tmp_path):
    target = tmp_path / "corpus.txt"
    target.write_text(PHRASE * 20)
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    corpus = load_corpus(settings(link))
    assert corpus.sha256 == text_digest(PHRASE * 20)


def test_a_symlink_to_a_device_or_to_nothing_is_refused(tmp_path):
    to_device = tmp_path / "zero.txt"
    to_device.symlink_to("/dev/zero")
    assert_one_line_usage_error(train_process(tmp_path, "--data", str(to_device)), "not a regular file")
    dangling = tmp_path / "dangling.txt"
    dangling.symlink_to(tmp_path / "missing.txt")
    with pytest.raises(UsageError, match="no such file"):
        load_corpus(settings(dangling))


def test_a_bad_data_path_leaves_no_run_directory_behind(tmp_path):
    result = train_process(tmp_path, "--data", str(tmp_path / "missing.txt"))
    assert_one_line_usage_error(result, "no such file")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no empty rnn-1 claimed


# Streaming


def test_training_reads_the_file_in_pieces_never_as_one_str(tmp_path, monkeypatch):
    text = "caf\u00e9 \u201cquoted\u201d\r\nline two\n" * 500
    path = tmp_path / "text.txt"
    path.write_bytes(text.encode("utf-8"))

    def whole_text(*args, **kwargs):
        raise AssertionError("the whole text was read into one str")

    monkeypatch.setattr("compare.data.corpus.load_text", whole_text)
    monkeypatch.setattr(Path, "read_text", whole_text)
    monkeypatch.setattr(Vocab, "from_text", whole_text)
    corpus = load_corpus(settings(path, val_frac=0.1))
    expected = text.replace("\r\n", "\n")  # text mode, as before: the same newline translation
    vocab = Vocab("".join(sorted(set(expected))))
    assert corpus.vocab == vocab  # the sorted set of characters
    assert corpus.sha256 == text_digest(expected)  # the digest old checkpoints hold
    tokens = np.concatenate([corpus.train_tokens, corpus.val_tokens])
    assert tokens.dtype == np.uint8 and vocab.decode(tokens) == expected


def test_replaced_bytes_give_the_same_digest_as_before(tmp_path):
    raw = b"caf\xe9 au lait " * 50
    path = tmp_path / "latin1.txt"
    path.write_bytes(raw)
    corpus = load_corpus(settings(path, errors="replace"))
    assert corpus.sha256 == text_digest(raw.decode("utf-8", errors="replace"))


MEASURE = textwrap.dedent(
    """
    import sys, types
    import numpy, torch
    from compare.data.corpus import load_corpus

    def peak():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))

    baseline = peak()
    settings = types.SimpleNamespace(data=sys.argv[1], encoding="utf-8", errors="strict", val_frac=0.05,
                                     val_max_chars=100_000, batch_size=1, seq_length=25, corpus="prose")
    corpus = load_corpus(settings)
    print(peak() - baseline)
    """
)


def write_big_text(path: Path, size_bytes: int, line: str) -> None:
    block = (line * (1_000_000 // len(line.encode("utf-8")))).encode("utf-8")
    with open(path, "wb") as file:
        for _ in range(size_bytes // len(block)):
            file.write(block)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
@pytest.mark.parametrize(
    "line",
    ["plain ASCII prose, line after line of it.\n", "prose with \u201ccurly quotes\u201d and dashes \u2014 in it.\n"],
    ids=["ascii", "utf8-multibyte"],
)
def test_loading_a_large_file_costs_about_its_size_in_memory(tmp_path, line):
    path = tmp_path / "big.txt"
    write_big_text(path, 40_000_000, line)
    result = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    above_baseline = int(result.stdout)
    size = path.stat().st_size
    assert above_baseline <= 1.2 * size + 100_000_000, f"{above_baseline / size:.2f}x the file size"


# The validation cap


def test_validation_uses_at_most_val_max_chars(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(PHRASE * 1000)  # 45,000 characters, half of them held out
    assert len(load_corpus(settings(path, val_frac=0.5, val_max_chars=1000)).val_tokens) == 1000
    assert len(load_corpus(settings(path, val_frac=0.5, val_max_chars=0)).val_tokens) == 22_500  # 0: no cap
    train_tokens = load_corpus(settings(path, val_frac=0.5, val_max_chars=1000)).train_tokens
    assert len(train_tokens) == 22_500  # the cap takes nothing from training


def test_validation_keeps_the_first_val_max_chars_of_the_held_out_end(tmp_path, monkeypatch):
    monkeypatch.setattr("compare.data.corpus.CHUNK_CHARS", 1000)  # the cut falls inside a piece, not on its edge
    rng = np.random.default_rng(0)
    text = "".join(rng.choice(list("abcdefghij \u00e9\u6f22\n"), size=20_000))  # no period hides a shift
    path = tmp_path / "random.txt"
    path.write_text(text, encoding="utf-8")
    # The documented rule (docs/training.md), computed here on the str: --val-frac 0.25 holds out the
    # last 5,000 characters, and validation uses the first --val-max-chars of those.
    corpus = load_corpus(parse_args(["--data", str(path), "--val-frac", "0.25", "--val-max-chars", "1234"]))
    assert corpus.vocab.decode(corpus.val_tokens) == text[15_000:16_234]
    assert corpus.vocab.decode(corpus.train_tokens) == text[:15_000]
    everything = load_corpus(parse_args(["--data", str(path), "--val-frac", "0.25", "--val-max-chars", "9000"]))
    assert everything.vocab.decode(everything.val_tokens) == text[15_000:]  # a cap above the split keeps it whole


def test_val_max_chars_has_a_default_cap_and_is_checked():
    assert TrainConfig().val_max_chars == 100_000
    assert parse_args(["--val-max-chars", "5000"]).val_max_chars == 5000
    with pytest.raises(SystemExit):
        parse_args(["--val-max-chars", "-1"])


def test_val_max_chars_may_not_change_on_resume():
    assert config_conflicts({"val_max_chars": 100_000}, {"val_max_chars": 5000}) == [
        "--val-max-chars 5000 (checkpoint: 100000)"
    ]


# Small ones


def exit_code_of(argv: list) -> int:
    """compare.train's exit code; argparse's errors (config_problem's too) exit from inside the parser."""
    try:
        return main(argv)
    except SystemExit as exit_info:
        return int(exit_info.code or 0)


@pytest.mark.parametrize("seed", ["-1", str(2**63), str(2**64)])
def test_a_seed_outside_the_generators_range_is_a_usage_error(seed, capsys):
    assert exit_code_of(["--seed", seed]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--seed must be in [0, 2^63)" in err, err


@pytest.mark.parametrize("encoding", ["rot13", "hex", "base64", "zlib"])
def test_a_codec_that_is_not_a_text_encoding_is_a_usage_error(encoding, capsys):
    assert check_encoding(encoding) is not None and "not a text encoding" in check_encoding(encoding)
    assert exit_code_of(["--encoding", encoding]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a text encoding" in err, err


@pytest.mark.parametrize(
    ("bom", "codec", "suggested"),
    [
        (codecs.BOM_UTF16_LE, "utf-16-le", "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16-be", "utf-16"),
        (codecs.BOM_UTF32_LE, "utf-32-le", "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32-be", "utf-32"),
    ],
)
def test_a_byte_order_mark_names_the_encoding_to_pass(tmp_path, bom, codec, suggested):
    path = tmp_path / "wide.txt"
    path.write_bytes(bom + (PHRASE * 20).encode(codec))
    with pytest.raises(UsageError) as error_info:
        load_corpus(settings(path))
    message = str(error_info.value)
    assert f"--encoding {suggested}" in message and "binary" not in message, message
    corpus = load_corpus(settings(path, encoding=suggested))  # and with it, the file trains
    assert corpus.sha256 == text_digest(PHRASE * 20)


# A UTF-8 byte order mark


@pytest.mark.parametrize("encoding", ["utf-8", "UTF8"])
def test_a_leading_utf8_byte_order_mark_is_not_a_character_of_the_text(tmp_path, monkeypatch, encoding):
    monkeypatch.setattr("compare.data.corpus.CHUNK_CHARS", 7)  # pieces of 7: a U+FEFF starts the third
    text = "abc def" * 2 + "\ufeffmid-text U+FEFF is a character" + PHRASE * 5
    path = tmp_path / "bom.txt"
    path.write_bytes(codecs.BOM_UTF8 + text.encode("utf-8"))
    corpus = load_corpus(settings(path, encoding=encoding, val_frac=0.1))  # streamed, in pieces
    assert corpus.vocab == Vocab.from_text(text) and "\ufeff" in corpus.vocab.chars  # only the leading one goes
    assert corpus.vocab.decode(np.concatenate([corpus.train_tokens, corpus.val_tokens])) == text
    assert corpus.sha256 == text_digest(text)
    assert read_corpus(str(path), encoding) == text  # read whole, as compare.gradcheck and gradflow do


def test_a_file_of_a_utf8_byte_order_mark_alone_is_empty(tmp_path):
    path = tmp_path / "only-a-mark.txt"
    path.write_bytes(codecs.BOM_UTF8)
    with pytest.raises(UsageError, match="is empty"):
        load_corpus(settings(path))
