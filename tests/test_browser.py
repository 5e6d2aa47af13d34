"""The Gradio app in headless Chromium: classify, index and search, what the server serves (and what
it refuses), removing a folder, a photo copied into a library folder found without a rescan, map
selection -> query, odd file names dropped into search, audit sessions, errors that stay, training
with Stop, the login beyond loopback, switching models.

One app server for the module (tests/browser_fixtures.py); the model switch runs last because it
changes the server's current model. Each test leaves a screenshot under its test-output folder.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import time
from pathlib import Path
from urllib.parse import urljoin

import numpy as np
import pytest
from browser_fixtures import app_server, browser, page, screenshot  # noqa: F401
from library_fixtures import tiny_bundle
from overlap_support import make_sets
from playwright.sync_api import expect

pytestmark = pytest.mark.browser
expect.set_options(timeout=20_000)  # a shared 2-core machine: an action may wait behind the page's polls
BLANK = re.compile(r"^\s*$")


def field(tab, elem_id: str):
    """The text entry inside a gr.Textbox (input or textarea, depending on its lines)."""
    return tab.locator(f"#{elem_id} textarea, #{elem_id} input").first


def choose(tab, elem_id: str, option: str) -> None:
    """Pick an option of a gr.Dropdown: type it into the dropdown's filter, take the match.

    The match is taken with the mousedown the list listens to, not a click: Gradio places the list
    with fixed coordinates, and below a long tab it can lie outside the viewport, where a click waits
    forever for it to scroll into view."""
    box = tab.locator(f"#{elem_id} input").first
    box.click()
    box.fill(option)
    match = tab.locator(f"#{elem_id} [role=option], ul[role=listbox] [role=option]").filter(has_text=option).first
    expect(match).to_be_attached()
    match.dispatch_event("mousedown")


def open_tab(tab, name: str) -> None:
    tab.get_by_role("tab", name=name).click()


def catalog_rows(server, folder: Path) -> dict[str, tuple[int, str]]:
    """name -> (file id, status) of the catalog rows under a folder, read from the server's database."""
    from sqlalchemy import select

    from cliplab.indexes.catalog import File, open_catalog
    catalog = open_catalog(f"sqlite:///{server.home / 'catalog.db'}")
    try:
        with catalog.session() as session:
            rows = session.execute(select(File.path, File.id, File.status)).all()
    finally:
        catalog.engine.dispose()
    root = str(folder.resolve())
    return {Path(p).name: (i, status) for p, i, status in rows if p.startswith(root + "/")}


def add_folder(tab, folder: Path, n_embedded: int) -> None:
    open_tab(tab, "Search")
    tab.locator("#index-panel").get_by_text("Library and indexing").click()
    field(tab, "index-folder").fill(str(folder))
    tab.locator("#index-add").click()
    expect(tab.locator("#index-status")).to_contain_text(f"indexing {folder.resolve()}: done — {n_embedded} embedded",
                                                          timeout=90_000)


def write_scenes(folder, n: int = 6, seed: int = 3):
    from cliplab.trainer.demo.world import World
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    world = World(seed=seed, image_size=96)
    for i, sample in enumerate(world.sample(n, "all", rng)):
        sample.image.save(folder / f"scene{i}.png")
    return folder


def test_classify_typed_classes(page, app_server, tmp_path, test_output_dir):  # noqa: F811
    # the terminal said what the first start does, and showed no traceback
    log = app_server.log.read_text()
    assert "first start: drawing 24 demo photos and indexing them" in log and "Traceback" not in log
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
    expect(page.locator("#index-status")).to_contain_text(f"indexing {folder.resolve()}: done — 6 embedded",
                                                          timeout=90_000)
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
    # the page gets generated thumbnails (the app's cache), never the library's own paths
    src = gallery.locator("img").first.get_attribute("src")
    assert src and str(folder) not in src and re.search(r"/\d+-[0-9a-f]*-384\.jpg$", src), src
    outside = page.request.get(app_server.url + "gradio_api/file=/etc/passwd")
    assert outside.status in (403, 404)


