"""Training the learned copy detector (engine.copydetect.LearnedDetector): the paper's Appendix C
detector scaled down to train in about two minutes on two CPU cores.

The objective is the paper's: InfoNCE at its fixed temperature 0.07 between each picture and one of
its synthetic variants (engine.copydetect.plant_copy: crop and zoom, aspect distortion, down- and
up-scaling with varied interpolation, small rotations, HSV jitter, JPEG) against every other
picture of the batch. The pictures are generated, nothing is downloaded: scenes of the demo's
synthetic world, each with its near-miss twin (another drawing of exactly the same description: the
soccer balls of Appendix C, hard negatives that must not match), and "photo-like" smooth colour
fields with discs. A share of every batch is twins together (`Recipe.twins`). The trainer does the
training: its step (trainer.step.train_step, a pair of image batches in place of images and texts),
its AdamW and warm-up + cosine schedule (trainer.optim). Deterministic: one seed draws the pictures,
the variants, the batches and the initial weights.

After training, the threshold is calibrated on pictures of another seed (never the training's, never
the benchmark's): the lowest copy score that no two different pictures reach and at most
NEAR_MISS_RATE of the near-miss twins (calibrate). The file carries it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from cliplab.engine.copydetect import CopyCNN, LearnedDetector, cnn_input, paired_scores, plant_copy, scores
from cliplab.trainer.optim import build_optimizer, build_scheduler
from cliplab.trainer.step import StepContext, train_step

NEAR_MISS_RATE = 0.02  # near-miss twins allowed above the threshold (the DCT detector's rate at its own)
CALIBRATION_SEED_OFFSET = 7919  # the calibration pictures' seed: the recipe's plus this, apart from both
Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class Recipe:
    """What a training run is: measured in docs/benchmarks.md (32 px, batch 128, 1,200 steps: ~2 min)."""
    seed: int = 1000
    world: int = 600  # world scenes (each with its near-miss twin) plus world / 2 photo-like pictures
    steps: int = 1200
    batch: int = 128
    side: int = 32  # input side, a multiple of 16
    width: int = 16  # channels of the first convolution
    dim: int = 128
    lr: float = 2e-3
    variants: int = 2  # Appendix C variants drawn once per picture, reused across steps
    twins: float = 0.5  # share of each batch that is world scenes with their twins
    calibration: int = 200  # world scenes (with twins and copies) the threshold is calibrated on


def world_scenes_with_twins(count: int, seed: int) -> tuple[list[Image.Image], list[Image.Image]]:
    """count distinct demo-world scenes (128 px) and, for each, another drawing of exactly its
    description: a semantic near-miss, not a copy."""
    from cliplab.trainer.demo.world import World
    world = World(seed=seed, image_size=128)
    rng = np.random.default_rng(seed)
    originals, twins = [], []
    pairs = world.pairs("all")
    while len(originals) < count:
        sample = world.scene_sample(rng, pairs, unnamed_colours=False)
        pins = {k: sample.attrs[k] for k in ("shape", "colour", "size", "count", "position", "background", "style")
                if sample.attrs.get(k) is not None}
        originals.append(sample.image.convert("RGB"))
        twins.append(world.scene_sample(rng, pairs, unnamed_colours=False, **pins).image.convert("RGB"))
    return originals, twins


def photo_like(count: int, seed: int) -> list[Image.Image]:
    """Smooth random colour fields (320 x 240) with three discs each: pictures no model has seen, as
    a person's photos are to the demo model."""
    rng = np.random.default_rng(seed)
    photos = []
    for _ in range(count):
        image = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((320, 240),
                                                                                          Image.Resampling.BICUBIC)
        draw = ImageDraw.Draw(image)
        for _disc in range(3):
            x, y, r = int(rng.integers(0, 320)), int(rng.integers(0, 240)), int(rng.integers(15, 60))
            draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        photos.append(image)
    return photos


