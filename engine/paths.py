"""Where cliplab keeps its data: CLIPLAB_HOME, or a per-user data directory."""

from __future__ import annotations

import os
from pathlib import Path


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
