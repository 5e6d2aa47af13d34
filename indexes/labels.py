"""Saved classifiers' labels on the library, and the examples people labelled: named queries over the tables
indexes.records.ClassifierRun, AppliedLabel and LabelledExample (made by the Alembic chain).

Labels are keyed by the stored embedding row they were computed from (file, model, frame: a photo is frame 0,
a video's frames are rows of their own) and carry its version, so
what changed since the last application is found by comparing versions (indexes.catalog.Embedding.version),
and what was removed by the embeddings that are gone; the computing is engine.labelling's, the deciding
app.services.labels'.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import delete, insert, select

from cliplab.indexes.catalog import (
    FRAME_SHIFT,
    Catalog,
    Embedding,
    File,
    Model,
    damaged_rows,
    from_blobs,
    split_vector_id,
    to_blob,
    vector_id,
)
from cliplab.indexes.records import AppliedLabel, ClassifierRun, LabelledExample

READ_CHUNK = 5000  # ids per IN (...) query
# The functions below name an embedding row by its vector id (indexes.catalog.vector_id): a photo's is its file
# id, a video frame's file_id + (frame << 32), as in the vector index, search and "more like this".
_LABEL_ITEM = AppliedLabel.file_id + AppliedLabel.frame * (1 << FRAME_SHIFT)


def _items(rows) -> np.ndarray:
    """Vector ids of (file id, frame, ...) rows."""
    return vector_id(np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.int64))


@dataclass(frozen=True)
class RunState:
    fingerprint: str
    model_version: int
    applied_at: datetime


def run_state(catalog: Catalog, classifier: str, model_id: int) -> RunState | None:
    with catalog.session() as session:
        row = session.get(ClassifierRun, (classifier, model_id))
        return RunState(row.fingerprint, int(row.model_version), row.applied_at) if row is not None else None


def model_version(catalog: Catalog, model_id: int) -> int:
    with catalog.session() as session:
        return int(session.scalar(select(Model.version).where(Model.id == model_id)) or 0)


def applied_classifiers(catalog: Catalog, model_id: int) -> list[str]:
    """The saved classifiers applied to this model's library, by name."""
    with catalog.session() as session:
        return list(session.scalars(select(ClassifierRun.classifier).where(ClassifierRun.model_id == model_id)
                                    .order_by(ClassifierRun.classifier)))


