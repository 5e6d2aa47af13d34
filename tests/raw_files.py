"""Camera RAW files for tests and benchmarks, written here since camera files cannot be downloaded:
DNGs (tifffile) with a Bayer mosaic, an optional embedded preview (a JPEG, as cameras embed, or an
uncompressed RGB one), an orientation and a capture time, which LibRaw (rawpy) reads like a camera's."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

# ColorMatrix1 (XYZ to camera) of a camera whose primaries are sRGB's, as SRATIONALs over 10000
XYZ_TO_CAMERA = tuple(v for row in ((32406, -15372, -4986), (-9689, 18758, 415), (557, -2040, 10570))
                      for n in row for v in (n, 10000))


def scene(width: int, height: int, seed: int = 0) -> np.ndarray:
    """An RGB picture with structure: a left half bright, a right half dark, a coloured square."""
    rng = np.random.default_rng(seed)
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[:, : width // 2] = (230, 220, 200)
    rgb[:, width // 2:] = (30, 40, 60)
    colour = rng.integers(0, 255, 3)
    rgb[height // 4: height // 2, width // 4: width // 2] = colour
    return rgb


def mosaic(rgb: np.ndarray, black: int = 64, white: int = 4095) -> np.ndarray:
    """An RGGB Bayer mosaic of an RGB picture, 12-bit."""
    linear = black + rgb.astype(np.float32) / 255.0 * (white - black)
    cfa = np.empty(rgb.shape[:2], np.float32)
    cfa[0::2, 0::2] = linear[0::2, 0::2, 0]
    cfa[0::2, 1::2] = linear[0::2, 1::2, 1]
    cfa[1::2, 0::2] = linear[1::2, 0::2, 1]
    cfa[1::2, 1::2] = linear[1::2, 1::2, 2]
    return cfa.astype(np.uint16)


def write_dng(path: str | Path, width: int = 512, height: int = 384, preview: str | None = "jpeg",
              preview_size: tuple[int, int] | None = None, orientation: int = 1,
              taken: str | None = "2024:05:06 07:08:09", seed: int = 0, model: str = "TestCam") -> Path:
    """A DNG of a `scene`: preview None | "jpeg" | "rgb" (at preview_size, default the full size);
    orientation: EXIF 1-8; taken: EXIF DateTimeOriginal (None: none)."""
    path = Path(path)
    rgb = scene(width, height, seed)
    common = [(50706, "B", 4, (1, 4, 0, 0), True), (50708, "s", 0, f"Cliplab {model}", True),
              (271, "s", 0, "Cliplab", True), (272, "s", 0, model, True), (274, "H", 1, orientation, True)]
    if taken is not None:
        common += [(306, "s", 0, taken, True), (36867, "s", 0, taken, True)]
    raw_tags = [(33421, "H", 2, (2, 2), True), (33422, "B", 4, (0, 1, 1, 2), True), (50714, "H", 1, 64, True),
                (50717, "H", 1, 4095, True), (50778, "H", 1, 21, True),
                (50721, "2i", 9, XYZ_TO_CAMERA, True), (50728, "2I", 3, (1, 1, 1, 1, 1, 1), True)]
    cfa = mosaic(rgb)
    with tifffile.TiffWriter(path) as tif:
        if preview is None:
            tif.write(cfa, photometric=32803, subfiletype=0, extratags=common + raw_tags)
            return path
        small = Image.fromarray(rgb).resize(preview_size or (width, height), Image.Resampling.BILINEAR)
        # the preview is written uncompressed; a JPEG one is then put in its place (below)
        tif.write(np.asarray(small), photometric="rgb", subfiletype=1, subifds=1, rowsperstrip=small.height,
                  extratags=common)
        tif.write(cfa, photometric=32803, subfiletype=0, extratags=raw_tags)
    if preview == "jpeg":
        _jpeg_preview(path, small)
    return path


def _jpeg_preview(path: Path, image: Image.Image) -> None:
    """Turn the first directory's uncompressed RGB strip into a camera-style JPEG preview (compression 7),
    in place: tifffile writes JPEG only through imagecodecs, which is not installed."""
    data = io.BytesIO()
    image.save(data, "JPEG", quality=90)
    jpeg = data.getvalue()
    with tifffile.TiffFile(path, mode="r+b") as tif:
        page = tif.pages.first
        offset = page.dataoffsets[0]
        assert len(jpeg) <= page.databytecounts[0], "a JPEG is smaller than the raw RGB it replaces"
        page.tags[279].overwrite(len(jpeg))  # StripByteCounts
        page.tags[259].overwrite(7)  # Compression: JPEG
        page.tags[262].overwrite(6)  # PhotometricInterpretation: YCbCr, as cameras write
        tif.filehandle.seek(offset)
        tif.filehandle.write(jpeg)
