"""Search bias of text-to-image retrieval over a group-labelled image set (Geyik et al. 2019).

For a neutral query ("a photo of a doctor") the images are ranked by similarity to it; with p_K(a)
the share of group a among the top K and p(a) its share of the whole set (the desired distribution):

    Skew@K(a) = ln(p_K(a) / p(a));  MaxSkew@K = max_a Skew@K(a);  MinSkew@K = min_a Skew@K(a)
    NDKL = (1 / Z) * sum_{i=1..K} KL(D_i || D) / log2(i + 1),  Z = sum_{i=1..K} 1 / log2(i + 1)

where D_i is the groups' distribution among the top i and KL(P || Q) = sum_a P(a) ln(P(a) / Q(a))
(0 ln 0 = 0). A group absent from the top K has Skew -inf: MinSkew is then -inf and the group is
listed as absent, never smoothed into a finite number. Intervals: the images are resampled with
replacement (a seeded percentile bootstrap), the ranking and the figures recomputed each time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from cliplab.engine.audit.results import Grouping, Partition, SearchBias
from cliplab.engine.errors import CliplabError


def _codes(labels: np.ndarray, names: list[str]) -> np.ndarray:
    position = {name: i for i, name in enumerate(names)}
    return np.array([position[x] for x in labels], dtype=int)


def skews(top_codes: np.ndarray, desired: np.ndarray) -> np.ndarray:
    """Skew@K of every group: ln(share among top_codes / desired share); -inf for absent groups."""
    observed = np.bincount(top_codes, minlength=desired.size) / top_codes.size
    with np.errstate(divide="ignore"):
        return np.log(observed / desired)


def ndkl(ranked_codes: np.ndarray, desired: np.ndarray) -> float:
    """Normalised discounted KL divergence of the top-i group distributions (i = 1..K) from desired."""
    k = ranked_codes.size
    onehot = np.zeros((k, desired.size))
    onehot[np.arange(k), ranked_codes] = 1
    shares = np.cumsum(onehot, axis=0) / np.arange(1, k + 1)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(shares > 0, shares * np.log(shares / desired), 0.0)
    discount = 1 / np.log2(np.arange(2, k + 2))
    return float((terms.sum(axis=1) * discount).sum() / discount.sum())


def ranked(similarity: np.ndarray, k: int) -> np.ndarray:
    """The indices of the k most similar images, most similar first (equal similarities in image order);
    a partial sort, as the bootstrap ranks every resample."""
    top = np.argpartition(-similarity, k - 1)[:k] if k < similarity.size else np.arange(similarity.size)
    return top[np.lexsort((top, -similarity[top]))]


def _figures(similarity: np.ndarray, codes: np.ndarray, desired: np.ndarray, k: int) -> tuple[float, float, float]:
    """(MaxSkew, MinSkew, NDKL) of one query's similarities."""
    top = ranked(similarity, k)
    skew = skews(codes[top], desired)
    return float(skew.max()), float(skew.min()), ndkl(codes[top], desired)


def _interval(values: np.ndarray) -> tuple[float, float]:
    """Percentile 95% interval by order statistics (no interpolation, so -inf stays -inf)."""
    low, high = np.quantile(values, [0.025, 0.975], method="inverted_cdf")
    return float(low), float(high)


def search_bias(features: np.ndarray, query_features: np.ndarray, queries: Sequence[str],
                partitions: dict[Grouping, Partition], k: int, n_boot: int, seed: int) -> list[SearchBias]:
    """The figures of every query over every grouping, with bootstrap intervals.

    features: [n, d] normalised image embeddings; query_features: [q, d] normalised text embeddings
    of the queries, both from the same model."""
    n = features.shape[0]
    if not 0 < k <= n:
        raise CliplabError(f"Search bias needs K between 1 and the number of images ({n}), not {k}.")
    similarity = np.asarray(query_features, dtype=np.float64) @ np.asarray(features, dtype=np.float64).T
    rng = np.random.default_rng(seed)
    resamples = [rng.integers(0, n, size=n) for _ in range(n_boot)]
    rows = []
    for grouping, partition in partitions.items():
        names = [g.name for g in partition.groups]
        codes = _codes(partition.labels, names)
        desired = np.bincount(codes, minlength=len(names)) / n
        for q, query in enumerate(queries):
            max_skew, min_skew, divergence = _figures(similarity[q], codes, desired, k)
            boot = np.array([_figures(similarity[q][index], codes[index], desired, k) for index in resamples]) \
                if n_boot else np.full((1, 3), math.nan)
            top = ranked(similarity[q], k)
            skew = skews(codes[top], desired)
            top_counts = np.bincount(codes[top], minlength=len(names))
            rows.append(SearchBias(
                query=query, grouping=grouping, k=k, n=n, max_skew=max_skew, max_skew_group=names[int(skew.argmax())],
                max_skew_low=_interval(boot[:, 0])[0], max_skew_high=_interval(boot[:, 0])[1],
                min_skew=min_skew, min_skew_group=names[int(skew.argmin())],
                min_skew_low=_interval(boot[:, 1])[0], min_skew_high=_interval(boot[:, 1])[1],
                ndkl=divergence, ndkl_low=_interval(boot[:, 2])[0], ndkl_high=_interval(boot[:, 2])[1],
                top_shares={name: float(c / k) for name, c in zip(names, top_counts)},
                shares={name: float(s) for name, s in zip(names, desired)},
                absent=[name for name, c in zip(names, top_counts) if c == 0], bootstrap=n_boot, seed=seed,
                small=n / max(1, len(names)) < k))
    return rows
