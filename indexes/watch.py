"""Watching library folders, so that the catalog keeps itself current without a rescan.

Local folders are watched with watchdog's native observer (inotify, FSEvents, ReadDirectoryChangesW);
folders where native events do not arrive (NFS, SMB/CIFS, FUSE, sshfs...: `needs_polling`, read from
/proc/mounts, or named by the person) are polled at an interval (watchdog's PollingObserver). Either
way an event only names a place that changed: the work is done by the one write path the library
already has (the caller's `process`: indexes.scan, then indexes.indexer), so the catalog stays
crash-safe as it is, and a move keeps its embeddings by the scan's content fingerprints.

- A file still being written waits until its size and mtime are the same at two looks `settle`
  seconds apart, and so does a folder event (a folder moved or copied in) while a file inside it
  waits; deletions need no wait.
- Events are gathered until `quiet` seconds pass without a new one (at most `max_wait` after the
  first): a burst of 10,000 files copied in becomes one call of `process` with the folders they lie
  in, not 10,000 scans.
- `process(None)` is a reconcile: every library folder scanned as `cliplab index` does. It runs at
  start (what changed while nothing watched, even after a kill -9: the queue lives in memory only,
  and nothing is lost since the folders themselves are the queue), every `reconcile` seconds, and
  when the observer reports lost events (an inotify queue overflow).
- A folder whose root disappears or whose volume changes (a share unmounted, a disk unplugged) is
  handed to `process` at once: the scan marks it offline (its photos kept, never deleted) and back
  online, with their ids and embeddings, when it returns.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from watchdog.events import EventsLostEvent, FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from cliplab.engine.errors import CliplabError
from cliplab.indexes.scan import _within, is_candidate, mount_point

log = logging.getLogger(__name__)

# file system types whose changes made elsewhere (another machine, a FUSE daemon) raise no local events
POLLED_TYPES = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse", "sshfs", "9p", "afs", "ceph", "glusterfs",
                "davfs", "virtiofs", "vboxsf", "prl_fs", "vmhgfs")


def filesystem_type(path: str) -> str | None:
    """The type (/proc/mounts) of the file system holding path; None where there is no /proc/mounts."""
    try:
        with open("/proc/mounts", encoding="utf-8", errors="replace") as mounts:
            table = [line.split() for line in mounts]
    except OSError:
        return None
    point = mount_point(path)
    types = {fields[1].replace("\\040", " "): fields[2] for fields in table if len(fields) >= 3}
    return types.get(point)


def needs_polling(path: str) -> bool:
    """Whether native events cannot be trusted for path: a network or FUSE file system."""
    kind = (filesystem_type(path) or "").lower()
    return any(kind == t or kind.startswith(t + ".") for t in POLLED_TYPES)


@dataclass
class FolderWatch:
    path: str
    mode: str  # "watching" (native events) | "polling" | "offline" (its root is missing)
    why: str = ""  # why it is polled


@dataclass
class WatchState:
    """What a person sees of the watcher."""
    running: bool = False
    folders: list[FolderWatch] = field(default_factory=list)
    queue: int = 0  # changed paths waiting (being written, or gathered into the next batch)
    last_reconcile: datetime | None = None
    last_batch: str = ""  # what the last batch did
    batches: int = 0
    error: str = ""  # the last failure (retried)

    def summary(self) -> str:
        if not self.running:
            return "not watching"
        modes = ", ".join(f"{f.path}: {f.mode}" for f in self.folders) or "no folders"
        last = f"{self.last_reconcile:%Y-%m-%d %H:%M:%S}" if self.last_reconcile else "not yet"
        text = f"{modes}; {self.queue} change(s) queued; last reconcile {last}"
        return text + (f"; last batch: {self.last_batch}" if self.last_batch else "") + (
            f"; last error: {self.error}" if self.error else "")


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, EventsLostEvent):
            self.watcher.request_reconcile("the system dropped change events")
            return
        if event.event_type in ("opened", "closed_no_write") or (event.is_directory and event.event_type == "modified"):
            return  # reading a file, or a folder's own timestamp: nothing the catalog holds changed
        paths = [os.fsdecode(event.src_path)]
        if getattr(event, "dest_path", ""):
            paths.append(os.fsdecode(event.dest_path))
        if event.is_directory:
            self.watcher.add(paths, folder=True)
        elif any(is_candidate(os.path.basename(p)) for p in paths):
            self.watcher.add(paths, folder=False)


def covering_folders(paths: list[str], roots: list[str]) -> list[str]:
    """The fewest existing folders whose (recursive) scan covers every path: each path's nearest
    existing folder inside its root (the root itself when all is gone), without folders inside others."""
    chosen: set[str] = set()
    for path in paths:
        root = next((r for r in roots if _within(path, r)), None)
        if root is None:
            continue
        folder = path
        while folder != root and not os.path.isdir(folder):
            folder = os.path.dirname(folder)
        chosen.add(folder)
    ordered = sorted(chosen, key=len)
    kept: list[str] = []
    for folder in ordered:
        if not any(_within(folder, k) for k in kept):
            kept.append(folder)
    return sorted(kept)


class Watcher:
    """Watch roots (a callable, read again every `refresh` seconds: folders added later are watched too)
    and hand batches of changed folders to process(folders) (None: reconcile everything). See the module
    docstring. poll: roots to poll whatever their file system; poll_all: poll every root (no native
    events, e.g. tests of polling)."""

    def __init__(self, roots: Callable[[], list[str]], process: Callable[[list[str] | None], str],
                 poll: tuple[str, ...] = (), poll_all: bool = False, poll_interval: float = 30.0,
                 reconcile: float = 3600.0, settle: float = 2.0, quiet: float = 1.0, max_wait: float = 30.0,
                 refresh: float = 5.0, reconcile_at_start: bool = True, tick: float = 0.25) -> None:
        self._roots, self._process = roots, process
        self.poll = {os.path.abspath(p) for p in poll}
        self.poll_all, self.poll_interval, self.reconcile_every = poll_all, poll_interval, reconcile
        self.settle, self.quiet, self.max_wait, self.refresh, self.tick = settle, quiet, max_wait, refresh, tick
        self.state = WatchState()
        self._lock = threading.Lock()
        self._files: dict[str, tuple[tuple[int, int] | None, float]] = {}  # path -> (size, mtime_ns), since when
        self._folders: set[str] = set()
        self._first = self._last = 0.0  # when the batch being gathered began and last grew
        self._reconcile_due = reconcile_at_start
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._native: BaseObserver | None = None
        self._polling: BaseObserver | None = None
        self._watched: dict[str, tuple[str, object]] = {}  # root -> (mode, watch handle)
        self._presence: dict[str, tuple[bool, str] | None] = {}  # root -> (is a folder, its mount point)
        self._roots_read = 0.0
        self._last_reconcile_at = time.monotonic()
        self._roots_seen = False  # the first look at the roots is done (the reconcile at start covers them)
        self._failures = 0  # batches failed in a row (the wait before the next try doubles)

    # -- events in -------------------------------------------------------------------------------

    def add(self, paths: list[str], folder: bool) -> None:
        now = time.monotonic()
        with self._lock:
            for path in paths:
                if folder:
                    self._folders.add(path)
                else:
                    self._files.setdefault(path, (None, now))
            if not self._first:
                self._first = now
            self._last = now
            self.state.queue = len(self._files) + len(self._folders)

    def request_reconcile(self, why: str = "") -> None:
        log.info("reconcile requested%s", f": {why}" if why else "")
        self._reconcile_due = True

    # -- running ---------------------------------------------------------------------------------

    def start(self) -> Watcher:
        self._native, self._polling = Observer(), PollingObserver(timeout=self.poll_interval)
        self._native.start()
        self._polling.start()
        self._stop.clear()
        self.state.running = True
        self._thread = threading.Thread(target=self._run, daemon=True, name="cliplab-watcher")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for observer in (self._native, self._polling):
            if observer is not None:
                observer.stop()
                observer.join()
        self._watched.clear()
        self.state.running = False

    def __enter__(self) -> Watcher:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until nothing is queued or being processed (tests, the CLI's --once)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                idle = not self._files and not self._folders and not self._reconcile_due and not self._busy
            if idle:
                return True
            time.sleep(0.05)
        return False

    _busy = False

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception as error:  # noqa: BLE001 - the watcher outlives any one failure; it retries
                log.exception("watcher step failed")
                self.state.error = f"{type(error).__name__}: {error}"
            self._stop.wait(self.tick)

    def _step(self) -> None:
        now = time.monotonic()
        if now - self._roots_read >= self.refresh:
            self._roots_read = now
            self._sync_roots()
        self._check_presence()
        if self.reconcile_every and now - self._last_reconcile_at >= self.reconcile_every:
            self._reconcile_due = True
        self._busy = True  # from taking work off the queue until it is done (wait_idle)
        try:
            if self._reconcile_due:
                self._reconcile_due = False
                self._run_batch(None)
                return
            ready = self._ready(now)
            if ready:
                self._run_batch(ready)
        finally:
            self._busy = False

    def _run_batch(self, folders: list[str] | None) -> None:
        try:
            summary = self._process(folders)
        except CliplabError as error:  # e.g. another process holds the writer lock: try again, backing off
            self.state.error = str(error)
            if folders is None:
                self._reconcile_due = True
            else:
                self.add(folders, folder=True)
            self._failures += 1
            self._stop.wait(min(60.0, 0.5 * 2 ** self._failures))
            return
        self._failures = 0
        self.state.error = ""
        self.state.batches += 1
        self.state.last_batch = summary
        if folders is None:
            self.state.last_reconcile = datetime.now()
            self._last_reconcile_at = time.monotonic()

    def _ready(self, now: float) -> list[str] | None:
        """The folders to scan now, or None while the batch is still gathering (see the module docstring)."""
        with self._lock:
            if not self._files and not self._folders:
                return None
            if now - self._last < self.quiet and now - self._first < self.max_wait:
                return None
            ready, waiting = [], {}
            for path, (seen, since) in self._files.items():
                try:
                    info = os.stat(path)
                    current = (info.st_size, info.st_mtime_ns)
                except OSError:  # gone (deleted, or moved away): nothing to wait for
                    ready.append(path)
                    continue
                if current != seen:
                    waiting[path] = (current, now)  # changed since the last look: look again later
                elif now - since >= self.settle:
                    ready.append(path)
                else:
                    waiting[path] = (seen, since)
            # a folder waits while a file in it is still being written: its scan would read that file half done
            folders = {f for f in self._folders if any(_within(p, f) for p in waiting)}
            ready += [f for f in self._folders if f not in folders]
            self._files, self._folders = waiting, folders
            self._first = self._last = now if waiting else 0.0
            self.state.queue = len(waiting) + len(folders)
        roots = [w for w in self._watched] + [r for r in self._presence if r not in self._watched]
        return covering_folders(ready, roots) or None

    # -- observers -------------------------------------------------------------------------------

    def _mode(self, root: str) -> tuple[str, str]:
        if self.poll_all:
            return "polling", "native events are off"
        if any(_within(root, p) for p in self.poll):
            return "polling", "set to polling"
        if needs_polling(root):
            return "polling", f"on a {filesystem_type(root)} file system, which sends no change events"
        return "watching", ""

    def _sync_roots(self) -> None:
        """Read the roots again (folders added or removed since) and stop watching those that left."""
        roots = sorted({os.path.abspath(r) for r in self._roots()})
        for root in list(self._watched):
            if root not in roots:
                self._unwatch(root)
        self._presence = {root: self._presence.get(root) for root in roots}

    def _check_presence(self) -> None:
        """Each tick (a few stats a root): watch the roots that are folders now; one that appears, vanishes or
        changes volume is handed to process at once, which marks it offline or back."""
        folders = []
        for root, before in list(self._presence.items()):
            present = (os.path.isdir(root), mount_point(root) if os.path.isdir(root) else "")
            self._presence[root] = present
            if before is not None and before != present:
                log.info("%s %s", root, "is back" if present[0] else "is gone")
                self.add([root], folder=True)
                self._unwatch(root)  # gone, or a new volume: watched afresh
            if present[0] and root not in self._watched:
                self._watch(root)
                if before is None and self._roots_seen:  # added while running: what came before its watch
                    self.add([root], folder=True)
            mode, why = self._watched.get(root, ("offline", None))[0], ""
            if mode == "polling":
                why = self._mode(root)[1]
            folders.append(FolderWatch(root, mode, why))
        if folders != self.state.folders:
            self.state.folders = folders
        self._roots_seen = True

    def _watch(self, root: str) -> None:
        mode, _why = self._mode(root)
        observer = self._polling if mode == "polling" else self._native
        try:
            handle = observer.schedule(_Handler(self), root, recursive=True)
        except OSError as error:  # e.g. out of inotify watches: poll it instead
            if mode == "polling":
                raise
            log.warning("cannot watch %s natively (%s): polling it", root, error)
            mode, handle = "polling", self._polling.schedule(_Handler(self), root, recursive=True)
        self._watched[root] = (mode, handle)

    def _unwatch(self, root: str) -> None:
        entry = self._watched.pop(root, None)
        if entry is None:
            return
        mode, handle = entry
        observer = self._polling if mode == "polling" else self._native
        try:
            observer.unschedule(handle)
        except (KeyError, OSError):  # its folder is gone already
            pass
