"""A saved classifier on the library: apply it (labels for every stored embedding), abstain below a threshold,
review where it is unsure, confirm or correct labels (labelled examples, with the person who gave them), and
improve it from those examples. The Classify tab's library panel and `cliplab labels ...` both come here.

Labels are computed from the stored embeddings only (no photo is decoded again), with class weights made in
the library's recorded mode (indexes.indexer.library_bundle: the text prompts go through the same encoder as
search queries). `apply` is incremental: embeddings added or re-embedded since the last application are
labelled, labels of removed ones dropped, and everything recomputed when the classifier's fingerprint (its
classes, templates, weights, scale and model) changes. Indexing and searching with a label filter call it.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cliplab.app.services.classifiers import load_classifier, save_head
from cliplab.engine.classifier_file import ClassifierFile, export_onnx
from cliplab.engine.errors import CliplabError
from cliplab.engine.heads import Improvement, improve
from cliplab.engine.labelling import suggest_threshold, top_labels, unlabelled_counts
from cliplab.engine.zeroshot import DEFAULT_SCALE, build_classifier
from cliplab.indexes import labels as store
from cliplab.indexes.catalog import Catalog
from cliplab.indexes.indexer import ModelBundle, library_bundle

MAX_CLASSES = 1000  # a library labelled by more classes than this is unreadable; split the label set


# -- the classifier as the library's model sees it ---------------------------------------------------

def library_classifier(catalog: Catalog, bundle: ModelBundle, name: str, spec: dict | None = None) -> ClassifierFile:
    """The saved classifier's class weights for this model's library: its improved head when it has one for this
    model, else the zero-shot ensembles embedded in the library's recorded mode."""
    spec = spec if spec is not None else load_classifier(catalog, name)
    classes, templates = list(spec["classes"]), list(spec["templates"])
    check_classes(classes)
    model_id = bundle.register(catalog)
    library = library_bundle(catalog, bundle, model_id)
    scale = float(spec.get("scale") or DEFAULT_SCALE)
    head = spec.get("head") or {}
    made_for = (bundle.fingerprint, classes, templates, scale)  # a head belongs to its prior: same model and prompts
    if (head.get("model_fingerprint"), head.get("classes"), head.get("templates"), head.get("scale")) == made_for:
        weights = np.frombuffer(base64.b64decode(head["weights"]), "<f4").reshape(head["shape"]).astype(np.float32)
        made = {k: v for k, v in head.items() if k not in ("weights", "shape", "classes", "templates", "scale")}
    else:
        weights = build_classifier(library.encoder, library.tokenizer, classes, templates, scale=scale,
                                   truncate=True).weights
        made = {}
    return ClassifierFile(name, classes, templates, weights, scale, spec.get("threshold"), bundle.name,
                          bundle.fingerprint, library.resolve(), library.preprocess.record(), made)


def zero_shot_weights(catalog: Catalog, bundle: ModelBundle, spec: dict) -> np.ndarray:
    library = library_bundle(catalog, bundle)
    return build_classifier(library.encoder, library.tokenizer, list(spec["classes"]), list(spec["templates"]),
                            scale=float(spec.get("scale") or DEFAULT_SCALE), truncate=True).weights


def check_classes(classes: list[str]) -> None:
    """A label set a library can be labelled with: two or more distinct classes, at most MAX_CLASSES."""
    if len(classes) < 2:
        raise CliplabError(f"The classifier has {'one class' if classes else 'no classes'}: a classifier needs at "
                           "least two classes to choose between; add another.")
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise CliplabError(f"The class {repeated[0]!r} appears twice in the classifier: keep each class once.")
    if len(classes) > MAX_CLASSES:
        raise CliplabError(f"{len(classes):,} classes is more than a library is labelled with (at most "
                           f"{MAX_CLASSES:,}); split the label set into smaller classifiers.")


# -- applying ---------------------------------------------------------------------------------------

@dataclass
class Applied:
    name: str
    labelled: int  # embeddings (re)labelled by this call
    removed: int  # labels dropped because their embedding is gone
    total: int  # embeddings with a label now
    recomputed: bool  # every label was recomputed (first application, or the classifier changed)
    seconds: float
    fingerprint: str

    @property
    def summary(self) -> str:
        if not self.labelled and not self.removed:
            return f"The labels of {self.name!r} are up to date ({self.total:,} photos)."
        what = "labelled every photo again" if self.recomputed else f"labelled {self.labelled:,} new or changed photos"
        gone = f", dropped the labels of {self.removed:,} removed ones" if self.removed else ""
        return f"{self.name!r} {what}{gone}: {self.total:,} photos labelled ({self.seconds:.2f} s)."


