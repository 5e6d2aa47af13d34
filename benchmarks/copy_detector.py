"""The copy detector (engine.copydetect) against CLIP's cosine, and the overlap search at 1M references.

    python benchmarks/copy_detector.py                         # quality: detector vs the demo model's cosine
    python benchmarks/copy_detector.py --only scale --references 1000000 --queries 200

1. Quality. Originals: scenes of the demo model's synthetic world (trainer.demo, 128 px, what the
   demo model knows best) and "photo-like" pictures (smooth random colour fields with discs, as in
   benchmarks/library.py). Positives: each original against its variants, the paper's Appendix C
   pipeline (engine.copydetect.plant_copy: crop and zoom, aspect distortion, down- and up-scaling
   with random interpolations, rotation, HSV jitter, JPEG) and single edits (JPEG q30, resize to
   50%, crop to the central 90%, aspect 0.8, rotation 3 degrees, HSV jitter). Negatives: semantic
   near-misses (world: another drawing of exactly the same description, the soccer balls of the
   paper's Appendix C) and every pair of different originals. For each method (the detector's copy
   score, the demo model's cosine) a threshold sweep gives precision and recall; the "high
   precision" row is the lowest threshold whose precision over all negatives is >= 0.99.
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


def _high_precision(rows: list[dict]) -> dict:
    good = [r for r in rows if r["precision"] >= 0.99]
    return min(good, key=lambda r: r["threshold"]) if good else rows[-1]


def bench_quality(count: int, seed: int = 0) -> dict:
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
        e_orig = encode_images(bundle.model, bundle.preprocess, originals)
        det_pos, clip_pos = {}, {}
        for name, images in variants.items():
            d = np.stack([copydetect.descriptors(im) for im in images])
            det_pos[name] = np.array([copydetect.score(a, b) for a, b in zip(d_orig, d)])
            clip_pos[name] = (encode_images(bundle.model, bundle.preprocess, images) * e_orig).sum(1)
        pairs = np.triu_indices(len(originals), 1)
        det_neg = copydetect.scores(d_orig, d_orig)[pairs]
        clip_neg = (e_orig @ e_orig.T)[pairs]
        entry = {"originals": len(originals), "different_pairs": int(len(det_neg)),
                 "descriptor_ms_per_image": round(1000 * seconds, 2)}
        if misses is not None:
            d_miss = np.stack([copydetect.descriptors(im) for im in misses])
            det_miss = np.array([copydetect.score(a, b) for a, b in zip(d_orig, d_miss)])
            clip_miss = (encode_images(bundle.model, bundle.preprocess, misses) * e_orig).sum(1)
            entry["near_miss_pairs"] = len(misses)
            entry["near_miss_median"] = {"detector": round(float(np.median(det_miss)), 3),
                                         "clip": round(float(np.median(clip_miss)), 3)}
            det_neg, clip_neg = np.concatenate([det_neg, det_miss]), np.concatenate([clip_neg, clip_miss])
            entry["near_misses_above_default"] = {"detector": int((det_miss >= copydetect.THRESHOLD).sum())}
        det_rows = _sweep(det_pos, det_neg, np.arange(0.70, 1.0001, 0.01))
        clip_rows = _sweep(clip_pos, clip_neg, np.arange(0.80, 1.0001, 0.0025))
        entry["detector_at_default"] = next(r for r in det_rows if abs(r["threshold"] - copydetect.THRESHOLD) < 1e-6)
        entry["detector_high_precision"] = _high_precision(det_rows)
        entry["clip_high_precision"] = _high_precision(clip_rows)
        entry["positive_median"] = {"detector": {k: round(float(np.median(v)), 3) for k, v in det_pos.items()},
                                    "clip": {k: round(float(np.median(v)), 3) for k, v in clip_pos.items()}}
        results[kind] = entry
        print(json.dumps({kind: entry}), flush=True)
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
    parser.add_argument("--references", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    parts = args.only or ["quality", "scale"]
    cpu = sorted(set(f for f in open("/proc/cpuinfo").read().split() if f.startswith("avx")))
    results = {"cpu_flags": cpu}
    if "quality" in parts:
        results["quality"] = bench_quality(args.originals)
    if "scale" in parts:
        results["scale"] = bench_scale(args.references, args.queries)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
