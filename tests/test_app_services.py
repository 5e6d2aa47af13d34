"""The app's service layer, tab by tab, with a tiny random model: results and the exact sentences shown
for bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from library_fixtures import tiny_bundle, write_image
from test_download import NAME, server  # noqa: F401 (a fixture: a local HTTP server)
from test_download import release as release_fixture  # noqa: F401 (a fixture: a tiny release that server serves)

from cliplab.app.services import classifiers, library, search, training
from cliplab.app.services.app_state import AppState
from cliplab.app.services.classify import MAX_APP_CLASSES, class_lines, classify_for_app, folder_images
from cliplab.app.services.first_start import first_start, needs_first_start, write_demo_photos
from cliplab.engine.errors import CliplabError
from cliplab.indexes.catalog import open_catalog

TEMPLATES = ["a photo of {}."]


@pytest.fixture
def state(cliplab_home) -> AppState:
    return AppState(bundle=tiny_bundle(), catalog=open_catalog())


@pytest.fixture
def photos(tmp_path) -> Path:
    for i in range(8):
        write_image(tmp_path / "photos" / f"p{i}.png", seed=i)
    return tmp_path / "photos"


def message(fn, *args, **kwargs) -> str:
    with pytest.raises(CliplabError) as caught:
        fn(*args, **kwargs)
    return str(caught.value)


# -- Classify -----------------------------------------------------------------------------------

def test_classify_two_label_sets(state, photos, monkeypatch):
    from cliplab.app.services import classify as service

    read = []
    real = service.load_image
    monkeypatch.setattr(service, "load_image", lambda path, **kw: read.append(path) or real(path, **kw))
    paths = sorted(photos.glob("*.png"))[:3]
    out = classify_for_app(state.bundle, paths, "cat\ndog\n\n bird", TEMPLATES, second_text="cat\ndog\nchild")
    assert read == paths  # every image read and encoded once, both label sets scoring the same embeddings
    assert out.result.classifier.classnames == ["cat", "dog", "bird"]  # blank lines and spaces dropped
    assert out.result.probs.shape == (3, 3)
    np.testing.assert_allclose(out.result.probs.sum(axis=1), 1.0, atol=1e-5)
    assert out.second.probs.shape == (3, 3)
    assert out.comparison["n_images"] == 3
    assert list(out.comparison["transitions"].index) == ["cat", "dog", "bird"]


def test_classify_threshold_mode(state, photos):
    out = classify_for_app(state.bundle, [photos / "p0.png"], "a\nb\nc", TEMPLATES, threshold=0.0)
    assert len(out.result.above_threshold[0]) == 3  # threshold 0 keeps every class
    out = classify_for_app(state.bundle, [photos / "p0.png"], "a\nb\nc", TEMPLATES, threshold=1.0)
    assert out.result.above_threshold[0] == [] or out.result.above_threshold[0][0][1] == 1.0


def test_repeated_class_names_are_reported_not_merged():
    assert message(class_lines, "a red circle\na blue square\na red circle") == (
        "'a red circle' is typed twice in the class names: keep each class once (or make the two lines differ).")
    assert message(class_lines, "a\nb\na\nb", "second label set's class names") == (
        "'a', 'b' are typed twice in the second label set's class names: keep each class once (or make the two "
        "lines differ).")


def test_no_classes():
    assert message(class_lines, " \n\n") == "Type the class names, one per line (at least two)."


def test_one_class():
    assert message(class_lines, "cat") == ("Only one class ('cat') was given: a classifier needs at least two to "
                                           "choose between; add another line.")


def test_ten_thousand_classes():
    text = "\n".join(f"class {i}" for i in range(10_000))
    assert message(class_lines, text) == (f"10,000 class names is more than the app takes at once (at most "
                                          f"{MAX_APP_CLASSES:,}); split the list into smaller label sets.")


def test_eighty_token_class_name(state, photos):
    long_name = " ".join(["cat"] * 80)
    text = f"dog\n{long_name}"
    assert message(classify_for_app, state.bundle, [photos / "p0.png"], text, TEMPLATES) == (
        "The class name 'cat cat cat cat cat cat cat cat cat cat … (319 characters)' is too long: in the prompt 'a photo of {}.' "
        "it makes 86 tokens and the model reads at most 77; shorten it.")


def test_non_image_upload(state, tmp_path):
    notes = tmp_path / "notes.png"
    notes.write_text("this is not a picture")
    text = message(classify_for_app, state.bundle, [notes], "cat\ndog", TEMPLATES)
    assert text.startswith("None of the 1 file(s) could be read as an image (notes.png: ")


def test_no_image_given(state):
    assert message(classify_for_app, state.bundle, [], "cat\ndog", TEMPLATES) == (
        "Add an image first: upload one, pick one from the library or give a folder.")


def test_folder_that_does_not_exist(state, tmp_path):
    missing = tmp_path / "nope"
    assert message(folder_images, missing) == f"{missing} is not a folder."
    assert message(library.add_folders, state.catalog, state.bundle, [str(missing)]) == (
        f"The folder {missing} does not exist (or is not a folder).")


def test_saved_classifiers_round_trip_with_provenance(state):
    classifiers.save_classifier(state.catalog, "shapes", ["circle", "square"], TEMPLATES, 0.1)
    classifiers.save_classifier(state.catalog, "shapes", ["circle", "star"], TEMPLATES, bundle=state.bundle)
    assert classifiers.list_classifiers(state.catalog) == ["shapes"]
    saved = classifiers.load_classifier(state.catalog, "shapes")  # the second save replaced the first
    assert {k: saved[k] for k in ("classes", "templates", "threshold")} == {
        "classes": ["circle", "star"], "templates": TEMPLATES, "threshold": None}
    made_with = saved["provenance"]
    assert (made_with["name"], made_with["precision"], made_with["device"], made_with["engine"]) == (
        "tiny", "fp32", "cpu", "cliplab")
    assert made_with["fingerprint"] == state.bundle.fingerprint and made_with["cliplab_version"]
    assert message(classifiers.load_classifier, state.catalog, "nope") == (
        "No saved classifier named 'nope'; save one from the Classify tab first.")
    assert message(classifiers.save_classifier, state.catalog, " ", ["a", "b"], TEMPLATES) == (
        "Give the classifier a name before saving it.")
    classifiers.delete_classifier(state.catalog, "shapes")
    assert classifiers.list_classifiers(state.catalog) == []


# -- Search and indexing --------------------------------------------------------------------------

def test_index_then_search_text_image_more_like_this(state, photos):
    assert needs_first_start(state)
    summary = library.add_folders(state.catalog, state.search_bundle, [str(photos)])
    assert summary["embedded"] == 8 and not needs_first_start(state)
    view = search.search(state.catalog, state.search_bundle, [search.text_term("a red square")], per_page=5,
                         index_cache=state.vector_indexes, histogram=True)
    assert len(view.results) == 5 and view.total == 8 and view.pages == 2
    assert len(view.histogram) == 8
    scores = [r.score for r in view.results]
    assert scores == sorted(scores, reverse=True)
    second = search.search(state.catalog, state.search_bundle, [search.text_term("a red square")], page=2,
                           per_page=5, index_cache=state.vector_indexes)
    assert {r.path for r in second.results}.isdisjoint({r.path for r in view.results})
    assert len(second.results) == 3 and second.page == 2
    # an image query finds that same image first
    target = str((photos / "p3.png").resolve())
    assert search.search(state.catalog, state.search_bundle, [search.image_term(target)]).results[0].path == target
    # more like this leaves the file itself out
    file_id = library.file_id_of(state.catalog, target)
    like = search.search(state.catalog, state.search_bundle, [search.file_term(file_id)])
    assert target not in [r.path for r in like.results] and like.total == 7
    # the folder filter
    inside = search.search(state.catalog, state.search_bundle, [search.text_term("x")],
                           filters=search.make_filters(str(photos)))
    assert inside.total == 8


def test_search_bad_input(state, photos, tmp_path):
    assert message(search.search, state.catalog, state.search_bundle, []) == (
        "Nothing to search with: type words, drop an image, or pick photos (more like these).")
    assert message(search.search, state.catalog, state.search_bundle, [search.text_term("cat")]) == (
        "No photos are indexed with the model tiny yet: add a folder of photos to the library first.")
    assert message(search.make_filters, str(tmp_path / "nope")) == (
        f"The folder filter {tmp_path / 'nope'} does not exist (or is not a folder).")
    assert message(search.make_filters, None, "last week") == (
        "The from date 'last week' is not a date: write it as YYYY-MM-DD (or YYYY-MM-DDTHH:MM).")


def test_skipped_files_listed_with_reasons(state, photos):
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    library.add_folders(state.catalog, state.search_bundle, [str(photos)])
    summary = library.library_summary(state.catalog)
    assert summary.indexed == 8 and summary.skipped_count == 1
    assert [Path(p).name for p, _ in summary.skipped] == ["broken.jpg"] and summary.skipped[0][1]
    (folder,) = summary.folders
    assert (folder.path, folder.files, folder.indexed) == (str(photos.resolve()), 9, 8)


def test_first_start_writes_and_indexes_demo_photos(state, cliplab_home):
    job = state.jobs.start("index", "first start", lambda j: first_start(state, n=6, job=j))
    state.jobs.wait(job, timeout=120)
    assert job.state == "done", job.error
    assert job.result["embedded"] == 6 and job.progress == 1.0
    assert state.jobs.latest("index") is job  # what a refreshed page finds
    names = sorted(p.name for p in (cliplab_home / "demo-photos").glob("*.jpg"))
    assert len(names) == 6 and all(n[:4].isdigit() and "-" in n for n in names)
    # a second call neither redraws nor re-embeds
    assert write_demo_photos(cliplab_home / "demo-photos", n=6) == cliplab_home / "demo-photos"
    assert library.add_folders(state.catalog, state.bundle, [str(cliplab_home / "demo-photos")])["embedded"] == 0


# -- jobs and models --------------------------------------------------------------------------------

def test_job_errors_are_sentences(state):
    def fail(job):
        raise CliplabError("The folder is gone.")

    job = state.jobs.wait(state.jobs.start("train", "training", fail))
    assert job.state == "failed" and job.error == "The folder is gone."


def test_one_job_of_a_kind_at_a_time(state):
    import threading
    release = threading.Event()
    first = state.jobs.start("train", "first run", lambda job: release.wait(10))
    assert message(state.jobs.start, "train", "second", lambda job: None) == (
        "A train job is already running (first run); wait for it to finish.")
    release.set()
    state.jobs.wait(first)


def test_switch_model_makes_it_current_and_keeps_old_model_on_failure(state, tmp_path):
    from cliplab.engine.weights import save_model
    folder = tmp_path / "other"
    save_model(tiny_bundle(seed=1).model, folder, meta={"name": "other"})
    state.switch_model(str(folder))
    assert state.model_name == "other" and state.bundle.model is not None
    before = state.bundle
    text = message(state.switch_model, str(tmp_path / "missing"))
    assert "is neither a model name" in text
    assert state.bundle is before and state.model_name == "other"


# -- model downloads (a real local HTTP server from test_download.py) ------------------------------

def test_download_job_shows_bytes_then_done(state, server, release_fixture):  # noqa: F811
    import re
    import threading
    import time

    from cliplab.app.services.models import start_download
    from cliplab.engine.paths import models_dir
    server.gate = threading.Event()  # the server sends half the file, then waits: the job is seen mid-way
    try:
        job = start_download(state.jobs, NAME, base_url=server.base)
        assert state.jobs.latest("download") is job  # what a refreshed page polls
        deadline = time.time() + 120
        while job.progress < 0.4 and not job.finished and time.time() < deadline:
            time.sleep(0.05)
        assert job.state == "running" and 0.4 <= job.progress < 1
        assert re.fullmatch(rf"downloading {NAME}: [\d.]+ / [\d.]+ MB \((4\d)%\)", job.message), job.message
    finally:
        server.gate.set()
    state.jobs.wait(job, 300)
    assert job.state == "done" and job.progress == 1.0 and job.result == models_dir() / NAME
    percents = [int(re.search(r"\((\d+)%\)$", line).group(1)) for line in job.log if line.startswith("downloading")]
    assert percents[0] == 0 and percents[-1] == 100 and percents == sorted(percents) and len(set(percents)) > 3
    assert job.log[-3].startswith(f"verifying {NAME} (SHA-256 of ")
    assert job.log[-2:] == [f"converting {NAME} to cliplab's format", "done"]


def test_download_job_failures_are_sentences(state, server, release_fixture):  # noqa: F811
    import socket

    from cliplab.app.services.models import start_download
    from cliplab.engine import weights
    _, data = release_fixture
    server.files[f"/{weights.OFFICIAL_SHA256[NAME]}/{NAME}.pt"] = data[:-10] + b"x" * 10  # altered on the way
    job = state.jobs.wait(start_download(state.jobs, NAME, base_url=server.base), 300)
    assert job.state == "failed" and job.progress == 1.0  # every byte came; the check failed
    assert job.error.startswith(f"The downloaded {NAME} is corrupt or not the expected file: its SHA-256 is ")
    assert job.error.endswith("It was deleted; download it again (if this repeats, the server or a proxy is "
                              "altering the file).")
    with socket.socket() as probe:  # a port with nobody listening: no network
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    job = state.jobs.wait(start_download(state.jobs, "ViT-B/32", base_url=f"http://127.0.0.1:{closed}"), 60)
    assert job.state == "failed" and job.error.startswith(f"Cannot reach http://127.0.0.1:{closed}/")
    assert job.error.endswith("Check the internet connection, then run the download again.")
    assert message(start_download, state.jobs, "demo") == (
        "The demo model ships with cliplab; pick one of the released models to download.")
    assert message(start_download, state.jobs, "ViT-H/14").startswith("Unknown model 'ViT-H/14'.")


# -- training runs ----------------------------------------------------------------------------------

def test_training_command_and_log_status(tmp_path):
    assert training.train_command("synthetic", None, None, "--steps 5", tmp_path)[3:] == [
        "train", "--data", "synthetic", "--out", str(tmp_path), "--model", training.SMALL_SHAPE, "--steps", "5"]
    assert training.train_command("synthetic", "demo", None, "", tmp_path)[-2:] == ["--init", "demo"]
    assert message(training.start_run, str(tmp_path / "nope")) == f"The training data {tmp_path / 'nope'} does not exist."
    (tmp_path / "log.jsonl").write_text('{"kind": "train", "step": 1, "loss": 3.0}\n{"kind": "train", "step": 2, "lo')
    status = training.run_status(tmp_path)  # a line cut short by a kill is ignored
    assert [r["loss"] for r in status["records"]] == [3.0] and not status["running"]
