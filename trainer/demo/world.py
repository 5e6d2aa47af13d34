"""A synthetic image-caption world that a small CLIP learns in minutes on a CPU.

Each image is a scene of 1-4 objects of one kind (shape, colour, size, style) on a background,
or a short word written in a colour and a font (the paper's observation that CLIP learns to
read). The look covers what people show a model: white, black, coloured, gradient, photo-like
and textured grey backgrounds; shapes from small to filling the frame, filled, outlined or
hand-drawn; blur, grain, low contrast, JPEG artefacts and slight rotation (trainer.demo.render).
Captions describe the scene with varied templates and synonyms, and sometimes leave an attribute
out (or say only the shape); `attrs["mentioned"]` lists the attributes a caption states.

Some shape-colour pairs are held out: `split="train"` never draws them and `split="heldout"`
draws only them, so zero-shot transfer to unseen combinations is measured, not assumed.
`contrast_group` gives the pins of a few samples that differ in one attribute only (hard
negatives for the contrastive loss: two scenes that differ only by shape, say).
Everything is seeded: the same World seed and sample rng give the same images and captions.
A World is immutable once built (a frozen dataclass; its pairs, tasks and tables are tuples and
read-only mappings): each sample draws from the rng the caller passes, so two users of one world can
never change what the other draws.
"""

from __future__ import annotations

import colorsys
import csv
import json
import math
import tarfile
from dataclasses import dataclass, field
from functools import lru_cache
from io import BytesIO
from pathlib import Path
from types import MappingProxyType

import numpy as np
from PIL import Image, ImageDraw

from cliplab.engine.errors import CliplabError
from cliplab.trainer.demo.render import (
    BACKGROUNDS,
    STYLE_WEIGHTS,
    STYLES,
    background,
    draw_shape,
    finish,
    font,
    font_count,
    jitter_colour,
)
from cliplab.trainer.demo.render import pick as _pick

SHAPES = ("circle", "square", "triangle", "star", "cross", "heart", "hexagon", "diamond")
# Well separated in hue or lightness.
COLOURS = MappingProxyType({
    "red": (220, 30, 30), "orange": (245, 140, 20), "yellow": (240, 225, 30), "green": (30, 165, 45),
    "cyan": (40, 215, 225), "blue": (35, 60, 225), "purple": (135, 40, 190), "pink": (250, 135, 205),
    "white": (250, 250, 250), "black": (15, 15, 15),
})
# What people call each colour (hue in degrees, saturation, value; HSV boxes after everyday and CSS
# usage): an object of a named colour is drawn at its swatch or anywhere in its box, so "orange"
# covers a paint program's red-leaning orange as well as amber, and "pink" light pink as well as hot
# pink. The boxes do not overlap (red ends at 8 degrees, orange starts at 16): no colour is two names.
COLOUR_RANGES = MappingProxyType({
    "red": ((-12, 8), (0.75, 1.0), (0.6, 1.0)), "orange": ((16, 38), (0.8, 1.0), (0.85, 1.0)),
    "yellow": ((48, 63), (0.75, 1.0), (0.85, 1.0)), "green": ((90, 150), (0.6, 1.0), (0.45, 0.85)),
    "cyan": ((175, 195), (0.65, 1.0), (0.8, 1.0)), "blue": ((215, 245), (0.6, 1.0), (0.6, 1.0)),
    "purple": ((265, 300), (0.5, 1.0), (0.45, 0.8)), "pink": ((310, 350), (0.2, 0.65), (0.88, 1.0)),
    "white": ((0, 360), (0.0, 0.04), (0.94, 1.0)), "black": ((0, 360), (0.0, 0.15), (0.0, 0.1)),
})
# Share of named-colour objects drawn at the swatch itself (then jittered a little, as always). A
# run with every colour uniform in its box read drawings' colours better than the swatch-only model
# (91.6% against 87.5%) but learned held-out colours slowly (81-82% from step 3,600 on a uniform-box
# test, where the swatch-only model scores 86%): uniform boxes put many objects near a neighbour's
# edge, where a name is a matter of taste. Half at the swatch keeps the edges rare.
NAMED_SWATCH_SHARE = 0.5
SIZES = ("small", "large")
COUNTS = (1, 2, 3, 4)
POSITIONS = ("left", "right", "top", "bottom", "center")
WORDS = ("cat", "dog", "sun", "car", "tree", "fish", "bird", "boat", "moon", "house")

