"""Audit measurements on a generated FairFace-format dataset with injected classifier outputs.

The top-1 class of every image is chosen by the test, so each table is recomputed here
independently (pandas counts, statsmodels intervals and tests, scipy) and compared.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from cliplab.engine.audit import measures
from cliplab.engine.audit.datasets import FAIRFACE_AGES, FAIRFACE_GENDERS, FAIRFACE_RACES, load_dataset
from cliplab.engine.audit.labelsets import load_labelset, with_added
from cliplab.engine.audit.results import Group, Grouping, ShareCell
from cliplab.engine.audit.runner import AuditOptions, measure
from cliplab.engine.errors import CliplabError


def make_fairface(root, n_per_cell: int = 3, seed: int = 0):
    """FairFace's release layout: fairface_label_{train,val}.csv + val/N.jpg, exact category strings."""
    rng = np.random.default_rng(seed)
    (root / "val").mkdir(parents=True)
    (root / "train").mkdir()
    rows = []
    for race in FAIRFACE_RACES:
        for gender in FAIRFACE_GENDERS:
            for _ in range(n_per_cell):
                rows.append({"race": race, "gender": gender, "age": FAIRFACE_AGES[int(rng.integers(9))]})
    for i, row in enumerate(rows):
        name = f"val/{i + 1}.jpg"
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(root / name)
        row.update(file=name, service_test=str(bool(i % 2)))
    frame = pd.DataFrame(rows)[["file", "age", "gender", "race", "service_test"]]
    frame.to_csv(root / "fairface_label_val.csv", index=False)
    frame.iloc[:2].to_csv(root / "fairface_label_train.csv", index=False)
    return frame


def inject(top1: np.ndarray, n_classes: int, rng) -> np.ndarray:
    """Probabilities whose argmax is top1, with a varied tail for the threshold experiments."""
    probs = rng.dirichlet(np.full(n_classes, 0.3), size=len(top1)) * 0.5
    probs[np.arange(len(top1)), top1] += 0.5
    return probs / probs.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def audit(tmp_path_factory):
    root = tmp_path_factory.mktemp("fairface")
    frame = make_fairface(root, n_per_cell=12)
    dataset = load_dataset(root, "val")
    a = load_labelset("paper")
    b = with_added(a, ["child"])
    rng = np.random.default_rng(3)
    n = len(dataset)
    # Known top-1: Black and young images more often in non-human/crime; 'child' takes young ones in B.
    categories = np.array(a.class_categories)
    top1_a = rng.integers(0, 14, n)
    harm = np.flatnonzero(categories != "person")
    young = np.isin(dataset.groups["age"], ["0-2", "3-9", "10-19"])
    pick = rng.random(n) < np.where(dataset.groups["race"] == "Black", 0.5, 0.15) + 0.2 * young
    top1_a[pick] = rng.choice(harm, pick.sum())
    top1_b = top1_a.copy()
    moved = young & pick & (rng.random(n) < 0.8)
    top1_b[moved] = len(b.classes) - 1  # 'child'
    probs_a = inject(top1_a, len(a.classes), rng)
    probs_b = inject(top1_b, len(b.classes), rng)
    options = AuditOptions(dataset=str(root), n_boot=500, probe_folds=0, min_count=3)
    variants = {"v1": probs_a, "v2": inject(rng.integers(0, 21, n), 21, rng)}
    result = measure(probs_a, a, dataset, options, probs_b, b, variants)
    truth = pd.DataFrame({**{k: v for k, v in dataset.groups.items()},
                          "cat_a": categories[top1_a], "cat_b": np.array(b.class_categories)[top1_b],
                          "class_b": np.array(b.classnames)[top1_b]})
    return dict(result=result, truth=truth, probs_a=probs_a, a=a, b=b, frame=frame, n=n)


def rows_of(result, table, **where):
    """The rows of a table as their JSON (groupings and groups by name), filtered by key = value."""
    rows = [r.to_dict() for r in getattr(result.tables, table)]
    return [r for r in rows if all(r.get(k) == v for k, v in where.items())]


