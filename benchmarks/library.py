"""Photo-library benchmarks: indexing throughput, query latency, memory per vector, rescans.

    python benchmarks/library.py                    # everything (several minutes on 2 cores)
    python benchmarks/library.py --only query --sizes 10000 100000 1000000

1. Indexing of generated 12 MP JPEGs with ViT-B/32 (random weights), end to end, side by side
   in one run: ours (scan + worker-process decoding in JPEG draft mode + batched encoding with the
   engine's fastest safe precision) against a plain pipeline as common tools do it (PIL full decode,
   reference preprocessing, fp32 model, one process).
2. Text query -> top 20 over N random clustered unit vectors (d = 512): the exact FAISS index
   (with our lowered BLAS threshold, and with faiss's default), a numpy matrix product + partial
   sort over the same vectors, and at the largest N the approximate (IVF) index with its recall@10.
3. Memory per vector of each index kind (serialised size / N).
4. An incremental rescan of an unchanged library of 10k tiny files (first scan: every file read
   and fingerprinted; rescan: nothing read).
5. Fingerprint cost per GB: blake2b-128 of whole files (what scans read for new or changed files),
   from the page cache, so the figure is the hashing cost; a cold disk adds its own read time.
6. (moved) Near-duplicates are found by the copy detector now: benchmarks/copy_detector.py.
7. (`--only pipeline`) Indexing at the decode limit: the same generated JPEGs decoded alone by the
   same worker pool (no model: the ceiling decoding allows on these cores), then indexed end to
   end in the exact fp32 mode and in the machine's measured fastest safe mode, beside the plain
   pipeline; also the model alone in each mode (preprocessed batches, no decoding). Reports each
   end-to-end rate as a fraction of the shared-core bound 1/(1/decode + 1/model), the most a
   pipeline can reach when decoding and the model share the same cores, and of the ceiling.
9. (`--only video`) Indexing a video: a generated H.264 video (demo-world scenes cut every 2 s, a
   moving pattern on top) decoded with frame choice alone (the same decoding process and queue as the
   indexer, no model: the decode-only rate), the model alone on preprocessed frames, and indexed end
   to end with ViT-B/32 in the fastest safe mode; frames embedded per second against decode-only and
   the shared-core bound, and seconds of video indexed per second of wall time, in one run.
8. (`--only storage`) fp32 / fp16 / int8 storage (FAISS scalar quantizers) of flat and IVF indexes at
   each N: query latency, bytes per vector and recall@10 against the exact ranking.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_jpegs(folder: Path, count: int, size=(4000, 3000)) -> list[Path]:
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"photo_{i:04d}.jpg"
        if not path.exists():
            small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)  # smooth, photo-like after upscaling
            Image.fromarray(small).resize(size, Image.Resampling.BICUBIC).save(path, quality=90)
        paths.append(path)
    return paths


def bench_indexing(count: int, workers: int | None) -> dict:
    import torch

    from cliplab.engine import model_preprocess
    from cliplab.engine.model import CLIP
    from cliplab.engine.precision import fastest_safe_precision
    from cliplab.engine.tokenizer import Tokenizer
    from cliplab.indexes.catalog import open_catalog
    from cliplab.indexes.indexer import ModelBundle, index_pending
    from cliplab.indexes.scan import scan

    work = Path(tempfile.mkdtemp(prefix="cliplab-bench-"))
    paths = make_jpegs(Path(os.environ.get("CLIPLAB_BENCH_JPEGS", work / "jpegs")), count)
    torch.manual_seed(0)
    model = CLIP.from_name("ViT-B/32").eval()
    preprocess = model_preprocess(model)  # a random-weight model's own: the reference transform

    plain = plain_pipeline(paths, model)  # full decode, reference preprocessing, fp32, one process

    os.environ["CLIPLAB_HOME"] = str(work / "home")
    catalog = open_catalog(f"sqlite:///{work / 'catalog.db'}")
    precision = fastest_safe_precision("cpu")
    start = time.perf_counter()
    scan(catalog, [paths[0].parent])
    report = index_pending(catalog, ModelBundle(model, preprocess, Tokenizer(), "ViT-B/32"), batch_size=32,
                           workers=workers, progress=False)
    ours = count / (time.perf_counter() - start)
    assert report.embedded == count
    return {"images": count, "plain_images_per_s": round(plain, 2), "ours_images_per_s": round(ours, 2),
            "speedup": round(ours / plain, 2), "precision": precision, "decode_workers": workers or os.cpu_count()}


def plain_pipeline(paths: list[Path], model) -> float:
    """Images/s as common tools index: PIL full decode, reference preprocessing, fp32, one process."""
    import torch
    from PIL import Image

    from cliplab.engine import model_preprocess
    from cliplab.engine.features import encode_image_tensors
    preprocess = model_preprocess(model)
    start = time.perf_counter()
    batch = []
    with torch.no_grad():
        for path in paths:
            batch.append(preprocess(Image.open(path).convert("RGB")))
            if len(batch) == 32:
                encode_image_tensors(model, torch.stack(batch))
                batch = []
        if batch:
            encode_image_tensors(model, torch.stack(batch))
    return len(paths) / (time.perf_counter() - start)


def decode_ceiling(paths: list[Path], preprocess, workers: int | None, batch_size: int = 32) -> float:
    """Images/s of the indexer's decoding alone (same pool, same window, no model), timed as the
    pipeline's steady rate is: from the first batch_size images decoded to the last."""
    from cliplab.indexes.decode import DecodePool, overlap_window
    items = list(enumerate(map(str, paths)))
    ahead = overlap_window(batch_size, workers or os.cpu_count() or 1)
    with DecodePool(preprocess, workers=workers, ahead=ahead) as pool:
        next(iter(pool.decode(items[:1])))  # start the workers outside the timing, as the indexer's run amortises
        decoded, start = 0, time.perf_counter()
        for item in pool.decode(items):
            decoded += item.pixels is not None
            if decoded == batch_size:
                start = time.perf_counter()
    assert decoded == len(items)
    return (len(items) - batch_size) / (time.perf_counter() - start)


