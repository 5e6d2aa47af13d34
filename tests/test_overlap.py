"""Issue 29, items 1, 2 and 7: the copy detector, `cliplab overlap` and its figures, decided pairs,
bad input, and the library's near-duplicate finder on the detector."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from overlap_support import make_sets
from PIL import Image
from scipy.stats import binomtest

from cliplab.app.cli import main
from cliplab.app.services import copy_detectors, overlap
from cliplab.engine import copydetect
from cliplab.engine.errors import CliplabError
from cliplab.engine.images import load_image
from cliplab.indexes.catalog import open_catalog


@pytest.fixture
def sets(tmp_path):
    return make_sets(tmp_path)


def _prediction_csv(sets, tmp_path, wrong: set[str]) -> tuple:
    """A CSV over the eval set with a prediction column: right except for the names in `wrong`."""
    path = tmp_path / "eval.csv"
    names = sorted(str(p.relative_to(sets.eval_dir)) for p in sets.eval_dir.rglob("*.png"))
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "prediction"])
        for name in names:
            label = name.split("/")[0]
            writer.writerow([str(sets.eval_dir / name), label, "other" if name in wrong else label])
    return path, names


def _independent(sets, names, detector):
    """Brute force, no index: each eval image's best copy score over every reference image."""
    refs = sorted(sets.reference_dir.iterdir())
    e = detector.describe([load_image(sets.eval_dir / n) for n in names])
    r = detector.describe([load_image(p) for p in refs])
    best = np.array([[copydetect.score(a, b) for b in r] for a in e]).max(1)
    return {n for n, s in zip(names, best) if s >= detector.threshold}


def test_detector_finds_the_planted_copies_and_not_the_near_misses(sets, tmp_path):
    csv_path, names = _prediction_csv(sets, tmp_path, set())
    report = overlap.run_overlap(open_catalog(), csv_path, sets.reference_dir)
    found = {str(Path(p.eval_path).relative_to(sets.eval_dir)) for p in report.pairs if p.counted}
    detector = copy_detectors.get_detector()  # the learned one (the tests' quick one)
    assert report.detector == detector.name and report.threshold == detector.threshold
    assert found == sets.copied == _independent(sets, names, detector)
    assert not found & sets.near_missed
    assert report.split("Overlap").size == len(sets.copied)
    assert report.split("Clean").size == len(names) - len(sets.copied)