# 12 of the 80 shape-colour pairs (15%): every shape and every colour keeps training partners
# and has at least one held-out partner, so both zero-shot tasks can be measured on them.
DEFAULT_HOLDOUT = (
    ("circle", "green"), ("square", "pink"), ("triangle", "blue"), ("star", "red"),
    ("cross", "yellow"), ("heart", "cyan"), ("hexagon", "orange"), ("diamond", "purple"),
    ("square", "white"), ("star", "black"), ("heart", "green"), ("hexagon", "red"),
)
SPLITS = ("train", "heldout", "all")
WORD_FRACTION = 0.15  # share of word images in "train" and "all" samples
SHAPE_ONLY_CAPTIONS = 0.25  # share of scene captions that name only the count and the shape
# Share of training scenes drawn in a colour that has no name in the world (grey, beige, brown, slate)
# and captioned without a colour: shape is then taught apart from the ten named colours, and no
# held-out shape-colour pair is ever shown (each such colour is far from every named one).
UNNAMED_COLOUR_FRACTION = 0.25
_UNNAMED_MIN_DISTANCE = 50  # RGB, from every colour of every named box (browns, beiges, slates pass)
# What a contrast group varies (the rest is shared): shape most, as it is the attribute learned last.
_GROUP_VARIES = ("shape", "position", "count", "colour")
_GROUP_WEIGHTS = (0.55, 0.15, 0.15, 0.15)
# Share of contrast groups that are pinned; the others are independent samples (words, unnamed
# colours, shape-only captions as without groups), so grouping adds hard negatives and takes nothing.
CONTRAST_SHARE = 0.5
# Share of shape groups drawn as one shape filling the frame, as a person draws one: there a circle and
# a hexagon differ by 3-4 pixels at 64 px, against under one for the small shapes of most scenes, so
# these pairs teach the outline itself (the shipped model before them called 26 of 40 drawn hexagons
# circles, even in colours it had seen hexagons in).
SHAPE_GROUP_FILLS = 0.5
# The shapes whose outlines are nearest (the demo model's measured confusions: a circle and a hexagon
# differ by under 14% of the radius). A shape group pairs a shape with one of these first, where its
# colour allows, so that the outline, not a colour that only one of them came in, tells them apart.
LOOK_ALIKES = MappingProxyType({
    "circle": ("hexagon", "heart"), "hexagon": ("circle", "square"), "square": ("hexagon", "diamond", "cross"),
    "diamond": ("square", "triangle"), "triangle": ("star", "diamond"), "star": ("cross", "triangle"),
    "cross": ("star", "square"), "heart": ("circle", "triangle"),
})

_NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
_COUNT_PHRASES = {1: ("a", "one", "a single"), 2: ("two", "2", "a pair of"), 3: ("three", "3"), 4: ("four", "4")}
_SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
_STYLE_WORDS = {"filled": ("filled", "solid"), "outline": ("outlined", "outline"),
                "sketch": ("hand-drawn", "sketched", "doodled")}
_POSITION_PHRASES = {
    "left": ("on the left", "on the left side", "to the left"),
    "right": ("on the right", "on the right side", "to the right"),
    "top": ("at the top", "near the top", "in the upper part"),
    "bottom": ("at the bottom", "near the bottom", "in the lower part"),
    "center": ("in the center", "in the middle"),
}
# No colour names here: a caption's colour word is always the object's.
_BACKGROUND_PHRASES = {
    "plain": ("on a plain background", "on a plain grey background"),
    "stripes": ("on a striped background", "on stripes"),
    "dots": ("on a dotted background", "on a polka dot background"),
    "checker": ("on a checkered background", "on a checkerboard"),
    "noise": ("on a noisy background", "on a grainy background"),
    "light": ("on a light background", "on a blank page", "on a bright background"),
    "dark": ("on a dark background", "against a dark background"),
    "coloured": ("on a coloured background", "on a colourful background"),
    "gradient": ("on a gradient background", "on a gradient"),
    "photo": ("on a blurry background", "on a photo-like background"),
}
_SCENE_TEMPLATES = (
    "{np}{pos}{bg}.", "a picture of {np}{pos}{bg}.", "an image of {np}{pos}{bg}.",
    "a drawing of {np}{pos}{bg}.", "there {verb} {np}{pos}{bg}.", "{np}{pos}{bg}", "a photo of {np}{pos}{bg}.",
)
_WORD_TEMPLATES = (
    'the word "{w}" written in {c}{bg}.', 'the text "{w}" in {c} letters{bg}.', '"{w}" written in {c}{bg}.',
    'a picture of the word "{w}"{bg}.', 'the word "{w}"{bg}.', 'a sign that says "{w}" in {c}{bg}.',
)
_DROP = {"size": 0.4, "position": 0.3, "background": 0.5, "colour": 0.2, "shape": 0.1, "style": 0.6}
_POSITION_CENTRES = {"left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25),
                     "bottom": (0.5, 0.75), "center": (0.5, 0.5)}