def test_duplicates_are_exact_copies_with_a_keeper_and_similar_pictures_without(page, app_server, tmp_path,  # noqa: F811
                                                                              test_output_dir):
    from PIL import Image
    folder = write_scenes(tmp_path / "twice", n=3, seed=5)
    shutil.copy(folder / "scene0.png", folder / "scene0 copy.png")  # an exact copy
    Image.open(folder / "scene1.png").convert("RGB").save(folder / "scene1 resaved.jpg", quality=70)  # alike
    add_folder(page, folder, 5)
    page.locator("#duplicates-panel").get_by_text("Duplicates").first.click()
    page.locator("#duplicates-find").click()
    summary = page.locator("#duplicates-summary")
    expect(page.locator("#duplicates-gallery img").first).to_be_visible(timeout=60_000)
    screenshot(page, test_output_dir, "duplicates")
    # the CLI's default (the copy detector's threshold) and its words: look before deleting similar pictures
    expect(summary).to_contain_text("1 group(s) of exact copies", timeout=60_000)
    expect(summary).to_contain_text("similar pictures (copy score >= ")
    expect(summary).to_contain_text("look at them before deleting")
    gallery = page.locator("#duplicates-gallery")
    expect(gallery).to_contain_text("exact copies · keep")
    expect(gallery).to_contain_text("similar pictures")
    expect(gallery).not_to_contain_text("similar pictures · keep")


def test_serves_indexed_photos_only_then_forgets_a_removed_folder(  # noqa: F811
        page, app_server, tmp_path, test_output_dir):  # noqa: F811
    folder = write_scenes(tmp_path / "private", n=3, seed=11)  # not the same pictures as another test's
    (folder / ".secret_token").write_text("hunter2\n")
    (folder / "notes.txt").write_text("my bank PIN\n")
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    add_folder(page, folder, 3)
    rows = catalog_rows(app_server, folder)
    photo_id, status = rows["scene0.png"]
    assert status == "ok" and rows["broken.jpg"][1] == "skipped"
    assert ".secret_token" not in rows and "notes.txt" not in rows  # never catalogued
    get = page.request.get
    # by path, through Gradio: nothing of the folder, not even the photos, and nothing outside it
    for name in (".secret_token", "notes.txt", "scene0.png"):
        assert get(f"{app_server.url}gradio_api/file={folder / name}").status == 403, name
        assert get(f"{app_server.url}gradio_api/file={folder}/../{folder.name}/{name}").status == 403, name
    assert get(app_server.url + "gradio_api/file=/etc/passwd").status == 403
    # by id: the indexed photo and its thumbnail, nothing else
    photo = get(f"{app_server.url}photo/{photo_id}")
    assert photo.status == 200 and photo.headers["content-type"] == "image/png"
    assert photo.body() == (folder / "scene0.png").read_bytes()
    assert get(f"{app_server.url}thumb/{photo_id}").headers["content-type"] == "image/jpeg"
    for bad in (str(rows["broken.jpg"][0]), "999999", "-1", "abc", "..%2F..%2Fetc%2Fpasswd", f"{photo_id}.0"):
        assert get(f"{app_server.url}photo/{bad}").status == 404, bad
        assert get(f"{app_server.url}thumb/{bad}").status == 404, bad
    assert get(f"{app_server.url}photo/../../etc/passwd").status == 404
    # a system folder is not added without the tick, and the refusal stays on the page
    field(page, "index-folder").fill("/etc")
    page.locator("#index-add").click()
    expect(page.locator("#index-error")).to_contain_text("is a system folder")
    screenshot(page, test_output_dir, "library")
    # removed from the library: no longer served, no longer found
    choose(page, "index-folders", str(folder.resolve()))
    page.locator("#index-remove").click()
    expect(page.locator("#index-status")).to_contain_text(f"Removed {folder.resolve()} and its 4 file(s)")
    assert catalog_rows(app_server, folder) == {}
    assert get(f"{app_server.url}photo/{photo_id}").status == 404
    assert get(f"{app_server.url}thumb/{photo_id}").status == 404
    assert (folder / "scene0.png").is_file()  # the files themselves stay


# the app keeps its library current by itself (its folder watcher, on by default)
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


