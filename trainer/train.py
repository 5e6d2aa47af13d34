"""The training loop: data, model, optimiser, evaluation, logging, checkpoints, export.

`train(TrainOptions(...))` runs one run (single process, or one rank under torchrun) and
returns a summary. Everything a run writes lives in its folder: options.json, log.jsonl,
curves.png/.html, checkpoints/step_N/, final/ (our model format), bpe.txt.gz when the
vocabulary was trained here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from engine.errors import CliplabError
from engine.images import Preprocess
from engine.precision import DTYPES, fastest_safe_precision
from engine.tokenizer import Tokenizer
from trainer import checkpoint as ckpt
from trainer.data import Batches, build_dataset
from trainer.distributed import DistEnv, all_reduce_sum, cleanup_distributed, init_distributed
from trainer.evaluate import RetrievalSet, ZeroShotSet, evaluate
from trainer.metrics_log import MetricsLog, plot_log
from trainer.optim import build_optimizer, build_scheduler
from trainer.presets import PRESETS, build_model
from trainer.step import FeatureModel, StepContext, train_step


@dataclass
class TrainOptions:
    data: str = "synthetic"          # "synthetic", a .csv/.tsv, a folder with .txt captions, WebDataset shards
    model: str = "ViT-B/32"          # an architecture name or a custom shape (trainer.presets)
    out: str | None = None           # the run folder (default: CLIPLAB_HOME/runs/<time>)
    init: str | None = None          # fine-tune from a checkpoint engine.load accepts
    resume: str | None = None        # "latest" or a checkpoints/step_N folder
    batch_size: int = 256            # global contrastive batch (all ranks, all micro-batches)
    accum: int = 1                   # micro-batches per step (features cached: the batch stays whole)
    steps: int | None = None
    epochs: float | None = None      # alternative to steps, for finite data sets
    lr: float = 5e-4
    warmup: int = 2000
    wd: float = 0.2
    grad_clip: float | None = None
    precision: str = "auto"          # fp32 | bf16 | fp16 (CUDA, with a grad scaler) | auto
    grad_checkpointing: bool = False
    workers: int = 2
    eval_every: int = 500
    eval_samples: int = 200          # held-out images per zero-shot task and retrieval pairs
    eval_data: str | None = None     # held-out pairs for retrieval when the data is not synthetic
    save_every: int = 1000
    log_every: int = 10
    seed: int = 0
    device: str | None = None
    vocab: int | None = None         # train a BPE vocabulary with this many merges on the captions
    merges: str | None = None        # or use this merges file (default: the official vocabulary)
    context_length: int | None = None
    export: str | None = None        # also write the final model (fp16) to this folder
    max_minutes: float | None = None  # stop (and save) after this long
    progress: bool = True

    @classmethod
    def from_dict(cls, values: dict) -> TrainOptions:
        """Options from a dict; `preset` fills defaults that explicit values override."""
        values = {k: v for k, v in values.items() if v is not None}
        preset = values.pop("preset", None)
        if preset:
            if preset not in PRESETS:
                raise CliplabError(f"Unknown preset {preset!r}; presets: {', '.join(PRESETS)}.")
            values = {**PRESETS[preset], **values}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise CliplabError(f"Unknown training options: {', '.join(unknown)}.")
        return cls(**values)


def _precision(options: TrainOptions, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use a grad scaler)."""
    name = options.precision
    if name == "auto":
        name = fastest_safe_precision(device)
    if name not in DTYPES:
        raise CliplabError(f"Unknown precision {name!r}: use fp32, bf16, fp16 or auto.")
    if name == "fp16" and device.type != "cuda":
        raise CliplabError("fp16 training needs CUDA (it uses a grad scaler); on a CPU use fp32 or bf16.")
    return (None if name == "fp32" else DTYPES[name]), name == "fp16"


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _synthetic_eval(world, resolution: int, n: int) -> tuple[dict[str, ZeroShotSet], RetrievalSet]:
    """The world's tasks on held-out shape-colour combinations (words are never held out)."""
    preprocess = Preprocess(resolution)
    tasks = {}
    for name, task in world.zero_shot_tasks().items():
        images, labels = world.labelled(task, n, split="heldout", seed=1)
        tasks[name] = ZeroShotSet(task.classnames, task.prompts[0], task.ensemble,
                                  torch.stack([preprocess(i) for i in images]), labels)
    images, captions = world.retrieval_set(n, split="heldout", seed=1)
    return tasks, RetrievalSet(torch.stack([preprocess(i) for i in images]), captions)


