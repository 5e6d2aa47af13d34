"""Drawing for the synthetic world: backgrounds, shape outlines, strokes and photo-like finishing.

The world (trainer.demo.world) decides what a scene holds; this module decides how it looks, with
the variety people's own images have: white, black, coloured, gradient and photo-like backgrounds
besides textured greys; filled, outlined and hand-drawn-looking shapes; blur, noise, low contrast,
JPEG artefacts and a slight rotation. Every choice comes from the caller's seeded rng.
"""

from __future__ import annotations

import colorsys
import math
from functools import lru_cache
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

# Grey textures (the original world), then the backgrounds people draw and photograph on.
BACKGROUNDS = ("plain", "stripes", "dots", "checker", "noise", "light", "dark", "coloured", "gradient", "photo")
STYLES = ("filled", "outline", "sketch")
STYLE_WEIGHTS = (0.5, 0.25, 0.25)
# Shapes that people draw at any turn (their symmetry period, radians): a hexagon is as often
# pointy-topped as flat-topped. The others keep a slight tilt: a square turned 45 degrees is a diamond.
_ANY_TURN = {"hexagon": math.pi / 3}
_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "/Library/Fonts", "/System/Library/Fonts",
              "C:/Windows/Fonts")
_FONT_NAMES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
               "DejaVuSansMono-Bold.ttf", "DejaVuSans-Oblique.ttf", "LiberationSans-Regular.ttf",
               "LiberationSans-Bold.ttf", "LiberationSerif-Regular.ttf", "LiberationSerif-Bold.ttf",
               "LiberationMono-Regular.ttf", "LiberationSansNarrow-Bold.ttf", "Arial.ttf", "Georgia.ttf",
               "Verdana.ttf", "Courier New.ttf", "Times New Roman.ttf")


def pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def shape_outline(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Outline of a shape of radius r centred on (cx, cy), rotated by angle (radians)."""
    if shape == "circle":
        pts = [(math.cos(a), math.sin(a)) for a in np.linspace(0, 2 * math.pi, 40, endpoint=False)]
    elif shape == "square":
        pts = [(math.cos(a), math.sin(a)) for a in np.arange(4) * math.pi / 2 + math.pi / 4]
    elif shape == "triangle":
        pts = [(math.cos(a), math.sin(a) + 0.2) for a in np.arange(3) * 2 * math.pi / 3 - math.pi / 2]
    elif shape == "hexagon":
        pts = [(math.cos(a), math.sin(a)) for a in np.arange(6) * math.pi / 3]
    elif shape == "diamond":
        pts = [(0.0, -1.0), (0.62, 0.0), (0.0, 1.0), (-0.62, 0.0)]
    elif shape == "star":
        pts = [((1.0 if i % 2 == 0 else 0.45) * math.cos(a), (1.0 if i % 2 == 0 else 0.45) * math.sin(a))
               for i, a in enumerate(np.arange(10) * math.pi / 5 - math.pi / 2)]
    elif shape == "cross":
        w = 0.33
        pts = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w),
               (-1, -w), (-w, -w)]
    elif shape == "heart":
        t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        x = 16 * np.sin(t) ** 3 / 17
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)) / 17 - 0.1
        pts = list(zip(x.tolist(), y.tolist()))
        angle = 0.0  # an upside-down heart stops being one
    else:
        raise ValueError(shape)
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in pts]


def jitter_colour(rng: np.random.Generator, colour: tuple[int, int, int], amount: int = 14) -> tuple[int, ...]:
    return tuple(min(255, max(0, c + d)) for c, d in zip(colour, rng.integers(-amount, amount + 1, size=3).tolist()))


# -- backgrounds --------------------------------------------------------------------------------


@lru_cache(maxsize=512)
def _texture_mask(kind: str, size: int, period: int, orientation: int) -> Image.Image:
    """The pattern of a textured background as an "L" mask (255 = second tone); few distinct, cached."""
    yy, xx = np.mgrid[0:size, 0:size]
    if kind == "stripes":
        coord = (xx, yy, xx + yy, xx - yy + size)[orientation]
        mask = (coord // max(period // 2, 1)) % 2 == 1
    elif kind == "checker":
        mask = ((xx // period) + (yy // period)) % 2 == 1
    elif kind == "dots":
        dx, dy = (xx % period) - period // 2, (yy % period) - period // 2
        mask = dx * dx + dy * dy <= (period * 0.22) ** 2
    else:
        raise ValueError(kind)
    return Image.fromarray(mask.astype(np.uint8) * 255, "L")


def _far_colour(rng: np.random.Generator, avoid: np.ndarray, tone: str) -> np.ndarray:
    """A random background colour at least a clear step away from the object's colour.

    tone: "any" (anywhere in the RGB cube), "muted" (a pastel or a tone mixed with grey) or "vivid"
    (what a paint program's palette and a screen's pure colours give: any hue at high saturation and
    value, often fully saturated, which the cube almost never draws).
    """
    for _ in range(50):
        if tone == "vivid":
            hue = rng.uniform(0, 1)
            saturation, value = min(1.0, rng.uniform(0.7, 1.3)), min(1.0, rng.uniform(0.65, 1.3))
            colour = 255 * np.array(colorsys.hsv_to_rgb(hue, saturation, value))
        elif tone == "muted":
            colour = 0.5 * rng.uniform(0, 255, size=3) + 0.5 * rng.uniform(80, 230)
        else:
            colour = rng.uniform(0, 255, size=3)
        if np.linalg.norm(colour - avoid) > 140:
            return colour
    return 255 - avoid  # the complement is always far


def _tone(rng: np.random.Generator, saturated_share: float) -> str:
    return "any" if rng.random() < saturated_share else "muted"


def background(kind: str, size: int, rng: np.random.Generator, avoid: tuple[int, int, int]) -> Image.Image:
    """An RGB background of size x size that keeps the object colour `avoid` visible on it."""
    avoid_arr = np.asarray(avoid, dtype=np.float64)
    if kind in ("plain", "noise", "stripes", "dots", "checker"):
        base = np.clip(rng.uniform(95, 165) + rng.uniform(-8, 8, size=3), 0, 255)
        if np.linalg.norm(base - avoid_arr) < 60:  # a grey object on grey: step the grey away
            base = np.clip(base + (60 if avoid_arr.mean() < base.mean() else -60), 0, 255)
        if kind == "plain":
            return Image.new("RGB", (size, size), tuple(int(v) for v in base))
        if kind == "noise":
            noise = rng.integers(-40, 41, size=(size, size, 1), dtype=np.int16)
            return Image.fromarray(np.clip(base.astype(np.int16) + noise, 0, 255).astype(np.uint8))
        other = np.clip(base + pick(rng, (-1, 1)) * rng.uniform(22, 38), 0, 255)
        period = int(rng.integers(size // 10, size // 5))
        mask = _texture_mask(kind, size, period, int(rng.integers(4)) if kind == "stripes" else 0)
        return Image.composite(Image.new("RGB", (size, size), tuple(int(v) for v in other)),
                               Image.new("RGB", (size, size), tuple(int(v) for v in base)), mask)
    if kind == "light":  # paper, a white canvas, a whiteboard
        tone = rng.uniform(225, 255) + rng.uniform(-6, 6, size=3) * (rng.random() < 0.4)
        return Image.new("RGB", (size, size), tuple(int(v) for v in np.clip(tone, 0, 255)))
    if kind == "dark":
        tone = rng.uniform(0, 35) + rng.uniform(-5, 5, size=3) * (rng.random() < 0.4)
        return Image.new("RGB", (size, size), tuple(int(v) for v in np.clip(tone, 0, 255)))
    if kind == "coloured":
        # A third each: vivid (paint and screen colours), anywhere in the cube, muted.
        colour = _far_colour(rng, avoid_arr, pick(rng, ("vivid", "any", "muted")))
        return Image.new("RGB", (size, size), tuple(int(v) for v in colour))
    if kind == "gradient":
        a = _far_colour(rng, avoid_arr, _tone(rng, 0.3))
        b = _far_colour(rng, avoid_arr, _tone(rng, 0.3))
        theta = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:size, 0:size] / size
        t = np.clip((xx - 0.5) * math.cos(theta) + (yy - 0.5) * math.sin(theta) + 0.5, 0, 1)[..., None]
        return Image.fromarray((a * (1 - t) + b * t).astype(np.uint8))
    if kind == "photo":  # smooth blotches of colour with grain: an out-of-focus photograph
        cells = int(rng.integers(2, 6))
        low = np.stack([_far_colour(rng, avoid_arr, _tone(rng, 0.3))
                        for _ in range(cells * cells)]).reshape(cells, cells, 3)
        image = Image.fromarray(low.astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
        image = image.filter(ImageFilter.GaussianBlur(size / 16))
        grain = rng.normal(0, rng.uniform(2, 12), size=(size, size, 1))
        return Image.fromarray(np.clip(np.asarray(image, dtype=np.float64) + grain, 0, 255).astype(np.uint8))
    raise ValueError(kind)


# -- shapes -------------------------------------------------------------------------------------


def _wobble(points: list[tuple[float, float]], rng: np.random.Generator, r: float) -> list[tuple[float, float]]:
    """A hand-drawn version of a closed outline: resampled densely, pushed by a smooth random wobble."""
    pts = np.asarray(points + points[:1], dtype=np.float64)
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    t = np.concatenate([[0], np.cumsum(seg)])
    n = max(24, int(t[-1] / 3))
    s = np.linspace(0, t[-1], n, endpoint=False)
    dense = np.stack([np.interp(s, t, pts[:, 0]), np.interp(s, t, pts[:, 1])], axis=1)
    phase = rng.uniform(0, 2 * math.pi, size=(3, 2))
    freq = np.array([2, 3, 5])[:, None]
    u = (s / t[-1] * 2 * math.pi)[:, None, None]
    offset = (np.sin(freq[None] * u + phase[None]) * rng.uniform(0.01, 0.045, size=(3, 1))[None]).sum(1) * r
    return [tuple(p) for p in (dense + offset).tolist()]


def draw_shape(image: Image.Image, rng: np.random.Generator, shape: str, centre: tuple[float, float],
               radius: float, colour: tuple[int, int, int], style: str) -> None:
    """Draw one shape in place: a flat or unevenly shaded fill, a clean outline, or a sketch."""
    draw = ImageDraw.Draw(image)
    angle = 0.0 if rng.random() < 0.3 else rng.uniform(-0.3, 0.3)
    if shape in _ANY_TURN:  # flat- or pointy-topped, or anything between: all are drawn
        angle = rng.uniform(0, _ANY_TURN[shape])
    outline = shape_outline(shape, centre[0], centre[1], radius, angle)
    tone = jitter_colour(rng, colour)
    if style == "filled":
        if rng.random() < 0.3:
            _uneven_fill(image, rng, outline, tone)
        else:
            draw.polygon(outline, fill=tone)
        return
    width = max(2, int(radius * rng.uniform(0.12, 0.3)))
    if style == "outline":
        draw.line(outline + outline[:2], fill=tone, width=width, joint="curve")
        return
    # sketch: one or two wobbly strokes, sometimes over a rough, patchy fill
    if rng.random() < 0.4:
        _uneven_fill(image, rng, _wobble(outline, rng, radius), tone)
    for _ in range(1 + int(rng.random() < 0.4)):
        path = _wobble(outline, rng, radius)
        overshoot = int(rng.integers(1, 5))
        draw.line(path + path[:overshoot], fill=jitter_colour(rng, colour, 8), width=width, joint="curve")


def _uneven_fill(image: Image.Image, rng: np.random.Generator, outline, tone: tuple[int, ...]) -> None:
    """A fill whose tone varies smoothly, as a brush or a crayon leaves it."""
    size = image.size[0]
    mask = Image.new("L", image.size, 0)
    ImageDraw.Draw(mask).polygon(outline, fill=255)
    low = rng.uniform(-28, 28, size=(4, 4, 1)) + rng.uniform(-6, 6, size=(4, 4, 3))
    shade = np.asarray(Image.fromarray(((low - low.min()) * 255 / max(np.ptp(low), 1e-6)).astype(np.uint8))
                       .resize((size, size), Image.Resampling.BICUBIC), dtype=np.float64)
    shade = shade * max(np.ptp(low), 1e-6) / 255 + low.min()
    layer = np.clip(np.asarray(tone, dtype=np.float64) + shade, 0, 255).astype(np.uint8)
    image.paste(Image.fromarray(layer), (0, 0), mask)


# -- words ---------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def font_files() -> tuple[str, ...]:
    """The TrueType fonts of _FONT_NAMES found on this machine (may be none: PIL's default is used)."""
    found: dict[str, str] = {}
    for folder in _FONT_DIRS:
        root = Path(folder)
        if not root.is_dir():
            continue
        for path in root.rglob("*.ttf"):
            if path.name in _FONT_NAMES and path.name not in found:
                found[path.name] = str(path)
    return tuple(found[n] for n in _FONT_NAMES if n in found)


@lru_cache(maxsize=256)
def font(index: int, px: int) -> ImageFont.ImageFont:
    """Font number `index` (0 = PIL's built-in, then font_files()) at px pixels."""
    files = font_files()
    if index == 0 or index > len(files):
        return ImageFont.load_default(size=px)
    return ImageFont.truetype(files[index - 1], px)


def font_count() -> int:
    return 1 + len(font_files())


# -- finishing ------------------------------------------------------------------------------------


def finish(image: Image.Image, rng: np.random.Generator, size: int, effects: bool) -> Image.Image:
    """Downsample to the output size; with effects, the look of a photo or a screenshot: a slight
    rotation and scale, blur, grain, low contrast, JPEG artefacts (each only sometimes)."""
    if effects and rng.random() < 0.3:
        big = image.size[0]
        edge = tuple(int(v) for v in np.asarray(image, dtype=np.float64)[[0, -1]].reshape(-1, 3).mean(0))
        scale = rng.uniform(0.9, 1.1)
        image = image.rotate(rng.uniform(-8, 8), resample=Image.Resampling.BILINEAR, fillcolor=edge)
        if abs(scale - 1) > 0.02:
            side = int(big / scale)
            offset = (big - side) // 2
            image = (image.crop((offset, offset, offset + side, offset + side)) if side < big else
                     _pad(image, side, edge)).resize((big, big), Image.Resampling.BILINEAR)
    if effects and rng.random() < 0.25:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
    image = image.resize((size, size), Image.Resampling.BOX)
    if not effects:
        return image
    if rng.random() < 0.15:
        image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.45, 0.75))
    if rng.random() < 0.2:
        grain = rng.normal(0, rng.uniform(3, 12), size=(size, size, 1))
        image = Image.fromarray(np.clip(np.asarray(image, dtype=np.float64) + grain, 0, 255).astype(np.uint8))
    if rng.random() < 0.3:
        buffer = BytesIO()
        image.save(buffer, "JPEG", quality=int(rng.integers(25, 80)))
        image = Image.open(BytesIO(buffer.getvalue())).convert("RGB")
    return image


def _pad(image: Image.Image, side: int, fill: tuple[int, ...]) -> Image.Image:
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - image.size[0]) // 2, (side - image.size[1]) // 2))
    return canvas
