"""Issue 29, item 1: the learned copy detector in the product: seeded training through the trainer,
the calibrated threshold, preparing it once per machine (one trainer at a time), its file and bad
files, and descriptors kept per detector (another detector's are made again, never mixed)."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest
import torch
from library_fixtures import tiny_bundle, write_image
from PIL import Image
from safetensors.torch import save_file
from sqlalchemy import select

from cliplab.app.cli import main
from cliplab.app.services import copy_detectors
from cliplab.engine import copydetect
from cliplab.engine.errors import CliplabError
from cliplab.indexes.catalog import open_catalog
from cliplab.indexes.copies import CopyIndex, library_descriptors
from cliplab.indexes.indexer import index_pending
from cliplab.indexes.records import CopyDescriptor
from cliplab.indexes.scan import scan
from cliplab.trainer import copy_detector as training

# Smaller than the conftest's quick detector: these tests train several.
TINY = replace(training.Recipe(), world=40, steps=12, batch=16, width=4, calibration=20)


def test_training_is_seeded_and_the_name_is_the_weights(tmp_path):
    a, b = training.train_detector(TINY), training.train_detector(TINY)
    other = training.train_detector(replace(TINY, seed=TINY.seed + 1))
    assert a.name == b.name != other.name and a.name.startswith(copydetect.LEARNED_PREFIX)
    assert a.threshold == b.threshold
    for key, value in a.net.state_dict().items():
        assert torch.equal(value, b.net.state_dict()[key])
    pictures = training.photo_like(3, seed=5)
    kept = copydetect.load_learned(a.save(tmp_path / "d.safetensors"))
    assert (kept.name, kept.threshold, kept.dim, kept.regions) == (a.name, a.threshold, 128, 5)
    assert copydetect.LearnedDetector(a.net, a.threshold, regions=[(0, 0, 1, 1)]).name != a.name  # regions count
    assert kept.meta["recipe"]["steps"] == TINY.steps and kept.meta["near_miss_rate"] == training.NEAR_MISS_RATE
    described = kept.describe(pictures)
    np.testing.assert_array_equal(described, a.describe(pictures))
    assert described.shape == (3, 5, 128)
    np.testing.assert_allclose(np.linalg.norm(described, axis=-1), 1.0, rtol=1e-5)


def test_the_threshold_is_the_lowest_that_few_enough_negatives_reach():
    rng = np.random.default_rng(0)
    for _ in range(30):
        negatives = rng.uniform(0.0, 1.0, int(rng.integers(1, 300))).astype(np.float32)
        rate = float(rng.choice([0.0, 0.01, 0.02, 0.2]))
        chosen = training.false_match_threshold(negatives, rate)
        allowed = int(np.floor(rate * len(negatives) + 1e-9))
        assert (negatives >= chosen).sum() <= allowed
        below = negatives[negatives < chosen]
        if len(below):  # the next lower score would let one more negative through: chosen is the lowest
            assert (negatives >= below.max()).sum() > allowed


def test_calibration_on_its_own_pictures_lets_no_different_pair_and_few_twins_through():
    detector = training.train_detector(TINY)
    seed = TINY.seed + training.CALIBRATION_SEED_OFFSET
    assert detector.meta["calibration_seed"] == seed
    # the calibration pictures again, scored here: copies of each original, twins, other pictures
    originals, twins = training.world_scenes_with_twins(TINY.calibration, seed)
    originals += training.photo_like(TINY.calibration // 2, seed)
    rng = np.random.default_rng(seed)
    copies = [copydetect.plant_copy(p, rng) for p in originals]
    d, c, t = (detector.describe(x) for x in (originals, copies, twins))
    different = np.array([copydetect.score(d[i], d[j]) for i in range(len(d)) for j in range(i + 1, len(d))])
    near = np.array([copydetect.score(a, b) for a, b in zip(d, t)])
    assert different.max() < detector.threshold
    assert (near >= detector.threshold).sum() <= training.NEAR_MISS_RATE * len(near)
    assert detector.meta["calibration_near_misses_above"] == (near >= detector.threshold).sum()
    positives = np.array([copydetect.score(a, b) for a, b in zip(d, c)])
    assert detector.meta["calibration_recall"] == pytest.approx((positives >= detector.threshold).mean(), abs=1e-4)
    np.testing.assert_allclose(copydetect.paired_scores(d, c), positives, rtol=1e-6)
    np.testing.assert_allclose(np.diag(copydetect.scores(d, c)), positives, rtol=1e-6)


def test_prepare_trains_once_across_threads_then_loads(tmp_path):
    output = tmp_path / "detectors" / "mine.safetensors"
    trained, got = [], []

    def prepare():
        seen = set()
        got.append(copy_detectors.prepare(TINY, output=output, on_progress=lambda stage, done, total: seen.add(stage)))
        trained.append("training" in seen)

    threads = [threading.Thread(target=prepare) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(trained) == [False, True]  # the second waited for the first, then loaded its file
    assert got[0].name == got[1].name and output.is_file()
    stamp = output.stat().st_mtime_ns
    assert copy_detectors.prepare(TINY, output=output).name == got[0].name
    assert output.stat().st_mtime_ns == stamp  # kept: nothing trained or written again
    again = copy_detectors.prepare(replace(TINY, seed=3), output=output, force=True)
    assert again.name != got[0].name and copydetect.load_learned(output).name == again.name
    assert not list(output.parent.glob(".*.tmp"))  # written whole, no part left behind


def test_the_recipe_names_where_the_default_detector_is_kept(cliplab_home, monkeypatch):
    path = copy_detectors.recipe_path(TINY)
    assert path.parent == cliplab_home / "detectors" and path != copy_detectors.recipe_path(replace(TINY, steps=13))
    monkeypatch.delenv(copy_detectors.ENVIRONMENT)
    info = copy_detectors.describe()
    assert (info.choice, info.prepared, info.name) == ("learned", False, None)  # nothing trained to say so
    assert copy_detectors.default_threshold() == copy_detectors.UNPREPARED_THRESHOLD
    assert copy_detectors.describe("dct").threshold == copydetect.THRESHOLD


def test_bad_detector_choices_and_files_are_one_sentence(tmp_path, capsys):
    with pytest.raises(CliplabError, match="No copy detector 'nonsense': choose learned or dct"):
        copy_detectors.get_detector("nonsense")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file at all")
    with pytest.raises(CliplabError, match="Cannot read the copy detector"):
        copy_detectors.get_detector(str(broken))
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3, 3)}, str(foreign))
    with pytest.raises(CliplabError, match="is not a cliplab copy detector"):
        copy_detectors.get_detector(str(foreign))
    assert main(["duplicates", "--detector", "nonsense"]) == 2
    assert "No copy detector 'nonsense'" in capsys.readouterr().err


def test_library_descriptors_are_made_again_for_another_detector(tmp_path):
    root = tmp_path / "p"
    write_image(root / "a.jpg", 1, size=(64, 48))
    Image.open(root / "a.jpg").resize((96, 72)).save(root / "a bigger.jpg")
    write_image(root / "b.jpg", 50)
    catalog = open_catalog()
    scan(catalog, [root])
    index_pending(catalog, tiny_bundle(), workers=0, progress=False)
    learned, dct = copy_detectors.get_detector(), copydetect.DCTDetector()

    def stored():
        with catalog.session() as session:
            return {(row.detector, len(row.descriptor)) for row in session.scalars(select(CopyDescriptor))}

    for detector in (dct, learned, dct):
        described = library_descriptors(catalog, detector)
        assert described.descriptors.shape == (3, detector.regions, detector.dim)
        assert stored() == {(detector.name, detector.regions * detector.dim * 2)}  # float16, one detector only
        queries, found, _ = CopyIndex(described.descriptors).matches(described.descriptors, detector.threshold)
        names = {(described.paths[q].rsplit("/", 1)[1], described.paths[r].rsplit("/", 1)[1])
                 for q, r in zip(queries, found) if q != r}
        assert names == {("a.jpg", "a bigger.jpg"), ("a bigger.jpg", "a.jpg")}, detector.name


def test_cli_shows_the_detector_and_duplicates_take_either(tmp_path, capsys):
    assert main(["copy-detector"]) == 0
    shown = capsys.readouterr().out
    learned = copy_detectors.get_detector()
    assert learned.name in shown and f"threshold {learned.threshold:.4f}" in shown and "calibrated" in shown
    assert main(["copy-detector", "--detector", "dct"]) == 0
    assert "no training needed" in capsys.readouterr().out
    root = tmp_path / "p"
    write_image(root / "a.jpg", 1, size=(64, 48))
    Image.open(root / "a.jpg").resize((96, 72)).save(root / "a bigger.jpg")
    scan(open_catalog(), [root])
    index_pending(open_catalog(), tiny_bundle(), workers=0, progress=False)
    for choice, threshold in (("dct", copydetect.THRESHOLD), (None, learned.threshold)):
        assert main(["duplicates"] + (["--detector", choice] if choice else [])) == 0
        out = capsys.readouterr().out
        assert "similar pictures" in out and f"copy score >= {threshold:.2f}" in out


@pytest.mark.slow  # the default recipe's pictures at 5 steps: ~25 s
def test_cli_trains_a_detector_file_that_duplicates_then_use(tmp_path, capsys):
    output = tmp_path / "mine.safetensors"
    assert main(["copy-detector", "--train", "--steps", "5", "--seed", "7", "--output", str(output), "--quiet"]) == 0
    made = copydetect.load_learned(output)
    assert f"copy detector {made.name} ready" in capsys.readouterr().out
    assert made.meta["recipe"]["steps"] == 5 and made.meta["recipe"]["seed"] == 7
    assert main(["copy-detector", "--detector", str(output), "--json"]) == 0
    assert f'"name": "{made.name}"' in capsys.readouterr().out
