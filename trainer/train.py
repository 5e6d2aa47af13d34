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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cliplab.engine.api import model_preprocess
from cliplab.engine.errors import CliplabError
from cliplab.engine.images import Preprocess
from cliplab.engine.model import CLIP, resize_positional_embedding
from cliplab.engine.precision import DTYPES, fastest_safe_precision
from cliplab.engine.tokenizer import Tokenizer
from cliplab.trainer import checkpoint as ckpt
from cliplab.trainer.data import Batches, build_dataset
from cliplab.trainer.distributed import (
    DistEnv,
    all_reduce_counter,
    broadcast_flag,
    cleanup_distributed,
    init_distributed,
)
from cliplab.trainer.evaluate import RetrievalSet, ZeroShotSet, evaluate
from cliplab.trainer.metrics_log import MetricsLog, plot_log
from cliplab.trainer.optim import build_optimizer, build_scheduler
from cliplab.trainer.presets import PRESETS, build_model, check_resolution
from cliplab.trainer.step import FeatureModel, StepContext, train_step


@dataclass
class TrainOptions:
    data: str = "synthetic"          # "synthetic", a .csv/.tsv, a folder with .txt captions, WebDataset shards
    model: str = "ViT-B/32"          # an architecture name or a custom shape (trainer.presets)
    out: str | None = None           # the run folder (default: CLIPLAB_HOME/runs/<time>)
    init: str | None = None          # fine-tune from a checkpoint engine.load accepts
    resolution: int | None = None    # train at this image size (positional embedding resized, as FixRes)
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
    contrast_group: int = 1          # synthetic data: samples per contrast group (CONTRAST_SHARE of groups)
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


def _synthetic_eval(world, preprocess: Preprocess, n: int) -> tuple[dict[str, ZeroShotSet], RetrievalSet]:
    """The world's tasks on held-out shape-colour combinations (words are never held out), preprocessed
    as the model's own."""
    tasks = {}
    for name, task in world.zero_shot_tasks().items():
        images, labels = world.labelled(task, n, split="heldout", seed=1)
        tasks[name] = ZeroShotSet(task.classnames, task.prompts[0], task.ensemble,
                                  torch.stack([preprocess(i) for i in images]), labels)
    images, captions = world.retrieval_set(n, split="heldout", seed=1)
    return tasks, RetrievalSet(torch.stack([preprocess(i) for i in images]), captions)


def _file_eval(spec: str, preprocess: Preprocess, n: int) -> RetrievalSet:
    dataset = build_dataset(spec, preprocess, train=False, rank=0, world_size=1)
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
        from cliplab.engine.handle import ModelBundle

        loaded = ModelBundle.load(options.init, device="cpu", precision="fp32")  # fp32 weights to train
        model, tokenizer = _at_resolution(loaded.model.float(), options.resolution), loaded.tokenizer
        return tokenizer, model, tokenizer.merges_path if options.vocab or options.merges else None
    merges = Path(options.merges) if options.merges else None
    if options.vocab:
        merges = run_dir / "bpe.txt.gz"
        if env.is_main and not merges.exists():
            from cliplab.trainer.bpe import train_vocabulary

            if world is not None:
                texts = world.caption_corpus(20_000, seed=options.seed)
            else:
                # captions only (no model exists yet): the pixels are thrown away, so any small transform does
                texts = [c for _, c in zip(range(50_000), (c for _, c in build_dataset(
                    options.data, Preprocess(32), train=False, rank=0, world_size=1)))]
            train_vocabulary(texts, options.vocab, merges)
        if env.enabled:
            torch.distributed.barrier()
    tokenizer = Tokenizer(merges)
    model = build_model(options.model, vocab_size=tokenizer.vocab_size, context_length=options.context_length,
                        image_resolution=options.resolution)
    tokenizer.context_length = model.context_length
    return tokenizer, model, merges


def _at_resolution(model: CLIP, resolution: int | None) -> CLIP:
    """Trained weights for another input size: every tensor kept but the image positional embedding,
    resized bicubically (the paper ends ViT-L/14 with an epoch at 336 px, after FixRes)."""
    if not resolution or resolution == model.image_resolution:
        return model
    check_resolution(model.config, resolution)
    resized = CLIP(dataclasses.replace(model.config, image_resolution=resolution))
    resized.load_state_dict(resize_positional_embedding(model.state_dict(), resolution))
    # the release's preprocessing travels on (engine.model_preprocess), its resize size scaled with the crop
    cfg = dict(getattr(model, "preprocess_cfg", None) or {})
    if cfg.get("resize_size"):
        cfg["resize_size"] = round(cfg["resize_size"] * resolution / model.image_resolution)
    resized.preprocess_cfg = cfg
    return resized


