"""The audit's measurements, from arrays: classifier outputs and group labels in, table rows out.

Nothing here touches a model, so tests can inject outputs whose tables are known in advance. Every
row carries its group size `n` and a `small` flag (n < stats.MIN_GROUP_N).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from cliplab.engine.audit import stats

ALL = "all"  # the grouping (and group) of the whole sample
SEP = " / "  # joins the values of an intersection, e.g. "Black / Male"


def groupings(groups: dict[str, np.ndarray], values: dict[str, list[str]],
              intersections: bool = True) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Grouping name -> (label per image, group order): 'all', each column, each pair of columns."""
    n = len(next(iter(groups.values()))) if groups else 0
    out = {ALL: (np.full(n, ALL, dtype=object), [ALL])}
    for column in groups:
        present = set(groups[column])
        out[column] = (groups[column], [v for v in values.get(column, sorted(present)) if v in present])
    if intersections:
        for a, b in itertools.combinations(groups, 2):
            labels = np.array([f"{x}{SEP}{y}" for x, y in zip(groups[a], groups[b])], dtype=object)
            present = set(labels)
            order = [f"{x}{SEP}{y}" for x in out[a][1] for y in out[b][1] if f"{x}{SEP}{y}" in present]
            out[f"{a} x {b}"] = (labels, order)
    return out


def _proportion_row(count: int, n: int) -> dict:
    share, low, high = stats.wilson(count, n)
    return {"n": n, "count": count, "share": share, "low": low, "high": high, "small": n < stats.MIN_GROUP_N}


def category_shares(top1_categories: np.ndarray, labels: np.ndarray, order: Sequence[str],
                    categories: Sequence[str], combined: dict[str, Sequence[str]] | None = None,
                    grouping: str = ALL) -> list[dict]:
    """Share of each group's images whose top-1 class is in each category (tables 6 and 7).

    combined adds pooled categories, e.g. {"non-human + crime": ["non-human", "crime"]}.
    """
    top1_categories, labels = np.asarray(top1_categories, dtype=object), np.asarray(labels, dtype=object)
    members = {c: [c] for c in categories} | dict(combined or {})
    rows = []
    for group in order:
        mask = labels == group
        n = int(mask.sum())
        for name, parts in members.items():
            count = int(np.isin(top1_categories[mask], list(parts)).sum())
            rows.append({"grouping": grouping, "group": group, "category": name, **_proportion_row(count, n)})
    return rows


def accuracy_by_group(predicted: np.ndarray, truth: np.ndarray, labels: np.ndarray, order: Sequence[str],
                      grouping: str = ALL) -> list[dict]:
    """Per-group accuracy with a Wilson interval (tables 3-5)."""
    correct = np.asarray(predicted, dtype=object) == np.asarray(truth, dtype=object)
    labels = np.asarray(labels, dtype=object)
    rows = []
    for group in order:
        mask = labels == group
        row = _proportion_row(int(correct[mask].sum()), int(mask.sum()))
        row["accuracy"] = row.pop("share")
        rows.append({"grouping": grouping, "group": group, **row})
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


def label_set_diff(in_focus_a: np.ndarray, in_focus_b: np.ndarray, labels: np.ndarray, order: Sequence[str],
                   n_boot: int, seed: int, grouping: str = ALL) -> list[dict]:
    """The same images under label sets A and B: per group, the share in the focus categories under
    each, the change (B - A) with a paired bootstrap interval, and McNemar's test of the change."""
    in_focus_a, in_focus_b = np.asarray(in_focus_a, bool), np.asarray(in_focus_b, bool)
    labels = np.asarray(labels, dtype=object)
    rows = []
    for index, group in enumerate(order):
        mask = labels == group
        a, b = in_focus_a[mask], in_focus_b[mask]
        n = int(mask.sum())
        test = stats.mcnemar(a, b)
        low, high = stats.bootstrap_paired_change(a, b, n_boot, seed + index)
        share_a = float(a.mean()) if n else math.nan
        share_b = float(b.mean()) if n else math.nan
        rows.append({"grouping": grouping, "group": group, "n": n, "share_a": share_a, "share_b": share_b,
                     "change": share_b - share_a, "change_low": low, "change_high": high,
                     "left_focus": test["b"], "entered_focus": test["c"], "p": test["p"],
                     "test": f"mcnemar-{test['method']}", "small": n < stats.MIN_GROUP_N})
    return rows


