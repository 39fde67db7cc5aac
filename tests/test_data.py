"""Corpus, vocabulary, encoding and batching: the part both implementations share."""

from __future__ import annotations

import numpy as np
import pytest

from compare.data.corpus import (
    PYDOC_TOPICS,
    StreamBatches,
    Vocab,
    builtin_corpus,
    encode_file,
    load_text,
    split_train_val,
    text_digest,
    token_dtype,
)


def test_the_old_builtin_corpus_stays_reachable_and_unchanged():
    from pydoc_data.topics import topics

    text = builtin_corpus(PYDOC_TOPICS)  # --corpus pydoc-topics: the text of earlier checkpoints and figures
    assert text == "\n\n".join(topics[key] for key in sorted(topics)) and len(text) > 400_000
    assert builtin_corpus() != text  # the default is the prose (tests/test_prose.py)


def test_vocab_is_sorted_and_round_trips():
    text = "banana bread, 3 ÄÖ ü —"
    vocab = Vocab.from_text(text)
    assert list(vocab.chars) == sorted(set(text))
    ids = vocab.encode(text)
    assert ids.dtype == np.uint8
    assert vocab.decode(ids) == text


def test_unknown_characters_are_named():
    with pytest.raises(ValueError, match="'xz'"):
        Vocab.from_text("abc").encode("axbz")


def test_token_dtype_is_the_smallest_that_fits():
    assert token_dtype(256) == np.uint8
    assert token_dtype(257) == np.uint16
    assert token_dtype(70_000) == np.uint32


def test_wide_vocabularies_encode():
    text = "".join(chr(0x4E00 + i) for i in range(300))  # 300 CJK characters
    ids = Vocab.from_text(text).encode(text)
    assert ids.dtype == np.uint16
    assert np.array_equal(ids, np.arange(300))


def test_validation_is_the_end_of_the_text():
    train, val = split_train_val(np.arange(100), 0.05)
    assert np.array_equal(val, np.arange(95, 100))
    assert np.array_equal(train, np.arange(95))


def test_stream_batches_are_contiguous_streams_shifted_by_one():
    tokens = np.arange(103)
    batches = StreamBatches(tokens, batch_size=4, seq_length=5)
    # (103 - 1) // 4 = 25 characters per stream, 5 chunks of 5.
    assert len(batches) == 5
    first_inputs, first_targets = batches.get_batch(0)
    second_inputs, _ = batches.get_batch(1)
    assert first_inputs.shape == (4, 5)
    assert np.array_equal(first_inputs[:, 0], [0, 25, 50, 75])  # row s starts stream s
    assert np.array_equal(first_targets, first_inputs + 1)
    assert np.array_equal(second_inputs[:, 0], first_inputs[:, -1] + 1)  # chunk k+1 continues row s


def test_too_little_text_is_a_clear_error():
    with pytest.raises(ValueError, match="too few"):
        StreamBatches(np.arange(10), batch_size=4, seq_length=5)


TEXT = "Plain ASCII, then “curly quotes” — a dash,\r\nCRLF lines\r\nand 漢字.\n"


def test_encode_file_streams_to_what_the_str_path_gives(tmp_path, monkeypatch):
    monkeypatch.setattr("compare.data.corpus.CHUNK_CHARS", 7)  # many pieces, boundaries everywhere
    path = tmp_path / "text.txt"
    path.write_bytes(TEXT.encode("utf-8"))
    encoded = encode_file(path)
    text = load_text(path)  # newline translation included, as in text mode
    vocab = Vocab.from_text(text)
    assert encoded.vocab == vocab
    assert encoded.tokens.dtype == np.uint8
    assert np.array_equal(encoded.tokens, vocab.encode(text))
    assert encoded.sha256 == text_digest(text)


def test_chunked_encode_names_every_unknown_character(monkeypatch):
    monkeypatch.setattr("compare.data.corpus.CHUNK_CHARS", 2)
    with pytest.raises(ValueError, match="'qxz'"):
        Vocab.from_text("abc").encode("axbcqaaz")
