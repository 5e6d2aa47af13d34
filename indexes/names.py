"""File names as the file system gives them, stored and shown safely.

POSIX names are bytes. Python hands names that are not valid UTF-8 (an old camera's `cafe\\xe9.jpg`,
a Samba share in Latin-1) over as str with lone surrogates, which no database can store. The
catalog keeps such a name readably, its bad bytes written as `\\xNN` (files.path, unique), and
the exact bytes beside it (files.raw_path) to open the file with.

A name printed on a terminal (`printable`) goes further: a file name may hold an escape sequence
that recolours the terminal or sets its title, a newline that splits a result in two, or a literal
`\\xe9` that reads exactly like the readable form of its non-UTF-8 twin. Printed names are one line,
hold nothing a terminal acts on, and each name has its own spelling.
"""

from __future__ import annotations

import os
import unicodedata

# invisible characters that reorder or break the text around them (Unicode bidi controls)
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


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


def on_disk(path: str, raw: bytes | None) -> str:
    """The name to open (or print) a catalogued file by: its stored bytes when the name is not UTF-8."""
    return os.fsdecode(raw) if raw is not None else path


def printable(path: str | bytes) -> str:
    """A file name as the CLI prints it, from the name on disk (bytes, or str as os.fsdecode gives it; a
    catalog row's File.disk_path), not from its readable catalog form. Bytes that are not UTF-8 become
    `\\xNN` (NN >= 80), control characters `\\xNN` (NN < 80) or `\\uNNNN` (C1 controls, line separators,
    bidi controls), and a backslash `\\\\`: so no two names print alike and none acts on the terminal."""
    raw = path if isinstance(path, bytes) else os.fsencode(path)
    return _escape(raw.decode("utf-8", "surrogateescape"), backslash=True)


def printable_text(text: str) -> str:
    """A message that may quote file names (a skip reason), made safe for a terminal as `printable` does,
    its backslashes left as they are (a message is read, not parsed back into a name)."""
    return _escape(text, backslash=False)


def _escape(text: str, backslash: bool) -> str:
    out = []
    for char in text:
        code = ord(char)
        if char == "\\" and backslash:
            out.append("\\\\")
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x80 and unicodedata.category(char) == "Cc":
            out.append(f"\\x{code:02x}")
        elif unicodedata.category(char) in ("Cc", "Zl", "Zp", "Cs") or char in _BIDI:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)