def test_dataset_loads_fairface_by_string(audit, tmp_path):
    assert audit["n"] == 7 * 2 * 12
    assert list(audit["truth"]["race"]) == list(audit["frame"]["race"])


def test_category_shares_match_independent_counts_and_wilson(audit):
    truth = audit["truth"]
    for race, sub in truth.groupby("race"):
        for category in ("person", "non-human", "crime", "non-human + crime"):
            parts = category.split(" + ")
            k, n = int(sub["cat_a"].isin(parts).sum()), len(sub)
            (row,) = rows_of(audit["result"], "category_shares", label_set="A", grouping="race", group=race,
                             category=category)
            low, high = proportion_confint(k, n, method="wilson")
            assert (row["count"], row["n"]) == (k, n)
            assert row["share"] == pytest.approx(k / n)
            assert (row["low"], row["high"]) == pytest.approx((low, high))
    # intersections: race x gender cells of size 12 are flagged as small
    (cell,) = rows_of(audit["result"], "category_shares", label_set="A", grouping="race x gender",
                      group="Black / Female", category="crime")
    sub = truth[(truth.race == "Black") & (truth.gender == "Female")]
    assert cell["count"] == int((sub.cat_a == "crime").sum()) and cell["n"] == 12 and cell["small"]


def test_disparities_state_direction(audit):
    truth = audit["truth"]
    shares = truth.assign(h=truth.cat_a == "non-human").groupby("race")["h"].mean()
    (row,) = rows_of(audit["result"], "disparities", label_set="A", grouping="race", category="non-human")
    assert row["highest_value"] == pytest.approx(shares.max()) and row["lowest_value"] == pytest.approx(shares.min())
    assert row["difference"] == pytest.approx(shares.max() - shares.min())
    assert row["ratio"] == pytest.approx(shares.min() / shares.max())
    assert row["highest"] in row["direction"] and "highest" in row["direction"]


def test_label_set_diff_mcnemar_and_bootstrap(audit):
    truth = audit["truth"]
    focus = ["non-human", "crime"]
    for age, sub in truth.groupby("age"):
        (row,) = rows_of(audit["result"], "label_set_diff", grouping="age", group=age)
        a, b = sub.cat_a.isin(focus).to_numpy(), sub.cat_b.isin(focus).to_numpy()
        assert row["share_a"] == pytest.approx(a.mean()) and row["share_b"] == pytest.approx(b.mean())
        left, entered = int((a & ~b).sum()), int((~a & b).sum())
        assert (row["left_focus"], row["entered_focus"]) == (left, entered)
        if left + entered:
            table = [[int((a & b).sum()), left], [entered, int((~a & ~b).sum())]]
            assert row["p"] == pytest.approx(sm_mcnemar(table, exact=left + entered < 25, correction=True).pvalue)
        assert row["change_low"] <= row["change"] <= row["change_high"]
    moved_to_child = rows_of(audit["result"], "transitions", grouping="all", to="child")
    assert sum(r["count"] for r in moved_to_child) == int((truth.class_b == "child").sum()) > 0


def test_threshold_association_against_scipy_and_statsmodels(audit):
    probs, classnames = audit["probs_a"], audit["a"].classnames
    gender = audit["truth"]["gender"].to_numpy()
    threshold = 0.04
    rows = rows_of(audit["result"], "threshold_association", grouping="gender", threshold=threshold)
    given = probs >= threshold
    tested = [j for j in range(len(classnames)) if given[:, j].sum() >= 3]
    assert sorted(r["label"] for r in rows) == sorted(classnames[j] for j in tested)
    male = gender == "Male"
    pvalues = {}
    for j in tested:
        table = np.array([[given[male, j].sum(), (~given[male, j]).sum()],
                          [given[~male, j].sum(), (~given[~male, j]).sum()]])
        expected = sps.contingency.expected_freq(table)
        if (expected < 5).any():
            p = sps.fisher_exact(table)[1]
        else:
            p = sps.chi2_contingency(table, correction=False)[1]
        pvalues[classnames[j]] = p
    ordered = sorted(pvalues)
    bh = dict(zip(ordered, multipletests([pvalues[k] for k in ordered], method="fdr_bh")[1]))
    holm = dict(zip(ordered, multipletests([pvalues[k] for k in ordered], method="holm")[1]))
    for row in rows:
        assert row["group"] == "Male" and row["versus"] == "Female"
        assert row["p"] == pytest.approx(pvalues[row["label"]])
        assert row["p_bh"] == pytest.approx(bh[row["label"]]) and row["p_holm"] == pytest.approx(holm[row["label"]])
    assert [r["p"] for r in rows] == sorted(r["p"] for r in rows)  # most associated first