def _file_eval(spec: str, resolution: int, n: int) -> RetrievalSet:
    dataset = build_dataset(spec, resolution, train=False, rank=0, world_size=1)
    images, captions = [], []
    for image, caption in dataset:
        images.append(image)
        captions.append(caption)
        if len(captions) >= n:
            break
    if not captions:
        raise CliplabError(f"--eval-data {spec}: no usable image-caption pair in it.")
    return RetrievalSet(torch.stack(images), captions)


def _tokenizer_and_model(options: TrainOptions, run_dir: Path, env: DistEnv, world):
    """Fine-tuning: the checkpoint's model and vocabulary. From scratch: a vocabulary (official,
    a given merges file, or trained here on the captions) and a fresh model."""
    if options.init:
        from engine.api import load

        model, _, tokenizer = load(options.init, device="cpu", precision="fp32")
        return tokenizer, model.float(), tokenizer.merges_path if options.vocab or options.merges else None
    merges = Path(options.merges) if options.merges else None
    if options.vocab:
        merges = run_dir / "bpe.txt.gz"
        if env.is_main and not merges.exists():
            from trainer.bpe import train_vocabulary

            if world is not None:
                texts = world.caption_corpus(20_000, seed=options.seed)
            else:
                texts = [c for _, c in zip(range(50_000), (c for _, c in build_dataset(
                    options.data, 32, train=False, rank=0, world_size=1)))]
            train_vocabulary(texts, options.vocab, merges)
        if env.enabled:
            torch.distributed.barrier()
    tokenizer = Tokenizer(merges)
    model = build_model(options.model, vocab_size=tokenizer.vocab_size, context_length=options.context_length)
    tokenizer.context_length = model.context_length
    return tokenizer, model, merges


