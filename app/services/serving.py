"""What the app may show in a page: indexed photos and videos and their generated thumbnails, by catalog
file id.

Videos are served by the same route as photos; the route answers HTTP range requests (206 Partial
Content, Accept-Ranges: bytes: Starlette's FileResponse), so a browser's player seeks in them. A
video's thumbnail is its first chosen frame (engine.video.poster), as the map shows it, or the frame
of a search result's best moment (engine.video.frame_at).

Nothing here takes a path from a request. A file id names a catalog row; the row must be an indexed
image (status ok) in an online library folder, still a regular file inside that folder (a symlink
that now points elsewhere is refused). Thumbnails are generated into a cache folder that only the
app writes; the web server is given those, never a library folder.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cliplab.engine import paths
from cliplab.engine.errors import CliplabError
from cliplab.engine.images import load_image
from cliplab.engine.raw import is_raw
from cliplab.engine.video import MEDIA_TYPES as VIDEO_MEDIA_TYPES
from cliplab.engine.video import VIDEO_EXTENSIONS, VideoError, frame_at, is_video, poster
from cliplab.indexes.catalog import Catalog, split_vector_id
from cliplab.indexes.library import file_in_folder, indexed_ids, online_roots
from cliplab.indexes.scan import EXTENSIONS
from cliplab.indexes.search import MAX_FILE_ID
from cliplab.indexes.video import frame_time

THUMBNAIL_SIZE = 384  # long side: the gallery's tiles and its preview
HOVER_SIZE = 160  # the map's hover thumbnail
THUMBNAIL_SIZES = (HOVER_SIZE, THUMBNAIL_SIZE)
_ID = re.compile(r"[0-9]{1,19}")  # ASCII only: str.isdigit() and int() also take '²' and '١'
MEDIA_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp",
               "bmp": "image/bmp", "gif": "image/gif", "tif": "image/tiff", "tiff": "image/tiff",
               "heic": "image/heic", "heif": "image/heif"}
PREVIEW_SIZE = 2048  # long side of the JPEG a camera RAW is shown as (browsers cannot show RAW files)


class NotServable(CliplabError):
    """The id names nothing the app shows (unknown, skipped, offline, gone, moved out of its folder)."""


@dataclass(frozen=True)
class Photo:
    file_id: int
    path: Path
    fingerprint: str
    media_type: str


def _inside(path: str, root: str) -> bool:
    root = root.rstrip(os.sep) or os.sep
    return path == root or path.startswith(root if root.endswith(os.sep) else root + os.sep)


def photo_id(value: int | str) -> int:
    """A catalog id from a request or a caller: ASCII digits (or an int) within the catalog's 64-bit range;
    NotServable for anything else (`²`, full-width or Arabic-Indic digits, signs, 10**23)."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _ID.fullmatch(value):
        number = int(value)
    else:
        raise NotServable("Photos are addressed by their number.")
    if not 1 <= number <= MAX_FILE_ID:
        raise NotServable(f"There is no photo {number} in the library.")
    return number


def indexed_photo(catalog: Catalog, file_id: int | str) -> Photo:
    """The indexed image file with this id, checked against its folder; NotServable otherwise."""
    file_id = photo_id(file_id)
    row = file_in_folder(catalog, file_id)
    if row is None:
        raise NotServable(f"There is no photo {file_id} in the library.")
    status, ext, fingerprint, root, online = row.status, row.ext, row.fingerprint, row.root, row.online
    if status != "ok" or (ext or "").lower() not in EXTENSIONS | VIDEO_EXTENSIONS:
        raise NotServable(f"Photo {file_id} was not indexed, so the app does not show it.")
    if not online:
        raise NotServable(f"Photo {file_id} lies in a folder that is offline.")
    # opened by its stored bytes: a name that is not UTF-8 is shown readably but lies on disk as it was
    real, real_root = os.path.realpath(row.disk_path), os.path.realpath(root)
    if not _inside(real, real_root) or not os.path.isfile(real):
        raise NotServable(f"Photo {file_id} is no longer in its library folder: index the folder again.")
    media_type = {**MEDIA_TYPES, **VIDEO_MEDIA_TYPES}.get(ext.lower(), "application/octet-stream")
    return Photo(file_id, Path(real), fingerprint or "", media_type)


def viewable(catalog: Catalog, file_id: int | str) -> tuple[Path, str]:
    """(file, media type) that shows the indexed photo in a browser: the file itself, or for a camera RAW
    a JPEG of its embedded preview (or its half-size demosaic), made once into the app's cache."""
    photo = indexed_photo(catalog, file_id)
    if not is_raw(photo.path):
        return photo.path, photo.media_type
    return _cached_jpeg(photo, PREVIEW_SIZE, None), "image/jpeg"  # any preview: its full size, once, cached


