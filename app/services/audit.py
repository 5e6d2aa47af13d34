"""Bias audits for every front end: run, save, re-run, compare, export (CLI and Gradio call these)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from app.services import audit_store
from engine.audit import measures, report
from engine.audit.runner import AuditOptions, compare_results, run_audit
from engine.errors import CliplabError

EXPORTS = (".html", ".json", ".csv")


def export(result: dict, out: str | Path) -> Path:
    """Write the result as HTML (report), JSON or CSV, chosen by the file's suffix."""
    out = Path(out)
    if out.suffix.lower() not in EXPORTS:
        raise CliplabError(f"Cannot export to {out.name}: use a file ending in {', '.join(EXPORTS)}.")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".html":
        return report.write_html(result, out)
    if out.suffix.lower() == ".csv":
        return report.write_csv(result, out)
    out.write_text(json.dumps(result, indent=1, allow_nan=False), encoding="utf-8")
    return out


def run(options: AuditOptions, out: str | Path | None = None, loaded: tuple | None = None,
        progress: bool = True, rerun_of: str | None = None) -> dict:
    """Run an audit, save it as a session (one transaction, only once every number exists), export."""
    if out is not None and Path(out).suffix.lower() not in EXPORTS:
        raise CliplabError(f"Cannot export to {Path(out).name}: use a file ending in {', '.join(EXPORTS)}.")
    result = run_audit(options, loaded=loaded, progress=progress)
    result["session_id"] = audit_store.new_session_id()
    written = export(result, out) if out is not None else None  # a report that fails leaves no session
    try:
        audit_store.save_session(result, result["session_id"], rerun_of=rerun_of)
    except Exception:
        if written is not None:
            written.unlink(missing_ok=True)
        raise
    return result


def options_of(result: dict) -> AuditOptions:
    return AuditOptions(**result["options"])


def rerun(session_id: str, out: str | Path | None = None, loaded: tuple | None = None,
          progress: bool = True) -> tuple[dict, list[str]]:
    """Run a saved session again from its recorded options; returns (new result, differences).

    The dataset file and the model weights must be the ones recorded, or the numbers could not match."""
    saved = audit_store.load_session(session_id)
    options = options_of(saved)
    fresh = run(options, out, loaded, progress, rerun_of=saved["session_id"])
    problems = []
    for what, old, new in (("dataset file", saved["provenance"]["dataset"]["file_sha256"],
                            fresh["provenance"]["dataset"]["file_sha256"]),
                           ("model weights", saved["provenance"]["model"]["fingerprint"],
                            fresh["provenance"]["model"]["fingerprint"])):
        if old != new:
            problems.append(f"the {what} changed since the session was saved ({old[:12]} then {new[:12]})")
    return fresh, problems + compare_results(saved, fresh)


def diff(session_a: str, session_b: str) -> dict:
    """Two sessions over the same dataset rows: where each group's images moved between their label
    sets (or models), with McNemar tests and bootstrap intervals, on the focus categories of A."""
    a, b = audit_store.load_session(session_a), audit_store.load_session(session_b)
    if a["provenance"]["dataset"]["file_sha256"] != b["provenance"]["dataset"]["file_sha256"]:
        raise CliplabError(f"Sessions {a['session_id']} and {b['session_id']} audited different dataset files; "
                           f"a paired comparison needs the same images.")
    rows_a, rows_b = a["per_image"]["row"], b["per_image"]["row"]
    common = sorted(set(rows_a) & set(rows_b))
    if not common:
        raise CliplabError(f"Sessions {a['session_id']} and {b['session_id']} share no images (different "
                           f"samples); re-run one with the other's --sample and --seed.")
    index_a = {r: i for i, r in enumerate(rows_a)}
    index_b = {r: i for i, r in enumerate(rows_b)}
    ia, ib = [index_a[r] for r in common], [index_b[r] for r in common]
    category_a = {c["name"]: c["category"] for c in a["labelsets"]["A"]["classes"]}
    category_b = {c["name"]: c["category"] for c in b["labelsets"]["A"]["classes"]}
    top_a = np.array(a["per_image"]["top1_a"], dtype=object)[ia]
    top_b = np.array(b["per_image"]["top1_a"], dtype=object)[ib]
    cat_a = np.array([category_a[t] for t in top_a], dtype=object)
    cat_b = np.array([category_b[t] for t in top_b], dtype=object)
    focus = a["labelsets"]["A"]["focus"]
    if not focus:
        raise CliplabError(f"Session {a['session_id']}'s label set names no focus categories to compare.")
    groups = {k: np.array(v, dtype=object)[ia] for k, v in a["per_image"]["groups"].items()}
    seed, n_boot = a["options"]["seed"], a["options"]["n_boot"]
    tables: dict[str, list[dict]] = {"label_set_diff": [], "transitions": []}
    in_a, in_b = np.isin(cat_a, focus), np.isin(cat_b, focus)
    for name, (labels, order) in measures.groupings(groups, {}, intersections=False).items():
        tables["label_set_diff"] += measures.label_set_diff(in_a, in_b, labels, order, n_boot, seed, name)
        tables["transitions"] += measures.transitions(cat_a, cat_b, labels, order, name)
    return {"a": a["session_id"], "b": b["session_id"], "images": len(common), "focus": focus,
            "label_sets": [a["provenance"]["label_sets"]["A"], b["provenance"]["label_sets"]["A"]],
            "models": [a["provenance"]["model"]["fingerprint"], b["provenance"]["model"]["fingerprint"]],
            "tables": tables}


def list_sessions() -> list[dict]:
    return audit_store.list_sessions()


def show(session_id: str) -> dict:
    return audit_store.load_session(session_id)