def test_dropped_image_with_an_awkward_name_and_a_non_image(  # noqa: F811
        page, app_server, tmp_path, test_output_dir):  # noqa: F811
    source = next(iter(sorted(app_server.photos.glob("*.jpg"))))
    awkward = tmp_path / "IMG_1234 - Copy + more  two spaces.jpg"
    shutil.copy(source, awkward)
    open_tab(page, "Search")
    page.locator("#search-image input[type=file]").set_input_files(str(awkward))
    page.locator("#search-run").click()
    expect(page.locator("#search-info")).to_contain_text("result(s)", timeout=60_000)
    expect(page.locator("#search-info")).to_contain_text("Query: image IMG_1234 - Copy + more")  # what runs
    expect(page.locator("#search-error")).to_be_hidden()
    # the same picture is in the library: it comes first, with a cosine close to 1
    first = page.locator("#search-gallery").get_by_text(source.name).first
    expect(first).to_be_visible()
    score = float(page.locator("#search-gallery").inner_text().split("·")[0].split()[-1])
    assert score > 0.95, score
    screenshot(page, test_output_dir, "search-dropped")
    # a file that is not an image: a sentence beside the search, not Gradio's developer message
    fake = tmp_path / "holiday.jpg"
    fake.write_text("just some words")
    page.reload()
    open_tab(page, "Search")
    field(page, "search-query").fill("a red circle")
    page.locator("#search-run").click()
    expect(page.locator("#search-info")).to_contain_text("result(s)", timeout=60_000)
    page.locator("#search-image input[type=file]").set_input_files(str(fake))
    # refused when dropped: a sentence, and the box emptied (it would fail every later search)
    expect(page.locator("#search-error")).to_contain_text("holiday.jpg is not an image cliplab can read")
    expect(page.locator("#search-image img")).to_have_count(0)
    assert "preprocess" not in page.content() and "UnidentifiedImageError" not in page.content()
    field(page, "search-query").fill("a blue square")
    page.locator("#search-run").click()
    expect(page.locator("#search-info")).to_contain_text("Query: 'a blue square'. ", timeout=60_000)
    expect(page.locator("#search-error")).to_be_hidden()


def test_a_typed_image_path_must_lie_in_a_library_folder(page, app_server, tmp_path, test_output_dir):  # noqa: F811
    """docs/app.md: a path typed in Search names a photo of the library. Outside it, a JPEG, a text file and
    a missing file get the same sentence (the answer tells nothing of which files exist)."""
    photo = next(iter(sorted(app_server.photos.glob("*.jpg"))))
    secret = tmp_path / "private" / "secret.jpg"
    secret.parent.mkdir()
    shutil.copy(photo, secret)
    open_tab(page, "Search")
    sentences = set()
    for typed in (str(secret), "/etc/passwd", "/etc/no-such-photo.jpg"):
        field(page, "search-query").fill(typed)
        page.locator("#search-run").click()
        error = page.locator("#search-error")
        expect(error).to_contain_text(f"{typed} is not inside one of your library folders")
        sentences.add(error.inner_text().replace(typed, "PATH"))
        expect(page.locator("#search-info")).to_have_text(BLANK)
    assert len(sentences) == 1, sentences
    screenshot(page, test_output_dir, "search-typed-outside")
    field(page, "search-query").fill(str(photo))  # a photo of the library: the query
    page.locator("#search-run").click()
    expect(page.locator("#search-info")).to_contain_text("result(s)", timeout=60_000)
    expect(page.locator("#search-error")).to_be_hidden()
    expect(page.locator("#search-gallery").get_by_text(photo.name).first).to_be_visible()


def test_search_pages_stop_at_the_last(page, app_server, test_output_dir):  # noqa: F811
    open_tab(page, "Search")
    field(page, "search-query").fill("a red circle")
    field(page, "search-query").press("Enter")
    info = page.locator("#search-info")
    expect(info).to_contain_text("page 1 of", timeout=60_000)
    pages = int(re.search(r"page 1 of (\d+)", info.inner_text()).group(1))
    for number in range(2, pages + 1):  # each click waits for its page (a fixed sleep raced a loaded machine)
        page.locator("#search-next").click()
        expect(info).to_contain_text(f"page {number} of {pages}", timeout=60_000)
    expect(info).to_contain_text(f"page {pages} of {pages}")
    expect(page.locator("#search-next")).to_be_disabled()
    # one image -> text panel (two overlapping ones made the tab about 4,000 px tall)
    height = page.evaluate("document.documentElement.scrollHeight")
    assert height < 3000, height
    # more like this with nothing selected: a sentence, and the results to pick from stay
    tiles = page.locator("#search-gallery img").count()
    page.locator("#search-more").click()
    expect(page.locator("#search-error")).to_contain_text("Select a photo in the results first")
    expect(page.locator("#search-gallery img")).to_have_count(tiles)
    expect(info).to_contain_text(f"page {pages} of {pages}")
    # more like a clicked photo: its neighbours, itself left out, and the info line names it
    page.locator("#search-gallery button img, #search-gallery img").first.click()
    page.locator("#search-more").click()
    expect(info).to_contain_text("page 1 of", timeout=60_000)
    expect(info).to_contain_text("Query: photo @")
    expect(page.locator("#search-error")).to_be_hidden()
    field(page, "search-query").fill("a red circle - ")
    field(page, "search-query").press("Enter")
    expect(page.locator("#search-error")).to_contain_text("ends with an operator")
    expect(page.locator("#search-gallery img")).to_have_count(0)  # no stale result under the error


