"""A copy detector: is one picture a copy of another (re-encoded, resized, cropped, recoloured)?

CLIP's own similarity is semantic (the paper's Appendix C): two distinct pictures of the same thing
score as high as a copy, and some copies score low. This detector compares pictures, not meanings:
each image becomes a few descriptors, one of the whole frame and some of crops of it (so a crop of a
picture meets a descriptor of the same region), each the low-frequency 2-D DCT (16 x 16
coefficients, weighted by the square root of their frequency) of a 32 x 32 grey thumbnail under a
Hann window, mean-free and unit-length:

- squashing every frame and crop to a square makes aspect distortion and rescaling (any
  interpolation, down- and up-scaling) vanish;
- grey levels with the mean removed and the length normalised make hue, saturation and brightness
  jitter, and contrast, change little; JPEG and small rotations move the high frequencies the
  descriptor leaves out;
- distinct pictures of one thing (another drawing of the same shape, another photo of the same
  species) differ in where their edges and textures lie, which the low frequencies still record;
- the window makes the borders, where crops, zooms and rotations (their empty corners) change a
  picture most, count least.

The score of two images is the largest cosine of one image's whole frame with any region of the
other, both ways (so either may be the cropped one).
benchmarks/copy_detector.py measures it against CLIP's cosine and two learned detectors (a learned
whitening of these descriptors, and the paper's detector scaled down: a small CNN trained on these
augmentations) on planted copies (`plant_copy`: the paper's augmentations) and on distinct pictures
of one description (docs/benchmarks.md: a CNN trained for about two minutes is ahead at 0.99
precision, but its lead at this detector's precision is not steady across training draws, so this
one stays); THRESHOLD is chosen there for high precision.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image, ImageEnhance

NAME = "cliplab-dct-v2"  # recorded with stored descriptors: another detector's are never compared
SIDE = 32  # thumbnail side
KEEP = 16  # DCT coefficients kept per axis (the 16 x 16 lowest frequencies, DC dropped)
DIM = KEEP * KEEP - 1
# The regions each image is described by: (left, top, width, height) as fractions of the frame.
# The whole frame, the centre at 85% and 70% of each side, the four corners at 85%.
_AXIS = ((0.0, 1.0), (0.0, 0.9), (0.05, 0.9), (0.1, 0.9), (0.0, 0.8), (0.1, 0.8), (0.2, 0.8))
REGIONS = tuple((x0, y0, xs, ys) for x0, xs in _AXIS for y0, ys in _AXIS)
PER_IMAGE = len(REGIONS)
# Score at or above which two images are copies: chosen on the benchmark for precision 1.0 on distinct
# pictures of one description while keeping recall on planted copies (docs/benchmarks.md).
THRESHOLD = 0.95
WHITEN = 0.5  # weight of a DCT coefficient: its radial frequency ** WHITEN (edges count beside the layout)


@lru_cache(maxsize=1)
def _dct_matrix() -> np.ndarray:
    n = np.arange(SIDE)
    basis = np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * SIDE))
    basis[0] /= np.sqrt(2)
    return (basis * np.sqrt(2 / SIDE))[:KEEP].astype(np.float32)


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    """A Hann window over the thumbnail: the borders, where crops, rotations (their empty corners) and
    zooms change a picture most, count least."""
    w = 0.5 * (1 - np.cos(2 * np.pi * (np.arange(SIDE) + 0.5) / SIDE))
    return np.outer(w, w).astype(np.float32)


@lru_cache(maxsize=1)
def _weights() -> np.ndarray:
    u = np.arange(KEEP)
    radial = np.hypot(u[:, None], u[None, :]).reshape(-1)[1:]
    return (radial ** WHITEN).astype(np.float32)


def _grey(image: Image.Image) -> Image.Image:
    return image.convert("RGB").convert("L")


def descriptors(image: Image.Image) -> np.ndarray:
    """[PER_IMAGE, DIM] float32 unit rows: one descriptor per region of REGIONS. A flat region (no
    structure at all) gives a zero row, which matches nothing."""
    grey = _grey(image)
    # Reduce a large picture once (box filter) so every crop below resamples a small image.
    if min(grey.size) > 4 * SIDE:
        scale = 4 * SIDE / min(grey.size)
        grey = grey.resize((max(1, round(grey.width * scale)), max(1, round(grey.height * scale))),
                           Image.Resampling.BOX)
    w, h = grey.size
    dct = _dct_matrix()
    out = np.zeros((PER_IMAGE, DIM), np.float32)
    for i, (left, top, width, height) in enumerate(REGIONS):
        box = (left * w, top * h, (left + width) * w, (top + height) * h)
        thumb = np.asarray(grey.resize((SIDE, SIDE), Image.Resampling.BOX, box=box), np.float32)
        coeffs = (dct @ ((thumb - thumb.mean()) * _window()) @ dct.T).reshape(-1)[1:] * _weights()
        norm = np.linalg.norm(coeffs)
        if norm > 1e-3 * SIDE:  # a flat crop has no structure to match
            out[i] = coeffs / norm
    return out


def score(a: np.ndarray, b: np.ndarray) -> float:
    """The copy score of two images' descriptors ([PER_IMAGE, DIM] each): the largest cosine of one's
    whole frame with any region of the other (either may be the cropped one)."""
    return float(max((a[0] @ b.T).max(), (b[0] @ a.T).max()))


def scores(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[n, m] copy scores of n images against m (descriptors [n, PER_IMAGE, DIM], [m, PER_IMAGE, DIM]),
    exactly: every descriptor against every one."""
    one = np.einsum("id,jld->ijl", a[:, 0], b, optimize=True).max(-1)
    other = np.einsum("ild,jd->ijl", a, b[:, 0], optimize=True).max(-1)
    return np.maximum(one, other)


