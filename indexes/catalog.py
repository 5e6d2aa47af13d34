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
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from engine import paths


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
    path: Mapped[str] = mapped_column(Text, unique=True)
    ext: Mapped[str] = mapped_column(String(8))
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    # blake2b-128 of the size + first and last 64 KiB: cheap, names a file across moves
    fingerprint: Mapped[str] = mapped_column(String(32), index=True)
    # blake2b-128 of the whole content, computed only when duplicates need it
    full_hash: Mapped[str | None] = mapped_column(String(32), nullable=True)
    captured_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)
    camera: Mapped[str | None] = mapped_column(Text, nullable=True)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | ok | skipped
    skip_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


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


class Embedding(Base):
    __tablename__ = "embeddings"
    file_id: Mapped[int] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True,
                                          index=True)
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


class TextEmbedding(Base):
    __tablename__ = "text_embeddings"
    text_id: Mapped[int] = mapped_column(ForeignKey("texts.id", ondelete="CASCADE"), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


def to_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def from_blobs(blobs: list[bytes], dim: int) -> np.ndarray:
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim).copy()


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
        """The id of a model row, created on first use."""
        with self.session() as session, session.begin():
            row = session.scalar(select(Model).where(Model.fingerprint == fingerprint))
            if row is None:
                row = Model(name=name, fingerprint=fingerprint, embed_dim=embed_dim, version=0)
                session.add(row)
                session.flush()
            return row.id

    def close(self) -> None:
        self.engine.dispose()


def _url_key(url: str) -> str:
    import hashlib
    return hashlib.blake2b(url.encode(), digest_size=8).hexdigest()


def open_catalog(url: str | None = None) -> Catalog:
    """Open (creating or upgrading) the catalog at url, CLIPLAB_DATABASE_URL, or the default SQLite file."""
    url = url or default_url()
    engine = create_engine(url, future=True, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    from indexes.migrations import upgrade
    upgrade(engine)
    return Catalog(url=url, engine=engine, sessions=sessionmaker(engine, expire_on_commit=False))
