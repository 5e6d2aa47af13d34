"""What the running app holds between requests: the current model, the catalog, background jobs and
the open vector indexes.

One AppState per app process. Jobs live here (not in a browser session) so a refreshed page finds
its indexing or training run still going and picks up its progress by job id or by kind.
"""

from __future__ import annotations

import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from cliplab.app.services.loading import SEARCH
from cliplab.engine import default_model
from cliplab.engine.errors import CliplabError
from cliplab.engine.handle import ModelBundle
from cliplab.indexes.catalog import Catalog, open_catalog
from cliplab.indexes.library import online_roots
from cliplab.indexes.vectors import VectorIndex, open_index


@dataclass
class Job:
    """A background task: progress in [0, 1], a one-line status, log lines, then a result or an error."""
    id: str
    kind: str
    title: str
    started: float = field(default_factory=time.time)
    progress: float = 0.0
    message: str = "starting"
    log: list[str] = field(default_factory=list)
    state: str = "running"  # running | done | failed
    result: object = None
    error: str | None = None

    def update(self, progress: float | None = None, message: str | None = None) -> None:
        if progress is not None:
            self.progress = max(0.0, min(1.0, float(progress)))
        if message is not None:
            self.message = message
            self.log.append(message)
            del self.log[:-200]  # the tail is what a person reads

    @property
    def finished(self) -> bool:
        return self.state != "running"

    def remaining_seconds(self) -> float | None:
        """A plain estimate of the time left (elapsed time scaled by the progress), once there is enough
        progress to go on; None before."""
        if self.finished or self.progress < 0.05:
            return None
        elapsed = time.time() - self.started
        return elapsed * (1.0 - self.progress) / self.progress

    def progress_line(self) -> str:
        """"embedding the images: 42% (about 1 min left)": the stage, the share done, the estimate."""
        left = self.remaining_seconds()
        estimate = ""
        if left is not None:
            estimate = f", about {max(1, round(left))} s left" if left < 90 else f", about {round(left / 60)} min left"
        return f"{self.message}: {self.progress:.0%} done{estimate}"


