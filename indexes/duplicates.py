"""Duplicate photos: exact copies by content hash, similar pictures by the copy detector.

- one file, many names: a symlink (or a path through a folder link) and its target are one file
  on disk, never copies of each other: catalog rows of equal content that resolve to one real path
  are one file, represented by the real path itself (indexes.scan follows links inside the library);
- exact: decoded photos (status ok, never empty or damaged files) with equal size and full-content
  fingerprint (blake2b-128 of every byte, indexes.scan) that are different files: copies, with a
  suggested keeper (KEEPER_RULE);
- similar: files the copy detector (engine.copydetect, the learned one by default: not CLIP's
  similarity, which puts distinct pictures of one thing at near-perfect cosine) scores >= threshold
  are linked, linked files form a
  group, and each group is split into capture-time bursts (photos taken less than `burst_seconds`
  apart stay together; undated photos form their own group). The detector finds one picture
  re-encoded, resized, cropped or recoloured (Appendix C's variants), measured against distinct
  pictures of one thing (benchmarks/copy_detector.py, docs/benchmarks.md); still a detector, not a
  proof, so these groups are "similar pictures" to look at, never copies to delete: they have no
  keeper. Every file takes part once: an exact group as its keeper, a file under several names as
  its real path. The default threshold is the detector's own, the same for every library (the
  detector does not depend on a model); descriptors are made once per content and detector and kept
  in the catalog (indexes.copies.library_descriptors);
- keeper rule (exact copies only): the largest resolution (width x height), then the earliest date by
  the library's one date rule (the EXIF capture time, else the file's modification time:
  indexes.catalog.photo_date; copies share their EXIF, so it is the file time that tells the
  original from a later `cp`), then the shortest path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import func, select

from cliplab.engine import copydetect
from cliplab.engine.errors import CliplabError
from cliplab.indexes.catalog import Catalog, File, photo_date
from cliplab.indexes.copies import CopyIndex, library_descriptors
from cliplab.indexes.scan import UNKNOWN
from cliplab.indexes.shots import companion_ids

# What the front ends say about the keeper and the similar groups (one wording, the CLI and the app).
KEEPER_RULE = ("Suggested keeper of exact copies: the largest resolution, then the earliest date (capture time, "
               "else file time), then the shortest path.")
SIMILAR_NOTE = ("Similar pictures are what the copy detector takes for one picture resized, cropped, recoloured or "
                "re-encoded: a detector can be wrong, so look at them before deleting anything; no keeper is suggested.")


@dataclass
class Member:
    file_id: int
    path: str
    width: int | None
    height: int | None
    captured_at: datetime | None
    date: datetime | None = None  # photo_date: the capture time, else the file time


@dataclass
class Group:
    kind: str  # "exact" (copies: equal bytes) | "similar" (copies to the detector: look before deleting)
    members: list[Member]
    threshold: float | None = None  # similar: the copy score its links had to reach

    @property
    def keeper(self) -> Member | None:
        """The suggested keeper of exact copies (KEEPER_RULE); None for similar pictures."""
        if self.kind != "exact":
            return None
        return min(self.members, key=lambda m: (-(m.width or 0) * (m.height or 0), m.date is None,
                                                m.date or datetime.max, len(m.path), m.path))


def _member(f: File) -> Member:
    return Member(f.id, f.path, f.width, f.height, f.captured_at, photo_date(f.captured_at, f.mtime_ns)[0])


def _members(catalog: Catalog, ids) -> dict[int, Member]:
    with catalog.session() as session:
        rows = session.scalars(select(File).where(File.id.in_([int(i) for i in ids]))).all()
    return {f.id: _member(f) for f in rows}


def _one_per_file(files: list[File]) -> list[File]:
    """One row per file on disk: rows resolving to one real path (a symlink and its target, a path
    through a folder link) are one file, represented by the row of the real path itself when the
    catalog has it (else the shortest name), so a keeper is never a link whose target is offered
    for deletion."""
    by_file: dict[str, list[File]] = {}
    for f in files:
        by_file.setdefault(os.path.realpath(f.disk_path), []).append(f)
    return [min(rows, key=lambda f: (os.path.abspath(f.disk_path) != real, len(f.path), f.path))
            for real, rows in by_file.items()]


def _content_groups(catalog: Catalog) -> list[list[File]]:
    """The decoded files that share their content (size and full fingerprint) with another row."""
    with catalog.session() as session:
        keys = session.execute(select(File.fingerprint, File.size)
                               .where(File.status == "ok", File.size > 0, File.fingerprint != UNKNOWN)
                               .group_by(File.fingerprint, File.size).having(func.count() > 1)).all()
        return [list(session.scalars(select(File).where(File.fingerprint == fingerprint, File.size == size,
                                                        File.status == "ok").order_by(File.path)))
                for fingerprint, size in keys]


def exact_duplicates(catalog: Catalog) -> list[Group]:
    """Groups of different files with equal bytes (a file under several names counts once)."""
    groups = []
    for rows in _content_groups(catalog):
        files = _one_per_file(rows)
        if len(files) > 1:
            groups.append(Group("exact", [_member(f) for f in files]))
    return groups


def _not_themselves(catalog: Catalog) -> set[int]:
    """Rows that stand for a file another row already stands for in the similar groups: every copy
    of equal content but its exact group's keeper, every other name of one file (links), and the RAW
    of a shot another file stands for (indexes.shots: one photo, not a pair of look-alikes)."""
    hidden = companion_ids(catalog)
    for rows in _content_groups(catalog):
        files = _one_per_file(rows)
        if len(files) > 1:
            shown = Group("exact", [_member(f) for f in files]).keeper.file_id
        else:
            shown = files[0].id
        hidden |= {f.id for f in rows if f.id != shown}
    return hidden


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


def near_duplicates(catalog: Catalog, detector: copydetect.Detector, threshold: float | None = None,
                    burst_seconds: float = 300.0, on_progress=None) -> list[Group]:
    """Groups of different files the copy detector links ("similar", see the module docstring): never
    a file with itself under another name, and copies of one content only through their keeper.
    threshold: a copy score in (0, 1], None for the detector's own."""
    if threshold is not None and not 0.0 < threshold <= 1.0:
        raise CliplabError(f"The near-duplicate threshold must be a copy score in (0, 1], not {threshold}.")
    if not burst_seconds >= 0:
        raise CliplabError(f"The burst gap must be 0 seconds or more, not {burst_seconds}.")
    threshold = detector.threshold if threshold is None else threshold
    hidden = _not_themselves(catalog)
    described = library_descriptors(catalog, detector, on_progress)
    ids, descriptors = described.ids, described.descriptors
    shown = np.array([i not in hidden for i in ids], bool)
    ids, descriptors = ids[shown], descriptors[shown]
    if len(ids) < 2:
        return []
    queries, found, _ = CopyIndex(descriptors).matches(descriptors, threshold)
    pairs = [(int(ids[a]), int(ids[b])) for a, b in zip(queries, found) if a != b]
    groups = []
    for component in _components(ids, pairs):
        members = _members(catalog, component)
        for burst in split_bursts([members[i] for i in component if i in members], burst_seconds):
            groups.append(Group("similar", burst, threshold))
    return groups
