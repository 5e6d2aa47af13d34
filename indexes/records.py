"""The app's saved results, in the catalog database beside the photo catalog: audit sessions,
evaluation runs, saved classifiers, the copy detector's descriptors of library photos and the
overlap pairs a person confirmed or rejected.

They share the catalog's declarative Base, so one metadata holds every table of the database and
one Alembic chain (indexes/migrations) creates and upgrades them all; nothing here is made by
create_all. indexes.store reads and writes these rows, always in the catalog that was opened.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cliplab.indexes.catalog import Base


class AuditSession(Base):
    __tablename__ = "audit_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    rerun_of: Mapped[str | None] = mapped_column(String(32))
    model_name: Mapped[str] = mapped_column(String(200))
    model_fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    dataset_source: Mapped[str] = mapped_column(Text)
    dataset_sha256: Mapped[str] = mapped_column(String(64), index=True)
    split: Mapped[str | None] = mapped_column(String(32))
    n_images: Mapped[int] = mapped_column(Integer)
    label_sets: Mapped[str] = mapped_column(String(400))
    result_json: Mapped[str] = mapped_column(Text)  # the whole result: options, provenance, tables
    # fp32 | fp16 | bf16: the precision the model ran in (None: saved before it was recorded)
    precision: Mapped[str | None] = mapped_column(String(8))


class EvalRun(Base):
    __tablename__ = "eval_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # zeroshot | probe | fewshot | retrieval
    model_name: Mapped[str] = mapped_column(String(200))
    model_fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    dataset: Mapped[str] = mapped_column(Text)
    # sha256 over the images' labels and content fingerprints (app.services.evaluate.dataset_hash)
    dataset_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    metrics_json: Mapped[str] = mapped_column(Text)
    precision: Mapped[str | None] = mapped_column(String(8))


class SavedClassifier(Base):
    """Class names + templates (+ threshold) under a name, and the model they were saved with."""
    __tablename__ = "saved_classifiers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    saved_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    spec_json: Mapped[str] = mapped_column(Text)  # {"classes": [...], "templates": [...], "threshold": x}
    # {"name", "fingerprint", "precision", "device", "engine", "cliplab_version"} (None: saved before 0003)
    provenance_json: Mapped[str | None] = mapped_column(Text)


class CopyDescriptor(Base):
    """A library photo's copy-detector descriptors (engine.copydetect), made once per content: kept
    while the file's fingerprint and the detector are the ones they were made with."""
    __tablename__ = "copy_descriptors"

    file_id: Mapped[int] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"), primary_key=True)
    detector: Mapped[str] = mapped_column(String(40))  # engine.copydetect.NAME
    fingerprint: Mapped[str] = mapped_column(String(32))  # the file's content when they were made
    descriptor: Mapped[bytes] = mapped_column(LargeBinary)  # float16 [PER_IMAGE, DIM]


class OverlapDecision(Base):
    """A person's verdict on a detected pair (evaluation image, reference image), by content: a
    confirmed copy stays in Overlap, a rejected one goes to Clean, in every later overlap run."""
    __tablename__ = "overlap_decisions"

    eval_key: Mapped[str] = mapped_column(String(32), primary_key=True)  # blake2b-128 of the image's bytes
    reference_key: Mapped[str] = mapped_column(String(32), primary_key=True)
    is_copy: Mapped[int] = mapped_column(Integer)  # 1 confirmed, 0 rejected
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