class Jobs:
    """Threads running Job functions; a function receives its Job to report progress on."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(self, kind: str, title: str, work: Callable[[Job], object]) -> Job:
        with self._lock:
            running = [j for j in self._jobs.values() if j.kind == kind and not j.finished]
            if running:
                raise CliplabError(f"A {kind} job is already running ({running[0].title}); wait for it to finish.")
            job = Job(uuid.uuid4().hex[:10], kind, title)
            self._jobs[job.id] = job

        def run() -> None:
            try:
                job.result = work(job)
                job.update(1.0, "done")
                job.state = "done"
            except CliplabError as error:
                job.error, job.state = str(error), "failed"
                job.log.append(f"failed: {error}")
            except Exception as error:  # a bug: a sentence in the UI, the trace in the server log
                traceback.print_exc()
                job.error, job.state = f"{type(error).__name__}: {error}", "failed"
                job.log.append(f"failed: {job.error}")

        threading.Thread(target=run, name=f"cliplab-{kind}-{job.id}", daemon=True).start()
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def latest(self, kind: str) -> Job | None:
        """The newest job of a kind: what a refreshed page shows."""
        jobs = [j for j in self._jobs.values() if j.kind == kind]
        return max(jobs, key=lambda j: j.started) if jobs else None

    def wait(self, job: Job, timeout: float = 600.0) -> Job:
        deadline = time.time() + timeout
        while not job.finished and time.time() < deadline:
            time.sleep(0.05)
        return job


class AppState:
    """The current model (loaded on first use), the catalog handle, jobs and the open vector indexes.

    model: what engine.load accepts ("demo", an official name, a checkpoint path; default
    $CLIPLAB_MODEL, else demo, as every command); bundle: an already loaded ModelBundle (tests pass one
    to skip loading). device, precision, arch, allow_torchscript: the one loader's (ModelBundle.load),
    as the CLI's options. The model runs in the exact mode (fp32) unless `precision` says otherwise, the
    CLI's default, so classifications, audits and evaluations made in the app give the CLI's numbers;
    `search_bundle` is the indexing/search model, which may run in the fastest safe mode (the library's
    recorded mode wins when it embeds or searches).
    """

    def __init__(self, model: str | None = None, catalog: Catalog | None = None, bundle: ModelBundle | None = None,
                 device: str | None = None, precision: str | None = None, arch: str | None = None,
                 allow_torchscript: bool = False) -> None:
        self.model_name = bundle.name if bundle is not None else str(model or default_model())
        self.device = device
        self._options = {"precision": precision, "arch": arch, "allow_torchscript": allow_torchscript}
        self.catalog = catalog or open_catalog()
        self.jobs = Jobs()
        self.vector_indexes = VectorIndexCache(self.catalog)
        self._bundle = bundle
        self._search_bundle: ModelBundle | None = bundle
        self.search_mode = SEARCH  # indexing and search: "auto" unless the Settings tab chose a mode
        self._lock = threading.RLock()
        self.watcher = None  # the library watcher (start_watching), on by default in `cliplab app`
        self._paired: dict[tuple[str, bool], ModelBundle] = {}  # (text tower, for search) -> paired handle

    @property
    def bundle(self) -> ModelBundle:
        """The current model in the exact precision: for every result meant to be reproduced."""
        with self._lock:
            if self._bundle is None:
                self._bundle = self._load(self.model_name)
                self.model_name = self._bundle.name
            return self._bundle

    @property
    def search_bundle(self) -> ModelBundle:
        """The current model for indexing and search: the exact bundle's model in the fastest safe
        mode. The handle shares the fp32 weights; where that mode is bf16 its encoder holds a converted
        copy of them (an ONNX mode, its own session), built once for every handle of the model."""
        with self._lock:
            if self._search_bundle is None:
                # the same weights in the fastest safe mode; the library's recorded mode wins when it
                # embeds or searches (indexes.indexer.library_bundle)
                reason = ("the fastest safe mode for indexing and search" if self.search_mode == SEARCH
                          else "chosen in the settings for indexing and search")
                self._search_bundle = self.bundle.using(self.search_mode, reason)
            return self._search_bundle

    def set_search_mode(self, mode: str) -> None:
        """The inference mode of indexing and search from now on (a library's recorded mode still wins
        when it embeds or searches, so its vectors are never mixed)."""
        with self._lock:
            if mode != self.search_mode:
                self.search_mode, self._search_bundle = mode, None
                self._paired = {key: b for key, b in self._paired.items() if not key[1]}

    def with_text_model(self, text_model: str | None, search: bool = False) -> ModelBundle:
        """The current model (search: its search handle) with its texts embedded by a paired multilingual
        text tower (None or '': the model's own); a sentence when the tower was not made for this image
        model. The tower is loaded once and shared by the exact and the search handle."""
        base = self.search_bundle if search else self.bundle
        name = (text_model or "").strip()
        if not name:
            return base
        with self._lock:
            if (name, search) not in self._paired:
                other = self._paired.get((name, not search))
                tower = other.model.tower if other is not None else name
                self._paired[(name, search)] = base.with_text_model(tower)
            return self._paired[(name, search)]

    def switch_model(self, name_or_path: str) -> ModelBundle:
        """Load another model and make it current; the old one stays current if loading fails."""
        return self.set_bundle(self._load(str(name_or_path)))

    def _load(self, name: str) -> ModelBundle:
        return ModelBundle.load(name, self.device, purpose="reproducible", **self._options)

    def set_bundle(self, bundle: ModelBundle) -> ModelBundle:
        """Make an already loaded bundle current (a freshly trained model, a switch, tests)."""
        with self._lock:
            self._bundle, self._search_bundle, self.model_name = bundle, None, bundle.name
            self._paired = {}
        return bundle

    def start_watching(self, **options):
        """Watch the library's folders (those added later too) and keep the catalog and the open vector
        indexes current, with the current indexing model (app.services.watching.start_watcher's options)."""
        from cliplab.app.services import watching
        with self._lock:
            if self.watcher is None:
                self.watcher = watching.start_watcher(self.catalog, lambda: self.search_bundle,
                                                      index_cache=self.vector_indexes, **options)
            return self.watcher

    def stop_watching(self) -> None:
        with self._lock:
            if self.watcher is not None:
                self.watcher.stop()
                self.watcher = None

    def library_roots(self) -> list[str]:
        """The online root folders of the catalog."""
        return online_roots(self.catalog)


class VectorIndexCache:
    """The FAISS index of each model, opened once per process and brought up to date on every use."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._indexes: dict[tuple[int, str], VectorIndex] = {}
        self._lock = threading.Lock()

    def get(self, model_id: int, kind: str = "auto") -> VectorIndex:
        with self._lock:
            index = self._indexes.get((model_id, kind))
            if index is None:
                index = self._indexes[(model_id, kind)] = open_index(self.catalog, model_id, kind)
            else:
                index.sync()
            return index

    def clear(self) -> None:
        """Drop every open index (after a folder's rows were removed: they are reopened and checked)."""
        with self._lock:
            self._indexes.clear()
