"""Decoding image files in worker processes, each file with a time limit.

The model stays in the main process; workers turn a path into the preprocessed tensor (as a
numpy array) plus header facts, or into a failure reason. They preprocess with the model handle's
own Preprocess (the release's: resolution, resize size, mean/std, resize mode, interpolation), which
the pool receives and pickles into each worker; nothing here builds a default one. A worker that overruns its file's
limit is stopped from inside (SIGALRM) and, should the decoder be stuck in C code, the whole
pool is replaced from outside, so one bad file never stops a run.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from cliplab.engine import images
from cliplab.engine.images import Preprocess
from cliplab.indexes.names import readable


@dataclass
class Decoded:
    file_id: int
    pixels: np.ndarray | None  # [3, r, r] float32, preprocessed; None when skipped
    reason: str | None = None  # why it was skipped
    width: int | None = None
    height: int | None = None
    captured_at: datetime | None = None
    camera: str | None = None


class _Timeout(Exception):
    pass


def _alarm(_signum, _frame):
    raise _Timeout()


_preprocess: Preprocess | None = None  # the pool's, received once per worker (not pickled per file)


def _init_worker(preprocess: Preprocess, max_pixels: int) -> None:
    import torch
    global _preprocess
    torch.set_num_threads(1)  # the workers are the parallelism; the model has the main process's threads
    _preprocess = preprocess
    # the parent's pixel limit when the pool started (its settings or environment), whatever the forkserver's
    # environment was when it was started
    os.environ[images.MAX_PIXELS_ENV] = str(max_pixels)
    signal.signal(signal.SIGALRM, _alarm)


def _decode_in_worker(file_id: int, path: str, time_limit: float) -> Decoded:
    assert _preprocess is not None, "the pool's initializer hands each worker the model's Preprocess"
    return decode_file(file_id, path, _preprocess, time_limit)


def decode_file(file_id: int, path: str, preprocess: Preprocess, time_limit: float) -> Decoded:
    """Decode one file with the model's preprocessing (in a worker; callable directly for tests,
    query images and single-process runs)."""
    from cliplab.engine.images import ImageLoadError, image_info, load_image
    armed = signal.getsignal(signal.SIGALRM) is _alarm
    if armed:
        signal.setitimer(signal.ITIMER_REAL, time_limit)
    name = readable(path)
    try:
        info = image_info(path)
        image = load_image(path, min_size=max(preprocess.resolution, preprocess.resize_size))
        pixels = preprocess(image).numpy()
        return Decoded(file_id, pixels, None, info["width"], info["height"], info.get("taken_at"),
                       info.get("camera_model"))
    except ImageLoadError as error:
        return Decoded(file_id, None, readable(f"{error.reason}: {error}"))
    except _Timeout:
        return Decoded(file_id, None, f"timed out: decoding {name} took more than {time_limit:g} s")
    except MemoryError:
        return Decoded(file_id, None, f"too large: out of memory while decoding {name}")
    except Exception as error:  # noqa: BLE001 - any decoder bug becomes a recorded skip, never a crash
        return Decoded(file_id, None, readable(f"corrupt: cannot decode {name} ({type(error).__name__}: {error})"))
    finally:
        if armed:
            signal.setitimer(signal.ITIMER_REAL, 0)


def overlap_window(batch_size: int, workers: int) -> int:
    """Files to keep in flight so that decoding never waits on encoding: while the model encodes one
    batch, the workers decode the whole next one (the slower of the two then bounds the rate)."""
    return 2 * batch_size + 2 * workers


class DecodePool:
    """Ordered, bounded parallel decoding: `for item in pool.decode([(id, path), ...])`."""

    def __init__(self, preprocess: Preprocess, workers: int | None = None, time_limit: float = 30.0,
                 ahead: int | None = None):
        if not isinstance(preprocess, Preprocess):
            raise TypeError(f"DecodePool takes the model handle's Preprocess, not {type(preprocess).__name__}.")
        self.preprocess, self.time_limit = preprocess, time_limit
        # workers=0 decodes in the calling process (no time limit then: nothing could enforce it)
        self.workers = max(0, workers if workers is not None else (os.cpu_count() or 1))
        # files in flight; a caller that encodes batches passes ahead >= 2 batches (overlap_window)
        self.ahead = max(ahead or 0, self.workers * 4)
        self._context = multiprocessing.get_context("forkserver")  # a clean parent: no torch threads forked
        self._context.set_forkserver_preload(["cliplab.engine.images", "torch", "numpy"])
        self._pool = None

    def _start(self):
        self._pool = self._context.Pool(self.workers, initializer=_init_worker,
                                          initargs=(self.preprocess, images.max_pixels()))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def decode(self, items: Iterable[tuple[int, str]]) -> Iterator[Decoded]:
        if self.workers == 0:
            yield from (decode_file(file_id, path, self.preprocess, self.time_limit) for file_id, path in items)
            return
        items = iter(items)
        window: deque = deque()
        depth = self.ahead
        if self._pool is None:
            self._start()

        def submit(file_id: int, path: str) -> None:
            window.append((file_id, path, self._pool.apply_async(
                _decode_in_worker, (file_id, path, self.time_limit))))

        # Each worker's own alarm bounds a file at time_limit; this outer limit catches a decoder
        # stuck in C code. Results are taken in order from a FIFO queue, so the file waited for has
        # at most a few files per worker ahead of it, however deep the window.
        outer = self.time_limit * (min(depth, self.workers * 4) // self.workers + 2) + 5
        for file_id, path in items:
            submit(file_id, path)
            if len(window) >= depth:
                break
        while window:
            file_id, path, result = window.popleft()
            try:
                yield result.get(timeout=outer)
            except multiprocessing.TimeoutError:
                yield Decoded(file_id, None, f"timed out: decoding {readable(path)} took more than {outer:g} s "
                                             "(decoder stuck)")
                pending = [(fid, p) for fid, p, _r in window]
                window.clear()
                self.close()
                self._start()
                for fid, p in pending:
                    submit(fid, p)
            nxt = next(items, None)
            if nxt is not None:
                submit(*nxt)
