"""FAISS vector indexes per model, derived from the catalog's embeddings.

- kind "flat": exact inner product (IndexFlatIP inside IndexIDMap2); "ivf": approximate
  (IndexIVFFlat, inner product, nlist ~ 4 sqrt(n), nprobe = max(32, nlist / 16), chosen for
  recall@10 >= 0.95 on clustered data); "auto" picks flat below APPROX_THRESHOLD vectors, ivf above.
- Storage: a kind may end in "-fp16" or "-int8" ("flat-int8", "ivf-fp16", "auto-int8"): FAISS scalar
  quantizers (IndexScalarQuantizer / IndexIVFScalarQuantizer, int8 with per-dimension ranges trained
  on the vectors) keep 2 or 1 bytes per dimension instead of 4; recall measured in benchmarks/library.py.
- IDs are vector ids (indexes.catalog.vector_id): a photo's is its catalog file id, a video frame's the
  file id + (frame << 32), so every embedding row, a video's frames included, is one vector. The file is saved atomically (temp file + rename) and its state
  (kind, dimension, count, catalog version and a blake2b checksum of the file's bytes) kept in the
  catalog. On open the file must match that state exactly — checksum, faiss type for the kind,
  dimension, count — or it is rebuilt from the catalog with a log line saying why (a damaged or
  foreign file never gives scores); then it is brought up to date (added, removed, re-embedded
  rows) and saved again.
- Every vector read from the catalog is checked (indexes.catalog.damaged_rows: finite, unit length):
  a damaged one (a flipped bit on disk) is never added; its embedding row is deleted, so the file is
  pending again and the next `cliplab index` embeds it anew, and a log line names the file.
- With faiss GPU support and CUDA present, unfiltered searches of a flat index run on the GPU.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import math
import os
import sys
import threading
import time
from pathlib import Path

import faiss
import numpy as np
from sqlalchemy import delete, func, select, update

from cliplab.indexes.catalog import (
    Catalog,
    Embedding,
    File,
    Model,
    VectorIndexState,
    damaged_rows,
    from_blobs,
    split_vector_id,
    vector_id,
)

log = logging.getLogger(__name__)
APPROX_THRESHOLD = 200_000
# faiss switches from its SIMD kernel to BLAS at this many queries; BLAS pays a large fixed cost,
# so small query batches are several times faster with a low threshold (benchmarks/library.py).
faiss.cvar.distance_compute_blas_threshold = 20
BASE_KINDS = ("auto", "flat", "ivf")
STORAGES = {"fp16": faiss.ScalarQuantizer.QT_fp16, "int8": faiss.ScalarQuantizer.QT_8bit}
KINDS = BASE_KINDS + tuple(f"{base}-{storage}" for base in BASE_KINDS for storage in STORAGES)
SMALL_BATCH = 20  # fewer queries than this take the numpy path of a flat index (see VectorIndex.search)


def split_kind(kind: str) -> tuple[str, str | None]:
    """("flat" | "ivf" | "auto", "fp16" | "int8" | None for fp32) of a kind name."""
    base, _, storage = kind.partition("-")
    return base, storage or None


def choose_kind(count: int, kind: str = "auto") -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; use one of {', '.join(KINDS)}")
    base, storage = split_kind(kind)
    if base == "auto":
        base = "flat" if count < APPROX_THRESHOLD else "ivf"
    return f"{base}-{storage}" if storage else base


def build(vectors: np.ndarray, ids: np.ndarray, kind: str) -> faiss.Index:
    """A new index of the given kind ("flat", "ivf", optionally "-fp16" / "-int8") holding vectors under ids."""
    dim = vectors.shape[1]
    base, storage = split_kind(kind)
    if base == "flat" and storage is None:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    elif base == "flat":
        quantized = faiss.IndexScalarQuantizer(dim, STORAGES[storage], faiss.METRIC_INNER_PRODUCT)
        if len(vectors):
            quantized.train(np.ascontiguousarray(vectors, np.float32))  # per-dimension ranges (int8)
        index = faiss.IndexIDMap2(quantized)
    else:
        nlist = max(1, min(int(4 * math.sqrt(len(vectors))), len(vectors) // 39 or 1))
        if storage is None:
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(dim), dim, nlist, STORAGES[storage],
                                                  faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        sample = vectors[rng.choice(len(vectors), min(len(vectors), nlist * 40), replace=False)]  # faiss wants >= 39 per list
        index.train(sample)
        index.nprobe = default_nprobe(nlist)
        index.set_direct_map_type(faiss.DirectMap.Hashtable)  # removals and reconstruct by id
    if len(vectors):
        index.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.ascontiguousarray(ids, np.int64))
    return index


def default_nprobe(nlist: int) -> int:
    return max(1, min(nlist, max(32, nlist // 16)))  # ~6% of the lists: recall@10 >= 0.95 on clustered data


def index_ids(index: faiss.Index) -> np.ndarray:
    if isinstance(index, faiss.IndexIDMap2):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    ivf = faiss.extract_index_ivf(index)
    lists = ivf.invlists
    parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
             for i in range(lists.nlist) if lists.list_size(i)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def exact_small_batch(index: faiss.IndexIDMap2, ids: np.ndarray, queries: np.ndarray,
                      k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top k of a few queries on a flat index: one multi-threaded BLAS product over faiss's own
    storage (no copy) and a partial sort. faiss runs each of a few queries on a single thread,
    which is slower than this on any multi-core CPU. ids: the index's ids in storage order.

    The product runs as stored @ queries.T, a row-major pass over the stored vectors (a matrix-
    vector product for one query), and the partial sort selects the largest scores without
    negating the n scores first: both as a plain numpy top-k does it, so this is no slower."""
    flat = faiss.downcast_index(index.index)
    n, dim = index.ntotal, index.d
    stored = faiss.rev_swig_ptr(flat.get_xb(), n * dim).reshape(n, dim)
    sims = (stored @ queries[0])[None] if len(queries) == 1 else np.ascontiguousarray((stored @ queries.T).T)
    top = np.argpartition(sims, n - k, axis=1)[:, n - k:] if k < n else np.tile(np.arange(n), (len(queries), 1))
    order = np.lexsort((top, -np.take_along_axis(sims, top, 1)), axis=1)  # by score, ties by storage order
    top = np.take_along_axis(top, order, 1)
    return np.take_along_axis(sims, top, 1), ids[top]


