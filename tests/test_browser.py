"""The Gradio app in headless Chromium: classify, index and search, audit, switch models.

One app server for the module (tests/browser_fixtures.py); the model switch runs last because it
changes the server's current model. Each test leaves a screenshot under its test-output folder.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from browser_fixtures import app_server, browser, page, screenshot  # noqa: F401
from library_fixtures import tiny_bundle
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def field(tab, elem_id: str):
    """The text entry inside a gr.Textbox (input or textarea, depending on its lines)."""
    return tab.locator(f"#{elem_id} textarea, #{elem_id} input").first


def open_tab(tab, name: str) -> None:
    tab.get_by_role("tab", name=name).click()


def write_scenes(folder, n: int = 6):
    from trainer.synthetic import World
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    world = World(seed=3, image_size=96)
    for i, sample in enumerate(world.sample(n, "all", rng)):
        sample.image.save(folder / f"scene{i}.png")
    return folder


def test_classify_typed_classes(page, app_server, tmp_path, test_output_dir):  # noqa: F811
    expect(page.locator("#banner")).to_contain_text("demo model" if app_server.model == "demo" else "Current model")
    image = next(iter(sorted(app_server.photos.glob("*.jpg"))))
    page.locator("#classify-upload input[type=file]").set_input_files(str(image))
    field(page, "classify-classes").fill("a red circle\na blue square\na green star")
    field(page, "classify-second").fill("a red circle\na blue square\na green star\na black heart")
    page.locator("#classify-run").click()
    expect(page.locator("#classify-summary")).to_contain_text("1 image(s) classified into 3 classes", timeout=90_000)
    label = page.locator("#classify-label")
    for name in ("a red circle", "a blue square", "a green star"):
        expect(label).to_contain_text(name)
    percents = [float(p) for p in re.findall(r"(\d+(?:\.\d+)?)%", label.inner_text())]
    assert len(percents) == 3 and abs(sum(percents) - 100) < 3, percents  # the probabilities add up
    expect(page.locator("#classify-table")).to_contain_text("a green star")
    expect(page.locator("#classify-summary")).to_contain_text("changed their top-1 class")
    screenshot(page, test_output_dir, "classify")
    # bad input reaches the page as a sentence, not a trace
    field(page, "classify-classes").fill("only one")
    page.locator("#classify-run").click()
    expect(page.get_by_text("a classifier needs at least two to choose between").first).to_be_visible()
    assert "Traceback" not in page.content()


def test_index_a_folder_and_find_by_text(page, app_server, tmp_path, test_output_dir):  # noqa: F811
    folder = write_scenes(tmp_path / "holiday")
    open_tab(page, "Search")
    page.locator("#index-panel").get_by_text("Library and indexing").click()
    field(page, "index-folder").fill(str(folder))
    page.locator("#index-add").click()
    expect(page.locator("#index-status")).to_contain_text(f"indexing {folder}: done — 6 embedded", timeout=90_000)
    field(page, "search-query").fill("a red circle")
    page.get_by_text("Filters").click()
    field(page, "search-folder").fill(str(folder))
    page.locator("#search-run").click()
    expect(page.locator("#search-info")).to_contain_text("6 result(s)", timeout=60_000)
    gallery = page.locator("#search-gallery")
    expect(gallery.locator("img").first).to_be_visible()
    assert gallery.locator("img").count() == 6
    expect(gallery).to_contain_text("scene")
    expect(page.locator("#search-plot .main-svg").first).to_be_visible(timeout=30_000)  # the score histogram drew
    screenshot(page, test_output_dir, "search")
    # the photos are served from the indexed folder, and nothing outside it
    src = gallery.locator("img").first.get_attribute("src")
    assert src and "scene" in src
    outside = page.request.get(app_server.url + "gradio_api/file=/etc/passwd")
    assert outside.status in (403, 404)


def test_run_a_small_audit(page, app_server, tmp_path, test_output_dir):  # noqa: F811
    from test_audit_measures import make_fairface
    make_fairface(tmp_path / "fairface", n_per_cell=2)
    open_tab(page, "Audit")
    field(page, "audit-dataset").fill(str(tmp_path / "fairface"))
    page.locator("#audit-run").click()
    expect(page.locator("#audit-progress")).to_contain_text("saved", timeout=120_000)
    shares = page.locator("#audit-shares")
    expect(shares).to_contain_text("non-human")
    expect(shares).to_contain_text("crime")
    expect(page.locator("#audit-headline")).not_to_be_empty()
    screenshot(page, test_output_dir, "audit")


def test_captions_panel_image_to_text_and_browse(page, app_server, tmp_path, test_output_dir):  # noqa: F811
    from test_captions import write_captioned
    data = write_captioned(tmp_path / "captioned")
    open_tab(page, "Search")
    page.locator("#captions-panel").get_by_text("Image → text and captioned datasets").click()
    field(page, "captions-collection").fill(str(data["csv"]))
    page.locator("#captions-image input[type=file]").set_input_files(str(data["images"][0]))
    page.locator("#captions-find-texts").click()
    # an upload is a re-encoded copy, not the dataset's file: ranked, nothing marked (browsing marks pairs)
    expect(page.locator("#captions-texts")).to_contain_text(data["colours"][0], timeout=60_000)
    assert "✓" not in page.locator("#captions-texts").inner_text()
    field(page, "captions-text").fill(data["texts"][0])
    page.locator("#captions-find-images").click()
    expect(page.locator("#captions-images")).to_contain_text("true pair", timeout=60_000)
    page.locator("#captions-open").click()
    expect(page.locator("#captions-summary")).to_contain_text("Image 0 of 6", timeout=60_000)
    expect(page.locator("#captions-browse-texts")).to_contain_text("✓")
    screenshot(page, test_output_dir, "captions")
    field(page, "captions-collection").fill(str(tmp_path / "missing.csv"))
    page.locator("#captions-find-texts").click()
    expect(page.get_by_text("missing.csv does not exist").first).to_be_visible()
    assert "Traceback" not in page.content()


def test_switch_models(page, app_server, tmp_path, test_output_dir):  # noqa: F811
    from engine.weights import save_model
    folder = tmp_path / "other-model"
    save_model(tiny_bundle(seed=5).model, folder, meta={"name": "other"})
    open_tab(page, "Models")
    table = page.locator("#models-table")
    for name in ("ViT-B/32", "RN50x64", "ViT-L/14@336px"):
        expect(table).to_contain_text(name)
    before = page.locator("#models-current").inner_text()
    field(page, "models-checkpoint").fill(str(folder))
    page.locator("#models-load").click()
    expect(page.locator("#models-message")).to_contain_text(f"Loaded {folder}", timeout=60_000)
    after = page.locator("#models-current").inner_text()
    assert after != before and "fingerprint" in after
    screenshot(page, test_output_dir, "models")
    # a checkpoint that does not exist: a sentence, and the model stays
    field(page, "models-checkpoint").fill(str(tmp_path / "missing"))
    page.locator("#models-load").click()
    expect(page.get_by_text("is neither a model name").first).to_be_visible()
    assert after in page.locator("#models-current").inner_text()  # gradio may prefix its "Error" badge
