"""The app's text tower choice in headless Chromium: a multilingual tower made for the app's model searches
its indexed photos in German; a tower made for another image tower is refused with a sentence beside the
choice, and no stale result stays under it."""

from __future__ import annotations

import json

import pytest
from browser_fixtures import app_server, browser, page, screenshot  # noqa: F401
from playwright.sync_api import expect
from test_browser import field, open_tab
from text_tower_fixtures import mclip_folder

pytestmark = pytest.mark.browser


def pick_tower(tab, value: str) -> None:
    box = tab.locator("#search-text-tower input").first
    box.click()
    box.fill(value)
    box.press("Enter")


def transformers_models_import() -> str | None:
    """None when transformers' model code imports in a plain process (the app's); else why not. It imports
    torchvision when installed, which fails beside a torch of another build (scripts/check_torch_pair.py);
    the tests' own processes work around it (tests/oracles.py), the app's does not."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", "import transformers.modeling_utils"], capture_output=True,
                         text=True)
    return None if run.returncode == 0 else (run.stderr.strip().splitlines() or ["?"])[-1]


def test_search_in_german_through_a_paired_text_tower(page, app_server, tmp_path, test_output_dir):  # noqa: F811
    from cliplab.assets import asset_path

    why = transformers_models_import()
    if why:
        pytest.skip(f"the app's process cannot import transformers' models here ({why}): "
                    "python scripts/check_torch_pair.py says how to repair the torch/torchvision pair")

    config = asset_path("demo") / "config.json"
    fingerprint = json.loads(config.read_text())["fingerprint"] if config.is_file() else None
    if fingerprint is None:
        pytest.skip("the demo model is not built here")
    paired = mclip_folder(tmp_path, image_dim=128, pairs_with=[{"fingerprint": fingerprint}], name="paired")
    other = mclip_folder(tmp_path, image_dim=128, pairs_with=[{"name": "ViT-L/14"}], name="other")
    open_tab(page, "Search")
    pick_tower(page, str(paired))
    field(page, "search-query").fill("ein roter Kreis")
    field(page, "search-query").press("Enter")
    expect(page.locator("#search-info")).to_contain_text("page 1 of", timeout=120_000)
    expect(page.locator("#search-error")).to_be_hidden()
    screenshot(page, test_output_dir, "paired-tower")
    pick_tower(page, str(other))
    page.locator("#search-run").click()
    expect(page.locator("#search-error")).to_contain_text("was trained for the image space of ViT-L/14",
                                                          timeout=120_000)
    expect(page.locator("#search-gallery img")).to_have_count(0)
