"""The demo page in a real browser: headless Chromium (Debian's package) driven by Playwright.

CI installs chromium (see .ci/run); if it is missing this test fails and says so, rather
than skipping quietly. Playwright only drives the system's browser here: never
``playwright install`` (no browser downloads). The screenshot is kept in the test's
tmp_path and copied to test-artifacts/demo_page.png at the repository root.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from browser import require_chromium
from tiny_runs import train_argv

from compare.model.sampling import SampleConfig, generate_from_checkpoint
from compare.reporting.browser import Generation, chromium, demo_server, open_page, screenshot_on
from compare.training.config import parse_args
from compare.training.loop import train

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A manual run of 336 steps (8 epochs, about 2 s): it has learned a few words of the tiny corpus."""
    directory = tmp_path_factory.mktemp("browser")
    train(parse_args(train_argv(directory, run_name="browser-run", epochs=8)))
    return directory / "runs" / "browser-run"


@pytest.fixture(scope="module")
def demo_url(run_dir):
    """python -m compare.demo on a free port, as a user would start it (and as the report does); its printed URL."""
    with demo_server(run_dir) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    require_chromium()
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser, demo_url):
    """The demo page, loaded, with the model's details filled in."""
    page = open_page(browser, demo_url)
    yield page
    page.close()


def save_screenshot(page, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(path, ARTIFACTS / name)


@pytest.mark.slow
def test_slider_and_generate_show_text_of_the_requested_length(page, run_dir, tmp_path):
    assert page.text_content("#run-name") == "browser-run"
    assert page.text_content("#trained-impl") == "manual"
    assert page.text_content("#cell") == "rnn"
    assert "nats/char" in page.text_content("#val-loss")
    assert page.input_value("#impl") == "manual"

    slider = page.locator("#temperature")
    assert slider.input_value() == "0.8"  # the default temperature, as in the API
    slider.focus()
    page.keyboard.press("Home")  # the slider's minimum, 0
    for _ in range(6):
        page.keyboard.press("ArrowRight")  # one step of 0.05 each
    assert slider.input_value() == "0.3"
    assert page.text_content("#temperature-value") == "0.30"

    page.fill("#length", "321")
    page.fill("#prime", "the ")
    page.fill("#seed", "7")
    page.select_option("#impl", "torch")
    page.click("#generate")
    page.wait_for_selector("body[data-state=done]")

    text = page.text_content("#output-text")
    assert len(text) == 321
    assert page.text_content("#output-prime") == "the "
    cli = generate_from_checkpoint(
        SampleConfig(checkpoint=str(run_dir), impl="torch", length=321, temperature=0.3, prime="the ", seed=7)
    )
    assert "the " + text == cli  # the page shows what python -m compare.sample prints
    assert page.is_hidden("#error")
    save_screenshot(page, tmp_path, "demo_page.png")


@pytest.mark.slow
def test_a_bad_prime_shows_the_server_message(page, tmp_path):
    page.fill("#prime", "the Ü")  # the tiny corpus has no Ü
    page.click("#generate")
    page.wait_for_selector("body[data-state=error]")
    assert page.is_visible("#error")
    assert "not in the vocabulary: 'Ü'" in page.text_content("#error")
    assert page.is_enabled("#generate")  # the page can be used again
    save_screenshot(page, tmp_path, "demo_page_error.png")


@pytest.mark.slow
def test_the_report_screenshot_shows_the_text_compare_sample_prints(browser, run_dir, tmp_path):
    out = tmp_path / "demo.png"
    generation = Generation(length=120, prime="the ", seed=4)
    text = screenshot_on(browser, run_dir, out, generation)  # what the report's demo section runs in its Chromium
    cli = generate_from_checkpoint(
        SampleConfig(checkpoint=str(run_dir), length=120, temperature=0.8, prime="the ", seed=4)
    )
    assert "the " + text == cli
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
