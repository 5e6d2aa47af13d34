"""Audit figures people can trust (issue 29 items 3-7): intervals on every gap, the worst group of every
measure, fairlearn's MetricFrame equal to our by-group tables, search bias equal to a hand computation,
DataComp-style worst-group accuracy on generated Dollar Street and GeoDE folders, bad inputs said clearly."""

from __future__ import annotations

import ast
import math

import numpy as np
import pandas as pd
import pytest

from cliplab.engine.audit import measures, stats
from cliplab.engine.audit.datasets import load_dataset
from cliplab.engine.audit.results import AuditOptions, Group, Grouping, Partition
from cliplab.engine.audit.runner import measure
from cliplab.engine.audit.search_bias import ndkl, search_bias, skews
from cliplab.engine.errors import CliplabError


def partition(labels: list[str], column: str = "g") -> Partition:
    grouping = Grouping((column,))
    return Partition(np.asarray(labels, dtype=object), [Group(grouping, (v,)) for v in dict.fromkeys(labels)])


def test_by_group_accuracy_worst_group_and_gap_equal_fairlearn():
    from fairlearn.metrics import MetricFrame
    from sklearn.metrics import accuracy_score

    rng = np.random.default_rng(3)
    groups = rng.choice(["low", "mid", "high"], size=300, p=[0.2, 0.3, 0.5])
    truth = rng.choice(["a", "b"], size=300)
    predicted = np.where(rng.random(300) < np.select([groups == "low", groups == "mid"], [0.55, 0.7], 0.9), truth,
                         np.where(truth == "a", "b", "a"))
    rows = measures.accuracy_by_group(predicted, truth, partition(list(groups)), "zero-shot", "label")
    frame = MetricFrame(metrics=accuracy_score, y_true=truth, y_pred=predicted, sensitive_features=groups)
    for row in rows:
        assert row.accuracy == pytest.approx(frame.by_group[row.group.name])
    (gap,) = measures.disparities(rows, "accuracy", n_boot=500, seed=7)
    assert gap.worst_value == pytest.approx(frame.group_min()) and gap.best_value == pytest.approx(frame.group_max())
    assert gap.gap == pytest.approx(frame.difference()) and gap.ratio == pytest.approx(frame.ratio())
    assert gap.worst == frame.by_group.idxmin() and gap.best == frame.by_group.idxmax()
    worst = next(r for r in rows if r.group.name == gap.worst)
    assert (gap.worst_low, gap.worst_high) == (worst.low, worst.high)  # the worst group's own Wilson interval
    assert gap.difference_low < gap.gap < gap.difference_high and gap.ratio_low < gap.ratio < gap.ratio_high
    assert gap.seed == 7 and gap.bootstrap == 500
    again = measures.disparities(rows, "accuracy", n_boot=500, seed=7)[0]
    assert (again.difference_low, again.ratio_high) == (gap.difference_low, gap.ratio_high)  # the seed reproduces it


def test_category_shares_equal_fairlearn_selection_rates():
    from fairlearn.metrics import MetricFrame, selection_rate

    rng = np.random.default_rng(4)
    groups = rng.choice(["x", "y", "z"], size=200)
    top1 = rng.choice(["person", "crime", "non-human"], size=200, p=[0.7, 0.2, 0.1]).astype(object)
    rows = measures.category_shares(top1, partition(list(groups)), ["person", "crime", "non-human"],
                                    {"non-human + crime": ["non-human", "crime"]})
    for category, parts in {"crime": ["crime"], "non-human + crime": ["non-human", "crime"]}.items():
        flagged = np.isin(top1, parts).astype(int)
        frame = MetricFrame(metrics=selection_rate, y_true=flagged, y_pred=flagged, sensitive_features=groups)
        for row in (r for r in rows if r.category == category):
            assert row.share == pytest.approx(frame.by_group[row.group.name])


