"""Copy detectors: is one picture a copy of another (re-encoded, resized, cropped, recoloured)?

CLIP's own similarity is semantic (the paper's Appendix C): two distinct pictures of the same thing
score as high as a copy, and some copies score low. A copy detector compares pictures, not meanings.
Each describes an image by `regions` unit vectors of `dim` numbers: row 0 the whole frame, the others
crops of it (so a crop of a picture meets a descriptor of the same region). Two images score the
largest cosine of one's whole frame with any region of the other, both ways (`scores`).

Two detectors share that form:

- `LearnedDetector`, the default: the paper's detector scaled down. A small CNN (`CopyCNN`) trained
  by trainer.copy_detector to match a picture with its synthetic variants (`plant_copy`, the
  paper's Appendix C augmentations) against every other picture of a batch, among them distinct
  drawings of the same description (the hard negatives CLIP's space cannot tell apart). Five
  regions (LEARNED_REGIONS): the network has learned most of crops and zooms, the regions align the
  rest. Its weights file carries its
  threshold, calibrated after training on held-out pictures for high precision, and its name is
  a digest of the weights, so descriptors of other weights are never compared with its own.
- `DCTDetector`: no training. The low-frequency 2-D DCT (16 x 16 coefficients, weighted by the
  square root of their frequency) of a 32 x 32 grey thumbnail under a Hann window, mean-free and
  unit-length, of the whole frame and 48 crops: squashing to a square makes aspect distortion and
  rescaling vanish; grey levels, mean-free and normalised, make colour and brightness jitter change
  little; JPEG and small rotations move the high frequencies it leaves out; the window makes the
  borders, where crops and rotations change a picture most, count least.

benchmarks/copy_detector.py measures both against CLIP's cosine on planted copies and on distinct
pictures of one description (docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance
from torch import nn

from cliplab.engine.errors import CliplabError

NAME = "cliplab-dct-v2"  # the DCT detector's name, recorded with stored descriptors
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
    """The copy score of two images' descriptors ([regions, dim] each, of one detector): the largest
    cosine of one's whole frame with any region of the other (either may be the cropped one)."""
    return float(max((a[0] @ b.T).max(), (b[0] @ a.T).max()))