def model_only(bundle, count: int, batch_size: int = 32, rounds: int = 3) -> float:
    """Images/s of the model alone in the handle's mode: preprocessed batches encoded back to back, no
    decoding (what the encoder allows on these cores); the fastest of `rounds` timings, as for the ceiling."""
    import torch
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(batch_size, 3, bundle.resolution, bundle.resolution, generator=generator)
    bundle.encode_pixels(pixels[:2])  # sessions and kernels built outside the timing
    batches = max(1, count // batch_size)
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(batches):
            bundle.encode_pixels(pixels)
        best = max(best, batches * batch_size / (time.perf_counter() - start))
    return best


def shared_core_bound(decode: float, model: float) -> float:
    """The rate a pipeline can reach when decoding and the model share the same cores: each image costs
    the cores its decode time plus its model time, 1 / (1/decode + 1/model) (issue 26, item 11)."""
    return 1.0 / (1.0 / decode + 1.0 / model)


def bench_pipeline(count: int, workers: int | None) -> dict:
    """Decode-only ceiling and model-only rate beside the end-to-end pipeline in fp32 and in the fastest
    safe mode; each end-to-end rate as a fraction of the shared-core bound of its mode."""
    import torch

    from cliplab.engine import model_preprocess
    from cliplab.engine.handle import ModelBundle
    from cliplab.engine.model import CLIP
    from cliplab.engine.precision import cpu_summary
    from cliplab.engine.runtime import choose_mode
    from cliplab.engine.tokenizer import Tokenizer
    from cliplab.indexes.catalog import open_catalog
    from cliplab.indexes.indexer import index_pending
    from cliplab.indexes.scan import scan

    work = Path(tempfile.mkdtemp(prefix="cliplab-pipeline-"))
    os.environ["CLIPLAB_HOME"] = str(work / "home")
    paths = make_jpegs(Path(os.environ.get("CLIPLAB_BENCH_JPEGS", work / "jpegs")), count)
    torch.manual_seed(0)
    model = CLIP.from_name("ViT-B/32").eval()
    choice = choose_mode(model)
    row = {"images": count, "cpu": cpu_summary(), "threads": torch.get_num_threads(),
           "decode_workers": workers or os.cpu_count(), "fast_mode": choice.mode, "why": choice.reason}
    row["plain_images_per_s"] = round(plain_pipeline(paths, model), 2)
    # The ceiling is timed before each mode and once after the last; the fastest of those is what
    # decoding alone allows (one timing of it moved 31-50 images/s between runs on a quiet machine).
    ceilings = [decode_ceiling(paths, model_preprocess(model), workers)]
    rates: dict[str, float] = {}
    models: dict[str, float] = {}  # mode -> model-only images/s
    for mode in dict.fromkeys(["fp32", choice.mode]):
        if rates:
            ceilings.append(decode_ceiling(paths, model_preprocess(model), workers))
        catalog = open_catalog(f"sqlite:///{work / f'catalog-{mode}.db'}")
        bundle = ModelBundle(model, model_preprocess(model), Tokenizer(), f"ViT-B/32-{mode}", mode)
        bundle.encode_pixels(torch.zeros(1, 3, 224, 224))  # the ONNX session is built once, not per run
        models[mode] = model_only(bundle, count)
        first: list[tuple[float, int]] = []  # (time, images) when the first batch committed
        start = time.perf_counter()
        scan(catalog, [paths[0].parent])
        report = index_pending(catalog, bundle, batch_size=32, workers=workers, progress=False,
                               on_batch=lambda n, r, first=first: first or first.append((time.perf_counter(), r.embedded)))
        end = time.perf_counter()
        rate = count / (end - start)
        assert report.embedded == count
        row[f"{mode}_end_to_end_images_per_s"] = round(rate, 2)
        if count > first[0][1]:  # after the first batch: the workers' start-up (forkserver, imports) amortised
            rate = (count - first[0][1]) / (end - first[0][0])
        row[f"{mode}_images_per_s"] = rates[mode] = round(rate, 2)
        row[f"{mode}_vs_plain"] = round(rate / row["plain_images_per_s"], 2)
    ceilings.append(decode_ceiling(paths, model_preprocess(model), workers))
    row["decode_only_timings"] = [round(c, 2) for c in ceilings]
    row["decode_only_images_per_s"] = round(max(ceilings), 2)
    for mode, rate in rates.items():
        row[f"{mode}_of_decode_ceiling"] = round(rate / max(ceilings), 3)
        row[f"{mode}_model_only_images_per_s"] = round(models[mode], 2)
        bound = shared_core_bound(max(ceilings), models[mode])
        row[f"{mode}_shared_core_bound"] = round(bound, 2)
        row[f"{mode}_of_bound"] = round(rate / bound, 3)
    return row


def make_video(path: Path, seconds: int, size=(640, 360), fps: int = 30) -> Path:
    """A video of demo-world scenes cut every 2 s, with a bar sweeping across (every frame differs, as
    in a real video, so nothing is decoded for free)."""
    if path.is_file():
        return path
    import av
    from PIL import Image

    from cliplab.trainer.demo.world import World
    world, rng = World(seed=2, image_size=size[1], holdout=()), np.random.default_rng(0)
    scenes = [np.asarray(world.scene_sample(rng, count=1, size="large").image.convert("RGB")
                         .resize(size, Image.Resampling.BILINEAR)) for _ in range(seconds // 2 + 1)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for n in range(seconds * fps):
            pixels = scenes[n // (2 * fps)].copy()
            x = (n * 7) % size[0]
            pixels[:, x:x + 12] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def video_decode_only(path: Path, preprocess) -> tuple[float, int]:
    """(seconds, frames) of the indexer's video decoding alone: the same process, frame choice,
    preprocessing and queue, frames dropped instead of encoded."""
    from cliplab.engine.video import FrameChoice
    from cliplab.indexes.video import _Frames
    start, frames = time.perf_counter(), 0
    source = _Frames(str(path), preprocess, FrameChoice(), 3600)
    try:
        while (message := source.next())[0] not in ("end", "skip"):
            frames += message[0] == "frame"
    finally:
        source.close()
    assert message[0] == "end", message
    return time.perf_counter() - start, frames


def scene_measures(path: Path, rounds: int = 3) -> dict:
    """Frame choice against FFmpeg's own scene statistics, in this process, fastest of `rounds`: every
    frame decoded and dropped; every frame through the `scdet` filter (its cut times); engine.video's
    choice (4 signatures a second, chosen frames at 224 px)."""
    import av

    from cliplab.engine.video import chosen_frames

    def decode_all() -> int:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            return sum(1 for _ in container.decode(stream))

    def scdet() -> list[float]:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            graph = av.filter.Graph()
            source, detect, sink = graph.add_buffer(template=stream), graph.add("scdet", "threshold=10"), graph.add("buffersink")
            source.link_to(detect)
            detect.link_to(sink)
            graph.configure()
            cuts = []
            for frame in container.decode(stream):
                graph.push(frame)
                while True:
                    try:
                        out = graph.pull()
                    except (av.error.BlockingIOError, av.error.EOFError):
                        break
                    if "lavfi.scd.time" in out.metadata:
                        cuts.append(round(float(out.metadata["lavfi.scd.time"]), 2))
            return cuts

    def ours() -> list[float]:
        return [round(f.time, 2) for f in chosen_frames(str(path), 224)]

    row = {}
    for name, fn in (("decode_all", decode_all), ("scdet", scdet), ("engine_video", ours)):
        timings = []
        for _ in range(rounds):
            start = time.perf_counter()
            found = fn()
            timings.append(time.perf_counter() - start)
        row[f"{name}_s"] = round(min(timings), 3)
        if name != "decode_all":
            row[f"{name}_times"] = found
    return row


def bench_video(seconds: int) -> dict:
    import torch

    from cliplab.engine import model_preprocess
    from cliplab.engine.handle import ModelBundle
    from cliplab.engine.model import CLIP
    from cliplab.engine.precision import cpu_summary
    from cliplab.engine.runtime import choose_mode
    from cliplab.engine.tokenizer import Tokenizer
    from cliplab.indexes.catalog import open_catalog
    from cliplab.indexes.indexer import index_pending
    from cliplab.indexes.scan import scan

    work = Path(tempfile.mkdtemp(prefix="cliplab-video-"))
    os.environ["CLIPLAB_HOME"] = str(work / "home")
    folder = Path(os.environ.get("CLIPLAB_BENCH_VIDEOS", work / "videos"))
    path = make_video(folder / f"scenes-{seconds}s.mp4", seconds)
    measures = scene_measures(path)
    torch.manual_seed(0)
    model = CLIP.from_name("ViT-B/32").eval()
    mode = choose_mode(model).mode
    bundle = ModelBundle(model, model_preprocess(model), Tokenizer(), f"ViT-B/32-{mode}", mode)
    bundle.encode_pixels(torch.zeros(1, 3, 224, 224))  # sessions built outside the timings
    video_decode_only(path, bundle.preprocess)  # the forkserver started outside the timings, as in a run
    decode_seconds, frames = min(video_decode_only(path, bundle.preprocess) for _ in range(2))
    model_rate = model_only(bundle, max(32, frames))
    catalog = open_catalog(f"sqlite:///{work / 'catalog.db'}")
    scan(catalog, [folder])
    start = time.perf_counter()
    report = index_pending(catalog, bundle, batch_size=32, progress=False)
    wall = time.perf_counter() - start
    assert report.embedded == 1 and report.video_frames == frames, report
    decode_rate = frames / decode_seconds
    bound = shared_core_bound(decode_rate, model_rate)
    return {"video_seconds": seconds, "size": "640x360", "fps": 30, "cpu": cpu_summary(),
            "threads": torch.get_num_threads(), "mode": mode, "frames_chosen": frames,
            "decode_only_frames_per_s": round(decode_rate, 2),
            "decode_only_video_s_per_s": round(seconds / decode_seconds, 2),
            "model_only_frames_per_s": round(model_rate, 2), "shared_core_bound_frames_per_s": round(bound, 2),
            "end_to_end_frames_per_s": round(frames / wall, 2), "end_to_end_video_s_per_s": round(seconds / wall, 2),
            "end_to_end_of_decode_only": round(decode_seconds / wall, 3), "end_to_end_of_bound": round(frames / wall / bound, 3),
            "scene_measures": measures}


def bench_storage(sizes: list[int], dim: int = 512, queries: int = 30, only: list[str] | None = None) -> list[dict]:
    """Latency, bytes per vector and recall@10 of each storage of flat and IVF indexes."""
    from cliplab.indexes.vectors import back_with_huge_pages, build, exact_small_batch, index_ids
    rows = []
    for n in sizes:
        vectors = clustered(n, dim, max(10, n // 1000), seed=0)
        ids = np.arange(n, dtype=np.int64)
        qs = clustered(queries, dim, max(10, n // 1000), seed=0)[:queries]
        qs = qs + 0.05 * np.random.default_rng(1).standard_normal(qs.shape).astype(np.float32)
        qs /= np.linalg.norm(qs, axis=1, keepdims=True)
        truth = [np.argsort(-(vectors @ q))[:10] for q in qs]

        def numpy_top20(q, vectors=vectors):  # the best plain numpy: matrix-vector product, select without negating
            scores = vectors @ q
            top = np.argpartition(scores, len(scores) - 20)[-20:]
            return top[np.argsort(-scores[top])]
        row = {"n": n, "numpy_ms": round(_median_ms(numpy_top20, qs), 3)}
        kinds = only or ["flat", "flat-fp16", "flat-int8"] + (["ivf", "ivf-fp16", "ivf-int8"] if n >= 100_000 else [])
        for kind in kinds:
            start = time.perf_counter()
            index = build(vectors, ids, kind)
            built = time.perf_counter() - start
            if kind == "flat":
                back_with_huge_pages(index, wait=True)  # as VectorIndex does on every load and update
                stored = index_ids(index)
                search = lambda q, index=index, stored=stored: exact_small_batch(index, stored, q[None], 20)  # noqa: E731
            else:
                search = lambda q, index=index: index.search(q[None], 20)  # noqa: E731
            _, found = index.search(qs, 10)
            if kind == "flat":  # the ratio to numpy is the target: time the two side by side, round by round
                times = _alternating_ms({"numpy": numpy_top20, "flat": search}, qs)
                row["numpy_ms"], ms = round(times["numpy"], 3), times["flat"]
            else:
                ms = _median_ms(search, qs)
            row[kind] = {"ms": round(ms, 3), "bytes_per_vector": round(_saved_bytes(index) / n, 1),
                         "recall_at_10": float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])),
                         "build_s": round(built, 1)}
            del index
        if "flat" in row:
            row["flat_vs_numpy"] = round(row["flat"]["ms"] / row["numpy_ms"], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def clustered(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        x = centers[rng.integers(0, clusters, m)] + 0.5 * rng.standard_normal((m, dim)).astype(np.float32)
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def _median_ms(fn, queries: np.ndarray) -> float:
    fn(queries[0])
    times = []
    for q in queries:
        start = time.perf_counter()
        fn(q)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def _alternating_ms(fns: dict, queries: np.ndarray, rounds: int = 7) -> dict[str, float]:
    """Each function's median latency, the functions taking turns round by round so that a burst of
    load from other jobs falls on all of them alike; the median over rounds of each round's median."""
    per_round = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            per_round[name].append(_median_ms(fn, queries))
    return {name: float(np.median(times)) for name, times in per_round.items()}


def _saved_bytes(index) -> int:
    import faiss
    with tempfile.NamedTemporaryFile(suffix=".faiss") as f:
        faiss.write_index(index, f.name)
        return os.path.getsize(f.name)


def bench_query(sizes: list[int], dim: int = 512, queries: int = 30) -> list[dict]:
    rows = []
    for n in sizes:
        rows.append(query_row(n, dim, queries, approximate=n == max(sizes)))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def query_row(n: int, dim: int, queries: int, approximate: bool) -> dict:
    import faiss

    from cliplab.indexes.vectors import build, exact_small_batch, index_ids
    vectors = clustered(n, dim, max(10, n // 1000), seed=0)
    ids = np.arange(n, dtype=np.int64)
    qs = clustered(queries, dim, max(10, n // 1000), seed=0)[:queries]  # queries from the same clusters
    qs = qs + 0.05 * np.random.default_rng(1).standard_normal(qs.shape).astype(np.float32)
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)

    def numpy_top20(q):
        scores = vectors @ q
        top = np.argpartition(-scores, 20)[:20]
        return top[np.argsort(-scores[top])]

    flat = build(vectors, ids, "flat")
    row = {"n": n, "numpy_ms": round(_median_ms(numpy_top20, qs), 3)}
    stored_ids = index_ids(flat)
    row["flat_ms"] = round(_median_ms(lambda q: exact_small_batch(flat, stored_ids, q[None], 20), qs), 3)
    row["faiss_flat_search_ms"] = round(_median_ms(lambda q: flat.search(q[None], 20), qs), 3)
    batch = np.repeat(qs, 2, axis=0)[:32]  # a small batch (e.g. 32 images' more-like-this): BLAS threshold
    row["batch32_faiss_ms_threshold_20"] = round(_median_ms(lambda q: flat.search(batch, 20), qs[:5]), 3)
    faiss.cvar.distance_compute_blas_threshold = 128000
    row["batch32_faiss_ms_threshold_default"] = round(_median_ms(lambda q: flat.search(batch, 20), qs[:5]), 3)
    faiss.cvar.distance_compute_blas_threshold = 20
    row["flat_bytes_per_vector"] = round(_saved_bytes(flat) / n, 1)
    row["flat_vs_numpy"] = round(row["flat_ms"] / row["numpy_ms"], 3)
    if approximate:
        del flat
        start = time.perf_counter()
        ivf = build(vectors, ids, "ivf")
        row["ivf_build_s"] = round(time.perf_counter() - start, 1)
        row["ivf_ms"] = round(_median_ms(lambda q: ivf.search(q[None], 20), qs), 3)
        row["ivf_vs_numpy"] = round(row["ivf_ms"] / row["numpy_ms"], 3)
        _, found = ivf.search(qs, 10)
        truth = [numpy_top20(q)[:10] for q in qs]
        row["ivf_recall_at_10"] = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))
        row["ivf_bytes_per_vector"] = round(_saved_bytes(ivf) / n, 1)
        row["ivf_nlist_nprobe"] = [faiss.extract_index_ivf(ivf).nlist, faiss.extract_index_ivf(ivf).nprobe]
    return row


def bench_rescan(count: int = 10_000) -> dict:
    from cliplab.indexes.catalog import open_catalog
    from cliplab.indexes.scan import scan
    work = Path(tempfile.mkdtemp(prefix="cliplab-rescan-"))
    os.environ["CLIPLAB_HOME"] = str(work / "home")
    for i in range(count):
        folder = work / "lib" / f"d{i // 500:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:05d}.jpg").write_bytes(i.to_bytes(4, "little") * 64)
    catalog = open_catalog(f"sqlite:///{work / 'catalog.db'}")
    start = time.perf_counter()
    first = scan(catalog, [work / "lib"])
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    again = scan(catalog, [work / "lib"])
    rescan_s = time.perf_counter() - start
    assert again.unchanged == count and again.fingerprinted == 0
    return {"files": count, "first_scan_s": round(first_s, 2), "rescan_s": round(rescan_s, 2),
            "files_read_on_rescan": again.fingerprinted, "added_first": len(first.added)}


def bench_fingerprint(megabytes: int = 512, files: int = 8) -> dict:
    from cliplab.indexes.scan import fingerprint
    work = Path(tempfile.mkdtemp(prefix="cliplab-hash-"))
    rng = np.random.default_rng(0)
    paths = []
    for i in range(files):
        path = work / f"{i}.bin"
        path.write_bytes(rng.integers(0, 256, megabytes * 2**20 // files, dtype=np.uint8).tobytes())
        paths.append(path)
    for path in paths:  # warm the page cache: measure hashing, not this disk
        path.read_bytes()
    gb = megabytes / 1024
    start = time.perf_counter()
    for path in paths:
        fingerprint(path)
    one = time.perf_counter() - start
    from concurrent.futures import ThreadPoolExecutor

    from cliplab.indexes.scan import HASH_THREADS
    start = time.perf_counter()
    with ThreadPoolExecutor(HASH_THREADS) as pool:
        list(pool.map(fingerprint, paths))
    threaded = time.perf_counter() - start
    return {"megabytes": megabytes, "seconds_per_gb_one_thread": round(one / gb, 3),
            "seconds_per_gb_scan_threads": round(threaded / gb, 3), "threads": HASH_THREADS,
            "cpu_flags": sorted(set(f for f in open("/proc/cpuinfo").read().split() if f.startswith("avx")))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["indexing", "query", "rescan", "fingerprint", "pipeline",
                                           "storage", "video"], action="append")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--video-seconds", type=int, default=120, help="video: the generated video's length")
    parser.add_argument("--kinds", nargs="+", help="storage: only these index kinds (e.g. flat ivf-int8)")
    args = parser.parse_args()
    parts = args.only or ["indexing", "query", "rescan", "fingerprint"]
    results = {}
    if "fingerprint" in parts:
        results["fingerprint"] = bench_fingerprint()
        print(json.dumps(results["fingerprint"]), flush=True)
    if "rescan" in parts:
        results["rescan"] = bench_rescan()
        print(json.dumps(results["rescan"]), flush=True)
    if "indexing" in parts:
        results["indexing"] = bench_indexing(args.images, args.workers)
        print(json.dumps(results["indexing"]), flush=True)
    if "query" in parts:
        results["query"] = bench_query(args.sizes)
    if "pipeline" in parts:
        results["pipeline"] = bench_pipeline(args.images, args.workers)
        print(json.dumps(results["pipeline"]), flush=True)
    if "storage" in parts:
        results["storage"] = bench_storage(args.sizes, only=args.kinds)
    if "video" in parts:
        results["video"] = bench_video(args.video_seconds)
        print(json.dumps(results["video"]), flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
