"""Sampling: float64 probabilities for any temperature, one random stream for both implementations."""

from __future__ import annotations

import numpy as np
import pytest
from problems import random_params
from tiny_runs import PHRASE, WORDS, train_argv

from compare.data.corpus import Vocab
from compare.model.checkpoint import load_checkpoint
from compare.model.engines import make_engine
from compare.model.init import init_params
from compare.model.sampling import probabilities, sample_text
from compare.sample import main as sample_main
from compare.training.config import parse_args
from compare.training.loop import train

VOCAB = Vocab.from_text(PHRASE)


def engines_with_random_weights(hidden_size=16, seed=0):
    """A manual and a torch engine (float64) with weights of std 0.5: a peaked, non-uniform model."""
    params = random_params(len(VOCAB), hidden_size, seed=seed)
    return [make_engine(impl, params, lr=0.1, clip=5.0, dtype="float64") for impl in ("manual", "torch")]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A manual run of 336 steps (8 epochs, about 2 s) on the tiny corpus: its run directory."""
    directory = tmp_path_factory.mktemp("trained")
    train(parse_args(train_argv(directory, epochs=8)))
    return directory / "runs" / "run"


@pytest.mark.exactness
def test_probabilities_are_float64_and_sum_to_one_even_from_float32_logits():
    rng = np.random.default_rng(0)
    for _ in range(200):
        logits = rng.normal(0.0, 20.0, size=300).astype(np.float32)
        probs = probabilities(logits, temperature=0.7)
        assert probs.dtype == np.float64
        assert abs(probs.sum() - 1.0) < 1e-12  # float64 rounding of a sum of 300 terms
        rng.choice(len(probs), p=probs)  # NumPy's own check, the classic float32 crash, accepts it


def test_temperature_zero_puts_everything_on_the_argmax_lowest_id_on_ties():
    assert probabilities(np.array([0.5, 2.0, -1.0]), 0).tolist() == [0.0, 1.0, 0.0]
    assert probabilities(np.array([3.0, 1.0, 3.0]), 0).tolist() == [1.0, 0.0, 0.0]


@pytest.mark.exactness
@pytest.mark.parametrize("temperature", [1e-3, 1e-12, 1e-300, 5e-324])
def test_tiny_temperatures_approach_argmax_without_overflow(temperature):
    # Dividing first would overflow: 50 / 1e-300 is inf, and inf - inf is NaN.
    logits = np.array([50.0, 49.0, -30.0, 10.0])
    with np.errstate(all="raise"):  # not even a warning may escape
        probs = probabilities(logits, temperature)
    # The runner-up is 1 logit behind: e^(-1/T) <= e^-1000 of the top's mass; the sum is 1 to a few ulps.
    assert np.all(np.isfinite(probs)) and probs[0] > 0.999 and abs(probs.sum() - 1) < 1e-15


@pytest.mark.exactness
@pytest.mark.parametrize("temperature", [0.25, 0.5, 1.0])
def test_logits_of_order_1000_give_exact_probabilities(temperature):
    # exp(1000) overflows float64: without subtracting the max first every probability is inf / inf = NaN.
    logits = 1000.0 + np.array([0.0, -0.5, -3.0, 0.25, -900.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        probs = probabilities(logits, temperature)
    relative = np.exp((logits - 1000.0) / temperature)  # the reference shifts by a constant it knows
    np.testing.assert_allclose(probs, relative / relative.sum(), rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize("temperature", [1e3, 1e300, np.inf])
def test_huge_temperatures_approach_uniform(temperature):
    probs = probabilities(np.array([50.0, 49.0, -30.0, 10.0]), temperature)
    assert np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs, 0.25, atol=0.03)  # within 80/T of uniform at T = 1000


@pytest.mark.parametrize("temperature", [-1.0, -1e-300, float("nan")])
def test_negative_or_nan_temperature_is_a_clear_error(temperature):
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        probabilities(np.zeros(3), temperature)


@pytest.mark.exactness
def test_top_k_keeps_only_the_k_most_likely_characters():
    logits = np.array([1.0, 4.0, 3.0, -2.0, 2.0])
    probs = probabilities(logits, 1.0, top_k=2)
    assert np.flatnonzero(probs).tolist() == [1, 2]
    np.testing.assert_allclose(
        probs[[1, 2]], np.exp([4.0, 3.0]) / np.exp([4.0, 3.0]).sum(), rtol=1e-15
    )  # the same two-term softmax: a few ulps
    assert probabilities(logits, 1.0, top_k=99).tolist() == probabilities(logits, 1.0).tolist()


def test_broken_logits_are_an_error_not_a_random_draw():
    with pytest.raises(ValueError, match="not finite"):
        probabilities(np.array([0.0, np.nan]), 1.0)


def test_same_seed_same_text_other_seed_other_text():
    engine = engines_with_random_weights()[0]
    first, again = (sample_text(engine, VOCAB, 200, seed=5) for _ in range(2))
    assert first == again
    assert sample_text(engine, VOCAB, 200, seed=6) != first


@pytest.mark.exactness
@pytest.mark.parametrize("temperature, top_k", [(0.0, None), (0.5, None), (1.0, None), (2.0, None), (1.0, 3)])
def test_both_implementations_write_the_same_text(temperature, top_k):
    manual_engine, torch_engine = engines_with_random_weights()
    texts = [
        sample_text(engine, VOCAB, 300, temperature, prime="the ", seed=11, top_k=top_k)
        for engine in (manual_engine, torch_engine)
    ]
    assert texts[0] == texts[1]
    assert len(set(texts[0])) > 3  # a real sample, not one character repeated


def greedy_reference(params: dict, prime_id: int, length: int) -> list:
    """Argmax decoding written out from the equations (one-layer rnn), not through manual.step:
    h_t = tanh(b + W h_{t-1} + U x_t), o_t = c + V h_t, from h_0 = 0 of shape (H,)."""
    h = np.zeros(params["W"].shape[1])
    token, ids = prime_id, []
    for _ in range(length):
        h = np.tanh(params["b"] + params["W"] @ h + params["U"][:, token])
        token = int(np.argmax(params["c"] + params["V"] @ h))  # ties: the lowest id, as documented
        ids.append(token)
    return ids


@pytest.mark.exactness
def test_temperature_zero_equals_argmax_decoding():
    engine = engines_with_random_weights()[0]
    greedy = greedy_reference(engine.numpy_params(), int(VOCAB.encode("t")[0]), 100)
    assert len(set(greedy)) > 3  # weights of std 0.5: a real sequence, not one character repeated
    assert sample_text(engine, VOCAB, 100, temperature=0, prime="t", seed=0) == VOCAB.decode(greedy)
    assert sample_text(engine, VOCAB, 100, temperature=1e-300, prime="t", seed=0) == VOCAB.decode(greedy)


def test_a_trained_model_spells_words_of_its_corpus_and_an_untrained_one_does_not(trained_run, capsys):
    argv = ["--checkpoint", str(trained_run), "--temperature", "0.5", "--length", "200", "--seed", "1"]
    assert sample_main(argv) == 0
    trained_text = capsys.readouterr().out
    untrained = make_engine("manual", init_params(len(VOCAB), 16, seed=3), lr=0.1, clip=5.0, dtype="float64")
    untrained_text = sample_text(untrained, VOCAB, 200, temperature=0.5, seed=1)
    assert sum(word in trained_text for word in WORDS) >= 3, trained_text
    assert not any(word in untrained_text for word in WORDS), untrained_text


@pytest.mark.exactness
def test_the_command_prints_the_same_text_with_either_implementation(trained_run, capsys):
    outputs = []
    for impl in ("manual", "torch"):
        assert (
            sample_main(
                [
                    "--checkpoint",
                    str(trained_run),
                    "--impl",
                    impl,
                    "--prime",
                    "the ",
                    "--seed",
                    "4",
                    "--length",
                    "150",
                    "--top-k",
                    "5",
                ]
            )
            == 0
        )
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and outputs[0].startswith("the ")


def test_training_logs_samples_made_by_the_same_code(trained_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trained_run / "manual"), size_guidance={"tensors": 0})
    events.Reload()
    last = events.Tensors("sample/text_summary")[-1]
    logged = last.tensor_proto.string_val[0].decode("utf-8")
    checkpoint = load_checkpoint(trained_run / "manual" / "latest.npz")
    assert last.step == checkpoint.step  # the last sample and the final checkpoint: the same weights
    engine = make_engine("manual", checkpoint.engine.params, 0.1, 5.0, checkpoint.config["dtype"])
    settings = checkpoint.config
    expected = sample_text(engine, VOCAB, settings["sample_length"], seed=settings["seed"] + last.step)
    assert logged == "    " + expected.replace("\n", "\n    ")  # Logger.text indents for Markdown


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--prime", "héllo wörld"], "not in the vocabulary: 'éö'"),
        (["--temperature", "-0.5"], "--temperature must be >= 0"),
        (["--temperature", "nan"], "--temperature must be >= 0"),
        (["--top-k", "0"], "--top-k must be a positive"),
        (["--length", "-1"], "--length must be between 1 and"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_2(trained_run, capsys, flags, message):
    try:
        exit_code = sample_main(["--checkpoint", str(trained_run), *flags])
    except SystemExit as exit_info:  # argparse-level errors exit from inside parse_args
        exit_code = exit_info.code
    assert exit_code == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and message in stderr, stderr
