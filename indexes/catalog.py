"""The photo catalog: the source of truth for files, models and embeddings (SQLAlchemy 2).

SQLite in the data directory by default (WAL mode), any SQLAlchemy URL through the `url`
argument or CLIPLAB_DATABASE_URL. The schema is created and upgraded by the Alembic migrations
in indexes/migrations/ every time a catalog is opened, so a user's catalog survives upgrades.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from cliplab.engine import paths
from cliplab.engine.errors import CliplabError
from cliplab.indexes.retry import retrying


class Base(DeclarativeBase):
    pass


class Folder(Base):
    """A root folder given to `cliplab index`; offline when its volume is missing."""
    __tablename__ = "folders"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    volume: Mapped[str] = mapped_column(Text)  # mount point holding the folder when last seen
    online: Mapped[bool] = mapped_column(Boolean, default=True)
    last_scan: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class File(Base):
    __tablename__ = "files"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    folder_id: Mapped[int] = mapped_column(ForeignKey("folders.id", ondelete="CASCADE"), index=True)
    # the name as the file system gives it, readable (indexes.names): bytes that are not UTF-8 are
    # shown as \xNN, and then raw_path holds the exact bytes to open the file with
    path: Mapped[str] = mapped_column(Text, unique=True)
    raw_path: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    ext: Mapped[str] = mapped_column(String(8))
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    device: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # st_dev when last seen
    # blake2b-128 of the whole content ("" until known): names a file across moves and copies
    fingerprint: Mapped[str] = mapped_column(String(32), index=True)
    captured_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)
    camera: Mapped[str | None] = mapped_column(Text, nullable=True)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | ok | skipped
    skip_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # why the file cannot be reached now (its folder is unreadable or its disk unmounted); kept, not removed
    unavailable: Mapped[str | None] = mapped_column(Text, nullable=True)
    # videos only (NULL for photos): length in milliseconds, frame rate, and the display rotation applied
    # to its frames (degrees clockwise, from the container's metadata)
    duration_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    fps: Mapped[float | None] = mapped_column(Float, nullable=True)
    rotation: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # a RAW beside a JPEG of the same shot (same stem, same capture time): the id of the file shown for
    # the shot (indexes.shots); search shows that one and lists this one with it
    shot_of: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)

    @property
    def disk_path(self) -> str:
        """The path to open the file with (surrogate-escaped where the name is not UTF-8)."""
        return os.fsdecode(self.raw_path) if self.raw_path is not None else self.path


class ScanSkip(Base):
    """What a scan met but could not catalogue as a photo: unreadable folders, symlinks it does not
    follow (outside the library, dangling, loops), FIFOs and other special files, clashing names."""
    __tablename__ = "scan_skips"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    folder_id: Mapped[int] = mapped_column(ForeignKey("folders.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    raw_path: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    reason: Mapped[str] = mapped_column(Text)


class WriterLock(Base):
    """The one row saying which process writes to the catalog now (indexes.writer)."""
    __tablename__ = "writer_lock"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token: Mapped[str] = mapped_column(String(32))
    pid: Mapped[int] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime)


class Model(Base):
    __tablename__ = "models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    embed_dim: Mapped[int] = mapped_column(Integer)
    # bumped by every committed batch; embeddings carry the version that wrote them, so a
    # derived vector index knows exactly which rows it has not seen yet
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    # the inference mode (engine.precision.MODES) the embeddings were computed in; queries use it too
    mode: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # the image preprocessing the embeddings were made under (engine.images.Preprocess.record()); NULL:
    # indexed before it was recorded, i.e. the reference transform at the model's resolution
    preprocessing: Mapped[str | None] = mapped_column(Text, nullable=True)


class Embedding(Base):
    """One stored vector: a photo's (frame 0, at_ms NULL) or one chosen frame of a video (frame 0, 1, ... in
    time order, at_ms its time from the video's start). Every reader of embeddings (the vector index,
    search, labels) sees a video's frames as rows like a photo's; vector_id() names each row."""
    __tablename__ = "embeddings"
    file_id: Mapped[int] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True,
                                          index=True)
    frame: Mapped[int] = mapped_column(Integer, primary_key=True, default=0, server_default="0")
    at_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, L2-normalised
    version: Mapped[int] = mapped_column(BigInteger)


class VectorIndexState(Base):
    """What the derived FAISS index of a model was built from (checked against the catalog on open)."""
    __tablename__ = "vector_indexes"
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(Text)
    count: Mapped[int] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(BigInteger)
    removals: Mapped[int] = mapped_column(BigInteger, default=0)
    dim: Mapped[int | None] = mapped_column(Integer, nullable=True)
    checksum: Mapped[str | None] = mapped_column(String(64), nullable=True)  # blake2b of the saved file


class TextCollection(Base):
    """A list of texts to search with an image: captions, a tag vocabulary, a user's list."""
    __tablename__ = "text_collections"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    source: Mapped[str | None] = mapped_column(Text, nullable=True)


