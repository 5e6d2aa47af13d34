"""Reading videos for the library: the container's facts, and the frames worth embedding.

Frames are chosen by scene change plus a maximum interval, streaming (one decoded frame at a time,
so memory stays flat in the video's length):

- the video is sampled every `sample_step` seconds (4 per second by default); each sample is shrunk
  in FFmpeg's scaler to a 16x16 RGB signature, and the mean absolute difference between consecutive
  signatures (0..1) is the change measure;
- a sample whose change from the previous sample exceeds `cut` starts a new shot: it is chosen, so a
  fast sequence of cuts keeps every shot that lasts one sample step;
- otherwise a frame is chosen once `max_interval` seconds passed since the last chosen frame, unless
  the picture barely moved since that frame (signature difference below `still`): then only after
  `still_interval`, so a static two-hour video gives ~240 frames, not 7,000.

Measured on the tests' generated videos and the benchmark's (benchmarks/library.py, docs/benchmarks.md):
the signature difference of a cut between two demo-world scenes is 0.14-0.34, of consecutive samples
of one shot (noise, slow motion) below 0.03; FFmpeg's own `scdet` filter scores the same cuts but
reads every frame at full size, several times the cost of 4 small signatures per second.

Decoding cost: the codec's own threads decode (thread_type AUTO), at a half, a quarter or an eighth of
the size where the decoder can (FFmpeg's `lowres`: MJPEG, MPEG-2, MPEG-4 part 2, as old cameras
record) and the frames stay at least the model's size; from 16 frames a second, frames that no other
frame refers to (most B-frames) are skipped by the decoder (skip_frame NONREF: 1.5-1.8x faster on the
benchmark's H.264, and the frames left stay under a sample step apart); a frame that is not a sample is
decoded (later frames may need it) but never converted; samples are converted only to their 16x16
signature, and chosen frames to RGB at about the model's size, both in FFmpeg's scaler, never at full
size. The display rotation (the container's display matrix) is applied to every chosen frame.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from PIL import Image

from cliplab.engine.errors import CliplabError
from cliplab.engine.images import Preprocess

VIDEO_EXTENSIONS = frozenset({"mp4", "mov", "m4v", "mkv", "webm", "avi", "3gp", "mts"})
MEDIA_TYPES = {"mp4": "video/mp4", "m4v": "video/mp4", "mov": "video/quicktime", "mkv": "video/x-matroska",
               "webm": "video/webm", "avi": "video/x-msvideo", "3gp": "video/3gpp", "mts": "video/mp2t"}
NONREF_FPS = 16  # from this frame rate, dropping non-reference frames leaves gaps under a sample step
SIGNATURE = 16  # side of the RGB signature a sample is shrunk to for the change measure


class VideoError(CliplabError):
    """A video that cannot be indexed; reason starts with a short kind ("corrupt", "no video stream", ...)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def is_video(path: str) -> bool:
    return path.rpartition(".")[2].lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class FrameChoice:
    """How frames are chosen (see the module docstring); times in seconds, differences in 0..1."""
    sample_step: float = 0.25
    max_interval: float = 4.0
    still_interval: float = 30.0
    cut: float = 0.08
    still: float = 0.02


@dataclass(frozen=True)
class VideoInfo:
    duration: float  # seconds
    fps: float | None
    width: int  # as displayed (rotation applied)
    height: int
    rotation: int  # degrees clockwise applied for display (0, 90, 180, 270)
    captured_at: datetime | None  # local wall-clock time, like a photo's EXIF time
    codec: str
    reduced: int = 0  # the decoder's own downscaling used: frames decoded at 1/2**reduced of the size


@dataclass(frozen=True)
class Frame:
    time: float  # seconds from the video's start
    image: Image.Image  # RGB, rotated for display, shorter side about min_size


