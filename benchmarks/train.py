"""Training throughput (samples/s) of the demo shape and of ViT-B/32, on random data.

    python benchmarks/train.py [--steps 3] [--device cpu] [--batch-size 32] [--markdown]

Times full optimiser steps (forward, contrastive loss, backward, AdamW, clamp) after one warm-up
step, and, apart, how fast the synthetic world draws training samples (render + caption) on one
core: with workers=0 the two add up per step.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from cliplab.trainer.demo.recipe import DEMO_SHAPE
from cliplab.trainer.optim import build_optimizer, build_scheduler
from cliplab.trainer.presets import build_model, parse_shape
from cliplab.trainer.step import FeatureModel, StepContext, train_step


def samples_per_second(spec: str, batch_size: int, steps: int, device: str, vocab_size: int,
                       context_length: int | None, precision: str = "fp32") -> float:
    torch.manual_seed(0)
    model = build_model(spec, vocab_size=vocab_size, context_length=context_length).to(device).train()
    optimizer = build_optimizer(model, lr=1e-4)
    autocast = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    ctx = StepContext(model, FeatureModel(model), optimizer, build_scheduler(optimizer, 1, 100), scaler, autocast)
    r = model.image_resolution
    images = torch.randn(batch_size, 3, r, r, device=device)
    tokens = torch.randint(1, vocab_size - 2, (batch_size, model.context_length), device=device)
    tokens[:, 0], tokens[:, 14], tokens[:, 15:] = vocab_size - 2, vocab_size - 1, 0  # SOT, 13 tokens, EOT
    train_step(ctx, images, tokens)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        train_step(ctx, images, tokens)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return batch_size * steps / (time.perf_counter() - start)


def render_rate(resolution: int = 64, n: int = 300) -> float:
    """Synthetic training samples drawn per second in this process."""
    import numpy as np

    from cliplab.trainer.demo.world import World

    world = World(seed=0, image_size=resolution)
    world.sample(10, "train", np.random.default_rng(1))  # fonts and texture masks cached
    start = time.perf_counter()
    world.sample(n, "train", np.random.default_rng(0))
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    args = parser.parse_args()
    print(f"device {args.device}, precision {args.precision}, torch threads {torch.get_num_threads()}, "
          f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    rows = [("demo shape", DEMO_SHAPE, 200, 32), ("ViT-B/32", "ViT-B/32", 49408, 77)]
    for label, spec, vocab, ctx in rows:
        rate = samples_per_second(spec, args.batch_size, args.steps, args.device, vocab, ctx, args.precision)
        print(f"| {label} | {args.batch_size} | {rate:.1f} |", flush=True)
    resolution = parse_shape(DEMO_SHAPE)[1]["res"]  # the world draws at the demo model's image size
    print(f"synthetic world, {resolution} px: {render_rate(resolution):.0f} samples/s drawn", flush=True)


if __name__ == "__main__":
    main()
