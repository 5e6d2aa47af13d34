"""Audit results are typed (engine.audit.results): intersections are groupings with a tuple of
columns, never recognised by their name; and a session saved by the previous build, whose results
were nested dicts naming intersections "race x gender", still loads, shows, exports, reruns and diffs.

tests/data/audit_session_previous_build.json.gz is such a session, exactly as the catalog held it:
made by the previous build's app.services.audit.run with the demo model on
make_fairface(root, n_per_cell=1), options AuditOptions(dataset=root, add=["child"],
templates=["a picture of a {}."], n_boot=50, probe_folds=0, min_count=2, sweep=[0.04, 0.16],
thresholds=[0.04], group_columns=["race", "gender"]).
"""

from __future__ import annotations

import gzip
import json
import re
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_support import run_cli as run_cli_with_modules
from test_audit_measures import inject, make_fairface

from cliplab.app.services import audit, audit_report, audit_store
from cliplab.engine.api import _demo_available
from cliplab.engine.audit.datasets import AuditDataset
from cliplab.engine.audit.labelsets import load_labelset
from cliplab.engine.audit.results import RACE_BINARY, AuditResult, Grouping
from cliplab.engine.audit.runner import AuditOptions, headline, measure
from cliplab.indexes.catalog import open_catalog

PREVIOUS = Path(__file__).parent / "data" / "audit_session_previous_build.json.gz"
run_cli = partial(run_cli_with_modules, modules=["audit"])


@pytest.fixture
def fairface(tmp_path) -> Path:
    make_fairface(tmp_path / "fairface", n_per_cell=1)  # the same bytes as the session's dataset (sha256)
    return tmp_path / "fairface"


def previous_session(dataset: Path) -> dict:
    payload = json.loads(gzip.decompress(PREVIOUS.read_bytes()))
    payload["options"]["dataset"] = str(dataset)  # where the recorded files lie on this machine
    return payload


def old_csv(payload: dict) -> str:
    """The previous build's CSV export of a session (its report.to_frame, on the saved JSON)."""
    frames = [pd.DataFrame(rows).assign(table=name) for name, rows in payload["tables"].items() if rows]
    frame = pd.concat(frames, ignore_index=True, sort=False)
    return frame[["table", *[c for c in frame.columns if c != "table"]]].to_csv(index=False)


def test_a_previous_build_session_reads_as_typed_cells(fairface):
    payload = previous_session(fairface)
    assert "groupings" not in payload and payload["tables"]["category_shares"][0]["grouping"] == "all"
    result = AuditResult.from_dict(payload)
    assert result.tables.to_dict() == payload["tables"]  # every key and number as saved
    race_x_gender = Grouping(("race", "gender"))
    crossed = [c for c in result.tables.category_shares if c.grouping.is_intersection]
    assert crossed and {c.grouping for c in crossed} == {race_x_gender}
    assert ("Black", "Female") in {c.group.values for c in crossed}
    binary = {c.grouping for c in result.tables.category_shares if c.grouping.derived}
    assert binary == {Grouping(("race",), RACE_BINARY)} and not binary.pop().is_intersection
    assert {g.name for g in result.groupings} == {"all", "race", "gender", "race x gender", RACE_BINARY}
    # saved again, the session lists its groupings by columns and reads back the same
    saved = result.to_dict()
    assert {"name": "race x gender", "columns": ["race", "gender"]}.items() <= next(
        g for g in saved["groupings"] if g["name"] == "race x gender").items()
    again = AuditResult.from_dict(json.loads(json.dumps(saved)))
    assert again.to_dict() == saved and again.groupings == result.groupings


@pytest.mark.skipif(not _demo_available(), reason="the session was made with the committed demo model")
def test_a_previous_build_session_shows_exports_reruns_and_diffs(capsys, fairface, tmp_path):
    payload = previous_session(fairface)
    old = payload["session_id"]
    catalog = open_catalog()  # the catalog the CLI opens: CLIPLAB_HOME's
    audit_store.save_session(catalog, payload, old)
    code, out, err = run_cli(capsys, "audit", "list")
    assert code == 0 and old in out, err
    code, out, err = run_cli(capsys, "audit", "show", old)
    assert code == 0 and f"session {old}" in out and payload["headline"][0] in out, err
    code, out, _ = run_cli(capsys, "audit", "show", old, "--csv")
    assert out == old_csv(payload)  # the same CSV as the previous build wrote
    code, out, _ = run_cli(capsys, "audit", "show", old, "--out", tmp_path / "old.html")
    text = (tmp_path / "old.html").read_text()
    assert "<summary>by race x gender (intersections)</summary>" in text and "<h3>by race</h3>" in text
    code, out, _ = run_cli(capsys, "audit", "show", old, "--json")
    assert json.loads(out)["tables"] == payload["tables"]

    code, out, err = run_cli(capsys, "audit", "rerun", old)
    assert code == 0, out + err
    assert "re-run matches the saved session: every table has the same numbers" in out
    fresh = re.search(r"^session (\w+)", out, re.M).group(1)
    code, out, err = run_cli(capsys, "audit", "diff", old, fresh)
    assert code == 0 and "14 shared images" in out and "change +0.0%" in out, err
    assert audit.diff(catalog, old, fresh).to_dict()["images"] == 14

    # the Audit tab shows, diffs and exports it (its handlers, without a browser)
    from cliplab.app.services.app_state import AppState
    from cliplab.app.ui import audit as tab
    state = AppState(catalog=catalog)
    said, headline_text, shares, _gaps, _search, report = tab.do_show(state, old)
    assert old in said and payload["headline"][0] in headline_text and "Bias audit" in report
    assert "race x gender" in set(shares["grouping"])
    assert list(tab.do_diff(state, old, fresh)["left the focus categories"]) == [0] * 10  # all, 7 races, 2 genders
    assert "<h1>Bias audit" in Path(tab.do_export(state, old)).read_text()


def test_a_column_named_like_an_intersection_is_one_column():
    """The previous build took every grouping whose name held " x " for an intersection, so a CSV
    column named 'skin x tone' lost its gaps from the headline and its plot from the report."""
    n, rng = 60, np.random.default_rng(0)
    tone = np.array(["light", "dark"] * (n // 2), dtype=object)
    groups = {"skin x tone": tone, "gender": np.array(["Male"] * (n // 2) + ["Female"] * (n // 2), dtype=object)}
    dataset = AuditDataset(source="people.csv", kind="csv", split=None, file_hash="0" * 64, paths=[None] * n,
                           groups=groups, values={"skin x tone": ["light", "dark"], "gender": ["Male", "Female"]},
                           rows=np.arange(n), n_rows=n)
    labels = load_labelset("paper")
    crime, person = labels.class_categories.index("crime"), labels.class_categories.index("person")
    probs = inject(np.where(tone == "dark", crime, person), len(labels.classes), rng)
    measured = measure(probs, labels, dataset, AuditOptions(dataset="people.csv", probe_folds=0, n_boot=50))
    column = Grouping(("skin x tone",))
    assert column in measured.groupings and not column.is_intersection
    assert Grouping(("skin x tone", "gender")).is_intersection
    assert any(line.startswith("crime share is highest for dark") for line in headline(measured.tables, labels))
    html = audit_report._shares(measured.tables.category_shares, ["crime"])
    assert "<h3>by skin x tone</h3><img" in html
    assert "<summary>by skin x tone x gender (intersections)</summary>" in html
