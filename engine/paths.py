"""Where cliplab keeps its data: CLIPLAB_HOME, or a per-user data directory."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory file locks; one process at a time is then the user's part
    fcntl = None


def data_dir() -> Path:
    """The data directory (catalog, downloaded models, caches); created on first use."""
    root = os.environ.get("CLIPLAB_HOME")
    if root:
        path = Path(root).expanduser()
    else:
        base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
        path = Path(base) / "cliplab"
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir() -> Path:
    path = data_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir(name: str) -> Path:
    """A named cache under the data directory (features, classifier weights, layouts...)."""
    path = data_dir() / "cache" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def exclusive_lock(path: str | Path) -> Iterator[None]:
    """Hold an advisory lock on the file at path (made if missing) until the block ends: processes
    (and threads, each opening the file) that take the same lock run the block one after the other."""
    if fcntl is None:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