def paired_scores(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[n] copy scores of image i of a with image i of b (descriptors [n, regions, dim] each)."""
    one = np.einsum("id,ild->il", a[:, 0], b).max(-1)
    other = np.einsum("ild,id->il", a, b[:, 0]).max(-1)
    return np.maximum(one, other)


def scores(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[n, m] copy scores of n images against m (descriptors [n, regions, dim], [m, regions, dim]),
    exactly: every descriptor against every one."""
    one = np.einsum("id,jld->ijl", a[:, 0], b, optimize=True).max(-1)
    other = np.einsum("ild,jd->ijl", a, b[:, 0], optimize=True).max(-1)
    return np.maximum(one, other)


class Detector:
    """What every copy detector offers: its name (stored with descriptors), the regions and dim of an
    image's descriptors, its default threshold, and describe()."""

    name: str
    regions: int
    dim: int
    threshold: float

    def describe(self, images: Sequence[Image.Image]) -> np.ndarray:
        """[n, regions, dim] float32 unit rows (a zero row matches nothing)."""
        raise NotImplementedError


class DCTDetector(Detector):
    """The training-free detector: descriptors() of each image."""

    name, regions, dim, threshold = NAME, PER_IMAGE, DIM, THRESHOLD

    def describe(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not len(images):
            return np.zeros((0, self.regions, self.dim), np.float32)
        return np.stack([descriptors(image) for image in images])


# -- the learned detector: the paper's detector scaled down ---------------------------------------

class CopyCNN(nn.Module):
    """Four 3 x 3 convolutions with GELU, each followed by 2 x 2 average pooling (the paper's
    anti-aliased down-sampling in its simplest form) and no batch statistics (the paper's reason:
    they leak which pictures are duplicates within a batch), then a linear projection of the last
    map to a unit vector. Its forward takes a pair of batches, as trainer.step takes images and
    texts; logit_scale is a buffer, the paper's fixed temperature 0.07, never learned."""

    def __init__(self, width: int = 16, dim: int = 128, side: int = 32):
        super().__init__()
        if side % 16:
            raise ValueError(f"the input side must be a multiple of 16, not {side}")
        widths = [3, width, 2 * width, 4 * width, 4 * width]
        self.side = side
        self.convs = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 3, padding=1) for i in range(4))
        self.proj = nn.Linear(widths[-1] * (side // 16) ** 2, dim)
        self.register_buffer("logit_scale", torch.tensor(math.log(1 / 0.07)), persistent=False)

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> CopyCNN:
        """The network whose shapes the weights have (width, dim and input side read from them)."""
        width, dim, features = sd["convs.0.weight"].shape[0], sd["proj.weight"].shape[0], sd["proj.weight"].shape[1]
        side = 16 * round(math.sqrt(features / (4 * width)))
        net = cls(width=width, dim=dim, side=side)
        net.load_state_dict(sd)
        return net.eval()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.avg_pool2d(F.gelu(conv(x)), 2)
        return F.normalize(self.proj(x.flatten(1)), dim=-1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed(a), self.embed(b)


def cnn_input(images: Sequence[Image.Image], side: int) -> torch.Tensor:
    """[n, 3, side, side]: squashed to a square with a box filter (aspect distortion and rescaling
    vanish), each channel mean-free, each picture scaled to unit variance (brightness and contrast
    jitter matter little)."""
    array = np.stack([np.asarray(image.convert("RGB").resize((side, side), Image.Resampling.BOX), np.float32)
                      for image in images]) / 255.0
    x = torch.from_numpy(array).permute(0, 3, 1, 2)
    x = x - x.mean((2, 3), keepdim=True)
    return x / (x.std((1, 2, 3), keepdim=True) + 1e-3)


LEARNED_PREFIX = "cliplab-cnn-"
# The learned detector's regions (left, top, width, height): the whole frame, the centre at 90% and
# 80% of each side, the top-left and bottom-right corners at 85%. The network has learned crops and
# zooms, but a crop of 90% still moves its score on photos (0.76 of such crops found at the
# calibrated threshold with the whole frame alone, all with these regions: docs/benchmarks.md).
LEARNED_REGIONS = ((0.0, 0.0, 1.0, 1.0), (0.05, 0.05, 0.9, 0.9), (0.1, 0.1, 0.8, 0.8), (0.0, 0.0, 0.85, 0.85),
                   (0.15, 0.15, 0.85, 0.85))


class LearnedDetector(Detector):
    """A trained CopyCNN over LEARNED_REGIONS and its calibrated threshold; named by a digest of its
    weights and regions."""

    def __init__(self, net: CopyCNN, threshold: float, meta: dict | None = None,
                 regions: Sequence[tuple[float, float, float, float]] = LEARNED_REGIONS):
        self.net = net.eval()
        self.threshold = float(threshold)
        self.dim = net.proj.out_features
        self.boxes = tuple(tuple(float(v) for v in box) for box in regions)
        self.regions = len(self.boxes)
        self.meta = dict(meta or {})
        digest = hashlib.sha256(repr(self.boxes).encode())
        for key, value in sorted(net.state_dict().items()):
            digest.update(key.encode())
            digest.update(value.detach().cpu().float().contiguous().numpy().tobytes())
        self.name = LEARNED_PREFIX + digest.hexdigest()[:16]

    @torch.no_grad()
    def describe(self, images: Sequence[Image.Image]) -> np.ndarray:
        out = np.zeros((len(images), self.regions, self.dim), np.float32)
        for start in range(0, len(images), 128):
            chunk = [image.convert("RGB") for image in images[start:start + 128]]
            for r, (left, top, width, height) in enumerate(self.boxes):
                crops = [image.crop((round(left * image.width), round(top * image.height),
                                     round((left + width) * image.width), round((top + height) * image.height)))
                         for image in chunk]
                out[start:start + len(chunk), r] = self.net.embed(cnn_input(crops, self.net.side)).numpy()
        return out

    def save(self, path: str | Path) -> Path:
        """The weights as safetensors, the threshold and the training facts in its metadata; written
        whole or not at all."""
        from safetensors.torch import save_file

        from cliplab.engine.weights import replace_atomically
        meta = {"threshold": repr(self.threshold), "facts": json.dumps(self.meta, sort_keys=True),
                "regions": json.dumps(self.boxes), "format": "cliplab-copy-detector-1"}
        sd = {k: v.detach().contiguous() for k, v in self.net.state_dict().items()}
        return replace_atomically(Path(path), lambda temp: save_file(sd, str(temp), metadata=meta))


def load_learned(path: str | Path) -> LearnedDetector:
    """A learned detector from the file LearnedDetector.save wrote."""
    from safetensors import SafetensorError, safe_open
    path = Path(path).expanduser()
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            sd = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError) as error:
        raise CliplabError(f"Cannot read the copy detector {path} ({error}): the file may be truncated; "
                           "train the detector again.") from None
    if meta.get("format") != "cliplab-copy-detector-1" or "threshold" not in meta:
        raise CliplabError(f"{path} is not a cliplab copy detector (it has no detector metadata): give a copy "
                           "detector file that cliplab trained.")
    try:
        net = CopyCNN.from_state_dict(sd)
    except (KeyError, RuntimeError, ValueError) as error:
        raise CliplabError(f"{path} holds weights of another shape than a copy detector's ({error}).") from None
    regions = json.loads(meta["regions"]) if "regions" in meta else LEARNED_REGIONS
    return LearnedDetector(net, float(meta["threshold"]), json.loads(meta.get("facts") or "{}"), regions)


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
