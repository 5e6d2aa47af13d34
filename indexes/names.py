"""File names as the file system gives them, stored and shown safely.

POSIX names are bytes. Python hands names that are not valid UTF-8 (an old camera's `cafe\\xe9.jpg`,
a Samba share in Latin-1) over as str with lone surrogates, which no database can store. The
catalog keeps such a name readably, its bad bytes written as `\\xNN` (files.path, unique), and
the exact bytes beside it (files.raw_path) to open the file with.
"""

from __future__ import annotations

import os


def readable(path: str | bytes) -> str:
    """The name for people and the catalog: itself when valid UTF-8, else bad bytes as \\xNN."""
    raw = path if isinstance(path, bytes) else os.fsencode(path)
    return raw.decode("utf-8", "backslashreplace")


def catalog_name(path: str) -> tuple[str, bytes | None]:
    """(the catalog's path, the raw bytes when the name is not valid UTF-8, else None)."""
    try:
        path.encode("utf-8")
        return path, None
    except UnicodeEncodeError:
        raw = os.fsencode(path)
        return readable(raw), raw
