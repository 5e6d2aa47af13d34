"""Audit sessions in the catalog that was opened (indexes.store): a finished result saved under an
id with its provenance, listed and loaded again. The table (indexes.records.AuditSession) is made
and upgraded by the catalog's one Alembic chain; a session is saved in one transaction.
"""

from __future__ import annotations

import json

from cliplab.engine.errors import CliplabError
from cliplab.indexes import store
from cliplab.indexes.catalog import Catalog


def new_session_id() -> str:
    return store.new_id()


def save_session(catalog: Catalog, result: dict, session_id: str, rerun_of: str | None = None) -> str:
    """Store a finished result under session_id, in one transaction."""
    provenance = result["provenance"]
    labels = provenance["label_sets"]
    store.add_audit_session(
        catalog, session_id, rerun_of=rerun_of,
        model_name=str(provenance["model"]["name"]), model_fingerprint=provenance["model"]["fingerprint"],
        dataset_source=provenance["dataset"]["source"], dataset_sha256=provenance["dataset"]["file_sha256"],
        split=provenance["dataset"]["split"], n_images=provenance["dataset"]["images"],
        label_sets=" vs ".join(v for v in (labels["A"], labels["B"]) if v),
        precision=provenance["model"].get("precision"),
        result_json=json.dumps({**result, "session_id": session_id}, allow_nan=False))
    return session_id


def load_session(catalog: Catalog, session_id: str) -> dict:
    """The saved result of a session (a unique prefix of its id is enough)."""
    found = store.audit_results(catalog, session_id)
    if not found:
        raise CliplabError(f"No saved audit session has the id {session_id!r}; pick one from the list of saved "
                           "sessions.")
    if len(found) > 1:
        raise CliplabError(f"{session_id!r} matches {len(found)} audit sessions; give more of the id.")
    return json.loads(found[0])


def list_sessions(catalog: Catalog) -> list[dict]:
    """Every saved session, newest first, without the tables."""
    return [{"id": r.id, "created_at": r.created_at.isoformat(timespec="seconds"), "rerun_of": r.rerun_of,
             "model": r.model_name, "model_fingerprint": r.model_fingerprint, "dataset": r.dataset_source,
             "split": r.split, "images": r.n_images, "label_sets": r.label_sets, "precision": r.precision}
            for r in store.audit_sessions(catalog)]
