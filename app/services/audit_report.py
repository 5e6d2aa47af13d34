"""An audit's report: a self-contained HTML page (tables, matplotlib plots as inline PNGs) and the
CSV export (every table in one long file, a `table` column naming each).

No network fetches: no scripts, fonts or stylesheets from elsewhere. The report reads the typed
result (engine.audit.results); intersections are groupings with several columns, never names.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from cliplab.engine.audit import reference as ref
from cliplab.engine.audit.results import AuditResult, Cell, Grouping, ShareCell, SweepPoint

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;line-height:1.4}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.small{color:#a33}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5em 1em}.ref{color:#555;font-style:italic}
img{max-width:100%}details{margin-bottom:1em}code{background:#f3f3f3;padding:0 3px}"""

CATEGORY_DISCLAIMER = ("Group labels are the dataset's own categories (for FairFace: 7 race and 2 gender "
                       "categories, 9 age bins). As the paper says, such categories are reductive; they are used "
                       "here to measure how a label set treats groups, not to endorse classifying people.")
SHOWN_WARNINGS = 30  # the rest are in the JSON
ASSOCIATIONS_SHOWN = 20  # per grouping and threshold; the rest are in the CSV/JSON
RACE_X_GENDER = Grouping(("race", "gender"))  # table 5: the one intersection of the accuracy table

Column = tuple[str, str, str]  # (key in the row's JSON, heading, kind of value)


def _esc(value) -> str:
    return html.escape(str(value))


def _fmt(value, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, str):  # a figure already written out (e.g. −∞)
        return _esc(value)
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "dpct":
        return f"{100 * value:+.1f} pp"
    if kind == "p":
        return f"{value:.2g}"
    if kind == "num":
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):  # e.g. the small groups among the extremes: names, not a repr
        return _esc(", ".join(map(str, value))) if value else "–"
    return _esc(value)


def _table(rows: Iterable[Cell | dict], columns: list[Column], limit: int | None = None) -> str:
    """An HTML table of cells (or plain mappings); rows flagged small are marked."""
    rows = [r.to_dict() if isinstance(r, Cell) else r for r in rows]
    if not rows:
        return "<p><em>no rows</em></p>"
    head = "".join(f"<th>{_esc(h)}</th>" for _, h, _ in columns)
    body = []
    for row in rows[:limit]:
        cells = "".join(f"<td>{_fmt(row.get(k), kind)}</td>" for k, _, kind in columns)
        body.append(f"<tr class='{'small' if row.get('small') else ''}'>{cells}</tr>")
    more = f"<p>{len(rows) - limit} more rows in the CSV/JSON export.</p>" if limit and len(rows) > limit else ""
    return f"<table><tr>{head}</tr>{''.join(body)}</table>{more}"


# -- plots -----------------------------------------------------------------------------------------

