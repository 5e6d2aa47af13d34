"""Bias audits for every front end: options from a form or the CLI, run, save, re-run, compare,
export, and the tables as frames (the CLI, the Audit tab and the dashboard call these).

An audit runs in the exact precision (app.services.loading.EXACT) in the app as on the CLI; its
session records the model's precision, device and cliplab version, and a re-run loads the model
the same way, so a session made in the app reruns with `cliplab audit rerun` to the same numbers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from cliplab.app.services import audit_report, audit_store
from cliplab.app.services.audit_report import render_html, to_frame
from cliplab.app.services.loading import EXACT, engine_tuple, precision_of, provenance
from cliplab.assets import asset_path
from cliplab.engine import paths
from cliplab.engine.audit import measures
from cliplab.engine.audit.labelsets import load_labelset, parse_labelset, shipped_labelsets
from cliplab.engine.audit.results import AuditResult, Cell, LabelSetChange, SessionDiff
from cliplab.engine.audit.runner import (
    PAPER_THRESHOLDS,
    AuditOptions,
    compare_results,
    resolve_labelsets,
    run_audit,
)
from cliplab.engine.errors import CliplabError
from cliplab.indexes.catalog import Catalog
from cliplab.indexes.indexer import ModelBundle

# what front ends use of the engine's audit package, so they import services only
__all__ = ["PAPER_THRESHOLDS", "AuditOptions", "AuditResult", "SessionDiff", "demo_dataset", "diff", "export",
           "gaps_frame", "list_sessions", "render_html", "rerun", "run", "search_bias_frame", "shipped_labelsets",
           "show", "to_frame"]

EXPORTS = (".html", ".json", ".csv")
DEMO_AUDIT = "demo-audit"  # the demo audit dataset's folder in the data directory


def export(result: AuditResult, out: str | Path) -> Path:
    """Write the result as HTML (report), JSON or CSV, chosen by the file's suffix."""
    out = Path(out)
    if out.suffix.lower() not in EXPORTS:
        raise CliplabError(f"Cannot export to {out.name}: use a file ending in {', '.join(EXPORTS)}.")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".html":
        return audit_report.write_html(result, out)
    if out.suffix.lower() == ".csv":
        return audit_report.write_csv(result, out)
    out.write_text(json.dumps(result.to_dict(), indent=1, allow_nan=False), encoding="utf-8")
    return out


def run(catalog: Catalog, options: AuditOptions, out: str | Path | None = None, bundle: ModelBundle | None = None,
        progress: bool = True, rerun_of: str | None = None, device: str | None = None,
        on_progress: Callable[[str, float], None] | None = None) -> AuditResult:
    """Run an audit, save it as a session in catalog (one transaction, only once every number exists), export.

    bundle: the model to audit with (the app's current one); None loads options.model in the
    exact precision. The model's provenance (precision, device, version) goes into the session.
    on_progress(stage, fraction): the audit's stages as it goes (engine.audit.runner.STAGES), for the
    app's bar and estimate."""
    if out is not None and Path(out).suffix.lower() not in EXPORTS:
        raise CliplabError(f"Cannot export to {Path(out).name}: use a file ending in {', '.join(EXPORTS)}.")
    resolve_labelsets(options)  # a bad label set fails before the model loads
    if bundle is None:
        bundle = ModelBundle.load(options.model, device, EXACT)
    result = run_audit(options, loaded=engine_tuple(bundle), progress=progress, on_progress=on_progress)
    if on_progress is not None:
        on_progress("saving the session", 0.99)
    result.provenance["model"].update({k: v for k, v in provenance(bundle).items() if k != "name"})
    result.session_id = audit_store.new_session_id()
    written = export(result, out) if out is not None else None  # a report that fails leaves no session
    try:
        audit_store.save_session(catalog, result.to_dict(), result.session_id, rerun_of=rerun_of)
    except Exception:
        if written is not None:
            written.unlink(missing_ok=True)
        raise
    return result


def recorded_precision(result: AuditResult) -> str | None:
    """The precision a session's model ran in; sessions saved before it was recorded ran in the exact mode."""
    return result.provenance["model"].get("precision")


