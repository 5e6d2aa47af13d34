"""The copy detectors (engine.copydetect) against each other and CLIP's cosine; the overlap search at 1M.

    python benchmarks/copy_detector.py --only quality                      # the product's recipe, draw 1000
    python benchmarks/copy_detector.py --only quality --train-seeds 1000 1001 1002 1003 1004
    python benchmarks/copy_detector.py --only quality --cnn-twins 0.75 --cnn-steps 2400 --whitening
    python benchmarks/copy_detector.py --only scale --references 1000000 --queries 200
    python benchmarks/copy_detector.py --only library --library-sizes 5000 20000 100000 300000

1. Quality. Originals: scenes of the demo model's synthetic world (trainer.demo, 128 px, what the
   demo model knows best) and "photo-like" pictures (smooth random colour fields with discs).
   Positives: each original against its variants, the paper's Appendix C pipeline
   (engine.copydetect.plant_copy: crop and zoom, aspect distortion, down- and up-scaling with random
   interpolations, rotation, HSV jitter, JPEG) and single edits (JPEG q30, resize to 50%, crop to the
   central 90%, aspect 0.8, rotation 3 degrees, HSV jitter). Negatives: semantic near-misses (world:
   another drawing of exactly the same description, the soccer balls of the paper's Appendix C) and
   every pair of different originals. Methods: the training-free DCT detector; the learned
   detector, trained here by trainer.copy_detector with a recipe (--cnn-* knobs, the product's by
   default) on pictures of its own seed (--train-seeds, never the benchmark's), its threshold
   calibrated on pictures of a third seed; optionally a learned whitening of the DCT descriptors
   (Radenovic et al., closed form); and the demo model's cosine (the baseline). For each, a
   threshold sweep gives precision and recall; "at own threshold" is the learned detector at its
   calibrated threshold (what the product does), "high precision" the lowest threshold whose
   precision over all negatives is >= 0.99, "at default precision" the lowest whose precision is at
   least the DCT detector's at its THRESHOLD (the comparison at equal or higher precision).
2. Scale. A synthetic reference set of N descriptors (clustered unit vectors of a detector's
   dimension) and queries made from some of them plus noise: the time to build the index and to
   search every query's regions, exact (FAISS flat) against the approximate index indexes.copies
   uses above EXACT_VECTORS (IVF over the whole frames), and the approximate search's recall of the
   exact matches.
3. Library. The near-duplicate finder's search (every photo against every other) on synthetic
   descriptors of each detector's shape, at several library sizes.
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


def pictures(kind: str, count: int, seed: int = 0):
    """(originals, near-misses or None): distinct world scenes with a second drawing of each one's
    exact description, or photo-like pictures (no near-misses: nothing describes them)."""
    from cliplab.trainer.copy_detector import photo_like, world_scenes_with_twins
    if kind == "photo-like":
        return photo_like(count, seed), None
    return world_scenes_with_twins(count, seed)


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


# -- learned method 2: the product's learned detector (trainer.copy_detector), any recipe ---------------

def train_cnn(recipe):
    """The product's learned detector trained by `recipe` (trainer.copy_detector.train_detector: the
    training and the threshold's calibration on held-out pictures)."""
    from cliplab.trainer.copy_detector import train_detector
    return train_detector(recipe)


