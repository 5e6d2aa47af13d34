"""Map layout timings: UMAP warm-up (numba compilation), a 5k-photo layout after warm-up, and the
cached layout. Vectors are clustered unit vectors shaped like CLIP embeddings (512-d).

    python benchmarks/map.py [--n 5000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    os.environ.setdefault("CLIPLAB_HOME", tempfile.mkdtemp(prefix="cliplab-bench-"))
    from cliplab.app.services import map as maps

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, args.dim))
    x = (centres[rng.integers(0, 20, args.n)] + 0.7 * rng.normal(size=(args.n, args.dim))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    points = maps.LibraryPoints(np.arange(args.n, dtype=np.int64), [""] * args.n, [""] * args.n, [], x,
                                state_key=f"bench-{args.n}-{os.getpid()}")
    started = time.perf_counter()
    maps.start_warm_up().join()
    print(f"warm-up (import + numba compilation): {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    xy = maps.layout(points)
    print(f"first layout of {args.n} x {args.dim}: {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    assert np.array_equal(maps.layout(points), xy)
    print(f"cached layout: {1000 * (time.perf_counter() - started):.1f} ms")


if __name__ == "__main__":
    main()
