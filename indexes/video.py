"""Videos in the catalog: embedding their chosen frames, crash-safely, and reading them back.

A video is catalogued like a photo (indexes.scan: fingerprint, moves, edits, skips) and embedded as
several rows of the one embedding table: frame 0, 1, ... in time order, each with its time `at_ms`
(indexes.catalog.Embedding). Frames are chosen and decoded by engine.video in a worker process
(forkserver, like the photo decoders), which preprocesses them with the model handle's Preprocess and
hands them over through a bounded queue, so memory stays flat in the video's length while the main
process encodes batches with the library's model handle in its recorded mode.

Crash safety: a video's frames are written in ONE transaction together with the file's facts and its
status, so `kill -9` at any moment leaves the video either fully embedded or still pending (embedded
again from the start by the next run): never half, never a frame twice. Each video has a time limit
(the worker is stopped from outside when it overruns, whatever it is stuck in); what cannot be
indexed (no video stream, corrupt, truncated to nothing, unknown codec, over the time limit) is
recorded as skipped with the reason, and the run goes on.

Search sees a video's frames as ranges: frame i covers [at_ms_i, at_ms_(i+1)) (the last one up to the
video's end); `frame_spans` reads them.
"""

from __future__ import annotations

import multiprocessing
import queue as queue_module
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from sqlalchemy import insert, select, update

from cliplab.engine.handle import ModelBundle
from cliplab.engine.images import Preprocess
from cliplab.engine.video import FrameChoice, VideoInfo, decode_worker, is_video
from cliplab.indexes.catalog import Catalog, Embedding, File, Model, to_blob
from cliplab.indexes.names import readable
from cliplab.indexes.retry import retrying

__all__ = ["VideoReport", "frame_spans", "index_videos", "is_video", "video_facts"]
VIDEO_TIME_LIMIT = 900.0  # seconds per video, by default: a 10-hour video is recorded as timed out
QUEUE_FRAMES = 16  # frames in flight between the decoder and the encoder: the flat-memory bound


@dataclass
class VideoReport:
    videos: int = 0
    frames: int = 0
    seconds_of_video: float = 0.0


