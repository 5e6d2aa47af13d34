"""The audit statistics against independent computations (formulas, scipy, statsmodels)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.proportion import proportion_confint

from cliplab.engine.audit import stats


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (49, 1000), (700, 1000), (1, 1)])
def test_wilson_matches_statsmodels_and_formula(k, n):
    p, low, high = stats.wilson(k, n)
    ref_low, ref_high = proportion_confint(k, n, alpha=0.05, method="wilson")
    assert p == k / n
    assert low == pytest.approx(ref_low, abs=1e-12) and high == pytest.approx(ref_high, abs=1e-12)
    z = 1.959963984540054
    phat = k / n
    centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert low == pytest.approx(max(0, centre - half)) and high == pytest.approx(min(1, centre + half))


def test_wilson_empty_group():
    p, low, high = stats.wilson(0, 0)
    assert math.isnan(p) and (low, high) == (0.0, 1.0)


def test_association_uses_chi2_for_large_cells_and_fisher_for_small():
    p, statistic, method = stats.association_test(40, 60, 20, 80)
    chi2, ref_p, _, _ = sps.chi2_contingency([[40, 60], [20, 80]], correction=False)
    assert method == "chi2" and p == pytest.approx(ref_p) and statistic == pytest.approx(chi2)
    p, statistic, method = stats.association_test(3, 7, 12, 2)  # expected counts below 5
    assert method == "fisher" and p == pytest.approx(sps.fisher_exact([[3, 7], [12, 2]])[1])
    assert stats.association_test(0, 10, 0, 12)[2] == "none"  # a label that never occurs: no evidence


def test_odds_ratio_woolf_and_haldane():
    ratio, low, high, corrected = stats.odds_ratio(20, 80, 10, 90)
    assert not corrected and ratio == pytest.approx(20 * 90 / (80 * 10))
    se = math.sqrt(1 / 20 + 1 / 80 + 1 / 10 + 1 / 90)
    assert low == pytest.approx(ratio * math.exp(-1.959963984540054 * se))
    assert high == pytest.approx(ratio * math.exp(1.959963984540054 * se))
    ratio, low, high, corrected = stats.odds_ratio(0, 50, 5, 45)
    assert corrected and ratio == pytest.approx(0.5 * 45.5 / (50.5 * 5.5)) and low < ratio < high


def test_adjustments_match_hand_computation():
    p = np.array([0.01, 0.04, 0.03, 0.20])
    # Holm: sorted 0.01, 0.03, 0.04, 0.20 times 4, 3, 2, 1, running max, capped at 1.
    assert stats.adjust_pvalues(p, "holm") == pytest.approx([0.04, 0.09, 0.09, 0.20])
    # BH: sorted p * m / rank = 0.04, 0.06, 0.0533, 0.20, then the running min from the top.
    assert stats.adjust_pvalues(p, "bh") == pytest.approx([0.04, 0.0533333333, 0.0533333333, 0.20])
    assert stats.adjust_pvalues([], "bh").size == 0


@pytest.mark.parametrize("b,c", [(3, 9), (40, 20), (0, 0), (12, 12)])
def test_mcnemar_matches_statsmodels(b, c):
    before = np.array([True] * b + [False] * c + [True] * 7 + [False] * 11)
    after = np.array([False] * b + [True] * c + [True] * 7 + [False] * 11)
    result = stats.mcnemar(before, after)
    assert (result["b"], result["c"]) == (b, c)
    if b + c == 0:
        assert result["p"] == 1.0
        return
    exact = b + c < 25
    reference = sm_mcnemar([[7, b], [c, 11]], exact=exact, correction=True)
    assert result["p"] == pytest.approx(reference.pvalue)
    assert result["method"] == ("exact" if exact else "chi2-cc")


def test_bootstrap_interval_is_seeded_and_covers_the_change():
    rng = np.random.default_rng(1)
    before = rng.random(400) < 0.3
    after = before & (rng.random(400) < 0.5)
    low, high = stats.bootstrap_paired_change(before, after, n_boot=1000, seed=7)
    assert (low, high) == stats.bootstrap_paired_change(before, after, n_boot=1000, seed=7)
    change = after.mean() - before.mean()
    assert low < change < high < 0
