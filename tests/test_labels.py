"""A saved classifier on a labelled synthetic library from the demo world (the demo model, shapes drawn by the
world): applied labels equal a direct computation and stay current as photos come and go; thresholds; review,
confirm and correct with a person's name; the improved head; search filters and sorts by label; the export
carries the labels; the bad inputs of issue 28 item 7 each get a sentence and lose nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from cli_support import run_cli
from library_fixtures import tiny_bundle
from PIL import Image

from cliplab.app.services import classifiers, labels, library, search
from cliplab.app.services.classify import classify_images, classify_with_file
from cliplab.engine.errors import CliplabError
from cliplab.engine.handle import ModelBundle
from cliplab.indexes.catalog import open_catalog
from cliplab.trainer.demo.world import World

SHAPES = ["circle", "square", "triangle", "star"]
TEMPLATES = ["a picture of a {}."]
PER_CLASS = 8


@pytest.fixture(scope="module")
def demo() -> ModelBundle:
    return ModelBundle.load(precision="fp32")


@pytest.fixture(scope="module")
def shapes_folder(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """PER_CLASS drawings of each of four shapes; returns the folder and each file's true shape."""
    world = World()
    task = world.zero_shot_tasks()["shape"]
    images, targets = world.labelled("shape", len(task.values) * PER_CLASS)
    folder = tmp_path_factory.mktemp("shapes")
    truth = {}
    for n, (image, target) in enumerate(zip(images, targets)):
        name = task.values[int(target)]
        if name in SHAPES:
            path = folder / f"{name}-{n:03d}.png"
            image.save(path)
            truth[str(path.resolve())] = name
    return folder, truth


