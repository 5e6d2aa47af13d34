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

from sqlalchemy import select

from cliplab.app.services.loading import EXACT, SEARCH, load_bundle
from cliplab.engine.errors import CliplabError
from cliplab.indexes.catalog import Catalog, Folder, open_catalog
from cliplab.indexes.indexer import ModelBundle
from cliplab.indexes.vectors import VectorIndex, open_index

ModelListener = Callable[[ModelBundle], None]


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
    """The current model (loaded on first use), the catalog handle, jobs, listeners and the open
    vector indexes.

    model: what engine.load accepts ("demo", an official name, a checkpoint path); bundle: an
    already loaded ModelBundle (tests pass one to skip loading). The model runs in the EXACT
    precision (app.services.loading), the CLI's default, so classifications, audits and evaluations
    made in the app give the CLI's numbers; `search_bundle` is the indexing/search model, which may
    run in the fastest safe mode (the same object where that mode is the exact one).
    """

    def __init__(self, model: str = "demo", catalog: Catalog | None = None, bundle: ModelBundle | None = None,
                 device: str | None = None) -> None:
        self.model_name = bundle.name if bundle is not None else str(model)
        self.device = device
        self.catalog = catalog or open_catalog()
        self.jobs = Jobs()
        self.vector_indexes = VectorIndexCache(self.catalog)
        self._bundle = bundle
        self._search_bundle: ModelBundle | None = bundle
        self._lock = threading.RLock()
        self._listeners: list[ModelListener] = []

    @property
    def bundle(self) -> ModelBundle:
        """The current model in the exact precision: for every result meant to be reproduced."""
        with self._lock:
            if self._bundle is None:
                self._bundle = load_bundle(self.model_name, self.device, EXACT)
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
                self._search_bundle = self.bundle.using(SEARCH, "the fastest safe mode for indexing and search")
            return self._search_bundle

    def on_model_change(self, callback: ModelListener) -> None:
        """Call callback(new_bundle) after every switch (e.g. to drop caches built with the old model)."""
        self._listeners.append(callback)

    def switch_model(self, name_or_path: str) -> ModelBundle:
        """Load another model and make it current; the old one stays current if loading fails."""
        return self.set_bundle(load_bundle(str(name_or_path), self.device, EXACT))

    def set_bundle(self, bundle: ModelBundle) -> ModelBundle:
        """Make an already loaded bundle current (a freshly trained model, a switch, tests)."""
        with self._lock:
            self._bundle, self._search_bundle, self.model_name = bundle, None, bundle.name
        for callback in list(self._listeners):
            callback(bundle)
        return bundle

    def library_roots(self) -> list[str]:
        """The online root folders of the catalog."""
        with self.catalog.session() as session:
            return [row.path for row in session.scalars(select(Folder).where(Folder.online.is_(True)))]


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
