"""Improving a zero-shot classifier from a few labelled examples, with the zero-shot weights as the prior.

The head is an interpolation in embedding space between the zero-shot class weights (the class-name
prompt ensembles) and the labelled examples' class prototypes (the normalised mean of a class's example
embeddings): w_c(a) = normalize((1 - a) * zeroshot_c + a * prototype_c); a class without examples keeps
its zero-shot weight. a = 0 is the zero-shot classifier, a = 1 a nearest-prototype few-shot classifier.
The interpolation a is chosen by stratified k-fold cross-validation on the examples (accuracy, then the
mean log-probability of the true class; ties go to the smaller a, i.e. toward zero-shot). The paper's
observation (section 3.2.5) is why: a few examples combined naively can do worse than zero-shot.

`improve` also holds out a stratified quarter of the examples, measures zero-shot and the head on them
(Wilson intervals), and keeps the zero-shot weights, saying so, when the head is worse there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cliplab.engine.audit.stats import wilson
from cliplab.engine.errors import CliplabError
from cliplab.engine.labelling import probabilities
from cliplab.engine.probe import sample_shots

ALPHAS = tuple(round(a, 2) for a in np.linspace(0.0, 1.0, 11))
HOLDOUT_EVERY = 4  # every 4th example of a class (with at least 2) is held out


def _normalize(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def prototypes(zeroshot: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(prototypes [C, d], which classes have examples [C] bool): the normalised mean example of each class;
    a class without examples gets its zero-shot weight."""
    sums = np.zeros(zeroshot.shape, np.float64)
    np.add.at(sums, y, x.astype(np.float64))
    have = np.bincount(y, minlength=len(zeroshot)) > 0
    return np.where(have[:, None], _normalize(sums), zeroshot).astype(np.float32), have