class TextEntry(Base):
    __tablename__ = "texts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("text_collections.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    image_path: Mapped[str | None] = mapped_column(Text, nullable=True)  # the true pair, for captioned datasets
    __table_args__ = (UniqueConstraint("collection_id", "position"),)


FRAME_SHIFT = 32  # a vector id is file_id + (frame << 32): a photo's (frame 0) is its file id


def vector_id(file_id, frame=0):
    """The id of an embedding row in the vector indexes (ints or int64 arrays)."""
    return file_id + (frame << FRAME_SHIFT)


def split_vector_id(ids):
    """(file id, frame) of vector ids (ints or int64 arrays)."""
    return ids & ((1 << FRAME_SHIFT) - 1), ids >> FRAME_SHIFT


def to_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def from_blobs(blobs: list[bytes], dim: int) -> np.ndarray:
    """Stored embeddings as a [n, dim] float32 array; a blob of the wrong length (a damaged row) reads
    as NaNs, which damaged_rows() then finds."""
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    width = dim * 4
    if all(len(b) == width for b in blobs):
        return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim).copy()
    return np.stack([np.frombuffer(b, np.float32) if len(b) == width else np.full(dim, np.nan, np.float32)
                     for b in blobs])


NORM_TOLERANCE = 1e-2  # stored vectors are unit length; fp16/bf16 modes round at ~1e-3


def damaged_rows(vectors: np.ndarray) -> np.ndarray:
    """A mask of the stored embeddings that cannot be what the indexer wrote (unit-length float32):
    not finite, or not of unit length. A flipped bit in an exponent, a sign-and-exponent pattern
    read as NaN, a truncated blob: such a vector would rank with a nonsense score, so the readers
    leave it out and indexes.vectors sends it back to be embedded again."""
    if not len(vectors):
        return np.zeros(0, bool)
    finite = np.isfinite(vectors).all(axis=1)
    norms = np.linalg.norm(np.where(finite[:, None], vectors, 0).astype(np.float64), axis=1)
    return ~finite | (np.abs(norms - 1.0) > NORM_TOLERANCE)


def photo_date(captured_at: datetime | None, mtime_ns: int) -> tuple[datetime, str]:
    """The one date rule of the library (filters, date sort, the map): the EXIF capture time, else
    the file's modification time (local time, like EXIF's), with which one it is: "capture" | "file"."""
    if captured_at is not None:
        return captured_at, "capture"
    return datetime.fromtimestamp(mtime_ns / 1e9), "file"


def default_url() -> str:
    return os.environ.get("CLIPLAB_DATABASE_URL") or f"sqlite:///{paths.data_dir() / 'catalog.db'}"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the indexer's commits
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable at each WAL checkpoint; safe against kill -9
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