_MADV_HUGEPAGE, _MADV_COLLAPSE, _HUGE_PAGE = 14, 25, 2 << 20


def back_with_huge_pages(index: faiss.Index, wait: bool = False) -> None:
    """Ask Linux to back a flat fp32 index's storage with 2 MB pages, as numpy does for its own large
    arrays: the exact scan streams the whole storage, and with 4 KB pages it measured 1.07-1.18x the
    same product over a numpy array (TLB misses; benchmarks/library.py --only storage). MADV_COLLAPSE
    (Linux 6.1+) converts the pages in place, ~0.07 s per 200 MB, so it runs on a thread (ctypes
    releases the GIL) unless wait. Best effort: elsewhere, or where refused, nothing changes."""
    if not sys.platform.startswith("linux") or index.ntotal == 0:
        return
    flat = faiss.downcast_index(index.index if isinstance(index, faiss.IndexIDMap2) else index)
    if not isinstance(flat, faiss.IndexFlat):  # scalar-quantized storage: small already, decoded per code
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    address = int(faiss.rev_swig_ptr(flat.get_xb(), 1).ctypes.data)
    start = -(-address // _HUGE_PAGE) * _HUGE_PAGE
    end = (address + index.ntotal * index.d * 4) // _HUGE_PAGE * _HUGE_PAGE
    if end <= start:
        return

    def advise() -> None:  # a freed or reused range only makes madvise fail or collapse other pages: harmless
        if libc.madvise(start, end - start, _MADV_HUGEPAGE) == 0:
            libc.madvise(start, end - start, _MADV_COLLAPSE)
    if wait:
        advise()
    else:
        threading.Thread(target=advise, name="faiss-huge-pages", daemon=True).start()


def checksum(data) -> str:
    return hashlib.blake2b(memoryview(data), digest_size=32).hexdigest()


def save_atomically(index: faiss.Index, path: Path) -> str:
    """Write index to path through a temporary file and a rename; returns the checksum of its bytes.
    Whatever stands in the way (a folder in the file's place) is moved aside, never deleted."""
    data = faiss.serialize_index(index)
    if path.is_dir() or (path.exists() and not path.is_file()):
        aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        log.warning("%s is not a file: moved it aside to %s", path, aside)
        os.replace(path, aside)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")  # concurrent writers
    with open(tmp, "wb") as f:
        f.write(memoryview(data))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return checksum(data)


def _matches_kind(index: faiss.Index, kind: str) -> bool:
    """Whether a loaded index is of the kind that build() makes for `kind` (storage included)."""
    base, storage = split_kind(kind)
    if base == "flat":
        inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else None
        if storage is None:
            return isinstance(inner, faiss.IndexFlatIP)
        return (isinstance(inner, faiss.IndexScalarQuantizer) and inner.metric_type == faiss.METRIC_INNER_PRODUCT
                and inner.sq.qtype == STORAGES[storage])
    if storage is None:
        return isinstance(index, faiss.IndexIVFFlat) and index.metric_type == faiss.METRIC_INNER_PRODUCT
    return (isinstance(index, faiss.IndexIVFScalarQuantizer) and index.metric_type == faiss.METRIC_INNER_PRODUCT
            and index.sq.qtype == STORAGES[storage])


def load_checked(path: Path, state: VectorIndexState, kind: str, dim: int) -> tuple[faiss.Index | None, str | None]:
    """(the saved index, None) when the file is exactly what state describes, else (None, why not)."""
    if not path.exists():
        return None, "is missing"
    if not path.is_file():
        return None, "is not a file"
    data = np.fromfile(path, dtype=np.uint8)
    if state.checksum is None or state.dim is None:
        return None, "has no recorded checksum (saved by an older version)"
    if checksum(data) != state.checksum:
        return None, "does not match its recorded checksum (the file is damaged or was replaced)"
    try:
        index = faiss.deserialize_index(data)
    except RuntimeError as error:
        return None, f"cannot be read ({str(error).splitlines()[0]})"
    if not _matches_kind(index, kind):
        return None, f"is a {type(index).__name__}, not a {kind} index"
    if index.d != dim or state.dim != dim:
        return None, f"has dimension {index.d}, the model's embeddings have {dim}"
    if index.ntotal != state.count:
        return None, f"holds {index.ntotal} vectors, its recorded state says {state.count}"
    return index, None


class VectorIndex:
    """An open, up-to-date FAISS index of one model's embeddings."""

    def __init__(self, catalog: Catalog, model_id: int, kind: str = "auto"):
        self.catalog, self.model_id, self.requested = catalog, model_id, kind
        self.path = catalog.index_dir / f"model-{model_id}.faiss"
        self.index: faiss.Index | None = None
        self.kind = "flat"
        self._gpu = self._ids = None
        self.sync()

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    def _catalog_rows(self, since: int | None = None):
        query = select(Embedding.file_id, Embedding.frame, Embedding.version).where(Embedding.model_id == self.model_id)
        with self.catalog.session() as session:
            rows = session.execute(query).all()
        files = np.array([r[0] for r in rows], np.int64)
        frames = np.array([r[1] for r in rows], np.int64)
        return vector_id(files, frames), np.array([r[2] for r in rows], np.int64)

    def _vectors(self, ids: np.ndarray) -> np.ndarray:
        out = np.zeros((len(ids), self.dim), np.float32)
        position = {int(i): n for n, i in enumerate(ids)}
        files = np.unique(split_vector_id(np.asarray(ids, np.int64))[0])
        with self.catalog.session() as session:
            for start in range(0, len(files), 5000):
                chunk = [int(i) for i in files[start:start + 5000]]
                rows = session.execute(select(Embedding.file_id, Embedding.frame, Embedding.vector).where(
                    Embedding.model_id == self.model_id, Embedding.file_id.in_(chunk))).all()
                rows = [r for r in rows if vector_id(r[0], r[1]) in position]
                if rows:
                    out[[position[vector_id(r[0], r[1])] for r in rows]] = from_blobs([r[2] for r in rows], self.dim)
        return out

    def _sound_vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of these files whose stored vectors are sound; the damaged ones are sent back
        to be embedded again (see the module docstring): the whole file, a video with all its frames."""
        vectors = self._vectors(ids)
        bad = damaged_rows(vectors)
        if bad.any():
            self._send_back(ids[bad])
        return ids[~bad], vectors[~bad]

    def _send_back(self, ids: np.ndarray) -> None:
        chosen = sorted({int(i) for i in split_vector_id(np.asarray(ids, np.int64))[0]})
        with self.catalog.session() as session, session.begin():
            paths = list(session.scalars(select(File.path).where(File.id.in_(chosen)).order_by(File.id)))
            session.execute(delete(Embedding).where(Embedding.model_id == self.model_id,
                                                    Embedding.file_id.in_(chosen)))
            session.execute(update(Model).where(Model.id == self.model_id).values(version=Model.version + 1))
        shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        log.warning("the stored embedding of %d file(s) of model %s is damaged (not a unit-length vector): %s; "
                    "left out of the vector index, and `cliplab index` embeds them again", len(chosen),
                    self.model_id, shown)

    def sync(self) -> dict:
        """Check the saved index against the catalog; update or rebuild it and save when stale.
        Returns what was done: {"action": "fresh"|"updated"|"rebuilt", "added", "removed"}."""
        with self.catalog.session() as session:
            model = session.get(Model, self.model_id)
            state = session.get(VectorIndexState, self.model_id)
            count = session.scalar(select(func.count()).select_from(Embedding)
                                   .where(Embedding.model_id == self.model_id))
        self.dim, version = model.embed_dim, model.version
        kind = choose_kind(count, self.requested)
        if self.index is None and state is not None and state.kind == kind:
            self.index, problem = load_checked(self.path, state, kind, self.dim)
            if problem is not None:
                log.warning("the vector index %s of model %s %s: rebuilding it from the catalog", self.path,
                            self.model_id, problem)
                state = None
            else:
                self.kind = kind
                back_with_huge_pages(self.index)  # once per load: a fresh sync of an open index leaves it
        elif self.index is not None and (self.index.d != self.dim or not _matches_kind(self.index, self.kind)):
            self.index = None  # the model's row changed under an open index: start again
        if (self.index is not None and state is not None and state.version == version
                and state.count == count == self.index.ntotal and self.kind == kind):
            return {"action": "fresh", "added": 0, "removed": 0}
        ids, versions = self._catalog_rows()
        if self.index is None or self.kind != kind or _needs_retrain(kind, state, count):
            ids, vectors = self._sound_vectors(ids)
            self.index, self.kind = build(vectors, ids, kind), kind
            result = {"action": "rebuilt", "added": len(ids), "removed": 0}
            removals = 0
        else:
            have = index_ids(self.index)
            stale_since = state.version if state is not None else -1
            gone = np.setdiff1d(have, ids)
            changed = ids[versions > stale_since]
            drop = np.union1d(gone, np.intersect1d(changed, have))
            if len(drop):
                self.index.remove_ids(faiss.IDSelectorBatch(drop))
            add = np.union1d(np.setdiff1d(ids, have), changed)
            if len(add):
                add, vectors = self._sound_vectors(add)
                self.index.add_with_ids(vectors, add)
            result = {"action": "updated", "added": len(add), "removed": len(gone)}
            removals = (state.removals if state is not None else 0) + len(gone)
        self._gpu = self._ids = None
        back_with_huge_pages(self.index)  # adding may have moved the storage
        digest = save_atomically(self.index, self.path)
        with self.catalog.session() as session, session.begin():
            row = session.get(VectorIndexState, self.model_id)
            if row is None:
                row = VectorIndexState(model_id=self.model_id)
                session.add(row)
            row.kind, row.path, row.count, row.version, row.removals = (
                self.kind, str(self.path), int(self.index.ntotal), version, removals)
            row.dim, row.checksum = self.dim, digest
        return result

    def ids(self) -> np.ndarray:
        if self._ids is None:
            self._ids = index_ids(self.index)
        return self._ids

    def _gpu_index(self):
        if self._gpu is None and self.kind == "flat" and _gpu_available():  # fp32 flat only
            self._gpu = faiss.index_cpu_to_all_gpus(self.index)
        return self._gpu

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores [q, k'], ids [q, k']) best first; allowed restricts to those file ids.
        Missing slots (fewer than k candidates) are dropped from the right (ids -1)."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
        k = max(1, min(k, self.count))
        if self.count == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        if allowed is None and self.kind == "flat" and len(queries) < SMALL_BATCH and self._gpu_index() is None:
            scores, ids = exact_small_batch(self.index, self.ids(), queries, k)
        elif allowed is None:
            index = self._gpu_index() or self.index
            scores, ids = index.search(queries, k)
        else:
            allowed = np.ascontiguousarray(allowed, np.int64)
            k = max(1, min(k, len(allowed)))
            selector = faiss.IDSelectorBatch(allowed)
            if split_kind(self.kind)[0] == "flat":
                scores, ids = self.index.search(queries, k, params=faiss.SearchParameters(sel=selector))
            elif len(allowed) <= 50_000:  # a narrow filter: exact over the subset beats probing lists
                vectors = np.stack([self.index.reconstruct(int(i)) for i in allowed])
                sims = queries @ vectors.T
                order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
                scores, ids = np.take_along_axis(sims, order, 1), allowed[order]
            else:
                params = faiss.SearchParametersIVF(sel=selector, nprobe=faiss.extract_index_ivf(self.index).nprobe)
                scores, ids = self.index.search(queries, k, params=params)
        valid = (ids >= 0).all(axis=0)
        return scores[:, valid], ids[:, valid]

    def reconstruct(self, file_id: int) -> np.ndarray:
        return self.index.reconstruct(int(file_id))


def _needs_retrain(kind: str, state: VectorIndexState | None, count: int) -> bool:
    """An IVF trained on far fewer vectors (or after many removals) partitions badly, and int8 ranges
    trained on far fewer vectors clip the new ones: rebuild. A flat fp32 or fp16 index never needs it."""
    if kind in ("flat", "flat-fp16"):
        return False
    return state is None or count > 2 * state.count or state.removals > state.count // 2


def _gpu_available() -> bool:
    if not hasattr(faiss, "index_cpu_to_all_gpus") or faiss.get_num_gpus() == 0:
        return False
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


def open_index(catalog: Catalog, model_id: int, kind: str = "auto") -> VectorIndex:
    return VectorIndex(catalog, model_id, kind)