def interpolate(zeroshot: np.ndarray, x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """The head's weights at interpolation alpha (see the module docstring)."""
    if alpha == 0.0 or not len(y):
        return np.asarray(zeroshot, np.float32).copy()
    proto, have = prototypes(zeroshot, x, y)
    mixed = (1.0 - alpha) * zeroshot + alpha * proto
    return np.where(have[:, None], _normalize(mixed), zeroshot).astype(np.float32)


def folds_of(y: np.ndarray, folds: int) -> np.ndarray:
    """A fold number per example, dealt class by class in turn, so every fold holds every class it can."""
    assignment = np.zeros(len(y), np.int64)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        assignment[members] = np.arange(len(members)) % folds
    return assignment


@dataclass(frozen=True)
class Choice:
    alpha: float
    scores: list[tuple[float, float, float]]  # (alpha, cross-validated accuracy, mean log-probability)


def choose_alpha(zeroshot: np.ndarray, scale: float, x: np.ndarray, y: np.ndarray, folds: int = 5,
                 alphas: Sequence[float] = ALPHAS) -> Choice:
    """The interpolation with the best cross-validated accuracy (then log-probability; ties: smaller alpha)."""
    if len(y) < 2:
        return Choice(0.0, [(0.0, float("nan"), float("nan"))])
    fold = folds_of(y, max(2, min(folds, len(y))))
    correct = np.zeros(len(alphas))
    loglik = np.zeros(len(alphas))
    for f in np.unique(fold):
        train, test = fold != f, fold == f
        for i, alpha in enumerate(alphas):
            p = probabilities(interpolate(zeroshot, x[train], y[train], alpha), scale, x[test])
            correct[i] += float((p.argmax(axis=1) == y[test]).sum())
            loglik[i] += float(np.log(np.maximum(p[np.arange(len(p)), y[test]], 1e-30)).sum())
    accuracy, meanlog = correct / len(y), loglik / len(y)
    best = max(range(len(alphas)), key=lambda i: (round(accuracy[i], 9), round(meanlog[i], 6), -alphas[i]))
    return Choice(float(alphas[best]), [(float(a), float(s), float(m)) for a, s, m in zip(alphas, accuracy, meanlog)])


def fit_head(zeroshot: np.ndarray, scale: float, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, Choice]:
    """(weights, choice): the head at the cross-validated interpolation, fitted on all of (x, y)."""
    choice = choose_alpha(zeroshot, scale, x, y)
    return interpolate(zeroshot, x, y, choice.alpha), choice


@dataclass(frozen=True)
class Accuracy:
    correct: int
    n: int

    @property
    def interval(self) -> tuple[float, float, float]:
        """(accuracy, lower, upper): Wilson's 95% interval."""
        return wilson(self.correct, self.n)

    def text(self) -> str:
        p, lo, hi = self.interval
        return "-" if self.n == 0 else f"{100 * p:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] ({self.correct}/{self.n})"


@dataclass
class Improvement:
    weights: np.ndarray  # [C, d]: the head, or the zero-shot weights when it fell back
    alpha: float  # the interpolation kept (0: the zero-shot weights)
    zeroshot: Accuracy  # on the held-out examples
    head: Accuracy  # the head fitted without them, on them
    fallback: bool  # the examples did not help: the zero-shot weights are kept
    examples: int
    held_out: int
    scores: list[tuple[float, float, float]] = field(default_factory=list)
    without_examples: list[str] = field(default_factory=list)  # classes that keep their zero-shot weight

    @property
    def message(self) -> str:
        return self._verdict() + (f" {len(self.without_examples)} class(es) have no labelled example and keep "
                                  f"their zero-shot weights: {', '.join(self.without_examples[:5])}"
                                  + (" ..." if len(self.without_examples) > 5 else "") + "."
                                  if self.without_examples else "")

    def _verdict(self) -> str:
        if self.fallback:
            return (f"The {self.examples} labelled examples did not improve on zero-shot on the {self.held_out} "
                    f"held out (zero-shot {self.zeroshot.text()}, improved head {self.head.text()}), so the "
                    "zero-shot weights are kept.")
        return (f"Improved from {self.examples} labelled examples (interpolation {self.alpha:g} toward them, chosen "
                f"by cross-validation): on the {self.held_out} held out, zero-shot {self.zeroshot.text()}, "
                f"improved head {self.head.text()}.")


def held_out_mask(y: np.ndarray) -> np.ndarray:
    """Every HOLDOUT_EVERY-th example of each class with at least two (a class's first example always trains)."""
    mask = np.zeros(len(y), bool)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        if len(members) >= 2:
            mask[members[1::HOLDOUT_EVERY]] = True
    return mask


def improve(zeroshot: np.ndarray, scale: float, x: np.ndarray, y: np.ndarray, classnames: Sequence[str]) -> Improvement:
    """The head from labelled examples (x: L2-normalised embeddings, y: class indices), measured on a held-out
    part and kept only when it is not worse there than zero-shot; then refitted on every example."""
    y = np.asarray(y, np.int64)
    if not len(y):
        raise CliplabError("There are no labelled examples yet: confirm or correct a few labels first.")
    missing = [classnames[c] for c in range(len(classnames)) if not np.any(y == c)]
    if len(np.unique(y)) < 2:
        raise CliplabError(f"The labelled examples are all of one class ({classnames[int(y[0])]!r}); label photos of "
                           "at least two classes first.")
    held = held_out_mask(y)
    if not held.any():
        raise CliplabError("Too few labelled examples to hold any out for a fair comparison: label at least two "
                           "photos of some class.")
    zs_pred = probabilities(zeroshot, scale, x[held]).argmax(axis=1)
    head_weights, _choice = fit_head(zeroshot, scale, x[~held], y[~held])
    head_pred = probabilities(head_weights, scale, x[held]).argmax(axis=1)
    zs_acc = Accuracy(int((zs_pred == y[held]).sum()), int(held.sum()))
    head_acc = Accuracy(int((head_pred == y[held]).sum()), int(held.sum()))
    final, choice = fit_head(zeroshot, scale, x, y)
    fallback = head_acc.correct < zs_acc.correct or choice.alpha == 0.0
    weights = np.asarray(zeroshot, np.float32).copy() if fallback else final
    return Improvement(weights, 0.0 if fallback else choice.alpha, zs_acc, head_acc, fallback, len(y),
                       int(held.sum()), choice.scores, missing)


def few_shot_heads(zeroshot: np.ndarray, scale: float, features: np.ndarray, labels: np.ndarray,
                   shots: Sequence[int], seeds: Sequence[int], test_x: np.ndarray, test_y: np.ndarray) -> pd.DataFrame:
    """The improved head at k examples per class (figure 6's protocol, beside engine.probe.few_shot: the same
    seeded draws of k examples, so the two are compared on the same examples), on L2-normalised joint embeddings
    and integer labels. One row per k: shots, mean, std (over seeds), seeds, accuracies, alphas (the chosen
    interpolations); k larger than the smallest class is left out."""
    labels, test_y = np.asarray(labels, np.int64), np.asarray(test_y, np.int64)
    smallest = min(int(np.sum(labels == c)) for c in np.unique(labels))
    rows = []
    for k in shots:
        if k > smallest:
            continue
        accuracies, alphas = [], []
        for seed in seeds:
            chosen = sample_shots(labels, k, seed)
            weights, choice = fit_head(zeroshot, scale, features[chosen], labels[chosen])
            accuracies.append(float(np.mean(probabilities(weights, scale, test_x).argmax(axis=1) == test_y)))
            alphas.append(choice.alpha)
        rows.append(dict(shots=k, mean=float(np.mean(accuracies)), std=float(np.std(accuracies)),
                         seeds=len(accuracies), accuracies=accuracies, alphas=alphas))
    return pd.DataFrame(rows, columns=["shots", "mean", "std", "seeds", "accuracies", "alphas"])
