"""The Classify tab's library panel in headless Chromium: a saved classifier labels the app's demo photos, a
photo the classifier is unsure about is picked in the review grid and its label corrected with one click,
stored in the catalog as a labelled example with the person who gave it."""

from __future__ import annotations

import getpass

import pytest
from browser_fixtures import app_server, screenshot  # noqa: F401
from playwright.sync_api import expect
from test_browser import choose
from thread_browser import run_with_chromium

from cliplab.app.services import classifiers, labels
from cliplab.indexes.catalog import open_catalog
from cliplab.indexes.records import LabelledExample

pytestmark = pytest.mark.browser
CLASSES = ["a red shape", "a blue shape", "a green shape"]


def test_review_and_correct_a_label(app_server, test_output_dir):  # noqa: F811
    catalog = open_catalog(f"sqlite:///{app_server.home / 'catalog.db'}")
    try:
        classifiers.save_classifier(catalog, "colours", CLASSES, ["a picture of {}."])
    finally:
        catalog.engine.dispose()
    # a thread of its own: another module's session browser may hold this thread's Playwright
    run_with_chromium(lambda browser: review_and_correct(browser, app_server, test_output_dir))


def review_and_correct(browser, server, test_output_dir) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(server.url)
    page.wait_for_selector("#banner")
    page.locator("#labels-panel").get_by_text("Your library, labelled").click()
    choose(page, "labels-name", "colours")
    page.locator("#labels-apply").click()
    expect(page.locator("#labels-summary")).to_contain_text("photos labelled", timeout=90_000)
    page.locator("#labels-unsure .thumbnail-item").first.click()
    expect(page.locator("#labels-picked")).to_contain_text("picked")
    picked = int(page.locator("#labels-picked").inner_text().split("@")[1].split(" ")[0])
    choose(page, "labels-right", "a green shape")
    page.locator("#labels-confirm").click()
    expect(page.locator("#labels-outcome")).to_contain_text(f"Photo @{picked}", timeout=30_000)
    expect(page.locator("#labels-outcome")).to_contain_text(f"as a green shape by {getpass.getuser()}")
    screenshot(page, test_output_dir, "labels-review")
    context.close()
    catalog = open_catalog(f"sqlite:///{server.home / 'catalog.db'}")
    try:
        with catalog.session() as session:
            rows = session.query(LabelledExample).all()
        assert [(r.file_id, r.label, r.person, r.classifier) for r in rows] == [
            (picked, "a green shape", getpass.getuser(), "colours")]
        assert labels.store.run_state(catalog, "colours", rows[0].model_id) is not None
    finally:
        catalog.engine.dispose()
