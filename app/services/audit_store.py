"""Audit sessions in the catalog database (SQLAlchemy 2).

Same database as the photo catalog: CLIPLAB_DATABASE_URL, else SQLite at data_dir()/catalog.db in
WAL mode. The table (indexes.records.AuditSession) is created and upgraded by the catalog's one
Alembic chain, run when indexes.catalog.open_catalog opens the database, so saved sessions survive
upgrades. A session is saved in one transaction: all of it or nothing.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from functools import cache

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from cliplab.engine.errors import CliplabError
from cliplab.indexes.catalog import default_url, open_catalog
from cliplab.indexes.records import AuditSession


@cache
def _engine(url: str) -> Engine:
    return open_catalog(url).engine  # migrated to head once per process and database


def engine() -> Engine:
    return _engine(default_url())


def new_session_id() -> str:
    return uuid.uuid4().hex[:12]


def save_session(result: dict, session_id: str, rerun_of: str | None = None) -> str:
    """Store a finished result under session_id, in one transaction."""
    provenance = result["provenance"]
    labels = provenance["label_sets"]
    row = AuditSession(
        id=session_id, created_at=datetime.now(UTC), rerun_of=rerun_of,
        model_name=str(provenance["model"]["name"]), model_fingerprint=provenance["model"]["fingerprint"],
        dataset_source=provenance["dataset"]["source"], dataset_sha256=provenance["dataset"]["file_sha256"],
        split=provenance["dataset"]["split"], n_images=provenance["dataset"]["images"],
        label_sets=" vs ".join(v for v in (labels["A"], labels["B"]) if v),
        precision=provenance["model"].get("precision"),
        result_json=json.dumps({**result, "session_id": session_id}, allow_nan=False))
    with Session(engine()) as session, session.begin():
        session.add(row)
    return session_id


def load_session(session_id: str) -> dict:
    """The saved result of a session (a unique prefix of its id is enough)."""
    with Session(engine()) as session:
        rows = session.scalars(select(AuditSession).where(AuditSession.id.startswith(session_id))).all()
    if not rows:
        raise CliplabError(f"No saved audit session has the id {session_id!r}; pick one from the list of saved "
                           "sessions.")
    if len(rows) > 1:
        raise CliplabError(f"{session_id!r} matches {len(rows)} audit sessions; give more of the id.")
    return json.loads(rows[0].result_json)


def list_sessions() -> list[dict]:
    """Every saved session, newest first, without the tables."""
    with Session(engine()) as session:
        rows = session.scalars(select(AuditSession).order_by(AuditSession.created_at.desc())).all()
    return [{"id": r.id, "created_at": r.created_at.isoformat(timespec="seconds"), "rerun_of": r.rerun_of,
             "model": r.model_name, "model_fingerprint": r.model_fingerprint, "dataset": r.dataset_source,
             "split": r.split, "images": r.n_images, "label_sets": r.label_sets, "precision": r.precision}
            for r in rows]