def train(options: TrainOptions, on_progress: Callable[[dict], None] | None = None) -> dict:
    """Run training; returns {"run_dir", "step", "loss", "eval", "skipped", "final", "export" or "note"}
    ("skipped": bad samples over all ranks and sessions; "final" and "export" on rank 0; "export" only
    once the run has done all its steps, else a "note" says how to continue)."""
    device = torch.device(options.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    env = init_distributed(str(device))
    if env.enabled and device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
    try:
        return _train(options, device, env, on_progress)
    finally:
        cleanup_distributed()


def _default_run_dir() -> Path:
    from cliplab.engine.paths import data_dir

    return data_dir() / "runs" / time.strftime("%Y%m%d-%H%M%S")


@dataclass
class _Run:
    """Everything a run builds before its first step."""

    options: TrainOptions
    device: torch.device
    env: DistEnv
    run_dir: Path
    world: object | None
    tokenizer: Tokenizer
    model: torch.nn.Module
    merges: Path | None
    dataset: object
    local_batch: int
    total_steps: int
    steps_per_epoch: int | None
    ctx: StepContext


@dataclass
class _Progress:
    """Where a run stands; saved in every checkpoint and restored on resume."""

    step: int = 0
    samples: int = 0
    skipped_before: Counter = dataclasses.field(default_factory=Counter)  # over all ranks, earlier sessions


def _train(options: TrainOptions, device: torch.device, env: DistEnv, on_progress) -> dict:
    run = _prepare(options, device, env)
    progress = _resume(run)
    zero_shot, retrieval = _eval_sets(run)
    batches = _batches(run, progress.step)
    log = MetricsLog(run.run_dir, enabled=env.is_main)
    bar = tqdm(total=run.total_steps, initial=progress.step, disable=not (options.progress and env.is_main),
               desc="training", unit="step", dynamic_ncols=True)
    clock = _Clock(options.max_minutes)
    results: dict = {}
    loss = float("nan")
    while progress.step < run.total_steps:
        images, tokens = next(batches)
        lr = run.ctx.optimizer.param_groups[0]["lr"]
        loss, grad_norm = train_step(run.ctx, images.to(device, non_blocking=True),
                                     tokens.to(device, non_blocking=True))
        if not math.isfinite(loss):
            raise CliplabError(f"The loss became {loss} at step {progress.step + 1}: lower --lr, add "
                               "--grad-clip 1.0, or use fp32.")
        progress.step += 1
        progress.samples += options.batch_size
        clock.count(options.batch_size)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}")
        step = progress.step
        # Rank 0's clock alone decides, so every rank stops at the same step (collectives follow).
        out_of_time = broadcast_flag(env.is_main and clock.expired(), device)
        stopping = step == run.total_steps or out_of_time
        log_now = step % options.log_every == 0 or stopping
        save_now = bool(options.save_every and step % options.save_every == 0) or stopping
        if log_now or save_now:
            skipped = progress.skipped_before + all_reduce_counter(run.dataset.skipped)
        if log_now:
            record = dict(loss=loss, lr=lr, logit_scale=float(run.model.logit_scale.detach()),
                          temperature_scale=float(run.model.logit_scale.detach().exp()),
                          samples_per_s=clock.rate(), samples=progress.samples, skipped=sum(skipped.values()),
                          skipped_by_reason=dict(skipped))
            if grad_norm is not None:
                record["grad_norm"] = grad_norm
            log.write("train", step, **record)
            if on_progress:
                on_progress({"step": step, "total_steps": run.total_steps, **record})
        if env.is_main and (zero_shot or retrieval) and options.eval_every and (
                step % options.eval_every == 0 or stopping):
            results = evaluate(run.model, run.tokenizer, zero_shot, retrieval)
            log.write("eval", step, **results)
            if on_progress:
                on_progress({"step": step, "total_steps": run.total_steps, "eval": results})
        if save_now:
            _save(run, progress, skipped)
        if out_of_time:
            break
    bar.close()
    return _finish(run, progress, loss, results)


class _Clock:
    """The run's time limit and its throughput meter (samples per second since the last reading)."""

    def __init__(self, max_minutes: float | None) -> None:
        self.limit_s = None if max_minutes is None else max_minutes * 60
        self.started = self.window_start = time.monotonic()
        self.window_samples = 0

    def expired(self) -> bool:
        return self.limit_s is not None and time.monotonic() - self.started > self.limit_s

    def count(self, samples: int) -> None:
        self.window_samples += samples

    def rate(self) -> float:
        now = time.monotonic()
        rate = self.window_samples / max(1e-9, now - self.window_start)
        self.window_start, self.window_samples = now, 0
        return rate


