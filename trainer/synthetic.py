"""A synthetic image-caption world that a small CLIP learns in minutes on a CPU.

Each image is a scene of 1-4 objects of one kind (shape, colour, size) on a textured grey
background, or a short word written in a colour (the paper's observation that CLIP learns to
read). Captions describe the scene with varied templates and synonyms, and sometimes leave an
attribute out; `attrs["mentioned"]` lists the attributes a caption states.

Some shape-colour pairs are held out: `split="train"` never draws them and `split="heldout"`
draws only them, so zero-shot transfer to unseen combinations is measured, not assumed.
Everything is seeded: the same World seed and sample rng give the same images and captions.
"""

from __future__ import annotations

import csv
import json
import math
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from engine.errors import CliplabError

SHAPES = ("circle", "square", "triangle", "star", "cross", "heart", "hexagon", "diamond")
# Well separated in hue or lightness; backgrounds are mid greys so white and black both stand out.
COLOURS = {
    "red": (220, 30, 30), "orange": (245, 140, 20), "yellow": (240, 225, 30), "green": (30, 165, 45),
    "cyan": (40, 215, 225), "blue": (35, 60, 225), "purple": (135, 40, 190), "pink": (250, 135, 205),
    "white": (250, 250, 250), "black": (15, 15, 15),
}
SIZES = ("small", "large")
COUNTS = (1, 2, 3, 4)
POSITIONS = ("left", "right", "top", "bottom", "center")
BACKGROUNDS = ("plain", "stripes", "dots", "checker", "noise")
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

_NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
_COUNT_PHRASES = {1: ("a", "one", "a single"), 2: ("two", "2", "a pair of"), 3: ("three", "3"), 4: ("four", "4")}
_SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
_POSITION_PHRASES = {
    "left": ("on the left", "on the left side", "to the left"),
    "right": ("on the right", "on the right side", "to the right"),
    "top": ("at the top", "near the top", "in the upper part"),
    "bottom": ("at the bottom", "near the bottom", "in the lower part"),
    "center": ("in the center", "in the middle"),
}
_BACKGROUND_PHRASES = {
    "plain": ("on a plain background", "on a plain grey background"),
    "stripes": ("on a striped background", "on stripes"),
    "dots": ("on a dotted background", "on a polka dot background"),
    "checker": ("on a checkered background", "on a checkerboard"),
    "noise": ("on a noisy background", "on a grainy background"),
}
_SCENE_TEMPLATES = (
    "{np}{pos}{bg}.", "a picture of {np}{pos}{bg}.", "an image of {np}{pos}{bg}.",
    "a drawing of {np}{pos}{bg}.", "there {verb} {np}{pos}{bg}.", "{np}{pos}{bg}", "a photo of {np}{pos}{bg}.",
)
_WORD_TEMPLATES = (
    'the word "{w}" written in {c}{bg}.', 'the text "{w}" in {c} letters{bg}.', '"{w}" written in {c}{bg}.',
    'a picture of the word "{w}"{bg}.', 'the word "{w}"{bg}.', 'a sign that says "{w}" in {c}{bg}.',
)
_DROP = {"size": 0.4, "position": 0.3, "background": 0.5, "colour": 0.1, "shape": 0.1}
_POSITION_CENTRES = {"left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25),
                     "bottom": (0.5, 0.75), "center": (0.5, 0.5)}


@dataclass
class Sample:
    image: Image.Image | None  # None when sampled with render=False
    caption: str
    attrs: dict


@dataclass
class Task:
    """A zero-shot classification task: class names, one prompt template, an ensemble of templates."""

    classnames: list[str]
    prompts: list[str]
    ensemble: list[str]
    attr: str
    values: list = field(default_factory=list)  # the attrs value of each class, same order


def _plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("s") else "s")


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
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


