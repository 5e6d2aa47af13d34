"""The demo audit a newcomer runs at once (issue 29 item 6), and the app and the CLI giving the same numbers
for it; the DataComp preset end to end with the demo model. Needs the committed demo model."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import pytest
from cli_support import run_cli as run_cli_with_modules

from cliplab.app.services import audit
from cliplab.app.services.app_state import AppState
from cliplab.engine.api import _demo_available
from cliplab.engine.audit.runner import compare_results
from cliplab.indexes.catalog import open_catalog

pytestmark = pytest.mark.skipif(not _demo_available(), reason="needs the committed demo model")
run_cli = partial(run_cli_with_modules, modules=["audit"])


def session_id(out: str) -> str:
    return re.search(r"^session (\w+)", out, re.M).group(1)


def test_the_fresh_install_demo_audit_shows_its_class_design_gap_and_equals_the_cli(capsys):
    from cliplab.app.ui.audit import demo_form

    state = AppState(model="demo", catalog=open_catalog())
    dataset, columns, shipped, editor = demo_form("")  # what the Audit tab's empty form is filled with
    assert Path(dataset).is_file() and columns == "shape, colour" and shipped == "demo"
    options = audit.make_options(dataset, editor, shipped, add_child=True, sample=120, seed=0, group_columns=columns,
                                 model=state.model_name, bootstrap=100)
    assert options.labels == "demo" and options.add == ["cross", "hexagon", "diamond"]
    options.probe_folds = 0  # the linear probe has tests of its own; both runs skip it alike
    result = audit.run(state.catalog, options, bundle=state.bundle, progress=False)  # the tab's one click

    text = {r.group.name: r for r in result.tables.category_shares
            if r.label_set == "A" and r.category == "text" and r.grouping.name == "shape"}
    named = [text[s].share for s in ("circle", "triangle", "heart")]
    left_out = [text[s].share for s in ("cross", "diamond")]
    assert min(left_out) > max(named) + 0.25  # the shapes without a class of their own are called 'text'
    gap = next(r for r in result.tables.disparities if r.label_set == "A" and r.category == "text"
               and r.grouping.name == "shape")
    assert gap.worst in ("cross", "diamond", "hexagon") and gap.difference_low > 0.2  # measurable: its CI clears 0
    everyone = next(r for r in result.tables.label_set_diff if r.grouping.is_all)
    assert everyone.change_high < 0 and everyone.p < 0.01  # adding their classes moves them back
    assert {r.query for r in result.tables.search_bias} == {"a photo of a shape.", "a drawing of a shape.",
                                                            "a photo of an object.", "a photo of a word."}
    assert not audit.gaps_frame(result).empty and len(audit.search_bias_frame(result)) == 8
    assert "Search bias" in audit.render_html(result) and "worst group" in audit.render_html(result)

    code, out, err = run_cli(capsys, "audit", "--dataset", "demo", "--add", "cross,hexagon,diamond", "--sample", 120,
                             "--seed", 0, "--bootstrap", 100, "--probe-folds", 0, "--model", "demo")
    assert code == 0, err
    assert "search bias of" in out and "text share is highest for" in out
    by_cli = audit.show(state.catalog, session_id(out))
    assert compare_results(result, by_cli) == []  # the same numbers, search bias and gaps included


def test_the_datacomp_preset_leads_with_worst_group_accuracy(capsys, tmp_path):
    dataset, _ = audit.demo_dataset()
    report = tmp_path / "report.html"
    code, out, err = run_cli(capsys, "audit", "--dataset", dataset, "--labels", "demo", "--label-column", "shape",
                             "--group-columns", "colour", "--preset", "datacomp", "--sample", 60, "--probe-folds", 0,
                             "--bootstrap", 100, "--queries", "a photo of a red shape.", "--k", 5, "--out", report)
    assert code == 0, err
    assert "worst-group shape accuracy by colour:" in out
    html = report.read_text()
    assert html.index("Worst-group accuracy (shape)") < html.index("Top-1 category shares")
    result = audit.show(open_catalog(), session_id(out))
    (row,) = result.tables.search_bias
    assert row.k == 5 and row.query == "a photo of a red shape."
    colour = next(r for r in result.tables.label_disparities if r.grouping.name == "colour")
    worst = next(r for r in result.tables.label_accuracy if r.grouping.name == "colour" and r.group.name == colour.worst)
    assert colour.worst_value == worst.accuracy == min(r.accuracy for r in result.tables.label_accuracy
                                                       if r.grouping.name == "colour")

    code, out, err = run_cli(capsys, "audit", "--dataset", dataset, "--labels", "demo", "--group-columns", "colour",
                             "--preset", "datacomp")
    assert code != 0 and "needs a label column" in out + err
