"""Where cliplab keeps its files (the data and cache folders under CLIPLAB_HOME), for the front ends."""

from __future__ import annotations

import re
from pathlib import PurePath

from cliplab.engine.paths import cache_dir, data_dir

__all__ = ["cache_dir", "data_dir", "natural_key"]

_DIGITS = re.compile(r"(\d+)")


def natural_key(path: str | PurePath) -> tuple:
    """Sort key putting names in the order a person counts: img2 before img10, 1, 10, 100 as numbers
    (the digit runs compare as numbers, the rest case-folded; ties keep the plain order)."""
    text = str(path)
    parts = _DIGITS.split(text)
    return tuple((0, int(part), "") if i % 2 else (1, 0, part.casefold()) for i, part in enumerate(parts)), text