def test_threshold_sweep_and_prompt_spread(audit):
    probs, a = audit["probs_a"], audit["a"]
    age = audit["truth"]["age"].to_numpy()
    crime = np.array(a.class_categories) == "crime"
    for row in rows_of(audit["result"], "threshold_sweep", grouping="age", category="crime"):
        mask = age == row["group"]
        assert row["count"] == int((probs[mask][:, crime] >= row["threshold"]).any(axis=1).sum())
    curve = [r["count"] for r in rows_of(audit["result"], "threshold_sweep", grouping="all", category="crime")]
    assert curve == sorted(curve, reverse=True)  # a higher threshold never gives more labels
    (row,) = rows_of(audit["result"], "prompt_sensitivity", grouping="all", group="all", category="crime")
    assert set(row["shares"]) == {"v1", "v2"}
    assert row["spread"] == pytest.approx(abs(row["shares"]["v1"] - row["shares"]["v2"]))


def test_groupings_cover_intersections():
    groups = {"race": np.array(["Black", "White", "Black"], dtype=object),
              "gender": np.array(["Male", "Male", "Female"], dtype=object)}
    out = measures.groupings(groups, {"race": ["White", "Black"], "gender": ["Male", "Female"]})
    assert [g.name for g in out[Grouping(("race",))].groups] == ["White", "Black"]
    intersection = out[Grouping(("race", "gender"))]
    assert [g.name for g in intersection.groups] == ["White / Male", "Black / Male", "Black / Female"]
    assert intersection.groups[2].values == ("Black", "Female")  # the columns' values, not a name to parse


def test_unknown_category_strings_and_missing_images(tmp_path):
    make_fairface(tmp_path, n_per_cell=1)
    csv = tmp_path / "fairface_label_val.csv"
    frame = pd.read_csv(csv, dtype=str)
    frame.loc[0, "race"] = "Latino"  # the paper's word, not FairFace's string
    frame.to_csv(csv, index=False)
    with pytest.raises(CliplabError, match="unknown race values 'Latino'"):
        load_dataset(tmp_path, "val")
    frame.loc[0, "race"] = "Latino_Hispanic"
    frame.loc[1, "file"] = "val/nowhere.jpg"
    frame.to_csv(csv, index=False)
    with pytest.raises(CliplabError, match="1 of 14 images .* do not exist: .*nowhere.jpg"):
        load_dataset(tmp_path, "val")


def test_small_extremes_name_a_group_once_and_read_as_names():
    """When every group has the same share, the highest and the lowest are the same small group: the
    report named it twice, as a Python list ("small extremes ['East Asian', 'East Asian']")."""
    from cliplab.app.services.audit_report import _fmt
    from cliplab.engine.audit.measures import disparities
    race = Grouping(("race",))
    rows = [ShareCell(group=Group(race, (g,)), category="crime", share=0.25, n=4, count=1, low=0.0, high=0.7,
                      small=True) for g in ("East Asian", "Indian")]
    (row,) = disparities(rows)
    assert row.small_extremes == ["East Asian"]
    assert _fmt(row.small_extremes, "str") == "East Asian"
    assert _fmt(["Black", "White"], "str") == "Black, White" and _fmt([], "str") == "–"
