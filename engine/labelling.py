"""Labelling stored embeddings with a classifier: top labels per embedding, abstention thresholds.

A classifier here is its class weights [C, d] (rows L2-normalised: zero-shot ensembles or an improved
head, engine.heads) and a logit scale; probabilities are the softmax of the scaled cosine similarity,
as engine.zeroshot.Classifier computes them. `top_labels` is the one computation behind a library's
applied labels, the `cliplab classify --classifier FILE` path and the exported file's loader, so they
agree to the bit on the same vectors: chunked float32 matrix products through numpy's BLAS (every core;
PyTorch's thread pool costs milliseconds per call on the small matrices of cross-validation), softmax and
k argmax passes for the top k per chunk, so memory stays bounded on any library size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHUNK = 16384  # embeddings per matrix product: [chunk, C] logits stay small for thousands of classes


@dataclass(frozen=True)
class TopLabels:
    """Per embedding: the indices of its k most probable classes (most probable first) and their probabilities."""
    indices: np.ndarray  # [n, k] int64
    probs: np.ndarray  # [n, k] float32

    @property
    def top1(self) -> np.ndarray:
        return self.probs[:, 0] if self.probs.shape[1] else np.zeros(len(self.probs), np.float32)

    @property
    def margin(self) -> np.ndarray:
        """The gap between the top two probabilities (small: the classifier is unsure between two classes)."""
        if self.probs.shape[1] < 2:
            return self.top1.copy()
        return self.probs[:, 0] - self.probs[:, 1]


def _softmax_chunk(weights: np.ndarray, scale: float, x: np.ndarray) -> np.ndarray:
    logits = np.float32(scale) * (np.ascontiguousarray(x, np.float32) @ weights.T)
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits


def probabilities(weights: np.ndarray, scale: float, vectors: np.ndarray) -> np.ndarray:
    """[n, C] float32 class probabilities of L2-normalised vectors (the same arithmetic as top_labels)."""
    w = np.ascontiguousarray(weights, np.float32)
    out = [_softmax_chunk(w, scale, vectors[start:start + CHUNK]) for start in range(0, len(vectors), CHUNK)]
    return np.concatenate(out) if out else np.zeros((0, len(weights)), np.float32)


def top_labels(weights: np.ndarray, scale: float, vectors: np.ndarray, k: int = 3) -> TopLabels:
    """The k most probable classes of each vector and their probabilities (k is cut to the class count; ties go
    to the lower class index). Meant for a few labels per photo: k passes over the probabilities."""
    w = np.ascontiguousarray(weights, np.float32)
    k = max(1, min(int(k), len(w)))
    indices = np.zeros((len(vectors), k), np.int64)
    probs = np.zeros((len(vectors), k), np.float32)
    for start in range(0, len(vectors), CHUNK):
        p = _softmax_chunk(w, scale, vectors[start:start + CHUNK])
        rows = np.arange(len(p))
        for rank in range(k):  # k passes of argmax (first maximum: ties go to the lower class): faster than a sort
            best = p.argmax(axis=1)
            indices[start + rows, rank] = best
            probs[start + rows, rank] = p[rows, best]
            p[rows, best] = -1.0
    return TopLabels(indices, probs)


# -- "none of these": abstaining below a threshold -------------------------------------------------

def suggest_threshold(top1: np.ndarray, classes: int) -> float:
    """A threshold on the top-1 probability from its distribution: Otsu's split of the histogram into an
    unsure and a confident group (the value that best separates the two), kept between chance (1/C) and
    0.95. With fewer than two distinct values there is nothing to split: chance."""
    chance = 1.0 / max(2, classes)
    top1 = np.asarray(top1, np.float64)
    if len(top1) < 2 or np.ptp(top1) < 1e-9:
        return round(chance, 3)
    counts, edges = np.histogram(top1, bins=100, range=(0.0, 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(counts * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2  # Otsu: between-class variance
    best = int(np.argmax(between))
    return round(float(min(0.95, max(chance, edges[best + 1]))), 3)


def unlabelled_counts(top1: np.ndarray, thresholds: np.ndarray | list[float]) -> list[tuple[float, int]]:
    """(threshold, how many embeddings it leaves unlabelled: top-1 probability below it) per threshold."""
    ordered = np.sort(np.asarray(top1, np.float64))
    return [(float(t), int(np.searchsorted(ordered, float(t), side="left"))) for t in thresholds]
