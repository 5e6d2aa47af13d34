"""Embedding the catalog's pending files with one model, crash-safely.

Files to embed for a model: every file of an online folder that has no embedding by that model
and was not skipped. They are decoded in worker processes (indexes.decode), encoded in batches,
and each batch — embeddings, header facts and the skips met on the way — commits in ONE
transaction. A killed run (even `kill -9`) therefore loses at most the batch in flight, and a
rerun picks up exactly the files still without an embedding: nothing twice, nothing missing.

The catalog records, per model, the preprocessing and the inference mode its library vectors were
made with. A run whose model handle preprocesses otherwise than recorded (a library indexed before
the preprocessing was recorded counts as the reference transform) re-embeds every file, and says why,
so vectors made two ways are never mixed; search refuses such a library until then (check_library).

A run holds the catalog's writer lock (indexes.writer: a second indexer is told who is running);
a database that drops out is waited for (indexes.retry), each batch's commit being safe to
repeat; files whose folder is unavailable wait until it is back.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from sqlalchemy import delete, exists, insert, select, update
from tqdm.auto import tqdm

from cliplab.engine.errors import CliplabError
from cliplab.engine.handle import ModelBundle
from cliplab.engine.images import Preprocess
from cliplab.indexes.catalog import Catalog, Embedding, File, Folder, Model, VectorIndexState, to_blob
from cliplab.indexes.decode import Decoded, DecodePool, overlap_window
from cliplab.indexes.names import readable
from cliplab.indexes.retry import retrying
from cliplab.indexes.shots import link_shots
from cliplab.indexes.video import VIDEO_TIME_LIMIT, index_videos, split_videos
from cliplab.indexes.writer import writer_lock

log = logging.getLogger(__name__)
__all__ = ["IndexReport", "ModelBundle", "PreprocessingChanged", "check_library", "commit_batch", "embed_batch",
           "index_pending", "library_bundle", "pending_files", "refresh_preprocessing"]


@dataclass
class IndexReport:
    embedded: int = 0
    skipped: int = 0
    batches: int = 0
    seconds: float = 0.0
    skipped_paths: list[tuple[str, str]] = field(default_factory=list)
    video_frames: int = 0  # frames embedded for the videos among `embedded` (indexes.video)
    video_seconds: float = 0.0  # their length in all
    notes: list[str] = field(default_factory=list)  # sentences for the person (e.g. why everything was re-embedded)

    @property
    def images_per_second(self) -> float:
        return (self.embedded + self.skipped) / self.seconds if self.seconds else 0.0


def pending_files(catalog: Catalog, model_id: int, shard: tuple[int, int] | None = None) -> list[tuple[int, str]]:
    """(file id, path to open) of the files still to embed with the model, by id; shard=(rank, world)
    keeps every world-th of them."""
    has_embedding = exists().where(Embedding.file_id == File.id, Embedding.model_id == model_id)
    query = (select(File).join(Folder, Folder.id == File.folder_id)
             .where(Folder.online.is_(True), File.status != "skipped", File.unavailable.is_(None), ~has_embedding)
             .order_by(File.id))

    def read() -> list[tuple[int, str]]:
        with catalog.session() as session:
            return [(row.id, row.disk_path) for row in session.scalars(query)]

    rows = retrying(read, "listing the files to index")
    if shard is not None:
        rank, world = shard
        rows = rows[rank::world]
    return rows


class PreprocessingChanged(CliplabError):
    """The library's vectors were made under other preprocessing than the model handle's."""


def _recorded(catalog: Catalog, model_id: int) -> tuple[str | None, str | None, bool]:
    """(mode, preprocessing record, whether any embedding exists) of a model's library."""
    with catalog.session() as session:
        row = session.get(Model, model_id)
        has_rows = session.scalar(select(exists().where(Embedding.model_id == model_id)))
        return row.mode, row.preprocessing, bool(has_rows)


def _library_preprocess(record: str | None, bundle: ModelBundle) -> Preprocess:
    """What a library's vectors were preprocessed with; before it was recorded, every build decoded with
    the reference transform at the model's resolution."""
    return Preprocess.from_record(record) if record else Preprocess(bundle.resolution)


