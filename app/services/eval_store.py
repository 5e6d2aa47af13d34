"""Evaluation runs (zero-shot, probes, few-shot, retrieval) in the catalog that was opened
(indexes.store), for the dashboard.

Same conventions as the audit sessions (app.services.audit_store): the table (indexes.records.EvalRun)
is made and upgraded by the catalog's one Alembic chain. A run is one row holding its metrics
(per-class tables and confusion matrix included) as JSON.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from cliplab.engine.errors import CliplabError
from cliplab.indexes import store
from cliplab.indexes.catalog import Catalog


def _json_ready(value):
    if isinstance(value, pd.DataFrame):
        return value.to_dict(orient="records")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def save_eval_run(catalog: Catalog, kind: str, model_name: str, model_fingerprint: str, dataset: str, metrics: dict,
                  dataset_hash: str | None = None, precision: str | None = None) -> str:
    """Store the metrics of one evaluation (as app.services.evaluate returns them); returns its id."""
    run_id = store.new_id()
    store.add_eval_run(catalog, run_id, kind=kind, model_name=model_name, model_fingerprint=model_fingerprint,
                       dataset=str(dataset), dataset_hash=dataset_hash, precision=precision,
                       metrics_json=json.dumps(_json_ready(metrics), default=float))
    return run_id


def list_eval_runs(catalog: Catalog) -> list[dict]:
    """Every saved run, newest first, with its headline numbers."""
    out = []
    for r in store.eval_runs(catalog):
        metrics = json.loads(r.metrics_json)
        out.append({"id": r.id, "created_at": r.created_at.isoformat(timespec="seconds"), "kind": r.kind,
                    "model": r.model_name, "model_fingerprint": r.model_fingerprint, "dataset": r.dataset,
                    "dataset_hash": r.dataset_hash, "precision": r.precision, **headline(metrics)})
    return out


def headline(metrics: dict) -> dict:
    """The numbers a run is compared by: accuracies, or recall@1 both ways for retrieval."""
    numbers = {k: metrics[k] for k in ("top1", "top5", "mean_per_class_recall", "zero_shot_top1")
               if isinstance(metrics.get(k), (int, float))}
    for direction in ("image_to_text", "text_to_image"):
        if isinstance(metrics.get(direction), dict) and "1" in metrics[direction]:
            numbers[f"{direction}_R@1"] = metrics[direction]["1"]
    return numbers


def load_eval_run(catalog: Catalog, run_id: str) -> dict:
    row = store.eval_run(catalog, run_id)
    if row is None:
        raise CliplabError(f"No evaluation run {run_id!r}.")
    return {"id": row.id, "kind": row.kind, "model": row.model_name, "model_fingerprint": row.model_fingerprint,
            "dataset": row.dataset, "dataset_hash": row.dataset_hash, "precision": row.precision,
            "created_at": row.created_at.isoformat(timespec="seconds"), "metrics": json.loads(row.metrics_json)}
