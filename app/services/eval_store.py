"""Evaluation runs (zero-shot, probes, few-shot, retrieval) in the catalog database, for the dashboard.

Same database and conventions as the audit sessions (app.services.audit_store): the table
(indexes.records.EvalRun) is made and upgraded by the catalog's one Alembic chain.
A run is one row holding its metrics (per-class tables and confusion matrix included) as JSON.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from cliplab.app.services import audit_store
from cliplab.engine.errors import CliplabError
from cliplab.indexes.records import EvalRun


def engine() -> Engine:
    return audit_store.engine()


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


def save_eval_run(kind: str, model_name: str, model_fingerprint: str, dataset: str, metrics: dict,
                  dataset_hash: str | None = None, precision: str | None = None) -> str:
    """Store the metrics of one evaluation (as app.services.evaluate returns them); returns its id."""
    run_id = uuid.uuid4().hex[:12]
    row = EvalRun(id=run_id, created_at=datetime.now(UTC), kind=kind, model_name=model_name,
                  model_fingerprint=model_fingerprint, dataset=str(dataset), dataset_hash=dataset_hash, precision=precision,
                  metrics_json=json.dumps(_json_ready(metrics), default=float))
    with Session(engine()) as session, session.begin():
        session.add(row)
    return run_id


def list_eval_runs() -> list[dict]:
    """Every saved run, newest first, with its headline numbers."""
    with Session(engine()) as session:
        rows = session.scalars(select(EvalRun).order_by(EvalRun.created_at.desc())).all()
    out = []
    for r in rows:
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


def load_eval_run(run_id: str) -> dict:
    with Session(engine()) as session:
        row = session.get(EvalRun, run_id)
    if row is None:
        raise CliplabError(f"No evaluation run {run_id!r}.")
    return {"id": row.id, "kind": row.kind, "model": row.model_name, "model_fingerprint": row.model_fingerprint,
            "dataset": row.dataset, "dataset_hash": row.dataset_hash, "precision": row.precision,
            "created_at": row.created_at.isoformat(timespec="seconds"), "metrics": json.loads(row.metrics_json)}
