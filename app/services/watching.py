"""Keeping the library current by itself: the watcher (indexes.watch) with the library's one write path.

Each batch of changed folders, and each reconcile, goes through `library.add_folders` (scan, embed what
is new, bring the vector index up to date): the same crash-safe steps as `cliplab index` and the app's
indexing, so a watcher killed at any moment loses nothing and embeds nothing twice, and a move keeps
its embeddings. The app runs one (`AppState.watcher`) for its library folders; `cliplab watch` runs
one in the foreground.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from cliplab.app.services import library
from cliplab.indexes import library as catalogue
from cliplab.indexes.catalog import Catalog
from cliplab.indexes.indexer import ModelBundle
from cliplab.indexes.watch import FolderWatch, Watcher, WatchState, filesystem_type, needs_polling  # noqa: F401

log = logging.getLogger(__name__)
DEFAULTS = {"poll_interval": 30.0, "reconcile": 3600.0, "settle": 2.0, "quiet": 1.0}


def batch_line(run: dict, folders: list[str] | None) -> str:
    where = "reconcile of every folder" if folders is None else f"{len(folders)} folder(s)"
    return (f"{where}: {run['scan']}; embedded {run['embedded']}, skipped {run['skipped']}; "
            f"{run['vectors']['count']} photos searchable")


def start_watcher(catalog: Catalog, bundle: ModelBundle | Callable[[], ModelBundle],
                  folders: list[str | Path] | None = None, poll: tuple[str, ...] = (), poll_all: bool = False,
                  poll_interval: float = DEFAULTS["poll_interval"], reconcile: float = DEFAULTS["reconcile"],
                  settle: float = DEFAULTS["settle"], quiet: float = DEFAULTS["quiet"], workers: int | None = 1,
                  kind: str = "auto", reconcile_at_start: bool = True,
                  on_batch: Callable[[str], None] | None = None, index_cache=None) -> Watcher:
    """Watch folders (None: every library folder, folders added later included) and keep the catalog and
    the vector index current; returns the running Watcher (its .state for display, .stop()). bundle: the
    indexing model, or a callable giving the current one (the app's, which may switch). poll: folders to
    poll whatever their file system; poll_all: no native events at all. index_cache: the app's open vector
    indexes, brought up to date after each batch so searches see the new photos at once."""
    chosen = [library.check_folder(f, catalog=catalog) for f in folders] if folders else None

    def roots() -> list[str]:
        return chosen if chosen is not None else catalogue.folder_paths(catalog)

    def process(changed: list[str] | None) -> str:
        model = bundle() if callable(bundle) else bundle
        current = roots()
        # only inside folders still watched: a folder taken out of the library meanwhile is not added back
        targets = current if changed is None else [c for c in changed if any(
            c == r or c.startswith(r.rstrip(os.sep) + os.sep) for r in current)]
        if not targets:
            return "no library folders to watch"
        # inside library folders only, which the person chose (a system folder among them was confirmed then)
        run = library.add_folders(catalog, model, targets, workers=workers, kind=kind, confirm_system=True)
        if index_cache is not None:
            index_cache.get(model.register(catalog), kind)  # synced now, not at the next search
        line = batch_line(run, changed)
        log.info("watcher: %s", line)
        if on_batch is not None:
            on_batch(line)
        return line

    return Watcher(roots, process, poll=tuple(str(Path(p).expanduser().resolve()) for p in poll), poll_all=poll_all,
                   poll_interval=poll_interval, reconcile=reconcile, settle=settle, quiet=quiet,
                   reconcile_at_start=reconcile_at_start).start()


def status(catalog: Catalog, watcher: Watcher | None) -> WatchState:
    """The watcher's state, each folder's mode as the catalog knows it too (a share that went away shows
    "offline" even while its empty mount point is still polled)."""
    if watcher is None:
        return WatchState()
    state = watcher.state
    offline = {f.path for f in catalogue.folder_counts(catalog) if not f.online}
    return replace(state, folders=[FolderWatch(f.path, "offline", f.why) if f.path in offline else f
                                   for f in state.folders])
