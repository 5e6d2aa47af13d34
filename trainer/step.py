"""One optimisation step of contrastive training: micro-batches, feature caching, sharding, AMP.

Gradient accumulation keeps the contrastive batch whole. First the features of every
micro-batch are computed without gradients and cached; then each micro-batch is run again with
gradients and the loss of the WHOLE batch is computed with that micro-batch's fresh features in
place of its cached ones. Each micro-batch thus sees every negative, and the sum of their
gradients is exactly the gradient of the big-batch loss (the loss is a function of all features
and each backward pass gives its slice's share). The logit scale takes its gradient once, in
the last micro-batch.

Under DDP each rank holds rows offset..offset+n of the global batch: features are gathered from
all ranks with gradients and each rank computes only its own rows against all columns.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cliplab.trainer.distributed import all_reduce_mean, gather_with_grad
from cliplab.trainer.loss import clamp_logit_scale, contrastive_loss


class FeatureModel(nn.Module):
    """CLIP's two towers as one forward, so that DistributedDataParallel sees every parameter use."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.clip = clip

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image = F.normalize(self.clip.encode_image(images).float(), dim=-1)
        text = F.normalize(self.clip.encode_text(tokens).float(), dim=-1)
        return image, text


@dataclass
class StepContext:
    model: nn.Module                 # the CLIP being trained
    forward: nn.Module               # FeatureModel(model), or DDP around it
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None = None  # fp16 on CUDA only
    autocast_dtype: torch.dtype | None = None   # bf16 / fp16 autocast, None = full precision
    accum: int = 1
    grad_clip: float | None = None
    rank: int = 0
    world_size: int = 1

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        device = next(self.model.parameters()).device.type
        return torch.autocast(device_type=device, dtype=self.autocast_dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()


def _bounds(n: int, parts: int) -> list[tuple[int, int]]:
    if parts < 1 or parts > n:
        raise ValueError(f"cannot split a local batch of {n} into {parts} micro-batches")
    edges = [round(i * n / parts) for i in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:]))


def compute_gradients(ctx: StepContext, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Accumulate into .grad the gradient of the global-batch loss; returns the loss (global mean)."""
    n = images.shape[0]
    offset = ctx.rank * n  # every rank holds an equal share
    logit_scale = ctx.model.logit_scale
    if ctx.accum == 1:
        with ctx.autocast():
            image, text = ctx.forward(images, tokens)
        loss = contrastive_loss(image, text, gather_with_grad(image), gather_with_grad(text), logit_scale, offset)
        ctx.backward(loss)
        return all_reduce_mean(loss.detach())

    parts = _bounds(n, ctx.accum)
    module = getattr(ctx.forward, "module", ctx.forward)
    with torch.no_grad(), ctx.autocast():
        cached = [module(images[a:b], tokens[a:b]) for a, b in parts]
    cached_image = torch.cat([c[0] for c in cached])
    cached_text = torch.cat([c[1] for c in cached])
    no_sync = getattr(ctx.forward, "no_sync", None)
    for index, (a, b) in enumerate(parts):
        last = index == len(parts) - 1
        # DDP all-reduces gradients only after the last micro-batch.
        with (no_sync() if no_sync is not None and not last else contextlib.nullcontext()):
            with ctx.autocast():
                fresh_image, fresh_text = ctx.forward(images[a:b], tokens[a:b])
            image = torch.cat([cached_image[:a], fresh_image, cached_image[b:]])
            text = torch.cat([cached_text[:a], fresh_text, cached_text[b:]])
            scale = logit_scale if last else logit_scale.detach()
            loss = contrastive_loss(image, text, gather_with_grad(image), gather_with_grad(text), scale, offset)
            ctx.backward(loss)
    return all_reduce_mean(loss.detach())


def optimizer_step(ctx: StepContext) -> float | None:
    """Clip (optionally), step, schedule, clamp the temperature. Returns the gradient norm if clipped."""
    norm = None
    if ctx.grad_clip:
        if ctx.scaler is not None:
            ctx.scaler.unscale_(ctx.optimizer)
        norm = float(torch.nn.utils.clip_grad_norm_(ctx.model.parameters(), ctx.grad_clip))
    if ctx.scaler is not None:
        ctx.scaler.step(ctx.optimizer)
        ctx.scaler.update()
    else:
        ctx.optimizer.step()
    ctx.scheduler.step()
    ctx.optimizer.zero_grad(set_to_none=True)
    clamp_logit_scale(ctx.model)
    return norm


def train_step(ctx: StepContext, images: torch.Tensor, tokens: torch.Tensor) -> tuple[float, float | None]:
    """Gradients of one global batch, then the update. Returns (loss, grad norm or None)."""
    loss = compute_gradients(ctx, images, tokens)
    return float(loss), optimizer_step(ctx)
