"""The copy detector (engine.copydetect) against learned ones and CLIP's cosine; the overlap search at 1M.

    python benchmarks/copy_detector.py --only quality --originals 100     # detector, learned ones, cosine
    python benchmarks/copy_detector.py --only quality --originals 100 --seed 2000 --train-world 600 --cnn-steps 1200
    python benchmarks/copy_detector.py --only quality --originals 100 --train-world 600 --cnn-steps 1200 \
        --cnn-side 32 --cnn-batch 128 --eval-seeds 0 2000 --no-whitening   # the ~2-minute CNN recipe
    python benchmarks/copy_detector.py --only scale --references 1000000 --queries 200

1. Quality. Originals: scenes of the demo model's synthetic world (trainer.demo, 128 px, what the
   demo model knows best) and "photo-like" pictures (smooth random colour fields with discs, as in
   benchmarks/library.py). Positives: each original against its variants, the paper's Appendix C
   pipeline (engine.copydetect.plant_copy: crop and zoom, aspect distortion, down- and up-scaling
   with random interpolations, rotation, HSV jitter, JPEG) and single edits (JPEG q30, resize to
   50%, crop to the central 90%, aspect 0.8, rotation 3 degrees, HSV jitter). Negatives: semantic
   near-misses (world: another drawing of exactly the same description, the soccer balls of the
   paper's Appendix C) and every pair of different originals. Methods: the detector's copy score, two
   learned detectors trained here on other pictures (world scenes with their near-miss twins and
   photo-like pictures drawn from another seed, never the benchmark's): a learned whitening of the
   detector's descriptors (Radenovic et al., closed form from matching pairs of Appendix C variants)
   and the paper's detector scaled down (a small CNN trained with InfoNCE between a picture and its
   Appendix C variant against the rest of the batch, near-miss twins in every batch, the trainer's
   step, optimiser and schedule), and the demo model's cosine (the baseline). For each, a threshold
   sweep gives precision and recall; the "high precision" row is the lowest threshold whose precision
   over all negatives is >= 0.99, the "at default precision" row the lowest whose precision is at
   least the default detector's at its THRESHOLD (the comparison at equal or higher precision).
2. Scale. A synthetic reference set of N descriptors (clustered unit vectors of the detector's
   dimension) and queries made from some of them plus noise: the time to build the index and to
   search every query's PER_IMAGE regions, exact (FAISS flat, both directions) against the
   approximate index indexes.copies uses above EXACT_LIMIT (IVF over the whole frames), and the
   approximate search's recall of the exact matches.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _edits():
    import io

    from PIL import Image, ImageEnhance

    from cliplab.engine import copydetect

    def jpeg(im, q):
        buffer = io.BytesIO()
        im.save(buffer, "JPEG", quality=q)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")

    return {
        "appendix C pipeline": lambda im, rng: copydetect.plant_copy(im, rng),
        "jpeg q30": lambda im, rng: jpeg(im, 30),
        "resize 50%": lambda im, rng: im.resize((im.width // 2, im.height // 2), Image.Resampling.BICUBIC),
        "crop 90%": lambda im, rng: im.crop((im.width // 20, im.height // 20, im.width * 19 // 20,
                                             im.height * 19 // 20)),
        "aspect 0.8": lambda im, rng: im.resize((int(im.width * 0.8), im.height), Image.Resampling.BILINEAR),
        "rotate 3 deg": lambda im, rng: im.rotate(3, resample=Image.Resampling.BILINEAR),
        "hsv jitter": lambda im, rng: ImageEnhance.Color(ImageEnhance.Brightness(im).enhance(1.15)).enhance(0.85),
    }


def generated_photos(kind: str, count: int, seed: int = 0) -> list:
    """Pictures to test duplicates on: "world" scenes of the demo's synthetic world (what it knows),
    or "photo-like" smooth random colour fields with a few shapes (what it has never seen, as a
    user's photos are to it)."""
    from PIL import Image, ImageDraw
    if kind == "world":
        from cliplab.trainer.demo.world import World
        return [s.image.convert("RGB") for s in World(seed=seed, image_size=256).sample(count, split="all")]
    rng = np.random.default_rng(seed)
    photos = []
    for _ in range(count):
        image = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((320, 240),
                                                                                          Image.Resampling.BICUBIC)
        draw = ImageDraw.Draw(image)
        for _shape in range(3):
            x, y, r = int(rng.integers(0, 320)), int(rng.integers(0, 240)), int(rng.integers(15, 60))
            draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        photos.append(image)
    return photos


def pictures(kind: str, count: int, seed: int = 0):
    """(originals, near-misses or None): distinct world scenes with a second drawing of each one's
    exact description, or photo-like pictures (no near-misses: nothing describes them)."""
    if kind == "photo-like":
        return generated_photos("photo-like", count, seed), None
    from cliplab.trainer.demo.world import World
    world = World(seed=seed, image_size=128)
    rng = np.random.default_rng(seed)
    originals, misses = [], []
    while len(originals) < count:
        sample = world.scene_sample(rng, world.pairs("all"), unnamed_colours=False)
        a = sample.attrs
        pins = {k: a[k] for k in ("shape", "colour", "size", "count", "position", "background", "style")
                if a.get(k) is not None}
        originals.append(sample.image.convert("RGB"))
        misses.append(world.scene_sample(rng, world.pairs("all"), unnamed_colours=False, **pins).image.convert("RGB"))
    return originals, misses


def _sweep(positives: dict[str, np.ndarray], negatives: np.ndarray, thresholds) -> list[dict]:
    everything = np.concatenate(list(positives.values()))
    rows = []
    for t in thresholds:
        tp, fp = int((everything >= t).sum()), int((negatives >= t).sum())
        rows.append({"threshold": round(float(t), 4), "precision": round(tp / (tp + fp), 4) if tp + fp else 1.0,
                     "recall": round(tp / len(everything), 4), "false_pairs": fp,
                     "recall_by_edit": {k: round(float((v >= t).mean()), 3) for k, v in positives.items()}})
    return rows


def _high_precision(rows: list[dict], precision: float = 0.99) -> dict:
    good = [r for r in rows if r["precision"] >= precision]
    return min(good, key=lambda r: r["threshold"]) if good else rows[-1]


TRAIN_SEED = 1000  # the learned methods' training pictures: drawn apart from the benchmark's (seed 0)


def training_pictures(world_count: int, seed: int = TRAIN_SEED) -> tuple[list, int]:
    """The learned methods' training pictures, never the benchmark's: world scenes and their semantic
    near-misses (consecutive halves: scene i and its twin world_count + i), then half as many photo-like
    pictures at 160 x 120. Returns (pictures, world_count)."""
    from PIL import Image
    originals, misses = pictures("world", world_count, seed)
    photos = [im.resize((160, 120), Image.Resampling.BICUBIC) for im in generated_photos("photo-like",
                                                                                         world_count // 2, seed)]
    return originals + misses + photos, world_count


# -- learned method 1: learned whitening of the detector's descriptors (Radenovic et al.) -----------

def fit_whitening(train: list, seed: int = TRAIN_SEED, shrink: float = 0.1):
    """Closed-form whitening of the region descriptors from matching pairs: each picture's whole frame
    with the best-matching region of its Appendix C variant and the other way round. The projection is
    the inverse square root of the matching pairs' difference covariance (shrunk towards the identity),
    applied to every region after removing the mean. Returns a function descriptors -> descriptors."""
    from cliplab.engine import copydetect
    rng = np.random.default_rng(seed)
    ours = np.stack([copydetect.descriptors(im) for im in train])
    theirs = np.stack([copydetect.descriptors(copydetect.plant_copy(im, rng)) for im in train])
    a, b = [], []
    for d, v in zip(ours, theirs):
        a += [d[0], v[0]]
        b += [v[np.argmax(v @ d[0])], d[np.argmax(d @ v[0])]]
    diff = np.asarray(a) - np.asarray(b)
    cov = diff.T @ diff / len(diff)
    cov += shrink * np.trace(cov) / len(cov) * np.eye(len(cov))
    values, vectors = np.linalg.eigh(cov)
    project = ((vectors / np.sqrt(values)) @ vectors.T).astype(np.float32)
    mean = ours.reshape(-1, ours.shape[-1]).mean(0).astype(np.float32)

    def apply(descriptors: np.ndarray) -> np.ndarray:
        out = (descriptors - mean) @ project.T
        norms = np.linalg.norm(out, axis=-1, keepdims=True)
        return np.where(norms > 1e-6, out / np.maximum(norms, 1e-6), 0).astype(np.float32) * (
            np.linalg.norm(descriptors, axis=-1, keepdims=True) > 0)

    return apply


# -- learned method 2: the paper's detector scaled down, a small CNN trained with InfoNCE -----------

CNN_SIDE = 48  # input side (every picture squashed to a square: aspect distortion vanishes as in the DCT)


def _cnn_module(width: int = 16, dim: int = 128, side: int = CNN_SIDE):
    """A plain CNN: four 3 x 3 convolutions with GELU, each followed by 2 x 2 average pooling (the
    paper's anti-aliased down-sampling, in its simplest form) and no batch statistics (the paper's reason:
    they leak which pictures are duplicates within a batch), then a linear projection of the 3 x 3 map.
    Its forward takes a pair of batches, as the trainer's step takes images and texts, and its
    logit_scale is a buffer: the paper's fixed temperature 0.07, never learned."""
    import math

    import torch
    from torch import nn

    class CopyCNN(nn.Module):
        def __init__(self):
            super().__init__()
            widths = [3, width, 2 * width, 4 * width, 4 * width]
            self.convs = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 3, padding=1) for i in range(4))
            self.proj = nn.Linear(widths[-1] * (side // 16) ** 2, dim)
            self.register_buffer("logit_scale", torch.tensor(math.log(1 / 0.07)))

        def embed(self, x: torch.Tensor) -> torch.Tensor:
            for conv in self.convs:
                x = torch.nn.functional.avg_pool2d(torch.nn.functional.gelu(conv(x)), 2)
            return torch.nn.functional.normalize(self.proj(x.flatten(1)), dim=-1)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.embed(a), self.embed(b)

    return CopyCNN()


def _cnn_input(images: list, side: int = CNN_SIDE):
    """[n, 3, side, side]: squashed to a square (box filter), each channel mean-free, each
    picture scaled to unit variance (brightness and contrast jitter matter little)."""
    import torch
    from PIL import Image
    array = np.stack([np.asarray(im.convert("RGB").resize((side, side), Image.Resampling.BOX), np.float32)
                      for im in images]) / 255.0
    x = torch.from_numpy(array).permute(0, 3, 1, 2)
    x = x - x.mean((2, 3), keepdim=True)
    return x / (x.std((1, 2, 3), keepdim=True) + 1e-3)


def train_cnn(train: list, world_count: int, steps: int = 300, batch: int = 64, variants: int = 2,
              seed: int = TRAIN_SEED, side: int = CNN_SIDE, width: int = 16, lr: float = 2e-3):
    """The paper's objective scaled down: InfoNCE at the paper's fixed temperature 0.07 between each
    picture and one of its Appendix C variants against the rest of the batch, a quarter of every batch
    being world scenes together with their near-miss twins (hard negatives that must not match). The
    trainer does the training: its step (trainer.step.train_step: the contrastive loss of the whole
    batch, the update, the schedule) with a pair of image batches in place of images and texts, its
    AdamW and warm-up + cosine schedule (trainer.optim). Deterministic: one seed for the variants, the
    batches and the weights. The recipe's knobs: thumbnail side (a multiple of 16), first layer's
    width, batch, peak learning rate, variants drawn once per picture (reused across steps: drawing
    one costs ~2.7 ms, a step at 48 px and batch 64 ~140 ms). Returns a function images -> [n, dim]
    unit rows."""
    import torch

    from cliplab.engine import copydetect
    from cliplab.trainer.optim import build_optimizer, build_scheduler
    from cliplab.trainer.step import StepContext, train_step
    rng = np.random.default_rng(seed)
    originals = _cnn_input(train, side)
    copies = [_cnn_input([copydetect.plant_copy(im, rng) for im in train], side) for _ in range(variants)]
    torch.manual_seed(seed)
    net = _cnn_module(width=width, side=side)
    optimizer = build_optimizer(net, lr=lr, weight_decay=0.01, family="resnet")
    scheduler = build_scheduler(optimizer, warmup_steps=max(1, steps // 10), total_steps=steps)
    context = StepContext(model=net, forward=net, optimizer=optimizer, scheduler=scheduler)
    n = len(train)
    for _step in range(steps):
        twins = rng.choice(world_count, batch // 4, replace=False)
        rest = np.setdiff1d(np.arange(n), np.concatenate([twins, twins + world_count]))
        rows = np.concatenate([twins, twins + world_count, rng.choice(rest, batch - 2 * len(twins), replace=False)])
        which = rng.integers(variants, size=len(rows))
        train_step(context, originals[rows], torch.stack([copies[v][i] for v, i in zip(which, rows)]))
    net.eval()

    def embed(images: list) -> np.ndarray:
        with torch.no_grad():
            return np.concatenate([net.embed(_cnn_input(images[i:i + 256], side)).numpy()
                                   for i in range(0, len(images), 256)])

    return embed


def bench_quality(count: int, seed: int = 0, train_world: int = 300, cnn_steps: int = 300,
                  recipe: dict | None = None, whitening: bool = True, seeds: list[int] | None = None,
                  train_seed: int = TRAIN_SEED) -> dict:
    """Trains the learned methods once, then measures every method on the pictures of each seed
    (seeds, default [seed]). recipe: train_cnn's knobs (side, width, batch, lr, variants)."""
    import torch
    train, world_count = training_pictures(train_world, train_seed)
    trained = {"training_pictures": len(train), "train_seed": train_seed}
    whiten = None
    if whitening:
        start = time.perf_counter()
        whiten = fit_whitening(train, train_seed)
        trained["whitening_fit_s"] = round(time.perf_counter() - start, 1)
    recipe = dict(recipe or {})
    start = time.perf_counter()
    cnn = train_cnn(train, world_count, steps=cnn_steps, seed=train_seed, **recipe)
    trained["cnn_train_s"] = round(time.perf_counter() - start, 1)
    trained["cnn_steps"] = cnn_steps
    trained["cnn_recipe"] = recipe
    trained["torch_threads"] = torch.get_num_threads()
    print(json.dumps({"training": trained}), flush=True)
    results = {"training": trained}
    seeds = seeds or [seed]
    for s in seeds:
        measured = _measure(count, s, whiten, cnn)
        if len(seeds) == 1:
            results.update(measured)
        else:
            results[f"seed {s}"] = measured
    return results


def _measure(count: int, seed: int, whiten, cnn) -> dict:
    from cliplab.engine import copydetect
    from cliplab.engine.features import encode_images
    from cliplab.engine.handle import ModelBundle
    bundle = ModelBundle.load("demo", precision="fp32")
    results = {}
    for kind in ("world", "photo-like"):
        originals, misses = pictures(kind, count, seed)
        rng = np.random.default_rng(seed + 1)
        variants = {name: [edit(im, rng) for im in originals] for name, edit in _edits().items()}
        start = time.perf_counter()
        d_orig = np.stack([copydetect.descriptors(im) for im in originals])
        seconds = (time.perf_counter() - start) / len(originals)
        start = time.perf_counter()
        c_orig = cnn(originals)
        cnn_seconds = (time.perf_counter() - start) / len(originals)
        e_orig = encode_images(bundle.model, bundle.preprocess, originals)
        described: dict[int, np.ndarray] = {}

        def describe(images: list, described=described) -> np.ndarray:
            """An image set's DCT descriptors, computed once for the detector and the whitening alike."""
            if id(images) not in described:
                described[id(images)] = np.stack([copydetect.descriptors(im) for im in images])
            return described[id(images)]

        # each method: (pair scores of images against the originals, scores among the originals)
        methods = {
            "detector": (lambda ims, d_orig=d_orig: np.array([copydetect.score(a, b) for a, b in zip(
                d_orig, describe(ims))]),
                copydetect.scores(d_orig, d_orig)),
            "cnn": (lambda ims, c_orig=c_orig: (cnn(ims) * c_orig).sum(1), c_orig @ c_orig.T),
            "clip": (lambda ims, e_orig=e_orig: (encode_images(bundle.model, bundle.preprocess, ims) * e_orig).sum(1),
                     e_orig @ e_orig.T),
        }
        if whiten is not None:
            w_orig = whiten(d_orig)
            methods["whitened"] = (lambda ims, w_orig=w_orig: np.array([copydetect.score(a, b) for a, b in zip(
                w_orig, whiten(describe(ims)))]),
                copydetect.scores(w_orig, w_orig))
        positives = {k: {name: pair(images) for name, images in variants.items()} for k, (pair, _) in methods.items()}
        pairs = np.triu_indices(len(originals), 1)
        negatives = {k: among[pairs] for k, (_, among) in methods.items()}
        entry = {"originals": len(originals), "different_pairs": len(pairs[0]),
                 "descriptor_ms_per_image": round(1000 * seconds, 2), "cnn_ms_per_image": round(1000 * cnn_seconds, 2)}
        if misses is not None:
            miss = {k: pair(misses) for k, (pair, _) in methods.items()}
            entry["near_miss_pairs"] = len(misses)
            entry["near_miss_median"] = {k: round(float(np.median(v)), 3) for k, v in miss.items()}
            negatives = {k: np.concatenate([v, miss[k]]) for k, v in negatives.items()}
            entry["near_misses_above_default"] = {"detector": int((miss["detector"] >= copydetect.THRESHOLD).sum())}
        grid = {"detector": np.arange(0.50, 1.0001, 0.005), "whitened": np.arange(0.50, 1.0001, 0.005),
                "cnn": np.arange(0.50, 1.0001, 0.0025), "clip": np.arange(0.80, 1.0001, 0.0025)}
        sweeps = {k: _sweep(positives[k], negatives[k], grid[k]) for k in positives}
        default = next(r for r in sweeps["detector"] if abs(r["threshold"] - copydetect.THRESHOLD) < 1e-6)
        entry["detector_at_default"] = default
        for k, rows in sweeps.items():
            entry[f"{k}_high_precision"] = _high_precision(rows)
            # the fair comparison: each method at the lowest threshold whose precision is at least the
            # default detector's on these pictures
            entry[f"{k}_at_default_precision"] = _high_precision(rows, default["precision"])
        entry["positive_median"] = {k: {e: round(float(np.median(v)), 3) for e, v in p.items()}
                                    for k, p in positives.items()}
        results[kind] = entry
        print(json.dumps({"seed": seed, kind: entry}), flush=True)
    return results


def synthetic_descriptors(n: int, seed: int = 0, clusters: int = 4096) -> np.ndarray:
    """n unit vectors of the detector's dimension around random centres (clustered, as real images are)."""
    from cliplab.engine import copydetect
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, copydetect.DIM)).astype(np.float32)
    out = np.empty((n, copydetect.DIM), np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        block = centres[rng.integers(0, clusters, stop - start)] + rng.standard_normal(
            (stop - start, copydetect.DIM)).astype(np.float32)
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def bench_scale(references: int, queries: int, seed: int = 0) -> dict:
    from cliplab.engine import copydetect
    from cliplab.indexes import copies
    whole = synthetic_descriptors(references, seed)
    rng = np.random.default_rng(seed + 1)
    # queries: every region a noisy version of some reference (half) or of nothing (half)
    planted = rng.choice(references, queries // 2, replace=False)
    base = np.concatenate([whole[planted], synthetic_descriptors(queries - len(planted), seed + 2)])
    regions = base[:, None, :] + 0.35 * rng.standard_normal((queries, copydetect.PER_IMAGE, copydetect.DIM)).astype(
        np.float32) / np.sqrt(copydetect.DIM)
    regions /= np.linalg.norm(regions, axis=2, keepdims=True)
    regions[:, 0] = base + 0.05 * rng.standard_normal(base.shape).astype(np.float32) / np.sqrt(copydetect.DIM)
    regions[:, 0] /= np.linalg.norm(regions[:, 0], axis=1, keepdims=True)
    refs = whole[:, None, :].repeat(1, axis=1)  # the approximate index reads whole frames only
    result = {"references": references, "queries": queries, "regions_per_query": copydetect.PER_IMAGE,
              "dim": copydetect.DIM}
    start = time.perf_counter()
    approximate = copies.CopyIndex(refs, exact=False)
    result["approximate_build_s"] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    aq, ar, _ = approximate.matches(regions, copydetect.THRESHOLD)
    result["approximate_search_s_per_query"] = round((time.perf_counter() - start) / queries, 4)
    import faiss
    flat = faiss.IndexFlatIP(copydetect.DIM)
    flat.add(whole)
    start = time.perf_counter()
    lims, _, labels = flat.range_search(np.ascontiguousarray(regions.reshape(-1, copydetect.DIM)),
                                        copydetect.THRESHOLD)
    result["exact_whole_frame_search_s_per_query"] = round((time.perf_counter() - start) / queries, 4)
    rows = np.repeat(np.arange(len(lims) - 1), np.diff(lims).astype(np.int64)) // copydetect.PER_IMAGE
    exact_pairs = set(zip(rows.tolist(), labels.tolist()))
    found = set(zip(aq.tolist(), ar.tolist()))
    result["approximate_recall_of_exact_pairs"] = round(len(found & exact_pairs) / max(1, len(exact_pairs)), 4)
    result["exact_pairs"] = len(exact_pairs)
    result["memory_mb_whole_frames"] = round(whole.nbytes / 2**20, 1)
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["quality", "scale"], nargs="*")
    parser.add_argument("--originals", type=int, default=150)
    parser.add_argument("--train-world", type=int, default=300, help="world scenes the learned methods train on "
                        "(with as many near-miss twins and half as many photo-like pictures)")
    parser.add_argument("--cnn-steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0, help="the benchmark's pictures and edits (the learned "
                        f"methods train on --train-seed, {TRAIN_SEED} by default)")
    parser.add_argument("--eval-seeds", type=int, nargs="+", help="measure on the pictures of each of these seeds "
                        "after one training (in place of --seed)")
    parser.add_argument("--cnn-side", type=int, default=CNN_SIDE, help="the CNN's thumbnail side (a multiple of 16)")
    parser.add_argument("--cnn-width", type=int, default=16, help="channels of the CNN's first convolution")
    parser.add_argument("--cnn-batch", type=int, default=64)
    parser.add_argument("--cnn-lr", type=float, default=2e-3, help="peak learning rate (warm-up, then cosine)")
    parser.add_argument("--cnn-variants", type=int, default=2, help="Appendix C variants drawn once per "
                        "training picture")
    parser.add_argument("--train-seed", type=int, default=TRAIN_SEED, help="the learned methods' training pictures, "
                        "variants, batches and weights (keep it apart from the benchmark's seeds)")
    parser.add_argument("--no-whitening", action="store_true", help="skip the learned whitening")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--references", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    parts = args.only or ["quality", "scale"]
    cpu = sorted(set(f for f in open("/proc/cpuinfo").read().split() if f.startswith("avx")))
    results = {"cpu_flags": cpu}
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    if "quality" in parts:
        recipe = {"side": args.cnn_side, "width": args.cnn_width, "batch": args.cnn_batch, "lr": args.cnn_lr,
                  "variants": args.cnn_variants}
        results["quality"] = bench_quality(args.originals, args.seed, train_world=args.train_world,
                                           cnn_steps=args.cnn_steps, recipe=recipe,
                                           whitening=not args.no_whitening, seeds=args.eval_seeds,
                                           train_seed=args.train_seed)
    if "scale" in parts:
        results["scale"] = bench_scale(args.references, args.queries)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
