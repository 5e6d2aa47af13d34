"""Linear probes on image features (paper appendix A.3) and k-shot probes (figure 6).

Logistic regression, scikit-learn L-BFGS, at most 1000 iterations; the inverse regularisation
strength C comes from the paper's parametric binary search on a validation split, and the final
probe is refitted on train + validation.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from cliplab.engine.errors import CliplabError

STEPS_PER_DECADE = 8  # the search's final resolution: 96 log steps over 1e-6..1e6


def search_regularization(score_fn: Callable[[float], float], low: float = 1e-6,
                          high: float = 1e6) -> tuple[float, list[tuple[float, float]]]:
    """The paper's parametric binary search for the best C (higher score is better).

    Positions are counted in eighths of a decade. Start at every second decade from low to high
    (1e-6, 1e-4, ..., 1e6), spacing 2 decades; then repeatedly halve the spacing and evaluate the
    two neighbours of the best point so far at that spacing (those inside the range, not yet
    visited), until the spacing is 1/8 decade. Ties go to the smaller C (stronger regularisation).
    Returns (best C, [(C, score), ...] in the order visited)."""
    lo, hi = round(STEPS_PER_DECADE * math.log10(low)), round(STEPS_PER_DECADE * math.log10(high))
    step = 2 * STEPS_PER_DECADE
    scores: dict[int, float] = {}
    visited: list[tuple[float, float]] = []

    def visit(position: int) -> None:
        if lo <= position <= hi and position not in scores:
            c = 10.0 ** (position / STEPS_PER_DECADE)
            scores[position] = float(score_fn(c))
            visited.append((c, scores[position]))

    for position in range(lo, hi + 1, step):
        visit(position)
    visit(hi)  # a range that is not a whole number of 2-decade steps still includes its top
    while step > 1:
        step //= 2
        best = max(sorted(scores), key=lambda p: scores[p])  # first maximum = smallest C
        visit(best - step)
        visit(best + step)
    best = max(sorted(scores), key=lambda p: scores[p])
    return 10.0 ** (best / STEPS_PER_DECADE), visited


def _logistic(c: float) -> LogisticRegression:
    return LogisticRegression(C=c, solver="lbfgs", max_iter=1000)


def _fit(c: float, x: np.ndarray, y: np.ndarray) -> LogisticRegression:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # extreme C on separable data: expected
        return _logistic(c).fit(x, y)


@dataclass
class LinearProbe:
    model: LogisticRegression
    C: float
    visited: list[tuple[float, float]] = field(default_factory=list)  # (C, validation accuracy)

    @property
    def classes(self) -> np.ndarray:
        return self.model.classes_

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(x)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(x)

    def score(self, x: np.ndarray, y: Sequence) -> float:
        return float(self.model.score(x, np.asarray(y)))


def fit_linear_probe(train_x: np.ndarray, train_y: Sequence, val_x: np.ndarray, val_y: Sequence,
                     low: float = 1e-6, high: float = 1e6) -> LinearProbe:
    """C by search_regularization on validation accuracy, then a refit on train + validation."""
    train_y, val_y = np.asarray(train_y), np.asarray(val_y)
    if len(np.unique(train_y)) < 2:
        raise CliplabError("A linear probe needs training examples of at least two classes.")
    best_c, visited = search_regularization(lambda c: _fit(c, train_x, train_y).score(val_x, val_y), low, high)
    model = _fit(best_c, np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y]))
    return LinearProbe(model, best_c, visited)


def sample_shots(labels: Sequence, k: int, seed: int) -> np.ndarray:
    """Indices of k examples per class, drawn without replacement with a seeded generator."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False) for c in np.unique(labels)]
    return np.sort(np.concatenate(picked))


def few_shot(features: np.ndarray, labels: Sequence, shots: Sequence[int] = (1, 2, 4, 8, 16),
             seeds: Sequence[int] = (0, 1, 2), test_x: np.ndarray | None = None,
             test_y: Sequence | None = None, C: float | None = None) -> pd.DataFrame:
    """k-shot logistic-regression probes: for each k and seed, k training examples per class are
    drawn from (features, labels). C: fixed if given; otherwise searched on the labelled examples
    that were not drawn (so a k-shot probe here has seen more than k labels per class while tuning;
    set C to rule that out). Accuracy is measured on (test_x, test_y).
    Returns one row per k: shots, mean, std (over seeds, ddof=0), seeds, accuracies;
    k larger than the smallest class is left out."""
    if test_x is None or test_y is None:
        raise CliplabError("few_shot needs a held-out test set (test_x, test_y).")
    features, labels, test_y = np.asarray(features), np.asarray(labels), np.asarray(test_y)
    smallest = min(np.sum(labels == c) for c in np.unique(labels))
    rows = []
    for k in shots:
        if k > smallest or (k == smallest and C is None):  # the search needs left-over examples
            continue
        accuracies = []
        for seed in seeds:
            chosen = sample_shots(labels, k, seed)
            rest = np.setdiff1d(np.arange(len(labels)), chosen)
            c = C if C is not None else search_regularization(
                lambda c, chosen=chosen, rest=rest: _fit(c, features[chosen], labels[chosen]).score(
                    features[rest], labels[rest]))[0]
            accuracies.append(float(_fit(c, features[chosen], labels[chosen]).score(test_x, test_y)))
        rows.append(dict(shots=k, mean=float(np.mean(accuracies)), std=float(np.std(accuracies)),
                         seeds=len(accuracies), accuracies=accuracies))
    return pd.DataFrame(rows, columns=["shots", "mean", "std", "seeds", "accuracies"])


def effective_shots(zero_shot_accuracy: float, table: pd.DataFrame) -> float | None:
    """How many labelled examples per class a probe needs to match zero-shot accuracy, by the
    paper's log-linear interpolation of the k-shot curve (figure 7). The smallest k measured if
    that probe already matches it (an upper bound), None if no measured k reaches it."""
    if table.empty:
        return None
    shots, acc = table.shots.to_numpy(float), table["mean"].to_numpy(float)
    if acc[0] >= zero_shot_accuracy:
        return float(shots[0])
    for (k0, a0), (k1, a1) in zip(zip(shots, acc), zip(shots[1:], acc[1:])):
        if a1 >= zero_shot_accuracy > a0:
            t = (zero_shot_accuracy - a0) / (a1 - a0)
            return float(2 ** (math.log2(k0) + t * (math.log2(k1) - math.log2(k0))))
    return None