def test_error_stays_on_the_page_and_clears_the_stale_result(page, app_server, test_output_dir):  # noqa: F811
    image = next(iter(sorted(app_server.photos.glob("*.jpg"))))
    page.locator("#classify-upload input[type=file]").set_input_files(str(image))
    page.locator("#classify-run").click()
    summary = page.locator("#classify-summary")
    expect(summary).to_contain_text("1 image(s) classified", timeout=90_000)
    field(page, "classify-classes").fill("a red circle\na blue square\na red circle")
    page.locator("#classify-run").click()
    error = page.locator("#classify-error")
    expect(error).to_contain_text("a red circle")
    expect(summary).to_have_text(BLANK)
    expect(page.locator("#classify-gallery img")).to_have_count(0)
    time.sleep(15)
    expect(error).to_be_visible()
    expect(error).to_contain_text("a red circle")
    screenshot(page, test_output_dir, "error-stays")
    # the next good run clears it
    field(page, "classify-classes").fill("a red circle\na blue square")
    page.locator("#classify-run").click()
    expect(summary).to_contain_text("classified into 2 classes", timeout=90_000)
    expect(error).to_be_hidden()


def test_classify_preset_fills_the_templates_and_edits_count(page, app_server, test_output_dir):  # noqa: F811
    images = sorted(app_server.photos.glob("*.jpg"))[:3]
    page.locator("#classify-upload input[type=file]").set_input_files([str(p) for p in images])
    choose(page, "classify-preset", "imagenet7")
    templates = field(page, "classify-templates")
    expect(templates).to_have_value(re.compile(r"itap of a \{\}\."))
    templates.fill("a drawing of {}.")
    page.locator("#classify-run").click()
    expect(page.locator("#classify-summary")).to_contain_text("3 image(s) classified", timeout=90_000)
    expect(page.locator("#classify-gallery img")).to_have_count(3)
    # whole pictures (letterboxed), not a crop that cuts the object away; the images-per-class summary
    fit = page.locator("#classify-gallery img").first.evaluate("e => getComputedStyle(e).objectFit")
    assert fit == "contain", fit
    expect(page.locator("#classify-counts")).to_contain_text("class (top-1)")
    # a chart per image: pick the third
    choose(page, "classify-which", f"3. {images[2].name}")
    expect(page.locator("#classify-label")).to_contain_text("%")
    screenshot(page, test_output_dir, "classify-three")


def test_run_a_small_audit(page, app_server, tmp_path, test_output_dir):  # noqa: F811
    from test_audit_measures import make_fairface
    make_fairface(tmp_path / "fairface", n_per_cell=2)
    open_tab(page, "Audit")
    expect(field(page, "audit-dataset")).to_have_value(re.compile(r"audit\.csv$"))  # the demo audit, preloaded
    field(page, "audit-dataset").fill(str(tmp_path / "fairface"))
    field(page, "audit-columns").fill("")
    choose(page, "audit-labelset", "paper")
    expect(page.locator("#audit-editor")).to_contain_text("non-human")
    page.locator("#audit-run").click()
    expect(page.locator("#audit-progress")).to_contain_text("saved", timeout=120_000)
    shares = page.locator("#audit-shares")
    expect(shares).to_contain_text("non-human")
    expect(shares).to_contain_text("crime")
    expect(page.locator("#audit-headline")).not_to_be_empty()
    screenshot(page, test_output_dir, "audit")