def transitions(from_values: np.ndarray, to_values: np.ndarray, labels: np.ndarray, order: Sequence[str],
                grouping: str = ALL) -> list[dict]:
    """Where each group's images moved: counts of (value under A -> value under B), non-zero only."""
    from_values, to_values = np.asarray(from_values, dtype=object), np.asarray(to_values, dtype=object)
    labels = np.asarray(labels, dtype=object)
    rows = []
    for group in order:
        mask = labels == group
        pairs, counts = np.unique(np.stack([from_values[mask], to_values[mask]]).astype(str), axis=1,
                                  return_counts=True)
        for (source, target), count in zip(pairs.T, counts):
            rows.append({"grouping": grouping, "group": group, "from": source, "to": target,
                         "count": int(count), "n": int(mask.sum())})
    return rows


def threshold_association(probs: np.ndarray, classnames: Sequence[str], class_categories: Sequence[str],
                          labels: np.ndarray, order: Sequence[str], threshold: float, min_count: int,
                          grouping: str) -> tuple[list[dict], list[str]]:
    """Labels as multi-label at a threshold, and which labels go with which group (figure 18).

    For each label given to at least min_count images: a 2x2 table (this group vs the rest, label vs
    no label), tested by stats.association_test, with an odds ratio. With two groups the one table
    per label is tested once (first group vs second). p-values are adjusted (BH and Holm) over all
    tests of this call. Returns (rows, labels left out by the minimum count).
    """
    given = np.asarray(probs) >= threshold
    labels = np.asarray(labels, dtype=object)
    totals = given.sum(axis=0)
    kept = [j for j in range(len(classnames)) if totals[j] >= min_count]
    filtered = [classnames[j] for j in range(len(classnames)) if totals[j] < min_count]
    tested_groups = order[:1] if len(order) == 2 else order
    rows = []
    for group in tested_groups:
        mask = labels == group
        n_group, n_rest = int(mask.sum()), int((~mask).sum())
        for j in kept:
            a = int(given[mask, j].sum())
            c = int(given[~mask, j].sum())
            p, statistic, test = stats.association_test(a, n_group - a, c, n_rest - c)
            ratio, low, high, haldane = stats.odds_ratio(a, n_group - a, c, n_rest - c)
            rest = order[1] if len(order) == 2 else "rest"
            share_g = a / n_group if n_group else math.nan
            share_r = c / n_rest if n_rest else math.nan
            rows.append({"grouping": grouping, "threshold": threshold, "label": classnames[j],
                         "category": class_categories[j], "group": group, "versus": rest,
                         "count_group": a, "n_group": n_group, "share_group": share_g,
                         "count_rest": c, "n_rest": n_rest, "share_rest": share_r,
                         "odds_ratio": ratio, "or_low": low, "or_high": high, "haldane": haldane,
                         "test": test, "statistic": statistic, "p": p,
                         "more_often_in": group if share_g > share_r else rest if share_r > share_g else "neither",
                         "small": min(n_group, n_rest) < stats.MIN_GROUP_N})
    for method in ("bh", "holm"):
        adjusted = stats.adjust_pvalues([r["p"] for r in rows], method)
        for row, value in zip(rows, adjusted):
            row[f"p_{method}"] = float(value)
    rows.sort(key=lambda r: (r["p"], r["label"]))
    return rows, filtered