# An object of this colour disappears on these backgrounds.
_INVISIBLE_ON = {"white": ("light",), "black": ("dark",)}


@dataclass(frozen=True)
class Sample:
    image: Image.Image | None  # None when sampled with render=False
    caption: str
    attrs: dict


@dataclass(frozen=True)
class Task:
    """A zero-shot classification task: class names, one prompt template, an ensemble of templates."""

    classnames: tuple[str, ...]
    prompts: tuple[str, ...]
    ensemble: tuple[str, ...]
    attr: str
    values: tuple = ()  # the attrs value of each class, same order


def _plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("s") else "s")


def visible(colour: str | None, background: str) -> bool:
    """Whether an object of this colour can be seen on this kind of background."""
    return background not in _INVISIBLE_ON.get(colour, ())


def named_colour(rng: np.random.Generator, colour: str) -> tuple[int, int, int]:
    """An RGB colour that people would call `colour`: its swatch (COLOURS) with NAMED_SWATCH_SHARE,
    else uniform in its COLOUR_RANGES box."""
    if rng.random() < NAMED_SWATCH_SHARE:
        return COLOURS[colour]
    (h0, h1), (s0, s1), (v0, v1) = COLOUR_RANGES[colour]
    rgb = colorsys.hsv_to_rgb((rng.uniform(h0, h1) % 360) / 360, rng.uniform(s0, s1), rng.uniform(v0, v1))
    return tuple(int(round(255 * c)) for c in rgb)


def colour_name(rgb: tuple[int, int, int]) -> str | None:
    """The name whose COLOUR_RANGES box holds this RGB colour (within whole-pixel rounding), or None."""
    h, sat, val = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    tol = 1.5 / 255
    for name, ((h0, h1), (s0, s1), (v0, v1)) in COLOUR_RANGES.items():
        in_hue = any(h0 - 1 <= deg <= h1 + 1 for deg in (h * 360, h * 360 - 360))
        # Hue is meaningless at no saturation or no value (greys, black): only the grey boxes hold those.
        s_tol = 0.02 + tol / max(val, tol)  # rounding moves a dark colour's saturation a lot
        if (in_hue or h1 - h0 >= 360 or sat < tol or val < tol) and s0 - s_tol <= sat <= s1 + s_tol \
                and v0 - tol <= val <= v1 + tol:
            return name
    return None


@lru_cache(maxsize=1)
def _named_grid() -> np.ndarray:
    """Dense samples of every named box (RGB), corners included: what an unnamed colour keeps away from."""
    points = []
    for (h0, h1), (s0, s1), (v0, v1) in COLOUR_RANGES.values():
        for h in np.linspace(h0, h1, 9):
            for sat in np.linspace(s0, s1, 5):
                for val in np.linspace(v0, v1, 5):
                    points.append(colorsys.hsv_to_rgb((h % 360) / 360, sat, val))
    return 255 * np.asarray(points)