def test_a_fresh_install_runs_the_demo_audit_in_one_click(page, app_server, test_output_dir):  # noqa: F811
    open_tab(page, "Audit")
    expect(field(page, "audit-dataset")).to_have_value(re.compile(r"demo-audit/audit\.csv$"))
    expect(field(page, "audit-columns")).to_have_value("shape, colour")
    expect(page.locator("#audit-editor")).to_contain_text("add_experiment")
    page.locator("#audit-run").click()
    expect(page.locator("#audit-progress")).to_contain_text("saved", timeout=180_000)
    expect(page.locator("#audit-shares")).to_contain_text("text")
    expect(page.locator("#audit-headline")).to_contain_text("text share is highest for")
    expect(page.locator("#audit-gaps")).to_contain_text("share: text")
    expect(page.locator("#audit-search-bias")).to_contain_text("a photo of a shape.")
    screenshot(page, test_output_dir, "audit-demo")


def test_captions_panel_image_to_text_and_browse(page, app_server, tmp_path, test_output_dir):  # noqa: F811
    from test_captions import write_captioned
    data = write_captioned(tmp_path / "captioned")
    open_tab(page, "Search")
    page.locator("#captions-panel").get_by_text("Image → text and captioned datasets").click()
    # a file named in the page is read only inside a library folder
    field(page, "captions-collection").fill(str(data["csv"]))
    page.locator("#captions-image input[type=file]").set_input_files(str(data["images"][0]))
    expect(page.locator("#captions-image img").first).to_be_visible(timeout=60_000)  # the upload has landed
    page.locator("#captions-find-texts").click()
    expect(page.locator("#captions-error")).to_contain_text("is not inside one of your library folders",
                                                            timeout=60_000)
    field(page, "captions-collection").fill("/etc/passwd")
    page.locator("#captions-find-texts").click()
    expect(page.locator("#captions-error")).to_contain_text("/etc/passwd is not inside one of your library folders")
    expect(page.locator("#captions-texts")).not_to_contain_text("root")
    # the dataset's folder in the library: its CSV can be named, its images are shown
    add_folder(page, data["root"], 6)
    field(page, "captions-collection").fill(str(data["csv"]))
    field(page, "captions-text").fill(data["texts"][0])
    page.locator("#captions-find-images").click()
    expect(page.locator("#captions-images")).to_contain_text("true pair", timeout=60_000)
    expect(page.locator("#captions-error")).to_be_hidden()
    page.locator("#captions-open").click()
    expect(page.locator("#captions-summary")).to_contain_text("Image 0 of 6", timeout=60_000)
    expect(page.locator("#captions-browse-texts")).to_contain_text("✓")
    screenshot(page, test_output_dir, "captions")
    field(page, "captions-collection").fill(str(data["root"] / "missing.csv"))
    page.locator("#captions-find-texts").click()
    expect(page.locator("#captions-error")).to_contain_text("missing.csv does not exist")
    # an uploaded collection is read: a .txt with one text a line
    texts = tmp_path / "my-tags.txt"
    texts.write_text("\n".join(f"a {colour} shape" for colour in data["colours"]) + "\n")
    page.locator("#captions-upload input[type=file]").set_input_files(str(texts))
    page.locator("#captions-find-texts").click()
    expect(page.locator("#captions-texts")).to_contain_text(data["colours"][0], timeout=60_000)
    expect(page.locator("#captions-error")).to_be_hidden()
    assert "✓" not in page.locator("#captions-texts").inner_text()  # a plain list has no true pairs
    assert "Traceback" not in page.content()