def rerun(catalog: Catalog, session_id: str, out: str | Path | None = None, bundle: ModelBundle | None = None,
          progress: bool = True, device: str | None = None) -> tuple[AuditResult, list[str]]:
    """Run a saved session again from its recorded options; returns (new result, differences).

    Without a bundle the recorded model is loaded in the recorded precision. The dataset file, the
    model weights and the precision must be the ones recorded, or the numbers could not match."""
    saved = show(catalog, session_id)
    options = saved.options
    if bundle is None:
        try:
            bundle = ModelBundle.load(options.model, device, recorded_precision(saved) or EXACT)
        except CliplabError:
            if recorded_precision(saved) in (None, "fp32"):
                raise
            # e.g. an fp16 session made on a GPU, re-run on a CPU: run exact and say the precision differs
            bundle = ModelBundle.load(options.model, device, EXACT)
    fresh = run(catalog, options, out, bundle, progress, rerun_of=saved.session_id)
    problems = []
    for what, old, new in (("dataset file", saved.provenance["dataset"]["file_sha256"],
                            fresh.provenance["dataset"]["file_sha256"]),
                           ("model weights", saved.provenance["model"]["fingerprint"],
                            fresh.provenance["model"]["fingerprint"])):
        if old != new:
            problems.append(f"the {what} changed since the session was saved ({old[:12]} then {new[:12]})")
    was = recorded_precision(saved)
    if was is not None and was != precision_of(bundle):
        problems.append(f"the session ran in {was} and the re-run in {precision_of(bundle)}; "
                        f"load the model in {was} to compare")
    return fresh, problems + compare_results(saved, fresh)


def _focus_categories(result: AuditResult, rows: list) -> np.ndarray:
    """The category of label set A of each image's top-1 class, for the given rows of the session."""
    category = {c["name"]: c["category"] for c in result.labelsets["A"]["classes"]}
    index = {r: i for i, r in enumerate(result.per_image["row"])}
    top = result.per_image["top1_a"]
    return np.array([category[top[index[r]]] for r in rows], dtype=object)


def diff(catalog: Catalog, session_a: str, session_b: str) -> SessionDiff:
    """Two sessions over the same dataset rows: where each group's images moved between their label
    sets (or models), with McNemar tests and bootstrap intervals, on the focus categories of A."""
    a, b = show(catalog, session_a), show(catalog, session_b)
    if a.provenance["dataset"]["file_sha256"] != b.provenance["dataset"]["file_sha256"]:
        raise CliplabError(f"Sessions {a.session_id} and {b.session_id} audited different dataset files; "
                           f"a paired comparison needs the same images.")
    common = sorted(set(a.per_image["row"]) & set(b.per_image["row"]))
    if not common:
        raise CliplabError(f"Sessions {a.session_id} and {b.session_id} share no images (different "
                           f"samples); re-run one with the other's sample size and seed.")
    focus = a.labelsets["A"]["focus"]
    if not focus:
        raise CliplabError(f"Session {a.session_id}'s label set names no focus categories to compare.")
    cat_a, cat_b = _focus_categories(a, common), _focus_categories(b, common)
    index_a = {r: i for i, r in enumerate(a.per_image["row"])}
    ia = [index_a[r] for r in common]
    groups = {k: np.array(v, dtype=object)[ia] for k, v in a.per_image["groups"].items()}
    in_a, in_b = np.isin(cat_a, focus), np.isin(cat_b, focus)
    changes, moves = [], []
    for partition in measures.groupings(groups, {}, intersections=False).values():
        changes += measures.label_set_diff(in_a, in_b, partition, a.options.n_boot, a.options.seed)
        moves += measures.transitions(cat_a, cat_b, partition)
    return SessionDiff(a=a.session_id, b=b.session_id, images=len(common), focus=list(focus),
                       label_sets=[a.provenance["label_sets"]["A"], b.provenance["label_sets"]["A"]],
                       models=[a.provenance["model"]["fingerprint"], b.provenance["model"]["fingerprint"]],
                       label_set_diff=changes, transitions=moves)


def list_sessions(catalog: Catalog) -> list[dict]:
    return audit_store.list_sessions(catalog)


def show(catalog: Catalog, session_id: str) -> AuditResult:
    """A saved session (a unique prefix of its id is enough), also one saved by the previous build."""
    return AuditResult.from_dict(audit_store.load_session(catalog, session_id))


# -- the Audit tab's form and tables --------------------------------------------------------------

def shipped_text(name: str) -> str:
    """The YAML of a shipped label set, for the editor."""
    path = asset_path("labelsets", f"{name}.yaml")
    if not path.is_file():
        raise CliplabError(f"No shipped label set {name!r}.")
    return path.read_text(encoding="utf-8")


