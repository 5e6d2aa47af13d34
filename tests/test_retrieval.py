"""Retrieval recall against a brute-force count on a small fixed example with ties and several captions."""

from __future__ import annotations

import numpy as np
import pytest

from cliplab.engine.errors import CliplabError
from cliplab.engine.retrieval import recall_at_k

# 4 images, 7 captions (image 0 has 3, image 1 has 2, image 2 has 1, image 3 has 1).
# Exact ties by construction: identical feature vectors score identically.
IMAGES = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)  # images 1 and 2 identical
TEXTS = np.array([
    [1, 0, 0],        # 0 -> image 0: rank 1
    [0, 1, 0],        # 1 -> image 0: images 1 and 2 beat it, image 3 ties it -> rank 4
    [1, 1, 0],        # 2 -> image 0: tied with images 1 and 2 -> conservative rank 3
    [0, 1, 0],        # 3 -> image 1: tied with image 2 -> rank 2
    [0, 0.2, 1],      # 4 -> image 1: image 3 beats it, image 2 ties it -> rank 3
    [0, 1, 0],        # 5 -> image 2: tied with image 1 -> rank 2
    [0.5, 0.5, 0.5],  # 6 -> image 3: tied with everything -> rank 4
], dtype=np.float32)
OWNER = [0, 0, 0, 1, 1, 2, 3]


def brute_force(images, texts, owner, ks):
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    sim = unit(images.astype(np.float64)) @ unit(texts.astype(np.float64)).T
    t2i = []
    for t in range(len(texts)):
        right = sim[owner[t], t]
        rank = 1 + sum(1 for i in range(len(images)) if i != owner[t] and sim[i, t] >= right)
        t2i.append(rank)
    i2t = []
    for i in range(len(images)):
        captions = [t for t in range(len(texts)) if owner[t] == i]
        if not captions:
            continue
        best = max(sim[i, t] for t in captions)
        i2t.append(1 + sum(1 for t in range(len(texts)) if owner[t] != i and sim[i, t] >= best))
    return ({k: np.mean([r <= k for r in i2t]) for k in ks}, {k: np.mean([r <= k for r in t2i]) for k in ks},
            i2t, t2i)


def test_recall_equals_brute_force_with_ties_and_several_captions():
    ks = (1, 2, 3, 5)
    got = recall_at_k(IMAGES, TEXTS, OWNER, ks=ks)
    i2t, t2i, i2t_ranks, t2i_ranks = brute_force(IMAGES, TEXTS, OWNER, ks)
    assert t2i_ranks == [1, 4, 3, 2, 3, 2, 4]
    # image 0: caption 0 is best, no wrong text ties it; image 1: caption 3 ties texts 1 and 5;
    # image 2: caption 5 ties texts 1 and 3; image 3: caption 6 (0.577) loses to text 4 (0.98)
    assert i2t_ranks == [1, 3, 3, 2]
    assert got["text_to_image"] == pytest.approx(t2i) and got["image_to_text"] == pytest.approx(i2t)
    assert got["text_to_image"][1] == pytest.approx(1 / 7) and got["image_to_text"][1] == pytest.approx(1 / 4)
    assert got["n_images"] == 4 and got["n_texts"] == 7


def test_recall_on_random_data_matches_brute_force_and_constant_features_score_zero():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(12, 5)).round(0)  # coarse values: ties happen
    texts = rng.normal(size=(30, 5)).round(0) + 1e-3
    owner = list(rng.integers(0, 11, size=30))  # image 11 has no caption
    got = recall_at_k(images, texts, owner, ks=(1, 5, 10))
    i2t, t2i, i2t_ranks, _ = brute_force(images, texts, owner, (1, 5, 10))
    assert got["image_to_text"] == pytest.approx(i2t) and got["text_to_image"] == pytest.approx(t2i)
    assert got["n_images"] == len(i2t_ranks) == len(set(owner))
    flat = recall_at_k(np.ones((5, 3)), np.ones((10, 3)), [i // 2 for i in range(10)], ks=(1, 4))
    assert flat["text_to_image"] == {1: 0.0, 4: 0.0} and flat["image_to_text"] == {1: 0.0, 4: 0.0}


def test_recall_rejects_bad_caption_owners():
    with pytest.raises(CliplabError):
        recall_at_k(IMAGES, TEXTS, OWNER[:-1])
    with pytest.raises(CliplabError):
        recall_at_k(IMAGES, TEXTS, [0, 0, 0, 1, 1, 2, 9])