def audit_session_by_cli(server, dataset: Path, labels: str) -> str:
    """A saved audit session made by `cliplab audit run` against the server's data directory."""
    import json
    import os
    import subprocess
    import sys

    from browser_fixtures import ROOT, python_path
    out = server.home / f"audit-{labels}.json"
    env = {**os.environ, "CLIPLAB_HOME": str(server.home), "PYTHONPATH": python_path()}
    subprocess.run([sys.executable, "-m", "cliplab.app.cli", "audit", "--dataset", str(dataset), "--model", server.model,
                    "--labels", labels, "--probe-folds", "0", "--bootstrap", "50",
                    "--out", str(out)], cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    return json.loads(out.read_text())["session_id"]


def test_older_audit_session_is_shown_and_exported(page, app_server, tmp_path, test_output_dir):  # noqa: F811
    from test_audit_measures import make_fairface
    make_fairface(tmp_path / "fairface", n_per_cell=2)
    older = audit_session_by_cli(app_server, tmp_path / "fairface", "paper")
    newer = audit_session_by_cli(app_server, tmp_path / "fairface", "paper_child")
    open_tab(page, "Audit")
    page.get_by_text("Saved sessions, diff, export").click()
    session = page.locator("#audit-session")
    expect(session.locator("input")).to_have_value(re.compile(".+"), timeout=30_000)
    time.sleep(3)  # the first poll after load has run
    choose(page, "audit-session", older)
    time.sleep(6)  # three polls: none may put the newest session back
    expect(session.locator("input")).to_have_value(older)
    page.locator("#audit-show").click()
    expect(page.locator("#audit-shown")).to_contain_text(older, timeout=30_000)
    expect(page.locator("#audit-headline")).to_contain_text("demo model" if app_server.model == "demo" else "%")
    page.locator("#audit-export").click()
    exported = page.locator("#audit-exported")
    expect(exported).to_contain_text(f"audit-{older}", timeout=30_000)  # the page shows name and .html apart
    report = page.request.get(urljoin(app_server.url, exported.locator("a").first.get_attribute("href")))
    assert report.ok and "<h2>Summary</h2>" in report.text()
    assert newer != older
    # the diff table reads in words
    choose(page, "audit-compare", newer)
    page.locator("#audit-diff").click()
    table = page.locator("#audit-diff-table")
    expect(table).to_contain_text("left the focus categories", timeout=60_000)
    assert "left_focus" not in table.inner_text() and "mcnemar-" not in table.inner_text()
    screenshot(page, test_output_dir, "audit-sessions")


def test_training_is_stopped_from_the_tab(page, app_server, test_output_dir):  # noqa: F811
    open_tab(page, "Models")
    page.get_by_text("Train or fine-tune").click()
    field(page, "train-extra").fill("--steps 100000 --batch-size 8")
    start, stop = page.locator("#train-start"), page.locator("#train-stop")
    start.click()
    status = page.locator("#train-status")
    expect(status).to_contain_text("running", timeout=60_000)
    expect(start).to_be_disabled()  # a second run cannot be started while this one goes on
    expect(stop).to_be_enabled()
    stop.click()
    expect(status).to_contain_text("stopped", timeout=60_000)
    expect(start).to_be_enabled()
    screenshot(page, test_output_dir, "training-stopped")


def test_listen_asks_for_a_login(browser, tmp_path_factory, test_output_dir):  # noqa: F811
    from browser_fixtures import start_app, stop_app
    home = tmp_path_factory.mktemp("listen_home")
    process, server = start_app(home, ["--listen", "127.0.0.2"], demo_photos=6, host="127.0.0.2")
    try:
        deadline = time.time() + 30  # printed just after the server answers
        while "password '" not in server.log.read_text() and time.time() < deadline:
            time.sleep(0.2)
        log = server.log.read_text()
        password = re.search(r"password '([^']+)'", log).group(1)
        assert "Anyone who can reach it and logs in can use every tab" in log
        context = browser.new_context()
        tab = context.new_page()
        tab.goto(server.url)
        expect(tab.get_by_text("Login").first).to_be_visible(timeout=60_000)
        assert tab.request.get(server.url + "photo/1").status == 401
        assert tab.request.get(server.url + "config").status == 401
        tab.get_by_label("username").fill("cliplab")
        tab.get_by_label("password").fill("wrong password")
        tab.get_by_role("button", name="Login").click()
        expect(tab.get_by_text("Incorrect Credentials")).to_be_visible()
        tab.get_by_label("username").fill("cliplab")
        tab.get_by_label("password").fill(password)
        tab.get_by_role("button", name="Login").click()
        expect(tab.locator("#banner")).to_be_visible(timeout=60_000)
        assert tab.request.get(server.url + "photo/1").status == 200  # the login cookie opens the photos
        screenshot(tab, test_output_dir, "login")
        context.close()
    finally:
        stop_app(process)


def test_evaluate_tab_runs_a_zero_shot_evaluation_and_saves_it(page, app_server, tmp_path,  # noqa: F811
                                                                 test_output_dir):
    from PIL import Image
    shapes = tmp_path / "eval-shapes"
    for label, colour in (("red", "#d22"), ("blue", "#22d")):
        for i in range(3):
            (shapes / label).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (64, 64), colour).save(shapes / label / f"{label}{i}.png")
    add_folder(page, shapes, 6)  # a dataset the app reads lies in a library folder
    open_tab(page, "Evaluate")
    field(page, "eval-dataset").fill(str(shapes))
    page.locator("#eval-run").click()
    progress = page.locator("#eval-progress")
    expect(progress).to_contain_text("Saved as evaluation run", timeout=120_000)
    expect(page.locator("#eval-headline")).to_contain_text("top-1")
    expect(page.locator("#eval-detail")).to_contain_text("blue")
    expect(page.locator("#eval-plot .js-plotly-plot")).to_have_count(1)
    screenshot(page, test_output_dir, "evaluate")
    # outside the library: a sentence, nothing read
    field(page, "eval-dataset").fill(str(tmp_path))
    page.locator("#eval-run").click()
    expect(page.locator("#eval-error")).to_contain_text("not inside one of your library folders", timeout=60_000)