def training_pictures(world: int, seed: int) -> list[Image.Image]:
    """The world scenes, then their twins (scene i's twin is picture world + i), then world // 2
    photo-like pictures at 160 x 120."""
    originals, twins = world_scenes_with_twins(world, seed)
    photos = [p.resize((160, 120), Image.Resampling.BICUBIC) for p in photo_like(world // 2, seed)]
    return originals + twins + photos


def train(recipe: Recipe = Recipe(), on_progress: Progress | None = None) -> CopyCNN:
    """The network trained by the recipe (see the module docstring)."""
    report = on_progress or (lambda stage, done, total: None)
    report("drawing the training pictures", 0, recipe.steps)
    pictures = training_pictures(recipe.world, recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    originals = cnn_input(pictures, recipe.side)
    copies = [cnn_input([plant_copy(p, rng) for p in pictures], recipe.side) for _ in range(recipe.variants)]
    torch.manual_seed(recipe.seed)
    net = CopyCNN(width=recipe.width, dim=recipe.dim, side=recipe.side)
    optimizer = build_optimizer(net, lr=recipe.lr, weight_decay=0.01, family="resnet")
    scheduler = build_scheduler(optimizer, warmup_steps=max(1, recipe.steps // 10), total_steps=recipe.steps)
    context = StepContext(model=net, forward=net, optimizer=optimizer, scheduler=scheduler)
    n, world = len(pictures), recipe.world
    pair_count = min(world, int(recipe.batch * recipe.twins) // 2)
    if recipe.batch > n:
        raise ValueError(f"a batch of {recipe.batch} needs at least as many training pictures (have {n})")
    net.train()
    for step in range(recipe.steps):
        paired = rng.choice(world, pair_count, replace=False)
        rest = np.setdiff1d(np.arange(n), np.concatenate([paired, paired + world]))
        rows = np.concatenate([paired, paired + world, rng.choice(rest, recipe.batch - 2 * pair_count, replace=False)])
        which = rng.integers(recipe.variants, size=len(rows))
        train_step(context, originals[rows], torch.stack([copies[v][i] for v, i in zip(which, rows)]))
        if (step + 1) % 20 == 0 or step + 1 == recipe.steps:
            report("training", step + 1, recipe.steps)
    return net.eval()


def false_match_threshold(negatives: np.ndarray, rate: float) -> float:
    """The lowest threshold that at most floor(rate x n) of the n negative scores reach (rate 0:
    just above the highest)."""
    ordered = np.sort(np.asarray(negatives, np.float32))[::-1]
    if not len(ordered):
        return 0.0
    allowed = int(np.floor(rate * len(ordered) + 1e-9))
    if allowed >= len(ordered):
        return float(ordered[-1])
    return float(np.nextafter(ordered[allowed], np.float32(np.inf)))


def calibrate(detector: LearnedDetector, count: int, seed: int) -> tuple[float, dict]:
    """The detector's threshold on held-out pictures: count world scenes with their twins and count // 2
    photo-like pictures. No two different pictures may reach it, and at most NEAR_MISS_RATE of the
    near-miss twins (some twins differ from each other less than a picture from its Appendix C copy:
    another hand confirms those pairs). Returns the threshold and what it was measured on (the recall
    of one Appendix C copy of each picture)."""
    originals, twins = world_scenes_with_twins(count, seed)
    originals += photo_like(count // 2, seed)
    rng = np.random.default_rng(seed)
    described = detector.describe(originals)
    copies = detector.describe([plant_copy(p, rng) for p in originals])
    positives = paired_scores(described, copies)
    different = scores(described, described)[np.triu_indices(len(originals), 1)]
    near = paired_scores(described[:count], detector.describe(twins))
    threshold = max(false_match_threshold(different, 0.0), false_match_threshold(near, NEAR_MISS_RATE))
    facts = {"calibration_seed": seed, "calibration_pictures": len(originals), "near_miss_rate": NEAR_MISS_RATE,
             "calibration_recall": round(float((positives >= threshold).mean()), 4),
             "calibration_near_misses_above": int((near >= threshold).sum()),
             "calibration_highest_different_pair": round(float(different.max()), 4)}
    return threshold, facts


def train_detector(recipe: Recipe = Recipe(), on_progress: Progress | None = None) -> LearnedDetector:
    """Train, then calibrate the threshold on held-out pictures: the detector a first use prepares."""
    start = time.perf_counter()
    net = train(recipe, on_progress)
    seconds = time.perf_counter() - start
    if on_progress is not None:
        on_progress("calibrating the threshold", recipe.steps, recipe.steps)
    uncalibrated = LearnedDetector(net, 1.0)
    threshold, facts = calibrate(uncalibrated, recipe.calibration, recipe.seed + CALIBRATION_SEED_OFFSET)
    facts.update({"recipe": asdict(recipe), "train_seconds": round(seconds, 1),
                  "torch_threads": torch.get_num_threads()})
    return LearnedDetector(net, threshold, facts)
