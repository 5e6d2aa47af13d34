"""Reading image files into RGB and the reference CLIP preprocessing, with PIL + numpy + torch only.

`load_image` turns any file a photo folder may hold into an RGB PIL image or an `ImageLoadError`
with a short `.reason`, so an indexer can record the file as skipped and go on. `Preprocess(r)`
reproduces the reference transform (torchvision Resize(r, BICUBIC), CenterCrop(r), RGB, ToTensor,
Normalize) call for call on PIL, so its output is identical to the reference's. A model's own
Preprocess comes from engine.load (the release's preprocessing); nothing else should build one.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import struct
import warnings
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from cliplab.engine.errors import CliplabError
from cliplab.engine.raw import is_raw, load_raw, raw_info

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)

# The most pixels one image may decode to, by default Pillow's own (~89.5 MP): a guard against
# decompression bombs (a few KB of PNG, TIFF or GIF that inflate to gigabytes). JPEGs are checked at
# the size they are decoded to, after draft mode's DCT scaling (1/2 .. 1/8), so a 102 MP camera photo
# read for a model decodes to ~1.6 MP and passes. A person raises the limit with max_pixels(),
# set_max_pixels() (the app's Settings), or CLIPLAB_MAX_PIXELS, which wins over both.
DEFAULT_MAX_PIXELS = 89_478_485
MAX_PIXELS_ENV = "CLIPLAB_MAX_PIXELS"
SETTINGS_FILE = "settings.json"  # in the data folder; the pixel limit is its "max_pixels"

ImageSource = str | os.PathLike | bytes | bytearray | memoryview | IO[bytes]

# Signatures of formats Pillow reads: a file that starts like one but cannot be opened is damaged,
# not "something else".
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"II*\x00", b"MM\x00*", b"BM", b"RIFF")


class ImageLoadError(CliplabError):
    """A file that cannot be read as an image. `.reason` is a short machine-friendly string:
    "not found", "unreadable", "empty file", "not an image", "truncated", "corrupt", "too large"
    or "unsupported mode"; `str(error)` is a sentence naming the file."""

    def __init__(self, message: str, reason: str = "unreadable", name: str | None = None):
        super().__init__(message)
        self.reason = reason
        self.name = name

    def __reduce__(self):  # keep reason and name across processes (DataLoader and pool workers)
        return type(self), (str(self), self.reason, self.name)


def _fail(name: str, reason: str, detail: str) -> ImageLoadError:
    return ImageLoadError(f"Cannot read {name}: {detail}", reason, name)


_INTERPOLATIONS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
RESIZE_MODES = ("shortest", "squash", "longest")


class Preprocess:
    """The CLIP image transform: PIL image (any mode) -> float32 tensor [3, r, r].

    Defaults are the reference's: the same PIL calls in the same order as torchvision's Resize(r, BICUBIC)
    + CenterCrop(r) + convert("RGB") + ToTensor + Normalize(MEAN, STD), including torchvision's size
    arithmetic (`int(r * long / short)`) and crop offsets (`int(round(...))`, i.e. round half to even),
    so the output is bit-identical to the reference. A release may say otherwise (open_clip's
    preprocess_cfg, a Hugging Face preprocessor_config.json): mean/std; interpolation bicubic or bilinear;
    resize_mode "shortest" (the reference), "squash" (resize both sides to r, no crop: DFN) or "longest"
    (the longer side to r, then pad with black to r x r); resize_size: the shorter side's size before the
    r x r center crop in "shortest" mode (Hugging Face's size.shortest_edge, e.g. 256 before a 224 crop;
    default r). Picklable (DataLoader and decode workers receive the model's own)."""

    def __init__(self, resolution: int, mean: tuple[float, ...] = MEAN, std: tuple[float, ...] = STD,
                 resize_mode: str = "shortest", interpolation: str = "bicubic", resize_size: int | None = None):
        if resize_mode not in RESIZE_MODES:
            raise CliplabError(f"Unknown resize mode {resize_mode!r}: use one of {', '.join(RESIZE_MODES)}.")
        if interpolation not in _INTERPOLATIONS:
            raise CliplabError(f"Unknown interpolation {interpolation!r}: use bicubic or bilinear.")
        self.resolution = int(resolution)
        self.resize_size = int(resize_size) if resize_size else self.resolution
        if self.resize_size < self.resolution:
            raise CliplabError(f"The resize size {self.resize_size} is smaller than the crop size {self.resolution}: "
                               "the shorter side must be resized to at least the crop.")
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        self.resize_mode, self.interpolation = resize_mode, interpolation
        self._mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)

    def __repr__(self) -> str:
        options = "" if self.is_reference else "".join(f", {k}={v!r}" for k, v in self.options().items())
        return f"Preprocess(resolution={self.resolution}{options})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Preprocess) and self.record() == other.record()

    def __hash__(self) -> int:
        return hash(self.record())

    @property
    def is_reference(self) -> bool:
        return ((self.mean, self.std, self.resize_mode, self.interpolation, self.resize_size)
                == (MEAN, STD, "shortest", "bicubic", self.resolution))

    def options(self) -> dict:
        """The constructor options besides the resolution (what a model's config.json records)."""
        options = {"mean": list(self.mean), "std": list(self.std), "resize_mode": self.resize_mode,
                   "interpolation": self.interpolation}
        if self.resize_size != self.resolution:
            options["resize_size"] = self.resize_size
        return options

    def record(self) -> str:
        """Everything that decides the pixels, as one canonical string (what the catalog records per
        model, so that vectors made under other preprocessing are never mixed with these)."""
        return json.dumps({"resolution": self.resolution, **self.options()}, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_record(cls, record: str) -> Preprocess:
        options = json.loads(record)
        return cls(options.pop("resolution"), **options)

    def resize_and_crop(self, image: Image.Image) -> Image.Image:
        """The geometric part only: resize (and crop or pad) to r x r, then RGB."""
        r = self.resolution
        resample = _INTERPOLATIONS[self.interpolation]
        width, height = image.size
        if self.resize_mode == "squash":
            return (image if (width, height) == (r, r) else image.resize((r, r), resample)).convert("RGB")
        if self.resize_mode == "longest":
            # open_clip's ResizeKeepRatio(longest=1) then CenterCropOrPad with black. In RGB first: a
            # palette image pasted on a black palette canvas would take the palette's colour 0 as "black".
            image = image.convert("RGB")
            ratio = max(width, height) / r
            size = (round(width / ratio), round(height / ratio))
            if size != (width, height):
                image = image.resize(size, resample)
            canvas = Image.new("RGB", (r, r), 0)
            canvas.paste(image, ((r - size[0]) // 2, (r - size[1]) // 2))
            return canvas
        s = self.resize_size
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = s, int(s * long / short)
        size = (new_short, new_long) if width <= height else (new_long, new_short)
        if size != (width, height):
            image = image.resize(size, resample)
        # After the resize both sides are >= s >= r, so torchvision's padding branch never applies.
        left = int(round((size[0] - r) / 2.0))
        top = int(round((size[1] - r) / 2.0))
        return image.crop((left, top, left + r, top + r)).convert("RGB")

    def __call__(self, image: Image.Image) -> torch.Tensor:
        pixels = torch.from_numpy(np.array(self.resize_and_crop(image), dtype=np.uint8))
        tensor = pixels.permute(2, 0, 1).contiguous().to(torch.float32).div(255)
        return tensor.sub_(self._mean).div_(self._std)


@cache
def _register_heif() -> None:
    """HEIC/HEIF (phone photos) through pillow-heif, registered once on first use."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:  # optional at run time: HEIC files then read as "not an image"
        return
    register_heif_opener()


def _source_name(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<image bytes>"
    return str(getattr(source, "name", "<image stream>"))


def _as_file(source: ImageSource, name: str) -> IO[bytes] | Path:
    """The object Image.open gets, after the checks that need no decoder (existence, zero bytes)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise _fail(name, "empty file", "the data is empty (0 bytes).")
        return io.BytesIO(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise _fail(name, "not found", "the file does not exist.") from None
        except OSError as error:
            raise _fail(name, "unreadable", f"the file cannot be opened ({error.strerror}).") from None
        if path.is_dir():
            raise _fail(name, "unreadable", "it is a folder, not a file.")
        if size == 0:
            raise _fail(name, "empty file", "the file is empty (0 bytes).")
        return path
    if not source.seekable():
        source = io.BytesIO(source.read())
    start = source.tell()
    if not source.read(1):
        raise _fail(name, "empty file", "the data is empty (0 bytes).")
    source.seek(start)
    return source


def _head(file: IO[bytes] | Path, start: int, size: int) -> bytes:
    """The first bytes of a file or stream (a stream is left at `start`)."""
    if isinstance(file, Path):
        with open(file, "rb") as f:
            return f.read(size)
    file.seek(start)
    head = file.read(size)
    file.seek(start)
    return head


def _starts_like_image(file: IO[bytes] | Path, start: int) -> bool:
    head = _head(file, start, 16)
    return head.startswith(_SIGNATURES) or head[4:8] == b"ftyp"


def _settings_path() -> Path:
    from cliplab.engine import paths
    return paths.data_dir() / SETTINGS_FILE


def _read_settings() -> dict:
    try:
        settings = json.loads(_settings_path().read_text())
    except (OSError, ValueError):
        return {}
    return settings if isinstance(settings, dict) else {}


def max_pixels() -> int:
    """The pixel limit in force: CLIPLAB_MAX_PIXELS if set, else the data folder's setting
    (set_max_pixels), else DEFAULT_MAX_PIXELS. Read on every image, so decode workers (other
    processes) and a running app follow a change at once."""
    forced = os.environ.get(MAX_PIXELS_ENV)
    if forced:
        try:
            return _valid_limit(int(forced.replace("_", "")))
        except ValueError:
            raise CliplabError(f"{MAX_PIXELS_ENV}={forced!r} is not a pixel count: give a whole number such as "
                               "200000000 (200 megapixels).") from None
    stored = _read_settings().get("max_pixels")
    return stored if isinstance(stored, int) and not isinstance(stored, bool) and stored > 0 else DEFAULT_MAX_PIXELS


def set_max_pixels(limit: int | None) -> int:
    """Store the pixel limit in the data folder's settings (None: back to the default); returns the
    limit now in force (CLIPLAB_MAX_PIXELS, where set, still wins)."""
    from cliplab.engine.weights import replace_atomically
    settings = _read_settings()
    if limit is None:
        settings.pop("max_pixels", None)
    else:
        settings["max_pixels"] = _valid_limit(limit)
    path = _settings_path()
    mode = path.stat().st_mode & 0o777 if path.is_file() else 0o600  # the file may hold the app's password

    def write(tmp: Path) -> None:
        tmp.write_text(json.dumps(settings, indent=1) + "\n")
        os.chmod(tmp, mode)

    replace_atomically(path, write)
    return max_pixels()


def _valid_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1_000_000:
        raise CliplabError(f"A pixel limit of {limit!r} is too small to be meant: give a whole number of pixels, "
                           "at least 1000000 (1 megapixel); the default is 89478485.")
    return limit


def _too_large(name: str, size: str, limit: int) -> ImageLoadError:
    own = Path(name).name or name  # the photo's own name, not the folder an upload was cached in
    return ImageLoadError(
        f"{own} {size}, over the pixel limit of "
        f"{limit / 1e6:.1f} megapixels that guards against decompression bombs. If you trust the file, raise "
        f"the limit: the pixel limit in the app's Settings, or the environment variable {MAX_PIXELS_ENV} "
        "(e.g. 200000000).", "too large", name)


def _is_jpeg(file: IO[bytes] | Path, start: int) -> bool:
    return _head(file, start, 3) == b"\xff\xd8\xff"


def _open_image(file: IO[bytes] | Path, start: int) -> Image.Image:
    """Image.open, except that JPEGs skip Pillow's pixel check at open: they are checked by the size
    they decode to, after draft mode (load_image). Other formats get Pillow's guard raised to ours."""
    if _is_jpeg(file, start):
        from PIL.JpegImagePlugin import JpegImageFile
        try:
            return JpegImageFile(file)
        except (SyntaxError, IndexError, struct.error) as error:
            raise UnidentifiedImageError(str(error)) from None
    limit = max_pixels()
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit  # the person raised the limit: Pillow's refusal (at twice its own) follows
    with warnings.catch_warnings():
        # The limit is ours (max_pixels, checked by load_image); Pillow's warning is noise here.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(file)


def _open(source: ImageSource) -> tuple[Image.Image, str]:
    """Open (header only) with every failure mapped to an ImageLoadError."""
    _register_heif()
    name = _source_name(source)
    file = _as_file(source, name)
    start = 0 if isinstance(file, Path) else file.tell()
    try:
        image = _open_image(file, start)
    except Image.DecompressionBombError as error:  # over twice Pillow's guard: refused before the header's size is ours
        pixels = re.search(r"\((\d+) pixels\)", str(error))
        raise _too_large(name, f"{int(pixels.group(1)) / 1e6:.1f} megapixels" if pixels else "far too many pixels",
                         max_pixels()) from None
    except UnidentifiedImageError:
        if _starts_like_image(file, start):
            raise _fail(name, "corrupt", "it looks like an image but its header is damaged "
                                 "or cut short.") from None
        raise _fail(name, "not an image", "it is not an image in a format this program "
                             "reads (JPEG, PNG, GIF, WebP, TIFF, BMP, HEIC, ...).") from None
    except OSError as error:
        if "truncated" in str(error).lower():  # e.g. a JPEG cut inside its header
            raise _fail(name, "truncated", "the image data is cut short (the file is incomplete, "
                                 "or still being copied).") from None
        raise _fail(name, "unreadable", f"the file cannot be opened ({error}).") from None
    except ValueError as error:  # Pillow's safety limits on metadata, e.g. a PNG text chunk of 50 MB
        if "too large" in str(error).lower():
            raise _fail(name, "too large", f"its metadata is over the decoder's safety limit ({error}).") from None
        raise _fail(name, "corrupt", f"its header is damaged ({error}).") from None
    return image, name


def _check_pixels(image: Image.Image, name: str, stored: tuple[int, int]) -> None:
    """The pixel limit, on the size the image decodes to (a JPEG's after draft mode; stored: its size
    in the file)."""
    width, height = image.size
    limit = max_pixels()
    if width * height > limit:
        scaled = "" if (width, height) == stored else f" at the reduced scale it is read at ({stored[0]}x{stored[1]} stored)"
        raise _too_large(name, f"is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels){scaled}", limit)


def _decode(image: Image.Image, name: str) -> None:
    """Force the full decode now, so that damaged data fails here and not later in a worker."""
    try:
        image.load()
    except (OSError, SyntaxError, EOFError, ValueError) as error:
        message = str(error)
        if "truncated" in message.lower() or isinstance(error, EOFError):
            raise _fail(name, "truncated", "the image data is cut short (the file is incomplete, "
                                 "or still being copied).") from None
        raise _fail(name, "corrupt", f"the image data is damaged ({message}).") from None


def _apply_orientation(image: Image.Image) -> None:
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception:  # damaged EXIF must not lose good pixels: keep them as stored
        pass


def _to_rgb(image: Image.Image, name: str) -> Image.Image:
    """RGB as the reference converts (`convert("RGB")`), except high-bit-depth modes, which are
    scaled to 8 bits instead of clipped."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode == "I":
        # 16-bit (and 32-bit integer, read as 16-bit) grey: map 0..65535 onto 0..255; the reference's
        # convert("RGB") would clip everything above 255 to white.
        values = np.clip(np.asarray(image, dtype=np.float64), 0, 65535)
        return Image.fromarray(np.rint(values / 257.0).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        # Float grey: taken as 0..1 when it fits there, else as 0..255; NaN becomes black.
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        scale = 255.0 if values.size and values.max() <= 1.0 else 1.0
        return Image.fromarray(np.rint(np.clip(values * scale, 0, 255)).astype(np.uint8), "L").convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError:
        raise _fail(name, "unsupported mode", f"its pixel mode {mode!r} cannot be converted "
                             "to RGB.") from None


def load_image(source: ImageSource, min_size: int | None = None, draft_factor: float = 2.0) -> Image.Image:
    """Read an image file (path, bytes or binary file object) into a fully decoded RGB PIL image.

    - EXIF orientation is applied (a damaged EXIF block is ignored, the pixels kept as stored).
    - Modes: P (with or without transparency), L, LA, RGBA, PA, CMYK, YCbCr, 1-bit, ... become RGB
      as the reference does (`convert("RGB")`, transparency dropped, not composited). 16-bit grey
      (I;16, I;16B) and 32-bit integer (I) are scaled to 8 bits (v / 257), not clipped; float (F) is
      read as 0..1 when it fits there, else 0..255.
    - Animated GIF/WebP: the first frame. HEIC/HEIF through pillow-heif.
    - `min_size`: large JPEGs decode at a reduced DCT scale (draft mode, 1/2, 1/4 or 1/8) chosen
      so that the shorter side stays >= draft_factor * min_size (2 by default; 1 measured only ~7%
      less CPU on 12 MP photos, docs/benchmarks.md): several times faster on camera photos.
    - Failures raise ImageLoadError with `.reason` (see the class); an image that would decode to
      more than max_pixels() (a JPEG counted at its draft scale) is refused before decoding
      ("too large"); the sentence names the file and how to raise the limit.
    - Camera RAW files (by extension: engine.raw) read through their embedded preview, or a half-size
      demosaic when the preview is smaller than min_size.
    """
    if isinstance(source, (str, os.PathLike)) and is_raw(source):
        return load_raw(source, min_size)
    image, name = _open(source)
    with image:
        stored = image.size
        if min_size:
            target = math.ceil(draft_factor * int(min_size))
            # draft() reduces by the largest factor in 8, 4, 2, 1 that is <= short side // target,
            # so the reduced shorter side is never below the target.
            image.draft("RGB", (target, target))
        _check_pixels(image, name, stored)  # before any pixel is decoded
        _decode(image, name)
        _apply_orientation(image)
        rgb = _to_rgb(image, name)
        if rgb is image and getattr(image, "n_frames", 1) > 1:
            rgb = image.copy()  # detach the first frame from the multi-frame file before it closes
    return rgb


def _exif_datetime(value: Any) -> datetime | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:  # "0000:00:00 00:00:00" and other placeholders cameras write
        return None


def image_info(source: ImageSource) -> dict[str, Any]:
    """Header facts without decoding pixels: width and height as displayed (EXIF orientation
    applied), format, orientation (1-8), taken_at (EXIF DateTimeOriginal as a naive datetime, or
    None) and camera_model (EXIF Model, or None). Raises ImageLoadError like load_image, except
    that an image over max_pixels() is still described (only decoding it is refused; Pillow itself
    refuses to open a non-JPEG of more than twice its own limit, ~179 MP, unless the limit is raised).
    A camera RAW's facts come from its own metadata (engine.raw)."""
    if isinstance(source, (str, os.PathLike)) and is_raw(source):
        return raw_info(source)
    image, _ = _open(source)
    with image:
        width, height = image.size
        taken_at, camera_model, orientation = None, None, 1
        try:
            exif = image.getexif()
            orientation = int(exif.get(ExifTags.Base.Orientation, 1) or 1)
            taken_at = _exif_datetime(exif.get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.DateTimeOriginal))
            model = exif.get(ExifTags.Base.Model)
            if isinstance(model, bytes):
                model = model.decode("utf-8", "replace")
            camera_model = model.strip("\x00 ") or None if isinstance(model, str) else None
        except Exception:  # damaged EXIF: the size and format are still right
            pass
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        return {"width": width, "height": height, "format": image.format, "mode": image.mode,
                "orientation": orientation, "taken_at": taken_at, "camera_model": camera_model}
