"""Zero-shot classifiers: weights, the prompt cache, templates, thresholds, label-set comparison."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from zeroshot_support import CountingModel, small_clip, tokenizer

from cliplab.assets import asset_path
from cliplab.engine.errors import CliplabError
from cliplab.engine.zeroshot import (
    Classifier,
    TextFeatureCache,
    build_classifier,
    compare_label_sets,
    load_templates,
    predict,
    threshold_labels,
)

CLASSES = ["cat", "dog", "red car", "sailing boat"]
TEMPLATES = ["a photo of a {}.", "a drawing of the {}.", "itap of a {}."]


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


def independent_weights(model, tok, classnames, templates, extra=None) -> np.ndarray:
    """The definition, one class at a time: embed, normalise, average, re-normalise."""
    rows = []
    with torch.no_grad():
        for name in classnames:
            texts = [t.replace("{}", name) for t in templates] + (extra or {}).get(name, [])
            emb = F.normalize(model.encode_text(tok(texts)).float(), dim=-1).mean(dim=0)
            rows.append(F.normalize(emb, dim=0).numpy())
    return np.stack(rows)


def test_weights_equal_independent_per_class_computation(tok):
    model = small_clip()
    extra = {"dog": ["a photo of a puppy."]}
    clf = build_classifier(model, tok, CLASSES, TEMPLATES, extra_prompts=extra)
    assert clf.weights.dtype == np.float32 and clf.weights.shape == (4, model.embed_dim)
    np.testing.assert_allclose(clf.weights, independent_weights(model, tok, CLASSES, TEMPLATES, extra), atol=2e-6)
    np.testing.assert_allclose(np.linalg.norm(clf.weights, axis=1), 1.0, atol=1e-6)
    # the extra prompt really moved the dog's weights and nothing else
    plain = build_classifier(model, tok, CLASSES, TEMPLATES)
    assert not np.allclose(plain.weights[1], clf.weights[1])
    np.testing.assert_array_equal(np.delete(plain.weights, 1, 0), np.delete(clf.weights, 1, 0))


def test_probabilities_are_softmax_of_scaled_cosine(tok):
    model = small_clip()
    clf = build_classifier(model, tok, CLASSES, TEMPLATES)
    feats = np.random.default_rng(0).normal(size=(5, model.embed_dim)).astype(np.float32)
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    expected = torch.softmax(torch.from_numpy(100.0 * unit @ clf.weights.T), dim=1).numpy()
    np.testing.assert_allclose(clf.probs(feats * 7.0), expected, rtol=1e-4, atol=1e-6)
    assert clf.logit_scale == 100.0
    model_scaled = build_classifier(model, tok, CLASSES, TEMPLATES, scale="model")
    assert model_scaled.logit_scale == pytest.approx(1 / 0.07, rel=1e-5)
    top = predict(clf, feats, k=2)
    assert len(top) == 5 and all(len(row) == 2 and row[0][1] >= row[1][1] for row in top)
    assert [row[0][0] for row in top] == [CLASSES[i] for i in expected.argmax(1)]


def test_cache_returns_identical_weights_and_saves_the_encoding(tok):
    model = CountingModel(small_clip())
    first = build_classifier(model, tok, CLASSES, TEMPLATES)
    assert model.texts_encoded == len(CLASSES) * len(TEMPLATES)
    second = build_classifier(model, tok, CLASSES, TEMPLATES)
    assert model.texts_encoded == len(CLASSES) * len(TEMPLATES)  # nothing re-encoded
    np.testing.assert_array_equal(first.weights, second.weights)
    # an overlapping classifier encodes only its new prompts
    build_classifier(model, tok, CLASSES + ["horse"], TEMPLATES)
    assert model.texts_encoded == (len(CLASSES) + 1) * len(TEMPLATES)
    # without the cache, everything is encoded again and the result is the same
    uncached = build_classifier(model, tok, CLASSES, TEMPLATES, cache=False)
    assert model.texts_encoded == (2 * len(CLASSES) + 1) * len(TEMPLATES)
    np.testing.assert_allclose(uncached.weights, first.weights, atol=1e-7)


def test_a_different_model_does_not_reuse_cache_entries(tok):
    a, b = CountingModel(small_clip(seed=0)), CountingModel(small_clip(seed=1))
    wa = build_classifier(a, tok, CLASSES, TEMPLATES)
    wb = build_classifier(b, tok, CLASSES, TEMPLATES)
    assert b.texts_encoded == len(CLASSES) * len(TEMPLATES)
    assert wa.fingerprint != wb.fingerprint
    assert not np.allclose(wa.weights, wb.weights)
    np.testing.assert_allclose(wb.weights, independent_weights(b.inner, tok, CLASSES, TEMPLATES), atol=2e-6)


def _writer(args):
    path, offset = args
    cache = TextFeatureCache(Path(path))
    for i in range(20):
        texts = [f"prompt {j}" for j in range(offset + i * 10, offset + i * 10 + 50)]
        cache.put("fp", texts, np.ones((len(texts), 4), dtype=np.float32))
    cache.close()
    return True


def test_cache_is_safe_with_two_writing_processes(tmp_path):
    path = tmp_path / "cache.sqlite"
    TextFeatureCache(path).close()
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        assert all(pool.map(_writer, [(str(path), 0), (str(path), 100)]))
    got = TextFeatureCache(path).get("fp", [f"prompt {j}" for j in range(0, 340)])
    assert len(got) == 340 and all(v.shape == (4,) and (v == 1).all() for v in got.values())


def test_round_trip_through_json(tok):
    clf = build_classifier(small_clip(), tok, CLASSES, TEMPLATES, extra_prompts={"cat": ["a kitten."]})
    back = Classifier.from_dict(json.loads(json.dumps(clf.to_dict())))
    np.testing.assert_array_equal(back.weights, clf.weights)
    assert (back.classnames, back.templates, back.logit_scale, back.fingerprint, back.extra_prompts) == (
        clf.classnames, clf.templates, clf.logit_scale, clf.fingerprint, clf.extra_prompts)


def test_shipped_templates_and_imagenet_classes(tmp_path):
    t80, t7 = load_templates("imagenet80"), load_templates("imagenet7")
    assert len(t80) == 80 and len(set(t80)) == 80 and len(t7) == 7 and set(t7) <= set(t80)
    assert load_templates("default") == ["a photo of a {}."]
    assert load_templates("pets") == ["a photo of a {}, a type of pet."]
    assert all('"{}"' in t for t in load_templates("ocr"))
    assert all("satellite" in t or "aerial" in t for t in load_templates("satellite"))
    for name in ("food", "aircraft"):
        assert all(f"a type of {name}" in t for t in load_templates(name))
    names = asset_path("imagenet_classes.txt").read_text().splitlines()
    assert len(names) == 1000 and names[:2] == ["tench", "goldfish"]
    assert "crane bird" in names and "construction crane" in names  # the notebook's polysemy edits
    text_file = tmp_path / "mine.txt"
    text_file.write_text("# my prompts\na sketch of a {}.\n\nan {} in the wild.\n")
    assert load_templates(str(text_file)) == ["a sketch of a {}.", "an {} in the wild."]
    json_file = tmp_path / "mine.json"
    json_file.write_text(json.dumps(["a {} with {braces}?", "the {}."]))  # other braces are plain text
    assert load_templates(str(json_file)) == ["a {} with {braces}?", "the {}."]
    json_file.write_text(json.dumps(["a {} and a {}."]))
    with pytest.raises(CliplabError, match="exactly one"):
        load_templates(str(json_file))
    bad = tmp_path / "bad.txt"
    bad.write_text("a photo without a slot.\n")
    with pytest.raises(CliplabError, match="exactly one"):
        load_templates(str(bad))
    with pytest.raises(CliplabError, match="No template set"):
        load_templates("no-such-preset")


def test_threshold_labels_on_hand_made_probabilities():
    probs = np.array([[0.90, 0.05, 0.04, 0.01],
                      [0.30, 0.30, 0.395, 0.005],
                      [0.25, 0.25, 0.25, 0.25]])
    names = ["a", "b", "c", "d"]
    assert threshold_labels(probs, names, 0.04) == [[("a", 0.90), ("b", 0.05), ("c", 0.04)],
                                                    [("c", 0.395), ("a", 0.30), ("b", 0.30)],
                                                    [("a", 0.25), ("b", 0.25), ("c", 0.25), ("d", 0.25)]]
    low = threshold_labels(probs, names, 0.005)
    assert [len(r) for r in low] == [4, 4, 4]
    assert threshold_labels(probs, names, 0.5) == [[("a", 0.90)], [], []]
    with pytest.raises(CliplabError):
        threshold_labels(probs, names, 4.0)


def test_compare_label_sets_on_hand_made_probabilities():
    a_names = ["man", "woman"]
    b_names = ["man", "woman", "child"]
    probs_a = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.6, 0.4]])
    probs_b = np.array([[0.8, 0.1, 0.1],   # man -> man
                        [0.2, 0.1, 0.7],   # man -> child
                        [0.1, 0.6, 0.3],   # woman -> woman
                        [0.1, 0.2, 0.7],   # woman -> child
                        [0.1, 0.2, 0.7]])  # man -> child
    result = compare_label_sets(probs_a, a_names, probs_b, b_names)
    assert result["per_image"].moved.tolist() == [False, True, False, True, True]
    assert result["per_image"].top1_b.tolist() == ["man", "child", "woman", "child", "child"]
    assert result["moved"] == 3 and result["n_images"] == 5 and result["moved_fraction"] == pytest.approx(0.6)
    table = result["transitions"]
    assert list(table.index) == a_names and list(table.columns) == b_names
    assert table.to_numpy().tolist() == [[1, 0, 2], [0, 1, 1]]
    per_class = result["per_class"].set_index("class_a")
    assert per_class.loc["man", "images"] == 3 and per_class.loc["man", "moved"] == 2
    assert per_class.loc["man", "moved_mostly_to"] == "child"
    assert per_class.loc["woman", "moved_fraction"] == pytest.approx(0.5)
    with pytest.raises(CliplabError):
        compare_label_sets(probs_a, a_names, probs_b[:3], b_names)


DEMO_WEIGHTS = asset_path("demo", "model.safetensors")


@pytest.mark.skipif(not DEMO_WEIGHTS.is_file(), reason="assets/demo/model.safetensors is not built yet "
                    "(the trainer's `cliplab train --preset demo` writes it); this test runs once it exists")
def test_zero_shot_accuracy_with_the_demo_model(test_output_dir):
    """Images generated by the demo's synthetic world: zero-shot accuracy clearly above chance on
    held-out shape-colour combinations (never seen together in training), and the prompt ensemble
    measured against the single prompt. Shape transfers to unseen combinations only partly (the model
    card reports ~23% there, chance 12.5%, against ~60% on seen ones), so its held-out margin is smaller."""
    from cliplab.engine.api import load
    from cliplab.engine.features import encode_images
    from cliplab.trainer.demo.world import World

    model, preprocess, tok = load("demo", device="cpu")
    world = World()
    tasks = world.zero_shot_tasks()
    report = {}
    for name, split, margin in (("colour", "heldout", 0.3), ("count", "heldout", 0.3),
                                ("shape", "train", 0.3), ("shape", "heldout", 0.05)):
        task = tasks[name]
        images, labels = world.labelled(task, 10 * len(task.classnames), split=split, seed=1)
        features = encode_images(model, preprocess, images)
        single = build_classifier(model, tok, task.classnames, task.prompts)
        ensemble = build_classifier(model, tok, task.classnames, task.ensemble)
        acc_single = float(np.mean(single.probs(features).argmax(1) == labels))
        acc_ensemble = float(np.mean(ensemble.probs(features).argmax(1) == labels))
        chance = 1 / len(task.classnames)
        report[f"{name}/{split}"] = dict(chance=chance, single_prompt=acc_single, ensemble=acc_ensemble,
                                         templates=len(task.ensemble), images=len(labels))
        assert acc_single > chance + margin, report
        assert acc_ensemble > chance + margin, report
    (test_output_dir / "demo_zeroshot.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