def apply(catalog: Catalog, bundle: ModelBundle, name: str) -> Applied:
    """Bring the classifier's labels on this model's library up to date (see the module docstring)."""
    started = time.perf_counter()
    classifier = library_classifier(catalog, bundle, name)
    model_id = bundle.register(catalog)
    fingerprint = classifier.fingerprint
    version = store.model_version(catalog, model_id)
    state = store.run_state(catalog, name, model_id)
    have_ids, have_versions = store.label_versions(catalog, name, model_id)
    if state is not None and state.fingerprint == fingerprint and state.model_version == version:
        return Applied(name, 0, 0, len(have_ids), False, time.perf_counter() - started, fingerprint)
    ids, versions = store.embedding_versions(catalog, model_id)
    recompute = state is None or state.fingerprint != fingerprint
    if recompute:
        todo, drop = ids, np.zeros(0, np.int64)
    else:
        known = dict(zip(have_ids.tolist(), have_versions.tolist()))
        todo = np.array([i for i, v in zip(ids.tolist(), versions.tolist()) if known.get(i) != v], np.int64)
        drop = np.setdiff1d(have_ids, ids)
    todo_ids, todo_versions, vectors = store.stored_vectors(catalog, model_id, todo)
    top = top_labels(classifier.weights, classifier.scale, vectors, k=3)
    names = classifier.classes
    rows = [[(names[j], float(p)) for j, p in zip(idx, prob)] for idx, prob in zip(top.indices, top.probs)]
    store.write_labels(catalog, name, model_id, fingerprint=fingerprint, version=version, file_ids=todo_ids,
                       versions=todo_versions, labels=rows, drop=drop, replace_all=recompute)
    total = len(store.label_versions(catalog, name, model_id)[0])
    return Applied(name, len(todo_ids), len(drop), total, recompute, time.perf_counter() - started, fingerprint)


def refresh(catalog: Catalog, bundle: ModelBundle) -> list[Applied]:
    """Every classifier applied to this model's library brought up to date (after indexing, before a search
    filters by label)."""
    return [apply(catalog, bundle, name) for name in store.applied_classifiers(catalog, bundle.register(catalog))]


def require_applied(catalog: Catalog, bundle: ModelBundle, name: str) -> int:
    """The model id, once the classifier's labels are up to date (applied first when they were never made)."""
    apply(catalog, bundle, name)
    return bundle.register(catalog)


@dataclass(frozen=True)
class LabelledPhoto:
    file_id: int
    path: str
    top: list[tuple[str, float]]  # up to three (label, probability), most probable first


def labelled_photos(catalog: Catalog, bundle: ModelBundle, name: str, label: str | None = None,
                    min_probability: float | None = None, sort: str = "probability",
                    limit: int = 100) -> tuple[list[LabelledPhoto], int]:
    """The library by label: photos whose top label is `label` (any when None) with at least min_probability
    (default: the classifier's threshold), sorted by probability (highest first) or by path; and how many match."""
    if sort not in ("probability", "path"):
        raise CliplabError(f"Unknown sort {sort!r}: use probability or path.")
    spec = load_classifier(catalog, name)
    if label is not None and label not in spec["classes"]:
        raise CliplabError(f"{label!r} is not a class of the classifier {name!r}.")
    least = spec.get("threshold") if min_probability is None else min_probability
    model_id = require_applied(catalog, bundle, name)
    ids = store.ids_with_label(catalog, name, model_id, label, float(least or 0.0))
    found = store.labels_of(catalog, name, model_id, ids)
    rows = [LabelledPhoto(i, found[i].path, found[i].top) for i in ids.tolist() if i in found]
    rows.sort(key=(lambda r: (-r.top[0][1], r.path)) if sort == "probability" else (lambda r: r.path))
    return rows[:limit], len(rows)


# -- "none of these" --------------------------------------------------------------------------------

THRESHOLD_STEPS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


@dataclass
class Thresholds:
    suggested: float
    current: float | None  # the classifier's saved threshold
    counts: list[tuple[float, int]]  # (threshold, photos it leaves unlabelled), suggested and saved included
    photos: int


def thresholds(catalog: Catalog, bundle: ModelBundle, name: str) -> Thresholds:
    """The suggested abstention threshold (engine.labelling.suggest_threshold over the library's top-1
    probabilities) and how many photos each threshold leaves as "none of these"."""
    model_id = require_applied(catalog, bundle, name)
    spec = load_classifier(catalog, name)
    table = store.label_table(catalog, name, model_id)
    suggested = suggest_threshold(table.p1, len(spec["classes"]))
    steps = sorted({*THRESHOLD_STEPS, suggested, *([spec["threshold"]] if spec.get("threshold") is not None else [])})
    return Thresholds(suggested, spec.get("threshold"), unlabelled_counts(table.p1, steps), len(table.p1))


# -- review -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReviewItem:
    file_id: int
    path: str
    label: str  # the classifier's top label ("none of these" is shown by the front end when below threshold)
    probability: float
    second: str | None
    second_probability: float | None
    confirmed: str | None = None  # a person's label for the photo, when there is one


@dataclass
class Review:
    unsure: list[ReviewItem]  # smallest margin between the top two classes first
    by_class: dict[str, tuple[list[ReviewItem], list[ReviewItem]]] = field(default_factory=dict)  # most, least


