"""Walking photo folders and bringing the catalog up to date with them, incrementally.

- unchanged (same size and mtime): not read at all;
- changed: fingerprinted again; new content loses its embeddings and goes back to "pending";
- removed: deleted from the catalog (its embeddings with it), but only when the folder that held
  it was read and the entry is gone from it;
- unavailable: a subfolder that cannot be read (permissions, I/O error), a mount point left
  empty by an unmounted disk (an empty folder on another device than its files were), or one an
  auto-mounter removed on unplug (the nearest folder still there is on another device than the
  files were, as each file's st_dev recorded): its files are kept, marked `unavailable` with the
  reason, and come back with their ids and embeddings;
- moved or renamed: a new path whose full-content fingerprint and size equal a vanished file's
  takes over that file's row, so its id and embeddings are kept; a new copy of content the
  catalog already embedded gets those embeddings copied;
- a root folder that is missing, or an empty mount point whose volume is gone: marked offline,
  its files kept untouched until it comes back.

Fingerprint: blake2b-128 of the whole content, computed only for new files and files whose size
or mtime changed, so equal fingerprints mean equal bytes and a rescan of an unchanged library
reads no file. Names are bytes-safe (indexes.names); nothing one file or folder does stops a scan:
what cannot be catalogued is recorded with its reason (files.skip_reason, scan_skips).

Symlinks: followed when they point inside one of the library's folders (the link is then a
photo of its own path, like an alias); links that point outside them, nowhere, or back into
their own folder chain (a loop) are recorded as skipped with the reason.
"""

from __future__ import annotations

import hashlib
import os
import stat as stat_module
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import delete, select, update

from cliplab.engine.errors import CliplabError
from cliplab.engine.raw import RAW_EXTENSIONS
from cliplab.engine.video import VIDEO_EXTENSIONS
from cliplab.indexes.catalog import Catalog, Embedding, File, Folder, Model, ScanSkip
from cliplab.indexes.names import catalog_name, on_disk, readable
from cliplab.indexes.retry import retrying
from cliplab.indexes.writer import writer_lock

EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "heic", "heif"}) | RAW_EXTENSIONS
BLOCK = 1 << 20
UNKNOWN = ""  # the fingerprint of a file whose content has not been read yet
HASH_THREADS = 4  # hashlib releases the GIL: parallel reads and hashing of new files


def fingerprint(path: str | os.PathLike) -> str:
    """blake2b-128 of the whole file (hex)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


def is_candidate(name: str) -> bool:
    """An image or video file by extension (any case), not hidden, not AppleDouble `._*` or `.DS_Store`."""
    if name.startswith("."):
        return False
    ext = name.rpartition(".")[2].lower()
    return "." in name and (ext in EXTENSIONS or ext in VIDEO_EXTENSIONS)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def library_roots(catalog: Catalog) -> list[str]:
    """The real paths of the library's folders: where followed symlinks may point, and what is served."""
    with catalog.session() as session:
        return [os.path.realpath(path) for path in session.scalars(select(Folder.path))]


def inside_library(disk_path: str, roots: list[str]) -> bool:
    """Whether the file at disk_path, symlinks resolved, lies inside one of the library's folders."""
    real = os.path.realpath(disk_path)
    return any(_within(real, root) for root in roots)


