"""Saved classifiers on the library (issue 28): applying one, and zero-shot vs few-shot as the paper measures.

    python benchmarks/classifiers.py                       # both parts (a few minutes on 2 cores)
    python benchmarks/classifiers.py --only apply --sizes 10000 100000
    python benchmarks/classifiers.py --only fewshot --out docs/figures

1. apply: a C-class classifier (random unit weights, d = 512 as ViT-B/32) on N random unit vectors, the
   computation alone (engine.labelling.top_labels: top 3 labels and probabilities; median of 5 runs), beside a
   float64 numpy reference of the same (its top labels must agree); then end to end through a SQLite catalog
   holding N stored embeddings (app.services.labels.apply): the first application (read every stored vector,
   compute, write N label rows), an incremental one after 1% of the embeddings changed, and the check of an
   up-to-date application. The computation also reports its CPU seconds (all threads): on a shared machine
   the wall time depends on the load, the CPU time much less.
2. fewshot: the demo model on its own world, written as labelled folders (one sub-folder per class), through
   `cliplab eval fewshot`'s service: zero-shot, the k-shot logistic-regression probe and the improved head
   (zero-shot prior) at k = 1, 2, 4, 8, 16, three seeds, with the plot (accuracy against k).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def bench_compute(n: int, classes: int, dim: int = 512) -> dict:
    from cliplab.engine.labelling import top_labels
    rng = np.random.default_rng(0)
    vectors, weights = unit(rng.normal(size=(n, dim))), unit(rng.normal(size=(classes, dim)))
    times, cpu = [], []
    for _ in range(5):
        started, started_cpu = time.perf_counter(), time.process_time()
        top = top_labels(weights, 100.0, vectors, k=3)
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)  # CPU seconds over every thread: what a quiet machine needs
    logits = 100.0 * vectors.astype(np.float64) @ weights.T.astype(np.float64)
    agree = float(np.mean(logits.argmax(axis=1) == top.indices[:, 0]))
    return {"n": n, "classes": classes, "seconds_median": statistics.median(times), "seconds_min": min(times),
            "cpu_seconds_median": statistics.median(cpu),
            "top1_agreement_with_float64": agree}


def bench_catalog(n: int, classes: int) -> dict:
    """apply() end to end on a catalog of n stored embeddings (the tiny test model's 64-d space)."""
    from library_fixtures import tiny_bundle
    from sqlalchemy import insert, update

    from cliplab.app.services import classifiers, labels
    from cliplab.indexes.catalog import Embedding, File, Folder, Model, open_catalog, to_blob

    os.environ["CLIPLAB_HOME"] = tempfile.mkdtemp(prefix="cliplab-bench-labels-")
    catalog, bundle = open_catalog(), tiny_bundle()
    bundle.mode = "fp32"
    model_id = bundle.register(catalog)
    rng = np.random.default_rng(0)
    vectors = unit(rng.normal(size=(n, bundle.model.embed_dim)))
    with catalog.session() as session, session.begin():
        session.add(Folder(id=1, path="/bench", volume="/", online=True))
        session.execute(insert(File), [dict(id=i + 1, folder_id=1, path=f"/bench/{i}.jpg", ext="jpg", size=1, mtime_ns=0,
                                            fingerprint=f"{i:032x}", status="ok") for i in range(n)])
        session.execute(insert(Embedding), [dict(file_id=i + 1, model_id=model_id, vector=to_blob(v), version=1)
                                            for i, v in enumerate(vectors)])
        session.execute(update(Model).values(version=1, mode="fp32", preprocessing=bundle.preprocess.record()))
    classifiers.save_classifier(catalog, "bench", [f"class {i}" for i in range(classes)], ["a photo of a {}."],
                                bundle=bundle)
    labels.library_classifier(catalog, bundle, "bench")  # the prompts embedded once (cached), not timed
    started = time.perf_counter()
    first = labels.apply(catalog, bundle, "bench")
    t_first = time.perf_counter() - started
    changed = max(1, n // 100)
    with catalog.session() as session, session.begin():
        for i in range(changed):
            session.execute(update(Embedding).where(Embedding.file_id == i + 1).values(
                vector=to_blob(unit(rng.normal(size=(1, bundle.model.embed_dim)))[0]), version=2))
        session.execute(update(Model).values(version=2))
    started = time.perf_counter()
    again = labels.apply(catalog, bundle, "bench")
    t_again = time.perf_counter() - started
    started = time.perf_counter()
    labels.apply(catalog, bundle, "bench")
    t_check = time.perf_counter() - started
    assert first.labelled == n and again.labelled == changed
    return {"n": n, "classes": classes, "first_apply_s": t_first, "incremental_s": t_again, "changed": changed,
            "up_to_date_check_s": t_check}


def bench_fewshot(out: Path, per_class: int) -> dict:
    from cliplab.app.services.evaluate import eval_fewshot
    from cliplab.engine.handle import ModelBundle
    from cliplab.trainer.demo.world import World

    os.environ["CLIPLAB_HOME"] = tempfile.mkdtemp(prefix="cliplab-bench-fewshot-")
    bundle = ModelBundle.load(precision="fp32")
    world = World()
    results = {}
    for task_name in ("shape", "colour"):
        task = world.zero_shot_tasks()[task_name]
        images, targets = world.labelled(task_name, per_class * len(task.values))
        folder = Path(tempfile.mkdtemp()) / f"world-{task_name}"  # the plot's title names the folder
        for n, (image, target) in enumerate(zip(images, targets)):
            (folder / task.classnames[int(target)]).mkdir(parents=True, exist_ok=True)
            image.save(folder / task.classnames[int(target)] / f"{n:04d}.png")
        started = time.perf_counter()
        metrics = eval_fewshot(bundle, folder, list(task.ensemble), shots=(1, 2, 4, 8, 16), seeds=(0, 1, 2),
                               joint=True, out_dir=out / f"fewshot-{task_name}", progress=False)
        results[task_name] = {
            "classes": len(task.classnames), "pool": metrics["pool"], "test": metrics["test"],
            "zero_shot": metrics["zero_shot_top1"], "seconds": time.perf_counter() - started,
            "probe": {int(r.shots): [r.mean, r.std] for r in metrics["fewshot"].itertuples()},
            "improved_head": {int(r.shots): [r.mean, r.std, r.alphas] for r in metrics["improved"].itertuples()},
            "plot": str(out / f"fewshot-{task_name}" / "fewshot.png")}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["apply", "fewshot"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--per-class", type=int, default=40, help="demo-world images per class (half: the pool)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "cliplab-fewshot")
    args = parser.parse_args()
    report = {"cpu": os.cpu_count(), "load_before": os.getloadavg()[0],
              "cpu_flags": sorted(set(f for f in open("/proc/cpuinfo").read().split() if f.startswith("avx")))}
    if args.only in (None, "apply"):
        report["compute"] = [bench_compute(n, args.classes) for n in args.sizes]
        report["catalog"] = [bench_catalog(n, args.classes) for n in args.sizes]
    if args.only in (None, "fewshot"):
        report["fewshot"] = bench_fewshot(args.out, args.per_class)
    report["load_after"] = os.getloadavg()[0]
    print(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
