"""The statistics of an audit, independent of any model: intervals, tests, corrections.

Every function says which method it used, so that results can carry the method with the number.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

Z95 = 1.959963984540054
# Small-cell rules, stated in every result that uses them.
MIN_GROUP_N = 30  # a proportion from fewer images is flagged as unreliable
MIN_EXPECTED = 5  # a 2x2 table with an expected count below this is tested with Fisher's exact test
MCNEMAR_EXACT_BELOW = 25  # fewer discordant pairs than this: exact binomial McNemar

METHODS = {
    "interval": "Wilson score interval, 95%",
    "association": f"Pearson chi-square without continuity correction on the 2x2 table (group vs rest, "
                   f"label vs no label); Fisher's exact test (two-sided) when any expected count < {MIN_EXPECTED}",
    "multiple_testing": "Benjamini-Hochberg (false discovery rate) and Holm (family-wise error) adjusted "
                        "p-values over all tests of one threshold",
    "odds_ratio": "odds ratio with a Woolf (log) 95% interval; Haldane-Anscombe correction (+0.5 to every "
                  "cell) when a cell is zero",
    "paired": f"McNemar test on the discordant pairs: exact binomial when there are fewer than "
              f"{MCNEMAR_EXACT_BELOW}, else chi-square with continuity correction",
    "bootstrap": "paired percentile bootstrap (images resampled within the group), 95%",
    "small_cells": f"groups with n < {MIN_GROUP_N} are flagged; expected counts < {MIN_EXPECTED} switch to Fisher",
    "gaps": "per measure: the worst group (highest share of a focus category, lowest share of any other "
            "category, lowest accuracy), its gap to the best group, the difference (max - min) and ratio "
            "(min / max) with percentile bootstrap 95% intervals (images resampled within each group, the "
            "seed recorded in each row); not estimated when an extreme group has a single image",
    "by_group": "per-group tables computed with fairlearn's MetricFrame",
    "search_bias": "MaxSkew@K, MinSkew@K and NDKL (Geyik et al. 2019) of text-to-image retrieval over the "
                   "audited images, per neutral query and group column, against the groups' shares of the "
                   "whole set; percentile bootstrap 95% intervals (images resampled, seed recorded)",
}


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float, float]:
    """(proportion, lower, upper) of k successes in n; (nan, 0, 1) when n is 0."""
    if n == 0:
        return math.nan, 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return p, max(0.0, centre - half), min(1.0, centre + half)


def association_test(a: int, b: int, c: int, d: int) -> tuple[float, float | None, str]:
    """Two-sided test of the 2x2 table [[a, b], [c, d]]: (p, statistic, method).

    Chi-square when every expected count is >= MIN_EXPECTED, else Fisher's exact test. A table with
    an empty row or column carries no evidence: p = 1 and method 'none'.
    """
    table = np.array([[a, b], [c, d]], dtype=float)
    rows, cols, total = table.sum(1), table.sum(0), table.sum()
    if total == 0 or (rows == 0).any() or (cols == 0).any():
        return 1.0, None, "none"
    expected = np.outer(rows, cols) / total
    if (expected < MIN_EXPECTED).any():
        return float(sps.fisher_exact(table.astype(int))[1]), None, "fisher"
    statistic = float(((table - expected) ** 2 / expected).sum())
    return float(sps.chi2.sf(statistic, 1)), statistic, "chi2"


def odds_ratio(a: int, b: int, c: int, d: int, z: float = Z95) -> tuple[float, float, float, bool]:
    """Odds ratio (a*d)/(b*c) with a Woolf interval: (or, lower, upper, haldane_corrected)."""
    corrected = min(a, b, c, d) == 0
    if corrected:
        a, b, c, d = a + 0.5, b + 0.5, c + 0.5, d + 0.5
    log_or = math.log(a * d / (b * c))
    se = math.sqrt(1 / a + 1 / b + 1 / c + 1 / d)
    return math.exp(log_or), math.exp(log_or - z * se), math.exp(log_or + z * se), corrected


def adjust_pvalues(pvalues: list[float] | np.ndarray, method: str) -> np.ndarray:
    """Adjusted p-values: method 'bh' (Benjamini-Hochberg) or 'holm'."""
    pvalues = np.asarray(pvalues, dtype=float)
    if pvalues.size == 0:
        return pvalues
    name = {"bh": "fdr_bh", "holm": "holm"}[method]
    return multipletests(pvalues, method=name)[1]


def mcnemar(before: np.ndarray, after: np.ndarray) -> dict:
    """Paired test of two boolean outcomes on the same images.

    b = before only, c = after only. Exact two-sided binomial test on b of b+c when b+c < 25,
    else chi-square with continuity correction (|b-c|-1)^2/(b+c).
    """
    before, after = np.asarray(before, bool), np.asarray(after, bool)
    b = int((before & ~after).sum())
    c = int((~before & after).sum())
    if b + c == 0:
        return {"b": b, "c": c, "statistic": None, "p": 1.0, "method": "none"}
    if b + c < MCNEMAR_EXACT_BELOW:
        p = float(min(1.0, 2 * sps.binom.cdf(min(b, c), b + c, 0.5)))
        return {"b": b, "c": c, "statistic": None, "p": p, "method": "exact"}
    statistic = (abs(b - c) - 1) ** 2 / (b + c)
    return {"b": b, "c": c, "statistic": float(statistic), "p": float(sps.chi2.sf(statistic, 1)),
            "method": "chi2-cc"}


def bootstrap_paired_change(before: np.ndarray, after: np.ndarray, n_boot: int, seed: int,
                            level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of mean(after) - mean(before), resampling images (pairs kept together)."""
    before, after = np.asarray(before, float), np.asarray(after, float)
    n = before.size
    if n == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    diffs = after - before
    changes = np.empty(n_boot)
    for start in range(0, n_boot, 200):  # chunks keep memory flat for large groups
        index = rng.integers(0, n, size=(min(200, n_boot - start), n))
        changes[start:start + index.shape[0]] = diffs[index].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(changes, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_gap(high: tuple[int, int], low: tuple[int, int], n_boot: int, seed: int,
                  level: float = 0.95) -> tuple[float, float, float, float]:
    """Percentile intervals of the difference p_high - p_low and the ratio p_low / p_high of two
    groups' proportions (count, n): (difference low, high, ratio low, high).

    Resampling a group's n images with replacement draws its count from Binomial(n, count / n), so
    the groups are resampled independently that way. A group of fewer than two images has no
    sampling variation to resample: NaN, never a zero-width interval."""
    (k_high, n_high), (k_low, n_low) = high, low
    if min(n_high, n_low) < 2 or n_boot <= 0:
        return math.nan, math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    p_high = rng.binomial(n_high, k_high / n_high, n_boot) / n_high
    p_low = rng.binomial(n_low, k_low / n_low, n_boot) / n_low
    tail = (1 - level) / 2 * 100
    d_low, d_high = np.percentile(p_high - p_low, [tail, 100 - tail])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(p_high > 0, p_low / np.where(p_high > 0, p_high, 1), np.nan)
    ratios = ratios[~np.isnan(ratios)]
    r_low, r_high = np.percentile(ratios, [tail, 100 - tail]) if ratios.size else (math.nan, math.nan)
    return float(d_low), float(d_high), float(r_low), float(r_high)