def test_settings_tab_shows_the_data_folder_and_saves(page, app_server, test_output_dir):  # noqa: F811
    open_tab(page, "Settings")
    expect(page.locator("#settings-where")).to_contain_text(str(app_server.home))
    limit = page.locator("#settings-pixels input")
    expect(limit).to_have_value(re.compile(r"^89\.5"))
    limit.fill("120")
    field(page, "settings-password").fill("short")
    page.locator("#settings-save").click()
    expect(page.locator("#settings-error")).to_contain_text("at least 8 characters")
    field(page, "settings-password").fill("")
    page.locator("#settings-save").click()
    expect(page.locator("#settings-saved")).to_contain_text("photos up to 120.0 megapixels")
    expect(page.locator("#settings-error")).to_be_hidden()
    import json
    stored = json.loads((app_server.home / "settings.json").read_text())
    assert stored["max_pixels"] == 120_000_000 and stored["app_password"] is None
    screenshot(page, test_output_dir, "settings")
    limit.fill("89.5")  # leave the shared server as it was
    page.locator("#settings-save").click()
    expect(page.locator("#settings-saved")).to_contain_text("89.5 megapixels")


def test_dns_rebinding_gets_no_answer(browser, app_server, test_output_dir):  # noqa: F811
    """A page under another name whose DNS now points at 127.0.0.1 (what DNS rebinding does; Chromium's
    host-resolver rule plays the DNS server) gets a sentence, on the page and on the API; the same app
    under localhost and 127.0.0.1 works."""
    from browser_fixtures import CHROMIUM, CHROMIUM_ARGS
    port = app_server.url.rstrip("/").rsplit(":", 1)[1]
    rebound = browser.browser_type.launch(executable_path=CHROMIUM, headless=True, args=[
        *CHROMIUM_ARGS, "--host-resolver-rules=MAP evil.example.com 127.0.0.1"])
    try:
        tab = rebound.new_page()
        answer = tab.goto(f"http://evil.example.com:{port}/")
        assert answer.status == 421
        expect(tab.get_by_text("answers only on this computer")).to_be_visible()
        for route in ("config", "gradio_api/info", "photo/1", "thumb/1"):  # what the rebinding page's script asks
            status = tab.evaluate("async (url) => (await fetch(url)).status", f"/{route}")
            assert status == 421, (route, status)
        screenshot(tab, test_output_dir, "rebinding-refused")
        for name in ("localhost", "127.0.0.1"):
            tab.goto(f"http://{name}:{port}/")
            expect(tab.locator("#banner")).to_be_visible(timeout=60_000)
            assert tab.request.get(f"http://{name}:{port}/photo/1").status == 200
    finally:
        rebound.close()


