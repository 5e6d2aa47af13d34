"""The photo library as every front end uses it: add (scan + index) and remove folders, what the
catalog holds, duplicates, export, text collections.

Folders come only from the person at the app or the CLI. A system folder (/, /etc, /usr, C:\\Windows,
...) is added only with an explicit confirmation; a folder is removed with every catalog row of its
files (their embeddings with them), and the vector indexes drop them on their next use.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from cliplab.app.services import copy_detectors, labels
from cliplab.app.services.paths import natural_key
from cliplab.engine.errors import CliplabError
from cliplab.indexes import library as catalogue
from cliplab.indexes.catalog import Catalog, default_url, open_catalog  # noqa: F401  (default_url: the dashboard)
from cliplab.indexes.duplicates import KEEPER_RULE, SIMILAR_NOTE, Group, exact_duplicates, near_duplicates  # noqa: F401
from cliplab.indexes.export import export
from cliplab.indexes.indexer import ModelBundle, index_pending, pending_files
from cliplab.indexes.names import printable, printable_text, readable  # noqa: F401  (printable*: the CLI)
from cliplab.indexes.scan import check_folders, scan, skipped
from cliplab.indexes.texts import add_collection, collection_names, read_texts  # noqa: F401  (names: front ends)
from cliplab.indexes.vectors import KINDS, open_index  # noqa: F401  (KINDS: the index kinds front ends offer)
from cliplab.indexes.writer import writer_lock

# Folders of the operating system, not of a person's photos: adding one (or a folder inside one)
# asks for confirmation, so a typo or `../../etc` never puts system files into the library.
POSIX_SYSTEM = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/root", "/run",
                "/sbin", "/srv", "/sys", "/usr", "/var", "/opt", "/snap", "/System", "/Library", "/Applications",
                "/private", "/cores", "/Volumes/Macintosh HD")
WINDOWS_SYSTEM = ("Windows", "Program Files", "Program Files (x86)", "ProgramData")


def is_system_folder(path: str | Path) -> bool:
    """True for the file system's root, a user's home folder as a whole, and the operating system's
    own folders (and everything inside them)."""
    resolved = Path(path).expanduser().resolve()
    if resolved == Path(resolved.anchor) or resolved == Path.home().resolve():
        return True
    if sys.platform == "win32":
        parts = resolved.parts
        return len(parts) > 1 and parts[1].lower() in {p.lower() for p in WINDOWS_SYSTEM}
    text = str(resolved)
    return any(text == root or text.startswith(root + "/") for root in POSIX_SYSTEM)


def check_folder(path: str | Path, confirm_system: bool = False, catalog: Catalog | None = None) -> str:
    """The folder's resolved path, or a sentence: missing, not a folder, or a system folder unconfirmed.
    A missing folder of the catalog's library (or inside one) is no error: its disk is unplugged, and the
    scan marks it offline, keeping its files."""
    text = str(path or "").strip()
    if not text:
        raise CliplabError("Type the path of a folder to add.")
    folder = Path(text).expanduser()
    if not folder.exists() and catalog is not None:
        known = str(folder.resolve())
        if any(known == root or known.startswith(root.rstrip(os.sep) + os.sep) for root in catalogue.folder_paths(catalog)):
            return known
    if not folder.is_dir():
        raise CliplabError(f"The folder {text} does not exist (or is not a folder).")
    resolved = folder.resolve()
    if is_system_folder(resolved) and not confirm_system:
        raise CliplabError(f"{resolved} is a system folder (or the whole home folder), not a photo folder; add the "
                           "folder that holds your photos, or confirm that you mean to index this system folder.")
    return str(resolved)


def add_folders(catalog: Catalog, bundle: ModelBundle, folders: list[str | Path], job=None,
                confirm_system: bool = False, batch_size: int = 32, workers: int | None = 1,
                kind: str = "auto", progress: bool = False, time_limit: float = 30.0) -> dict:
    """Scan the folders into the catalog, embed what is new or changed with the model, bring its
    vector index up to date. job: an app_state.Job to report progress on. No folders: mark the library
    folders that are missing now offline, scan again those that are back (indexes.scan.check_folders),
    and embed what is pending. A library folder that is missing is marked offline, never an error. Returns {"scan", "embedded", "skipped", "skipped_paths", "seconds", "images_per_second",
    "vectors": {"kind", "count"}, "notes": sentences for the person}."""
    roots = [check_folder(f, confirm_system, catalog) for f in folders if str(f).strip()]
    if job:
        job.update(0.02, f"scanning {', '.join(roots)}" if roots else "looking for pending files")
    with writer_lock(catalog):  # one writer per catalog, from the scan to the saved vector index
        report = scan(catalog, roots) if roots else check_folders(catalog)
        if job:
            job.update(0.05, f"scan: {report.summary()}")
        model_id = bundle.register(catalog)
        total_pending = max(1, len(pending_files(catalog, model_id)))

        def on_batch(_batch: int, rep) -> None:
            if job:
                job.update(0.05 + 0.9 * (rep.embedded + rep.skipped) / total_pending,
                           f"embedded {rep.embedded}, skipped {rep.skipped} of {total_pending}")

        indexed = index_pending(catalog, bundle, batch_size=batch_size, workers=workers, progress=progress,
                                time_limit=time_limit, on_batch=on_batch)
        for note in indexed.notes:  # e.g. why the whole library was re-embedded
            if job:
                job.update(0.96, note)
        if job:
            job.update(0.97, "updating the vector index")
        vectors = open_index(catalog, model_id, kind)
        if job:
            job.update(0.98, "updating the labels of applied classifiers")
        applied = labels.refresh(catalog, bundle)  # added and changed photos get their labels, removed ones lose them
    return {"scan": report.summary(), "embedded": indexed.embedded, "skipped": indexed.skipped,
            "skipped_paths": indexed.skipped_paths, "seconds": indexed.seconds,
            "images_per_second": indexed.images_per_second, "vectors": {"kind": vectors.kind, "count": vectors.count},
            "notes": indexed.notes + [a.summary for a in applied if a.labelled or a.removed]}


def remove_folder(catalog: Catalog, path: str | Path, index_cache=None) -> int:
    """Take a library folder out of the catalog with its files' rows and embeddings (the files on
    disk are not touched); returns how many files were removed. index_cache: the app's
    AppState.vector_indexes, told to reopen (and so drop the removed photos)."""
    text = str(path or "").strip()
    if not text:
        raise CliplabError("Pick the library folder to remove.")
    removed = catalogue.remove_folder(catalog, text)
    if index_cache is not None:
        index_cache.clear()
    return removed


@dataclass
class FolderSummary:
    path: str  # exactly as stored: what remove_folder takes
    online: bool
    files: int
    indexed: int


@dataclass
class LibrarySummary:
    folders: list[FolderSummary]
    indexed: int  # photos with status ok
    skipped: list[tuple[str, str]]  # path, reason (the first `limit`)
    skipped_count: int
    pending: int


def library_summary(catalog: Catalog, limit: int = 200) -> LibrarySummary:
    folders = [FolderSummary(f.path, f.online, f.files, f.indexed) for f in catalogue.folder_counts(catalog)]
    by_status = catalogue.status_counts(catalog)
    # files, and what scans could not catalogue (folders, links, FIFOs); names as the catalog shows them
    not_indexed = [(readable(path), why) for path, why in skipped(catalog)]
    return LibrarySummary(folders, by_status.get("ok", 0), not_indexed[:limit], len(not_indexed),
                          by_status.get("pending", 0))


def skipped_files(catalog: Catalog | None = None) -> list[tuple[str, str]]:
    """Files that could not be indexed and what scans could not catalogue (folders, links, FIFOs), with why;
    each by its name on disk (print it with indexes.names.printable)."""
    return skipped(catalog or open_catalog())


def disk_paths(catalog: Catalog, file_ids) -> dict[int, str]:
    """The name on disk of each catalogued file (a name that is not UTF-8 as os.fsdecode gives it), by id:
    what the CLI prints, through indexes.names.printable."""
    return catalogue.disk_paths(catalog, file_ids)


def file_id_of(catalog: Catalog, path: str) -> int:
    file_id = catalogue.file_id_of(catalog, path)
    if file_id is None:
        raise CliplabError(f"{path} is not in the library.")
    return file_id


def indexed_paths(catalog: Catalog, limit: int = 500) -> list[str]:
    """Paths of indexed photos (status ok), for a picker, in natural order (img2 before img10)."""
    return sorted(catalogue.indexed_paths(catalog, limit), key=natural_key)


def copy_threshold(detector: str | None = None) -> float:
    """The copy detector's own threshold (the duplicates panel's default), without training anything."""
    return copy_detectors.default_threshold(detector)


def find_duplicates(catalog: Catalog | None = None, threshold: float | None = None, burst_seconds: float = 300.0,
                    exact_only: bool = False, detector: str | None = None, on_progress=None) -> list[Group]:
    """Exact copies (with a suggested keeper), then groups of similar pictures the copy detector links
    (no keeper: look before deleting). threshold: a copy score, None for the detector's own, the one
    default of the CLI and the app. detector: a copy_detectors choice (None: the default, the learned
    detector, trained at its first use). on_progress(stage, done, total)."""
    catalog = catalog or open_catalog()
    groups = exact_duplicates(catalog)
    if not exact_only:
        chosen = copy_detectors.get_detector(detector, on_progress)
        describing = (lambda done, total: on_progress("describing the photos", done, total)) if on_progress else None
        groups += near_duplicates(catalog, chosen, threshold, burst_seconds, describing)
    return groups


def export_embeddings(path: str, bundle: ModelBundle, catalog: Catalog | None = None) -> int:
    """The model's embeddings and file metadata, with the labels of every classifier applied to the library
    (brought up to date first)."""
    catalog = catalog or open_catalog()
    labels.refresh(catalog, bundle)
    return export(catalog, bundle.register(catalog), path)


def add_texts(catalog: Catalog, name: str, path: str | Path) -> int:
    """Store a text collection (a .txt with one text a line, or a captions .csv) under a name."""
    name = (name or "").strip()
    if not name:
        raise CliplabError("Give the new collection a name.")
    source = Path(str(path or "").strip()).expanduser()
    if not str(path or "").strip() or not source.is_file():
        raise CliplabError(f"The text file {path} does not exist: give a .txt (one text a line) or a captions .csv.")
    texts, images = read_texts(str(source))
    add_collection(catalog, name, texts, images, source=os.path.basename(source))
    return len(texts)