def check_library(catalog: Catalog, bundle: ModelBundle, model_id: int | None = None) -> None:
    """Refuse (PreprocessingChanged, a sentence) a library whose vectors were made under other
    preprocessing than the handle's: a query embedded one way against photos embedded another is wrong."""
    model_id = bundle.register(catalog) if model_id is None else model_id
    _mode, record, has_rows = _recorded(catalog, model_id)
    if has_rows and _library_preprocess(record, bundle) != bundle.preprocess:
        raise PreprocessingChanged(
            f"The library's photos were embedded with {bundle.name} under other image preprocessing "
            f"({_library_preprocess(record, bundle)!r}) than the model's own ({bundle.preprocess!r}), and mixing the "
            "two would rank wrongly: run `cliplab index` (or index a folder again in the app) to re-embed them.")


def refresh_preprocessing(catalog: Catalog, bundle: ModelBundle, model_id: int) -> str | None:
    """Record the handle's preprocessing for the model's library; when its vectors were made under other
    preprocessing, drop them (and the mode they were made in) so this run re-embeds every file. Returns
    the sentence saying why, or None. Call with the writer lock held."""
    mode, record, has_rows = _recorded(catalog, model_id)
    if record == bundle.preprocess.record():
        return None
    reason = None
    if has_rows and _library_preprocess(record, bundle) != bundle.preprocess:
        reason = (f"Re-embedding the whole library with {bundle.name}: its photos were embedded under other image "
                  f"preprocessing ({_library_preprocess(record, bundle)!r}"
                  f"{', as every library indexed before preprocessing was recorded' if record is None else ''}) "
                  f"than the model's own ({bundle.preprocess!r}).")
        log.warning(reason)

    def once() -> None:
        with catalog.session() as session, session.begin():
            row = session.get(Model, model_id, with_for_update=True)
            if reason is not None:
                session.execute(delete(Embedding).where(Embedding.model_id == model_id))
                session.execute(delete(VectorIndexState).where(VectorIndexState.model_id == model_id))
                row.mode = None  # this run records the mode it embeds in
                row.version += 1
            row.preprocessing = bundle.preprocess.record()

    retrying(once, "recording the model's preprocessing")
    return reason


def library_bundle(catalog: Catalog, bundle: ModelBundle, model_id: int | None = None) -> ModelBundle:
    """The bundle in the mode the model's library embeddings are computed in, so that new files and
    queries are embedded the same way as what is indexed. The first indexing run records its mode;
    a catalog from before modes were recorded gets what that build ran (fastest_safe_precision).
    Refuses a library made under other preprocessing (check_library)."""
    from cliplab.engine.precision import check_mode, fastest_safe_precision
    model_id = bundle.register(catalog) if model_id is None else model_id
    check_library(catalog, bundle, model_id)
    recorded, _record, has_rows = _recorded(catalog, model_id)
    if recorded is None:  # first use: record it (measured outside the lock; the first writer wins)
        mode = fastest_safe_precision(bundle.device) if has_rows else bundle.resolve()
        with catalog.session() as session, session.begin():
            row = session.get(Model, model_id, with_for_update=True)
            row.mode = row.mode or mode
            recorded = row.mode
    try:
        check_mode(recorded, bundle.device)
    except ValueError:  # e.g. an index built in fp16 on a GPU, searched on a CPU: fp32 is within its tolerance
        log.warning("The library of %s was embedded in %s, which cannot run here: "
                                            "using fp32.", bundle.name, recorded)
        return bundle.using("fp32", f"the library's mode {recorded} cannot run on this device")
    return bundle.using(recorded, f"the mode this library was indexed in ({recorded})")


def embed_batch(bundle: ModelBundle, items: list[Decoded]) -> np.ndarray:
    return bundle.encode_pixels(torch.from_numpy(np.stack([item.pixels for item in items])))


def commit_batch(catalog: Catalog, model_id: int, done: list[Decoded], vectors: np.ndarray,
                 skipped: list[Decoded]) -> None:
    """One transaction: the batch's embeddings (with a new model version), file facts and skips.
    Retried when the database drops out; safe to repeat (files embedded already are left as they are)."""
    retrying(lambda: _commit_once(catalog, model_id, done, vectors, skipped), "saving a batch of embeddings")


