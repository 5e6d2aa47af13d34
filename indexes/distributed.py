"""Embedding a library over many GPUs or nodes with torchrun.

    torchrun --nproc_per_node 8 -m cliplab.indexes.distributed ~/Pictures --model ViT-L/14
    torchrun --nnodes 4 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \\
        -m cliplab.indexes.distributed /shared/photos --model ViT-L/14 --catalog postgresql+psycopg://...

Rank 0 scans the folders and lists the pending files, and broadcasts the list; every rank decodes
and embeds its shard (every world-th file); after each step rank 0 gathers the ranks' batches and
commits them to the catalog in one transaction, so only rank 0 needs the catalog and all ranks
need the image files (a shared file system). A killed job resumes like `cliplab index`.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Iterator
from contextlib import ExitStack

import numpy as np
import torch
import torch.distributed as dist

from cliplab.engine import default_model
from cliplab.engine.precision import MODES
from cliplab.indexes.catalog import open_catalog
from cliplab.indexes.decode import Decoded, DecodePool
from cliplab.indexes.indexer import (
    IndexReport,
    ModelBundle,
    commit_batch,
    embed_batch,
    library_bundle,
    pending_files,
    refresh_preprocessing,
)
from cliplab.indexes.scan import scan
from cliplab.indexes.video import VIDEO_TIME_LIMIT, index_videos, split_videos
from cliplab.indexes.writer import writer_lock


def _batches(pool: DecodePool, todo: list[tuple[int, str]], batch_size: int) -> Iterator[list[Decoded]]:
    batch: list[Decoded] = []
    for item in pool.decode(todo):
        batch.append(item)
        if len(batch) == batch_size:
            yield batch
            batch = []
    yield batch


def embed_distributed(bundle: ModelBundle, paths: list[str], catalog_url: str | None = None, batch_size: int = 32,
                      workers: int | None = None) -> IndexReport | None:
    """Run inside an initialised process group; returns the report on rank 0, None elsewhere."""
    rank, world = dist.get_rank(), dist.get_world_size()
    todo_box: list = [None]
    with ExitStack() as hold:
        if rank == 0:
            catalog = open_catalog(catalog_url)
            hold.enter_context(writer_lock(catalog))  # rank 0 is the catalog's one writer for the whole job
        return _embed_ranks(bundle, paths, catalog if rank == 0 else None, batch_size, workers, rank, world, todo_box)


def _embed_ranks(bundle: ModelBundle, paths: list[str], catalog, batch_size: int, workers: int | None, rank: int,
                 world: int, todo_box: list) -> IndexReport | None:
    videos: list[tuple[int, str]] = []  # rank 0 embeds them after the photos (indexes.video)
    if rank == 0:
        if paths:
            scan(catalog, paths)
        model_id = bundle.register(catalog)
        reason = refresh_preprocessing(catalog, bundle, model_id)  # re-embeds a library made otherwise
        if reason is not None:
            print(reason, flush=True)
        photos, videos = split_videos(pending_files(catalog, model_id))
        todo_box = [(photos, library_bundle(catalog, bundle, model_id).mode)]
    dist.broadcast_object_list(todo_box, src=0)
    todo_box[0], mode = todo_box[0]
    bundle = bundle.using(mode)  # every rank embeds in the mode the library records
    shard = todo_box[0][rank::world]
    steps = math.ceil(len(todo_box[0]) / world / batch_size) if todo_box[0] else 0
    report = IndexReport()
    with DecodePool(bundle.preprocess, workers=workers) as pool:  # every rank's handle: the release's own
        batches = _batches(pool, shard, batch_size)
        for _ in range(steps):
            batch = next(batches, [])
            done = [b for b in batch if b.pixels is not None]
            vectors = embed_batch(bundle, done) if done else np.zeros((0, bundle.model.embed_dim), np.float32)
            payload = ([(d.file_id, d.width, d.height, d.captured_at, d.camera) for d in done], vectors,
                       [(b.file_id, b.reason) for b in batch if b.pixels is None])
            gathered = [None] * world if rank == 0 else None
            dist.gather_object(payload, gathered, dst=0)
            if rank == 0:
                all_done = [Decoded(i, None, None, w, h, c, cam) for p in gathered for i, w, h, c, cam in p[0]]
                all_vectors = np.concatenate([p[1] for p in gathered])
                skipped = [Decoded(i, None, reason) for p in gathered for i, reason in p[2]]
                commit_batch(catalog, model_id, all_done, all_vectors, skipped)
                report.embedded += len(all_done)
                report.skipped += len(skipped)
                report.batches += 1
    if rank == 0 and videos:
        done = index_videos(catalog, bundle, model_id, videos, batch_size, VIDEO_TIME_LIMIT)
        report.embedded += done.videos
        report.skipped += len(videos) - done.videos
        report.video_frames, report.video_seconds = done.frames, done.seconds_of_video
    return report if rank == 0 else None


def main(argv: list[str] | None = None, bundle: ModelBundle | None = None) -> int:
    parser = argparse.ArgumentParser(prog="torchrun ... -m cliplab.indexes.distributed", description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="*")
    parser.add_argument("--model", default=default_model(), help="default: $CLIPLAB_MODEL, else demo")
    parser.add_argument("--precision", choices=("auto", *MODES), default=None,
                        help="inference mode of a new library (default auto); a library keeps its recorded one")
    parser.add_argument("--arch", help="the architecture of a checkpoint that does not say it (as `cliplab index`)")
    parser.add_argument("--allow-torchscript", action="store_true", help="load a TorchScript archive that is not "
                                                                          "an official release (it runs code)")
    parser.add_argument("--catalog", default=None, help="SQLAlchemy URL (default: the local catalog)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="decoding processes per rank")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        bundle = bundle or ModelBundle.load(args.model, f"cuda:{local_rank}" if cuda else "cpu", args.precision,
                                            purpose="index", arch=args.arch,
                                            allow_torchscript=args.allow_torchscript)
        report = embed_distributed(bundle, args.paths, args.catalog, args.batch_size, args.workers)
        if report is not None:
            print(f"embedded {report.embedded}, skipped {report.skipped} in {report.batches} steps "
                  f"on {dist.get_world_size()} processes", flush=True)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