def unnamed_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A muted colour (greys, beiges, browns, slates: low saturation, mid lightness) at least
    _UNNAMED_MIN_DISTANCE (RGB, before truncation to whole pixel values, which moves it by under 2)
    from every colour of every named box: no one would call it one of them."""
    named = _named_grid()
    while True:
        hue, saturation, value = rng.uniform(0, 1), rng.uniform(0, 0.35), rng.uniform(0.3, 0.85)
        rgb = 255 * np.array(colorsys.hsv_to_rgb(hue, saturation, value))
        if np.linalg.norm(named - rgb, axis=1).min() >= _UNNAMED_MIN_DISTANCE:
            return tuple(int(v) for v in rgb)


@dataclass(frozen=True)
class World:
    """The seeded generator of (image, caption, attrs) samples and its evaluation sets; immutable
    (`dataclasses.replace(world, image_size=96)` makes another).

    holdout: the shape-colour pairs training never draws (any iterable; kept sorted, as a tuple).
    effects=False draws without the photo-like finishing (blur, grain, JPEG, rotation): exact pixels."""

    seed: int = 0
    image_size: int = 64
    holdout: tuple[tuple[str, str], ...] = DEFAULT_HOLDOUT
    effects: bool = True
    train_pairs: tuple[tuple[str, str], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        holdout = tuple(sorted(set(tuple(p) for p in (self.holdout or ()))))
        for shape, colour in holdout:
            if shape not in SHAPES or colour not in COLOURS:
                raise CliplabError(f"The held-out pair ({shape!r}, {colour!r}) is not a known shape and colour; "
                                   f"shapes are {', '.join(SHAPES)} and colours {', '.join(COLOURS)}.")
        held = set(holdout)
        object.__setattr__(self, "holdout", holdout)  # frozen: normalised once, here
        object.__setattr__(self, "train_pairs", tuple((s, c) for s in SHAPES for c in COLOURS if (s, c) not in held))

    # -- sampling -------------------------------------------------------------------------------

    def pairs(self, split: str) -> tuple[tuple[str, str], ...]:
        """The shape-colour pairs a split draws from (train, heldout or all)."""
        if split == "train":
            return self.train_pairs
        if split == "heldout":
            if not self.holdout:
                raise CliplabError("This world holds out no shape-colour pairs, so it has no held-out split; "
                                   "use split='train' or 'all'.")
            return self.holdout
        if split == "all":
            return tuple((s, c) for s in SHAPES for c in COLOURS)
        raise CliplabError(f"Unknown split {split!r}; use one of {', '.join(SPLITS)}.")

    def sample(self, n: int, split: str = "train", rng: np.random.Generator | None = None,
               render: bool = True) -> list[Sample]:
        """n random samples; without an rng, a fresh stream from the world's seed (the same samples on
        every call). render=False skips drawing (image None): captions alone, for vocabularies, ~50x faster."""
        rng = np.random.default_rng(self.seed) if rng is None else rng
        pairs = self.pairs(split)
        out = []
        for _ in range(n):
            if split != "heldout" and rng.random() < WORD_FRACTION:
                out.append(self.word_sample(rng, render=render))
            else:
                out.append(self.scene_sample(rng, pairs, render=render))
        return out

    def contrast_group(self, rng: np.random.Generator, k: int, split: str = "train",
                       share: float = 1.0) -> list[dict | None]:
        """Pins for k samples that share everything but one attribute (shape, position, count or
        colour; the word for word images): negatives that only that attribute tells apart. A shape
        group starts with a shape and one of its LOOK_ALIKES. With probability 1 - share the group is
        k independent samples instead (pins None). Draw each with `pinned_sample`."""
        if rng.random() >= share:
            return [None] * k
        pairs = self.pairs(split)
        if split != "heldout" and rng.random() < WORD_FRACTION:
            colour = _pick(rng, tuple(COLOURS))
            bg = _pick(rng, tuple(b for b in BACKGROUNDS if visible(colour, b)))
            return [dict(kind="word", word=w, colour=colour, background=bg) for w in _cycle(rng, WORDS, k)]
        vary = _GROUP_VARIES[int(rng.choice(len(_GROUP_VARIES), p=_GROUP_WEIGHTS))]
        shape, colour = _pick(rng, pairs)
        count = 1 if vary == "position" else int(_pick(rng, COUNTS))
        base = dict(kind="scene", shape=shape, colour=colour, count=count,
                    size="small" if count >= 3 or vary == "count" else _pick(rng, SIZES),
                    position=(_pick(rng, POSITIONS) if vary != "count" else "center") if count == 1 else None,
                    background=_pick(rng, tuple(b for b in BACKGROUNDS if visible(colour, b))),
                    style=_pick_style(rng))
        if vary == "shape":
            if rng.random() < SHAPE_GROUP_FILLS:
                base.update(count=1, size="large", position="center", fills=True)
            options = tuple(s for s, c in pairs if c == colour)
            alike = tuple(s for s in LOOK_ALIKES[shape] if s in options)
            if alike:
                partner = _pick(rng, alike)
                rest = [s for s in _cycle(rng, options, len(options)) if s not in (shape, partner)]
                return [{**base, "shape": value} for value in _cycle_from([shape, partner] + rest, k)]
        elif vary == "colour":
            options = tuple(c for s, c in pairs if s == shape and visible(c, base["background"]))
        elif vary == "count":
            options = COUNTS
        else:
            options = POSITIONS
        pins = []
        for value in _cycle(rng, options, k):
            pin = {**base, vary: value}
            if vary == "count":
                pin["position"] = "center" if value == 1 else None
            pins.append(pin)
        return pins

    def pinned_sample(self, rng: np.random.Generator, pins: dict | None, split: str = "train") -> Sample:
        """One sample with the attributes `pins` fixes (as `contrast_group` returns them); None: a free one."""
        if pins is None:
            return self.sample(1, split, rng)[0]
        fixed = {k: v for k, v in pins.items() if k != "kind" and v is not None}
        if pins.get("kind") == "word":
            return self.word_sample(rng, **fixed)
        return self.scene_sample(rng, self.pairs(split), **fixed)

    def scene_sample(self, rng: np.random.Generator, pairs: tuple[tuple[str, str], ...] | None = None,
                     full_caption: bool = False, render: bool = True, unnamed_colours: bool = True,
                     **fixed) -> Sample:
        """One shapes scene; `fixed` pins attributes (shape, colour, size, count, position, background,
        style; fills=True draws one large centred shape filling the frame). Training pairs may come in an
        unnamed colour (UNNAMED_COLOUR_FRACTION) unless unnamed_colours=False or colour is pinned."""
        pairs = pairs if pairs is not None else self.pairs("train")
        if "shape" in fixed or "colour" in fixed:
            pairs = tuple(p for p in pairs if fixed.get("shape", p[0]) == p[0]
                          and fixed.get("colour", p[1]) == p[1])
            if not pairs:
                raise CliplabError(f"No shape-colour pair of this split matches {fixed}.")
        shape, colour = _pick(rng, pairs)
        rgb = named_colour(rng, colour)
        if (unnamed_colours and "colour" not in fixed and not full_caption and not set(pairs) & set(self.holdout)
                and rng.random() < UNNAMED_COLOUR_FRACTION):
            colour, rgb = None, unnamed_colour(rng)
        count = fixed.get("count") or int(_pick(rng, COUNTS))
        # Three or four large objects do not fit side by side in a small image.
        size = fixed.get("size") or ("small" if count >= 3 else _pick(rng, SIZES))
        position = (fixed.get("position") or _pick(rng, POSITIONS)) if count == 1 else None
        bg = fixed.get("background") or _pick(rng, tuple(b for b in BACKGROUNDS if visible(colour, b)))
        style = fixed.get("style") or _pick_style(rng)
        attrs = {"kind": "scene", "shape": shape, "colour": colour, "rgb": rgb, "size": size, "count": count,
                 "position": position, "background": bg, "style": style}
        if fixed.get("fills") and count == 1 and size == "large" and position == "center":
            attrs["fills"] = True  # drawn filling the frame (a shape group's pair); else 40% of such scenes
        image = self._render_scene(rng, attrs) if render else None
        caption, mentioned = self._scene_caption(rng, attrs, full_caption)
        attrs["mentioned"] = mentioned
        return Sample(image, caption, attrs)

    def word_sample(self, rng: np.random.Generator, full_caption: bool = False, render: bool = True,
                    **fixed) -> Sample:
        """One image of a word written in a colour; `fixed` pins word, colour or background."""
        word = fixed.get("word") or _pick(rng, WORDS)
        colour = fixed.get("colour") or _pick(rng, tuple(COLOURS))
        bg = fixed.get("background") or _pick(rng, tuple(b for b in BACKGROUNDS if visible(colour, b)))
        attrs = {"kind": "word", "word": word, "colour": colour, "rgb": named_colour(rng, colour), "background": bg,
                 "shape": None, "size": None, "count": None, "position": None, "style": None}
        image = self._render_word(rng, attrs) if render else None
        template = _WORD_TEMPLATES[0] if full_caption else _pick(rng, _WORD_TEMPLATES)
        bg_phrase = "" if not full_caption and rng.random() < _DROP["background"] else " " + _pick(
            rng, _BACKGROUND_PHRASES[bg])
        mentioned = ["word"] + (["colour"] if "{c}" in template else []) + (["background"] if bg_phrase else [])
        attrs["mentioned"] = mentioned
        return Sample(image, template.format(w=word, c=colour, bg=bg_phrase), attrs)

    # -- captions -------------------------------------------------------------------------------

    def _scene_caption(self, rng: np.random.Generator, attrs: dict, full: bool) -> tuple[str, list[str]]:
        count = attrs["count"]
        if not full and rng.random() < SHAPE_ONLY_CAPTIONS:
            # "a drawing of a triangle.": shape named on its own, as the zero-shot prompts ask it
            noun = _plural(attrs["shape"]) if count > 1 else attrs["shape"]
            template = _pick(rng, _SCENE_TEMPLATES)
            np_ = f"{_pick(rng, _COUNT_PHRASES[count])} {noun}"
            return template.format(np=np_, pos="", bg="", verb="is" if count == 1 else "are"), ["count", "shape"]

        def keep(name: str) -> bool:
            return full or rng.random() >= _DROP[name]

        keep_shape, keep_colour = keep("shape"), keep("colour") and attrs["colour"] is not None
        if not keep_shape and not keep_colour:
            keep_shape = True  # a caption must say what is there
        words = [_COUNT_PHRASES[count][0] if full else _pick(rng, _COUNT_PHRASES[count])]
        mentioned = ["count"]
        if keep("size"):
            words.append(_pick(rng, _SIZE_WORDS[attrs["size"]]) if not full else attrs["size"])
            mentioned.append("size")
        if not full and keep("style"):
            words.append(_pick(rng, _STYLE_WORDS[attrs["style"]]))
            mentioned.append("style")
        if keep_colour:
            words.append(attrs["colour"])
            mentioned.append("colour")
        noun = attrs["shape"] if keep_shape else "shape"
        if keep_shape:
            mentioned.append("shape")
        words.append(_plural(noun) if count > 1 else noun)
        np_ = " ".join(words)
        pos = ""
        if attrs["position"] is not None and keep("position"):
            pos = " " + (_POSITION_PHRASES[attrs["position"]][0] if full
                         else _pick(rng, _POSITION_PHRASES[attrs["position"]]))
            mentioned.append("position")
        bg = ""
        if keep("background"):
            bg = " " + (_BACKGROUND_PHRASES[attrs["background"]][0] if full
                        else _pick(rng, _BACKGROUND_PHRASES[attrs["background"]]))
            mentioned.append("background")
        template = _SCENE_TEMPLATES[1] if full else _pick(rng, _SCENE_TEMPLATES)
        verb = "is" if words[0].startswith("a ") or count == 1 else "are"
        return template.format(np=np_, pos=pos, bg=bg, verb=verb), mentioned

    # -- rendering ------------------------------------------------------------------------------

    def _canvas(self, rng: np.random.Generator, kind: str, rgb: tuple[int, int, int]) -> tuple[Image.Image, int]:
        big = 2 * self.image_size  # draw at 2x, then downsample: cheap anti-aliasing
        return background(kind, big, rng, rgb), big

    def _render_scene(self, rng: np.random.Generator, attrs: dict) -> Image.Image:
        image, big = self._canvas(rng, attrs["background"], attrs["rgb"])
        count = attrs["count"]
        if attrs["size"] == "small":
            radius = big * rng.uniform(0.08, 0.125)
        elif count > 1:
            radius = big * rng.uniform(0.17, 0.22)
        elif attrs["position"] == "center" and (attrs.get("fills") or rng.random() < 0.4):
            radius = big * rng.uniform(0.3, 0.46)  # fills the frame, as a person draws one shape
        else:
            radius = big * rng.uniform(0.19, 0.25)
        if count == 1:
            fx, fy = _POSITION_CENTRES[attrs["position"]]
            centres = [(fx * big + rng.uniform(-0.04, 0.04) * big, fy * big + rng.uniform(-0.04, 0.04) * big)]
        else:
            centres = self._spread(rng, count, radius, big)
        for centre in centres:
            draw_shape(image, rng, attrs["shape"], centre, radius, attrs["rgb"], attrs["style"])
        return finish(image, rng, self.image_size, self.effects)

    @staticmethod
    def _spread(rng: np.random.Generator, count: int, radius: float, big: int) -> list[tuple[float, float]]:
        """Non-overlapping centres: rejection sampling, falling back to a 2x2 grid's cells."""
        lo, hi = radius + 1, big - radius - 1
        for _ in range(200):
            pts = rng.uniform(lo, hi, size=(count, 2))
            d = np.linalg.norm(pts[:, None] - pts[None], axis=-1) + np.eye(count) * big
            if d.min() > 2.15 * radius:
                return [tuple(p) for p in pts.tolist()]
        cells = [(0.27, 0.27), (0.73, 0.27), (0.27, 0.73), (0.73, 0.73)]
        order = rng.permutation(4)[:count]
        return [(cells[i][0] * big, cells[i][1] * big) for i in order]

    def _render_word(self, rng: np.random.Generator, attrs: dict) -> Image.Image:
        image, big = self._canvas(rng, attrs["background"], attrs["rgb"])
        draw = ImageDraw.Draw(image)
        face = font(int(rng.integers(font_count())), int(big * rng.uniform(0.24, 0.34)))
        left, top, right, bottom = draw.textbbox((0, 0), attrs["word"], font=face)
        w, h = right - left, bottom - top
        x = rng.uniform(0, max(big - w, 1)) - left
        y = rng.uniform(0, max(big - h, 1)) - top
        colour = jitter_colour(rng, attrs["rgb"])
        # A stroke in the same colour thickens the strokes enough to survive the 2x downsampling.
        draw.text((x, y), attrs["word"], font=face, fill=colour, stroke_width=1, stroke_fill=colour)
        return finish(image, rng, self.image_size, self.effects)

    # -- evaluation sets ------------------------------------------------------------------------

    def zero_shot_tasks(self) -> dict[str, Task]:
        """Zero-shot tasks over the world's attributes, with prompts in the captions' own phrasing
        (a new dict of frozen tasks on every call)."""
        position_names = tuple(_POSITION_PHRASES[p][0] for p in POSITIONS)
        count_names = tuple(f"{_NUMBER_WORDS[c]} {'shape' if c == 1 else 'shapes'}" for c in COUNTS)
        return {
            "shape": Task(SHAPES, ("a picture of a {}.",),
                          ("a picture of a {}.", "a {}.", "an image of a {}.", "a drawing of a {}.",
                           "there is a {}.", "a photo of a {}."), "shape", SHAPES),
            "colour": Task(tuple(COLOURS), ("a picture of a {} shape.",),
                           ("a picture of a {} shape.", "a {} shape.", "an image of a {} shape.",
                            "a drawing of a {} shape.", "there is a {} shape.", "a photo of a {} shape."),
                           "colour", tuple(COLOURS)),
            "count": Task(count_names, ("a picture of {}.",),
                          ("a picture of {}.", "{}.", "an image of {}.", "a drawing of {}.", "there is {}.",
                           "a photo of {}."), "count", COUNTS),
            "position": Task(position_names, ("a picture of a shape {}.",),
                             ("a picture of a shape {}.", "a shape {}.", "an image of a shape {}.",
                              "a drawing of a shape {}.", "there is a shape {}.", "a photo of a shape {}."),
                             "position", POSITIONS),
            "word": Task(WORDS, ('the word "{}".',),
                         ('the word "{}".', 'a picture of the word "{}".', 'the text "{}".', '"{}".',
                          'a sign that says "{}".'), "word", WORDS),
        }

    def eval_rng(self, purpose: str, seed: int) -> np.random.Generator:
        """The rng of one test set: independent of the training stream (seed and per-sample indices)."""
        return np.random.default_rng([self.seed, seed, 7919, *purpose.encode()])

    def labelled(self, task: str | Task, n: int, split: str = "heldout",
                 seed: int = 0) -> tuple[list[Image.Image], np.ndarray]:
        """n images balanced over the task's classes and their labels (indices into classnames).

        Scenes come from the split's shape-colour pairs; the word task ignores the split (words
        are not held out). Position images have one object, since position describes it.
        """
        if isinstance(task, str):
            tasks = self.zero_shot_tasks()
            if task not in tasks:
                raise CliplabError(f"Unknown task {task!r}; the world's tasks are {', '.join(tasks)}.")
            task = tasks[task]
        rng = self.eval_rng("labelled/" + task.attr + "/" + split, seed)
        pairs = None if task.attr == "word" else self.pairs(split)
        images, labels = [], []
        for i in range(n):
            label = i % len(task.values)
            value = task.values[label]
            if task.attr == "word":
                sample = self.word_sample(rng, word=value)
            elif task.attr == "position":
                sample = self.scene_sample(rng, pairs, count=1, position=value, unnamed_colours=False)
            else:
                sample = self.scene_sample(rng, pairs, unnamed_colours=False, **{task.attr: value})
            images.append(sample.image)
            labels.append(label)
        order = rng.permutation(n)
        return [images[i] for i in order], np.asarray(labels, dtype=np.int64)[order]

    def retrieval_set(self, n: int, split: str = "heldout", seed: int = 0,
                      distinct: bool = True) -> tuple[list[Image.Image], list[str]]:
        """n scenes with captions that state every attribute (one caption per image, same order).

        Every caption is distinct: a scene whose caption repeats an earlier one is drawn again. With
        repeats (a quarter of 500 scenes had one), the right answer was ambiguous and R@1 depended on
        how float rounding broke the tie between identical captions. distinct=False keeps repeats: a
        gallery to search, where no caption is the answer."""
        rng = self.eval_rng("retrieval/" + split, seed)
        pairs = self.pairs(split)
        samples, seen, repeats = [], set(), 0
        while len(samples) < n and repeats < 500:  # 500 repeats in a row: the split has no more captions
            sample = self.scene_sample(rng, pairs, full_caption=True)
            repeats = repeats + 1 if distinct and sample.caption in seen else 0
            if not repeats:
                seen.add(sample.caption)
                samples.append(sample)
        if len(samples) < n:
            raise CliplabError(f"The {split} split has fewer than {n} distinct scene captions; ask for fewer scenes.")
        return [s.image for s in samples], [s.caption for s in samples]

    def caption_corpus(self, n: int, seed: int = 0) -> list[str]:
        """n training captions plus every zero-shot prompt filled in, for training a vocabulary."""
        rng = self.eval_rng("corpus", seed)
        captions = [s.caption for s in self.sample(n, "train", rng, render=False)]
        for task in self.zero_shot_tasks().values():
            captions += [t.format(c) for t in task.ensemble for c in task.classnames]
        return captions