class _Frames:
    """One video's decoding process and its queue; `next()` gives the next message or a timeout skip."""

    def __init__(self, path: str, preprocess: Preprocess, choice: FrameChoice, time_limit: float) -> None:
        context = multiprocessing.get_context("forkserver")
        # as the photo decoders: a clean parent with torch loaded once (a no-op once the server runs)
        context.set_forkserver_preload(["cliplab.engine.images", "cliplab.engine.video", "torch", "numpy", "av"])
        self.queue = context.Queue(QUEUE_FRAMES)
        self.process = context.Process(target=decode_worker, args=(path, preprocess, choice, self.queue), daemon=True)
        self.deadline = time.monotonic() + time_limit
        self.path, self.time_limit = path, time_limit
        self.process.start()

    def next(self) -> tuple:
        while True:
            left = self.deadline - time.monotonic()
            if left <= 0:
                return ("skip", f"timed out: indexing took more than {self.time_limit:g} s (a very long or "
                                "damaged video)")
            try:
                return self.queue.get(timeout=min(left, 1.0))
            except queue_module.Empty:
                if not self.process.is_alive() and self.queue.empty():
                    return ("skip", f"corrupt: the decoder stopped (exit code {self.process.exitcode})")

    def close(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.queue.close()
        self.queue.join_thread()


def embed_video(bundle: ModelBundle, path: str, batch_size: int, time_limit: float,
                choice: FrameChoice = FrameChoice()) -> tuple[VideoInfo | None, list[float], np.ndarray | None, str | None]:
    """(info, frame times, vectors [n, d], None), or (None, [], None, why it was skipped)."""
    frames = _Frames(path, bundle.preprocess, choice, time_limit)
    info, times, pixels, vectors = None, [], [], []
    try:
        while True:
            message = frames.next()
            if message[0] == "skip":
                return None, [], None, readable(f"{message[1]}: {path}")
            if message[0] == "info":
                info = message[1]
            elif message[0] == "frame":
                times.append(message[1])
                pixels.append(message[2])
                if len(pixels) >= batch_size:  # the decoder fills the queue meanwhile
                    vectors.append(bundle.encode_pixels(torch.from_numpy(np.stack(pixels))))
                    pixels.clear()
            else:
                break
    finally:
        frames.close()
    if pixels:
        vectors.append(bundle.encode_pixels(torch.from_numpy(np.stack(pixels))))
    return info, times, np.concatenate(vectors), None


def _commit_video(catalog: Catalog, model_id: int, file_id: int, info: VideoInfo | None, times: list[float],
                  vectors: np.ndarray | None, reason: str | None) -> None:
    """One transaction: every frame of the video with its facts and status, or its skip reason. Safe to
    repeat: a video that has frames with this model already (or was removed meanwhile) is left alone."""
    def once() -> None:
        with catalog.session() as session, session.begin():
            model = session.get(Model, model_id, with_for_update=True)
            if session.get(File, file_id) is None:
                return
            if reason is not None:
                session.execute(update(File).where(File.id == file_id).values(status="skipped", skip_reason=reason))
                return
            if session.scalar(select(Embedding.frame).where(Embedding.file_id == file_id,
                                                            Embedding.model_id == model_id).limit(1)) is not None:
                return
            model.version += 1
            session.execute(update(File).where(File.id == file_id).values(
                status="ok", skip_reason=None, width=info.width, height=info.height, captured_at=info.captured_at,
                camera=None, duration_ms=round(info.duration * 1000), fps=info.fps, rotation=info.rotation))
            session.execute(insert(Embedding), [
                {"file_id": file_id, "model_id": model_id, "frame": n, "at_ms": round(t * 1000),
                 "vector": to_blob(v), "version": model.version} for n, (t, v) in enumerate(zip(times, vectors))])

    retrying(once, "saving a video's frames")


def index_videos(catalog: Catalog, bundle: ModelBundle, model_id: int, videos: list[tuple[int, str]],
                 batch_size: int, time_limit: float,
                 on_video: Callable[[int, str, str | None], None] | None = None,
                 choice: FrameChoice = FrameChoice()) -> VideoReport:
    """Embed each pending (file id, path) video; on_video(file_id, path, skip reason or None) after each
    commit. bundle: the handle in the library's mode (indexes.indexer.library_bundle)."""
    report = VideoReport()
    for file_id, path in videos:
        info, times, vectors, reason = embed_video(bundle, path, batch_size, time_limit, choice)
        _commit_video(catalog, model_id, file_id, info, times, vectors, reason)
        if reason is None:
            report.videos += 1
            report.frames += len(times)
            report.seconds_of_video += info.duration
        if on_video is not None:
            on_video(file_id, path, reason)
    return report


def split_videos(todo: list[tuple[int, str]]) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(photos, videos) of the indexer's pending (file id, path) list, by extension."""
    photos, videos = [], []
    for item in todo:
        (videos if is_video(item[1]) else photos).append(item)
    return photos, videos


@dataclass(frozen=True)
class Span:
    """One embedded frame of a video and the stretch of the video it stands for."""
    frame: int
    start: float  # seconds
    end: float


def frame_spans(catalog: Catalog, model_id: int, file_ids) -> dict[int, list[Span]]:
    """For each video among file_ids: its frames in order, frame i spanning until frame i+1 (the last
    one until the video's end)."""
    ids = [int(i) for i in file_ids]
    if not ids:
        return {}
    with catalog.session() as session:
        durations = dict(session.execute(select(File.id, File.duration_ms).where(
            File.id.in_(ids), File.duration_ms.is_not(None))).all())
        rows = session.execute(select(Embedding.file_id, Embedding.frame, Embedding.at_ms).where(
            Embedding.model_id == model_id, Embedding.file_id.in_(list(durations)))
            .order_by(Embedding.file_id, Embedding.frame)).all()
    frames: dict[int, list[tuple[int, int]]] = {}
    for file_id, frame, at_ms in rows:
        frames.setdefault(file_id, []).append((frame, at_ms or 0))
    spans = {}
    for file_id, items in frames.items():
        ends = [at for _f, at in items[1:]] + [max(durations[file_id], items[-1][1])]
        spans[file_id] = [Span(f, at / 1000, end / 1000) for (f, at), end in zip(items, ends)]
    return spans


def video_facts(catalog: Catalog, file_id: int) -> tuple[str, float, float | None, int] | None:
    """(disk path, duration in seconds, fps, rotation) of a catalogued, embedded video; None otherwise."""
    with catalog.session() as session:
        row = session.get(File, int(file_id))
        if row is None or row.duration_ms is None or row.status != "ok":
            return None
        return row.disk_path, row.duration_ms / 1000, row.fps, row.rotation or 0



def frame_time(catalog: Catalog, file_id: int, frame: int) -> float | None:
    """A video frame's time from the video's start in seconds (None when the frame is not stored)."""
    with catalog.session() as session:
        at_ms = session.scalar(select(Embedding.at_ms).where(Embedding.file_id == file_id, Embedding.frame == frame)
                               .limit(1))
    return None if at_ms is None else at_ms / 1000