@pytest.fixture
def library_setup(demo, shapes_folder, tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(shapes_folder[0], folder)
    catalog = open_catalog()
    library.add_folders(catalog, demo, [folder])
    classifiers.save_classifier(catalog, "shapes", SHAPES, TEMPLATES, threshold=None, bundle=demo)
    truth = {str((folder / Path(p).name).resolve()): c for p, c in shapes_folder[1].items()}
    return catalog, folder, truth


def message(fn, *args, **kwargs) -> str:
    with pytest.raises(CliplabError) as caught:
        fn(*args, **kwargs)
    return str(caught.value)


def test_applied_labels_equal_a_direct_computation_and_stay_current(demo, library_setup):
    catalog, folder, truth = library_setup
    applied = labels.apply(catalog, demo, "shapes")
    assert applied.recomputed and applied.total == len(truth) == applied.labelled
    rows, total = labels.labelled_photos(catalog, demo, "shapes", sort="path", limit=1000)
    assert total == len(truth)
    direct = classify_images(demo, sorted(truth), SHAPES, TEMPLATES, k=3)  # decodes and embeds the files
    stored = {r.path: r.top for r in rows}
    for path, top in zip(direct.paths, direct.top):
        assert [label for label, _ in stored[str(path)]] == [label for label, _ in top]
        np.testing.assert_allclose([p for _, p in stored[str(path)]], [p for _, p in top], atol=2e-4)
    assert labels.apply(catalog, demo, "shapes").labelled == 0  # nothing changed: nothing recomputed

    gone = sorted(folder.iterdir())[0]
    gone.unlink()
    shutil.copy(sorted(folder.iterdir())[0], folder / "copy-of-first.png")
    result = library.add_folders(catalog, demo, [folder])
    assert any("labelled 1 new or changed photos" in note for note in result["notes"]), result["notes"]
    rows, total = labels.labelled_photos(catalog, demo, "shapes", sort="path", limit=1000)
    assert total == len(truth) and str(gone.resolve()) not in {r.path for r in rows}

    classifiers.save_classifier(catalog, "shapes", SHAPES, TEMPLATES + ["a {}."], bundle=demo)
    again = labels.apply(catalog, demo, "shapes")  # the classifier changed: every label again
    assert again.recomputed and again.labelled == total


def test_search_and_library_view_filter_and_sort_by_label(demo, library_setup, tmp_path):
    catalog, _folder, truth = library_setup
    labels.apply(catalog, demo, "shapes")
    filters = search.make_filters(classifier="shapes", label="star", min_probability=0.3, catalog=catalog)
    view = search.search(catalog, demo, [search.text_term("a picture of a shape.")], filters=filters,
                         sort="probability", per_page=100)
    found, _ = labels.labelled_photos(catalog, demo, "shapes", label="star", min_probability=0.3)
    assert {r.path for r in view.results} == {r.path for r in found} and view.total == len(found) > 0
    probs = [r.probability for r in view.results]
    assert probs == sorted(probs, reverse=True) and all(r.label == "star" and r.probability >= 0.3 for r in view.results)
    assert "not a class" in message(search.make_filters, classifier="shapes", label="moon", catalog=catalog)

    library.export_embeddings(str(tmp_path / "out.npz"), demo, catalog)
    data = np.load(tmp_path / "out.npz")
    by_path = dict(zip(data["path"], data["label:shapes"]))
    assert {by_path[r.path] for r in found} == {"star"} and len(by_path) == len(truth)


def test_threshold_suggestion_and_counts(demo, library_setup):
    catalog, _folder, truth = library_setup
    result = labels.thresholds(catalog, demo, "shapes")
    assert 1 / len(SHAPES) <= result.suggested <= 0.95 and result.photos == len(truth)
    counts = dict(result.counts)
    assert counts[0.0] == 0 and list(counts.values()) == sorted(counts.values())
    top1 = np.array([r.top[0][1] for r in labels.labelled_photos(catalog, demo, "shapes", limit=1000)[0]])
    assert counts[result.suggested] == int((top1 < result.suggested).sum())
    classifiers.save_classifier(catalog, "shapes", SHAPES, TEMPLATES, threshold=0.9, bundle=demo)
    shown, total = labels.labelled_photos(catalog, demo, "shapes")  # the threshold: "none of these" left out
    assert total == int((top1 >= 0.9).sum())


def test_review_correct_improve_and_bad_inputs(demo, library_setup):
    catalog, folder, truth = library_setup
    review = labels.review(catalog, demo, "shapes", per_grid=6)
    margins = [i.probability - (i.second_probability or 0) for i in review.unsure]
    assert margins == sorted(margins) and len(review.unsure) == 6
    most, least = review.by_class["circle"]
    assert [i.probability for i in most] == sorted((i.probability for i in most), reverse=True)
    assert all(i.label == "circle" for i in most + least)

    # a person labels every photo with its true shape: confirmations and corrections
    ids = {r.path: r.file_id for r in labels.labelled_photos(catalog, demo, "shapes", limit=1000)[0]}
    actions = [labels.label_photo(catalog, demo, "shapes", ids[path], shape, "Ada").action
               for path, shape in sorted(truth.items())]
    assert {"confirmed", "corrected"} >= set(actions) and "corrected" in actions
    stored = labels.examples(catalog, demo, "shapes")
    assert len(stored) == len(truth) and {e.person for e in stored} == {"Ada"}

    before = labels.library_classifier(catalog, demo, "shapes").weights
    result = labels.improve_classifier(catalog, demo, "shapes")
    assert result.head.correct >= result.zeroshot.correct  # never worse on the held-out examples
    after = labels.library_classifier(catalog, demo, "shapes").weights
    assert not result.fallback and "Improved from" in result.message, result.message  # the corrections taught it
    assert not np.array_equal(before, after) and result.alpha > 0
    assert labels.apply(catalog, demo, "shapes").recomputed  # a new head is a new classifier: every label again

    # examples that teach the wrong thing: each class's examples to learn from are drawings of the next shape,
    # the held-out ones (every 4th from the second) its own; the head is worse there, so zero-shot is kept
    classifiers.save_classifier(catalog, "misled", SHAPES, TEMPLATES, bundle=demo)
    by_shape = {shape: sorted(p for p, s in truth.items() if s == shape) for shape in SHAPES}
    for n, shape in enumerate(SHAPES):
        own, wrong = by_shape[shape][:2], by_shape[SHAPES[(n + 1) % 4]][2:8]
        for path in [wrong[0], own[0], wrong[1], wrong[2], wrong[3], own[1], wrong[4], wrong[5]]:
            labels.label_photo(catalog, demo, "misled", ids[path], shape, "Bob")
    bad = labels.improve_classifier(catalog, demo, "misled")
    assert bad.fallback and "did not improve on zero-shot" in bad.message and bad.head.correct < bad.zeroshot.correct
    assert np.array_equal(labels.library_classifier(catalog, demo, "misled").weights, before)

    # a label on a photo deleted since it was shown: a sentence, the examples kept
    victim = sorted(truth)[0]
    Path(victim).unlink()
    library.add_folders(catalog, demo, [folder])
    assert "no longer in the library" in message(labels.label_photo, catalog, demo, "shapes", ids[victim], "star",
                                                 "Ada")
    kept = labels.examples(catalog, demo, "shapes")
    assert len(kept) == len(truth) and [e.file_id for e in kept if e.path == victim] == [None]
    assert "not a class" in message(labels.label_photo, catalog, demo, "shapes", ids[sorted(truth)[1]], "moon", "Ada")
    assert "who is labelling" in message(labels.label_photo, catalog, demo, "shapes", ids[sorted(truth)[1]], "star", "")

    # a single class, duplicates, 2,000 classes: refused before anything is computed
    for classes, words in ((["circle"], "one class"), (["circle", "circle", "star"], "appears twice"),
                           ([f"c{i}" for i in range(2000)], "2,000 classes")):
        classifiers.save_classifier(catalog, "odd", classes, TEMPLATES, bundle=demo)
        assert words in message(labels.apply, catalog, demo, "odd")
    classifiers.save_classifier(catalog, "partly", SHAPES + ["heart"], TEMPLATES, bundle=demo)
    for path, shape in sorted(truth.items())[1:]:
        labels.label_photo(catalog, demo, "partly", ids[path], shape, "Ada")
    assert "heart" in labels.improve_classifier(catalog, demo, "partly").message  # a class with no examples
    assert len(labels.examples(catalog, demo, "shapes")) == len(truth)  # nothing lost on the way


SNIPPET = re.compile(r"```python\n(.*?)```", re.S)


def test_export_reproduces_the_library_labels_in_a_fresh_process_and_refuses_other_models(demo, library_setup,
                                                                                          tmp_path, capsys):
    catalog, folder, truth = library_setup
    classifiers.set_threshold(catalog, "shapes", 0.5)
    labels.apply(catalog, demo, "shapes")
    file, onnx = tmp_path / "shapes.json", tmp_path / "shapes.onnx"
    labels.export_classifier(catalog, demo, "shapes", file, onnx)
    library.export_embeddings(str(tmp_path / "lib.npz"), demo, catalog)
    assert file.stat().st_size < 20_000
    # a fresh process, cliplab's loader and nothing of the app: the stored probabilities, to the bit
    code = ("import json, sys, numpy as np; from cliplab.engine.classifier_file import read; "
            f"c = read({str(file)!r}); e = np.load({str(tmp_path / 'lib.npz')!r}); t = c.labels(e['embeddings']); "
            "print(json.dumps([[c.classes[i] for i in t.indices[:, 0]], t.probs[:, 0].tolist(), e['path'].tolist()]))")
    names, probs, paths = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                    check=True).stdout)
    stored = {r.path: r.top[0] for r in labels.labelled_photos(catalog, demo, "shapes", min_probability=0.0,
                                                               limit=1000)[0]}
    assert {p: (n, pr) for p, n, pr in zip(paths, names, probs)} == stored
    # the documented ten lines of numpy, run as written
    snippet = SNIPPET.search((Path(__file__).parents[1] / "docs" / "classifiers.md").read_text()).group(1)
    scope = {}
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        shutil.copy(file, tmp_path / "pets.json")
        exec(snippet, scope)  # noqa: S102 (the documentation's own code)
    finally:
        os.chdir(cwd)
    expected = [stored[p][0] if stored[p][1] >= 0.5 else None for p in paths]
    assert scope["labels"] == expected
    np.testing.assert_allclose(scope["probs"].max(1), probs, atol=1e-6)

    # the CLI with the file, and the ONNX graph on the same pixels
    code, out, _ = run_cli(capsys, "classify", sorted(truth)[0], "--classifier", str(file), modules=["classify"])
    assert code == 0 and "labels with probability >= 50%" in out
    one = sorted(truth)[0]
    with_file = classify_with_file(demo, [one], file)
    pixels = demo.preprocess(Image.open(one))[None].numpy()
    session = onnxruntime.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["probabilities"], {"pixels": pixels})[0], with_file.probs, atol=1e-4)

    # refused: a file for another model, a newer format; nothing in the catalog touched
    other = tiny_bundle()
    assert "made for the model demo" in message(classify_with_file, other, [one], file)
    assert f"not for tiny ({other.fingerprint[:12]})" in message(classify_with_file, other, [one], file)
    newer = json.loads(file.read_text())
    newer["version"] = 99
    (tmp_path / "newer.json").write_text(json.dumps(newer))
    assert "format version 99, newer than this cliplab reads (version 1)" in message(
        classify_with_file, demo, [one], tmp_path / "newer.json")
    assert labels.apply(catalog, demo, "shapes").total == len(truth)


