"""Walking photo folders and bringing the catalog up to date with them, incrementally.

- unchanged (same size and mtime): not read at all;
- changed: fingerprinted again; new content loses its embeddings and goes back to "pending";
- removed: deleted from the catalog (its embeddings with it);
- moved or renamed: a new path whose fingerprint equals a vanished file's takes over that file's
  row, so its id and embeddings are kept; a new copy of content the catalog already embedded
  gets those embeddings copied;
- a root folder that is missing, or an empty mount point whose volume is gone: marked offline,
  its files kept untouched until it comes back.

Fingerprint: blake2b-128 of the size and the first and last 64 KiB (the whole file when it is at
most 128 KiB). It names content across moves without reading whole photos; the exact-duplicate
finder confirms equal fingerprints with a full-content hash (`full_hash`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import delete, select, update

from engine.errors import CliplabError
from indexes.catalog import Catalog, Embedding, File, Folder, Model

EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "heic", "heif"})
CHUNK = 64 * 1024


def fingerprint(path: str | os.PathLike, size: int | None = None) -> str:
    size = os.path.getsize(path) if size is None else size
    digest = hashlib.blake2b(size.to_bytes(8, "little"), digest_size=16)
    with open(path, "rb") as f:
        if size <= 2 * CHUNK:
            digest.update(f.read())
        else:
            digest.update(f.read(CHUNK))
            f.seek(size - CHUNK)
            digest.update(f.read(CHUNK))
    return digest.hexdigest()


def full_hash(path: str | os.PathLike) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_candidate(name: str) -> bool:
    """An image file by extension (any case), not hidden, not AppleDouble `._*` or `.DS_Store`."""
    if name.startswith("."):
        return False
    ext = name.rpartition(".")[2].lower()
    return "." in name and ext in EXTENSIONS


def walk(root: str) -> dict[str, os.stat_result]:
    """Every image file under root (hidden folders skipped) -> its stat."""
    found: dict[str, os.stat_result] = {}
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:  # unreadable subfolder: its files are simply not seen this time
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file() and is_candidate(entry.name):
                    found[entry.path] = entry.stat()
            except OSError:
                continue
    return found


def mount_point(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.ismount(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


@dataclass
class ScanReport:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    moved: list[tuple[str, str]] = field(default_factory=list)
    unchanged: int = 0
    offline: list[str] = field(default_factory=list)
    fingerprinted: int = 0  # files read (for fingerprints) during the scan

    def summary(self) -> str:
        parts = [f"{len(self.added)} new", f"{len(self.changed)} changed", f"{len(self.removed)} removed",
                 f"{len(self.moved)} moved", f"{self.unchanged} unchanged"]
        if self.offline:
            parts.append(f"{len(self.offline)} folder(s) offline: {', '.join(self.offline)}")
        return ", ".join(parts)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _is_offline(root: str, folder: Folder | None) -> bool:
    if not os.path.isdir(root):
        return True
    # An empty mount point (or a folder that now sits on another volume than before) with nothing
    # in it: the disk is unplugged, not emptied by the user.
    if folder is not None and mount_point(root) != folder.volume and not any(os.scandir(root)):
        return True
    return False


def _folder_for(session, root: str) -> Folder:
    """The catalog folder owning root: an existing folder containing it, or a new one (which
    absorbs folders inside it that were indexed before)."""
    folders = session.scalars(select(Folder)).all()
    for folder in folders:
        if _within(root, folder.path):
            return folder
    folder = Folder(path=root, volume=mount_point(root), online=True)
    session.add(folder)
    session.flush()
    for inner in folders:
        if _within(inner.path, root):
            session.execute(update(File).where(File.folder_id == inner.id).values(folder_id=folder.id))
            session.delete(inner)
    return folder


def scan(catalog: Catalog, roots: list[str | os.PathLike]) -> ScanReport:
    """Bring the catalog's view of roots up to date (one transaction). Returns what changed."""
    report = ScanReport()
    with catalog.session() as session, session.begin():
        vanished: dict[str, list[File]] = {}  # fingerprint -> catalog files no longer on disk
        new: list[tuple[str, os.stat_result, str, Folder]] = []
        for raw in roots:
            root = os.path.abspath(os.path.expanduser(str(raw)))
            known = session.scalars(select(Folder).where(Folder.path == root)).first()
            if _is_offline(root, known or _existing_parent(session, root)):
                folder = known or _existing_parent(session, root)
                if folder is None:
                    raise CliplabError(f"{root} is not a folder (or its disk is not mounted). Give an existing "
                                       "folder of photos.")
                if folder.path == root:
                    folder.online = False
                report.offline.append(root)
                continue
            folder = _folder_for(session, root)
            folder.online, folder.volume, folder.last_scan = True, mount_point(folder.path), datetime.now()
            on_disk = walk(root)
            catalog_files = session.scalars(select(File).where(File.folder_id == folder.id)).all()
            for row in catalog_files:
                if not _within(row.path, root):
                    continue
                stat = on_disk.pop(row.path, None)
                if stat is None:
                    vanished.setdefault(row.fingerprint, []).append(row)
                elif stat.st_size == row.size and stat.st_mtime_ns == row.mtime_ns:
                    report.unchanged += 1
                else:
                    _update_changed(session, row, stat, report)
            for path, stat in on_disk.items():
                new.append((path, stat, _safe_fingerprint(path, stat.st_size), folder))
                report.fingerprinted += 1
        _apply_new(session, new, vanished, report)
        for rows in vanished.values():
            for row in rows:
                report.removed.append(row.path)
                session.delete(row)
        if report.removed or report.changed or report.added:
            # embeddings were deleted or copied: vector indexes must look again (indexes.vectors)
            session.execute(update(Model).values(version=Model.version + 1))
    for lst in (report.added, report.changed, report.removed, report.moved):
        lst.sort()
    return report


