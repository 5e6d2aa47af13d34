"""The app's saved results, in the catalog database beside the photo catalog: audit sessions,
evaluation runs, saved classifiers, the labels they gave the library and the examples people labelled,
the copy detector's descriptors of library photos and the overlap pairs a person confirmed or rejected.

They share the catalog's declarative Base, so one metadata holds every table of the database and
one Alembic chain (indexes/migrations) creates and upgrades them all; nothing here is made by
create_all. indexes.store reads and writes these rows, always in the catalog that was opened.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
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


class ClassifierRun(Base):
    """A saved classifier applied to one model's library: the classifier fingerprint and the model version the
    labels were last brought up to date at (indexes.labels)."""
    __tablename__ = "classifier_runs"

    classifier: Mapped[str] = mapped_column(ForeignKey("saved_classifiers.name", ondelete="CASCADE"),
                                            primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(32))  # engine.classifier_file.classifier_fingerprint
    model_version: Mapped[int] = mapped_column(BigInteger)
    applied_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AppliedLabel(Base):
    """A saved classifier's top three labels for one stored embedding (the embedding row's key: file, model
    and frame), with the embedding version they were computed from."""
    __tablename__ = "applied_labels"

    classifier: Mapped[str] = mapped_column(ForeignKey("saved_classifiers.name", ondelete="CASCADE"),
                                            primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"), primary_key=True)
    frame: Mapped[int] = mapped_column(Integer, primary_key=True, default=0, server_default="0")  # a video's frame
    version: Mapped[int] = mapped_column(BigInteger)
    label1: Mapped[str] = mapped_column(Text)
    p1: Mapped[float] = mapped_column(Float)
    label2: Mapped[str | None] = mapped_column(Text, nullable=True)
    p2: Mapped[float | None] = mapped_column(Float, nullable=True)
    label3: Mapped[str | None] = mapped_column(Text, nullable=True)
    p3: Mapped[float | None] = mapped_column(Float, nullable=True)
    __table_args__ = (Index("ix_applied_labels_label1", "classifier", "model_id", "label1", "p1"),)


class LabelledExample(Base):
    """A label a person gave a photo (confirmed or corrected) for a saved classifier, with the embedding it was
    given on: kept when the photo leaves the library (file_id then NULL), so no example is lost."""
    __tablename__ = "labelled_examples"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    classifier: Mapped[str] = mapped_column(ForeignKey("saved_classifiers.name", ondelete="CASCADE"), index=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    file_id: Mapped[int | None] = mapped_column(ForeignKey("files.id", ondelete="SET NULL"), nullable=True)
    frame: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # a video's frame (0: a photo)
    path: Mapped[str] = mapped_column(Text)  # the photo's path when it was labelled
    label: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(String(16))  # confirmed | corrected
    person: Mapped[str] = mapped_column(Text)  # who labelled it (a person, never the model)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, L2-normalised
    labelled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    __table_args__ = (UniqueConstraint("classifier", "model_id", "file_id", "frame"),)


class CopyDescriptor(Base):
    """A library photo's copy-detector descriptors (engine.copydetect), made once per content: kept
    while the file's fingerprint and the detector are the ones they were made with."""
    __tablename__ = "copy_descriptors"

    file_id: Mapped[int] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"), primary_key=True)
    detector: Mapped[str] = mapped_column(String(40))  # the detector's name (engine.copydetect.Detector.name)
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
