"""AdamW with the paper's weight-decay split and per-family betas/eps; warm-up then cosine decay."""

from __future__ import annotations

import math

import torch
from torch import nn

# Appendix F, table 18: Adam beta2 and eps differ between the ResNet and the ViT models.
FAMILY_BETAS = {"vit": ((0.9, 0.98), 1e-6), "resnet": ((0.9, 0.999), 1e-8)}


def model_family(model: nn.Module) -> str:
    return "vit" if hasattr(model.visual, "proj") else "resnet"


def decays(name: str, param: torch.Tensor) -> bool:
    """Weight decay applies to weight matrices and conv kernels only: never to gains, biases,
    norm parameters, embedding tables/vectors (token, positional, class) or the logit scale."""
    return param.ndim >= 2 and "embedding" not in name


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (decay if decays(name, param) else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.2,
                    family: str | None = None) -> torch.optim.AdamW:
    betas, eps = FAMILY_BETAS[family or model_family(model)]
    return torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr, betas=betas, eps=eps)


def warmup_cosine(warmup_steps: int, total_steps: int, min_ratio: float = 0.0):
    """The multiplier of the base learning rate at a step: linear warm-up, then cosine to min_ratio."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                    min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup_steps, total_steps, min_ratio))