def _open(path: str):
    import av
    try:
        container = av.open(path, metadata_errors="ignore")
    except av.error.InvalidDataError as error:
        raise VideoError(f"corrupt: not a readable video container ({error.strerror or error})") from None
    except av.error.FFmpegError as error:
        raise VideoError(f"corrupt: cannot open the video ({error.strerror or error})") from None
    if not container.streams.video:
        container.close()
        raise VideoError("no video stream: the file holds no pictures (audio or data only)")
    if container.streams.video[0].codec_context is None:  # FFmpeg has no decoder for it
        container.close()
        raise VideoError("unknown codec: this FFmpeg cannot decode the file's video stream")
    return container


def capture_time(metadata: dict) -> datetime | None:
    """When the video was shot, from the container: Apple's local `com.apple.quicktime.creationdate`
    (wall-clock time with its offset), else `creation_time` (UTC, turned into this machine's local
    time, as photo dates are local); None when absent or the muxer's zero date."""
    for key, utc in (("com.apple.quicktime.creationdate", False), ("creation_time", True)):
        text = metadata.get(key)
        if not text:
            continue
        try:
            moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            continue
        if moment.year <= 1970:
            continue
        if moment.tzinfo is not None:
            moment = moment.astimezone() if utc else moment
            moment = moment.replace(tzinfo=None)
        elif utc:
            moment = moment.replace(tzinfo=UTC).astimezone().replace(tzinfo=None)
        return moment
    return None


