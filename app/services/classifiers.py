"""Saved classifiers: class names + templates (+ a threshold) kept under a name in the catalog that
was opened (indexes.store; the table indexes.records.SavedClassifier is made by the Alembic chain),
with the provenance of the model they were saved with (engine, precision, cliplab version), so a
saved classifier says how its probabilities were made. The Classify tab, the captions service (`classifier:NAME`) and the CLI
all come here."""

from __future__ import annotations

import json

from cliplab.app.services.loading import provenance
from cliplab.engine.errors import CliplabError
from cliplab.indexes import store
from cliplab.indexes.catalog import Catalog
from cliplab.indexes.indexer import ModelBundle


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
    store.put_classifier(catalog, name, json.dumps(spec), made_with)
    return name


def load_classifier(catalog: Catalog, name: str) -> dict:
    """{"classes", "templates", "threshold", "provenance"} of a saved classifier (provenance may be None)."""
    found = store.classifier_json(catalog, (name or "").strip())
    if found is None:
        raise CliplabError(f"No saved classifier named {name!r}; save one from the Classify tab first.")
    spec, made_with = found
    return {**json.loads(spec), "provenance": json.loads(made_with) if made_with else None}


def list_classifiers(catalog: Catalog) -> list[str]:
    return store.classifier_names(catalog)


def delete_classifier(catalog: Catalog, name: str) -> None:
    if not store.remove_classifier(catalog, name):
        raise CliplabError(f"No saved classifier named {name!r}.")


def save_head(catalog: Catalog, name: str, head: dict | None) -> None:
    """The classifier's improved head (app.services.labels.improve_classifier) stored with it; None removes it
    (the zero-shot weights are used). Its provenance is kept."""
    found = store.classifier_json(catalog, (name or "").strip())
    if found is None:
        raise CliplabError(f"No saved classifier named {name!r}; save one from the Classify tab first.")
    spec, made_with = found
    spec = {k: v for k, v in json.loads(spec).items() if k != "head"}
    if head is not None:
        spec["head"] = head
    store.put_classifier(catalog, name, json.dumps(spec), made_with)


def set_threshold(catalog: Catalog, name: str, value: float | str | None) -> float | None:
    """Save the classifier's abstention threshold (below it a photo is "none of these"); None removes it."""
    if value is not None:
        try:
            value = float(value)
        except ValueError:
            raise CliplabError(f"The threshold is a probability between 0 and 1 (e.g. 0.6), not {value!r}.") from None
        if not 0.0 <= value <= 1.0:
            raise CliplabError(f"The threshold is a probability between 0 and 1 (e.g. 0.6), not {value:g}.")
    found = store.classifier_json(catalog, (name or "").strip())
    if found is None:
        raise CliplabError(f"No saved classifier named {name!r}; save one from the Classify tab first.")
    spec, made_with = found
    store.put_classifier(catalog, name, json.dumps({**json.loads(spec), "threshold": value}), made_with)
    return value
