"""Two gloo processes (DDP, gathered features, sharded loss) equal one process on the same global batch.

Tolerance: |loss difference| <= 1e-5 and max |weight difference| <= 1e-5 after two AdamW steps,
in fp32; the steps themselves move the weights by ~1e-3 (checked), so the bound is meaningful.
The gap comes only from summation order (all-reduce, split matrix products).
"""

from __future__ import annotations

import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from cliplab.engine.model import CLIP
from cliplab.trainer.optim import build_optimizer, build_scheduler
from cliplab.trainer.step import FeatureModel, StepContext, train_step

GLOBAL_BATCH, STEPS = 8, 2


def _model() -> CLIP:
    torch.manual_seed(0)
    return CLIP(embed_dim=16, image_resolution=16, vision_layers=2, vision_width=64, vision_patch_size=8,
                context_length=8, vocab_size=50, transformer_width=64, transformer_layers=2)


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    out = []
    for _ in range(STEPS):
        images = torch.randn(GLOBAL_BATCH, 3, 16, 16, generator=generator)
        tokens = torch.randint(1, 40, (GLOBAL_BATCH, 8), generator=generator)
        tokens[:, 0], tokens[:, 5], tokens[:, 6:] = 48, 49, 0  # SOT ... EOT (the highest id), padding
        out.append((images, tokens))
    return out


def _run(rank: int, world_size: int, accum: int, wrap) -> tuple[list[float], dict[str, torch.Tensor]]:
    model = _model().train()
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.2)
    scheduler = build_scheduler(optimizer, warmup_steps=1, total_steps=10)
    ctx = StepContext(model, wrap(FeatureModel(model)), optimizer, scheduler, accum=accum, grad_clip=1.0,
                      rank=rank, world_size=world_size)
    share = GLOBAL_BATCH // world_size
    losses = []
    for images, tokens in _batches():
        rows = slice(rank * share, (rank + 1) * share)
        losses.append(train_step(ctx, images[rows], tokens[rows])[0])
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        results = {accum: _run(rank, world_size, accum, DistributedDataParallel) for accum in (1, 2)}
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_equal_one_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    reference_losses, reference = _run(0, 1, 1, lambda m: m)
    initial = _model().state_dict()
    assert max((reference[k] - initial[k]).abs().max().item() for k in reference) > 1e-4  # the steps did move it
    for rank in (0, 1):
        results = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for accum, (losses, weights) in results.items():
            assert len(losses) == STEPS
            for got, want in zip(losses, reference_losses):
                assert abs(got - want) <= 1e-5, (rank, accum, losses, reference_losses)
            worst = max((weights[k] - reference[k]).abs().max().item() for k in reference)
            assert worst <= 1e-5, (rank, accum, worst)


def _train_worker(rank: int, world_size: int, port: int, out_dir: str, options: dict) -> None:
    """One torchrun-like rank of a real training run; rank 1's own clock says time ran out at once."""
    import os

    from cliplab.trainer import train as train_module

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    if rank == 1:  # the ranks' clocks disagree: had rank 1 trusted its own, it would stop at step 1
        train_module._Clock.expired = lambda self: True
    summary = train_module.train(train_module.TrainOptions(**options))
    torch.save({"step": summary["step"], "skipped": summary["skipped"]}, Path(out_dir) / f"summary{rank}.pt")


def test_time_limit_stops_every_rank_at_the_same_step(tmp_path):
    import json

    from cliplab.trainer.bpe import train_vocabulary
    from cliplab.trainer.checkpoint import STATE_FILE, list_checkpoints
    from cliplab.trainer.demo.world import World, write_dataset

    world = World(seed=3, image_size=32)
    csv_path = write_dataset(world, tmp_path / "data", 40, fmt="csv")
    for name in ("000001.jpg", "000002.jpg", "000007.jpg"):  # bad images, shared unevenly by the 2 ranks
        (tmp_path / "data" / "images" / name).write_bytes(b"not a jpeg")
    merges = train_vocabulary(world.caption_corpus(200), 200, tmp_path / "bpe.txt.gz")
    run = tmp_path / "run"
    options = dict(data=str(csv_path), model="vit:width=64,layers=1,patch=8,res=32,text_width=64,text_layers=1,"
                   "embed=32,ctx=24", merges=str(merges), batch_size=8, steps=100_000, lr=1e-3, warmup=2,
                   eval_every=0, save_every=0, log_every=5, workers=0, out=str(run), progress=False,
                   max_minutes=0.1)  # ends mid-run: 100,000 steps take far longer than 6 s
    context = mp.spawn(_train_worker, args=(2, _free_port(), str(tmp_path), options), nprocs=2, join=False)
    try:
        finished = False
        for _ in range(180):  # a hang (ranks waiting in different collectives) fails, never blocks the suite
            if context.join(timeout=1):
                finished = True
                break
        assert finished, "the two ranks did not finish: they disagreed about the time limit"
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()
    summaries = [torch.load(tmp_path / f"summary{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert summaries[0]["step"] == summaries[1]["step"]
    assert 1 < summaries[0]["step"] < 100_000
    # One skipped-sample count: the all-ranks total, the same in the summaries, the log and the checkpoint.
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    last = [r for r in records if r["kind"] == "train"][-1]
    assert last["step"] == summaries[0]["step"]
    checkpoint = list_checkpoints(run)[-1]
    state = torch.load(checkpoint / STATE_FILE, weights_only=False)
    assert state["step"] == last["step"]
    assert state["extra"]["skipped"] == last["skipped"] == summaries[0]["skipped"] == summaries[1]["skipped"]
    assert state["extra"]["skipped_by_reason"] == last["skipped_by_reason"]
    # The first epoch (40 rows, read whole by now) passed all 3 bad images, whichever rank held them.
    assert last["skipped"] >= 3 and last["skipped"] == sum(last["skipped_by_reason"].values())
    assert (run / "final" / "model.safetensors").exists()
