"""A self-contained HTML report of an audit result: tables, matplotlib plots as inline PNGs.

No network fetches: no scripts, fonts or stylesheets from elsewhere. Also CSV export (every table
in one long file, a `table` column naming each).
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import pandas as pd

from cliplab.engine.audit import reference as ref

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;line-height:1.4}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.small{color:#a33}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5em 1em}.ref{color:#555;font-style:italic}
img{max-width:100%}details{margin-bottom:1em}code{background:#f3f3f3;padding:0 3px}"""

CATEGORY_DISCLAIMER = ("Group labels are the dataset's own categories (for FairFace: 7 race and 2 gender "
                       "categories, 9 age bins). As the paper says, such categories are reductive; they are used "
                       "here to measure how a label set treats groups, not to endorse classifying people.")


def _esc(value) -> str:
    return html.escape(str(value))


def _fmt(value, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
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


def _table(rows: list[dict], columns: list[tuple[str, str, str]], limit: int | None = None) -> str:
    """columns: (key, heading, kind); rows flagged small are marked."""
    if not rows:
        return "<p><em>no rows</em></p>"
    head = "".join(f"<th>{_esc(h)}</th>" for _, h, _ in columns)
    body = []
    for row in rows[:limit]:
        cells = "".join(f"<td>{_fmt(row.get(k), kind)}</td>" for k, _, kind in columns)
        body.append(f"<tr class='{'small' if row.get('small') else ''}'>{cells}</tr>")
    more = f"<p>{len(rows) - limit} more rows in the CSV/JSON export.</p>" if limit and len(rows) > limit else ""
    return f"<table><tr>{head}</tr>{''.join(body)}</table>{more}"


def _png(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return f"<img alt='plot' src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"


def _share_plot(rows: list[dict], grouping: str, categories: list[str]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tags = sorted({r["label_set"] for r in rows})
    series = [(t, c) for t in tags for c in categories]
    groups = list(dict.fromkeys(r["group"] for r in rows))
    figure, axis = plt.subplots(figsize=(max(6, 0.9 * len(groups) + 2), 3.2))
    width = 0.8 / max(1, len(series))
    for i, (tag, category) in enumerate(series):
        picked = {r["group"]: r for r in rows if r["label_set"] == tag and r["category"] == category}
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        values = [100 * (picked[g]["share"] or 0) if g in picked else 0 for g in groups]
        # max(0, ...): a Wilson bound equals the share up to rounding at 0% and 100%
        lows = [max(0.0, v - 100 * (picked[g]["low"] or 0)) if g in picked else 0 for g, v in zip(groups, values)]
        highs = [max(0.0, 100 * (picked[g]["high"] or 0) - v) if g in picked else 0 for g, v in zip(groups, values)]
        axis.bar(xs, values, width, yerr=[lows, highs], capsize=2, label=f"{category} ({tag})")
    axis.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
    axis.set_ylabel("% of images (top-1), 95% Wilson CI")
    axis.set_title(f"by {grouping}")
    axis.legend(fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    return _png(figure)


def _sweep_plot(rows: list[dict], grouping: str, category: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3))
    for group in dict.fromkeys(r["group"] for r in rows):
        points = sorted((r["threshold"], r["share"]) for r in rows if r["group"] == group and r["share"] is not None)
        axis.plot([100 * t for t, _ in points], [100 * s for _, s in points], marker="o", label=group)
    axis.set_xscale("log")
    axis.set_xlabel("threshold (% probability)")
    axis.set_ylabel(f"% given a {category} label")
    axis.set_title(f"{category} by {grouping}")
    axis.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    return _png(figure)


def _reference_value(grouping: str, group: str, category: str, tag: str) -> float | None:
    if grouping == "race" and tag == "A":
        value = ref.table6_value(category, group)
        return value / 100 if value is not None else None
    if grouping == "age" and "+" in category:
        value = ref.table7_value("default" if tag == "A" else "with child", group)
        return value / 100 if value is not None else None
    return None


SHARE_COLUMNS = [("label_set", "label set", "str"), ("group", "group", "str"), ("n", "n", "str"),
                 ("category", "category", "str"), ("count", "count", "str"), ("share", "share", "pct"),
                 ("low", "95% low", "pct"), ("high", "95% high", "pct"), ("paper", "paper (not comparable)", "pct")]


def render_html(result: dict) -> str:
    prov, tables = result["provenance"], result["tables"]
    labels_a = result["labelsets"]["A"]
    categories = [c for c in labels_a["categories"] if c != "person"]
    if len(labels_a["focus"]) > 1:
        categories.append(" + ".join(labels_a["focus"]))
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>cliplab audit "
             f"{_esc(result.get('session_id', ''))}</title><style>{STYLE}</style></head><body>",
             f"<h1>Bias audit {_esc(result.get('session_id', ''))}</h1>",
             f"<p class='note'>{_esc(CATEGORY_DISCLAIMER)}</p>"]
    dataset = prov["dataset"]
    facts = [("model", f"{prov['model']['name']} (weights {prov['model']['fingerprint']})"),
             ("dataset", f"{dataset['source']} (sha256 {dataset['file_sha256'][:16]}…, split {dataset['split']})"),
             ("images", f"{dataset['images']} of {dataset['rows_in_file']} rows; sample {dataset['sample']}, "
                        f"seed {dataset['seed']}"),
             ("label sets", " vs ".join(v for v in prov["label_sets"].values() if v)),
             ("thresholds", ", ".join(f"{100 * t:g}%" for t in prov["thresholds"])),
             ("prompt variants", len(prov["prompt_variants"]) or "none"),
             ("cliplab", f"{prov['cliplab_version']}, run {prov['started']} – {prov['finished']}")]
    parts.append(_table([{"k": k, "v": v} for k, v in facts], [("k", "", "str"), ("v", "", "str")]))
    parts.append("<h2>Summary</h2><ul>" + "".join(f"<li>{_esc(x)}</li>" for x in result["headline"]) + "</ul>")
    if result["warnings"] or result["notes"]:
        items = result["notes"] + result["warnings"][:30]
        more = len(result["warnings"]) - 30
        parts.append("<details><summary>Notes and small-cell warnings</summary><ul>"
                     + "".join(f"<li>{_esc(x)}</li>" for x in items)
                     + (f"<li>… {more} more in the JSON</li>" if more > 0 else "") + "</ul></details>")

    parts.append("<h2>Top-1 category shares (tables 6 and 7)</h2>"
                 f"<p class='ref'>{_esc(ref.CAVEAT)} Rows in red have n &lt; 30.</p>")
    shares = tables["category_shares"]
    groupings = list(dict.fromkeys(r["grouping"] for r in shares))
    for grouping in groupings:
        rows = [dict(r, paper=_reference_value(grouping, r["group"], r["category"], r["label_set"]))
                for r in shares if r["grouping"] == grouping and r["category"] in categories]
        title = f"<h3>by {_esc(grouping)}</h3>"
        body = (_share_plot(rows, grouping, categories) if " x " not in grouping else "") + _table(rows, SHARE_COLUMNS)
        parts.append(title + body if " x " not in grouping
                     else f"<details><summary>by {_esc(grouping)} (intersections)</summary>{body}</details>")

    parts.append("<h2>Differences between groups</h2><p>Difference = highest − lowest share; ratio = lowest / "
                 "highest. Extremes from groups with n &lt; 30 are listed.</p>")
    parts.append(_table([r for r in tables["disparities"] if r["category"] in categories and " x " not in r["grouping"]],
                        [("label_set", "label set", "str"), ("grouping", "grouping", "str"),
                         ("category", "category", "str"), ("difference", "max − min", "dpct"),
                         ("ratio", "min / max", "num"), ("direction", "direction", "str"),
                         ("small_extremes", "small extremes", "str")]))

    if "label_set_diff" in tables:
        parts.append(f"<h2>Label set A → B ({_esc(' vs '.join(v for v in prov['label_sets'].values() if v))})</h2>"
                     "<p>Share of each group's images whose top-1 is in the focus categories under each label set; "
                     "change with a paired bootstrap 95% interval; McNemar's test of the paired change.</p>")
        parts.append(_table(tables["label_set_diff"],
                            [("grouping", "grouping", "str"), ("group", "group", "str"), ("n", "n", "str"),
                             ("share_a", "A", "pct"), ("share_b", "B", "pct"), ("change", "change", "dpct"),
                             ("change_low", "95% low", "dpct"), ("change_high", "95% high", "dpct"),
                             ("left_focus", "left", "str"), ("entered_focus", "entered", "str"),
                             ("p", "p", "p"), ("test", "test", "str")]))
        moved = [r for r in tables["transitions"] if r["from"] != r["to"]]
        parts.append("<details><summary>Where images moved (top-1 category under A → under B, new classes by "
                     "name)</summary>" + _table(moved, [("grouping", "grouping", "str"), ("group", "group", "str"),
                                                        ("from", "from", "str"), ("to", "to", "str"),
                                                        ("count", "count", "str"), ("n", "n", "str")]) + "</details>")

    if tables.get("attribute_accuracy"):
        parts.append("<h2>Classifying the group columns (tables 3-5)</h2><p>Zero-shot with the label set's "
                     "attribute prompts; linear probe cross-fitted on the audited sample. "
                     f"<span class='ref'>Paper, FairFace 'White': {_esc(ref.TABLE3_WHITE)}; "
                     f"'Non-White': {_esc(ref.TABLE4_NON_WHITE)} — not directly comparable.</span></p>")
        keep = [r for r in tables["attribute_accuracy"] if " x " not in r["grouping"] or r["grouping"] == "race x gender"]
        parts.append(_table(keep, [("method", "method", "str"), ("attribute", "attribute", "str"),
                                   ("grouping", "grouping", "str"), ("group", "group", "str"), ("n", "n", "str"),
                                   ("accuracy", "accuracy", "pct"), ("low", "95% low", "pct"),
                                   ("high", "95% high", "pct")]))

    parts.append("<h2>Threshold experiments (figure 18)</h2><p>Every label whose probability is at least the "
                 "threshold is given. Labels most associated with a group, by χ² (Fisher when an expected "
                 "count &lt; 5), BH and Holm adjusted; odds ratios with Woolf intervals (Haldane +0.5 for zero "
                 "cells).</p>")
    association = tables["threshold_association"]
    for key in dict.fromkeys((r["grouping"], r["threshold"]) for r in association):
        rows = [r for r in association if (r["grouping"], r["threshold"]) == key]
        parts.append(f"<h3>{_esc(key[0])} at {100 * key[1]:g}%</h3>")
        parts.append(_table(rows, [("label", "label", "str"), ("group", "group", "str"), ("versus", "vs", "str"),
                                   ("share_group", "group share", "pct"), ("share_rest", "vs share", "pct"),
                                   ("more_often_in", "more often in", "str"), ("odds_ratio", "OR", "num"),
                                   ("or_low", "95% low", "num"), ("or_high", "95% high", "num"),
                                   ("test", "test", "str"), ("p", "p", "p"), ("p_bh", "p BH", "p"),
                                   ("p_holm", "p Holm", "p")], limit=20))
    for label_list, left_out in result.get("filtered_labels", {}).items():
        if left_out:
            parts.append(f"<p>{_esc(label_list)}: not tested (fewer than {prov['min_count']} images): "
                         f"{_esc(', '.join(left_out))}</p>")
    sweep = tables["threshold_sweep"]
    for grouping in dict.fromkeys(r["grouping"] for r in sweep):
        if grouping == "all":
            continue
        for category in [c for c in labels_a["categories"] if c in labels_a["focus"]] or list(labels_a["categories"]):
            parts.append(_sweep_plot([r for r in sweep if r["grouping"] == grouping and r["category"] == category],
                                     grouping, category))

    if tables.get("prompt_sensitivity"):
        parts.append("<h2>Prompt sensitivity</h2><p>The same shares under each prompt variant (each template "
                     "filled with the class names); the spread is an uncertainty that intervals do not show.</p>")
        parts.append(_table([r for r in tables["prompt_sensitivity"] if r["category"] in categories],
                            [("grouping", "grouping", "str"), ("group", "group", "str"),
                             ("category", "category", "str"), ("n", "n", "str"), ("min", "min", "pct"),
                             ("mean", "mean", "pct"), ("max", "max", "pct"), ("sd", "sd", "pct"),
                             ("spread", "max − min", "dpct")]))

    parts.append(f"<h2>The paper's figures</h2><p class='ref'>{_esc(ref.CAVEAT)}</p>")
    parts.append(_table(ref.TEXT_FIGURES, [("figure", "figure", "str"), ("percent", "%", "str"),
                                           ("interval", "interval", "str"), ("note", "note", "str")]))
    parts.append("<h2>Methods</h2><ul>" + "".join(f"<li><b>{_esc(k)}</b>: {_esc(v)}</li>"
                                                  for k, v in prov["methods"].items()))
    if prov.get("probe"):
        parts.append(f"<li><b>linear probe</b>: {_esc(prov['probe'])}</li>")
    parts.append("</ul><h3>Label set A</h3>" + _table(labels_a["classes"], [("name", "class", "str"),
                 ("category", "category", "str"), ("prompts", "prompts", "str")]))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(result: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(result), encoding="utf-8")
    return path


def to_frame(result: dict) -> pd.DataFrame:
    """Every table in one long frame: a `table` column, then the union of columns."""
    frames = [pd.DataFrame(rows).assign(table=name) for name, rows in result["tables"].items() if rows]
    frame = pd.concat(frames, ignore_index=True, sort=False)
    return frame[["table", *[c for c in frame.columns if c != "table"]]]


def write_csv(result: dict, path: str | Path) -> Path:
    path = Path(path)
    to_frame(result).to_csv(path, index=False)
    return path
