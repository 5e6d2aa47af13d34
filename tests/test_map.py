"""The Map tab: layouts, their cache, colours, hits and selections; and the tab in a real browser."""

from __future__ import annotations

import csv
import re
import subprocess

import numpy as np
import pytest
from browser_fixtures import require_chromium, screenshot, start_app
from library_fixtures import tiny_bundle, write_image
from thread_browser import run_with_chromium

from cliplab.app.services import map as maps
from cliplab.app.services import search
from cliplab.engine.errors import CliplabError
from cliplab.engine.paths import cache_dir
from cliplab.indexes.catalog import open_catalog
from cliplab.indexes.indexer import index_pending
from cliplab.indexes.scan import scan


def index(catalog, bundle, root, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        write_image(root / ("beach" if i % 2 else "city") / f"p{i}.png", i)
    scan(catalog, [str(root)])
    index_pending(catalog, bundle, workers=1, progress=False)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """A catalog with 12 photos in two sub-folders, embedded by a tiny random model."""
    home = tmp_path_factory.mktemp("map_library")
    catalog = open_catalog(f"sqlite:///{home / 'catalog.db'}")
    bundle = tiny_bundle()
    index(catalog, bundle, home / "photos", 12)
    yield catalog, bundle, home / "photos"
    catalog.close()


def test_points_carry_folders_dates_and_a_state_key(library, tmp_path):
    catalog, bundle, _ = library
    points = maps.library_points(catalog, bundle)
    assert len(points) == 12 and points.vectors.shape == (12, 64)
    assert np.allclose(np.linalg.norm(points.vectors, axis=1), 1, atol=1e-5)
    assert sorted(set(points.folders)) == ["photos/beach", "photos/city"]
    assert all(d.year >= 2000 for d in points.dates)
    # the same library and model name the same layout; another model or another photo does not
    assert maps.library_points(catalog, bundle).state_key == points.state_key
    assert maps.library_points(catalog, tiny_bundle(seed=1, name="other")).state_key != points.state_key
    other = open_catalog(f"sqlite:///{tmp_path / 'other.db'}")
    index(other, bundle, tmp_path / "photos", 12)
    before = maps.library_points(other, bundle).state_key
    index(other, bundle, tmp_path / "photos", 1, start=12)
    assert maps.library_points(other, bundle).state_key != before
    other.close()


def test_tiny_libraries_get_a_pca_layout():
    rng = np.random.default_rng(0)
    assert maps.compute_layout(np.zeros((0, 8), np.float32)).shape == (0, 2)
    assert maps.compute_layout(np.ones((1, 8), np.float32)).tolist() == [[0.0, 0.0]]
    xy = maps.compute_layout(rng.normal(size=(5, 8)).astype(np.float32))
    assert xy.shape == (5, 2) and np.isfinite(xy).all() and xy.std() > 0


def test_layout_cache_keeps_the_newest(monkeypatch):
    monkeypatch.setattr(maps, "KEEP_LAYOUTS", 2)
    rng = np.random.default_rng(0)
    for key in ("a", "b", "c"):
        vectors = rng.normal(size=(4, 8)).astype(np.float32)  # PCA-sized: no UMAP needed
        maps.layout(maps.LibraryPoints(np.arange(4), [""] * 4, [""] * 4, [], vectors, state_key=key))
    kept = sorted(p.stem for p in cache_dir("umap").glob("*.npy"))
    assert len(kept) == 2 and "c" in kept


@pytest.mark.slow  # UMAP compiles its numba code once per process (~40 s here)
def test_umap_layout_is_cached_per_library_state(library, monkeypatch):
    catalog, bundle, _ = library
    thread = maps.start_warm_up()
    assert maps.start_warm_up() is thread  # once per process
    thread.join()
    assert maps.warmed_up()
    points = maps.library_points(catalog, bundle)
    xy = maps.layout(points)
    assert xy.shape == (12, 2) and np.isfinite(xy).all()
    assert (cache_dir("umap") / f"{points.state_key}.npy").is_file()

    def refit(*_args, **_kwargs):
        raise AssertionError("the cached layout was recomputed")

    monkeypatch.setattr(maps, "compute_layout", refit)
    assert np.array_equal(maps.layout(points), xy)


def test_figure_colours_by_folder_and_date_and_rings_hits(library):
    catalog, bundle, _ = library
    points = maps.library_points(catalog, bundle)
    xy = np.random.default_rng(0).normal(size=(len(points), 2)).astype(np.float32)
    hits = points.file_ids[:3].tolist()
    figure = maps.map_figure(points, xy, "folder", hits=hits)
    names = [trace.name for trace in figure.data]
    assert names == ["photos/beach", "photos/city", "search hits (3)"]
    assert [row[0] for row in figure.data[-1].customdata] == hits
    assert sum(len(t.x) for t in figure.data[:2]) == 12
    assert figure.layout.dragmode == "lasso"
    by_date = maps.map_figure(points, xy, "date")
    assert len(by_date.data) == 1 and by_date.data[0].marker.showscale
    assert 2000 < min(by_date.data[0].marker.color) <= max(by_date.data[0].marker.color) < 2100
    # the colour bar reads as dates ("2,026.9160885" was what Plotly made of decimal years)
    bar = by_date.data[0].marker.colorbar
    assert bar.ticktext and all(re.fullmatch(r"[A-Z][a-z]{2} \d{4}|\d{4}-\d{2}-\d{2}", t) for t in bar.ticktext)
    assert list(bar.tickvals) == sorted(bar.tickvals)
    assert by_date.layout.showlegend is False and by_date.layout.title.x < 0.1  # one title, clear of the bar


def test_date_ticks_span_the_photos_as_dates():
    from datetime import datetime
    months = maps.date_ticks([datetime(2024, 1, 5), datetime(2025, 6, 20)])
    assert months[0][1] == "Jan 2024" and months[-1][1] == "Jun 2025" and len(months) == 6
    assert months[0][0] == pytest.approx(maps.decimal_year(datetime(2024, 1, 5)))
    days = maps.date_ticks([datetime(2024, 3, 1), datetime(2024, 3, 9, 12)])
    assert days[0][1] == "2024-03-01" and days[-1][1] == "2024-03-09"
    assert maps.date_ticks([datetime(2024, 3, 1)] * 3) == [(maps.decimal_year(datetime(2024, 3, 1)), "2024-03-01")]
    assert maps.date_ticks([]) == []


def test_zero_shot_and_selection_classes(library):
    catalog, bundle, _ = library
    points = maps.library_points(catalog, bundle)
    top1 = maps.zero_shot_top1(catalog, points, bundle, ["a red circle", "a blue square"], ["a photo of {}."])
    assert len(top1) == 12 and set(top1) <= {"a red circle", "a blue square"}
    first, second = points.file_ids[:2].tolist()
    mine = maps.add_class({}, " mine ", [first])
    mine = maps.add_class(mine, "yours", [second])
    mine = maps.add_class(mine, "mine", [first])  # adding the same photo twice keeps it once
    assert mine == {"mine": [first], "yours": [second]}
    labels = maps.nearest_class(points, mine)
    assert labels[:2] == ["mine", "yours"]  # a photo is nearest to a class made of itself


def test_selections_become_queries_and_csv(library, tmp_path):
    catalog, bundle, _ = library
    points = maps.library_points(catalog, bundle)
    ids = points.file_ids[:3].tolist()
    text = ",".join(map(str, ids + [ids[0], 999_999]))  # repeats and unknown ids are dropped
    assert maps.parse_selection(text, points) == ids
    assert maps.selection_terms(ids) == [search.file_term(i) for i in ids]
    out = maps.export_classes(points, {"mine": ids[:2]}, tmp_path / "classes.csv")
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["path", "label"] and [r[1] for r in rows[1:]] == ["mine", "mine"]
    assert rows[1][0] == points.paths[0]
    hits = maps.search_hits([search.file_term(ids[0])], bundle, catalog, limit=5)
    assert len(hits) == 5 and ids[0] not in hits  # more-like-this leaves the photo itself out
    assert maps.search_hits([], bundle, catalog) == []
    # a selection as a query: exactly the selected photos (the grammar used to read "@1 @2 @3" as one text)
    chosen = points.file_ids[[0, 4, 7]].tolist()
    view = maps.selection_search(catalog, bundle, chosen)
    assert sorted(r.file_id for r in view.results) == sorted(chosen) and view.total == 3


@pytest.mark.parametrize("call, message", [
    (lambda p, b: maps.zero_shot_top1(None, p, b, ["only one"], ["{}"]),
     "Colouring by zero-shot top-1 needs at least two class names, one per line."),
    (lambda p, b: maps.nearest_class(p, {}),
     "There are no classes made from selections yet: select photos on the map with the lasso or box tool, "
     "name the class and press 'Selection → class'."),
    (lambda p, b: maps.nearest_class(p, {"gone": [999_999]}),
     "None of the photos of class 'gone' is on this map any more; remove the class."),
    (lambda p, b: maps.parse_selection("", p),
     "Nothing is selected: pick the lasso or box tool above the map and draw around some photos first."),
    (lambda p, b: maps.add_class({}, "  ", [1]), "Type a name for the class made from the selection."),
    (lambda p, b: maps.export_classes(p, {}, "x.csv"), "There are no classes made from selections to export yet."),
])
def test_bad_input_is_a_sentence(library, call, message):
    catalog, bundle, _ = library
    with pytest.raises(CliplabError) as error:
        call(maps.library_points(catalog, bundle), bundle)
    assert str(error.value) == message


# -- in the browser -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def map_server(tmp_path_factory):
    """An app of its own (other browser tests switch the model of theirs)."""
    require_chromium()
    process, server = start_app(tmp_path_factory.mktemp("map_app_home"))
    yield server
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.mark.browser
@pytest.mark.slow
def test_map_in_the_browser(map_server, test_output_dir):
    run_with_chromium(lambda browser: drive_the_map(browser, map_server, test_output_dir))


def drive_the_map(browser, map_server, test_output_dir) -> None:
    from playwright.sync_api import expect
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(map_server.url)
    page.get_by_role("tab", name="Map").click()
    page.locator("#map-draw").click()
    # the first map of a process waits for UMAP's compilation
    expect(page.locator("#map-status")).to_contain_text("24 photos embedded", timeout=240_000)
    plot = page.locator("#map-plot .js-plotly-plot")
    expect(plot).to_be_visible()
    expect(plot.locator(".legendtext").first).to_contain_text("demo-photos")
    assert plot.locator(".scatterlayer .point").count() == 24

    # hovering a dot shows its thumbnail, asked for by catalog id (never by the photo's path)
    point = plot.locator(".scatterlayer .point").first
    point.hover(force=True)
    thumb = page.locator("#map-thumb")
    expect(thumb).to_be_visible()
    src = thumb.get_attribute("src")
    assert re.fullmatch(r"thumb/\d+\?size=160", src) and str(map_server.photos) not in src, src
    answer = page.request.get(map_server.url + src)
    assert answer.ok and answer.headers["content-type"] == "image/jpeg"

    # a lasso around the left half of the plot area: the leftmost dots, not all of them
    box = plot.locator(".nsewdrag").first.bounding_box()
    x0, y0, x1, y1 = box["x"] + 2, box["y"] + 2, box["x"] + box["width"] / 2, box["y"] + box["height"] - 2
    page.mouse.move(x0, y0)
    page.mouse.down()
    for x, y in ((x1, y0), (x1, y1), (x0, y1), (x0, y0 + 5)):
        page.mouse.move(x, y, steps=8)
    page.mouse.up()
    chosen = page.locator("#map-chosen")
    expect(chosen).to_contain_text(re.compile(r"\b([1-9]|1\d|2[0-3]) photos selected"))
    selected = int(re.search(r"(\d+) photos selected", chosen.inner_text()).group(1))

    # a sentence beside the buttons, not a trace, for a class without a name
    page.locator("#map-to-class").click()
    expect(page.locator("#map-selection-error")).to_contain_text("Type a name for the class made from the selection.")
    assert "Traceback" not in page.content()

    # selection -> query: exactly the selected photos (one @id term each, joined by +), no others
    page.locator("#map-to-query").click()
    query = page.locator("#map-query textarea, #map-query input").first
    expect(query).to_have_value(re.compile(r"^@\d+( \+ @\d+)*$"))
    assert len(query.input_value().split(" + ")) == selected
    expect(page.locator("#map-status")).to_contain_text(f"The {selected} selected photos")
    expect(page.locator("#map-gallery img")).to_have_count(selected)
    expect(page.locator("#map-selection-error")).to_be_hidden()
    screenshot(page, test_output_dir, "map")

    # selection -> class: the confirmation stays on its own line through the redraw that follows
    page.locator("#map-class-name input, #map-class-name textarea").first.fill("left half")
    page.locator("#map-to-class").click()
    made = page.locator("#map-classes")
    expect(made).to_contain_text(f"Class 'left half' made from {selected} photos")
    expect(page.locator("#map-status")).to_contain_text("24 photos embedded", timeout=120_000)  # redrawn
    expect(made).to_contain_text(f"Class 'left half' made from {selected} photos")

    # the Search tab's query, ringed on the map
    page.get_by_role("tab", name="Search").click()
    page.locator("#search-query textarea, #search-query input").first.fill("a red circle")
    page.get_by_role("tab", name="Map").click()
    page.locator("#map-from-search").click()
    expect(page.locator("#map-highlight textarea, #map-highlight input").first).to_have_value("a red circle")
    expect(page.locator("#map-status")).to_contain_text("6 search hits ringed")
    context.close()