def embedding_versions(catalog: Catalog, model_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(vector ids, versions) of every stored embedding row of the model, in (file, frame) order."""
    with catalog.session() as session:
        rows = session.execute(select(Embedding.file_id, Embedding.frame, Embedding.version)
                               .where(Embedding.model_id == model_id)
                               .order_by(Embedding.file_id, Embedding.frame)).all()
    return _items(rows), np.array([r[2] for r in rows], np.int64)


def label_versions(catalog: Catalog, classifier: str, model_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(vector ids, embedding versions) of the labels stored for the classifier, in (file, frame) order."""
    with catalog.session() as session:
        rows = session.execute(select(AppliedLabel.file_id, AppliedLabel.frame, AppliedLabel.version)
                               .where(AppliedLabel.classifier == classifier, AppliedLabel.model_id == model_id)
                               .order_by(AppliedLabel.file_id, AppliedLabel.frame)).all()
    return _items(rows), np.array([r[2] for r in rows], np.int64)


def stored_vectors(catalog: Catalog, model_id: int, file_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vector ids, versions, vectors [n, d]) of these stored embedding rows (vector ids) that exist and are sound
    (a damaged one is left out: indexes.vectors sends it back to be embedded again)."""
    wanted_items = set(int(i) for i in file_ids)
    files = sorted(set(int(f) for f in split_vector_id(np.asarray(file_ids, np.int64))[0]))
    with catalog.session() as session:
        dim = int(session.scalar(select(Model.embed_dim).where(Model.id == model_id)))
        ids, versions, blobs = [], [], []
        for start in range(0, len(files), READ_CHUNK):
            chunk = files[start:start + READ_CHUNK]
            for file_id, frame, version, blob in session.execute(
                    select(Embedding.file_id, Embedding.frame, Embedding.version, Embedding.vector)
                    .where(Embedding.model_id == model_id, Embedding.file_id.in_(chunk))):
                item = vector_id(int(file_id), int(frame))
                if item in wanted_items:
                    ids.append(item)
                    versions.append(version)
                    blobs.append(blob)
    vectors = from_blobs(blobs, dim)
    sound = ~damaged_rows(vectors)
    return np.array(ids, np.int64)[sound], np.array(versions, np.int64)[sound], vectors[sound]


def write_labels(catalog: Catalog, classifier: str, model_id: int, *, fingerprint: str, version: int,
                 file_ids: np.ndarray, versions: np.ndarray, labels: list[list[tuple[str, float]]],
                 drop: np.ndarray, replace_all: bool) -> None:
    """One transaction: the labels of these embeddings written (replacing theirs), those of `drop` deleted (every
    label of the classifier first with replace_all), and the run recorded as up to date with the model's version."""
    rows = []
    for item, emb_version, top in zip(file_ids, versions, labels):
        file_id, frame = split_vector_id(int(item))
        row = {"classifier": classifier, "model_id": model_id, "file_id": file_id, "frame": frame,
               "version": int(emb_version)}
        for rank in range(3):
            label, prob = top[rank] if rank < len(top) else (None, None)
            row[f"label{rank + 1}"], row[f"p{rank + 1}"] = label, (None if prob is None else float(prob))
        rows.append(row)
    mine = (AppliedLabel.classifier == classifier) & (AppliedLabel.model_id == model_id)
    with catalog.session() as session, session.begin():
        if replace_all:
            session.execute(delete(AppliedLabel).where(mine))
        gone = [int(i) for i in np.concatenate([drop, file_ids])] if not replace_all else []
        for start in range(0, len(gone), READ_CHUNK):
            session.execute(delete(AppliedLabel).where(mine, _LABEL_ITEM.in_(gone[start:start + READ_CHUNK])))
        if rows:
            session.execute(insert(AppliedLabel), rows)
        session.merge(ClassifierRun(classifier=classifier, model_id=model_id, fingerprint=fingerprint,
                                    model_version=version, applied_at=datetime.now(UTC)))


@dataclass(frozen=True)
class LabelTable:
    """Every applied label of a classifier on a library, as arrays (file-id order)."""
    file_ids: np.ndarray
    label1: list[str]
    p1: np.ndarray
    label2: list[str | None]
    p2: np.ndarray  # NaN where there is no second class


def label_table(catalog: Catalog, classifier: str, model_id: int) -> LabelTable:
    with catalog.session() as session:
        rows = session.execute(select(AppliedLabel.file_id, AppliedLabel.frame, AppliedLabel.label1, AppliedLabel.p1,
                                      AppliedLabel.label2, AppliedLabel.p2)
                               .where(AppliedLabel.classifier == classifier, AppliedLabel.model_id == model_id)
                               .order_by(AppliedLabel.file_id, AppliedLabel.frame)).all()
    return LabelTable(_items(rows), [r[2] for r in rows],
                      np.array([r[3] for r in rows], np.float64), [r[4] for r in rows],
                      np.array([np.nan if r[5] is None else r[5] for r in rows], np.float64))


@dataclass(frozen=True)
class PhotoLabels:
    file_id: int  # the embedding row's vector id: a photo's file id, or a video frame's
    path: str
    top: list[tuple[str, float]]  # up to three (label, probability), most probable first


def labels_of(catalog: Catalog, classifier: str, model_id: int, file_ids) -> dict[int, PhotoLabels]:
    """The stored labels (with each photo's path) of these embedding rows (vector ids), by id."""
    wanted = [int(i) for i in file_ids]
    out: dict[int, PhotoLabels] = {}
    with catalog.session() as session:
        for start in range(0, len(wanted), READ_CHUNK):
            query = (select(AppliedLabel, File.path).join(File, File.id == AppliedLabel.file_id)
                     .where(AppliedLabel.classifier == classifier, AppliedLabel.model_id == model_id,
                            _LABEL_ITEM.in_(wanted[start:start + READ_CHUNK])))
            for row, path in session.execute(query):
                top = [(label, prob) for label, prob in ((row.label1, row.p1), (row.label2, row.p2),
                                                         (row.label3, row.p3)) if label is not None]
                item = vector_id(row.file_id, row.frame)
                out[item] = PhotoLabels(item, path, top)
    return out


def ids_with_label(catalog: Catalog, classifier: str, model_id: int, label: str | None,
                   min_probability: float = 0.0) -> np.ndarray:
    """Embedding rows (vector ids) whose top label is `label` (any label when None) with at least this
    probability."""
    query = select(AppliedLabel.file_id, AppliedLabel.frame).where(AppliedLabel.classifier == classifier,
                                                                   AppliedLabel.model_id == model_id,
                                                                   AppliedLabel.p1 >= float(min_probability))
    if label is not None:
        query = query.where(AppliedLabel.label1 == label)
    with catalog.session() as session:
        return np.sort(_items(session.execute(query).all()))


# -- labelled examples -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Example:
    id: int
    file_id: int | None  # the vector id it was given on; None: the photo has left the library (the example is kept)
    path: str
    label: str
    action: str
    person: str
    labelled_at: datetime
    vector: np.ndarray


def put_example(catalog: Catalog, classifier: str, model_id: int, file_id: int, label: str, action: str,
                person: str) -> Example | None:
    """Store (or replace) the label a person gave a photo (or a video's frame: file_id is the embedding row's vector
    id), with its stored embedding; None (nothing stored) when it is no longer in the catalog."""
    item = int(file_id)
    file_id, frame = split_vector_id(item)
    with catalog.session() as session, session.begin():
        found = session.execute(select(File.path, Embedding.vector, Model.embed_dim)
                                .join(Embedding, Embedding.file_id == File.id).join(Model, Model.id == Embedding.model_id)
                                .where(File.id == file_id, Embedding.model_id == model_id,
                                       Embedding.frame == frame)).first()
        if found is None:
            return None
        path, blob, dim = found
        vector = from_blobs([blob], dim)
        if damaged_rows(vector).any():
            return None
        session.execute(delete(LabelledExample).where(LabelledExample.classifier == classifier,
                                                      LabelledExample.model_id == model_id,
                                                      LabelledExample.file_id == file_id, LabelledExample.frame == frame))
        row = LabelledExample(classifier=classifier, model_id=model_id, file_id=file_id, frame=frame, path=path,
                              label=label,
                              action=action, person=person, vector=to_blob(vector[0]), labelled_at=datetime.now(UTC))
        session.add(row)
        session.flush()
        return Example(row.id, item, path, label, action, person, row.labelled_at, vector[0])


def examples(catalog: Catalog, classifier: str, model_id: int) -> list[Example]:
    """Every labelled example of the classifier on this model, oldest first."""
    with catalog.session() as session:
        dim = session.scalar(select(Model.embed_dim).where(Model.id == model_id))
        rows = session.scalars(select(LabelledExample).where(LabelledExample.classifier == classifier,
                                                             LabelledExample.model_id == model_id)
                               .order_by(LabelledExample.id)).all()
        return [Example(r.id, None if r.file_id is None else vector_id(r.file_id, r.frame), r.path, r.label, r.action, r.person, r.labelled_at,
                        from_blobs([r.vector], int(dim))[0]) for r in rows]
