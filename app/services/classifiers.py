"""Saved classifiers: class names + templates (+ a threshold) kept under a name in the catalog
database (indexes.records.SavedClassifier, made by the Alembic chain), with the provenance of the
model they were saved with (engine, precision, cliplab version), so a saved classifier says how
its probabilities were made. The Classify tab, the captions service (`classifier:NAME`) and the CLI
all come here."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import select

from cliplab.app.services.loading import provenance
from cliplab.engine.errors import CliplabError
from cliplab.indexes.catalog import Catalog
from cliplab.indexes.indexer import ModelBundle
from cliplab.indexes.records import SavedClassifier


def save_classifier(catalog: Catalog, name: str, classes: list[str], templates: list[str],
                    threshold: float | None = None, bundle: ModelBundle | None = None) -> str:
    """Store (or replace) a named classifier, with the model it was made with; returns its name."""
    name = (name or "").strip()
    if not name:
        raise CliplabError("Give the classifier a name before saving it.")
    if not classes:
        raise CliplabError("There are no class names to save: type one class name per line.")
    spec = {"classes": list(classes), "templates": list(templates), "threshold": threshold}
    made_with = json.dumps(provenance(bundle)) if bundle is not None else None
    with catalog.session() as session, session.begin():
        session.merge(SavedClassifier(name=name, saved_at=datetime.now(UTC), spec_json=json.dumps(spec),
                                      provenance_json=made_with))
    return name


def load_classifier(catalog: Catalog, name: str) -> dict:
    """{"classes", "templates", "threshold", "provenance"} of a saved classifier (provenance may be None)."""
    with catalog.session() as session:
        row = session.get(SavedClassifier, (name or "").strip())
    if row is None:
        raise CliplabError(f"No saved classifier named {name!r}; save one from the Classify tab first.")
    return {**json.loads(row.spec_json), "provenance": json.loads(row.provenance_json) if row.provenance_json
            else None}


def list_classifiers(catalog: Catalog) -> list[str]:
    with catalog.session() as session:
        return list(session.scalars(select(SavedClassifier.name).order_by(SavedClassifier.name)))


def delete_classifier(catalog: Catalog, name: str) -> None:
    with catalog.session() as session, session.begin():
        row = session.get(SavedClassifier, name)
        if row is None:
            raise CliplabError(f"No saved classifier named {name!r}.")
        session.delete(row)