def review(catalog: Catalog, bundle: ModelBundle, name: str, per_grid: int = 12, label: str | None = None) -> Review:
    """The photos the classifier is least sure about (smallest top-2 margin) and, per class (or the one class
    asked for), its most and least confident members."""
    model_id = require_applied(catalog, bundle, name)
    table = store.label_table(catalog, name, model_id)
    margin = table.p1 - np.nan_to_num(table.p2, nan=0.0)
    unsure = np.argsort(margin, kind="stable")[:per_grid]
    chosen: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    top = np.array(table.label1, dtype=object)
    classes = [label] if label is not None else list(dict.fromkeys(load_classifier(catalog, name)["classes"]))
    for cls in classes:
        members = np.flatnonzero(top == cls)
        order = members[np.argsort(-table.p1[members], kind="stable")]
        chosen[cls] = (order[:per_grid], order[::-1][:per_grid])
    wanted = set(table.file_ids[unsure].tolist())
    for most, least in chosen.values():
        wanted |= set(table.file_ids[most].tolist()) | set(table.file_ids[least].tolist())
    paths = store.labels_of(catalog, name, model_id, wanted)
    people = {e.file_id: e.label for e in store.examples(catalog, name, model_id) if e.file_id is not None}

    def items(rows: np.ndarray) -> list[ReviewItem]:
        out = []
        for r in rows:
            file_id = int(table.file_ids[r])
            if file_id not in paths:
                continue
            second = table.label2[r]
            out.append(ReviewItem(file_id, paths[file_id].path, table.label1[r], float(table.p1[r]), second,
                                  None if second is None else float(table.p2[r]), people.get(file_id)))
        return out

    return Review(items(unsure), {cls: (items(most), items(least)) for cls, (most, least) in chosen.items()})


def label_photo(catalog: Catalog, bundle: ModelBundle, name: str, file_id: int, label: str, person: str) -> store.Example:
    """A person confirms or corrects the label of one photo: stored as a labelled example of the classifier,
    with who gave it. The photo must still be in the library."""
    person = (person or "").strip()
    if not person:
        raise CliplabError("Say who is labelling (a person's name): labelled examples record who gave them.")
    spec = load_classifier(catalog, name)
    if label not in spec["classes"]:
        raise CliplabError(f"{label!r} is not a class of the classifier {name!r} (its classes: "
                           f"{', '.join(spec['classes'][:10])}{' ...' if len(spec['classes']) > 10 else ''}).")
    model_id = bundle.register(catalog)
    current = store.labels_of(catalog, name, model_id, [file_id]).get(int(file_id))
    action = "confirmed" if current is not None and current.top and current.top[0][0] == label else "corrected"
    example = store.put_example(catalog, name, model_id, int(file_id), label, action, person)
    if example is None:
        raise CliplabError(f"Photo @{file_id} is no longer in the library (it was removed or changed since it was "
                           "shown), so its label was not stored; show the review again.")
    return example


def examples(catalog: Catalog, bundle: ModelBundle, name: str) -> list[store.Example]:
    load_classifier(catalog, name)  # a sentence when there is no such classifier
    return store.examples(catalog, name, bundle.register(catalog))


# -- improving --------------------------------------------------------------------------------------

def improve_classifier(catalog: Catalog, bundle: ModelBundle, name: str) -> Improvement:
    """A head from the classifier's labelled examples, with its zero-shot weights as the prior (engine.heads):
    saved with the classifier when it is not worse than zero-shot on the held-out examples, else the zero-shot
    weights are kept and the result says so. Examples whose photo has since left the library still count
    (their embedding was kept); examples of a class the classifier no longer has are left out."""
    spec = load_classifier(catalog, name)
    check_classes(list(spec["classes"]))
    model_id = bundle.register(catalog)
    found = store.examples(catalog, name, model_id)
    index = {c: i for i, c in enumerate(spec["classes"])}
    kept = [e for e in found if e.label in index]
    if not kept:
        raise CliplabError(f"The classifier {name!r} has no labelled examples yet: confirm or correct a few labels "
                           "in the review first.")
    zeroshot = zero_shot_weights(catalog, bundle, spec)
    x = np.stack([e.vector for e in kept])
    y = np.array([index[e.label] for e in kept], np.int64)
    result = improve(zeroshot, float(spec.get("scale") or DEFAULT_SCALE), x, y, list(spec["classes"]))
    head = None if result.fallback else {
        "weights": base64.b64encode(np.ascontiguousarray(result.weights, "<f4").tobytes()).decode("ascii"),
        "shape": list(result.weights.shape), "classes": list(spec["classes"]), "templates": list(spec["templates"]),
        "scale": float(spec.get("scale") or DEFAULT_SCALE), "model_fingerprint": bundle.fingerprint,
        "alpha": result.alpha, "examples": result.examples}
    save_head(catalog, name, head)
    return result


# -- taking it with you -----------------------------------------------------------------------------

def export_classifier(catalog: Catalog, bundle: ModelBundle, name: str, path: str | Path,
                      onnx: str | Path | None = None) -> list[Path]:
    """The classifier as one small file (engine.classifier_file), and with onnx the image tower and its head as
    one ONNX graph; the weights are exactly those its library labels were computed with."""
    classifier = library_classifier(catalog, bundle, name)
    written = [classifier.write(path)]
    if onnx:
        written.append(export_onnx(classifier, bundle.model, onnx))
    return written
