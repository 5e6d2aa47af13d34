"""Camera RAW files (CR2, CR3, NEF, ARW, DNG, RAF, ORF, RW2, PEF, SRW) through rawpy (LibRaw).

A RAW is read through its embedded preview when the preview's shorter side is at least the size the
caller needs (the model's input size), else through a half-size demosaic: cameras embed a full-size
JPEG in nearly every RAW, and decoding it is several times faster than demosaicing the sensor data
(docs/benchmarks.md). Orientation and capture time come from the RAW's own metadata (LibRaw's `flip`
and timestamp). engine.images.load_image and image_info hand a RAW file here, so the indexer, query
images and the app's thumbnails read RAW files like any other photo; failures are ImageLoadErrors
with a reason ("corrupt", "truncated", "unsupported camera", ...), recorded as skips by the indexer.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image

RAW_EXTENSIONS = frozenset({"cr2", "cr3", "nef", "arw", "dng", "raf", "orf", "rw2", "pef", "srw"})

# LibRaw's flip (dcraw's: bit 1 mirror, 2 upside down, 4 transpose) as an EXIF orientation, and the
# PIL transposition that shows an EXIF orientation upright (as ImageOps.exif_transpose does)
_FLIP_TO_EXIF = {0: 1, 1: 2, 3: 3, 2: 4, 4: 5, 6: 6, 7: 7, 5: 8}
_EXIF_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                   4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
                   7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}
_EPOCH_GUARD = datetime(1980, 1, 2)  # LibRaw reports a RAW without a capture time as the epoch


def is_raw(path: str | os.PathLike) -> bool:
    """A camera RAW file, by its extension (any case)."""
    return Path(path).suffix.lower().lstrip(".") in RAW_EXTENSIONS


@dataclass(frozen=True)
class RawInfo:
    width: int  # as displayed (orientation applied), of the full sensor image
    height: int
    orientation: int  # EXIF style, 1-8
    taken_at: datetime | None
    camera_model: str | None


def _error(name: str, reason: str, detail: str):
    from cliplab.engine.images import ImageLoadError
    return ImageLoadError(f"Cannot read {name}: {detail}", reason, name)


def _open(path: str | os.PathLike):
    """rawpy's RawPy for a file, every LibRaw failure mapped to an ImageLoadError with a reason."""
    import rawpy
    name = str(path)
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise _error(name, "not found", "the file does not exist.") from None
    except OSError as error:
        raise _error(name, "unreadable", f"the file cannot be opened ({error.strerror}).") from None
    if size == 0:
        raise _error(name, "empty file", "the file is empty (0 bytes).")
    try:
        return rawpy.imread(os.fspath(path))
    except rawpy.LibRawFileUnsupportedError:
        damage = _tiff_damage(path, size)
        if damage is not None:
            raise _error(name, "truncated" if "beyond" in damage else "corrupt", f"its structure is damaged ({damage}): "
                         "the file is incomplete, still being copied, or broken.") from None
        raise _error(name, "unsupported camera", "LibRaw does not recognise this RAW file: its camera or format is "
                                                 "not supported (or the file is not a RAW at all).") from None
    except (rawpy.LibRawIOError, rawpy.LibRawDataError, rawpy.LibRawTooBigError) as error:
        raise _error(name, "corrupt", f"the RAW data is damaged or cut short ({error}).") from None
    except (rawpy.LibRawError, OSError) as error:
        raise _error(name, "corrupt", f"LibRaw cannot read it ({type(error).__name__}: {error}).") from None


def _tiff_damage(path: str | os.PathLike, size: int) -> str | None:
    """Why a TIFF-based RAW (CR2, NEF, ARW, DNG, ...) that LibRaw refused is damaged rather than of an
    unknown camera: its directories or image data lie beyond the end of the file, or cannot be parsed.
    None for a sound TIFF and for formats that are not TIFF (CR3, RAF: their damage cannot be told)."""
    with open(path, "rb") as f:
        if f.read(4) not in (b"II*\x00", b"MM\x00*"):
            return None
    try:
        import tifffile
        with tifffile.TiffFile(path) as tif:
            for page in tif.pages:
                ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts)] + list(page.subifds or ())
                if any(end > size for end in ends):  # its image data, or the directory of its sensor data
                    return f"data beyond its end ({size:,} bytes)"
    except Exception as error:  # noqa: BLE001 - any parse failure of the structure is damage
        return f"{type(error).__name__}: {error}"
    return None