def test_figures_equal_scipy_and_the_cli_gives_the_same_numbers(sets, tmp_path, capsys):
    copied = sorted(sets.copied)
    wrong = {copied[0], "star/star1.png", "cross/cross3.png", "circle/circle4.png"}
    csv_path, names = _prediction_csv(sets, tmp_path, wrong)
    report = overlap.run_overlap(open_catalog(), csv_path, sets.reference_dir)
    in_overlap = np.array([n in sets.copied for n in names])
    correct = np.array([n not in wrong for n in names])
    for name, mask in (("Overlap", in_overlap), ("Clean", ~in_overlap), ("All", np.ones(len(names), bool))):
        split = report.split(name)
        k, n = int(correct[mask].sum()), int(mask.sum())
        ci = binomtest(k, n).proportion_ci(confidence_level=0.995, method="exact")
        assert (split.size, split.correct) == (n, k)
        assert split.accuracy == pytest.approx(k / n)
        assert (split.low, split.high) == pytest.approx((ci.low, ci.high))
    clean = report.split("Clean")
    assert report.all_minus_clean == pytest.approx(correct.mean() - clean.accuracy)
    expected = binomtest(report.split("Overlap").correct, report.split("Overlap").size, clean.accuracy,
                         alternative="greater").pvalue
    assert report.p_value == pytest.approx(expected)
    assert main(["overlap", str(csv_path), str(sets.reference_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(report.to_dict()))
    assert main(["overlap", str(csv_path), str(sets.reference_dir)]) == 0
    printed = capsys.readouterr().out
    assert "All - Clean" in printed and "99.5% CI" in printed


def test_a_rejected_pair_goes_to_clean_and_a_confirmed_one_to_overlap_in_later_runs(sets, tmp_path):
    csv_path, names = _prediction_csv(sets, tmp_path, set())
    catalog = open_catalog()
    report = overlap.run_overlap(catalog, csv_path, sets.reference_dir)
    counted = [p for p in report.pairs if p.counted]
    candidates = [p for p in report.pairs if not p.counted]
    assert candidates, "a near-miss below the threshold is offered for review"
    overlap.decide(catalog, counted[0], False)
    overlap.decide(catalog, candidates[0], True)
    again = overlap.run_overlap(open_catalog(), csv_path, sets.reference_dir)
    assert again.split("Overlap").size == report.split("Overlap").size  # one out, one in
    moved = {p.eval_path: p.counted for p in again.pairs}
    assert moved[counted[0].eval_path] is False and moved[candidates[0].eval_path] is True
    overlap.decide(catalog, counted[0], None)  # forgotten: the detector decides again
    assert {p.eval_path: p.counted for p in overlap.run_overlap(catalog, csv_path, sets.reference_dir).pairs}[
        counted[0].eval_path] is True


def test_no_overlap_all_overlap_and_one_member_say_so_without_a_misleading_figure(sets, tmp_path):
    csv_path, names = _prediction_csv(sets, tmp_path, set())
    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    for p in sets.reference_dir.glob("other*"):
        shutil.copy(p, unrelated / p.name)
    none = overlap.run_overlap(open_catalog(), csv_path, unrelated)
    assert none.split("Overlap").size == 0 and none.split("Overlap").accuracy is None
    assert none.p_value is None and none.all_minus_clean == 0.0
    assert "No evaluation image has a copy" in " ".join(none.notes)
    everything = overlap.run_overlap(open_catalog(), csv_path, sets.eval_dir)  # every image is its own copy
    assert everything.split("Clean").size == 0 and everything.all_minus_clean is None and everything.p_value is None
    assert "no Clean subset" in " ".join(everything.notes)
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(next(sets.reference_dir.glob("copy*")), one / "copy.jpg")
    single = overlap.run_overlap(open_catalog(), csv_path, one)
    assert single.split("Overlap").size == 1
    assert "Overlap holds 1 image(s)" in " ".join(single.notes)


def test_bad_reference_and_eval_sets_are_one_sentence(sets, tmp_path):
    csv_path, _ = _prediction_csv(sets, tmp_path, set())
    described = tmp_path / "refs.npz"
    assert main(["overlap", "--describe", str(sets.reference_dir), str(described)]) == 0
    assert len(np.load(described)["paths"]) == len(list(sets.reference_dir.iterdir()))
    from_file = overlap.run_overlap(open_catalog(), csv_path, described)
    assert from_file.split("Overlap").size == len(sets.copied)
    other = tmp_path / "other.npz"
    data = dict(np.load(described))
    np.savez(other, **{**data, "detector": "someone-elses-v3"})
    with pytest.raises(CliplabError, match="described by the copy detector someone-elses-v3"):
        overlap.run_overlap(open_catalog(), csv_path, other)
    embeddings = tmp_path / "embeddings.npz"
    np.savez(embeddings, embeddings=np.zeros((3, 64), np.float32), paths=np.array(["a", "b", "c"]))
    with pytest.raises(CliplabError, match="holds no copy-detector descriptors"):
        overlap.run_overlap(open_catalog(), csv_path, embeddings)
    unlabelled = tmp_path / "unlabelled.csv"
    unlabelled.write_text("path,species\n" + str(next(sets.eval_dir.rglob("*.png"))) + ",x\n")
    with pytest.raises(CliplabError, match="no 'label' column"):
        overlap.run_overlap(open_catalog(), unlabelled, sets.reference_dir)
    assert main(["overlap", str(unlabelled), str(sets.reference_dir)]) == 2


def test_near_duplicate_finder_groups_copies_not_distinct_pictures_of_one_thing(tmp_path):
    from library_fixtures import tiny_bundle

    from cliplab.indexes.duplicates import near_duplicates
    from cliplab.indexes.indexer import index_pending
    from cliplab.indexes.scan import scan
    sets = make_sets(tmp_path / "sets")
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sets.reference_dir.iterdir():
        shutil.copy(p, photos / p.name)
    for name in sets.copied | sets.near_missed:
        Image.open(sets.eval_dir / name).save(photos / name.replace("/", "_"))
    catalog = open_catalog()
    scan(catalog, [photos])
    index_pending(catalog, tiny_bundle(), workers=0, progress=False)
    groups = near_duplicates(catalog, copy_detectors.get_detector())
    grouped = [sorted(m.path.rsplit("/", 1)[1] for m in g.members) for g in groups]
    assert len(groups) == len(sets.copied) and all(g.keeper is None for g in groups)
    assert all(len(g) == 2 and sum(n.startswith("copy") for n in g) == 1 for g in grouped)
    assert not any(n.startswith("near") for g in grouped for n in g)


def test_the_app_gives_the_clis_numbers_reads_the_library_and_refuses_sets_outside_it(sets, tmp_path, capsys):
    from library_fixtures import tiny_bundle

    from cliplab.indexes.indexer import index_pending
    from cliplab.indexes.scan import scan
    catalog = open_catalog()
    scan(catalog, [sets.reference_dir, sets.eval_dir])
    index_pending(catalog, tiny_bundle(), workers=0, progress=False)
    outside = tmp_path / "elsewhere"
    shutil.copytree(sets.eval_dir, outside)
    with pytest.raises(CliplabError, match="not inside one of your library folders"):
        overlap.overlap_for_app(catalog, None, str(outside), "library")
    # the reference is the library: its reference photos and the evaluation images themselves
    csv_path, names = _prediction_csv(sets, sets.eval_dir, {"star/star1.png"})
    app = overlap.overlap_for_app(catalog, None, str(csv_path), str(sets.reference_dir))
    assert main(["overlap", str(csv_path), str(sets.reference_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(app.to_dict()))
    whole = overlap.overlap_for_app(catalog, None, str(csv_path), "library")
    assert whole.split("Clean").size == 0  # every evaluation image is in the library too
    # the tab's tables are these rows
    assert [r["images"] for r in overlap.split_rows(app)] == [s.size for s in app.splits]
    assert [r["score"] for r in overlap.pair_rows(app)] == [round(p.score, 3) for p in app.pairs]


def test_zero_shot_predictions_when_the_set_brings_none(sets):
    from library_fixtures import tiny_bundle

    from cliplab.app.services.classify import load_templates
    from cliplab.app.services.evaluate import zero_shot_probs
    from cliplab.engine.evaldata import load_dataset
    bundle = tiny_bundle()
    report = overlap.run_overlap(open_catalog(), sets.eval_dir, sets.reference_dir, bundle)
    dataset = load_dataset(sets.eval_dir)
    expected = zero_shot_probs(bundle, dataset, load_templates("default"), progress=False).argmax(1) == dataset.targets
    assert report.correct == expected.tolist() and report.predictions.startswith("zero-shot over the set's 3")
    assert report.split("All").correct == int(expected.sum())
    with pytest.raises(CliplabError, match="a model must classify it"):
        overlap.run_overlap(open_catalog(), sets.eval_dir, sets.reference_dir, None)
