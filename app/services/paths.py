"""Where cliplab keeps its files (the data and cache folders under CLIPLAB_HOME), for the front ends."""

from __future__ import annotations

from cliplab.engine.paths import cache_dir, data_dir

__all__ = ["cache_dir", "data_dir"]