def _camera_model(path: str | os.PathLike) -> str | None:
    """The Model tag of a TIFF-based RAW's first directory (CR2, NEF, ARW, DNG, ORF, PEF, SRW); None otherwise."""
    try:
        import tifffile
        with tifffile.TiffFile(path) as tif:
            tag = tif.pages.first.tags.get(272)
            value = tag.value if tag is not None else None
    except Exception:  # noqa: BLE001 - not TIFF-based (CR3, RAF, RW2) or damaged: the model is optional
        return None
    return value.strip("\x00 ") or None if isinstance(value, str) else None


def _info(raw, path: str | os.PathLike) -> RawInfo:
    sizes = raw.sizes
    orientation = _FLIP_TO_EXIF.get(int(sizes.flip), 1)
    width, height = int(sizes.width), int(sizes.height)
    if orientation >= 5:
        width, height = height, width
    try:
        taken = raw.other.timestamp
    except Exception:  # noqa: BLE001 - an out-of-range timestamp: no capture time
        taken = None
    if not isinstance(taken, datetime) or taken < _EPOCH_GUARD:
        taken = None
    return RawInfo(width, height, orientation, taken, _camera_model(path))


def raw_info(path: str | os.PathLike) -> dict[str, Any]:
    """Header facts of a RAW, as engine.images.image_info gives them for other files."""
    with _open(path) as raw:
        info = _info(raw, path)
    return {"width": info.width, "height": info.height, "format": "RAW", "mode": "RGB",
            "orientation": info.orientation, "taken_at": info.taken_at, "camera_model": info.camera_model}


def _preview(raw, name: str, min_size: int | None, orientation: int) -> Image.Image | None:
    """The embedded preview, upright, when it is large enough (None: missing, tiny or unreadable)."""
    import rawpy
    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawError, OSError):  # no preview, or a damaged one: demosaic instead
        return None
    from cliplab.engine.images import ImageLoadError, load_image
    try:
        if thumb.format == rawpy.ThumbFormat.JPEG:
            image = load_image(io.BytesIO(thumb.data), min_size=min_size)
            # a camera's preview JPEG rarely carries its own orientation; when it does, load_image applied it
            own = _jpeg_orientation(thumb.data)
        else:
            image, own = Image.fromarray(thumb.data).convert("RGB"), 1
    except (ImageLoadError, ValueError, TypeError):
        return None
    if own == 1 and orientation in _EXIF_TRANSPOSE:
        image = image.transpose(_EXIF_TRANSPOSE[orientation])
    if min_size and min(image.size) < min_size:
        return None
    return image


def _jpeg_orientation(data: bytes) -> int:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return int(image.getexif().get(274, 1) or 1)
    except Exception:  # noqa: BLE001 - no usable EXIF: none of its own
        return 1


def _demosaic(raw, name: str) -> Image.Image:
    """Half-size demosaic (each 2x2 Bayer cell becomes one pixel: no interpolation, 4x fewer pixels)."""
    import rawpy

    from cliplab.engine.images import _too_large, max_pixels
    sizes = raw.sizes
    pixels = (sizes.width // 2) * (sizes.height // 2)
    if pixels > max_pixels():
        raise _too_large(name, f"is {sizes.width}x{sizes.height} pixels, {pixels / 1e6:.1f} megapixels at the half size "
                               "it is read at", max_pixels())
    try:
        rgb = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)  # LibRaw applies the flip
    except rawpy.LibRawFileUnsupportedError:
        raise _error(name, "unsupported camera", "LibRaw cannot decode this camera's sensor data, and the file "
                                                 "has no usable embedded preview.") from None
    except (rawpy.LibRawError, OSError, MemoryError) as error:
        raise _error(name, "corrupt", f"its sensor data is damaged or cut short, and it has no usable embedded "
                                      f"preview ({type(error).__name__}: {error}).") from None
    return Image.fromarray(rgb, "RGB")


def load_raw(path: str | os.PathLike, min_size: int | None = None, use_preview: bool = True) -> Image.Image:
    """A RAW as an upright RGB image: its embedded preview when the preview's shorter side is at least
    min_size (any preview when min_size is None), else a half-size demosaic (always, with
    use_preview=False: the benchmarks' comparison)."""
    name = str(path)
    with _open(path) as raw:
        orientation = _FLIP_TO_EXIF.get(int(raw.sizes.flip), 1)
        image = _preview(raw, name, min_size, orientation) if use_preview else None
        return image if image is not None else _demosaic(raw, name)


def read_mode(path: str | os.PathLike, min_size: int | None) -> str:
    """"preview" or "demosaic": how load_raw reads this file at min_size (benchmarks, tests)."""
    name = str(path)
    with _open(path) as raw:
        preview = _preview(raw, name, min_size, _FLIP_TO_EXIF.get(int(raw.sizes.flip), 1))
    return "preview" if preview is not None else "demosaic"
