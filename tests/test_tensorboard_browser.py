"""TensorBoard itself, after a short --impl both run, in headless Chromium: what a new user sees.

The comparison page holds four charts, each with a drawn line for every run that logs it; the
text tab holds both implementations' samples; the HParams table names each row in full. The
screenshots are kept in test-artifacts/ (the report makes docs/tensorboard.png the same way).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from browser import require_chromium
from tiny_runs import train_argv

from compare.reporting.screenshots import chromium_page, open_tab, serving_tensorboard, visible
from compare.training.config import parse_args
from compare.training.logger import COMPARISON_CHARTS
from compare.training.loop import train

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
RUN = "short"
STEPS = 84  # two epochs of the tiny corpus: ten validations without --eval-every


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("board")
    argv = train_argv(directory, RUN, impl="both", max_steps=STEPS)
    index = argv.index("--eval-every")  # the default cadence: what a new user gets
    train(parse_args(argv[:index] + argv[index + 2 :]))
    return directory / "runs"


@pytest.fixture(scope="module")
def page(logdir):
    executable = require_chromium()
    with serving_tensorboard(logdir) as url, chromium_page(executable) as page:
        page.board_url = url
        yield page


def keep(page, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(path, ARTIFACTS / name)


def drawn_lines(card) -> list[int]:
    """The length of each drawn line's SVG path in a chart card: a line of one point is a few characters."""
    return card.locator("path.line").evaluate_all("paths => paths.map(p => (p.getAttribute('d') || '').length)")


def test_the_comparison_page_draws_every_chart(page, tmp_path):
    titles = list(COMPARISON_CHARTS)
    open_tab(page, page.board_url, "custom_scalars", titles[-1])
    cards = page.locator("tf-custom-scalar-multi-line-chart-card")
    assert cards.count() == len(titles)
    for index, title in enumerate(titles):
        card = cards.nth(index)
        assert visible(card.get_by_text(title)).count() == 1, title  # the charts in reading order
        lengths = drawn_lines(card)
        # loss and validation: one line per implementation; agree and chaos: one per tag of the both/ run
        assert len(lengths) >= 2 and min(lengths) > 50, (title, lengths)  # many points each, not empty
    keep(page, tmp_path, "tensorboard_comparison.png")


def test_the_text_tab_shows_both_samples(page, tmp_path):
    open_tab(page, page.board_url, "text", f"step {STEPS}")
    for impl in ("manual", "torch"):
        assert visible(page.get_by_text(f"{RUN}/{impl}", exact=True)).count() >= 1
    assert visible(page.get_by_text(f"step {STEPS}")).count() == 2  # the final sample of each
    keep(page, tmp_path, "tensorboard_text.png")


def test_the_hparams_table_names_each_run_in_full(page, tmp_path):
    open_tab(page, page.board_url, "hparams", "Trial ID")
    for impl in ("manual", "torch"):
        assert visible(page.get_by_text(f"{RUN}/{impl}", exact=True)).count() == 1, impl
    keep(page, tmp_path, "tensorboard_hparams.png")