def _prepare(options: TrainOptions, device: torch.device, env: DistEnv) -> _Run:
    """The run folder, the data, the model and its optimiser."""
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
        from cliplab.trainer.demo.world import World

        world = World(seed=options.seed, image_size=64)
    tokenizer, model, merges = _tokenizer_and_model(options, run_dir, env, world)
    if world is not None:  # the world is immutable: one that draws at the model's size
        world = dataclasses.replace(world, image_size=model.image_resolution)
    model = model.to(device).train()
    for transformer in (model.transformer, getattr(model.visual, "transformer", None)):
        if transformer is not None:
            transformer.grad_checkpointing = options.grad_checkpointing

    dataset = build_dataset(options.data, model_preprocess(model), train=True, seed=options.seed,
                            rank=env.rank, world_size=env.world_size, world=world, group_size=options.contrast_group,
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
    return _Run(options, device, env, run_dir, world, tokenizer, model, merges, dataset, local_batch,
                total_steps, steps_per_epoch, ctx)


def _resume(run: _Run) -> _Progress:
    """Restore the checkpoint --resume names (model, optimiser, RNG, counts); write options.json."""
    progress = _Progress()
    if run.options.resume:
        ctx = run.ctx
        state = ckpt.load_checkpoint(ckpt.resolve_resume(run.run_dir, run.options.resume), run.model,
                                     ctx.optimizer, ctx.scheduler, ctx.scaler)
        extra = state["extra"]
        # Older checkpoints hold only a total; it is the all-ranks count either way.
        by_reason = extra.get("skipped_by_reason") or ({"unknown": extra["skipped"]} if extra.get("skipped") else {})
        progress = _Progress(state["step"], extra.get("samples", 0), Counter(by_reason))
    if run.env.is_main:
        (run.run_dir / "options.json").write_text(json.dumps(dataclasses.asdict(run.options), indent=2) + "\n")
    return progress


def _eval_sets(run: _Run) -> tuple[dict[str, ZeroShotSet], RetrievalSet | None]:
    """Held-out sets, built once, on rank 0 only (it alone evaluates)."""
    options = run.options
    if not (options.eval_every and run.env.is_main):
        return {}, None
    if run.world is not None:
        return _synthetic_eval(run.world, model_preprocess(run.model), options.eval_samples)
    if options.eval_data:
        return {}, _file_eval(options.eval_data, model_preprocess(run.model), options.eval_samples)
    return {}, None


def _batches(run: _Run, start_step: int):
    """The training batches from where a resumed run stopped (same epoch, same place in it)."""
    start_epoch, skip = divmod(start_step, run.steps_per_epoch) if run.steps_per_epoch else (0, start_step)
    batches = iter(Batches(run.dataset, run.local_batch, tokenizer=run.tokenizer, num_workers=run.options.workers,
                           context_length=run.model.context_length, start_epoch=start_epoch))
    for _ in range(skip):
        next(batches)
    return batches


def _save(run: _Run, progress: _Progress, skipped: Counter) -> None:
    """A checkpoint on rank 0 (with the all-ranks skip count the log shows); all ranks wait for it."""
    if run.env.is_main:
        ctx = run.ctx
        extra = {"samples": progress.samples, "skipped": sum(skipped.values()), "skipped_by_reason": dict(skipped)}
        ckpt.save_checkpoint(run.run_dir, progress.step, run.model, ctx.optimizer, ctx.scheduler, ctx.scaler,
                             extra, merges_path=run.merges)
    if run.env.enabled:
        torch.distributed.barrier()


def trained_name(options: TrainOptions, run_dir: Path) -> str:
    """The trained model's name, saying what it came from and which run made it ("ViT-B-32-tuned-20261207-
    1315", "trained-20261207-1315"), instead of its folder's name ("final")."""
    run_name = Path(run_dir).resolve().name
    if options.init:
        base = Path(str(options.init).rstrip("/")).name if Path(str(options.init)).exists() else str(options.init)
        return f"{base.replace('/', '-')}-tuned-{run_name}"
    return f"trained-{run_name}"


def _finish(run: _Run, progress: _Progress, loss: float, results: dict) -> dict:
    """The final model folder, the fp16 export, the plots (rank 0); the summary (every rank)."""
    summary = {"run_dir": str(run.run_dir), "step": progress.step, "loss": loss, "eval": results,
               "skipped": sum((progress.skipped_before + all_reduce_counter(run.dataset.skipped)).values())}
    if run.env.is_main:
        options = run.options
        meta = {"name": trained_name(options, run.run_dir), "trained_steps": progress.step,
                "training_samples": progress.samples, "data": options.data,
                **({"init": options.init} if options.init else {"model_spec": options.model})}
        summary["final"] = str(ckpt.save_model_folder(run.model, run.run_dir / "final", merges_path=run.merges,
                                                      meta=meta))
        if options.export and progress.step < run.total_steps:
            # A run cut short by --max-minutes must not replace a finished model (the demo preset
            # exports over assets/demo): the export waits for the run to complete.
            summary["note"] = (f"Stopped by the time limit at step {progress.step} of {run.total_steps}; final/ "
                               f"holds the model so far. `cliplab train --out {run.run_dir} --resume latest` "
                               f"(with the same options) continues, and writes {options.export} when it completes.")
        elif options.export:
            summary["export"] = str(ckpt.save_model_folder(
                run.model, Path(options.export), merges_path=run.merges,
                meta={**meta, "name": Path(options.export).name}, dtype=torch.float16))
        plot_log(run.run_dir)
    return summary
