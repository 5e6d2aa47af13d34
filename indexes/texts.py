"""Text collections to search with an image (image -> text), and captioned datasets both ways.

A collection is a named list of texts: a tag vocabulary (assets/imagenet_classes.txt), a user's
list (one text a line), or a captions CSV (columns `caption` or `text`, optionally `image`
giving each caption's true image; several captions per image allowed). The texts live in
the catalog; searching them (image -> text, and text -> image over a captioned dataset, true
pairs marked) is app.services.captions, the one image -> text feature with its one embedding cache.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from sqlalchemy import delete, insert, select

from cliplab.engine.errors import CliplabError
from cliplab.indexes.catalog import Catalog, TextCollection, TextEntry


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



def collection_names(catalog: Catalog) -> list[str]:
    """The names of the stored text collections, sorted."""
    with catalog.session() as session:
        return list(session.scalars(select(TextCollection.name).order_by(TextCollection.name)))


def collection_entries(catalog: Catalog, name: str) -> list[tuple[str, str | None]] | None:
    """(text, true image path or None) of the collection `name` in order; None when there is no such collection."""
    with catalog.session() as session:
        found = session.scalar(select(TextCollection.id).where(TextCollection.name == name))
        if found is None:
            return None
        rows = session.execute(select(TextEntry.text, TextEntry.image_path)
                               .where(TextEntry.collection_id == found).order_by(TextEntry.position))
        return [(text, image) for text, image in rows]
