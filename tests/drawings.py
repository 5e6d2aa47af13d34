"""A test set of drawings made the way a person makes them in a paint program, not by the generator.

Nothing here comes from trainer.demo.world or trainer.demo.render: the shapes are PIL's own primitives
(the ellipse tool, the rectangle tool, a polygon clicked point by point), the colours are a paint
program's palette swatches or pure screen colours, the canvases are the sizes people save (square
or not), the backgrounds white, black, mid-grey or one flat colour, and the shapes are one or a
few, large, filled or outlined, saved as PNG or JPEG. The set is seeded and balanced: every shape
with every colour, over the four backgrounds.

    images, labels = drawings(320, seed=0)   # labels[i] = {"shape": ..., "colour": ..., ...}
"""

from __future__ import annotations

import math
from io import BytesIO

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "cross", "heart", "hexagon", "diamond")
# Two swatches per colour: a paint program's default palette, and the plain screen colour.
PALETTE = {
    "red": ((237, 28, 36), (255, 0, 0)),
    "orange": ((255, 127, 39), (255, 140, 0)),
    "yellow": ((255, 242, 0), (255, 255, 0)),
    "green": ((34, 177, 76), (0, 200, 0)),
    "cyan": ((0, 210, 230), (0, 255, 255)),
    "blue": ((63, 72, 204), (0, 0, 255)),
    "purple": ((163, 73, 164), (128, 0, 160)),
    "pink": ((255, 174, 201), (255, 105, 180)),
    "white": ((255, 255, 255), (245, 245, 245)),
    "black": ((0, 0, 0), (20, 20, 20)),
}
BACKGROUNDS = ("white", "black", "grey", "coloured")
_FLAT = {"white": (255, 255, 255), "black": (0, 0, 0), "grey": (128, 128, 128)}
_CANVASES = ((256, 256), (300, 300), (400, 400), (512, 512), (400, 300), (300, 400))


def _background_colour(kind: str, colour: tuple[int, int, int], rng: np.random.Generator) -> tuple[int, ...]:
    if kind in _FLAT:
        return _FLAT[kind]
    # One flat colour picked from a swatch grid, far from the shape's colour so the shape shows.
    swatches = [c for pair in PALETTE.values() for c in pair] + [(200, 191, 231), (181, 230, 29), (153, 217, 234)]
    far = [s for s in swatches if sum((a - b) ** 2 for a, b in zip(s, colour)) > 150 ** 2
           and s not in ((255, 255, 255), (0, 0, 0), (245, 245, 245), (20, 20, 20))]
    return far[int(rng.integers(len(far)))]


def _regular(n: int, cx: float, cy: float, r: float, start: float) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(start + 2 * math.pi * i / n), cy + r * math.sin(start + 2 * math.pi * i / n))
            for i in range(n)]