def _duration(container, stream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return 0.0


def _info(container, stream, rotation: int, size: tuple[int, int], reduced: int) -> VideoInfo:
    ctx = stream.codec_context
    width, height = size
    if rotation in (90, 270):
        width, height = height, width
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else None
    metadata = {**(container.metadata or {}), **(stream.metadata or {})}
    return VideoInfo(_duration(container, stream), fps, width, height, rotation, capture_time(metadata),
                     ctx.name, reduced)


def _signature(scaler, frame) -> np.ndarray:
    small = scaler.reformat(frame, width=SIGNATURE, height=SIGNATURE, format="rgb24", interpolation="AREA")
    return small.to_ndarray().astype(np.float32) / 255.0


def _picture(scaler, frame, rotation: int, min_size: int) -> Image.Image:
    """The frame as RGB at about min_size on its shorter side (scaled in FFmpeg, never converted at full
    size), turned for display."""
    width, height = frame.width, frame.height
    scale = min(1.0, min_size / max(1, min(width, height)))
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    image = scaler.reformat(frame, width=w, height=h, format="rgb24", interpolation="AREA").to_image()
    return image.rotate(-rotation, expand=True) if rotation else image


class Chooser:
    """The frame choice of the module docstring, fed one sample at a time (kept apart from decoding so
    the benchmark and tests measure it alone)."""

    def __init__(self, choice: FrameChoice) -> None:
        self.choice = choice
        self.previous: np.ndarray | None = None
        self.chosen: np.ndarray | None = None
        self.chosen_at = -math.inf

    def offer(self, time: float, signature: np.ndarray) -> bool:
        c = self.choice
        change = 1.0 if self.previous is None else float(np.abs(signature - self.previous).mean())
        self.previous = signature
        since = time - self.chosen_at
        moved = 1.0 if self.chosen is None else float(np.abs(signature - self.chosen).mean())
        take = change > c.cut or since >= c.still_interval or (since >= c.max_interval and moved >= c.still)
        if take:
            self.chosen, self.chosen_at = signature, time
        return take


def _reduce(context, short_side: int, min_size: int) -> None:
    """Ask the decoder to decode at 1/2, 1/4 or 1/8 of the size when the frames stay at least min_size on
    their shorter side (FFmpeg's `lowres`: MJPEG, MPEG-1/2, MPEG-4 part 2 and other DCT decoders do it
    while decoding, at a fraction of the cost; H.264, HEVC and VP9 decoders ignore it)."""
    level = 0
    while level < 3 and short_side >> (level + 1) >= min_size:
        level += 1
    if level:
        context.options = {**context.options, "lowres": str(level)}


def chosen_frames(path: str, min_size: int, choice: FrameChoice = FrameChoice(),
                  info_out: list | None = None) -> Iterator[Frame]:
    """The chosen frames of the video at path, in time order (a generator: one decoded frame held at a
    time). info_out, when given, receives the VideoInfo first. VideoError for what cannot be read."""
    import av
    from av.video.reformatter import VideoReformatter
    container = _open(path)
    # one scaler per size: FFmpeg's scaling context is built once, not for every sample (measured 4-6x
    # the decoding time otherwise, benchmarks/library.py --only video)
    signatures, pictures = VideoReformatter(), VideoReformatter()
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        size = (stream.codec_context.width, stream.codec_context.height)
        _reduce(stream.codec_context, min(size), min_size)
        rate = stream.average_rate or stream.guessed_rate
        if rate and float(rate) >= NONREF_FPS:
            # frames no other frame refers to (most B-frames) are not decoded at all: at this rate the
            # frames left are still closer together than a sample step
            stream.codec_context.skip_frame = "NONREF"
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        chooser, next_sample, info, taken = Chooser(choice), 0.0, None, 0
        try:
            for frame in container.decode(stream):
                if info is None:
                    reduced = round(math.log2(max(1, size[0]) / max(1, frame.width)))
                    info = _info(container, stream, (-int(frame.rotation or 0)) % 360, size, reduced)
                    if info_out is not None:
                        info_out.append(info)
                time = max(0.0, float(frame.time if frame.time is not None else 0.0) - start)
                if time + 1e-6 < next_sample:
                    continue
                next_sample = (math.floor(time / choice.sample_step + 1e-6) + 1) * choice.sample_step  # a fixed grid
                if chooser.offer(time, _signature(signatures, frame)):
                    taken += 1
                    yield Frame(time, _picture(pictures, frame, info.rotation, min_size))
        except av.error.FFmpegError as error:
            if not taken:
                raise VideoError(f"corrupt: cannot decode the video ({error.strerror or error})") from None
            # a truncated file: the frames before the damage are kept (as a cut-short JPEG's are)
        if not taken:
            raise VideoError("corrupt: no picture could be decoded from the video stream")
    finally:
        container.close()


def poster(path: str, min_size: int) -> Image.Image:
    """The video's first frame (its first chosen one), RGB, turned for display: its thumbnail."""
    frames = chosen_frames(path, min_size)
    try:
        return next(frames).image
    finally:
        frames.close()


def frame_at(path: str, seconds: float, min_size: int) -> Image.Image:
    """The frame shown at `seconds` (the first at or after it), RGB at about min_size, turned for display:
    a video result's thumbnail of its matching moment."""
    from av.video.reformatter import VideoReformatter
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        _seek(container, stream, seconds)
        last = None
        for frame in container.decode(stream):
            last = frame
            if float(frame.time or 0.0) - _offset(stream) >= seconds - 1e-3:
                break
        if last is None:
            raise VideoError("corrupt: no picture could be decoded at that time")
        return _picture(VideoReformatter(), last, (-int(last.rotation or 0)) % 360, min_size)
    finally:
        container.close()


def decode_worker(path: str, preprocess: Preprocess, choice: FrameChoice, out) -> None:
    """In the decoding process: ("info", VideoInfo), then ("frame", seconds, pixels) per chosen frame,
    then ("end",) — or ("skip", reason) at the first problem (the path is added by the receiver)."""
    import torch
    torch.set_num_threads(1)  # the main process encodes; this one only decodes and preprocesses
    info: list[VideoInfo] = []
    try:
        min_size = max(preprocess.resolution, preprocess.resize_size)
        for n, frame in enumerate(chosen_frames(path, min_size, choice, info_out=info)):
            if n == 0:
                out.put(("info", info[0]))
            out.put(("frame", frame.time, preprocess(frame.image).numpy()))
        out.put(("end",))
    except VideoError as error:
        out.put(("skip", error.reason))
    except MemoryError:
        out.put(("skip", "too large: out of memory while decoding the video"))
    except Exception as error:  # noqa: BLE001 - any decoder failure is a recorded skip, never a crash
        out.put(("skip", f"corrupt: cannot decode the video ({type(error).__name__}: {error})"))


@dataclass(frozen=True)
class Clip:
    path: str
    start: float  # where the clip really starts in the source (a keyframe at or before the asked start
    end: float  # when stream-copied), and ends
    copied: bool  # stream copy (no re-encoding) or re-encoded


def cut(source: str, start: float, end: float, target: str, precise: bool = False) -> Clip:
    """Write source's [start, end) seconds to target (its container from its suffix). By default the
    streams are copied without re-encoding, starting at the keyframe at or before start (a player
    can only start there); precise re-encodes the video (H.264, or MPEG-4 part 2 where the container
    cannot hold it) from exactly start to end, without the sound. VideoError when it cannot be done."""
    if not end > start >= 0:
        raise VideoError(f"the clip's end ({end:g} s) must come after its start ({start:g} s)")
    container = _open(source)
    try:
        return (_reencode if precise else _copy)(container, start, end, target)
    except VideoError:
        raise
    except Exception as error:  # noqa: BLE001 - FFmpeg's refusals (a codec the container cannot hold, ...)
        raise VideoError(f"cannot write the clip ({type(error).__name__}: {error})") from None
    finally:
        container.close()


def _seek(container, stream, start: float) -> None:
    offset = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    container.seek(max(0, int((start + offset) / stream.time_base)), stream=stream, backward=True)


def _copy(container, start: float, end: float, target: str) -> Clip:
    import av
    video = container.streams.video[0]
    keep = [video, *container.streams.audio[:1]]
    offset = _offset(video)
    stop = end + offset
    with av.open(target, "w") as out:
        mapped = {s.index: out.add_stream_from_template(s) for s in keep}
        _seek(container, video, start)
        origin, last = None, None
        for packet in container.demux(keep):
            if packet.dts is None or packet.pts is None:
                continue
            seconds = float(packet.pts * packet.time_base)
            if packet.stream is video:
                if origin is None and not packet.is_keyframe:
                    continue  # a copy can only start at a keyframe
                origin = seconds if origin is None else origin
                if seconds >= stop:
                    if packet.is_keyframe or seconds >= stop + 1:  # past the end (B-frames come out of order)
                        break
                    continue
                last = seconds if last is None else max(last, seconds)
            if origin is None or not origin <= seconds < stop:
                continue
            shift = int(origin / packet.time_base)
            packet.pts -= shift
            packet.dts -= shift
            packet.stream = mapped[packet.stream.index]
            out.mux(packet)
    if origin is None:
        raise VideoError(f"no keyframe was found between {start:g} s and {end:g} s")
    frame = 1 / float(video.average_rate or 25)
    return Clip(target, origin - offset, min(end, last - offset + frame), True)


def _offset(stream) -> float:
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def _reencode(container, start: float, end: float, target: str) -> Clip:
    import av
    video = container.streams.video[0]
    video.thread_type = "AUTO"
    rate = video.average_rate or video.guessed_rate or 25
    with av.open(target, "w") as out:
        codec = "libx264" if "h264" in (out.supported_codecs or {"h264"}) else "mpeg4"
        stream = out.add_stream(codec, rate=rate)
        stream.pix_fmt = "yuv420p"
        _seek(container, video, start)
        written, rotation = 0, 0
        for frame in container.decode(video):
            seconds = float(frame.time or 0.0) - _offset(video)
            if seconds < start - 1e-6:
                continue
            if seconds >= end - 1e-6:
                break
            if not written:
                rotation = (-int(frame.rotation or 0)) % 360
                stream.width, stream.height = (frame.height, frame.width) if rotation in (90, 270) else (frame.width, frame.height)
                stream.width, stream.height = stream.width // 2 * 2, stream.height // 2 * 2
            picture = frame.to_image()
            picture = picture.rotate(-rotation, expand=True) if rotation else picture
            picture = picture.crop((0, 0, stream.width, stream.height))
            new = av.VideoFrame.from_image(picture)
            new.pts = written
            new.time_base = 1 / rate
            for packet in stream.encode(new):
                out.mux(packet)
            written += 1
        for packet in stream.encode():
            out.mux(packet)
    if not written:
        raise VideoError(f"the video has no frame between {start:g} s and {end:g} s")
    return Clip(target, start, start + written / float(rate), False)