def labels_from_editor(text: str, shipped: str) -> str | dict:
    """The shipped name when the editor still holds it unchanged (clean provenance), else the edited mapping."""
    if (text or "").strip() == shipped_text(shipped).strip():
        return shipped
    try:
        data = yaml.safe_load(text or "")
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" on line {where.line + 1}" if where is not None else ""
        raise CliplabError(f"The label set is not valid YAML{line}; fix it or reload a shipped set.") from None
    if not isinstance(data, dict):
        raise CliplabError("The label set must be a YAML mapping with name, categories and classes; "
                           "reload a shipped set to start from an example.")
    return data


def experiment_classes(labels: str | dict) -> list[str]:
    """The classes label set B adds: the label set's own class-design experiment, else the paper's 'child'."""
    labelset = parse_labelset(labels, "label set") if isinstance(labels, dict) else load_labelset(labels)
    return list(labelset.add_experiment) or ["child"]


def make_options(dataset: str, labels_text: str, shipped: str, add_child: bool, split: str = "val",
                 sample: int | None = None, seed: int = 0, group_columns: str | None = None,
                 templates: str | None = None, model: str = "demo", bootstrap: int = 1000,
                 label_column: str | None = None, queries: str | None = None, k: int = 10,
                 preset: str = "paper") -> AuditOptions:
    """AuditOptions from the Audit tab's form fields (checked, with a sentence for each bad field).
    add_child: run the label set's class-design experiment (its add_experiment classes, else 'child')
    as label set B; queries: neutral search queries, one per line (empty: the label set's own)."""
    dataset = (dataset or "").strip()
    if not dataset:
        raise CliplabError("Give the dataset: a FairFace folder or a CSV with an image column and group columns.")
    if not Path(dataset).expanduser().exists():
        raise CliplabError(f"The dataset {dataset} does not exist.")
    columns = [c.strip() for c in (group_columns or "").split(",") if c.strip()] or None
    variants = [t.strip() for t in (templates or "").splitlines() if t.strip()]
    labels = labels_from_editor(labels_text, shipped)
    return AuditOptions(dataset=str(Path(dataset).expanduser()), labels=labels,
                        add=experiment_classes(labels) if add_child else [], split=split,
                        sample=int(sample) if sample else None, seed=int(seed or 0), model=model,
                        group_columns=columns, templates=variants, n_boot=int(bootstrap),
                        label_column=(label_column or "").strip() or None,
                        search_queries=[q.strip() for q in (queries or "").splitlines() if q.strip()],
                        search_k=int(k or 10), preset=preset)


def demo_dataset() -> tuple[str, str]:
    """The demo audit dataset (written into the data directory the first time): (CSV path, group columns).
    Scenes of the demo model's world with shape and colour columns; its label set is the shipped 'demo'."""
    from cliplab.trainer.demo.audit_set import GROUP_COLUMNS, write_demo_audit_set

    return str(write_demo_audit_set(demo_dataset_dir())), ", ".join(GROUP_COLUMNS)


def demo_dataset_dir() -> Path:
    return paths.data_dir() / DEMO_AUDIT


GAP_COLUMNS = {"grouping": "grouping", "category": "measure", "worst": "worst group", "worst_value": "worst value",
               "worst_low": "worst 95% low", "worst_high": "worst 95% high", "worst_n": "worst n",
               "best": "best group", "best_value": "best value", "gap": "gap", "difference_low": "gap 95% low",
               "difference_high": "gap 95% high", "ratio": "min / max", "ratio_low": "ratio 95% low",
               "ratio_high": "ratio 95% high", "interval_note": "note", "seed": "bootstrap seed"}


def gaps_frame(result: AuditResult) -> pd.DataFrame:
    """Every measure's worst group and its gap to the best, with intervals: category shares (label set A),
    attribute accuracy and label accuracy, one grouping (not intersections) per row."""
    tables = result.tables
    rows = [(r, f"share: {r.category}") for r in tables.disparities if r.label_set == "A"]
    rows += [(r, f"{r.method} accuracy: {r.attribute}") for r in tables.accuracy_disparities or []]
    rows += [(r, f"worst-group accuracy: {r.attribute}") for r in tables.label_disparities or []]
    frame = pd.DataFrame([r.to_dict() | {"category": what} for r, what in rows if not r.grouping.is_intersection])
    if frame.empty:
        return frame
    return frame[[c for c in GAP_COLUMNS if c in frame]].rename(columns=GAP_COLUMNS).round(4)