def test_a_harm_share_is_worst_where_highest_and_a_single_image_group_is_said_as_such():
    labels = ["a"] * 40 + ["b"] * 40 + ["solo"]
    top1 = np.array(["crime"] * 4 + ["person"] * 36 + ["crime"] * 12 + ["person"] * 28 + ["crime"], dtype=object)
    rows = measures.category_shares(top1, partition(labels), ["person", "crime"])
    harm = measures.disparities(rows, "share", 300, 0, lambda category: category == "crime")
    crime = next(r for r in harm if r.category == "crime")
    assert crime.worst == "solo" and crime.worst_value == 1.0
    assert math.isnan(crime.difference_low) and "single image" in crime.interval_note  # no zero-width interval
    person = next(r for r in harm if r.category == "person")
    assert person.worst == "solo" and person.worst_value == 0.0 and person.interval_note
    warnings = measures.small_cell_warnings(rows, "category shares")
    assert any("'solo'" in w and "single image" in w and "0%-79%" in w for w in warnings)
    two = measures.disparities([r for r in rows if r.group.name != "solo"], "share", 300, 0,
                               lambda category: category == "crime")
    crime = next(r for r in two if r.category == "crime")
    assert (crime.worst, crime.best) == ("b", "a") and crime.gap == pytest.approx(0.2)
    assert crime.difference_low < 0.2 < crime.difference_high and crime.interval_note is None


def test_bootstrap_gap_is_the_binomial_resampling_of_each_group():
    low, high, r_low, r_high = stats.bootstrap_gap((30, 50), (10, 50), 4000, 1)
    rng = np.random.default_rng(1)  # the same draws, written out
    p_high, p_low = rng.binomial(50, 0.6, 4000) / 50, rng.binomial(50, 0.2, 4000) / 50
    assert (low, high) == tuple(np.percentile(p_high - p_low, [2.5, 97.5]))
    assert stats.bootstrap_gap((1, 1), (0, 9), 100, 0) == pytest.approx((math.nan,) * 4, nan_ok=True)


def test_search_bias_equals_a_hand_computation():
    # 6 images on a line; the query ranks them 0..5 in order: groups a, a, b, a, b, c
    features = np.array([[1.0, 0.0], [0.95, 0.31], [0.8, 0.6], [0.6, 0.8], [0.3, 0.95], [0.0, 1.0]])
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    groups = partition(["a", "a", "b", "a", "b", "c"])
    (row,) = search_bias(features, np.array([[1.0, 0.0]]), ["q"], {groups.groups[0].grouping: groups}, k=3,
                         n_boot=0, seed=0)
    # top 3: a, a, b.  Desired: a 1/2, b 1/3, c 1/6
    assert row.max_skew == pytest.approx(math.log((2 / 3) / (1 / 2))) and row.max_skew_group == "a"
    assert row.min_skew == -math.inf and row.min_skew_group == "c" and row.absent == ["c"]
    kl = [1 * math.log(1 / 0.5),  # top 1: a
          1 * math.log(1 / 0.5),  # top 2: a, a
          (2 / 3) * math.log((2 / 3) / 0.5) + (1 / 3) * math.log((1 / 3) / (1 / 3))]  # top 3: a, a, b
    weights = [1 / math.log2(i + 2) for i in range(3)]
    assert row.ndkl == pytest.approx(sum(w * d for w, d in zip(weights, kl)) / sum(weights))
    assert row.top_shares == pytest.approx({"a": 2 / 3, "b": 1 / 3, "c": 0.0})
    assert skews(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx([0.0, 0.0])
    assert ndkl(np.array([0, 1, 0, 1]), np.array([0.5, 0.5])) > 0  # the first position alone is skewed


def test_search_bias_intervals_resample_the_images():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(80, 8))
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    groups = partition(list(np.where(features[:, 0] > 0, "near", "far")))  # the query leans to 'near'
    query = np.eye(8)[:1]
    (row,) = search_bias(features, query, ["q"], {groups.groups[0].grouping: groups}, 10, 300, 5)
    assert row.max_skew_group == "near" and row.max_skew_low <= row.max_skew <= row.max_skew_high
    assert row.ndkl_low <= row.ndkl <= row.ndkl_high and row.seed == 5 and row.bootstrap == 300
    with pytest.raises(CliplabError, match="K between 1 and the number of images"):
        search_bias(features, query, ["q"], {groups.groups[0].grouping: groups}, 81, 0, 0)


# -- DataComp's layouts, generated ---------------------------------------------------------------------

def write_images(folder, names: list[str]) -> None:
    from PIL import Image

    for i, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), (i * 7 % 255, 80, 120)).save(path)