def bench_quality(count: int, recipe, whitening: bool = True, seeds: list[int] = (0,)) -> dict:
    """Trains the learned methods once (recipe: a trainer.copy_detector.Recipe, its seed the training
    pictures', never the benchmark's), then measures every method on the pictures of each seed."""
    import torch

    from cliplab.trainer.copy_detector import training_pictures
    trained = {"train_seed": recipe.seed}
    whiten = None
    if whitening:
        start = time.perf_counter()
        whiten = fit_whitening(training_pictures(recipe.world, recipe.seed), recipe.seed)
        trained["whitening_fit_s"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    cnn = train_cnn(recipe)
    trained["cnn_train_and_calibrate_s"] = round(time.perf_counter() - start, 1)
    trained["cnn"] = {"name": cnn.name, "threshold": round(cnn.threshold, 4), **cnn.meta}
    trained["torch_threads"] = torch.get_num_threads()
    print(json.dumps({"training": trained}), flush=True)
    results = {"training": trained}
    for s in seeds:
        results[f"seed {s}"] = _measure(count, s, whiten, cnn)
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
        c_orig = cnn.describe(originals)
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
            "cnn": (lambda ims, c_orig=c_orig: copydetect.paired_scores(c_orig, cnn.describe(ims)),
                    copydetect.scores(c_orig, c_orig)),
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
            entry["near_misses_above_default"] = {"detector": int((miss["detector"] >= copydetect.THRESHOLD).sum()),
                                                  "cnn": int((miss["cnn"] >= cnn.threshold).sum())}
            worst = np.argsort(-miss["cnn"])[:3]
            entry["cnn_top_near_misses"] = [[int(i), round(float(miss["cnn"][i]), 4)] for i in worst]
        grid = {"detector": np.arange(0.50, 1.0001, 0.005), "whitened": np.arange(0.50, 1.0001, 0.005),
                "cnn": np.arange(0.50, 1.0001, 0.0025), "clip": np.arange(0.80, 1.0001, 0.0025)}
        sweeps = {k: _sweep(positives[k], negatives[k], grid[k]) for k in positives}
        default = next(r for r in sweeps["detector"] if abs(r["threshold"] - copydetect.THRESHOLD) < 1e-6)
        entry["detector_at_default"] = default
        # the product's learned detector at its own threshold, calibrated on held-out pictures
        entry["cnn_at_own_threshold"] = _sweep(positives["cnn"], negatives["cnn"], [cnn.threshold])[0]
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


def synthetic_descriptors(n: int, dim: int, seed: int = 0, clusters: int = 4096) -> np.ndarray:
    """n unit vectors of a detector's dimension around random centres (clustered, as real images are)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        block = centres[rng.integers(0, clusters, stop - start)] + rng.standard_normal((stop - start, dim)).astype(
            np.float32)
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def bench_scale(references: int, queries: int, seed: int = 0, shape: tuple[int, int] | None = None,
                threshold: float | None = None) -> dict:
    """shape: (regions, dim) of a query's descriptors, None for the DCT detector's (49, 255); the
    references are whole frames (what the approximate index reads)."""
    from cliplab.engine import copydetect
    from cliplab.indexes import copies
    per, dim = shape or (copydetect.PER_IMAGE, copydetect.DIM)
    threshold = threshold if threshold is not None else copydetect.THRESHOLD
    whole = synthetic_descriptors(references, dim, seed)
    rng = np.random.default_rng(seed + 1)
    # queries: every region a noisy version of some reference (half) or of nothing (half)
    planted = rng.choice(references, queries // 2, replace=False)
    base = np.concatenate([whole[planted], synthetic_descriptors(queries - len(planted), dim, seed + 2)])
    regions = base[:, None, :] + 0.35 * rng.standard_normal((queries, per, dim)).astype(np.float32) / np.sqrt(dim)
    regions /= np.linalg.norm(regions, axis=2, keepdims=True)
    regions[:, 0] = base + 0.05 * rng.standard_normal(base.shape).astype(np.float32) / np.sqrt(dim)
    regions[:, 0] /= np.linalg.norm(regions[:, 0], axis=1, keepdims=True)
    refs = whole[:, None, :]  # the approximate index reads whole frames only
    result = {"references": references, "queries": queries, "regions_per_query": per, "dim": dim,
              "threshold": threshold}
    start = time.perf_counter()
    approximate = copies.CopyIndex(refs, exact=False)
    result["approximate_build_s"] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    aq, ar, _ = approximate.matches(regions, threshold)
    result["approximate_search_s_per_query"] = round((time.perf_counter() - start) / queries, 4)
    import faiss
    flat = faiss.IndexFlatIP(dim)
    flat.add(whole)
    start = time.perf_counter()
    lims, _, labels = flat.range_search(np.ascontiguousarray(regions.reshape(-1, dim)), threshold)
    result["exact_whole_frame_search_s_per_query"] = round((time.perf_counter() - start) / queries, 4)
    rows = np.repeat(np.arange(len(lims) - 1), np.diff(lims).astype(np.int64)) // per
    exact_pairs = set(zip(rows.tolist(), labels.tolist()))
    found = set(zip(aq.tolist(), ar.tolist()))
    result["approximate_recall_of_exact_pairs"] = round(len(found & exact_pairs) / max(1, len(exact_pairs)), 4)
    result["exact_pairs"] = len(exact_pairs)
    result["memory_mb_whole_frames"] = round(whole.nbytes / 2**20, 1)
    print(json.dumps(result), flush=True)
    return result


def bench_library(sizes: list[int], seed: int = 0) -> list[dict]:
    """The near-duplicate finder's search over a library of n photos (indexes.duplicates: every photo
    against every other, CopyIndex.matches of the descriptors with themselves), for the learned
    detector's descriptors (5 x 128) and, up to 20,000 photos, the DCT detector's (49 x 255)."""
    from cliplab.engine import copydetect
    from cliplab.indexes import copies
    rows = []
    for n in sizes:
        for name, (per, dim, threshold) in {"learned": (5, 128, 0.95),
                                            "dct": (copydetect.PER_IMAGE, copydetect.DIM, copydetect.THRESHOLD)}.items():
            if name == "dct" and n > 20_000:
                continue
            base = synthetic_descriptors(n, dim, seed)
            rng = np.random.default_rng(seed + 1)
            described = base[:, None, :] + 0.35 * rng.standard_normal((n, per, dim)).astype(np.float32) / np.sqrt(dim)
            described /= np.linalg.norm(described, axis=2, keepdims=True)
            described[:, 0] = base
            start = time.perf_counter()
            index = copies.CopyIndex(described)
            q, _, _ = index.matches(described, threshold)
            row = {"detector": name, "photos": n, "search": "exact" if index.exact else "approximate",
                   "seconds": round(time.perf_counter() - start, 2), "pairs": int(len(q))}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main() -> None:
    from dataclasses import asdict, fields, replace

    from cliplab.trainer.copy_detector import Recipe
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["quality", "scale", "library"], nargs="*")
    parser.add_argument("--originals", type=int, default=100)
    parser.add_argument("--eval-seeds", type=int, nargs="+", default=[0, 2000],
                        help="measure on the pictures (and edits) of each of these seeds")
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[Recipe.seed],
                        help="train the learned detector once per seed (its training draw: pictures, variants, "
                             "batches, weights), keep them apart from --eval-seeds")
    knobs = {f.name: f for f in fields(Recipe) if f.name != "seed"}
    for name, f in knobs.items():
        parser.add_argument(f"--cnn-{name}", type=type(f.default), default=None,
                            help=f"the learned detector's recipe: {name} (default {f.default})")
    parser.add_argument("--whitening", action="store_true", help="also fit and measure the learned whitening")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--scale-detector", choices=["learned", "dct"], default="learned",
                        help="the descriptor shape of the scale benchmark (learned: 5 x 128, dct: 49 x 255)")
    parser.add_argument("--references", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--library-sizes", type=int, nargs="+", default=[5_000, 20_000, 100_000, 300_000],
                        help="library sizes of the near-duplicate finder's search")
    args = parser.parse_args()
    parts = args.only or ["quality", "scale"]
    cpu = sorted(set(f for f in open("/proc/cpuinfo").read().split() if f.startswith("avx")))
    results = {"cpu_flags": cpu}
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    if "quality" in parts:
        chosen = {name: getattr(args, f"cnn_{name}") for name in knobs if getattr(args, f"cnn_{name}") is not None}
        for seed in args.train_seeds:
            recipe = replace(Recipe(), seed=seed, **chosen)
            results[f"quality, training draw {seed}"] = {"recipe": asdict(recipe), **bench_quality(
                args.originals, recipe, whitening=args.whitening, seeds=args.eval_seeds)}
    if "library" in parts:
        results["library"] = bench_library(args.library_sizes)
    if "scale" in parts:
        shape = (5, 128) if args.scale_detector == "learned" else None
        results["scale"] = bench_scale(args.references, args.queries, shape=shape)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