def test_the_labels_commands(demo, library_setup, capsys):
    catalog, _folder, truth = library_setup

    def cli(*argv, modules=("labels",)):
        code, out, err = run_cli(capsys, *argv, modules=list(modules))
        assert code == 0, err
        return out

    assert "photos labelled" in cli("labels", "apply", "shapes")
    out = cli("labels", "threshold", "shapes", "--set", "suggested")
    assert "threshold set to" in out and "left unlabelled" in out
    assert labels.thresholds(catalog, demo, "shapes").current == labels.thresholds(catalog, demo, "shapes").suggested
    out = cli("labels", "review", "shapes", "--per-grid", "2")
    first = int(out.split("@")[1].split()[0])
    assert "least sure" in out and "circle: most confident" in out
    assert "as 'star' (by Ada)" in cli("labels", "label", "shapes", f"@{first}", "star", "--person", "Ada")
    assert f"@{first}" in (again := cli("labels", "review", "shapes", "--per-grid", "2")) and "[labelled star]" in again
    shown = cli("labels", "show", "shapes", "--label", "circle", "--min-probability", "0")
    assert "photo(s)" in shown and all("circle" in line for line in shown.splitlines()[:-1])
    out = cli("search", "a shape", "--classifier", "shapes", "--label", "circle", "--min-probability", "0",
              "--sort", "probability", modules=("library",))
    assert "circle" in out and "result(s)" in out
    code, _out, err = run_cli(capsys, "labels", "label", "shapes", "x1", "star", modules=["labels"])
    assert code == 2 and "is not a photo id" in err
