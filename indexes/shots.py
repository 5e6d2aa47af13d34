"""One photo per shot: a camera RAW and the picture beside it from the same shot (same folder, same
name stem, same capture time: IMG_0001.CR2 + IMG_0001.JPG) are one photo, shown through the picture
with both files listed, never two results nor a pair of duplicates.

Both files keep their rows and embeddings (the RAW stands alone again if the JPEG goes). The RAW's
`files.shot_of` names the file shown for the shot; `link_shots` sets and clears it from what the
catalog holds after each indexing run (the capture times come from decoding), and search, the
duplicate finder and the app read it through `companions` and `companion_ids`.
"""

from __future__ import annotations

import os
from collections import defaultdict

from sqlalchemy import select, update

from cliplab.engine.raw import RAW_EXTENSIONS
from cliplab.indexes.catalog import Catalog, File


def _shot_key(path: str, captured_at) -> tuple[str, object]:
    return os.path.splitext(path)[0], captured_at


def link_shots(catalog: Catalog) -> int:
    """Set files.shot_of for every RAW with a picture of the same shot beside it, clear it where that is
    no longer so; returns how many RAW files are linked. Call with the writer lock held."""
    with catalog.session() as session, session.begin():
        rows = session.execute(select(File.id, File.path, File.ext, File.captured_at, File.shot_of)
                               .where(File.status == "ok", File.captured_at.is_not(None))).all()
        shots: dict[tuple[str, object], list] = defaultdict(list)
        for row in rows:
            shots[_shot_key(row.path, row.captured_at)].append(row)
        wanted: dict[int, int] = {}
        for members in shots.values():
            pictures = sorted(r.id for r in members if r.ext not in RAW_EXTENSIONS)
            if pictures:
                wanted.update({r.id: pictures[0] for r in members if r.ext in RAW_EXTENSIONS})
        linked = set(session.scalars(select(File.id).where(File.shot_of.is_not(None))))
        for file_id in linked - wanted.keys():
            session.execute(update(File).where(File.id == file_id).values(shot_of=None))
        current = {r.id: r.shot_of for r in rows}
        for file_id, shown in wanted.items():
            if current.get(file_id) != shown:
                session.execute(update(File).where(File.id == file_id).values(shot_of=shown))
    return len(wanted)


def companion_ids(catalog: Catalog) -> set[int]:
    """The files that another file of their shot stands for (search and duplicates leave them out)."""
    with catalog.session() as session:
        return set(session.scalars(select(File.id).where(File.shot_of.is_not(None))))


def companions(catalog: Catalog, file_ids) -> dict[int, list[str]]:
    """For each shown file that stands for a shot, the paths of its other files (sorted)."""
    ids = [int(i) for i in file_ids]
    found: dict[int, list[str]] = defaultdict(list)
    if not ids:
        return {}
    with catalog.session() as session:
        for shown, path in session.execute(select(File.shot_of, File.path).where(File.shot_of.in_(ids))):
            found[int(shown)].append(path)
    return {k: sorted(v) for k, v in found.items()}