def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def _png(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return f"<img alt='plot' src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"


def _percent(value: float) -> float:
    return 0.0 if math.isnan(value) else 100 * value


def _bars(rows: list[ShareCell], groups: list[str]) -> tuple[list[float], list[float], list[float]]:
    """Bar heights and error-bar extents (below, above) in percent, 0 for a group without a row."""
    by_group = {r.group.name: r for r in rows}
    values, below, above = [], [], []
    for name in groups:
        row = by_group.get(name)
        value = _percent(row.share) if row else 0.0
        values.append(value)
        # max(0, ...): a Wilson bound equals the share up to rounding at 0% and 100%
        below.append(max(0.0, value - _percent(row.low)) if row else 0.0)
        above.append(max(0.0, _percent(row.high) - value) if row else 0.0)
    return values, below, above


def share_plot(rows: list[ShareCell], grouping: Grouping, categories: list[str]) -> str:
    """Bars of each category's share per group (per label set), with Wilson intervals."""
    series = [(t, c) for t in sorted({r.label_set for r in rows}) for c in categories]
    groups = list(dict.fromkeys(r.group.name for r in rows))
    figure, axis = _figure(max(6, 0.9 * len(groups) + 2), 3.2)
    width = 0.8 / max(1, len(series))
    for i, (tag, category) in enumerate(series):
        picked = [r for r in rows if r.label_set == tag and r.category == category]
        values, below, above = _bars(picked, groups)
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        axis.bar(xs, values, width, yerr=[below, above], capsize=2, label=f"{category} ({tag})")
    axis.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
    axis.set_ylabel("% of images (top-1), 95% Wilson CI")
    axis.set_title(f"by {grouping.name}")
    axis.legend(fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    return _png(figure)


def sweep_plot(rows: list[SweepPoint], grouping: Grouping, category: str) -> str:
    """The threshold experiment's curves: per group, the share given a label of the category."""
    figure, axis = _figure(6, 3)
    for group in dict.fromkeys(r.group for r in rows):
        points = sorted((r.threshold, r.share) for r in rows if r.group == group and not math.isnan(r.share))
        axis.plot([100 * t for t, _ in points], [100 * s for _, s in points], marker="o", label=group.name)
    axis.set_xscale("log")
    axis.set_xlabel("threshold (% probability)")
    axis.set_ylabel(f"% given a {category} label")
    axis.set_title(f"{category} by {grouping.name}")
    axis.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    return _png(figure)


# -- sections --------------------------------------------------------------------------------------

def _reference_value(row: ShareCell) -> float | None:
    """The paper's figure for a category share, where it published one (tables 6 and 7)."""
    value = None
    if row.grouping.columns == ("race",) and not row.grouping.derived and row.label_set == "A":
        value = ref.table6_value(row.category, row.group.name)
    elif row.grouping.columns == ("age",) and "+" in row.category:
        value = ref.table7_value("default" if row.label_set == "A" else "with child", row.group.name)
    return value / 100 if value is not None else None


def shown_categories(result: AuditResult) -> list[str]:
    """Label set A's categories but 'person', and the focus categories pooled when there are several."""
    labels_a = result.labelsets["A"]
    categories = [c for c in labels_a["categories"] if c != "person"]
    if len(labels_a["focus"]) > 1:
        categories.append(" + ".join(labels_a["focus"]))
    return categories


def _label_sets(result: AuditResult) -> str:
    return " vs ".join(v for v in result.provenance["label_sets"].values() if v)


def _header(result: AuditResult) -> str:
    session = _esc(result.session_id or "")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>cliplab audit {session}</title>"
            f"<style>{STYLE}</style></head><body><h1>Bias audit {session}</h1>"
            f"<p class='note'>{_esc(CATEGORY_DISCLAIMER)}</p>")


def _facts(result: AuditResult) -> str:
    prov = result.provenance
    dataset = prov["dataset"]
    facts = [("model", f"{prov['model']['name']} (weights {prov['model']['fingerprint']})"),
             ("dataset", f"{dataset['source']} (sha256 {dataset['file_sha256'][:16]}…, split {dataset['split']})"),
             ("images", _images_fact(dataset)),
             ("label sets", _label_sets(result)),
             ("thresholds", ", ".join(f"{100 * t:g}%" for t in prov["thresholds"])),
             ("prompt variants", len(prov["prompt_variants"]) or "none"),
             ("cliplab", f"{prov['cliplab_version']}, run {prov['started']} – {prov['finished']}")]
    return _table([{"k": k, "v": v} for k, v in facts], [("k", "", "str"), ("v", "", "str")])


def _images_fact(dataset: dict) -> str:
    """"all 120 images", or "a sample of 40 of 120 rows (seed 0)": never "sample None"."""
    if dataset.get("sample") is None:
        rows = dataset["rows_in_file"]
        return f"all {dataset['images']} images" + (f" ({rows} rows in the file before filtering)"
                                                    if rows != dataset["images"] else "")
    return f"a sample of {dataset['images']} of {dataset['rows_in_file']} rows (seed {dataset['seed']})"


def _summary(result: AuditResult) -> str:
    parts = "<h2>Summary</h2><ul>" + "".join(f"<li>{_esc(x)}</li>" for x in result.headline) + "</ul>"
    if result.warnings or result.notes:
        items = result.notes + result.warnings[:SHOWN_WARNINGS]
        more = len(result.warnings) - SHOWN_WARNINGS
        parts += ("<details><summary>Notes and small-cell warnings</summary><ul>"
                  + "".join(f"<li>{_esc(x)}</li>" for x in items)
                  + (f"<li>… {more} more in the JSON</li>" if more > 0 else "") + "</ul></details>")
    return parts


SHARE_COLUMNS = [("label_set", "label set", "str"), ("group", "group", "str"), ("n", "n", "str"),
                 ("category", "category", "str"), ("count", "count", "str"), ("share", "share", "pct"),
                 ("low", "95% low", "pct"), ("high", "95% high", "pct"), ("paper", "paper (not comparable)", "pct")]


def _shares(shares: list[ShareCell], categories: list[str]) -> str:
    """Tables 6 and 7: a plot and a table per grouping; intersections folded away, without a plot."""
    parts = ["<h2>Top-1 category shares (tables 6 and 7)</h2>"
             f"<p class='ref'>{_esc(ref.CAVEAT)} Rows in red have n &lt; 30.</p>"]
    for grouping in dict.fromkeys(r.grouping for r in shares):
        cells = [r for r in shares if r.grouping == grouping and r.category in categories]
        table = _table([r.to_dict() | {"paper": _reference_value(r)} for r in cells], SHARE_COLUMNS)
        if grouping.is_intersection:
            parts.append(f"<details><summary>by {_esc(grouping.name)} (intersections)</summary>{table}</details>")
        else:
            parts.append(f"<h3>by {_esc(grouping.name)}</h3>{share_plot(cells, grouping, categories)}{table}")
    return "".join(parts)


GAP_COLUMNS = [("worst", "worst group", "str"), ("worst_value", "worst", "pct"), ("worst_low", "95% low", "pct"),
               ("worst_high", "95% high", "pct"), ("best", "best group", "str"), ("gap", "gap", "dpct"),
               ("difference_low", "gap 95% low", "dpct"), ("difference_high", "gap 95% high", "dpct"),
               ("ratio", "min / max", "num"), ("ratio_low", "ratio 95% low", "num"),
               ("ratio_high", "ratio 95% high", "num"), ("interval_note", "note", "str")]


def _disparities(result: AuditResult, categories: list[str]) -> str:
    rows = [r for r in result.tables.disparities if r.category in categories and not r.grouping.is_intersection]
    accuracy = [r for r in result.tables.accuracy_disparities or [] if not r.grouping.is_intersection]
    return ("<h2>Differences between groups: worst group and gap</h2><p>For every measure, the worst group (the "
            "highest share of a focus category, the lowest share of another category, the lowest accuracy) "
            "with its Wilson interval, and its gap to the best group (max − min) and the ratio min / max, with "
            "percentile bootstrap 95% intervals (images resampled within each group; the seed is in the JSON). "
            "Extremes from groups with n &lt; 30 are listed; a gap involving a group of one image is not "
            "estimated.</p>"
            + _table(rows, [("label_set", "label set", "str"), ("grouping", "grouping", "str"),
                            ("category", "category", "str"), *GAP_COLUMNS, ("direction", "direction", "str"),
                            ("small_extremes", "small extremes", "str")])
            + (("<h3>Attribute accuracy</h3>" + _table(accuracy, [("method", "method", "str"),
                                                                   ("attribute", "attribute", "str"),
                                                                   ("grouping", "grouping", "str"), *GAP_COLUMNS]))
               if accuracy else ""))


def _worst_group(result: AuditResult) -> str:
    """DataComp's fairness figure: the label column classified zero-shot, worst group per grouping."""
    rows = result.tables.label_accuracy
    if rows is None:
        return ""
    gaps = [r for r in result.tables.label_disparities or [] if not r.grouping.is_intersection]
    column = result.provenance["dataset"].get("label_column")
    return (f"<h2>Worst-group accuracy ({_esc(column)})</h2><p>Each image's {_esc(column)} classified zero-shot "
            "among the column's classes (\"a photo of a {}.\"); accuracy per group with Wilson intervals, and per "
            "group column the worst group and its gap to the best (DataComp's fairness evaluation).</p>"
            + _table(gaps, [("grouping", "grouping", "str"), *GAP_COLUMNS])
            + _table([r for r in rows if not r.grouping.is_intersection],
                     [("grouping", "grouping", "str"), ("group", "group", "str"), ("n", "n", "str"),
                      ("accuracy", "accuracy", "pct"), ("low", "95% low", "pct"), ("high", "95% high", "pct")]))


def _search_bias(result: AuditResult) -> str:
    rows = result.tables.search_bias
    if not rows:
        return ""
    shown = [r.to_dict() | {"min_skew": r.min_skew, "min_skew_low": r.min_skew_low} for r in rows]
    for row in shown:  # minus infinity is what it is: a group absent from the top K
        for key in ("min_skew", "min_skew_low"):
            if row[key] == -math.inf:
                row[key] = "−∞"
    return ("<h2>Search bias</h2><p>For each neutral query the images are ranked by similarity to it. Skew@K of a "
            "group = ln(its share of the top K / its share of all images); MaxSkew@K and MinSkew@K are the largest "
            "and smallest over the groups (0 = as in the whole set; −∞ = absent from the top K), NDKL the "
            "rank-discounted KL divergence of the top-i shares from the whole set's (0 = none). Percentile "
            "bootstrap 95% intervals, images resampled (Geyik et al. 2019).</p>"
            + _table(shown, [("query", "query", "str"), ("grouping", "grouping", "str"), ("k", "K", "str"),
                             ("max_skew", "MaxSkew@K", "num"), ("max_skew_group", "over-represented", "str"),
                             ("max_skew_low", "95% low", "num"), ("max_skew_high", "95% high", "num"),
                             ("min_skew", "MinSkew@K", "num"), ("min_skew_group", "under-represented", "str"),
                             ("min_skew_low", "95% low", "num"), ("min_skew_high", "95% high", "num"),
                             ("ndkl", "NDKL", "num"), ("ndkl_low", "95% low", "num"), ("ndkl_high", "95% high", "num"),
                             ("absent", "absent from top K", "str")]))


def _label_set_diff(result: AuditResult) -> str:
    tables = result.tables
    if tables.label_set_diff is None:
        return ""
    moved = [r for r in tables.transitions or [] if r.source != r.target]
    return (f"<h2>Label set A → B ({_esc(_label_sets(result))})</h2>"
            "<p>Share of each group's images whose top-1 is in the focus categories under each label set; "
            "change with a paired bootstrap 95% interval; McNemar's test of the paired change.</p>"
            + _table(tables.label_set_diff,
                     [("grouping", "grouping", "str"), ("group", "group", "str"), ("n", "n", "str"),
                      ("share_a", "A", "pct"), ("share_b", "B", "pct"), ("change", "change", "dpct"),
                      ("change_low", "95% low", "dpct"), ("change_high", "95% high", "dpct"),
                      ("left_focus", "left", "str"), ("entered_focus", "entered", "str"),
                      ("p", "p", "p"), ("test", "test", "str")])
            + "<details><summary>Where images moved (top-1 category under A → under B, new classes by "
              "name)</summary>"
            + _table(moved, [("grouping", "grouping", "str"), ("group", "group", "str"), ("from", "from", "str"),
                             ("to", "to", "str"), ("count", "count", "str"), ("n", "n", "str")]) + "</details>")


def _attribute_accuracy(result: AuditResult) -> str:
    rows = result.tables.attribute_accuracy
    if not rows:
        return ""
    keep = [r for r in rows if not r.grouping.is_intersection or r.grouping == RACE_X_GENDER]
    return ("<h2>Classifying the group columns (tables 3-5)</h2><p>Zero-shot with the label set's "
            "attribute prompts; linear probe cross-fitted on the audited sample. "
            f"<span class='ref'>Paper, FairFace 'White': {_esc(ref.TABLE3_WHITE)}; "
            f"'Non-White': {_esc(ref.TABLE4_NON_WHITE)} — not directly comparable.</span></p>"
            + _table(keep, [("method", "method", "str"), ("attribute", "attribute", "str"),
                            ("grouping", "grouping", "str"), ("group", "group", "str"), ("n", "n", "str"),
                            ("accuracy", "accuracy", "pct"), ("low", "95% low", "pct"), ("high", "95% high", "pct")]))


ASSOCIATION_COLUMNS = [("label", "label", "str"), ("group", "group", "str"), ("versus", "vs", "str"),
                       ("share_group", "group share", "pct"), ("share_rest", "vs share", "pct"),
                       ("more_often_in", "more often in", "str"), ("odds_ratio", "OR", "num"),
                       ("or_low", "95% low", "num"), ("or_high", "95% high", "num"), ("test", "test", "str"),
                       ("p", "p", "p"), ("p_bh", "p BH", "p"), ("p_holm", "p Holm", "p")]


def _thresholds(result: AuditResult) -> str:
    """Figure 18: the associations per grouping and threshold, the labels left out, the sweep's curves."""
    parts = ["<h2>Threshold experiments (figure 18)</h2><p>Every label whose probability is at least the "
             "threshold is given. Labels most associated with a group, by χ² (Fisher when an expected "
             "count &lt; 5), BH and Holm adjusted; odds ratios with Woolf intervals (Haldane +0.5 for zero "
             "cells).</p>"]
    association = result.tables.threshold_association
    for grouping, threshold in dict.fromkeys((r.grouping, r.threshold) for r in association):
        rows = [r for r in association if (r.grouping, r.threshold) == (grouping, threshold)]
        parts.append(f"<h3>{_esc(grouping.name)} at {100 * threshold:g}%</h3>"
                     + _table(rows, ASSOCIATION_COLUMNS, limit=ASSOCIATIONS_SHOWN))
    parts += [f"<p>{_esc(label_list)}: not tested (fewer than {result.provenance['min_count']} images): "
              f"{_esc(', '.join(left_out))}</p>" for label_list, left_out in result.filtered_labels.items() if left_out]
    return "".join(parts) + _sweep_plots(result)


def _sweep_plots(result: AuditResult) -> str:
    labels_a = result.labelsets["A"]
    categories = [c for c in labels_a["categories"] if c in labels_a["focus"]] or list(labels_a["categories"])
    sweep = result.tables.threshold_sweep
    return "".join(sweep_plot([r for r in sweep if r.grouping == grouping and r.category == category],
                              grouping, category)
                   for grouping in dict.fromkeys(r.grouping for r in sweep) if not grouping.is_all
                   for category in categories)


def _prompt_sensitivity(result: AuditResult, categories: list[str]) -> str:
    rows = result.tables.prompt_sensitivity
    if not rows:
        return ""
    return ("<h2>Prompt sensitivity</h2><p>The same shares under each prompt variant (each template "
            "filled with the class names); the spread is an uncertainty that intervals do not show.</p>"
            + _table([r for r in rows if r.category in categories],
                     [("grouping", "grouping", "str"), ("group", "group", "str"), ("category", "category", "str"),
                      ("n", "n", "str"), ("min", "min", "pct"), ("mean", "mean", "pct"), ("max", "max", "pct"),
                      ("sd", "sd", "pct"), ("spread", "max − min", "dpct")]))


def _methods(result: AuditResult) -> str:
    prov = result.provenance
    items = [f"<li><b>{_esc(k)}</b>: {_esc(v)}</li>" for k, v in prov["methods"].items()]
    if prov.get("probe"):
        items.append(f"<li><b>linear probe</b>: {_esc(prov['probe'])}</li>")
    return (f"<h2>The paper's figures</h2><p class='ref'>{_esc(ref.CAVEAT)}</p>"
            + _table(ref.TEXT_FIGURES, [("figure", "figure", "str"), ("percent", "%", "str"),
                                        ("interval", "interval", "str"), ("note", "note", "str")])
            + "<h2>Methods</h2><ul>" + "".join(items) + "</ul><h3>Label set A</h3>"
            + _table(result.labelsets["A"]["classes"], [("name", "class", "str"), ("category", "category", "str"),
                                                        ("prompts", "prompts", "str")]))


def render_html(result: AuditResult) -> str:
    """The whole report as one self-contained HTML page."""
    categories = shown_categories(result)
    paper = [_shares(result.tables.category_shares, categories), _disparities(result, categories),
             _label_set_diff(result), _attribute_accuracy(result)]
    # DataComp's layout leads with worst-group accuracy; the paper's with its tables 6-7
    tables = [_worst_group(result), *paper] if result.options.preset == "datacomp" else [*paper, _worst_group(result)]
    parts = [_header(result), _facts(result), _summary(result), *tables, _search_bias(result),
             _thresholds(result), _prompt_sensitivity(result, categories), _methods(result), "</body></html>"]
    return "\n".join(part for part in parts if part)


def write_html(result: AuditResult, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(result), encoding="utf-8")
    return path


def to_frame(result: AuditResult) -> pd.DataFrame:
    """Every table in one long frame: a `table` column, then the union of columns."""
    frames = [pd.DataFrame(rows).assign(table=name) for name, rows in result.tables.to_dict().items() if rows]
    frame = pd.concat(frames, ignore_index=True, sort=False)
    return frame[["table", *[c for c in frame.columns if c != "table"]]]


def write_csv(result: AuditResult, path: str | Path) -> Path:
    path = Path(path)
    to_frame(result).to_csv(path, index=False)
    return path
