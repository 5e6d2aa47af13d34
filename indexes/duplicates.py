"""Duplicate photos: exact copies by content hash, near-duplicates by embedding similarity.

- exact: files with equal fingerprint and size, confirmed by a full-content blake2b hash
  (computed once per candidate and kept in the catalog);
- near: files whose embeddings have cosine >= threshold are linked (each to its nearest
  neighbours), linked files form a group, and each group is split into capture-time bursts
  (photos taken less than `burst_seconds` apart stay together; undated photos form their own group);
- keeper rule: the largest resolution (width x height), then the earliest capture time, then the
  shortest path: the original is usually the biggest and the first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import func, select, update

from indexes.catalog import Catalog, Embedding, File, from_blobs
from indexes.scan import full_hash
from indexes.vectors import VectorIndex


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

    @property
    def keeper(self) -> Member:
        return min(self.members, key=lambda m: (-(m.width or 0) * (m.height or 0), m.captured_at is None,
                                                m.captured_at or datetime.max, len(m.path), m.path))


def _members(catalog: Catalog, ids) -> dict[int, Member]:
    with catalog.session() as session:
        rows = session.scalars(select(File).where(File.id.in_([int(i) for i in ids]))).all()
    return {f.id: Member(f.id, f.path, f.width, f.height, f.captured_at) for f in rows}


def exact_duplicates(catalog: Catalog) -> list[Group]:
    with catalog.session() as session, session.begin():
        keys = session.execute(select(File.fingerprint, File.size).group_by(File.fingerprint, File.size)
                               .having(func.count() > 1)).all()
        groups = []
        for fingerprint, size in keys:
            files = session.scalars(select(File).where(File.fingerprint == fingerprint, File.size == size)).all()
            by_hash: dict[str, list[File]] = {}
            for f in files:
                if f.full_hash is None:
                    try:
                        f.full_hash = full_hash(f.path)
                    except OSError:  # offline or gone: cannot be confirmed
                        continue
                    session.execute(update(File).where(File.id == f.id).values(full_hash=f.full_hash))
                by_hash.setdefault(f.full_hash, []).append(f)
            for same in by_hash.values():
                if len(same) > 1:
                    groups.append(Group("exact", [Member(f.id, f.path, f.width, f.height, f.captured_at)
                                                  for f in sorted(same, key=lambda f: f.path)]))
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


def near_duplicates(catalog: Catalog, index: VectorIndex, threshold: float = 0.95, burst_seconds: float = 300.0,
                    neighbours: int = 16) -> list[Group]:
    with catalog.session() as session:
        rows = session.execute(select(Embedding.file_id, Embedding.vector)
                               .where(Embedding.model_id == index.model_id)).all()
    if len(rows) < 2:
        return []
    ids = np.array([r[0] for r in rows], np.int64)
    vectors = from_blobs([r[1] for r in rows], index.dim)
    pairs = []
    for start in range(0, len(ids), 4096):
        scores, found = index.search(vectors[start:start + 4096], min(neighbours, len(ids)))
        for row, (score_row, found_row) in enumerate(zip(scores, found)):
            me = int(ids[start + row])
            pairs += [(me, int(j)) for s, j in zip(score_row, found_row) if s >= threshold and j != me and j >= 0]
    groups = []
    for component in _components(ids, pairs):
        members = _members(catalog, component)
        for burst in split_bursts([members[i] for i in component if i in members], burst_seconds):
            groups.append(Group("near", burst))
    return groups
