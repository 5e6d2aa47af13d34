"""Quality gates of every inference mode on trained weights (the demo model), against fp32.

    python benchmarks/quality.py [--n-test 400] [--n-retrieval 500] [--library 2000]

For each mode the machine runs (engine.runtime.candidate_modes, plus bf16 with --bf16): cosine to
fp32 of the held-out image and caption embeddings, zero-shot accuracy on the demo's five held-out
tasks (one prompt and the ensemble, as trainer/demo/card.py measures them), retrieval R@1/5/10 on
held-out scenes, and the mean top-20 Jaccard overlap with fp32's results when searching a generated
library of --library images with every held-out caption of --queries scenes. A mode whose
zero-shot accuracy moves by more than 0.5 points on any task fails the gate (engine.runtime
.FAILED_QUALITY_GATE lists the modes that failed, so they are never chosen automatically).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cliplab.engine import onednn  # noqa: E402
from cliplab.engine.features import encode_texts  # noqa: E402
from cliplab.engine.handle import ModelBundle  # noqa: E402
from cliplab.engine.precision import cpu_summary  # noqa: E402
from cliplab.engine.runtime import TorchEncoder, candidate_modes, make_encoder  # noqa: E402
from cliplab.trainer.demo.world import World  # noqa: E402
from cliplab.trainer.evaluate import RetrievalSet, ZeroShotSet, evaluate, image_features  # noqa: E402

TASKS = ("shape", "colour", "count", "position", "word")
GATE_POINTS = 0.5


def jaccard_top(a: np.ndarray, b: np.ndarray, k: int = 20) -> float:
    """Mean |A ∩ B| / |A ∪ B| of the top-k result sets of the same queries ranked two ways."""
    overlaps = [len(set(x) & set(y)) / len(set(x) | set(y)) for x, y in zip(a[:, :k], b[:, :k])]
    return float(np.mean(overlaps))


def top_ids(library: np.ndarray, queries: np.ndarray, k: int = 20) -> np.ndarray:
    return np.argsort(-(queries @ library.T), axis=1, kind="stable")[:, :k]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-test", type=int, default=400)
    parser.add_argument("--n-retrieval", type=int, default=500)
    parser.add_argument("--library", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--bf16", action="store_true", help="also bf16 (emulated, slow on CPUs without AVX512-BF16)")
    args = parser.parse_args()
    bundle = ModelBundle.load("demo", device="cpu", precision="fp32")
    model, preprocess, tokenizer = bundle.model, bundle.preprocess, bundle.tokenizer
    world = World(seed=0, image_size=model.image_resolution)
    tasks = world.zero_shot_tasks()

    def tensors(images) -> torch.Tensor:
        return torch.stack([preprocess(i) for i in images])

    zero_shot = {}
    for name in TASKS:
        images, labels = world.labelled(tasks[name], args.n_test, split="heldout", seed=2)
        zero_shot[name] = ZeroShotSet(tasks[name].classnames, tasks[name].prompts[0], tasks[name].ensemble,
                                      tensors(images), labels)
    images, captions = world.retrieval_set(args.n_retrieval, split="heldout", seed=2)
    retrieval = RetrievalSet(tensors(images), captions)
    library_images, _ = world.retrieval_set(args.library, split="heldout", seed=5, distinct=False)
    library_pixels = tensors(library_images)
    query_texts = captions[:args.queries]

    modes = candidate_modes(torch.device("cpu")) + (["bf16"] if args.bf16 else [])
    # The reference is PyTorch fp32 through its default BLAS; the exact mode through oneDNN is a row of its own
    encoders = {"fp32": lambda: TorchEncoder(model, kernels="blas")}
    if onednn.available():
        encoders["fp32-onednn"] = lambda: TorchEncoder(model, kernels="onednn")
    encoders.update({mode: lambda mode=mode: make_encoder(model, mode) for mode in modes if mode != "fp32"})
    rows, reference = {}, {}
    for mode, make in encoders.items():
        encoder = make()
        if encoder.mode != mode.removesuffix("-onednn"):
            continue
        results = evaluate(encoder, tokenizer, zero_shot, retrieval)
        image_vectors = image_features(encoder, retrieval.images)
        text_vectors = encode_texts(encoder, tokenizer, captions, truncate=True)
        library = image_features(encoder, library_pixels)
        queries = text_vectors[:args.queries]
        if mode == "fp32":
            reference = dict(results=results, images=image_vectors, texts=text_vectors,
                             top=top_ids(library, queries))
        row = {"image_cosine_min": float(np.min(np.sum(image_vectors * reference["images"], axis=1))),
               "text_cosine_min": float(np.min(np.sum(text_vectors * reference["texts"], axis=1))),
               "top20_jaccard": jaccard_top(top_ids(library, queries), reference["top"]),
               "queries": len(query_texts), "library": args.library}
        row.update({key: round(100 * value, 2) for key, value in results.items()})
        moved = max(abs(100 * (results[k] - reference["results"][k])) for k in results if k.startswith("zeroshot/"))
        row["max_zeroshot_move_points"] = round(moved, 2)
        row["passes_gate"] = round(moved, 6) <= GATE_POINTS  # one image of 400 is 0.25 points: no float fuzz
        rows[mode] = row
        print(json.dumps({mode: row}), flush=True)
    print(f"\nCPU: {cpu_summary()}; torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    keys = [f"zeroshot/{t}" for t in TASKS]
    print("| mode | image cos min | text cos min | " + " | ".join(t for t in TASKS) +
          " | t2i R@1/5/10 | i2t R@1/5/10 | top-20 Jaccard | max zero-shot move | gate |")
    print("|---" * (len(TASKS) + 8) + "|")
    for mode, r in rows.items():
        t2i = "/".join(f"{r[f'retrieval/t2i@{k}']:.1f}" for k in (1, 5, 10))
        i2t = "/".join(f"{r[f'retrieval/i2t@{k}']:.1f}" for k in (1, 5, 10))
        print(f"| {mode} | {r['image_cosine_min']:.6f} | {r['text_cosine_min']:.6f} | "
              + " | ".join(f"{r[k]:.2f}" for k in keys)
              + f" | {t2i} | {i2t} | {r['top20_jaccard']:.3f} | {r['max_zeroshot_move_points']:.2f} | "
              f"{'pass' if r['passes_gate'] else 'FAIL'} |")


if __name__ == "__main__":
    main()
