"""What the running app holds between requests: the current model, the catalog, background jobs and
saved classifiers.

One AppState per app process. Jobs live here (not in a browser session) so a refreshed page finds
its indexing or training run still going and picks up its progress by job id or by kind.
"""

from __future__ import annotations

import json
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache

from sqlalchemy import DateTime, Engine, String, Text, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from engine.errors import CliplabError
from indexes.catalog import Catalog, Folder, open_catalog
from indexes.indexer import ModelBundle

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
    """The current model bundle (loaded on first use), the catalog handle, jobs and listeners.

    model: what engine.load accepts ("demo", an official name, a checkpoint path); bundle: an
    already loaded ModelBundle (tests pass one to skip loading).
    """

    def __init__(self, model: str = "demo", catalog: Catalog | None = None, bundle: ModelBundle | None = None,
                 precision: str | None = "auto") -> None:
        self.model_name = bundle.name if bundle is not None else str(model)
        self.precision = precision
        self.catalog = catalog or open_catalog()
        self.jobs = Jobs()
        self._bundle = bundle
        self._lock = threading.RLock()
        self._listeners: list[ModelListener] = []
        self.allowed_paths: list[str] = []  # the web server's list of folders it may serve files from

    def allow(self, folders: list[str]) -> None:
        """Let the web server serve files from these (just indexed) folders."""
        for folder in folders:
            if folder not in self.allowed_paths:
                self.allowed_paths.append(folder)

    @property
    def bundle(self) -> ModelBundle:
        with self._lock:
            if self._bundle is None:
                self._bundle = ModelBundle.load(self.model_name, precision=self.precision)
                self.model_name = self._bundle.name
            return self._bundle

    @property
    def loaded(self) -> tuple:
        """(model, preprocess, tokenizer): the tuple the service functions take."""
        b = self.bundle
        return b.model, b.preprocess, b.tokenizer

    def on_model_change(self, callback: ModelListener) -> None:
        """Call callback(new_bundle) after every switch (e.g. to drop caches built with the old model)."""
        self._listeners.append(callback)

    def switch_model(self, name_or_path: str) -> ModelBundle:
        """Load another model and make it current; the old one stays current if loading fails."""
        bundle = ModelBundle.load(str(name_or_path), precision=self.precision)
        with self._lock:
            self._bundle, self.model_name = bundle, bundle.name
        for callback in list(self._listeners):
            callback(bundle)
        return bundle

    def set_bundle(self, bundle: ModelBundle) -> None:
        """Make an already loaded bundle current (a freshly trained model, tests)."""
        with self._lock:
            self._bundle, self.model_name = bundle, bundle.name
        for callback in list(self._listeners):
            callback(bundle)

    def library_roots(self) -> list[str]:
        """The online root folders of the catalog: the only places the app serves files from."""
        with self.catalog.session() as session:
            return [row.path for row in session.scalars(select(Folder).where(Folder.online.is_(True)))]


# -- saved classifiers: class names + templates, in the catalog database --------------------------

class Base(DeclarativeBase):
    pass


class SavedClassifier(Base):
    __tablename__ = "saved_classifiers"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    saved_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    spec_json: Mapped[str] = mapped_column(Text)  # {"classes": [...], "templates": [...], "threshold": x}


@cache
def _create_tables(engine: Engine) -> Engine:
    Base.metadata.create_all(engine)
    return engine


def save_classifier(catalog: Catalog, name: str, classes: list[str], templates: list[str],
                    threshold: float | None = None) -> str:
    """Store (or replace) a named classifier; returns its name."""
    name = (name or "").strip()
    if not name:
        raise CliplabError("Give the classifier a name before saving it.")
    if not classes:
        raise CliplabError("There are no class names to save: type one class name per line.")
    spec = {"classes": list(classes), "templates": list(templates), "threshold": threshold}
    with Session(_create_tables(catalog.engine)) as session, session.begin():
        session.merge(SavedClassifier(name=name, saved_at=datetime.now(UTC), spec_json=json.dumps(spec)))
    return name


def load_classifier(catalog: Catalog, name: str) -> dict:
    with Session(_create_tables(catalog.engine)) as session:
        row = session.get(SavedClassifier, name)
    if row is None:
        raise CliplabError(f"No saved classifier named {name!r}.")
    return json.loads(row.spec_json)


def list_classifiers(catalog: Catalog) -> list[str]:
    with Session(_create_tables(catalog.engine)) as session:
        return list(session.scalars(select(SavedClassifier.name).order_by(SavedClassifier.name)))