def _background(kind: str, size: int, rng: np.random.Generator) -> Image.Image:
    """A mid-grey (slightly tinted) RGB texture of size x size, built from cached masks."""
    base = np.clip(rng.uniform(95, 165) + rng.uniform(-8, 8, size=3), 0, 255)
    if kind == "plain":
        return Image.new("RGB", (size, size), tuple(int(v) for v in base))
    if kind == "noise":
        noise = rng.integers(-40, 41, size=(size, size, 1), dtype=np.int16)
        return Image.fromarray(np.clip(base.astype(np.int16) + noise, 0, 255).astype(np.uint8))
    other = np.clip(base + _pick(rng, (-1, 1)) * rng.uniform(22, 38), 0, 255)
    period = int(rng.integers(size // 10, size // 5))
    mask = _texture_mask(kind, size, period, int(rng.integers(4)) if kind == "stripes" else 0)
    return Image.composite(Image.new("RGB", (size, size), tuple(int(v) for v in other)),
                           Image.new("RGB", (size, size), tuple(int(v) for v in base)), mask)


class World:
    """The seeded generator of (image, caption, attrs) samples and its evaluation sets."""

    def __init__(self, seed: int = 0, image_size: int = 64,
                 holdout: Iterable[tuple[str, str]] | None = DEFAULT_HOLDOUT) -> None:
        self.seed = seed
        self.image_size = image_size
        self.holdout = tuple(sorted(set(tuple(p) for p in (holdout or ()))))
        for shape, colour in self.holdout:
            if shape not in SHAPES or colour not in COLOURS:
                raise CliplabError(f"The held-out pair ({shape!r}, {colour!r}) is not a known shape and colour; "
                                   f"shapes are {', '.join(SHAPES)} and colours {', '.join(COLOURS)}.")
        held = set(self.holdout)
        self.train_pairs = tuple((s, c) for s in SHAPES for c in COLOURS if (s, c) not in held)
        self._rng = np.random.default_rng(seed)
        self._font_cache: dict[int, ImageFont.ImageFont] = {}

    # -- sampling -------------------------------------------------------------------------------

    def _pairs(self, split: str) -> tuple[tuple[str, str], ...]:
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
        """n random samples; without an rng, the world's own seeded stream (continues across calls).
        render=False skips drawing (image None): captions alone, for vocabularies, ~50x faster."""
        rng = self._rng if rng is None else rng
        pairs = self._pairs(split)
        out = []
        for _ in range(n):
            if split != "heldout" and rng.random() < WORD_FRACTION:
                out.append(self.word_sample(rng, render=render))
            else:
                out.append(self.scene_sample(rng, pairs, render=render))
        return out

    def scene_sample(self, rng: np.random.Generator, pairs: tuple[tuple[str, str], ...] | None = None,
                     full_caption: bool = False, render: bool = True, **fixed) -> Sample:
        """One shapes scene; `fixed` pins attributes (shape, colour, size, count, position, background)."""
        pairs = pairs if pairs is not None else self._pairs("train")
        if "shape" in fixed or "colour" in fixed:
            pairs = tuple(p for p in pairs if fixed.get("shape", p[0]) == p[0]
                          and fixed.get("colour", p[1]) == p[1])
            if not pairs:
                raise CliplabError(f"No shape-colour pair of this split matches {fixed}.")
        shape, colour = _pick(rng, pairs)
        count = fixed.get("count") or int(_pick(rng, COUNTS))
        # Three or four large objects do not fit side by side in a small image.
        size = fixed.get("size") or ("small" if count >= 3 else _pick(rng, SIZES))
        position = (fixed.get("position") or _pick(rng, POSITIONS)) if count == 1 else None
        background = fixed.get("background") or _pick(rng, BACKGROUNDS)
        attrs = {"kind": "scene", "shape": shape, "colour": colour, "size": size, "count": count,
                 "position": position, "background": background}
        image = self._render_scene(rng, attrs) if render else None
        caption, mentioned = self._scene_caption(rng, attrs, full_caption)
        attrs["mentioned"] = mentioned
        return Sample(image, caption, attrs)

    def word_sample(self, rng: np.random.Generator, full_caption: bool = False, render: bool = True,
                    **fixed) -> Sample:
        """One image of a word written in a colour; `fixed` pins word, colour or background."""
        word = fixed.get("word") or _pick(rng, WORDS)
        colour = fixed.get("colour") or _pick(rng, tuple(COLOURS))
        background = fixed.get("background") or _pick(rng, BACKGROUNDS)
        attrs = {"kind": "word", "word": word, "colour": colour, "background": background,
                 "shape": None, "size": None, "count": None, "position": None}
        image = self._render_word(rng, attrs) if render else None
        template = _WORD_TEMPLATES[0] if full_caption else _pick(rng, _WORD_TEMPLATES)
        bg = "" if not full_caption and rng.random() < _DROP["background"] else " " + _pick(
            rng, _BACKGROUND_PHRASES[background])
        mentioned = ["word"] + (["colour"] if "{c}" in template else []) + (["background"] if bg else [])
        attrs["mentioned"] = mentioned
        return Sample(image, template.format(w=word, c=colour, bg=bg), attrs)

    # -- captions -------------------------------------------------------------------------------

    def _scene_caption(self, rng: np.random.Generator, attrs: dict, full: bool) -> tuple[str, list[str]]:
        def keep(name: str) -> bool:
            return full or rng.random() >= _DROP[name]

        count = attrs["count"]
        keep_shape, keep_colour = keep("shape"), keep("colour")
        if not keep_shape and not keep_colour:
            keep_shape = True  # a caption must say what is there
        words = [_COUNT_PHRASES[count][0] if full else _pick(rng, _COUNT_PHRASES[count])]
        mentioned = ["count"]
        if keep("size"):
            words.append(_pick(rng, _SIZE_WORDS[attrs["size"]]) if not full else attrs["size"])
            mentioned.append("size")
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
        return template.format(np=np_, pos=pos, bg=bg, verb="is" if words[0].startswith("a ") or count == 1 else "are"), mentioned

    # -- rendering ------------------------------------------------------------------------------

    def _canvas(self, rng: np.random.Generator, background: str) -> tuple[Image.Image, int]:
        big = 2 * self.image_size  # draw at 2x, then downsample: cheap anti-aliasing
        return _background(background, big, rng), big

    def _finish(self, image: Image.Image) -> Image.Image:
        return image.resize((self.image_size, self.image_size), Image.Resampling.BOX)

    @staticmethod
    def _jitter(rng: np.random.Generator, colour: tuple[int, int, int]) -> tuple[int, ...]:
        return tuple(min(255, max(0, c + d)) for c, d in zip(colour, rng.integers(-14, 15, size=3).tolist()))

    def _render_scene(self, rng: np.random.Generator, attrs: dict) -> Image.Image:
        image, big = self._canvas(rng, attrs["background"])
        draw = ImageDraw.Draw(image)
        large = attrs["size"] == "large"
        count = attrs["count"]
        radius = big * (rng.uniform(0.19, 0.23) if large else rng.uniform(0.1, 0.125))
        if count == 1:
            fx, fy = _POSITION_CENTRES[attrs["position"]]
            centres = [(fx * big + rng.uniform(-0.04, 0.04) * big, fy * big + rng.uniform(-0.04, 0.04) * big)]
        else:
            centres = self._spread(rng, count, radius, big)
        colour = COLOURS[attrs["colour"]]
        for cx, cy in centres:
            angle = rng.uniform(-0.3, 0.3)
            draw.polygon(_polygon(attrs["shape"], cx, cy, radius, angle), fill=self._jitter(rng, colour))
        return self._finish(image)

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

    def _font(self, px: int) -> ImageFont.ImageFont:
        if px not in self._font_cache:
            self._font_cache[px] = ImageFont.load_default(size=px)
        return self._font_cache[px]

    def _render_word(self, rng: np.random.Generator, attrs: dict) -> Image.Image:
        image, big = self._canvas(rng, attrs["background"])
        draw = ImageDraw.Draw(image)
        font = self._font(int(big * rng.uniform(0.26, 0.34)))
        left, top, right, bottom = draw.textbbox((0, 0), attrs["word"], font=font)
        w, h = right - left, bottom - top
        x = rng.uniform(0, max(big - w, 1)) - left
        y = rng.uniform(0, max(big - h, 1)) - top
        colour = self._jitter(rng, COLOURS[attrs["colour"]])
        # A stroke in the same colour thickens the strokes enough to survive the 2x downsampling.
        draw.text((x, y), attrs["word"], font=font, fill=colour, stroke_width=1, stroke_fill=colour)
        return self._finish(image)

    # -- evaluation sets ------------------------------------------------------------------------

    def zero_shot_tasks(self) -> dict[str, Task]:
        """Zero-shot tasks over the world's attributes, with prompts in the captions' own phrasing."""
        position_names = [_POSITION_PHRASES[p][0] for p in POSITIONS]
        count_names = [f"{_NUMBER_WORDS[c]} {'shape' if c == 1 else 'shapes'}" for c in COUNTS]
        return {
            "shape": Task(list(SHAPES), ["a picture of a {}."],
                          ["a picture of a {}.", "a {}.", "an image of a {}.", "a drawing of a {}.",
                           "there is a {}.", "a photo of a {}."], "shape", list(SHAPES)),
            "colour": Task(list(COLOURS), ["a picture of a {} shape."],
                           ["a picture of a {} shape.", "a {} shape.", "an image of a {} shape.",
                            "a drawing of a {} shape.", "there is a {} shape.", "a photo of a {} shape."],
                           "colour", list(COLOURS)),
            "count": Task(count_names, ["a picture of {}."],
                          ["a picture of {}.", "{}.", "an image of {}.", "a drawing of {}.", "there is {}.",
                           "a photo of {}."], "count", list(COUNTS)),
            "position": Task(position_names, ["a picture of a shape {}."],
                             ["a picture of a shape {}.", "a shape {}.", "an image of a shape {}.",
                              "a drawing of a shape {}.", "there is a shape {}.", "a photo of a shape {}."],
                             "position", list(POSITIONS)),
            "word": Task(list(WORDS), ['the word "{}".'],
                         ['the word "{}".', 'a picture of the word "{}".', 'the text "{}".', '"{}".',
                          'a sign that says "{}".'], "word", list(WORDS)),
        }

    def _eval_rng(self, purpose: str, seed: int) -> np.random.Generator:
        # Independent of the training stream (which uses seed and per-sample indices).
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
        rng = self._eval_rng("labelled/" + task.attr + "/" + split, seed)
        pairs = None if task.attr == "word" else self._pairs(split)
        images, labels = [], []
        for i in range(n):
            label = i % len(task.values)
            value = task.values[label]
            if task.attr == "word":
                sample = self.word_sample(rng, word=value)
            elif task.attr == "position":
                sample = self.scene_sample(rng, pairs, count=1, position=value)
            else:
                sample = self.scene_sample(rng, pairs, **{task.attr: value})
            images.append(sample.image)
            labels.append(label)
        order = rng.permutation(n)
        return [images[i] for i in order], np.asarray(labels, dtype=np.int64)[order]

    def retrieval_set(self, n: int, split: str = "heldout",
                      seed: int = 0) -> tuple[list[Image.Image], list[str]]:
        """n scenes with captions that state every attribute (one caption per image, same order)."""
        rng = self._eval_rng("retrieval/" + split, seed)
        pairs = self._pairs(split)
        samples = [self.scene_sample(rng, pairs, full_caption=True) for _ in range(n)]
        return [s.image for s in samples], [s.caption for s in samples]

    def caption_corpus(self, n: int, seed: int = 0) -> list[str]:
        """n training captions plus every zero-shot prompt filled in, for training a vocabulary."""
        rng = self._eval_rng("corpus", seed)
        captions = [s.caption for s in self.sample(n, "train", rng, render=False)]
        for task in self.zero_shot_tasks().values():
            captions += [t.format(c) for t in task.ensemble for c in task.classnames]
        return captions


def write_dataset(world: World, folder: str | Path, n: int, fmt: str = "csv", split: str = "train",
                  seed: int = 0, shard_size: int = 1000) -> Path:
    """Write n samples as JPEG files plus captions in one of the training data formats.

    csv: images/NNNNNN.jpg and captions.csv (`filepath,caption`); returns the CSV path.
    folder: NNNNNN.jpg with NNNNNN.txt beside it; returns the folder.
    webdataset: shard-NNNNNN.tar of NNNNNN.{jpg,txt,json}; returns the brace pattern of the shards.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    samples = world.sample(n, split, world._eval_rng("write/" + split, seed))

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
