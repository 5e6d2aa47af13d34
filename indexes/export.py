"""Embeddings and file metadata out of the catalog, for other tools: Parquet or NumPy (.npz), with the labels of
every saved classifier applied to the library (indexes.labels): per classifier NAME, the columns
`label:NAME` (the top label) and `probability:NAME` (its probability); "" and NaN for a photo it has not labelled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sqlalchemy import select

from cliplab.engine.errors import CliplabError
from cliplab.indexes.catalog import Catalog, Embedding, File, Model, damaged_rows, from_blobs, vector_id
from cliplab.indexes.labels import applied_classifiers, label_table

COLUMNS = ("file_id", "path", "size", "width", "height", "captured_at", "camera", "fingerprint")


def export(catalog: Catalog, model_id: int, path: str | Path) -> int:
    """Write one model's embeddings with their files' metadata; the format follows the suffix:
    .parquet (one row per embedding, `embedding` a list of float32) or .npz (arrays `embeddings`
    [n, d] float32 plus one array per metadata column). A photo is one row (frame 0, at_ms empty or -1),
    a video one row per embedded frame (frame 0, 1, ... and its time in ms). Returns the number of rows."""
    path = Path(path)
    with catalog.session() as session:
        dim = session.get(Model, model_id).embed_dim
        rows = session.execute(select(File, Embedding.vector, Embedding.frame, Embedding.at_ms)
                               .join(Embedding, Embedding.file_id == File.id)
                               .where(Embedding.model_id == model_id).order_by(File.id, Embedding.frame)).all()
    vectors = from_blobs([r[1] for r in rows], dim)
    sound = ~damaged_rows(vectors)  # a damaged stored vector is never exported (indexes.vectors re-embeds it)
    rows, vectors = [r for r, ok in zip(rows, sound) if ok], vectors[sound]
    meta = {c: [getattr(r[0], c if c != "file_id" else "id") for r in rows] for c in COLUMNS}
    meta["frame"], meta["at_ms"] = [r[2] for r in rows], [r[3] for r in rows]
    meta.update(_label_columns(catalog, model_id, [vector_id(f, n) for f, n in zip(meta["file_id"], meta["frame"])]))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq
        table = pa.table({**meta, "embedding": pa.FixedSizeListArray.from_arrays(
            pa.array(vectors.reshape(-1), pa.float32()), dim)})
        pq.write_table(table, path)
    elif path.suffix == ".npz":
        text = {"path", "camera", "captured_at", "fingerprint"} | {c for c in meta if c.startswith("label:")}
        arrays = {c: np.array([("" if v is None else str(v)) if c in text else (-1 if v is None else v) for v in values])
                  for c, values in meta.items()}
        np.savez(path, embeddings=vectors, **arrays)
    else:
        raise CliplabError(f"Cannot export to {path.name}: name the file .parquet or .npz.")
    return len(rows)


def _label_columns(catalog: Catalog, model_id: int, file_ids: list[int]) -> dict[str, list]:
    """Each applied classifier's top label and probability per exported row (by vector id: a video per frame)."""
    columns: dict[str, list] = {}
    for name in applied_classifiers(catalog, model_id):
        table = label_table(catalog, name, model_id)
        found = dict(zip(table.file_ids.tolist(), zip(table.label1, table.p1.tolist())))
        columns[f"label:{name}"] = [found.get(i, ("", float("nan")))[0] for i in file_ids]
        columns[f"probability:{name}"] = [found.get(i, ("", float("nan")))[1] for i in file_ids]
    return columns