def _kind_of(mode: int) -> str:
    for test, name in ((stat_module.S_ISFIFO, "a FIFO (named pipe)"), (stat_module.S_ISSOCK, "a socket"),
                       (stat_module.S_ISCHR, "a character device"), (stat_module.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


@dataclass
class Listing:
    """What one walk of a root saw."""
    files: dict[str, os.stat_result] = field(default_factory=dict)  # image file (disk path) -> stat
    listed: dict[str, tuple[int, bool]] = field(default_factory=dict)  # folder read -> (st_dev, empty)
    unreadable: dict[str, str] = field(default_factory=dict)  # folder that could not be read -> why
    skips: dict[str, str] = field(default_factory=dict)  # path not catalogued as a photo -> why

    def unavailable_reason(self, disk_path: str, device: int | None, root: str) -> str | None:
        """Why a catalogued file that was not seen is only out of reach (None: it is gone). A file is gone
        only when the nearest of its folders that was read is on the device the file was on: a folder on
        another device than its file means the file's disk is not mounted there now (an empty mount
        point, or one removed on unplug), never that the file was deleted."""
        folder = os.path.dirname(disk_path)
        while _within(folder, root):
            if folder in self.unreadable:
                return self.unreadable[folder]
            if folder in self.listed:
                folder_device, empty = self.listed[folder]
                if device is None or folder_device == device:
                    return None
                if empty:
                    return (f"the folder {readable(folder)} is empty and on another disk than its photos were: "
                            "its disk is probably not mounted")
                return (f"{readable(os.path.dirname(disk_path))} is gone and its photos were on another disk than "
                        f"{readable(folder)}: that disk is probably not mounted")
            folder = os.path.dirname(folder)
        return None


def walk(root: str, library_roots: list[str] | None = None) -> Listing:
    """Every image file under root (hidden entries skipped), what could not be read, and why."""
    listing = Listing()
    inside = [os.path.realpath(r) for r in (library_roots or [])] + [os.path.realpath(root)]
    stack: list[tuple[str, tuple[str, ...]]] = [(root, (os.path.realpath(root),))]
    while stack:
        folder, chain = stack.pop()
        try:
            device = os.stat(folder).st_dev
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as error:
            why = f"the folder {readable(folder)} cannot be read ({error.strerror or error})"
            listing.unreadable[folder] = why
            listing.skips[folder] = f"unreadable folder: {why}"
            continue
        listing.listed[folder] = (device, not entries)
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                _visit(entry, chain, inside, listing, stack)
            except OSError as error:
                listing.skips[entry.path] = f"unreadable: {readable(entry.path)} cannot be read ({error.strerror or error})"
    return listing


def _visit(entry: os.DirEntry, chain: tuple[str, ...], inside: list[str], listing: Listing, stack: list) -> None:
    if entry.is_symlink():
        target = os.readlink(entry.path)
        try:
            info = os.stat(entry.path)
        except OSError as error:
            if is_candidate(entry.name) or "." not in entry.name:
                loop = error.errno == 40  # ELOOP
                listing.skips[entry.path] = (f"symlink loop: {readable(entry.path)} points back to itself" if loop else
                                             f"dangling symlink: {readable(entry.path)} points to {readable(target)}, which does "
                                             "not exist")
            return
        real = os.path.realpath(entry.path)
        is_dir = stat_module.S_ISDIR(info.st_mode)
        if not is_dir and not is_candidate(entry.name):
            return
        if not any(_within(real, r) for r in inside):
            listing.skips[entry.path] = (f"symlink outside the library: {readable(entry.path)} points to {readable(real)}; only "
                                         "links inside the library's folders are followed")
        elif is_dir and real in chain:
            listing.skips[entry.path] = f"symlink loop: {readable(entry.path)} points back to {readable(real)}, a folder above it"
        elif is_dir:
            stack.append((entry.path, chain + (real,)))
        elif stat_module.S_ISREG(info.st_mode):
            listing.files[entry.path] = info
        else:
            listing.skips[entry.path] = f"not a photo file: {readable(entry.path)} points to {_kind_of(info.st_mode)}"
        return
    if entry.is_dir(follow_symlinks=False):
        stack.append((entry.path, chain + (os.path.join(chain[-1], entry.name),)))
    elif is_candidate(entry.name):
        info = entry.stat(follow_symlinks=False)
        if stat_module.S_ISREG(info.st_mode):
            listing.files[entry.path] = info
        else:
            listing.skips[entry.path] = f"not a photo file: {readable(entry.path)} is {_kind_of(info.st_mode)}"


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
    unavailable: dict[str, int] = field(default_factory=dict)  # reason -> files kept but out of reach
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) met by this scan
    fingerprinted: int = 0  # files read (for fingerprints) during the scan

    def summary(self) -> str:
        parts = [f"{len(self.added)} new", f"{len(self.changed)} changed", f"{len(self.removed)} removed",
                 f"{len(self.moved)} moved", f"{self.unchanged} unchanged"]
        if self.offline:
            parts.append(f"{len(self.offline)} folder(s) offline: {', '.join(self.offline)}")
        if self.unavailable:
            kept = sum(self.unavailable.values())
            parts.append(f"{kept} file(s) kept but out of reach ({'; '.join(sorted(self.unavailable))})")
        if self.skipped:
            parts.append(f"{len(self.skipped)} other entr(ies) skipped (see `cliplab index --skipped`)")
        return ", ".join(parts)


def _is_offline(root: str, folder: Folder | None) -> bool:
    if not os.path.isdir(root):
        return True
    # An empty mount point (or a folder that now sits on another volume than before) with nothing
    # in it: the disk is unplugged, not emptied by the user.
    try:
        empty = not any(os.scandir(root))
    except OSError:
        return False  # unreadable: walk() records it, and its files are kept as unavailable
    return folder is not None and mount_point(root) != folder.volume and empty


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
            session.execute(update(ScanSkip).where(ScanSkip.folder_id == inner.id).values(folder_id=folder.id))
            session.delete(inner)
    return folder


def _root_path(raw: str | os.PathLike | bytes) -> str:
    path = os.fsdecode(raw) if isinstance(raw, bytes) else str(raw)
    root = os.path.abspath(os.path.expanduser(path))
    if catalog_name(root)[1] is not None:
        raise CliplabError(f"The folder name {readable(root)} is not valid UTF-8: index the folder above it "
                           "(names inside a folder may be anything), or rename it.")
    return root


def scan(catalog: Catalog, roots: list[str | os.PathLike]) -> ScanReport:
    """Bring the catalog's view of roots up to date (one transaction, retried if the database drops
    out; under the catalog's writer lock). Returns what changed."""
    with writer_lock(catalog):
        return retrying(lambda: _scan_once(catalog, [_root_path(r) for r in roots]), "scanning the folders")


def check_folders(catalog: Catalog) -> ScanReport:
    """`cliplab index` without folders: every library folder whose root is missing now is marked offline
    (its files kept), and one that was offline and is back is scanned again, so its files return with
    their ids and embeddings. Returns what changed."""
    with catalog.session() as session:
        folders = session.execute(select(Folder.path, Folder.online)).all()
    moved = [path for path, online in folders if online != os.path.isdir(path)]
    return scan(catalog, moved) if moved else ScanReport()


def _scan_once(catalog: Catalog, roots: list[str]) -> ScanReport:
    report = ScanReport()
    with catalog.session() as session, session.begin():
        vanished: dict[tuple[str, int], list[File]] = {}  # (fingerprint, size) -> catalog files no longer on disk
        new: list[tuple[str, str, bytes | None, os.stat_result, Folder]] = []
        library = [f.path for f in session.scalars(select(Folder))] + roots
        for root in roots:
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
            listing = walk(root, library)
            on_disk = _catalog_keys(listing, report)
            catalog_files = session.scalars(select(File).where(File.folder_id == folder.id)).all()
            for row in catalog_files:
                if not _within(row.path, root):
                    continue
                seen = on_disk.pop(row.path, None)
                if seen is None:
                    why = listing.unavailable_reason(row.disk_path, row.device, root)
                    if why is not None:
                        row.unavailable = why
                        report.unavailable[why] = report.unavailable.get(why, 0) + 1
                    else:
                        vanished.setdefault((row.fingerprint, row.size), []).append(row)
                    continue
                disk_path, _raw, stat = seen
                if row.unavailable is not None or row.device != stat.st_dev:  # untouched rows cost no flush
                    row.unavailable, row.device = None, stat.st_dev
                retry = row.status == "skipped" and (row.skip_reason or "").startswith("unreadable")
                if stat.st_size == row.size and stat.st_mtime_ns == row.mtime_ns and row.fingerprint != UNKNOWN \
                        and not retry:
                    report.unchanged += 1
                else:
                    _update_changed(session, row, disk_path, stat, report)
            new += [(key, disk_path, raw, stat, folder) for key, (disk_path, raw, stat) in on_disk.items()]
            _record_skips(session, folder, root, listing, report)
        _apply_new(session, new, vanished, report)
        for rows in vanished.values():
            for row in rows:
                report.removed.append(row.path)
                session.delete(row)
        if report.removed or report.changed or report.added:
            # embeddings were deleted or copied: vector indexes must look again (indexes.vectors)
            session.execute(update(Model).values(version=Model.version + 1))
    for lst in (report.added, report.changed, report.removed, report.moved, report.skipped):
        lst.sort()
    return report


def _catalog_keys(listing: Listing, report: ScanReport) -> dict[str, tuple[str, bytes | None, os.stat_result]]:
    """catalog path -> (disk path, raw bytes or None, stat); a name that clashes with another once
    written readably is skipped with the reason (never mixed up with the other file)."""
    keys: dict[str, tuple[str, bytes | None, os.stat_result]] = {}
    names = sorted(((catalog_name(p), p) for p in listing.files), key=lambda item: item[0][1] is not None)
    for (key, raw), disk_path in names:  # valid UTF-8 names first: they keep their own spelling
        if key in keys:
            listing.skips[disk_path] = (f"name clash: {key} is also the readable form of another file's name; "
                                        "rename one of them")
            continue
        keys[key] = (disk_path, raw, listing.files[disk_path])
    return keys


def _record_skips(session, folder: Folder, root: str, listing: Listing, report: ScanReport) -> None:
    """Replace the scan skips recorded under root by this walk's."""
    old = session.scalars(select(ScanSkip).where(ScanSkip.folder_id == folder.id)).all()
    for row in old:
        if _within(row.path, root):
            session.delete(row)
    session.flush()
    for disk_path, reason in listing.skips.items():
        key, raw = catalog_name(disk_path)
        session.add(ScanSkip(folder_id=folder.id, path=key, raw_path=raw, reason=reason))
        report.skipped.append((key, reason))


def skipped(catalog: Catalog) -> list[tuple[str, str]]:
    """(name on disk, reason) of everything the library could not index: files and what scans met. The
    name is the disk path (os.fsdecode of the stored bytes), so a name that is not UTF-8 stays apart from
    its readable twin: front ends show it with indexes.names (readable, printable)."""
    with catalog.session() as session:
        rows = list(session.execute(select(File.path, File.raw_path, File.skip_reason)
                                    .where(File.status == "skipped")))
        rows += list(session.execute(select(ScanSkip.path, ScanSkip.raw_path, ScanSkip.reason)))
    return sorted((on_disk(path, raw), reason or "") for path, raw, reason in rows)


def _existing_parent(session, root: str) -> Folder | None:
    return next((f for f in session.scalars(select(Folder)).all() if _within(root, f.path)), None)


def _read_print(disk_path: str) -> tuple[str, str | None]:
    """(fingerprint, None) or (UNKNOWN, why it could not be read)."""
    try:
        return fingerprint(disk_path), None
    except OSError as error:
        return UNKNOWN, f"unreadable: {readable(disk_path)} cannot be read ({error.strerror or error})"


def _update_changed(session, row: File, disk_path: str, stat: os.stat_result, report: ScanReport) -> None:
    report.fingerprinted += 1
    new_print, problem = _read_print(disk_path)
    same_stat = stat.st_size == row.size and stat.st_mtime_ns == row.mtime_ns
    old_print, was_skipped = row.fingerprint, row.status == "skipped"
    row.size, row.mtime_ns = stat.st_size, stat.st_mtime_ns
    if problem is not None:
        if was_skipped and same_stat:  # still unreadable: tried again at the next scan
            row.skip_reason = problem
            report.unchanged += 1
            return
        _forget_content(session, row, UNKNOWN)
        row.status, row.skip_reason = "skipped", problem
        report.changed.append(row.path)
        return
    if old_print == UNKNOWN and same_stat and not was_skipped:
        row.fingerprint = new_print  # first full read of a file catalogued before full fingerprints
        report.unchanged += 1
        return
    if new_print == old_print and not was_skipped:  # touched, same content: keep everything
        report.unchanged += 1
        return
    _forget_content(session, row, new_print)
    report.changed.append(row.path)


def _forget_content(session, row: File, new_print: str) -> None:
    row.fingerprint = new_print
    row.status, row.skip_reason = "pending", None
    row.width = row.height = row.captured_at = row.camera = None
    row.duration_ms = row.fps = row.rotation = None
    session.execute(delete(Embedding).where(Embedding.file_id == row.id))


def _known_content(session, keys: list[tuple[str, int]]) -> dict[tuple[str, int], File]:
    """(fingerprint, size) -> a catalogued, embedded file with that content (one query per 500)."""
    known: dict[tuple[str, int], File] = {}
    prints = sorted({p for p, _size in keys if p != UNKNOWN})
    for start in range(0, len(prints), 500):
        chunk = prints[start:start + 500]
        for row in session.scalars(select(File).where(File.fingerprint.in_(chunk), File.status == "ok")):
            known.setdefault((row.fingerprint, row.size), row)
    return known


def _apply_new(session, new, vanished: dict[tuple[str, int], list[File]], report: ScanReport) -> None:
    new = sorted(new, key=lambda item: item[0])
    with ThreadPoolExecutor(HASH_THREADS) as pool:
        prints = list(pool.map(_read_print, [item[1] for item in new]))
    report.fingerprinted += len(new)
    fresh = []
    for (key, _disk_path, raw, stat, folder), (print_, problem) in zip(new, prints):
        candidates = vanished.get((print_, stat.st_size)) if problem is None else None
        if candidates:
            row = candidates.pop(0)
            if not candidates:
                del vanished[(print_, stat.st_size)]
            report.moved.append((row.path, key))
            row.path, row.raw_path, row.folder_id, row.ext = key, raw, folder.id, _ext(key)
            row.size, row.mtime_ns, row.device, row.unavailable = stat.st_size, stat.st_mtime_ns, stat.st_dev, None
        else:
            fresh.append((key, raw, stat, folder, print_, problem))
    known = _known_content(session, [(item[4], item[2].st_size) for item in fresh])
    copies = []
    for key, raw, stat, folder, print_, problem in fresh:
        row = File(folder_id=folder.id, path=key, raw_path=raw, ext=_ext(key), size=stat.st_size,
                   mtime_ns=stat.st_mtime_ns, device=stat.st_dev, fingerprint=print_,
                   status="skipped" if problem else "pending", skip_reason=problem)
        twin = known.get((print_, stat.st_size)) if problem is None else None
        if twin is not None:  # the same bytes are catalogued and embedded: reuse them
            row.status = "ok"
            row.width, row.height, row.captured_at, row.camera = twin.width, twin.height, twin.captured_at, twin.camera
            row.duration_ms, row.fps, row.rotation = twin.duration_ms, twin.fps, twin.rotation
            copies.append((row, twin))
        session.add(row)
        report.added.append(key)
    session.flush()
    for row, twin in copies:
        for emb in session.scalars(select(Embedding).where(Embedding.file_id == twin.id)).all():
            session.add(Embedding(file_id=row.id, model_id=emb.model_id, frame=emb.frame, at_ms=emb.at_ms,
                                  vector=emb.vector, version=emb.version))


def _ext(path: str) -> str:
    return Path(path).suffix.lower().lstrip(".")[:8]
