"""The copy detector over many images: descriptors of library photos kept in the catalog, a FAISS
index of a reference set's descriptors, and the overlap pairs a person decided.

Searching (CopyIndex): a pair scores the largest cosine of one image's whole frame with any region of
the other (engine.copydetect.score). Up to EXACT_LIMIT reference images the index is exact in both
directions: the references' whole frames against every region of the queries, and every region of
the references against the queries' whole frames. Above it, an approximate index (FAISS IVF over the
references' whole frames, NPROBE lists searched) answers the first direction: a reference that is a
copy of an evaluation image or of a crop of it, which is what a training set holds when an
evaluation image leaked into it; memory stays at one descriptor per reference (docs/benchmarks.md
measures 1M references).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime

import faiss
import numpy as np
from sqlalchemy import select

from cliplab.engine import copydetect
from cliplab.engine.images import ImageLoadError, load_image
from cliplab.engine.video import VideoError, is_video, poster
from cliplab.indexes.catalog import Catalog, File
from cliplab.indexes.records import CopyDescriptor, OverlapDecision

EXACT_LIMIT = 5_000  # reference images searched exactly, both directions (49 regions each: ~250 MB); above: approximate
NPROBE = 32


def _flat(vectors: np.ndarray) -> faiss.Index:
    index = faiss.IndexFlatIP(copydetect.DIM)
    index.add(np.ascontiguousarray(vectors, np.float32))
    return index


def _ivf(vectors: np.ndarray, seed: int = 0) -> faiss.Index:
    lists = max(1, min(int(math.sqrt(len(vectors))), len(vectors) // 39))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(copydetect.DIM), copydetect.DIM, lists, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    sample = vectors[rng.choice(len(vectors), min(len(vectors), 50 * lists), replace=False)]
    index.train(np.ascontiguousarray(sample, np.float32))
    index.add(np.ascontiguousarray(vectors, np.float32))
    index.nprobe = min(NPROBE, lists)
    return index


class CopyIndex:
    """The reference images' descriptors ([n, PER_IMAGE, DIM]), searched for copies of query images."""

    def __init__(self, descriptors: np.ndarray, exact: bool | None = None):
        self.size = len(descriptors)
        self.exact = self.size <= EXACT_LIMIT if exact is None else exact
        whole = descriptors[:, 0]
        self.whole = _flat(whole) if self.exact or self.size < 1000 else _ivf(whole)
        self.regions = _flat(descriptors.reshape(-1, copydetect.DIM)) if self.exact else None

    def matches(self, queries: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (query, reference, score) with score >= threshold, one row per pair (its best score),
        sorted by query then score (highest first)."""
        per = copydetect.PER_IMAGE
        found = [self._range(self.whole, queries.reshape(-1, copydetect.DIM), threshold, per, 1)]
        if self.regions is not None:
            found.append(self._range(self.regions, np.ascontiguousarray(queries[:, 0]), threshold, 1, per))
        q = np.concatenate([f[0] for f in found])
        r = np.concatenate([f[1] for f in found])
        s = np.concatenate([f[2] for f in found])
        order = np.lexsort((-s, r, q))
        q, r, s = q[order], r[order], s[order]
        first = np.ones(len(q), bool)
        first[1:] = (q[1:] != q[:-1]) | (r[1:] != r[:-1])
        q, r, s = q[first], r[first], s[first]
        order = np.lexsort((-s, q))
        return q[order], r[order], s[order]

    @staticmethod
    def _range(index: faiss.Index, vectors: np.ndarray, threshold: float, query_per: int, ref_per: int):
        if not len(vectors):
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        # FAISS's range search keeps scores strictly above the radius: nudge it down, then filter.
        lims, scores, labels = index.range_search(np.ascontiguousarray(vectors, np.float32),
                                                  float(np.nextafter(np.float32(threshold), np.float32(-1))))
        rows = np.repeat(np.arange(len(vectors)), np.diff(lims).astype(np.int64))
        keep = scores >= threshold
        return rows[keep] // query_per, labels[keep] // ref_per, scores[keep]


def image_descriptors(paths: list, on_progress=None) -> tuple[np.ndarray, list[int]]:
    """Descriptors [n, PER_IMAGE, DIM] of the images that decode, and the positions of those that do not."""
    out = np.zeros((len(paths), copydetect.PER_IMAGE, copydetect.DIM), np.float32)
    failed = []
    for i, path in enumerate(paths):
        try:
            # a video is compared by its first frame, as the map shows it
            image = poster(path, 256) if is_video(path) else load_image(path)
            out[i] = copydetect.descriptors(image)
        except (ImageLoadError, VideoError, StopIteration, OSError):
            failed.append(i)
        if on_progress is not None and (i + 1) % 50 == 0:
            on_progress(i + 1, len(paths))
    return out, failed


@dataclass
class Described:
    """The library photos the detector describes: ids, names on disk, content keys, descriptors."""
    ids: np.ndarray
    paths: list[str]
    keys: list[str]
    descriptors: np.ndarray  # [n, PER_IMAGE, DIM]


def library_descriptors(catalog: Catalog, on_progress=None) -> Described:
    """Every decoded library photo (status ok) and its descriptors, made once per content and kept in
    the catalog (remade when a file's content or the detector changes)."""
    with catalog.session() as session:
        files = session.execute(select(File.id, File.path, File.raw_path, File.fingerprint)
                                .where(File.status == "ok", File.unavailable.is_(None)).order_by(File.id)).all()
        kept = {row.file_id: row for row in session.scalars(select(CopyDescriptor)
                                                            .where(CopyDescriptor.detector == copydetect.NAME))}
    shape = (copydetect.PER_IMAGE, copydetect.DIM)
    ids, paths, keys, vectors, fresh = [], [], [], [], []
    todo = [f for f in files if f.id not in kept or kept[f.id].fingerprint != f.fingerprint]
    made, failed = image_descriptors([_disk_path(f) for f in todo], on_progress)
    bad = {todo[i].id for i in failed}
    made_by_id = {f.id: made[i] for i, f in enumerate(todo) if f.id not in bad}
    for f in files:
        if f.id in made_by_id:
            vectors.append(made_by_id[f.id])
            fresh.append(CopyDescriptor(file_id=f.id, detector=copydetect.NAME, fingerprint=f.fingerprint,
                                        descriptor=made_by_id[f.id].astype(np.float16).tobytes()))
        elif f.id in kept and f.id not in bad:
            vectors.append(np.frombuffer(kept[f.id].descriptor, np.float16).reshape(shape).astype(np.float32))
        else:
            continue
        ids.append(f.id)
        paths.append(_disk_path(f))
        keys.append(f.fingerprint)
    if fresh:
        with catalog.session() as session:
            for row in fresh:
                session.merge(row)
            session.commit()
    stacked = np.stack(vectors) if vectors else np.zeros((0, *shape), np.float32)
    return Described(np.asarray(ids, np.int64), paths, keys, stacked)


def _disk_path(row) -> str:
    return os.fsdecode(row.raw_path) if row.raw_path is not None else row.path


def decisions(catalog: Catalog) -> dict[tuple[str, str], bool]:
    """Every decided pair: (eval image key, reference key) -> True confirmed copy, False rejected."""
    with catalog.session() as session:
        return {(d.eval_key, d.reference_key): bool(d.is_copy) for d in session.scalars(select(OverlapDecision))}


def decide(catalog: Catalog, eval_key: str, reference_key: str, copy: bool | None) -> None:
    """Record a person's verdict on a pair (None forgets it: the detector decides again)."""
    with catalog.session() as session:
        row = session.get(OverlapDecision, (eval_key, reference_key))
        if copy is None:
            if row is not None:
                session.delete(row)
        else:
            session.merge(OverlapDecision(eval_key=eval_key, reference_key=reference_key, is_copy=int(copy),
                                          decided_at=datetime.now(UTC)))
        session.commit()
