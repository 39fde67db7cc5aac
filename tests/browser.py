"""Headless Debian Chromium for the browser tests, or a skip that says how to get it.

Outside CI a machine without Chromium skips these tests with the install command; in CI
(``CI`` set, as .ci/run runs) a missing browser is a failure, so the tests never silently
stop running there. ``BPTT_CHROMIUM`` points the tests at another binary (or at none, to
try the skip on a machine that has Chromium).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from compare.reporting.browser import chromium_path

CHROMIUM = chromium_path()  # Debian's package; never `playwright install`


def require_chromium() -> str:
    """The Chromium binary's path; skips the test (fails it in CI) when there is none."""
    try:
        import playwright.sync_api  # noqa: F401  (only checking that it is installed)
    except ImportError:
        pytest.fail('playwright is not installed: pip install -e ".[dev]"')
    if not Path(CHROMIUM).is_file():
        message = (
            f"no Chromium at {CHROMIUM}: the browser tests need Debian's package "
            "(apt-get install chromium); .ci/run installs it"
        )
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set, so the browser tests must run)")
        pytest.skip(message)
    return CHROMIUM