def _draw(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, colour, width: int | None,
          rng: np.random.Generator) -> None:
    """One shape with a paint program's tools; width None fills it, else outlines it."""
    fill, outline = (colour, None) if width is None else (None, colour)
    line = width or 1
    if shape == "circle":
        squash = rng.uniform(0.92, 1.08)  # a hand-dragged ellipse tool is never quite round
        draw.ellipse((cx - r, cy - r * squash, cx + r, cy + r * squash), fill=fill, outline=outline, width=line)
    elif shape == "square":
        s = r * 0.85
        if rng.random() < 0.25:
            draw.rounded_rectangle((cx - s, cy - s, cx + s, cy + s), radius=s * 0.15, fill=fill, outline=outline,
                                   width=line)
        else:
            draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill, outline=outline, width=line)
    elif shape == "triangle":
        if rng.random() < 0.8:  # the isosceles a person clicks: apex up, flat base
            points = [(cx, cy - r), (cx + r * rng.uniform(0.85, 1.0), cy + r * 0.75),
                      (cx - r * rng.uniform(0.85, 1.0), cy + r * 0.75)]
        else:  # a right triangle
            points = [(cx - r * 0.85, cy - r * 0.85), (cx - r * 0.85, cy + r * 0.85), (cx + r * 0.85, cy + r * 0.85)]
        draw.polygon(points, fill=fill, outline=outline, width=line)
    elif shape == "star":
        inner = rng.uniform(0.38, 0.5)
        points = [(cx + (r if i % 2 == 0 else r * inner) * math.cos(-math.pi / 2 + i * math.pi / 5),
                   cy + (r if i % 2 == 0 else r * inner) * math.sin(-math.pi / 2 + i * math.pi / 5))
                  for i in range(10)]
        draw.polygon(points, fill=fill, outline=outline, width=line)
    elif shape == "cross":  # a plus sign
        t = r * rng.uniform(0.28, 0.38)
        points = [(cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t), (cx + r, cy + t),
                  (cx + t, cy + t), (cx + t, cy + r), (cx - t, cy + r), (cx - t, cy + t), (cx - r, cy + t),
                  (cx - r, cy - t), (cx - t, cy - t)]
        draw.polygon(points, fill=fill, outline=outline, width=line)
    elif shape == "heart":  # two round lobes and a point, traced as one path
        path = []
        for a in np.linspace(0, 2 * math.pi, 64, endpoint=False):
            x = 16 * math.sin(a) ** 3
            y = 13 * math.cos(a) - 5 * math.cos(2 * a) - 2 * math.cos(3 * a) - math.cos(4 * a)
            path.append((cx + r * x / 16.5, cy - r * y / 16.5 - r * 0.1))
        draw.polygon(path, fill=fill, outline=outline, width=line)
    elif shape == "hexagon":
        start = 0.0 if rng.random() < 0.5 else math.pi / 6  # flat-topped or pointy-topped
        draw.polygon(_regular(6, cx, cy, r, start), fill=fill, outline=outline, width=line)
    elif shape == "diamond":
        w = r * rng.uniform(0.6, 0.75)
        draw.polygon([(cx, cy - r), (cx + w, cy), (cx, cy + r), (cx - w, cy)], fill=fill, outline=outline,
                     width=line)
    else:
        raise ValueError(shape)


def drawing(shape: str, colour: str, background: str, rng: np.random.Generator,
            count: int | None = None) -> tuple[Image.Image, dict]:
    """One drawing of `shape` in `colour` on `background` (count shapes, else mostly one), with its labels."""
    width, height = _CANVASES[int(rng.integers(len(_CANVASES)))]
    rgb = PALETTE[colour][int(rng.integers(2))]
    image = Image.new("RGB", (width, height), _background_colour(background, rgb, rng))
    draw = ImageDraw.Draw(image)
    side = min(width, height)  # the model sees the centre square: draw inside it
    drawn = 1 if rng.random() < 0.75 else int(rng.integers(2, 4))
    count = count or drawn
    outlined = rng.random() < 0.35
    stroke = max(3, int(side * rng.uniform(0.025, 0.05))) if outlined else None
    if count == 1:
        r = side * rng.uniform(0.25, 0.42)
        cx = width / 2 + rng.uniform(-0.06, 0.06) * side
        cy = height / 2 + rng.uniform(-0.06, 0.06) * side
        _draw(draw, shape, cx, cy, r, rgb, stroke, rng)
    else:  # a few, side by side in a row or a column
        r = side * rng.uniform(0.13, 0.16)
        horizontal = rng.random() < 0.5
        for i in range(count):
            offset = (i - (count - 1) / 2) * side * 0.34
            cx, cy = (width / 2 + offset, height / 2) if horizontal else (width / 2, height / 2 + offset)
            _draw(draw, shape, cx, cy, r, rgb, stroke, rng)
    if rng.random() < 0.3:  # saved as JPEG
        buffer = BytesIO()
        image.save(buffer, "JPEG", quality=int(rng.integers(60, 95)))
        image = Image.open(BytesIO(buffer.getvalue())).convert("RGB")
    return image, {"shape": shape, "colour": colour, "background": background, "count": count,
                   "outlined": outlined}


def drawings(n: int = 320, seed: int = 0) -> tuple[list[Image.Image], list[dict]]:
    """n drawings balanced over shapes x colours, backgrounds cycling; a shape never has the
    background's own colour (white on white cannot be seen)."""
    rng = np.random.default_rng([seed, 2021])
    colours = tuple(PALETTE)
    images, labels = [], []
    for i in range(n):
        shape = SHAPES[i % len(SHAPES)]
        colour = colours[(i // len(SHAPES)) % len(colours)]
        background = BACKGROUNDS[(i // (len(SHAPES) * len(colours)) + i) % len(BACKGROUNDS)]
        if background == colour:  # white or black: the opposite flat background instead
            background = "black" if colour == "white" else "white"
        image, label = drawing(shape, colour, background, rng)
        images.append(image)
        labels.append(label)
    return images, labels
