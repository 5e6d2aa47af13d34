"""The copy detector over many images: descriptors of library photos kept in the catalog, a FAISS
index of a reference set's descriptors, and the overlap pairs a person decided.

Every function takes the detector (engine.copydetect.Detector) whose descriptors it makes or reads:
descriptors kept in the catalog name their detector, and another detector's are made again, never
compared.

Searching (CopyIndex): a pair scores the largest cosine of one image's whole frame with any region of
the other (engine.copydetect.score). Up to EXACT_VECTORS reference descriptors the index is exact in
both directions: the references' whole frames against every region of the queries, and every region
of the references against the queries' whole frames (one direction when a detector has one region).
Above it, an approximate index (FAISS IVF over the references' whole frames, NPROBE lists searched)
answers the first direction: a reference that is a copy of an evaluation image or of a crop of it,
which is what a training set holds when an evaluation image leaked into it; memory stays at one
descriptor per reference (docs/benchmarks.md measures 1M references).
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

# reference descriptors searched exactly (5,000 images of the DCT detector's 49 regions x 255, 50,000 of
# the learned one's 5 x 128: 130 MB or less); above: approximate
EXACT_VECTORS = 250_000
NPROBE = 32
LOAD_BATCH = 64  # images decoded and described together (the learned detector describes a batch at once)


def _flat(vectors: np.ndarray) -> faiss.Index:
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, np.float32))
    return index


def _ivf(vectors: np.ndarray, seed: int = 0) -> faiss.Index:
    lists = max(1, min(int(math.sqrt(len(vectors))), len(vectors) // 39))
    dim = vectors.shape[1]
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    sample = vectors[rng.choice(len(vectors), min(len(vectors), 50 * lists), replace=False)]
    index.train(np.ascontiguousarray(sample, np.float32))
    index.add(np.ascontiguousarray(vectors, np.float32))
    index.nprobe = min(NPROBE, lists)
    return index


class CopyIndex:
    """The reference images' descriptors ([n, regions, dim]), searched for copies of query images
    (descriptors of the same detector)."""

    def __init__(self, descriptors: np.ndarray, exact: bool | None = None):
        self.size, self.per, self.dim = descriptors.shape
        self.exact = self.size * self.per <= EXACT_VECTORS if exact is None else exact
        whole = descriptors[:, 0]
        self.whole = _flat(whole) if self.exact or self.size < 1000 else _ivf(whole)
        several = self.exact and self.per > 1
        self.regions = _flat(descriptors.reshape(-1, self.dim)) if several else None

    def matches(self, queries: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (query, reference, score) with score >= threshold, one row per pair (its best score),
        sorted by query then score (highest first)."""
        if queries.shape[-1] != self.dim:
            raise ValueError(f"queries of dimension {queries.shape[-1]} against references of {self.dim}")
        found = [self._range(self.whole, queries.reshape(-1, self.dim), threshold, queries.shape[1], 1)]
        if self.regions is not None:
            found.append(self._range(self.regions, np.ascontiguousarray(queries[:, 0]), threshold, 1, self.per))
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


def image_descriptors(paths: list, detector: copydetect.Detector, on_progress=None) -> tuple[np.ndarray, list[int]]:
    """The detector's descriptors [n, regions, dim] of the images (zero rows where one does not
    decode), and the positions of those that do not."""
    out = np.zeros((len(paths), detector.regions, detector.dim), np.float32)
    failed = []
    for start in range(0, len(paths), LOAD_BATCH):
        images, rows = [], []
        for i in range(start, min(len(paths), start + LOAD_BATCH)):
            try:
                # a video is compared by its first frame, as the map shows it
                images.append(poster(paths[i], 256) if is_video(paths[i]) else load_image(paths[i]))
                rows.append(i)
            except (ImageLoadError, VideoError, StopIteration, OSError):
                failed.append(i)
        if images:
            out[rows] = detector.describe(images)
        if on_progress is not None:
            on_progress(min(len(paths), start + LOAD_BATCH), len(paths))
    return out, failed


@dataclass
class Described:
    """The library photos the detector describes: ids, names on disk, content keys, descriptors."""
    ids: np.ndarray
    paths: list[str]
    keys: list[str]
    descriptors: np.ndarray  # [n, regions, dim]


def library_descriptors(catalog: Catalog, detector: copydetect.Detector, on_progress=None) -> Described:
    """Every decoded library photo (status ok) and the detector's descriptors of it, made once per
    content and kept in the catalog (made again when a file's content or the detector changes: a
    photo keeps the descriptors of the detector that described it last)."""
    with catalog.session() as session:
        files = session.execute(select(File.id, File.path, File.raw_path, File.fingerprint)
                                .where(File.status == "ok", File.unavailable.is_(None)).order_by(File.id)).all()
        kept = {row.file_id: row for row in session.scalars(select(CopyDescriptor)
                                                            .where(CopyDescriptor.detector == detector.name))}
    shape = (detector.regions, detector.dim)
    ids, paths, keys, vectors, fresh = [], [], [], [], []
    todo = [f for f in files if f.id not in kept or kept[f.id].fingerprint != f.fingerprint]
    made, failed = image_descriptors([_disk_path(f) for f in todo], detector, on_progress)
    bad = {todo[i].id for i in failed}
    made_by_id = {f.id: made[i] for i, f in enumerate(todo) if f.id not in bad}
    for f in files:
        if f.id in made_by_id:
            vectors.append(made_by_id[f.id])
            fresh.append(CopyDescriptor(file_id=f.id, detector=detector.name, fingerprint=f.fingerprint,
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