def dollar_street(folder, n: int = 40):
    rng = np.random.default_rng(0)
    names = [f"assets/{i:03d}.jpg" for i in range(n)]
    write_images(folder, names)
    frame = pd.DataFrame({"id": range(n), "country.name": rng.choice(["Kenya", "India", "Sweden"], n),
                          "region.id": rng.choice(["af", "as", "eu"], n),
                          "topics": [str([str(t), "home"]) for t in rng.choice(["toothbrush", "stove", "bed"], n)],
                          "place": "x", "income": rng.integers(30, 5000, n), "imageRelPath": names})
    frame.to_csv(folder / "images_v2.csv", index=False)
    return frame


def geode(folder, n: int = 30):
    rng = np.random.default_rng(1)
    names = [f"images/{i:03d}.jpg" for i in range(n)]
    write_images(folder, names)
    pd.DataFrame({"file_path": names, "object": rng.choice(["bag", "stove", "car"], n),
                  "region": rng.choice(["Africa", "EastAsia", "Europe"], n),
                  "ip_country": "x"}).to_csv(folder / "index.csv", index=False)


def test_dollar_street_and_geode_folders_give_worst_group_accuracy(tmp_path):
    frame = dollar_street(tmp_path / "ds")
    data = load_dataset(tmp_path / "ds")
    assert data.kind == "dollarstreet" and set(data.groups) == {"income", "region"}
    assert data.labels.tolist() == [ast.literal_eval(t)[0] for t in frame["topics"]]  # the first topic of each image
    assert len(data.values["income"]) == 4 and data.values["income"][0].startswith(f"${frame['income'].min():,}")
    quartile = pd.qcut(frame["income"], 4).cat.codes.to_numpy()
    assert (np.asarray(data.values["income"], dtype=object)[quartile] == data.groups["income"]).all()
    predicted = np.where(data.groups["income"] == data.values["income"][0], "bed", data.labels)  # the poorest wrong
    result = measure(np.full((len(data), 2), 0.5), _two_classes(), data, AuditOptions(dataset="x", n_boot=200),
                     label_predictions=predicted)
    income = next(r for r in result.tables.label_disparities if r.grouping.name == "income")
    assert income.worst == data.values["income"][0] and income.best_value == 1.0
    poorest = data.groups["income"] == data.values["income"][0]
    assert income.worst_value == pytest.approx((data.labels[poorest] == "bed").mean())
    assert {r.grouping.name for r in result.tables.label_accuracy} >= {"all", "income", "region", "income x region"}

    plain = tmp_path / "ds" / "plain.csv"  # any CSV: a numeric group column of many values is split alike
    frame.rename(columns={"imageRelPath": "file"}).to_csv(plain, index=False)
    assert (load_dataset(plain, group_columns=["income"]).groups["income"] == data.groups["income"]).all()

    geode(tmp_path / "geode")
    data = load_dataset(tmp_path / "geode")
    assert data.kind == "geode" and list(data.groups) == ["region"] and data.label_column == "object"


def _two_classes():
    from cliplab.engine.audit.labelsets import parse_labelset

    return parse_labelset({"classes": [{"name": "x", "category": "c"}, {"name": "y", "category": "c"}]})


def test_missing_label_or_group_columns_are_clear_messages(tmp_path):
    dollar_street(tmp_path / "ds", n=8)
    csv = tmp_path / "ds" / "images_v2.csv"
    frame = pd.read_csv(csv)
    frame.assign(income=["low"] + list(frame["income"][1:])).to_csv(csv, index=False)
    with pytest.raises(CliplabError, match="income column has a value that is not a number \\('low' in data row 1"):
        load_dataset(tmp_path / "ds")
    frame.drop(columns=["income"]).to_csv(csv, index=False)
    with pytest.raises(CliplabError, match="lacks the dollarstreet column\\(s\\) income"):
        load_dataset(tmp_path / "ds")
    plain = tmp_path / "plain.csv"
    pd.DataFrame({"file": ["ds/assets/000.jpg"], "region": ["eu"]}).to_csv(plain, index=False)
    with pytest.raises(CliplabError, match="no label column 'object'.*Name the column holding each image's class"):
        load_dataset(plain, group_columns=["region"], label_column="object")
    with pytest.raises(CliplabError, match="has no column\\(s\\) income"):
        load_dataset(plain, group_columns=["income"])
    pd.DataFrame({"file": ["ds/assets/000.jpg"], "region": ["eu"], "object": [" "]}).to_csv(plain, index=False)
    with pytest.raises(CliplabError, match="column 'object' is empty in 1 row.*needs a label"):
        load_dataset(plain, group_columns=["region"], label_column="object")
