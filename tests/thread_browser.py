"""Headless Chromium driven from a thread of its own.

Playwright's sync API refuses to start while another Playwright runs in the same thread, and every
test module that imports browser_fixtures' session `browser` fixture gets its own instance of it.
Tests that run this way never meet another module's Playwright, whatever order pytest picks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from browser_fixtures import CHROMIUM, CHROMIUM_ARGS, require_chromium


def run_with_chromium(test: Callable[[object], None]) -> None:
    """Call test(browser) in a new thread with a freshly launched Chromium; re-raise what it raised."""
    require_chromium()
    failures: list[BaseException] = []

    def body() -> None:
        from playwright.sync_api import sync_playwright
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                try:
                    test(browser)
                finally:
                    browser.close()
        except BaseException as error:  # handed to the test's thread, so pytest reports it
            failures.append(error)

    thread = threading.Thread(target=body, name="chromium-test")
    thread.start()
    thread.join()
    if failures:
        raise failures[0]
