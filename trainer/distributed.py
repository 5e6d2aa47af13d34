"""Data-parallel training under torchrun: process group set-up and a gather that keeps gradients.

The paper shards the similarity matrix: each rank computes the loss of its own rows against the
columns of every rank. The gather below returns all ranks' features; in the backward pass each
rank receives the sum over ranks of the gradients with respect to its own features.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> DistEnv:
    """Join the process group torchrun describes in the environment (a no-op without torchrun).
    NCCL on CUDA, gloo on CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistEnv()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
        if cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world_size)
    return DistEnv(rank, world_size, local_rank)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.world_size = dist.get_rank(), dist.get_world_size()
        parts = [torch.empty_like(tensor) for _ in range(ctx.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # Every rank's loss depends on every rank's features: sum the gradients, keep our slice.
        # (all_reduce rather than reduce_scatter, which gloo lacks.)
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad.chunk(ctx.world_size)[ctx.rank]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate equal-sized tensors from all ranks along dim 0, differentiably."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over ranks (for logging)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / dist.get_world_size()


def broadcast_flag(value: bool, device: torch.device | str = "cpu") -> bool:
    """Rank 0's value on every rank: decisions that gate collectives (stop now?) must agree."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return bool(value)
    tensor = torch.tensor([1 if value else 0], dtype=torch.int32, device=device)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def all_reduce_counter(counts: Counter) -> Counter:
    """The sum over ranks of per-reason counts (skipped samples): one total with one meaning everywhere."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return Counter(counts)
    parts: list[dict | None] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, dict(counts))
    total: Counter = Counter()
    for part in parts:
        total.update(part or {})
    return total