SEARCH_COLUMNS = {"query": "query", "grouping": "grouping", "k": "K", "n": "images", "max_skew": "MaxSkew@K",
                  "max_skew_group": "most over-represented", "max_skew_low": "MaxSkew 95% low",
                  "max_skew_high": "MaxSkew 95% high", "min_skew": "MinSkew@K", "min_skew_group": "most under-represented",
                  "min_skew_low": "MinSkew 95% low", "min_skew_high": "MinSkew 95% high", "ndkl": "NDKL",
                  "ndkl_low": "NDKL 95% low", "ndkl_high": "NDKL 95% high", "absent": "absent from the top K"}


def search_bias_frame(result: AuditResult) -> pd.DataFrame:
    """The search-bias table (one row per query and group column); MinSkew of a group absent from the top
    K is minus infinity, shown as '-inf' with the absent groups named."""
    rows = result.tables.search_bias or []
    frame = pd.DataFrame([{**r.to_dict(), "min_skew": r.min_skew, "min_skew_low": r.min_skew_low,
                           "min_skew_high": r.min_skew_high, "absent": ", ".join(r.absent)} for r in rows])
    if frame.empty:
        return frame
    return frame[list(SEARCH_COLUMNS)].rename(columns=SEARCH_COLUMNS).round(4)


def shares_frame(result: AuditResult, label_set: str = "A") -> pd.DataFrame:
    """Category shares per group (tables 6-7 of the paper) as a readable table."""
    frame = pd.DataFrame([r.to_dict() for r in result.tables.category_shares if r.label_set == label_set])
    keep = [c for c in ("grouping", "group", "category", "count", "n", "share", "low", "high") if c in frame]
    return frame[keep].round(4) if keep else frame


def table_frame(rows: list[Cell]) -> pd.DataFrame:
    frame = pd.DataFrame([r.to_dict() for r in rows])
    return frame.round(4) if not frame.empty else frame


def sessions_frame(catalog: Catalog) -> pd.DataFrame:
    return pd.DataFrame(list_sessions(catalog), columns=["id", "created_at", "model", "dataset", "split", "images",
                                                  "label_sets", "precision", "rerun_of"])


# -- what the Audit tab and the dashboard say about a session --------------------------------------

DEMO_CAVEAT = ("This audit ran with the demo model, which knows only coloured shapes and nothing of faces or "
               "people: its numbers show how the audit works, not how a CLIP sorts people. Download an official "
               "model in the Models tab and run the audit with it for a real measurement.")
SHOWN_WARNINGS = 5
DIFF_COLUMNS = {"grouping": "grouping", "group": "group", "n": "images", "share_a": "focus share A",
                "share_b": "focus share B", "change": "change (B − A)", "change_low": "95% low",
                "change_high": "95% high", "left_focus": "left the focus categories",
                "entered_focus": "entered the focus categories", "p": "p", "test": "test", "small": "small group"}
TESTS = {"mcnemar-exact": "McNemar (exact)", "mcnemar-chi2-cc": "McNemar (χ², continuity-corrected)", "mcnemar-none": "none (no image changed)"}


def summary_lines(result: AuditResult) -> list[str]:
    """The session's headline for a page: the demo caveat first, then the findings, then the
    small-cell warnings the CLI prints (their count and the first few)."""
    model = (result.provenance.get("model") or {}).get("name")
    lines = [f"**{DEMO_CAVEAT}**"] if model == "demo" else []
    lines += result.headline
    warnings = result.warnings
    if warnings:
        lines.append(f"{len(warnings)} small-cell warning(s): groups this small give wide intervals.")
        lines += [f"warning: {w}" for w in warnings[:SHOWN_WARNINGS]]
        if len(warnings) > SHOWN_WARNINGS:
            lines.append(f"… and {len(warnings) - SHOWN_WARNINGS} more in the full report.")
    return lines


def diff_frame(rows: list[LabelSetChange]) -> pd.DataFrame:
    """The label-set diff table with readable column names and test names."""
    frame = table_frame(rows)
    if frame.empty:
        return frame
    if "test" in frame:
        frame["test"] = frame["test"].map(lambda t: TESTS.get(t, t))
    if "small" in frame:
        frame["small"] = frame["small"].map(lambda s: "yes" if s else "")
    return frame.rename(columns=DIFF_COLUMNS)
