"""Generated evaluation and reference sets for the overlap tests: demo-world scenes in class folders,
a known number of planted copies (re-encoded, resized, slightly cropped) in the reference folder,
semantic near-misses (another drawing of the same description) and unrelated pictures."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cliplab.trainer.demo.world import World

CLASSES = ("circle", "star", "cross")


@dataclass
class Sets:
    eval_dir: Path
    reference_dir: Path
    copied: set[str]  # eval image names with a planted copy in the reference
    near_missed: set[str]  # eval image names with only a near-miss (not a copy) in the reference


def mild_copy(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = image.size
    crop = int(rng.integers(0, 3))
    image = image.crop((crop, crop, w - crop, h - crop)).resize((int(w * 1.5), int(h * 1.5)), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(rng.integers(70, 95)))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def make_sets(root: Path, per_class: int = 6, copied: int = 5, near: int = 4, unrelated: int = 6,
              seed: int = 2) -> Sets:
    world = World(seed=seed, image_size=96, effects=False)
    rng = np.random.default_rng(seed)
    eval_dir, reference_dir = root / "eval", root / "reference"
    names, samples = [], []
    for shape in CLASSES:
        (eval_dir / shape).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            sample = world.scene_sample(rng, world.pairs("all"), shape=shape, count=1, size="large",
                                        unnamed_colours=False)
            name = f"{shape}/{shape}{i}.png"
            sample.image.save(eval_dir / name)
            names.append(name)
            samples.append(sample)
    reference_dir.mkdir(parents=True)
    order = rng.permutation(len(names))
    copy_ids, near_ids = order[:copied], order[copied:copied + near]
    for i in copy_ids:
        mild_copy(samples[i].image, rng).save(reference_dir / f"copy{i}.jpg")
    for i in near_ids:
        attrs = samples[i].attrs
        pins = {k: attrs[k] for k in ("shape", "colour", "size", "count", "position", "background", "style")}
        world.scene_sample(rng, world.pairs("all"), unnamed_colours=False, **pins).image.save(
            reference_dir / f"near{i}.png")
    for j in range(unrelated):
        world.scene_sample(rng, world.pairs("all"), unnamed_colours=False).image.save(reference_dir / f"other{j}.png")
    return Sets(eval_dir, reference_dir, {names[i] for i in copy_ids}, {names[i] for i in near_ids})
