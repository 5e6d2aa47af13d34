"""Linear probes: the paper's C search sequence, probes and k-shot probes on generated features."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cliplab.engine.probe import (
    effective_shots,
    few_shot,
    fit_linear_probe,
    sample_shots,
    search_regularization,
)


def log10s(visited):
    return [round(math.log10(c), 6) for c, _ in visited]


def test_search_visits_the_papers_points_around_an_interior_peak():
    calls = []

    def score(c):
        calls.append(c)
        return -(math.log10(c) - 0.3) ** 2

    best, visited = search_regularization(score)
    # 7 decade points, then the two neighbours of the best point at 1, 1/2, 1/4, 1/8 decade
    assert log10s(visited) == [-6, -4, -2, 0, 2, 4, 6, -1, 1, -0.5, 0.5, 0.25, 0.75, 0.125, 0.375]
    assert math.log10(best) == pytest.approx(0.25)  # the best point on the 1/8-decade grid near 0.3
    assert len(calls) == len(visited) == 15  # each point scored once
    assert [s for _, s in visited] == [score(c) for c, _ in visited]


def test_search_at_the_edge_of_the_range_and_ties():
    best, visited = search_regularization(lambda c: math.log10(c))  # increasing: the top edge wins
    assert log10s(visited) == [-6, -4, -2, 0, 2, 4, 6, 5, 5.5, 5.75, 5.875]
    assert best == pytest.approx(1e6)
    best, visited = search_regularization(lambda c: 1.0)  # flat: ties go to the strongest regularisation
    assert best == pytest.approx(1e-6)
    assert log10s(visited) == [-6, -4, -2, 0, 2, 4, 6, -5, -5.5, -5.75, -5.875]


def blobs(n_per_class: int, seed: int, classes: int = 4, dim: int = 24, spread: float = 1.0):
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(123).normal(size=(classes, dim)) * 1.5
    y = np.repeat(np.arange(classes), n_per_class)
    x = centers[y] + rng.normal(scale=spread, size=(len(y), dim))
    return x.astype(np.float32), np.array([f"class{i}" for i in y])


def test_probe_beats_chance_on_separable_features():
    train_x, train_y = blobs(30, seed=0)
    val_x, val_y = blobs(10, seed=1)
    test_x, test_y = blobs(25, seed=2)
    probe = fit_linear_probe(train_x, train_y, val_x, val_y)
    assert probe.score(test_x, test_y) > 0.9  # chance is 0.25
    assert 1e-6 <= probe.C <= 1e6 and len(probe.visited) <= 15
    assert probe.C == max(probe.visited, key=lambda cs: (cs[1], -cs[0]))[0]
    assert probe.model.max_iter == 1000 and probe.model.solver == "lbfgs"
    # refitted on train + validation
    assert probe.model.n_features_in_ == 24 and sum(probe.model.coef_.shape) > 0
    proba = probe.predict_proba(test_x)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)
    assert (probe.classes[proba.argmax(1)] == probe.predict(test_x)).all()


def test_sample_shots_is_seeded_and_balanced():
    labels = np.array(["a"] * 10 + ["b"] * 7)
    idx = sample_shots(labels, 4, seed=3)
    assert (np.unique(labels[idx], return_counts=True)[1] == 4).all()
    np.testing.assert_array_equal(idx, sample_shots(labels, 4, seed=3))
    assert not np.array_equal(idx, sample_shots(labels, 4, seed=4))


def test_few_shot_table():
    pool_x, pool_y = blobs(20, seed=0, spread=2.0)
    test_x, test_y = blobs(25, seed=2, spread=2.0)
    table = few_shot(pool_x, pool_y, shots=(1, 2, 4, 8, 32), seeds=(0, 1, 2), test_x=test_x, test_y=test_y)
    assert table.shots.tolist() == [1, 2, 4, 8]  # 32 > the 20 examples per class: left out
    assert (table.seeds == 3).all() and (table["std"] >= 0).all()
    assert table["mean"].min() > 0.25 and table["mean"].iloc[-1] > table["mean"].iloc[0]
    for row in table.itertuples():
        assert row.mean == pytest.approx(np.mean(row.accuracies))
    fixed = few_shot(pool_x, pool_y, shots=(1, 20), seeds=(0,), test_x=test_x, test_y=test_y, C=1.0)
    assert fixed.shots.tolist() == [1, 20]
    pd.testing.assert_frame_equal(table, few_shot(pool_x, pool_y, shots=(1, 2, 4, 8, 32), seeds=(0, 1, 2),
                                                  test_x=test_x, test_y=test_y))


def test_effective_shots_interpolates_in_log_space():
    table = pd.DataFrame(dict(shots=[1, 2, 4, 8, 16], mean=[0.2, 0.3, 0.5, 0.6, 0.7]))
    assert effective_shots(0.4, table) == pytest.approx(2 ** 1.5)
    assert effective_shots(0.5, table) == pytest.approx(4.0)
    assert effective_shots(0.1, table) == 1.0
    assert effective_shots(0.9, table) is None