def train(options: TrainOptions, on_progress: Callable[[dict], None] | None = None) -> dict:
    """Run training; returns {"run_dir", "step", "loss", "eval", "final", "export"}."""
    device = torch.device(options.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    env = init_distributed(str(device))
    if env.enabled and device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
    try:
        return _train(options, device, env, on_progress)
    finally:
        cleanup_distributed()


def _default_run_dir() -> Path:
    from engine.paths import data_dir

    return data_dir() / "runs" / time.strftime("%Y%m%d-%H%M%S")


def _train(options: TrainOptions, device: torch.device, env: DistEnv, on_progress) -> dict:
    run_dir = Path(options.out) if options.out else _default_run_dir()
    if options.resume and not options.out:
        raise CliplabError("--resume needs --out: the folder of the run to continue.")
    run_dir.mkdir(parents=True, exist_ok=True)
    if options.batch_size % (env.world_size * options.accum):
        raise CliplabError(f"--batch-size {options.batch_size} must be divisible by the number of processes "
                           f"({env.world_size}) times --accum ({options.accum}).")
    local_batch = options.batch_size // env.world_size
    _seed_everything(options.seed)

    world = None
    if options.data == "synthetic":
        from trainer.synthetic import World

        world = World(seed=options.seed, image_size=64)
    tokenizer, model, merges = _tokenizer_and_model(options, run_dir, env, world)
    if world is not None:
        world.image_size = model.image_resolution
    model = model.to(device).train()
    for transformer in (model.transformer, getattr(model.visual, "transformer", None)):
        if transformer is not None:
            transformer.grad_checkpointing = options.grad_checkpointing

    dataset = build_dataset(options.data, model.image_resolution, train=True, seed=options.seed,
                            rank=env.rank, world_size=env.world_size, world=world,
                            epoch_size=max(local_batch * env.world_size * 50, 10_000) // options.batch_size
                            * options.batch_size)
    if options.steps:
        total_steps = options.steps
    elif options.epochs and options.data != "synthetic":
        total_steps = max(1, math.floor(options.epochs * len(dataset) / options.batch_size))
    else:
        raise CliplabError("Give --steps (or --epochs for a finite data set).")
    steps_per_epoch = max(1, (len(dataset) // env.world_size) // local_batch) if hasattr(dataset, "__len__") else None

    autocast_dtype, use_scaler = _precision(options, device)
    optimizer = build_optimizer(model, lr=options.lr, weight_decay=options.wd)
    scheduler = build_scheduler(optimizer, min(options.warmup, max(1, total_steps // 5)), total_steps)
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    forward = FeatureModel(model)
    if env.enabled:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(forward, device_ids=[device.index] if device.type == "cuda" else None)
    ctx = StepContext(model, forward, optimizer, scheduler, scaler, autocast_dtype, options.accum,
                      options.grad_clip, env.rank, env.world_size)

    start_step, seen, skipped_before = 0, 0, 0
    if options.resume:
        state = ckpt.load_checkpoint(ckpt.resolve_resume(run_dir, options.resume), model, optimizer, scheduler, scaler)
        start_step = state["step"]
        seen = state["extra"].get("samples", 0)
        skipped_before = state["extra"].get("skipped", 0)
    if env.is_main:
        (run_dir / "options.json").write_text(json.dumps(dataclasses.asdict(options), indent=2) + "\n")

    zero_shot, retrieval = {}, None
    if options.eval_every and env.is_main:
        if world is not None:
            zero_shot, retrieval = _synthetic_eval(world, model.image_resolution, options.eval_samples)
        elif options.eval_data:
            retrieval = _file_eval(options.eval_data, model.image_resolution, options.eval_samples)

    start_epoch, skip = (divmod(start_step, steps_per_epoch) if steps_per_epoch else (0, start_step))
    batches = iter(Batches(dataset, local_batch, tokenizer=tokenizer, num_workers=options.workers,
                           context_length=model.context_length, start_epoch=start_epoch))
    for _ in range(skip):  # continue the data stream where the interrupted run was
        next(batches)

    log = MetricsLog(run_dir, enabled=env.is_main)
    bar = tqdm(total=total_steps, initial=start_step, disable=not (options.progress and env.is_main),
               desc="training", unit="step", dynamic_ncols=True)
    started = time.time()
    window_start, window_samples = time.time(), 0
    results: dict = {}
    loss = float("nan")
    step = start_step
    while step < total_steps:
        images, tokens = next(batches)
        images, tokens = images.to(device, non_blocking=True), tokens.to(device, non_blocking=True)
        lr = optimizer.param_groups[0]["lr"]
        loss, grad_norm = train_step(ctx, images, tokens)
        if not math.isfinite(loss):
            raise CliplabError(f"The loss became {loss} at step {step + 1}: lower --lr, add --grad-clip 1.0, "
                               "or use fp32.")
        step += 1
        seen += options.batch_size
        window_samples += options.batch_size
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}")
        last = step == total_steps
        out_of_time = options.max_minutes is not None and time.time() - started > options.max_minutes * 60
        if step % options.log_every == 0 or last or out_of_time:
            skipped = skipped_before + int(all_reduce_sum(sum(dataset.skipped.values()), device))
            record = dict(loss=loss, lr=lr, logit_scale=float(model.logit_scale.detach()),
                          temperature_scale=float(model.logit_scale.detach().exp()),
                          samples_per_s=window_samples / max(1e-9, time.time() - window_start),
                          samples=seen, skipped=skipped, skipped_by_reason=dict(dataset.skipped))
            if grad_norm is not None:
                record["grad_norm"] = grad_norm
            log.write("train", step, **record)
            window_start, window_samples = time.time(), 0
            if on_progress:
                on_progress({"step": step, "total_steps": total_steps, **record})
        if options.eval_every and env.is_main and (step % options.eval_every == 0 or last or out_of_time) \
                and (zero_shot or retrieval):
            results = evaluate(model, tokenizer, zero_shot, retrieval)
            log.write("eval", step, **results)
            if on_progress:
                on_progress({"step": step, "total_steps": total_steps, "eval": results})
        if (options.save_every and step % options.save_every == 0) or last or out_of_time:
            if env.is_main:
                ckpt.save_checkpoint(run_dir, step, model, optimizer, scheduler, scaler,
                                     {"samples": seen, "skipped": skipped_before + sum(dataset.skipped.values())},
                                     merges_path=merges)
            if env.enabled:
                torch.distributed.barrier()
        if out_of_time:
            break
    bar.close()

    summary = {"run_dir": str(run_dir), "step": step, "loss": loss, "eval": results}
    if env.is_main:
        meta = {"trained_steps": step, "training_samples": seen, "data": options.data, "model_spec": options.model}
        summary["final"] = str(ckpt.save_model_folder(model, run_dir / "final", merges_path=merges, meta=meta))
        if options.export:
            summary["export"] = str(ckpt.save_model_folder(model, Path(options.export), merges_path=merges,
                                                           meta={**meta, "name": Path(options.export).name},
                                                           dtype=torch.float16))
        plot_log(run_dir)
    return summary
