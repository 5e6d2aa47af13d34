"""The app's saved results in the catalog that was opened: audit sessions, evaluation runs and saved
classifiers (the tables of indexes.records, made and upgraded by the catalog's one Alembic chain).

Every function takes the open Catalog, so results land in the database the app or the command
opened (SQLite or PostgreSQL, by URL), never in a process-wide default. Rows go in and come out
as plain values and JSON text; what the JSON holds is the services' business
(app.services.audit_store, eval_store, classifiers).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from cliplab.indexes.catalog import Catalog
from cliplab.indexes.records import AuditSession, EvalRun, SavedClassifier


def new_id() -> str:
    """A fresh id for a session or a run: 12 hex digits."""
    return uuid.uuid4().hex[:12]


# -- audit sessions --------------------------------------------------------------------------------

@dataclass(frozen=True)
class AuditSummary:
    """What a list of audit sessions shows (the result itself stays in the database)."""
    id: str
    created_at: datetime
    rerun_of: str | None
    model_name: str
    model_fingerprint: str
    dataset_source: str
    split: str | None
    n_images: int
    label_sets: str
    precision: str | None


def add_audit_session(catalog: Catalog, session_id: str, *, model_name: str, model_fingerprint: str,
                      dataset_source: str, dataset_sha256: str, split: str | None, n_images: int, label_sets: str,
                      precision: str | None, result_json: str, rerun_of: str | None = None) -> None:
    """Store a finished audit in one transaction: all of it or nothing."""
    row = AuditSession(id=session_id, created_at=datetime.now(UTC), rerun_of=rerun_of, model_name=model_name,
                       model_fingerprint=model_fingerprint, dataset_source=dataset_source,
                       dataset_sha256=dataset_sha256, split=split, n_images=n_images, label_sets=label_sets,
                       precision=precision, result_json=result_json)
    with catalog.session() as session, session.begin():
        session.add(row)


def audit_results(catalog: Catalog, id_prefix: str) -> list[str]:
    """The result JSON of every session whose id starts with id_prefix (a unique prefix gives one)."""
    with catalog.session() as session:
        return list(session.scalars(select(AuditSession.result_json).where(AuditSession.id.startswith(id_prefix))))


def audit_sessions(catalog: Catalog) -> list[AuditSummary]:
    """Every saved audit session, newest first."""
    with catalog.session() as session:
        rows = session.scalars(select(AuditSession).order_by(AuditSession.created_at.desc())).all()
    return [AuditSummary(r.id, r.created_at, r.rerun_of, r.model_name, r.model_fingerprint, r.dataset_source,
                         r.split, r.n_images, r.label_sets, r.precision) for r in rows]


# -- evaluation runs -------------------------------------------------------------------------------

@dataclass(frozen=True)
class StoredEvalRun:
    id: str
    created_at: datetime
    kind: str  # zeroshot | probe | fewshot | retrieval
    model_name: str
    model_fingerprint: str
    dataset: str
    dataset_hash: str | None
    precision: str | None
    metrics_json: str


def add_eval_run(catalog: Catalog, run_id: str, *, kind: str, model_name: str, model_fingerprint: str, dataset: str,
                 metrics_json: str, dataset_hash: str | None = None, precision: str | None = None) -> None:
    """Store the metrics of one evaluation in one transaction."""
    row = EvalRun(id=run_id, created_at=datetime.now(UTC), kind=kind, model_name=model_name,
                  model_fingerprint=model_fingerprint, dataset=dataset, dataset_hash=dataset_hash,
                  precision=precision, metrics_json=metrics_json)
    with catalog.session() as session, session.begin():
        session.add(row)


def _stored(row: EvalRun) -> StoredEvalRun:
    return StoredEvalRun(row.id, row.created_at, row.kind, row.model_name, row.model_fingerprint, row.dataset,
                         row.dataset_hash, row.precision, row.metrics_json)


def eval_runs(catalog: Catalog) -> list[StoredEvalRun]:
    """Every saved evaluation run, newest first."""
    with catalog.session() as session:
        return [_stored(r) for r in session.scalars(select(EvalRun).order_by(EvalRun.created_at.desc()))]


def eval_run(catalog: Catalog, run_id: str) -> StoredEvalRun | None:
    with catalog.session() as session:
        row = session.get(EvalRun, run_id)
        return _stored(row) if row is not None else None


# -- saved classifiers -----------------------------------------------------------------------------

def put_classifier(catalog: Catalog, name: str, spec_json: str, provenance_json: str | None) -> None:
    """Store a classifier under name, replacing one saved before under the same name."""
    with catalog.session() as session, session.begin():
        session.merge(SavedClassifier(name=name, saved_at=datetime.now(UTC), spec_json=spec_json,
                                      provenance_json=provenance_json))


def classifier_json(catalog: Catalog, name: str) -> tuple[str, str | None] | None:
    """(spec JSON, provenance JSON or None) of the classifier saved under name; None when there is none."""
    with catalog.session() as session:
        row = session.get(SavedClassifier, name)
        return (row.spec_json, row.provenance_json) if row is not None else None


def classifier_names(catalog: Catalog) -> list[str]:
    with catalog.session() as session:
        return list(session.scalars(select(SavedClassifier.name).order_by(SavedClassifier.name)))


def remove_classifier(catalog: Catalog, name: str) -> bool:
    """Delete the classifier saved under name; False when there was none."""
    with catalog.session() as session, session.begin():
        row = session.get(SavedClassifier, name)
        if row is None:
            return False
        session.delete(row)
        return True
