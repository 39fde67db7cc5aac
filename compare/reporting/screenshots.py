"""TensorBoard itself, served on loopback and photographed in headless Chromium, as a user would see it.

Used by the report (docs/tensorboard.png) and by tests/test_tensorboard_browser.py, which finds
the charts on the same page. Chromium is Debian's package, driven by Playwright (a dev extra), with the
settings of compare.reporting.browser: nothing is downloaded, Chromium stays off the network.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from compare.reporting.browser import CHROMIUM_ARGS, chromium_path

START_TIMEOUT_S = 60.0
# TensorBoard's default smoothing (0.6) would blur the log10 curves into each other; 0 shows what was logged.
TABS = {name: f"#{name}&_smoothingWeight=0" for name in ("custom_scalars", "scalars", "text", "hparams")}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serving_tensorboard(logdir: Path) -> Iterator[str]:
    """``tensorboard --logdir logdir`` on a free loopback port, until the body ends; yields its URL."""
    port = free_port()
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1"]
    process = subprocess.Popen([*command, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_listening(port, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_until_listening(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tensorboard exited with code {process.returncode} before it listened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"tensorboard did not listen on port {port} within {START_TIMEOUT_S:.0f} s")


@contextmanager
def chromium_page(executable: str | None = None, width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A Playwright page in headless Chromium (Playwright's Page; typed Any: Playwright is a dev extra)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable or chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


def visible(locator: Any) -> Any:
    """The elements of ``locator`` that are shown (TensorBoard keeps hidden copies of many)."""
    return locator.locator("visible=true")


def open_tab(page: Any, url: str, tab: str, ready_text: str) -> None:
    """Load one of TensorBoard's TABS and wait until ``ready_text`` (a chart title, a run name) is on it."""
    page.goto(url + TABS[tab])
    page.reload()  # a new hash alone keeps the last tab's hidden elements, which match text too
    visible(page.get_by_text(ready_text)).first.wait_for()
    page.wait_for_timeout(1500)  # the charts draw their lines after their titles appear