def _commit_once(catalog: Catalog, model_id: int, done: list[Decoded], vectors: np.ndarray,
                 skipped: list[Decoded]) -> None:
    with catalog.session() as session, session.begin():
        model = session.get(Model, model_id, with_for_update=True)
        model.version += 1
        ids = [item.file_id for item in done]
        have = set(session.scalars(select(Embedding.file_id).where(Embedding.model_id == model_id,
                                                                   Embedding.file_id.in_(ids)))) if ids else set()
        # a file removed by a scan since it was listed is gone: nothing to write for it
        alive = set(session.scalars(select(File.id).where(File.id.in_(ids + [i.file_id for i in skipped]))))
        for item in done:
            if item.file_id not in alive:
                continue
            session.execute(update(File).where(File.id == item.file_id).values(
                status="ok", skip_reason=None, width=item.width, height=item.height,
                captured_at=item.captured_at, camera=item.camera))
        for item in skipped:
            session.execute(update(File).where(File.id == item.file_id).values(status="skipped",
                                                                                  skip_reason=item.reason))
        rows = [{"file_id": item.file_id, "model_id": model_id, "vector": to_blob(vector), "version": model.version}
                for item, vector in zip(done, vectors) if item.file_id in alive and item.file_id not in have]
        if rows:
            session.execute(insert(Embedding), rows)


def index_pending(catalog: Catalog, bundle: ModelBundle, batch_size: int = 32, workers: int | None = None,
                  time_limit: float = 30.0, progress: bool = True,
                  on_batch: Callable[[int, IndexReport], None] | None = None,
                  shard: tuple[int, int] | None = None, video_time_limit: float = VIDEO_TIME_LIMIT) -> IndexReport:
    """Embed every pending file with bundle's model; see the module docstring for the guarantees. Videos
    are embedded frame by frame after the photos (indexes.video), each within video_time_limit seconds."""
    with writer_lock(catalog):
        return _index_locked(catalog, bundle, batch_size, workers, time_limit, progress, on_batch, shard,
                             video_time_limit)


def _index_videos(catalog: Catalog, bundle: ModelBundle, model_id: int, videos: list[tuple[int, str]],
                  batch_size: int, time_limit: float, report: IndexReport, bar,
                  on_batch: Callable[[int, IndexReport], None] | None, started: float) -> None:
    def after(_file_id: int, path: str, reason: str | None) -> None:
        if reason is None:
            report.embedded += 1
        else:
            report.skipped += 1
            report.skipped_paths.append((readable(path), reason))
        report.batches += 1
        report.seconds = time.perf_counter() - started
        bar.update(1)
        if on_batch is not None:
            on_batch(report.batches, report)

    done = index_videos(catalog, bundle, model_id, videos, batch_size, time_limit, after)
    report.video_frames += done.frames
    report.video_seconds += done.seconds_of_video


def _index_locked(catalog: Catalog, bundle: ModelBundle, batch_size: int, workers: int | None, time_limit: float,
                  progress: bool, on_batch: Callable[[int, IndexReport], None] | None,
                  shard: tuple[int, int] | None, video_time_limit: float) -> IndexReport:
    model_id = bundle.register(catalog)
    report = IndexReport()
    reason = refresh_preprocessing(catalog, bundle, model_id)
    if reason is not None:
        report.notes.append(reason)
    bundle = library_bundle(catalog, bundle, model_id)
    todo = pending_files(catalog, model_id, shard)
    paths = dict(todo)
    todo, videos = split_videos(todo)
    started = time.perf_counter()
    bar = tqdm(total=len(todo), disable=not progress, desc=f"indexing with {bundle.name}", unit="img",
               smoothing=0.1)
    done: list[Decoded] = []
    skipped: list[Decoded] = []

    def flush() -> None:
        vectors = embed_batch(bundle, done) if done else np.zeros((0, 0), np.float32)
        commit_batch(catalog, model_id, done, vectors, skipped)
        report.embedded += len(done)
        report.skipped += len(skipped)
        report.skipped_paths.extend((readable(paths[item.file_id]), item.reason) for item in skipped)
        report.batches += 1
        bar.update(len(done) + len(skipped))
        done.clear()
        skipped.clear()
        report.seconds = time.perf_counter() - started
        if on_batch is not None:
            on_batch(report.batches, report)

    ahead = overlap_window(batch_size, workers if workers is not None else (os.cpu_count() or 1))
    with DecodePool(bundle.preprocess, workers=workers, time_limit=time_limit, ahead=ahead) as pool:
        for item in pool.decode(todo):
            (done if item.pixels is not None else skipped).append(item)
            if len(done) >= batch_size or len(skipped) >= batch_size:
                flush()
        if done or skipped:
            flush()
    _index_videos(catalog, bundle, model_id, videos, batch_size, video_time_limit, report, bar, on_batch, started)
    bar.close()
    link_shots(catalog)  # capture times are known now: a RAW beside its JPEG becomes one photo with it
    report.seconds = time.perf_counter() - started
    return report
