"""The demo page in headless Chromium: the server process, the browser, and the screenshot docs/demo.md shows.

tests/test_demo_browser.py drives the page with the same pieces. Playwright only drives
Debian's Chromium (``/usr/bin/chromium``, or ``BPTT_CHROMIUM``): never ``playwright
install``, no browser download.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_CHROMIUM = "/usr/bin/chromium"  # Debian's package
# --no-sandbox: CI runs as root. The rest keep Chromium from reaching for the network, which is closed here.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1000, "height": 700}
TIMEOUT_MS = 30_000


def chromium_path() -> str:
    """The Chromium binary the browser code uses: ``BPTT_CHROMIUM``, else Debian's."""
    return os.environ.get("BPTT_CHROMIUM", DEFAULT_CHROMIUM)


def browser_missing() -> str | None:
    """Why no screenshot can be taken here (Playwright or Chromium missing), or None."""
    try:
        import playwright.sync_api  # noqa: F401  (only checking that it is installed)
    except ImportError:
        return 'playwright is not installed (pip install -e ".[dev]")'
    if not Path(chromium_path()).is_file():
        return f"no Chromium at {chromium_path()} (apt-get install chromium)"
    return None


@contextmanager
def demo_server(checkpoint: str | Path, cwd: str | Path | None = None) -> Iterator[str]:
    """``python -m compare.demo --checkpoint CHECKPOINT --port 0``, as a user starts it; yields its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "compare.demo", "--checkpoint", str(checkpoint), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=cwd,
    )
    try:
        assert process.stdout is not None  # stdout=PIPE
        line = process.stdout.readline()  # "serving <run> (...) at http://127.0.0.1:<port>/"
        if " at http://" not in line:
            raise RuntimeError(f"the demo server did not start: {line!r}")
        yield line.split(" at ")[-1].strip()
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (a Playwright Browser), closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Generation:
    """What the screenshot's page is asked for: the fields of the demo's form."""

    length: int = 600
    prime: str = "The "
    seed: int = 4
    temperature: str = "0.8"  # the slider's default


def open_page(browser: Any, url: str) -> Any:
    """The demo page at ``url``, loaded, with the model's details filled in."""
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector("body[data-state=ready]")
    return page


def generate_on_page(page: Any, generation: Generation) -> str:
    """Fill the form, press Generate, wait for the text; the generated text (without the prime)."""
    if page.input_value("#temperature") != generation.temperature:
        raise RuntimeError(f"the slider starts at {page.input_value('#temperature')}, not {generation.temperature}")
    page.fill("#length", str(generation.length))
    page.fill("#prime", generation.prime)
    page.fill("#seed", str(generation.seed))
    page.click("#generate")
    page.wait_for_selector("body[data-state=done]")
    return page.text_content("#output-text") or ""


def screenshot_on(browser: Any, checkpoint: str | Path, out: Path, generation: Generation) -> str:
    """Serve ``checkpoint``, generate ``generation`` on a page of ``browser``, save a full-page PNG at ``out``.

    Returns the generated text (without the prime).
    """
    with demo_server(checkpoint) as url:
        page = open_page(browser, url)
        text = generate_on_page(page, generation)
        page.screenshot(path=str(out), full_page=True)
        page.close()
    return text


def demo_screenshot(checkpoint: str | Path, out: Path, generation: Generation) -> str:
    """``screenshot_on`` in a Chromium of its own: what the report's demo section runs."""
    with chromium() as browser:
        return screenshot_on(browser, checkpoint, out, generation)