def library_file(catalog: Catalog, path: str | os.PathLike) -> Path:
    """A file the person named that lies inside one of their online library folders (after resolving
    symlinks and `..`); a sentence otherwise. For things read by path from the page, such as a captions
    CSV: the app reads only what lies in the library the person chose (or what they upload)."""
    text = os.path.expanduser(str(path or "").strip())
    if not text:
        raise CliplabError("Name a file first.")
    real = os.path.realpath(text)
    roots = online_roots(catalog)
    if not any(_inside(real, os.path.realpath(root)) for root in roots):
        raise CliplabError(f"{text} is not inside one of your library folders: upload the file, or add its folder "
                           "in Search → Library and indexing first.")
    if not os.path.isfile(real):
        raise CliplabError(f"{text} does not exist (or is not a file).")
    return Path(real)


def forget_thumbnails(catalog: Catalog) -> int:
    """Delete cached thumbnails of files the app no longer shows (a removed folder); returns how many."""
    shown = indexed_ids(catalog)
    removed = 0
    for thumb in thumbnails_dir().glob("*.jpg"):
        head = thumb.name.split("-", 1)[0]
        if not head.isdigit() or int(head) not in shown:
            thumb.unlink(missing_ok=True)
            removed += 1
    return removed


def thumbnails_dir() -> Path:
    """The app's own thumbnail cache (under the data directory); the only image folder the server is given."""
    return paths.cache_dir("thumbnails")


def thumbnail(catalog: Catalog, file_id: int | str, size: int = THUMBNAIL_SIZE, at: float | None = None) -> Path:
    """A JPEG of the photo at most `size` px on its long side, made once per content fingerprint; of a video,
    its first frame, or the frame at `at` seconds (a result's matching moment)."""
    if size not in THUMBNAIL_SIZES:
        raise NotServable(f"Thumbnails come in sizes {', '.join(map(str, THUMBNAIL_SIZES))}, not {size}.")
    return _cached_jpeg(indexed_photo(catalog, file_id), size, size, at)


def _cached_jpeg(photo: Photo, size: int, min_size: int | None, at: float | None = None) -> Path:
    """A JPEG of the photo at most `size` px on its long side in the app's cache (one per content); of a
    video, its first frame or the frame at `at` seconds."""
    video = is_video(photo.path.name)
    moment = f"-{round(at * 1000)}ms" if video and at is not None else ""
    target = thumbnails_dir() / f"{photo.file_id}-{photo.fingerprint[:16]}{moment}-{size}.jpg"
    if target.is_file():
        return target
    try:
        if video:
            image = frame_at(str(photo.path), at, size) if at is not None else poster(str(photo.path), size)
        else:
            image = load_image(photo.path, min_size=min_size)
    except (CliplabError, VideoError) as error:
        raise NotServable(f"Photo {photo.file_id} cannot be read any more ({error}).") from None
    image.thumbnail((size, size))
    # written beside the target and renamed: a reader never sees half a file
    handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            image.save(out, "JPEG", quality=85)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def thumbnails(catalog: Catalog, file_ids: list[int], size: int = THUMBNAIL_SIZE,
               moments: dict[int, float] | None = None) -> list[tuple[int, Path | None]]:
    """(id, thumbnail or None when it cannot be shown) per id, in order: one bad file never blanks a page.
    An id may be a video frame's vector id (labels and review list frames): its frame is shown.
    moments: a video's time to show (its best moment), by id."""
    out = []
    for item in file_ids:
        file_id, frame = split_vector_id(int(item))
        at = frame_time(catalog, file_id, frame) if frame else (moments or {}).get(item)
        try:
            out.append((item, thumbnail(catalog, file_id, size, at)))
        except NotServable:
            out.append((item, None))
    return out


def library_folder(catalog: Catalog, path: str | os.PathLike) -> Path:
    """A folder the person named that lies inside (or is) one of their online library folders, after
    resolving symlinks and `..` (an evaluation's image folder); a sentence otherwise."""
    text = os.path.expanduser(str(path or "").strip())
    if not text:
        raise CliplabError("Name a folder first.")
    real = os.path.realpath(text)
    if not any(_inside(real, os.path.realpath(root)) for root in online_roots(catalog)):
        raise CliplabError(f"{text} is not inside one of your library folders: add its folder in Search → Library "
                           "and indexing first.")
    if not os.path.isdir(real):
        raise CliplabError(f"{text} does not exist (or is not a folder).")
    return Path(real)