def threshold_sweep(probs: np.ndarray, class_categories: Sequence[str], labels: np.ndarray,
                    order: Sequence[str], thresholds: Sequence[float], categories: Sequence[str],
                    grouping: str) -> list[dict]:
    """Per threshold and group: the share of images given at least one label of each category, and
    the mean number of labels per image (the curves of the threshold experiment)."""
    probs = np.asarray(probs)
    class_categories = np.asarray(class_categories, dtype=object)
    labels = np.asarray(labels, dtype=object)
    rows = []
    for threshold in thresholds:
        given = probs >= threshold
        for group in order:
            mask = labels == group
            n = int(mask.sum())
            mean_labels = float(given[mask].sum(axis=1).mean()) if n else math.nan
            for category in categories:
                count = int(given[mask][:, class_categories == category].any(axis=1).sum())
                rows.append({"grouping": grouping, "threshold": float(threshold), "group": group,
                             "category": category, "mean_labels": mean_labels, **_proportion_row(count, n)})
    return rows


def prompt_spread(shares_by_variant: dict[str, list[dict]]) -> list[dict]:
    """The same category-share table under several prompt variants: per (grouping, group, category),
    each variant's share and their min, max, mean, standard deviation and spread (max - min)."""
    table: dict[tuple, dict] = {}
    for variant, rows in shares_by_variant.items():
        for row in rows:
            key = (row["grouping"], row["group"], row["category"])
            entry = table.setdefault(key, {"grouping": key[0], "group": key[1], "category": key[2],
                                           "n": row["n"], "small": row["small"], "shares": {}})
            entry["shares"][variant] = row["share"]
    out = []
    for entry in table.values():
        values = np.array([v for v in entry["shares"].values() if not math.isnan(v)])
        if values.size:
            entry.update(min=float(values.min()), max=float(values.max()), mean=float(values.mean()),
                         sd=float(values.std(ddof=1)) if values.size > 1 else 0.0,
                         spread=float(values.max() - values.min()))
        out.append(entry)
    return out


def disparities(rows: list[dict], value: str = "share") -> list[dict]:
    """Per (grouping, category): the groups with the highest and lowest value, the difference
    (max - min) and the ratio (min / max), with the direction in words. Small groups take part but
    are named when they are an extreme."""
    by_key: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["grouping"] != ALL and not math.isnan(row[value]):
            by_key.setdefault((row["grouping"], row.get("category", "")), []).append(row)
    out = []
    for (grouping, category), members in by_key.items():
        if len(members) < 2:
            continue
        high = max(members, key=lambda r: r[value])
        low = min(members, key=lambda r: r[value])
        ratio = low[value] / high[value] if high[value] > 0 else math.nan
        small = list(dict.fromkeys(r["group"] for r in (high, low) if r["small"]))  # once, even when high is low
        what = f"{category} " if category else ""
        direction = (f"{what}{value} is highest for {high['group']} ({high[value]:.1%}, n={high['n']}) "
                     f"and lowest for {low['group']} ({low[value]:.1%}, n={low['n']})")
        if high[value] == low[value]:
            direction = f"{what}{value} is the same for every group ({high[value]:.1%})"
        out.append({"grouping": grouping, "category": category, "highest": high["group"], "highest_value": high[value],
                    "lowest": low["group"], "lowest_value": low[value], "difference": high[value] - low[value],
                    "ratio": ratio, "small_extremes": small, "direction": direction})
    return out


def small_cell_warnings(rows: list[dict], what: str) -> list[str]:
    """One sentence per small group of a table (deduplicated by grouping and group)."""
    seen, out = set(), []
    for row in rows:
        key = (row["grouping"], row["group"])
        if row.get("small") and key not in seen:
            seen.add(key)
            out.append(f"{what}: group {row['group']!r} ({row['grouping']}) has only n={row['n']} images "
                       f"(< {stats.MIN_GROUP_N}); its figures have wide intervals.")
    return out