def _existing_parent(session, root: str) -> Folder | None:
    return next((f for f in session.scalars(select(Folder)).all() if _within(root, f.path)), None)


def _safe_fingerprint(path: str, size: int) -> str:
    try:
        return fingerprint(path, size)
    except OSError:  # unreadable now: a fingerprint of nothing; decoding will record why
        return hashlib.blake2b(f"unreadable:{path}".encode(), digest_size=16).hexdigest()


def _update_changed(session, row: File, stat: os.stat_result, report: ScanReport) -> None:
    report.fingerprinted += 1
    new_print = _safe_fingerprint(row.path, stat.st_size)
    row.size, row.mtime_ns = stat.st_size, stat.st_mtime_ns
    if new_print == row.fingerprint:  # touched, same content: keep everything
        report.unchanged += 1
        return
    row.fingerprint, row.full_hash = new_print, None
    row.status, row.skip_reason = "pending", None
    row.width = row.height = row.captured_at = row.camera = None
    session.execute(delete(Embedding).where(Embedding.file_id == row.id))
    report.changed.append(row.path)


def _known_content(session, prints: list[str]) -> dict[str, File]:
    """fingerprint -> a catalogued, already decoded file with that fingerprint (one query per 500)."""
    known: dict[str, File] = {}
    for start in range(0, len(prints), 500):
        chunk = prints[start:start + 500]
        for row in session.scalars(select(File).where(File.fingerprint.in_(chunk), File.status != "pending")):
            known.setdefault(row.fingerprint, row)
    return known


def _apply_new(session, new, vanished: dict[str, list[File]], report: ScanReport) -> None:
    fresh = []
    for path, stat, print_, folder in sorted(new, key=lambda item: item[0]):
        candidates = vanished.get(print_)
        if candidates:
            row = candidates.pop(0)
            if not candidates:
                del vanished[print_]
            report.moved.append((row.path, path))
            row.path, row.folder_id, row.ext = path, folder.id, _ext(path)
            row.size, row.mtime_ns = stat.st_size, stat.st_mtime_ns
        else:
            fresh.append((path, stat, print_, folder))
    known = _known_content(session, sorted({item[2] for item in fresh}))
    copies = []
    for path, stat, print_, folder in fresh:
        row = File(folder_id=folder.id, path=path, ext=_ext(path), size=stat.st_size, mtime_ns=stat.st_mtime_ns,
                   fingerprint=print_, status="pending")
        twin = known.get(print_)
        if twin is not None and twin.size == stat.st_size:  # the same content is catalogued: reuse it
            row.status, row.skip_reason, row.full_hash = twin.status, twin.skip_reason, twin.full_hash
            row.width, row.height, row.captured_at, row.camera = twin.width, twin.height, twin.captured_at, twin.camera
            copies.append((row, twin))
        session.add(row)
        report.added.append(path)
    session.flush()
    for row, twin in copies:
        for emb in session.scalars(select(Embedding).where(Embedding.file_id == twin.id)).all():
            session.add(Embedding(file_id=row.id, model_id=emb.model_id, vector=emb.vector, version=emb.version))


def _ext(path: str) -> str:
    return Path(path).suffix.lower().lstrip(".")[:8]
