"""Text collections to search with an image (image -> text), and captioned datasets both ways.

A collection is a named list of texts: a tag vocabulary (assets/imagenet_classes.txt), a user's
list (one text a line), or a captions CSV (columns `caption` or `text`, optionally `image`
giving each caption's true image; several captions per image allowed). Texts and their
embeddings per model live in the catalog; the FAISS index over them is exact and built on demand.
A captioned dataset is a captions CSV whose images are also indexed as library files: it can be
browsed text -> image (over the dataset's images) and image -> text, true pairs marked.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from sqlalchemy import delete, insert, select

from cliplab.engine.errors import CliplabError
from cliplab.engine.features import encode_texts
from cliplab.indexes.catalog import (
    Catalog,
    File,
    TextCollection,
    TextEmbedding,
    TextEntry,
    from_blobs,
    to_blob,
)
from cliplab.indexes.indexer import ModelBundle


def read_texts(path: str | Path) -> tuple[list[str], list[str | None]]:
    """(texts, true image paths or None) from a .txt (one a line) or a .csv captions file."""
    path = Path(path)
    if not path.is_file():
        raise CliplabError(f"{path} does not exist.")
    if path.suffix.lower() != ".csv":
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return texts, [None] * len(texts)
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return [], []
    column = next((c for c in ("caption", "text", "label") if c in rows[0]), None)
    if column is None:
        raise CliplabError(f"{path.name} needs a `caption` (or `text`) column; it has {', '.join(rows[0])}.")
    images = [os.path.abspath(path.parent / r["image"]) if r.get("image") else None for r in rows]
    return [r[column] for r in rows], images


def add_collection(catalog: Catalog, name: str, texts: list[str], images: list[str | None] | None = None,
                   source: str | None = None) -> int:
    """Create or replace the collection `name`; returns its id."""
    images = images or [None] * len(texts)
    with catalog.session() as session, session.begin():
        old = session.scalar(select(TextCollection).where(TextCollection.name == name))
        if old is not None:
            session.execute(delete(TextEntry).where(TextEntry.collection_id == old.id))
            session.delete(old)
            session.flush()
        collection = TextCollection(name=name, source=source)
        session.add(collection)
        session.flush()
        if texts:
            session.execute(insert(TextEntry), [dict(collection_id=collection.id, position=i, text=t, image_path=im)
                                                for i, (t, im) in enumerate(zip(texts, images))])
        return collection.id


@dataclass
class TextHit:
    text_id: int
    text: str
    score: float
    true_pair: bool


class TextIndex:
    """An exact FAISS index over one collection's texts with one model (embedded on first use)."""

    def __init__(self, catalog: Catalog, bundle: ModelBundle, name: str):
        self.catalog, self.bundle, self.name = catalog, bundle, name
        self.model_id = bundle.register(catalog)
        with catalog.session() as session:
            collection = session.scalar(select(TextCollection).where(TextCollection.name == name))
            if collection is None:
                raise CliplabError(f"No text collection named {name!r}: add one with `cliplab texts add`.")
            entries = session.scalars(select(TextEntry).where(TextEntry.collection_id == collection.id)
                                      .order_by(TextEntry.position)).all()
            stored = dict(session.execute(select(TextEmbedding.text_id, TextEmbedding.vector).where(
                TextEmbedding.model_id == self.model_id,
                TextEmbedding.text_id.in_([e.id for e in entries]))).all()) if entries else {}
        self.entries = {e.id: e for e in entries}
        missing = [e for e in entries if e.id not in stored]
        if missing:
            vectors = encode_texts(bundle.model, bundle.tokenizer, [e.text for e in missing], truncate=True)
            with catalog.session() as session, session.begin():
                session.execute(insert(TextEmbedding), [dict(text_id=e.id, model_id=self.model_id, vector=to_blob(v))
                                                        for e, v in zip(missing, vectors)])
            stored.update({e.id: to_blob(v) for e, v in zip(missing, vectors)})
        dim = bundle.model.embed_dim
        self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        if entries:
            ids = np.array([e.id for e in entries], np.int64)
            self.index.add_with_ids(from_blobs([stored[int(i)] for i in ids], dim), ids)

    def search(self, vector: np.ndarray, k: int = 10, image_path: str | None = None) -> list[TextHit]:
        """Nearest texts to an image embedding; true_pair marks captions of image_path."""
        scores, ids = self.index.search(np.asarray(vector, np.float32)[None], max(1, min(k, self.index.ntotal)))
        real = os.path.abspath(image_path) if image_path else None
        return [TextHit(int(i), self.entries[int(i)].text, float(s),
                        real is not None and self.entries[int(i)].image_path == real)
                for s, i in zip(scores[0], ids[0]) if i >= 0]

    def dataset_images(self) -> dict[str, list[int]]:
        """True image path -> its caption ids."""
        pairs: dict[str, list[int]] = {}
        for entry in self.entries.values():
            if entry.image_path:
                pairs.setdefault(entry.image_path, []).append(entry.id)
        return pairs

    def image_ids(self) -> dict[str, int]:
        """Catalog file ids of the dataset's images (those indexed)."""
        paths = list(self.dataset_images())
        with self.catalog.session() as session:
            return {p: i for i, p in session.execute(select(File.id, File.path).where(File.path.in_(paths))).all()}
