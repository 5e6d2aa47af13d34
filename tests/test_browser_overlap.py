"""The Overlap tab in a browser: a labelled evaluation set and a reference folder in the library, the
split table, a pair side by side, and a rejected pair moving its image from Overlap to Clean."""

from __future__ import annotations

import csv
import re

import pytest
from browser_fixtures import app_server, browser, page, screenshot  # noqa: F401
from overlap_support import make_sets
from playwright.sync_api import expect
from test_browser import add_folder, field, open_tab

pytestmark = pytest.mark.browser


def test_overlap_tab_splits_shows_a_pair_and_a_rejection_moves_it(page, app_server, tmp_path,  # noqa: F811
                                                                  test_output_dir):
    sets = make_sets(tmp_path / "overlap")
    with (sets.eval_dir / "eval.csv").open("w", newline="") as f:  # predictions given: no model needed
        writer = csv.writer(f)
        writer.writerow(["path", "label", "prediction"])
        for image in sorted(sets.eval_dir.rglob("*.png")):
            writer.writerow([str(image), image.parent.name, image.parent.name])
    add_folder(page, tmp_path / "overlap", 18 + len(list(sets.reference_dir.iterdir())))
    open_tab(page, "Overlap")
    field(page, "overlap-eval").fill(str(sets.eval_dir / "eval.csv"))
    field(page, "overlap-reference").fill(str(sets.reference_dir))
    page.locator("#overlap-run").click()
    splits = page.locator("#overlap-splits")
    expect(splits).to_contain_text("Overlap", timeout=60_000)
    expect(page.locator("#overlap-summary")).to_contain_text("one-sided binomial test")
    summary = page.locator("#overlap-summary")
    expect(summary).to_contain_text(re.compile(rf"Overlap\s+n={len(sets.copied)}\s"))
    field(page, "overlap-pair").fill("0")
    page.locator("#overlap-show").click()
    expect(page.locator("#overlap-left img")).to_be_visible(timeout=30_000)
    expect(page.locator("#overlap-right img")).to_be_visible()
    screenshot(page, test_output_dir, "overlap-pair")
    page.locator("#overlap-reject").click()
    expect(page.locator("#overlap-pairs")).to_contain_text("rejected", timeout=30_000)
    expect(summary).to_contain_text(re.compile(rf"Overlap\s+n={len(sets.copied) - 1}\s"))
    expect(page.locator("#overlap-error")).to_be_hidden()
