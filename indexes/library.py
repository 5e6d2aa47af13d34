"""What the services read of the photo library, and the one write they make outside a scan (taking a
folder out): named queries over the catalog's folders, files and embeddings, answering in plain
values. Scanning is indexes.scan, embedding indexes.indexer, text collections indexes.texts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import delete, func, select, update

from cliplab.engine.errors import CliplabError
from cliplab.indexes.catalog import Catalog, Embedding, File, Folder, Model
from cliplab.indexes.names import on_disk
from cliplab.indexes.writer import writer_lock


@dataclass(frozen=True)
class FolderCounts:
    path: str  # exactly as stored: what remove_folder takes
    online: bool
    files: int
    indexed: int  # files with status ok


def folder_counts(catalog: Catalog) -> list[FolderCounts]:
    """Every library folder, sorted by path, with its files and how many of them are indexed."""
    with catalog.session() as session:
        counts = dict(session.execute(select(File.folder_id, func.count()).group_by(File.folder_id)).all())
        ok = dict(session.execute(select(File.folder_id, func.count()).where(File.status == "ok")
                                  .group_by(File.folder_id)).all())
        return [FolderCounts(f.path, f.online, counts.get(f.id, 0), ok.get(f.id, 0))
                for f in session.scalars(select(Folder).order_by(Folder.path))]


def status_counts(catalog: Catalog) -> dict[str, int]:
    """How many files have each status (pending, ok, skipped)."""
    with catalog.session() as session:
        return dict(session.execute(select(File.status, func.count()).group_by(File.status)).all())


def folder_paths(catalog: Catalog) -> list[str]:
    """Every library folder, as stored."""
    with catalog.session() as session:
        return list(session.scalars(select(Folder.path).order_by(Folder.path)))


def online_roots(catalog: Catalog) -> list[str]:
    """The library folders whose volume is present, as stored."""
    with catalog.session() as session:
        return list(session.scalars(select(Folder.path).where(Folder.online.is_(True))))


def remove_folder(catalog: Catalog, path: str) -> int:
    """Take a library folder (as stored, or as typed before resolving) out of the catalog with its files'
    rows and embeddings, as the catalog's one writer; returns how many files were removed. Every model's
    version moves on, so each vector index looks again on its next use (indexes.vectors)."""
    with writer_lock(catalog), catalog.session() as session, session.begin():
        folder = session.scalar(select(Folder).where(Folder.path == path))
        if folder is None:  # as typed, or as the scan stored it (resolved)
            folder = session.scalar(select(Folder).where(Folder.path == str(Path(path).expanduser().resolve())))
        if folder is None:
            known = ", ".join(session.scalars(select(Folder.path).order_by(Folder.path))) or "none yet"
            raise CliplabError(f"{path} is not a library folder (the library's folders: {known}).")
        file_ids = select(File.id).where(File.folder_id == folder.id)
        removed = session.scalar(select(func.count()).select_from(File).where(File.folder_id == folder.id))
        session.execute(delete(Embedding).where(Embedding.file_id.in_(file_ids)))
        session.execute(delete(File).where(File.folder_id == folder.id))
        session.delete(folder)
        session.execute(update(Model).values(version=Model.version + 1))
    return int(removed or 0)


def file_id_of(catalog: Catalog, path: str) -> int | None:
    """The id of the file catalogued under path; None when there is none."""
    with catalog.session() as session:
        file_id = session.scalar(select(File.id).where(File.path == path))
    return int(file_id) if file_id is not None else None


def indexed_paths(catalog: Catalog, limit: int) -> list[str]:
    """The first `limit` paths of indexed photos (status ok), sorted."""
    with catalog.session() as session:
        return list(session.scalars(select(File.path).where(File.status == "ok").order_by(File.path).limit(limit)))


def disk_paths(catalog: Catalog, file_ids) -> dict[int, str]:
    """Each existing file's name on disk (File.disk_path), by id."""
    ids = [int(i) for i in file_ids]
    with catalog.session() as session:
        rows = session.execute(select(File.id, File.path, File.raw_path).where(File.id.in_(ids))).all()
    return {int(i): on_disk(path, raw) for i, path, raw in rows}


def indexed_ids(catalog: Catalog) -> set[int]:
    """The ids of every indexed photo (status ok)."""
    with catalog.session() as session:
        return set(session.scalars(select(File.id).where(File.status == "ok")))


@dataclass(frozen=True)
class FileInFolder:
    """A file's row as the app's file server checks it, with its folder."""
    path: str  # readable (indexes.names): shown, never opened
    status: str
    ext: str
    fingerprint: str
    root: str
    online: bool
    raw_path: bytes | None  # the exact bytes of a name that is not UTF-8

    @property
    def disk_path(self) -> str:
        """The name to open the file with (File.disk_path)."""
        return on_disk(self.path, self.raw_path)


def file_in_folder(catalog: Catalog, file_id: int) -> FileInFolder | None:
    with catalog.session() as session:
        row = session.execute(select(File.path, File.status, File.ext, File.fingerprint, Folder.path, Folder.online,
                                     File.raw_path)
                              .join(Folder, Folder.id == File.folder_id).where(File.id == file_id)).first()
    return FileInFolder(*row) if row is not None else None


@dataclass(frozen=True)
class EmbeddedPhoto:
    id: int
    path: str
    root: str  # the library folder it lies in
    captured_at: datetime | None
    mtime_ns: int
    vector: bytes  # float32, L2-normalised (catalog.from_blobs)


def embedded_photos(catalog: Catalog, model_id: int) -> tuple[list[EmbeddedPhoto], int]:
    """Every photo of an online folder with an embedding by the model, in file-id order, and the model's
    version at that moment (read together, so the two agree). A video is one point, its first frame
    (its poster: what its thumbnail shows too)."""
    query = (select(File.id, File.path, Folder.path, File.captured_at, File.mtime_ns, Embedding.vector)
             .join(Embedding, Embedding.file_id == File.id).join(Folder, Folder.id == File.folder_id)
             .where(Embedding.model_id == model_id, Embedding.frame == 0, Folder.online.is_(True)).order_by(File.id))
    with catalog.session() as session:
        version = session.scalar(select(Model.version).where(Model.id == model_id))
        rows = [EmbeddedPhoto(*row) for row in session.execute(query)]
    return rows, int(version or 0)
