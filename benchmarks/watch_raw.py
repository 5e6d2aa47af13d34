"""RAW decoding through the embedded preview against the half-size demosaic (one run, side by side), the
folder watcher's CPU while idle over a large tree, and its latency from a file written to searchable.

    PYTHONPATH=... python benchmarks/watch_raw.py --raws 6 --raw-size 6000x4000 --tree 100000 --idle 30
    PYTHONPATH=... python benchmarks/watch_raw.py --burst 10000 --only-burst
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from library_fixtures import tiny_bundle, write_image  # noqa: E402
from raw_files import write_dng  # noqa: E402

from cliplab.app.services import library, search, watching  # noqa: E402
from cliplab.engine.images import Preprocess  # noqa: E402
from cliplab.engine.raw import load_raw  # noqa: E402
from cliplab.indexes.catalog import open_catalog  # noqa: E402


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raw_rates(folder: Path, count: int, width: int, height: int, resolution: int = 224) -> dict[str, float]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [write_dng(folder / f"r{n}.dng", width, height, preview="jpeg", seed=n) for n in range(count)]
    preprocess = Preprocess(resolution)
    rates = {}
    for mode, use_preview in (("preview", True), ("demosaic", False)):
        started = time.perf_counter()
        for path in paths:
            preprocess(load_raw(path, resolution, use_preview=use_preview))
        rates[mode] = count / (time.perf_counter() - started)
    return rates


def idle_cpu(folder: Path, files: int, seconds: float) -> tuple[float, int]:
    """CPU share of one core the watcher uses over `seconds` with nothing changing, for a tree of empty
    .jpg files (1000 a folder) that is a library folder of a catalog (not embedded: idle is idle)."""
    for n in range(files):
        sub = folder / f"d{n // 1000:04d}"
        if n % 1000 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{n:06d}.jpg").touch()
    catalog = open_catalog()
    from cliplab.indexes.scan import scan
    scan(catalog, [folder])
    watcher = watching.start_watcher(catalog, tiny_bundle(), reconcile=0, reconcile_at_start=False, workers=0)
    time.sleep(10)  # the observer adds its watches
    before, started = cpu(), time.perf_counter()
    time.sleep(seconds)
    share = (cpu() - before) / (time.perf_counter() - started)
    watcher.stop()
    return share, files


def latency(folder: Path, tries: int = 5) -> list[float]:
    catalog = open_catalog(f"sqlite:///{folder / 'latency.db'}")
    bundle = tiny_bundle()
    photos = folder / "photos"
    write_image(photos / "seed.png", 0)
    library.add_folders(catalog, bundle, [str(photos)], workers=0)
    found = []
    with watching.start_watcher(catalog, bundle, reconcile=0, reconcile_at_start=False, workers=0) as watcher:
        time.sleep(2)
        for n in range(tries):
            path = photos / f"new{n}.png"
            started = time.perf_counter()
            write_image(path, 100 + n)
            while True:
                view = search.search(catalog, bundle, [search.image_term(str(path))], per_page=1)
                if view.results and view.results[0].path == str(path):
                    break
                time.sleep(0.05)
            found.append(time.perf_counter() - started)
        assert watcher.state.error == ""
    return found


def burst(folder: Path, count: int) -> tuple[int, float]:
    """count small photos moved into a watched folder at once: batches of work, seconds until all are indexed."""
    catalog = open_catalog(f"sqlite:///{folder / 'burst.db'}")
    bundle = tiny_bundle()
    photos, outside = folder / "photos", folder / "outside"
    write_image(photos / "seed.png", 0)
    for n in range(count):
        write_image(outside / f"b{n:05d}.png", 1 + n)
    library.add_folders(catalog, bundle, [str(photos)], workers=0)
    with watching.start_watcher(catalog, bundle, reconcile=0, reconcile_at_start=False, workers=1) as watcher:
        time.sleep(2)
        started, batches = time.perf_counter(), watcher.state.batches
        os.rename(outside, photos / "burst")
        while library.library_summary(catalog).indexed < count + 1:
            time.sleep(0.2)
        seconds = time.perf_counter() - started
        watcher.wait_idle(120)  # the batch's vector index is saved, and counted
        return watcher.state.batches - batches, seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--raws", type=int, default=12)
    parser.add_argument("--raw-size", default="6000x4000")
    parser.add_argument("--tree", type=int, default=100_000)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--burst", type=int, default=0, help="also: a burst of N photos (0: not run)")
    parser.add_argument("--only-burst", action="store_true")
    args = parser.parse_args()
    width, height = (int(v) for v in args.raw_size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CLIPLAB_HOME"] = str(Path(tmp) / "home")
        if args.burst:
            batches, seconds = burst(Path(tmp), args.burst)
            print(f"burst of {args.burst} photos: {batches} batch(es) of work, all indexed after {seconds:.1f} s",
                  flush=True)
        if args.only_burst:
            return
        rates = raw_rates(Path(tmp) / "raw", args.raws, width, height)
        print(f"RAW {width}x{height}, {args.raws} files: preview {rates['preview']:.2f}/s, half-size demosaic "
              f"{rates['demosaic']:.2f}/s, ratio {rates['preview'] / rates['demosaic']:.1f}x", flush=True)
        waits = latency(Path(tmp))
        print(f"written -> searchable (settle 2 s, quiet 1 s): median {sorted(waits)[len(waits) // 2]:.2f} s, "
              f"max {max(waits):.2f} s over {len(waits)}", flush=True)
        share, files = idle_cpu(Path(tmp) / "tree", args.tree, args.idle)
        print(f"idle watcher over {files} files: {100 * share:.2f}% of one core over {args.idle:.0f} s", flush=True)


if __name__ == "__main__":
    main()