def _pick_style(rng: np.random.Generator) -> str:
    return STYLES[int(rng.choice(len(STYLES), p=STYLE_WEIGHTS))]


def _cycle(rng: np.random.Generator, options: tuple, k: int) -> list:
    """k values from options, all different while there are enough, in random order."""
    return _cycle_from([options[i] for i in rng.permutation(len(options))], k)


def _cycle_from(order: list, k: int) -> list:
    """The first k of order, repeated from its start when it is shorter."""
    return [order[i % len(order)] for i in range(k)]


def write_dataset(world: World, folder: str | Path, n: int, fmt: str = "csv", split: str = "train",
                  seed: int = 0, shard_size: int = 1000) -> Path:
    """Write n samples as JPEG files plus captions in one of the training data formats.

    csv: images/NNNNNN.jpg and captions.csv (`filepath,caption`); returns the CSV path.
    folder: NNNNNN.jpg with NNNNNN.txt beside it; returns the folder.
    webdataset: shard-NNNNNN.tar of NNNNNN.{jpg,txt,json}; returns the brace pattern of the shards.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    samples = world.sample(n, split, world.eval_rng("write/" + split, seed))

    def jpeg(image: Image.Image) -> bytes:
        buffer = BytesIO()
        image.save(buffer, "JPEG", quality=95)
        return buffer.getvalue()

    if fmt == "csv":
        (folder / "images").mkdir(exist_ok=True)
        path = folder / "captions.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["filepath", "caption"])
            for i, s in enumerate(samples):
                (folder / "images" / f"{i:06d}.jpg").write_bytes(jpeg(s.image))
                writer.writerow([f"images/{i:06d}.jpg", s.caption])
        return path
    if fmt == "folder":
        for i, s in enumerate(samples):
            (folder / f"{i:06d}.jpg").write_bytes(jpeg(s.image))
            (folder / f"{i:06d}.txt").write_text(s.caption + "\n", encoding="utf-8")
        return folder
    if fmt == "webdataset":
        shards = max(1, math.ceil(n / shard_size))
        for k in range(shards):
            with tarfile.open(folder / f"shard-{k:06d}.tar", "w") as tar:
                for i in range(k * shard_size, min(n, (k + 1) * shard_size)):
                    s = samples[i]
                    attrs = {key: v for key, v in s.attrs.items()}
                    for ext, data in (("jpg", jpeg(s.image)), ("txt", s.caption.encode()),
                                      ("json", json.dumps(attrs).encode())):
                        info = tarfile.TarInfo(f"{i:06d}.{ext}")
                        info.size = len(data)
                        info.mtime = 0
                        tar.addfile(info, BytesIO(data))
        last = shards - 1
        return folder / (f"shard-{{000000..{last:06d}}}.tar" if shards > 1 else "shard-000000.tar")
    raise CliplabError(f"Unknown dataset format {fmt!r}; use csv, folder or webdataset.")
