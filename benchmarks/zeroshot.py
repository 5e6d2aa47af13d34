"""Zero-shot classifier build time: ours (first build, then cached rebuild) vs open_clip's
build_zero_shot_classifier, same random ViT-B/32 weights, same class names and templates, one run.

The full ImageNet classifier is 1000 classes x 80 templates = 80,000 prompts. On a 2-core CPU
open_clip needs hours for that, so both first builds are timed on an evenly spaced subset of
the classes (all 80 templates) and extrapolated linearly in the number of prompts (the work per
prompt does not depend on how many there are, beyond batching). The cached rebuild is also
timed at full size: the cache is filled for all 80,000 prompts (real embeddings for the subset,
random unit vectors for the rest, which costs a lookup exactly like real ones), then the full
classifier is rebuilt from it.

    python benchmarks/zeroshot.py --classes 10 [--full]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def timed(fn, repeat: int = 1):
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=10, help="classes in the timed subset (of 1000)")
    parser.add_argument("--templates", default="imagenet80")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--full", action="store_true",
                        help="also time our full 1000 x 80 build from a cold cache and its real cached rebuild")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["CLIPLAB_HOME"] = tempfile.mkdtemp(prefix="cliplab-bench-")  # a cold cache

    from oracles import import_open_clip

    from cliplab.assets import asset_path
    from cliplab.engine.features import model_fingerprint
    from cliplab.engine.model import CLIP
    from cliplab.engine.tokenizer import Tokenizer
    from cliplab.engine.zeroshot import TextFeatureCache, build_classifier, fill, load_templates

    open_clip = import_open_clip()
    load_before = os.getloadavg()[0]
    from open_clip.zero_shot_classifier import build_zero_shot_classifier

    all_classes = asset_path("imagenet_classes.txt").read_text().splitlines()
    templates = load_templates(args.templates)
    step = len(all_classes) // args.classes
    classes = all_classes[::step][:args.classes]
    n_sub, n_full = len(classes) * len(templates), len(all_classes) * len(templates)

    torch.manual_seed(0)
    ours = CLIP.from_name("ViT-B/32").eval()
    reference = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None).eval()
    reference.load_state_dict(ours.state_dict(), strict=True)
    ref_tokenizer = open_clip.get_tokenizer("ViT-B-32-quickgelu")
    tokenizer = Tokenizer()
    model_fingerprint(ours)  # engine.load sets it from the file hash; not part of a build

    with torch.no_grad():
        t_ref, ref_weights = timed(lambda: build_zero_shot_classifier(
            reference, ref_tokenizer, classes, templates, num_classes_per_batch=10, device="cpu"))
    t_first, first = timed(lambda: build_classifier(ours, tokenizer, classes, templates))
    t_cached, cached = timed(lambda: build_classifier(ours, tokenizer, classes, templates), repeat=3)
    assert np.array_equal(first.weights, cached.weights)
    cosine = np.sum(first.weights * ref_weights.T.numpy(), axis=1)

    # Full size, cached: fill the cache for the prompts the subset did not encode.
    cache = TextFeatureCache()
    rest = [fill(t, c) for c in dict.fromkeys(all_classes) for t in templates]
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(rest), ours.embed_dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    key = f"{model_fingerprint(ours)}/{ours.dtype}"  # the key embed_prompts uses
    known = cache.get(key, rest)
    keep = [i for i, t in enumerate(rest) if t not in known]
    cache.put(key, [rest[i] for i in keep], vectors[keep])
    cache.close()
    t_full_cached, full = timed(lambda: build_classifier(ours, tokenizer, all_classes, templates), repeat=3)
    assert full.weights.shape == (len(all_classes), ours.embed_dim)

    if args.full:
        os.environ["CLIPLAB_HOME"] = tempfile.mkdtemp(prefix="cliplab-bench-full-")  # cold again
        t_full_first, full_first_clf = timed(lambda: build_classifier(ours, tokenizer, all_classes, templates))
        t_full_rebuild, rebuilt = timed(lambda: build_classifier(ours, tokenizer, all_classes, templates), repeat=3)
        assert np.array_equal(full_first_clf.weights, rebuilt.weights)

    per_prompt_ref, per_prompt_ours = t_ref / n_sub, t_first / n_sub
    full_ref, full_first = per_prompt_ref * n_full, per_prompt_ours * n_full
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"open_clip {open_clip.__version__}; 1-min load average {load_before:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end (other jobs share these cores)")
    print(f"subset: {len(classes)} classes x {len(templates)} templates = {n_sub} prompts")
    print(f"| step | {n_sub} prompts (measured) | 1000 x 80 = {n_full} prompts |")
    print("|---|---|---|")
    print(f"| open_clip build_zero_shot_classifier | {t_ref:.1f} s | {full_ref / 60:.0f} min (extrapolated) |")
    print(f"| ours, first build (cold cache) | {t_first:.1f} s | {full_first / 60:.0f} min (extrapolated) |")
    print(f"| ours, cached rebuild | {t_cached:.3f} s | {t_full_cached:.2f} s (measured) |")
    print(f"speed-up of our first build over open_clip: {t_ref / t_first:.1f}x")
    print(f"cached rebuild vs our first build: {t_first / t_cached:.0f}x on the subset, "
          f"{full_first / t_full_cached:.0f}x at full size (first build extrapolated)")
    print(f"cosine(ours, open_clip) per class: min {cosine.min():.7f}, mean {cosine.mean():.7f}")
    if args.full:
        print(f"ours, full {n_full} prompts measured: first build {t_full_first / 60:.1f} min, cached rebuild "
              f"{t_full_rebuild:.2f} s ({t_full_first / t_full_rebuild:.0f}x)")


if __name__ == "__main__":
    main()
