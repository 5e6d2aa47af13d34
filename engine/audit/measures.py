"""The audit's measurements, from arrays: classifier outputs and group labels in, typed cells out.

Nothing here touches a model, so tests can inject outputs whose tables are known in advance. Every
row carries its group size `n` and a `small` flag (n < stats.MIN_GROUP_N).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from cliplab.engine.audit import stats
from cliplab.engine.audit.results import (
    ALL,
    AccuracyCell,
    Association,
    Disparity,
    Group,
    Grouping,
    LabelSetChange,
    Partition,
    PromptSpread,
    ShareCell,
    SweepPoint,
    Transition,
    groupings,
)

__all__ = ["ALL", "accuracy_by_group", "accuracy_tables", "by_group", "category_shares", "crossfit_probe", "disparities", "groupings",
           "label_set_diff", "prompt_spread", "small_cell_warnings", "threshold_association", "threshold_sweep",
           "transitions"]


def _proportion(count: int, n: int) -> dict:
    share, low, high = stats.wilson(count, n)
    return {"n": n, "count": count, "share": share, "low": low, "high": high, "small": n < stats.MIN_GROUP_N}


def by_group(outcomes: dict[str, np.ndarray], partition: Partition) -> dict[str, dict[str, tuple[int, int]]]:
    """Per outcome (a boolean per image) and group: (count of True, group size), by fairlearn's MetricFrame
    (one frame for all outcomes). Groups of the partition with no image get (0, 0)."""
    from fairlearn.metrics import MetricFrame, count

    if not partition.groups:
        return {name: {} for name in outcomes}
    labels = np.asarray(partition.labels, dtype=object)
    if labels.size == 0:
        return {name: {g.name: (0, 0) for g in partition.groups} for name in outcomes}
    truth = np.zeros(labels.size, dtype=int)  # MetricFrame wants (y_true, y_pred): the outcomes ride along
    frame = MetricFrame(metrics={"n": count, **{f"k:{name}": _counter(values) for name, values in outcomes.items()}},
                        y_true=truth, y_pred=np.arange(labels.size), sensitive_features=pd.Series(labels, name="g"))
    table = frame.by_group
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for name in outcomes:
        out[name] = {g.name: ((int(table.at[g.name, f"k:{name}"]), int(table.at[g.name, "n"]))
                              if g.name in table.index else (0, 0)) for g in partition.groups}
    return out


def _counter(values: np.ndarray):
    """A MetricFrame metric counting the True outcomes of the images it is given (y_pred carries their index)."""
    values = np.asarray(values, bool)

    def k(y_true, y_pred) -> int:
        return int(values[np.asarray(y_pred, dtype=int)].sum())
    return k


def category_shares(top1_categories: np.ndarray, partition: Partition, categories: Sequence[str],
                    combined: dict[str, Sequence[str]] | None = None) -> list[ShareCell]:
    """Share of each group's images whose top-1 class is in each category (tables 6 and 7).

    combined adds pooled categories, e.g. {"non-human + crime": ["non-human", "crime"]}. Counted
    directly (a share table is called for every label set, prompt variant and intersection, where
    MetricFrame's per-call cost would add seconds); a test checks it equals MetricFrame's selection rate.
    """
    top1_categories = np.asarray(top1_categories, dtype=object)
    members = {c: [c] for c in categories} | dict(combined or {})
    rows = []
    for group in partition.groups:
        mask = partition.labels == group.name
        n = int(mask.sum())
        for name, parts in members.items():
            count = int(np.isin(top1_categories[mask], list(parts)).sum())
            rows.append(ShareCell(group=group, category=name, **_proportion(count, n)))
    return rows


def accuracy_by_group(predicted: np.ndarray, truth: np.ndarray, partition: Partition, method: str,
                      attribute: str) -> list[AccuracyCell]:
    """Per-group accuracy with a Wilson interval (tables 3-5), by MetricFrame."""
    return accuracy_tables({(method, attribute): predicted}, {attribute: truth}, {"one": partition})


def accuracy_tables(predictions: dict[tuple[str, str], np.ndarray], truths: dict[str, np.ndarray],
                    partitions: dict) -> list[AccuracyCell]:
    """Per-group accuracy of every (method, attribute) prediction over every partition, with Wilson
    intervals: one MetricFrame per partition for all predictions; rows by prediction, then partition."""
    if not predictions:
        return []
    counts = {}
    for key, partition in partitions.items():
        correct = {f"{m}|{a}": np.asarray(p, dtype=object) == np.asarray(truths[a], dtype=object)
                   for (m, a), p in predictions.items()}
        counts[key] = by_group(correct, partition)
    rows = []
    for method, attribute in predictions:
        for key, partition in partitions.items():
            for group in partition.groups:
                row = _proportion(*counts[key][f"{method}|{attribute}"][group.name])
                rows.append(AccuracyCell(method=method, attribute=attribute, group=group,
                                         accuracy=row.pop("share"), **row))
    return rows


def crossfit_probe(features: np.ndarray, truth: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Out-of-fold predictions of a logistic-regression probe on the features.

    Each fold is predicted by a probe fitted on the other folds (C chosen on a seeded 20% of them),
    so every image is scored by a probe that never saw it.
    """
    from threadpoolctl import threadpool_limits

    from cliplab.engine.probe import fit_linear_probe

    truth = np.asarray(truth, dtype=object).astype(str)
    rng = np.random.default_rng(seed)
    fold_of = rng.permutation(np.arange(len(truth)) % folds)
    predicted = np.empty(len(truth), dtype=object)
    with threadpool_limits(1):  # problems this small only make BLAS threads spin (measured ~5x slower)
        for fold in range(folds):
            test = fold_of == fold
            train = np.flatnonzero(~test)
            val_mask = rng.random(train.size) < 0.2
            fit_idx, val_idx = train[~val_mask], train[val_mask]
            probe = fit_linear_probe(features[fit_idx], truth[fit_idx], features[val_idx], truth[val_idx])
            predicted[test] = probe.predict(features[test])
    return predicted


def label_set_diff(in_focus_a: np.ndarray, in_focus_b: np.ndarray, partition: Partition, n_boot: int,
                   seed: int) -> list[LabelSetChange]:
    """The same images under label sets A and B: per group, the share in the focus categories under
    each, the change (B - A) with a paired bootstrap interval, and McNemar's test of the change."""
    in_focus_a, in_focus_b = np.asarray(in_focus_a, bool), np.asarray(in_focus_b, bool)
    rows = []
    for index, group in enumerate(partition.groups):
        mask = partition.labels == group.name
        a, b = in_focus_a[mask], in_focus_b[mask]
        n = int(mask.sum())
        test = stats.mcnemar(a, b)
        low, high = stats.bootstrap_paired_change(a, b, n_boot, seed + index)
        share_a = float(a.mean()) if n else math.nan
        share_b = float(b.mean()) if n else math.nan
        rows.append(LabelSetChange(group=group, n=n, share_a=share_a, share_b=share_b, change=share_b - share_a,
                                   change_low=low, change_high=high, left_focus=test["b"], entered_focus=test["c"],
                                   p=test["p"], test=f"mcnemar-{test['method']}", small=n < stats.MIN_GROUP_N))
    return rows


def transitions(from_values: np.ndarray, to_values: np.ndarray, partition: Partition) -> list[Transition]:
    """Where each group's images moved: counts of (value under A -> value under B), non-zero only."""
    from_values, to_values = np.asarray(from_values, dtype=object), np.asarray(to_values, dtype=object)
    rows = []
    for group in partition.groups:
        mask = partition.labels == group.name
        pairs, counts = np.unique(np.stack([from_values[mask], to_values[mask]]).astype(str), axis=1,
                                  return_counts=True)
        for (source, target), count in zip(pairs.T, counts):
            rows.append(Transition(group=group, source=str(source), target=str(target), count=int(count),
                                   n=int(mask.sum())))
    return rows


def threshold_association(probs: np.ndarray, classnames: Sequence[str], class_categories: Sequence[str],
                          partition: Partition, threshold: float, min_count: int) -> tuple[list[Association], list[str]]:
    """Labels as multi-label at a threshold, and which labels go with which group (figure 18).

    For each label given to at least min_count images: a 2x2 table (this group vs the rest, label vs
    no label), tested by stats.association_test, with an odds ratio. With two groups the one table
    per label is tested once (first group vs second). p-values are adjusted (BH and Holm) over all
    tests of this call. Returns (rows, labels left out by the minimum count).
    """
    given = np.asarray(probs) >= threshold
    totals = given.sum(axis=0)
    kept = [j for j in range(len(classnames)) if totals[j] >= min_count]
    filtered = [classnames[j] for j in range(len(classnames)) if totals[j] < min_count]
    order = partition.groups
    rest = order[1].name if len(order) == 2 else "rest"
    rows = []
    for group in order[:1] if len(order) == 2 else order:
        mask = partition.labels == group.name
        for j in kept:
            rows.append(_association(given[mask, j], given[~mask, j], group, rest, threshold, classnames[j],
                                     class_categories[j]))
    for method in ("bh", "holm"):
        adjusted = stats.adjust_pvalues([r.p for r in rows], method)
        for row, value in zip(rows, adjusted):
            setattr(row, f"p_{method}", float(value))
    rows.sort(key=lambda r: (r.p, r.label))
    return rows, filtered


def _association(in_group: np.ndarray, in_rest: np.ndarray, group: Group, rest: str, threshold: float, label: str,
                 category: str) -> Association:
    """One label's 2x2 table (given in the group / in the rest), its test and its odds ratio."""
    n_group, n_rest = in_group.size, in_rest.size
    a, c = int(in_group.sum()), int(in_rest.sum())
    p, statistic, test = stats.association_test(a, n_group - a, c, n_rest - c)
    ratio, low, high, haldane = stats.odds_ratio(a, n_group - a, c, n_rest - c)
    share_g = a / n_group if n_group else math.nan
    share_r = c / n_rest if n_rest else math.nan
    more = group.name if share_g > share_r else rest if share_r > share_g else "neither"
    return Association(group=group, threshold=threshold, label=label, category=category, versus=rest,
                       count_group=a, n_group=n_group, share_group=share_g, count_rest=c, n_rest=n_rest,
                       share_rest=share_r, odds_ratio=ratio, or_low=low, or_high=high, haldane=haldane, test=test,
                       statistic=statistic, p=p, more_often_in=more, small=min(n_group, n_rest) < stats.MIN_GROUP_N)


def threshold_sweep(probs: np.ndarray, class_categories: Sequence[str], partition: Partition,
                    thresholds: Sequence[float], categories: Sequence[str]) -> list[SweepPoint]:
    """Per threshold and group: the share of images given at least one label of each category, and
    the mean number of labels per image (the curves of the threshold experiment)."""
    probs = np.asarray(probs)
    class_categories = np.asarray(class_categories, dtype=object)
    rows = []
    for threshold in thresholds:
        given = probs >= threshold
        for group in partition.groups:
            mask = partition.labels == group.name
            n = int(mask.sum())
            mean_labels = float(given[mask].sum(axis=1).mean()) if n else math.nan
            for category in categories:
                count = int(given[mask][:, class_categories == category].any(axis=1).sum())
                rows.append(SweepPoint(group=group, threshold=float(threshold), category=category,
                                       mean_labels=mean_labels, **_proportion(count, n)))
    return rows


def prompt_spread(shares_by_variant: dict[str, list[ShareCell]]) -> list[PromptSpread]:
    """The same category-share table under several prompt variants: per (grouping, group, category),
    each variant's share and their min, max, mean, standard deviation and spread (max - min)."""
    table: dict[tuple, PromptSpread] = {}
    for variant, rows in shares_by_variant.items():
        for row in rows:
            entry = table.setdefault((row.group, row.category), PromptSpread(
                group=row.group, category=row.category, n=row.n, small=row.small, shares={}))
            entry.shares[variant] = row.share
    for entry in table.values():
        values = np.array([v for v in entry.shares.values() if not math.isnan(v)])
        if values.size:
            entry.min, entry.max, entry.mean = float(values.min()), float(values.max()), float(values.mean())
            entry.sd = float(values.std(ddof=1)) if values.size > 1 else 0.0
            entry.spread = float(values.max() - values.min())
    return list(table.values())


def disparities(rows: Sequence[ShareCell] | Sequence[AccuracyCell], value: str = "share", n_boot: int = 0,
                seed: int = 0, higher_is_worse: Callable[[str], bool] = lambda category: False) -> list[Disparity]:
    """Per (grouping, category): the groups with the highest and lowest value, the difference
    (max - min) and the ratio (min / max), with the direction in words; the worst group (by
    higher_is_worse(category): a harm share is worst when highest, an accuracy when lowest), its
    own interval and its gap to the best group; bootstrap intervals of the difference and ratio
    (n_boot resamples, seed + the row's index, recorded). Small groups take part but are named when
    they are an extreme. Rows of accuracy (no category) are keyed by grouping alone."""
    by_key: dict[tuple[Grouping, str], list] = {}
    for row in rows:
        if not row.grouping.is_all and not math.isnan(getattr(row, value)):
            by_key.setdefault((row.grouping, getattr(row, "category", "")), []).append(row)
    out = []
    for (grouping, category), members in by_key.items():
        if len(members) < 2:
            continue
        high = max(members, key=lambda r: getattr(r, value))
        low = min(members, key=lambda r: getattr(r, value))
        top, bottom = getattr(high, value), getattr(low, value)
        small = list(dict.fromkeys(r.group.name for r in (high, low) if r.small))  # once, even when high is low
        what = f"{category} " if category else ""
        direction = (f"{what}{value} is highest for {high.group} ({top:.1%}, n={high.n}) "
                     f"and lowest for {low.group} ({bottom:.1%}, n={low.n})")
        if top == bottom:
            direction = f"{what}{value} is the same for every group ({top:.1%})"
        worst, best = (high, low) if higher_is_worse(category) else (low, high)
        row_seed = seed + len(out)
        d_low, d_high, r_low, r_high = stats.bootstrap_gap((high.count, high.n), (low.count, low.n), n_boot, row_seed)
        single = [r.group.name for r in (high, low) if r.n < 2]
        note = (f"not estimated: {', '.join(dict.fromkeys(single))} has a single image, so there is no "
                f"variation to resample" if single and n_boot else None)
        out.append(Disparity(grouping=grouping, category=category, highest=high.group.name, highest_value=top,
                             lowest=low.group.name, lowest_value=bottom, difference=top - bottom,
                             ratio=bottom / top if top > 0 else math.nan, small_extremes=small, direction=direction,
                             worst=worst.group.name, worst_value=getattr(worst, value), worst_low=worst.low,
                             worst_high=worst.high, worst_n=worst.n, best=best.group.name,
                             best_value=getattr(best, value), gap=top - bottom, difference_low=d_low,
                             difference_high=d_high, ratio_low=r_low, ratio_high=r_high,
                             bootstrap=n_boot or None, seed=row_seed if n_boot else None, interval_note=note))
    return out


def small_cell_warnings(rows: Sequence[ShareCell], what: str) -> list[str]:
    """One sentence per small group of a table (deduplicated by group)."""
    seen, out = set(), []
    for row in rows:
        if row.small and row.group not in seen:
            seen.add(row.group)
            if row.n == 1:  # said as such: a share of one image is 0% or 100% whatever the truth
                out.append(f"{what}: group {row.group.name!r} ({row.grouping.name}) has a single image: each of "
                           f"its shares is 0% or 100% by construction, its interval spans {row.low:.0%}-"
                           f"{row.high:.0%}, and no gap involving it is estimated.")
                continue
            out.append(f"{what}: group {row.group.name!r} ({row.grouping.name}) has only n={row.n} images "
                       f"(< {stats.MIN_GROUP_N}); its figures have wide intervals.")
    return out
