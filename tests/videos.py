"""Videos made in the tests with PyAV: scenes (still pictures with a little noise) cut at known times,
any codec and container, optional display rotation, creation time and an audio track; and the broken
files a library meets (audio only, cut short, zero bytes, not a container at all)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image


def scene_images(specs: list[tuple[str, str]], size: int = 64, seed: int = 3) -> list[Image.Image]:
    """Distinct demo-world scenes: one large shape of a colour per (colour, shape)."""
    from cliplab.trainer.demo.world import World
    world, rng = World(seed=2, image_size=size, holdout=()), np.random.default_rng(seed)
    return [world.scene_sample(rng, colour=c, shape=s, count=1, size="large").image.convert("RGB")
            for c, s in specs]


def write_video(path: Path, scenes: list[tuple[Image.Image, float]], codec: str = "libx264", fps: int = 10,
                size: tuple[int, int] = (64, 48), rotation: int | None = None, created: str | None = None,
                audio: bool = False, noise: int = 6, seed: int = 0, gop: int | None = None) -> Path:
    """A video of each (picture, seconds) in turn, resized to size; rotation: the display matrix's
    counter-clockwise degrees (PyAV's set_display_rotation); created: creation_time metadata."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p" if codec != "mjpeg" else "yuvj420p"
        if gop is not None:
            stream.codec_context.gop_size = gop
        if rotation is not None:
            stream.set_display_rotation(rotation)
        if created is not None:
            container.metadata["creation_time"] = created
        sound = container.add_stream("aac", rate=16000) if audio else None
        for picture, seconds in scenes:
            base = np.asarray(picture.convert("RGB").resize(size), np.int16)
            for _ in range(max(1, round(seconds * fps))):
                pixels = np.clip(base + rng.integers(-noise, noise + 1, base.shape), 0, 255).astype(np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if sound is not None:
            _write_tone(container, sound, sum(s for _p, s in scenes))
    return path


def _write_tone(container, stream, seconds: float) -> None:
    rate = stream.codec_context.sample_rate
    samples = (0.2 * np.sin(np.arange(int(rate * seconds)) * 2 * np.pi * 440 / rate)).astype(np.float32)
    step = stream.codec_context.frame_size or 1024
    for start in range(0, len(samples) - step + 1, step):
        frame = av.AudioFrame.from_ndarray(samples[None, start:start + step], format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def write_audio_only(path: Path, seconds: float = 1.0) -> Path:
    with av.open(str(path), "w") as container:
        _write_tone(container, container.add_stream("aac", rate=16000), seconds)
    return path


def cut_short(source: Path, target: Path, keep: float) -> Path:
    """A copy of source with only its first `keep` share of bytes (a copy interrupted midway)."""
    data = source.read_bytes()
    target.write_bytes(data[:int(len(data) * keep)])
    return target
