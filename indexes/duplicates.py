"""Duplicate photos: exact copies by content hash, near-duplicates by embedding similarity.

- exact: decoded photos (status ok, never empty or damaged files) with equal size and full-content
  fingerprint (blake2b-128 of every byte, indexes.scan); symlinks to the same file are one file,
  not copies of it;
- near: files whose embeddings have cosine >= threshold are linked (each to its nearest
  neighbours), linked files form a group, and each group is split into capture-time bursts
  (photos taken less than `burst_seconds` apart stay together; undated photos form their own group).
  An exact group takes part as its keeper alone, so an exact pair is never listed again as "near".
  The default threshold is relative to the library: cosine >= 1 - RELATIVE * (1 - m), m the median
  cosine of random pairs of the library's photos. A model that sees a user's photos as all alike
  (the demo model on anything outside its synthetic world: m ~ 0.91) then needs 0.9955, while one
  that tells them apart (m ~ 0) needs 0.95. RELATIVE = 0.05 is measured on generated
  near-duplicates (re-encodes, resizes, crops, small edits) against different photos: precision 1.0
  on both kinds of pictures (benchmarks/library.py --only duplicates, docs/benchmarks.md), where a
  fixed 0.95 had precision 0.60 on the out-of-world ones;
- keeper rule: the largest resolution (width x height), then the earliest capture time, then the
  shortest path: the original is usually the biggest and the first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import func, select

from cliplab.engine.errors import CliplabError
from cliplab.indexes.catalog import Catalog, Embedding, File, from_blobs
from cliplab.indexes.scan import UNKNOWN
from cliplab.indexes.vectors import VectorIndex

RELATIVE = 0.05
BACKGROUND_PAIRS = 5000  # random pairs whose median cosine says what "unrelated" looks like here


@dataclass
class Member:
    file_id: int
    path: str
    width: int | None
    height: int | None
    captured_at: datetime | None


@dataclass
class Group:
    kind: str  # "exact" | "near"
    members: list[Member]
    threshold: float | None = None  # near: the cosine its links had to reach

    @property
    def keeper(self) -> Member:
        return min(self.members, key=lambda m: (-(m.width or 0) * (m.height or 0), m.captured_at is None,
                                                m.captured_at or datetime.max, len(m.path), m.path))


def _members(catalog: Catalog, ids) -> dict[int, Member]:
    with catalog.session() as session:
        rows = session.scalars(select(File).where(File.id.in_([int(i) for i in ids]))).all()
    return {f.id: Member(f.id, f.path, f.width, f.height, f.captured_at) for f in rows}


def exact_duplicates(catalog: Catalog) -> list[Group]:
    with catalog.session() as session:
        keys = session.execute(select(File.fingerprint, File.size)
                               .where(File.status == "ok", File.size > 0, File.fingerprint != UNKNOWN)
                               .group_by(File.fingerprint, File.size).having(func.count() > 1)).all()
        groups = []
        for fingerprint, size in keys:
            files = session.scalars(select(File).where(File.fingerprint == fingerprint, File.size == size,
                                                       File.status == "ok").order_by(File.path)).all()
            one_per_file: dict[str, File] = {}
            for f in files:  # two symlinks (or a link and its target) are one file, not two copies
                one_per_file.setdefault(os.path.realpath(f.disk_path), f)
            if len(one_per_file) > 1:
                groups.append(Group("exact", [Member(f.id, f.path, f.width, f.height, f.captured_at)
                                              for f in one_per_file.values()]))
    return groups


def _components(ids: np.ndarray, pairs: list[tuple[int, int]]) -> list[list[int]]:
    parent = {int(i): int(i) for i in ids}

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        parent[root(a)] = root(b)
    groups: dict[int, list[int]] = {}
    for i in parent:
        groups.setdefault(root(i), []).append(i)
    return [sorted(g) for g in groups.values() if len(g) > 1]


def split_bursts(members: list[Member], burst_seconds: float) -> list[list[Member]]:
    dated = sorted((m for m in members if m.captured_at), key=lambda m: m.captured_at)
    bursts, current = [], []
    for m in dated:
        if current and (m.captured_at - current[-1].captured_at).total_seconds() > burst_seconds:
            bursts.append(current)
            current = []
        current.append(m)
    bursts += [current, [m for m in members if m.captured_at is None]]
    return [b for b in bursts if len(b) > 1]


def library_threshold(vectors: np.ndarray, seed: int = 0) -> float:
    """The default near-duplicate cosine for these (unit) vectors: see the module docstring."""
    n = len(vectors)
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, n, BACKGROUND_PAIRS), rng.integers(0, n, BACKGROUND_PAIRS)
    keep = a != b
    background = float(np.median((vectors[a[keep]] * vectors[b[keep]]).sum(1))) if keep.any() else 0.0
    return 1.0 - RELATIVE * (1.0 - background)


def near_duplicates(catalog: Catalog, index: VectorIndex, threshold: float | None = None,
                    burst_seconds: float = 300.0, neighbours: int = 16,
                    exact: list[Group] | None = None) -> list[Group]:
    """Groups of different files that show the same picture (see the module docstring). threshold:
    a cosine, None for the library's own (library_threshold); exact: the exact groups already found
    (computed when not given), each taking part as its keeper only."""
    if threshold is not None and not 0.0 < threshold <= 1.0:
        raise CliplabError(f"The near-duplicate threshold must be a cosine similarity in (0, 1], not {threshold}.")
    if not burst_seconds >= 0:
        raise CliplabError(f"The burst gap must be 0 seconds or more, not {burst_seconds}.")
    exact = exact_duplicates(catalog) if exact is None else exact
    hidden = {m.file_id for g in exact for m in g.members if m.file_id != g.keeper.file_id}
    with catalog.session() as session:
        rows = [r for r in session.execute(select(Embedding.file_id, Embedding.vector)
                                           .where(Embedding.model_id == index.model_id)).all()
                if r[0] not in hidden]
    if len(rows) < 2:
        return []
    ids = np.array([r[0] for r in rows], np.int64)
    vectors = from_blobs([r[1] for r in rows], index.dim)
    threshold = library_threshold(vectors) if threshold is None else threshold
    allowed = ids if hidden else None
    pairs = []
    for start in range(0, len(ids), 4096):
        scores, found = index.search(vectors[start:start + 4096], min(neighbours, len(ids)), allowed)
        for row, (score_row, found_row) in enumerate(zip(scores, found)):
            me = int(ids[start + row])
            pairs += [(me, int(j)) for s, j in zip(score_row, found_row) if s >= threshold and j != me and j >= 0]
    groups = []
    for component in _components(ids, pairs):
        members = _members(catalog, component)
        for burst in split_bursts([members[i] for i in component if i in members], burst_seconds):
            groups.append(Group("near", burst, threshold))
    return groups
