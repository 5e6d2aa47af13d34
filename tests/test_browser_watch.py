"""The app keeps its library current by itself: a photo copied into a library folder appears in search
without a rescan (the app's folder watcher, on by default), and the library panel says it is watching."""

from __future__ import annotations

import shutil

import pytest
from browser_fixtures import app_server, browser, page, screenshot  # noqa: F401
from playwright.sync_api import expect
from test_browser import add_folder, field, write_scenes

pytestmark = pytest.mark.browser


def test_a_photo_copied_into_a_library_folder_appears_in_search(page, app_server, tmp_path,  # noqa: F811
                                                                 test_output_dir):
    folder = write_scenes(tmp_path / "watched", n=3, seed=21)
    add_folder(page, folder, 3)
    expect(page.locator("#index-status")).to_contain_text("Watching for changes:", timeout=30_000)
    expect(page.locator("#index-status")).to_contain_text(f"{folder.resolve()}: watching", timeout=30_000)
    field(page, "search-query").fill("a red circle")
    page.get_by_text("Filters").click()
    field(page, "search-folder").fill(str(folder))
    page.locator("#search-run").click()
    expect(page.locator("#search-info")).to_contain_text("3 result(s)", timeout=60_000)
    extra = write_scenes(tmp_path / "camera", n=1, seed=22) / "scene0.png"
    shutil.copy(extra, folder / "copied-in.png")  # no Add, no rescan: the watcher takes it
    for _attempt in range(30):
        page.locator("#search-run").click()
        try:
            expect(page.locator("#search-info")).to_contain_text("4 result(s)", timeout=2_000)
            break
        except AssertionError:
            continue
    expect(page.locator("#search-info")).to_contain_text("4 result(s)")
    expect(page.locator("#search-gallery")).to_contain_text("copied-in.png")
    screenshot(page, test_output_dir, "watched-folder")
