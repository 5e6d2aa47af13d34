"""Cutting a moment out of a catalogued video: the one service behind `cliplab clip` and the app's
clip download.

A result names a video and a time range. The CLI takes what its search prints (`PATH  00:01:23-00:01:31
SCORE`, or `PATH:00:01:23-00:01:31`, or `@ID:00:01:23-00:01:31`); the app passes the file id and the
range of the result shown. Only catalogued, embedded videos inside an online library folder are cut
(the same check as the file route, app.services.serving.indexed_photo). By default the streams are
copied without re-encoding from the keyframe at or before the start (engine.video.cut); `precise`
re-encodes the video from exactly the start.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cliplab.engine.errors import CliplabError
from cliplab.engine.video import Clip, VideoError, cut, is_video
from cliplab.indexes.catalog import Catalog
from cliplab.indexes.library import file_id_of
from cliplab.indexes.search import clock, file_of
from cliplab.indexes.video import video_facts

__all__ = ["Clip", "Moment", "clip_for_app", "clock", "export_clip", "parse_moment"]

_TIME = r"\d+:\d{2}:\d{2}(?:\.\d+)?"
_PRINTED = re.compile(rf"^(?P<what>.+?)\s{{2,}}(?P<start>{_TIME})-(?P<end>{_TIME})(?:\s{{2,}}.*)?$", re.S)
_JOINED = re.compile(rf"^(?P<what>.+):(?P<start>{_TIME})-(?P<end>{_TIME})$", re.S)


@dataclass(frozen=True)
class Moment:
    what: str  # a path, or @id
    start: float
    end: float


def _seconds(text: str) -> float:
    hours, minutes, seconds = text.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def parse_moment(text: str) -> Moment:
    """A result as search prints it (see the module docstring); a sentence when it is none."""
    text = (text or "").strip()
    match = _PRINTED.match(text) or _JOINED.match(text)
    if match is None:
        raise CliplabError(f"{text!r} is not a search result with a time range: give it as search prints it, e.g. "
                           "'clip.mp4  00:01:23-00:01:31', or as PATH:00:01:23-00:01:31 or @ID:00:01:23-00:01:31.")
    start, end = _seconds(match["start"]), _seconds(match["end"])
    if end <= start:
        raise CliplabError(f"The range {match['start']}-{match['end']} ends before it starts: give the start first.")
    return Moment(match["what"].strip(), start, end)


def _video_id(catalog: Catalog, what: str) -> int:
    if re.fullmatch(r"@\d{1,19}", what):
        return int(file_of(int(what[1:])))
    file_id = file_id_of(catalog, os.path.abspath(os.path.expanduser(what)))
    if file_id is None:
        raise CliplabError(f"{what} is not a video of the library: give a video that search returned.")
    return file_id


def export_clip(catalog: Catalog, moment: Moment, target: str | os.PathLike, precise: bool = False) -> Clip:
    """Write moment's range of its catalogued video to target (.mp4, .mkv, .mov...)."""
    from cliplab.app.services.serving import NotServable, indexed_photo
    file_id = _video_id(catalog, moment.what)
    facts = video_facts(catalog, file_id)
    if facts is None:
        raise CliplabError(f"{moment.what} is not an indexed video of the library: give a video that search returned.")
    try:
        source = indexed_photo(catalog, file_id).path  # inside its online folder, still there
    except NotServable as error:
        raise CliplabError(str(error)) from None
    duration = facts[1]
    if moment.start >= duration:
        raise CliplabError(f"The video is {clock(duration)} long: the range {clock(moment.start)}-{clock(moment.end)} "
                           "starts after its end.")
    target = Path(target).expanduser()
    if not is_video(target.name):
        raise CliplabError(f"Cannot write a clip to {target.name}: name it .mp4 (or .mkv, .mov, .webm).")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        return cut(str(source), moment.start, min(moment.end, duration), str(target), precise=precise)
    except VideoError as error:
        raise CliplabError(f"Cannot cut {Path(source).name}: {error.reason}.") from None


def clip_for_app(catalog: Catalog, file_id: int, start: float, end: float, precise: bool = False) -> Path:
    """The clip as a new file in the temporary folder (the app hands it over as a download):
    name-of-video_00-01-23_00-01-31.mp4."""
    facts = video_facts(catalog, file_id)
    if facts is None:
        raise CliplabError("This result is not an indexed video: pick a video result.")
    folder = Path(tempfile.mkdtemp(prefix="cliplab-clip-"))
    stem = Path(facts[0]).stem
    name = f"{stem}_{clock(start).replace(':', '-')}_{clock(end).replace(':', '-')}{'_precise' if precise else ''}.mp4"
    return Path(export_clip(catalog, Moment(f"@{file_id}", start, end), folder / name, precise).path)
