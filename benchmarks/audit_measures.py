"""Time the audit's measurements (no model) on a FairFace-sized sample: injected outputs, random features.

    python benchmarks/audit_measures.py --images 10000 --dim 512
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from cliplab.engine.audit.datasets import FAIRFACE_VALUES, AuditDataset
from cliplab.engine.audit.labelsets import load_labelset, with_added
from cliplab.engine.audit.runner import AuditOptions, measure


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    n, rng = args.images, np.random.default_rng(0)
    groups = {c: np.array(v, dtype=object)[rng.integers(0, len(v), n)] for c, v in FAIRFACE_VALUES.items()}
    dataset = AuditDataset(source="synthetic", kind="fairface", split="val", file_hash="0" * 64, paths=[None] * n,
                           groups=groups, values=FAIRFACE_VALUES, rows=np.arange(n), n_rows=n)
    a = load_labelset("paper")
    b = with_added(a, ["child"])
    probs_a, probs_b = rng.dirichlet(np.full(21, 0.3), n), rng.dirichlet(np.full(22, 0.3), n)
    features = rng.standard_normal((n, args.dim)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    for folds in (0, 3):
        cpu, wall = time.process_time(), time.perf_counter()
        measure(probs_a, a, dataset, AuditOptions(dataset="synthetic", probe_folds=folds), probs_b, b,
                {"v1": probs_a, "v2": probs_b[:, :21]}, features, {})
        print(f"probe folds {folds}: wall {time.perf_counter() - wall:.1f} s, CPU {time.process_time() - cpu:.1f} s")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