@dataclass
class Catalog:
    """An open catalog: its engine, a session factory and the folder for derived indexes."""
    url: str
    engine: Engine
    sessions: sessionmaker

    def session(self) -> Session:
        return self.sessions()

    @property
    def index_dir(self) -> Path:
        path = paths.data_dir() / "indexes" / _url_key(self.url)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def model(self, name: str, fingerprint: str, embed_dim: int) -> int:
        """The id of a model row, created on first use (retried through a passing database outage)."""
        def once() -> int:
            with self.session() as session, session.begin():
                row = session.scalar(select(Model).where(Model.fingerprint == fingerprint))
                if row is None:
                    row = Model(name=name, fingerprint=fingerprint, embed_dim=embed_dim, version=0)
                    session.add(row)
                    session.flush()
                return row.id

        return retrying(once, "registering the model")

    def recorded_mode(self, fingerprint: str) -> str | None:
        """The inference mode this model's library embeddings were computed in; None when the model
        has indexed nothing yet (read only: nothing is registered)."""
        with self.session() as session:
            return session.scalar(select(Model.mode).where(Model.fingerprint == fingerprint))

    def close(self) -> None:
        self.engine.dispose()


def _url_key(url: str) -> str:
    import hashlib
    return hashlib.blake2b(url.encode(), digest_size=8).hexdigest()


class CatalogDamaged(CliplabError):
    """The catalog file cannot be read as a catalog (empty, not SQLite, cut short, malformed)."""

    def __init__(self, path: str, why: str) -> None:
        self.path = path
        super().__init__(f"The catalog {path} {why}, so cliplab cannot open it (your photos are untouched). Put back "
                         "a backup of it, or move it aside and run `cliplab index FOLDER` to build a new catalog "
                         "(sqlite3's `.recover` command may save what the old one holds).")


SQLITE_MAGIC = b"SQLite format 3\x00"


def _sqlite_path(url: str) -> str | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return parsed.database


def check_sqlite_file(path: str) -> None:
    """Refuse a catalog file that cannot be one before SQLite touches it: an empty (0-byte) file, which
    SQLite would silently turn into an empty library, a file that is not SQLite, and one cut short
    (the size its header records is larger than the file; only without a write-ahead log, which
    holds the newest pages). A missing file is a new catalog."""
    if not os.path.lexists(path):
        return
    if not os.path.isfile(path):
        raise CatalogDamaged(path, "is not a file")
    size = os.path.getsize(path)
    if size == 0:
        raise CatalogDamaged(path, "is empty (0 bytes): it holds no library, and opening it would replace your "
                                   "library with an empty one")
    with open(path, "rb") as f:
        header = f.read(100)
    if not header.startswith(SQLITE_MAGIC) or len(header) < 100:
        raise CatalogDamaged(path, "is not a SQLite database (its first bytes are something else)")
    wal = f"{path}-wal"
    if os.path.exists(wal) and os.path.getsize(wal) > 0:
        return
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    if header[24:28] == header[92:96] and pages * page_size > size:  # the recorded size is valid
        raise CatalogDamaged(path, f"is cut short ({size:,} bytes of the {pages * page_size:,} it records)")


def _sqlite_damage(context) -> Exception | None:
    """handle_error: SQLite's own words for a damaged file (met at any query) become CatalogDamaged."""
    import sqlite3
    error = context.original_exception
    if isinstance(error, sqlite3.DatabaseError) and not isinstance(error, sqlite3.OperationalError | sqlite3.IntegrityError):
        text = str(error)
        if "malformed" in text or "not a database" in text:
            return CatalogDamaged(context.engine.url.database, f"is damaged ({text})")
    return None


def open_catalog(url: str | None = None) -> Catalog:
    """Open (creating or upgrading) the catalog at url, CLIPLAB_DATABASE_URL, or the default SQLite file.
    A damaged SQLite file is refused with CatalogDamaged, a sentence naming it and what to do, when it
    is opened (check_sqlite_file) and whenever a later query meets damage."""
    url = url or default_url()
    engine = create_engine(url, future=True, pool_pre_ping=True)
    path = _sqlite_path(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "handle_error", _sqlite_damage)
    from cliplab.indexes.migrations import upgrade
    upgrade(engine, check=(lambda: check_sqlite_file(path)) if path else None)
    return Catalog(url=url, engine=engine, sessions=sessionmaker(engine, expire_on_commit=False))