# -- the paper's synthetic variants (Appendix C), for the benchmark and the tests --------------

_INTERPOLATIONS = (Image.Resampling.NEAREST, Image.Resampling.BILINEAR, Image.Resampling.BICUBIC,
                   Image.Resampling.LANCZOS, Image.Resampling.BOX)


def plant_copy(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A near-duplicate of image as Appendix C builds them: random crop and zoom (80-100% of each
    side), aspect distortion (0.8-1.25), down- and up-scaling (to 40-100% and back) with a random
    interpolation at every step, a rotation of at most 5 degrees, HSV jitter (hue +-0.04, saturation
    and value +-20%) and JPEG at quality 40-90."""
    image = image.convert("RGB")
    w, h = image.size
    cw, ch = w * rng.uniform(0.8, 1.0), h * rng.uniform(0.8, 1.0)
    left, top = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
    image = image.crop((round(left), round(top), round(left + cw), round(top + ch)))
    aspect = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
    size = (max(8, round(w * aspect ** 0.5)), max(8, round(h / aspect ** 0.5)))
    image = image.resize(size, _INTERPOLATIONS[rng.integers(len(_INTERPOLATIONS))])
    small = rng.uniform(0.4, 1.0)
    image = image.resize((max(8, round(size[0] * small)), max(8, round(size[1] * small))),
                         _INTERPOLATIONS[rng.integers(len(_INTERPOLATIONS))])
    image = image.resize(size, _INTERPOLATIONS[rng.integers(len(_INTERPOLATIONS))])
    image = image.rotate(rng.uniform(-5, 5), resample=Image.Resampling.BILINEAR, expand=False)
    image = _hsv_jitter(image, rng)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(rng.integers(40, 91)))
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def _hsv_jitter(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    h, s, v = (np.asarray(c, np.float32) for c in image.convert("HSV").split())
    h = (h + rng.uniform(-0.04, 0.04) * 255) % 256
    s = np.clip(s * rng.uniform(0.8, 1.2), 0, 255)
    v = np.clip(v * rng.uniform(0.8, 1.2), 0, 255)
    channels = [Image.fromarray(c.astype(np.uint8), "L") for c in (h, s, v)]
    return ImageEnhance.Contrast(Image.merge("HSV", channels).convert("RGB")).enhance(rng.uniform(0.9, 1.1))