def test_a_video_result_plays_its_moment_and_seeks(page, app_server, tmp_path, test_output_dir):  # noqa: F811
    from videos import scene_images, write_video
    red, blue, green = scene_images([("red", "circle"), ("blue", "square"), ("green", "star")])
    folder = tmp_path / "films"
    write_video(folder / "walk.webm", [(red, 2.0), (blue, 2.0), (green, 2.0)], codec="libvpx-vp9", size=(160, 120))
    add_folder(page, folder, 1)
    field(page, "search-query").fill("a blue square")
    page.get_by_text("Filters").click()
    field(page, "search-folder").fill(str(folder))
    page.locator("#search-run").click()
    gallery = page.locator("#search-gallery")
    expect(gallery).to_contain_text("walk.webm", timeout=60_000)
    expect(gallery).to_contain_text("00:00:02-00:00:04")  # the tile names the blue scene's range
    gallery.locator("img").first.click()
    video = page.locator("#moment-video")
    expect(video).to_be_visible(timeout=30_000)
    page.wait_for_function("document.querySelector('#moment-video').readyState >= 1", timeout=30_000)
    start = float(video.get_attribute("data-start"))
    assert 1.5 <= start <= 2.25
    assert abs(video.evaluate("v => v.currentTime") - start) < 0.3  # opened at the range's start (#t=)
    seeked = video.evaluate("""v => new Promise(done => {
        v.addEventListener('seeked', () => done(v.currentTime), {once: true}); v.currentTime = 5.0; })""")
    assert abs(seeked - 5.0) < 0.3 and video.evaluate("v => v.seekable.length && v.seekable.end(0)") >= 5.0
    src = urljoin(page.url, video.get_attribute("src").split("#")[0])
    part = page.request.get(src, headers={"Range": "bytes=0-99"})
    assert part.status == 206 and part.headers["accept-ranges"] == "bytes" and len(part.body()) == 100
    screenshot(page, test_output_dir, "video-moment")
    page.locator("#search-cut").click()
    expect(page.locator("#search-clip")).to_contain_text("walk_00-00-0", timeout=60_000)


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


# -- the text tower choice: a multilingual tower made for the app's model searches in German; one made for
# another image tower is refused with a sentence beside the choice, and no stale result stays under it.

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
    from text_tower_fixtures import mclip_folder

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


def test_switch_models(page, app_server, tmp_path, test_output_dir):  # noqa: F811
    from cliplab.engine.weights import save_model
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
    expect(page.locator("#models-current")).not_to_contain_text("processing")  # gradio's badge, while it updates
    after = page.locator("#models-current").inner_text()
    assert after != before and "fingerprint" in after
    # how it runs here: the exact mode for reproducible results, and what indexing and search use
    expect(page.locator("#models-running")).to_contain_text("fp32 (exact, PyTorch)")
    expect(page.locator("#models-running")).to_contain_text("Indexing and search:")
    screenshot(page, test_output_dir, "models")
    # an image given as a checkpoint: a sentence that says so, beside the button
    picture = next(iter(sorted(app_server.photos.glob("*.jpg"))))
    field(page, "models-checkpoint").fill(str(picture))
    page.locator("#models-load").click()
    expect(page.locator("#models-load-error")).to_contain_text("is an image, not a model checkpoint")
    # a checkpoint that does not exist: a sentence, and the model stays
    field(page, "models-checkpoint").fill(str(tmp_path / "missing"))
    page.locator("#models-load").click()
    expect(page.get_by_text("is neither a model name").first).to_be_visible()
    assert after in page.locator("#models-current").inner_text()  # gradio may prefix its "Error" badge


def test_a_photo_over_the_pixel_limit_is_named_and_a_large_jpeg_is_taken(page, app_server, tmp_path,  # noqa: F811
                                                                         test_output_dir):
    """Issue 27, item 13: a 108 MP JPEG (a GFX100's size) is decoded at reduced scale and searched with; a PNG
    over the limit is refused with a sentence that names the photo by its own name (not Gradio's cache path)
    and says where to raise the limit (not a Python constant)."""
    from PIL import Image
    big_png = tmp_path / "panorama.png"
    Image.new("RGB", (10_000, 9_000), (40, 90, 200)).save(big_png)  # 90 MP, over the 89.5 MP default
    big_jpeg = tmp_path / "DSCF0001.JPG"
    Image.new("RGB", (12_000, 9_000), (200, 40, 40)).save(big_jpeg, quality=80)
    open_tab(page, "Search")
    page.locator("#search-image input[type=file]").set_input_files(str(big_png))
    page.locator("#search-run").click()
    error = page.locator("#search-error")
    expect(error).to_contain_text("panorama.png is 10000x9000 pixels", timeout=60_000)
    expect(error).to_contain_text("Settings")
    assert "/gradio/" not in error.inner_text() and "MAX_IMAGE_PIXELS" not in error.inner_text()
    screenshot(page, test_output_dir, "search-too-large")
    page.reload()
    open_tab(page, "Search")
    page.locator("#search-image input[type=file]").set_input_files(str(big_jpeg))
    page.locator("#search-run").click()
    expect(page.locator("#search-info")).to_contain_text("result(s)", timeout=120_000)
    expect(page.locator("#search-error")).to_be_hidden()
