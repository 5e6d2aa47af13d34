"""engine.labelling and engine.heads on small synthetic embeddings: chunked top labels equal a plain softmax,
a threshold between an unsure and a confident group, the head's interpolation chosen by cross-validation
(zero-shot where examples teach nothing), the few-shot table."""

from __future__ import annotations

import numpy as np

from cliplab.engine import labelling
from cliplab.engine.heads import choose_alpha, few_shot_heads, improve, interpolate


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def world(seed: int = 0, classes: int = 5, dim: int = 16, per_class: int = 12, shift: float = 0.0):
    """Classes around random centres; the zero-shot weights sit `shift` away from them (a biased prompt)."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(classes, dim)))
    zeroshot = unit(centres + shift * rng.normal(size=(classes, dim)))
    y = np.repeat(np.arange(classes), per_class)
    x = unit(centres[y] + 0.35 * rng.normal(size=(len(y), dim)))
    return zeroshot, x, y


def test_top_labels_in_chunks_equal_a_plain_softmax(monkeypatch):
    zeroshot, x, _ = world(classes=7)
    monkeypatch.setattr(labelling, "CHUNK", 16)  # several chunks
    top = labelling.top_labels(zeroshot, 100.0, x, k=3)
    logits = 100.0 * x.astype(np.float64) @ zeroshot.T.astype(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    assert np.array_equal(top.indices[:, 0], probs.argmax(1))
    np.testing.assert_allclose(top.probs, np.take_along_axis(probs, top.indices, 1), atol=1e-5)
    assert np.all(top.margin >= 0) and top.indices.shape == (len(x), 3)
    assert labelling.top_labels(zeroshot[:2], 100.0, x, k=5).indices.shape == (len(x), 2)  # k cut to the classes


def test_suggested_threshold_splits_unsure_from_confident():
    top1 = np.concatenate([np.full(50, 0.3), np.full(50, 0.9)])
    suggested = labelling.suggest_threshold(top1, classes=4)
    assert 0.3 < suggested <= 0.9
    assert dict(labelling.unlabelled_counts(top1, [0.0, suggested, 1.0])) == {0.0: 0, suggested: 50, 1.0: 100}
    assert labelling.suggest_threshold(np.full(10, 0.6), classes=4) == 0.25  # nothing to split: chance


def test_head_moves_toward_examples_only_when_they_help():
    zeroshot, x, y = world(shift=1.2)  # poor prompts: the examples help
    choice = choose_alpha(zeroshot, 100.0, x, y)
    assert choice.alpha > 0
    assert np.array_equal(interpolate(zeroshot, x, y, 0.0), zeroshot)
    result = improve(zeroshot, 100.0, x, y, [f"c{i}" for i in range(5)])
    assert not result.fallback and result.head.correct >= result.zeroshot.correct and "Improved from" in result.message
    partial = improve(zeroshot, 100.0, x[y != 4], y[y != 4], [f"c{i}" for i in range(5)])
    assert np.array_equal(partial.weights[4], zeroshot[4]) and "c4" in partial.message  # no examples: zero-shot kept

    # labels that contradict the pictures: the held-out examples show the head is worse, zero-shot is kept
    perfect, x, y = world(shift=0.0)
    order = []  # per label: drawings of the next class to learn from, its own ones where they are held out
    for label in range(5):
        own, wrong = np.flatnonzero(y == label)[:2], np.flatnonzero(y == (label + 1) % 5)[2:8]
        order += [(i, label) for i in (wrong[0], own[0], wrong[1], wrong[2], wrong[3], own[1], wrong[4], wrong[5])]
    picked, misled = np.array([i for i, _ in order]), np.array([label for _, label in order])
    result = improve(perfect, 100.0, x[picked], misled, [f"c{i}" for i in range(5)])
    assert result.fallback and np.array_equal(result.weights, perfect) and "zero-shot weights are kept" in result.message


def test_few_shot_heads_table():
    zeroshot, x, y = world(shift=1.2, per_class=20)
    _, test_x, test_y = world(seed=1, shift=1.2, per_class=20)
    table = few_shot_heads(zeroshot, 100.0, x, y, (1, 4, 16, 64), (0, 1), test_x, test_y)
    assert list(table.shots) == [1, 4, 16]  # 64 is more than a class has
    zero_shot = float(np.mean(labelling.probabilities(zeroshot, 100.0, test_x).argmax(1) == test_y))
    assert table["mean"].iloc[-1] > zero_shot and all(len(a) == 2 for a in table.alphas)
