"""fp32 inference through oneDNN's matrix kernels: the reference's arithmetic, at the cores' speed.

PyTorch's CPU wheel runs an fp32 `nn.Linear` through MKL, and MKL takes its AVX2 code path on AMD
processors even where they have AVX-512: on a 2-core AMD EPYC with AVX-512, a 1600x768x3072
product ran at 166 GFLOP/s through MKL and at 375 GFLOP/s through oneDNN, which ships inside the
same wheel and picks its kernels by the instructions the CPU has (docs/benchmarks.md).

`inference_copy(model)` builds a copy of the module tree that runs each linear layer through
oneDNN (`torch.ops.mkldnn._linear_pointwise`), with the MLP's activation fused into its first layer
and the weights reordered once into oneDNN's blocked layout (5% faster end to end than reordering
on every call; it costs one more copy of the linear layers' weights, about 2/3 of a ViT's). Every
other tensor (embeddings, convolutions, LayerNorms, projections) is shared with the model. Outputs
differ from the reference's by summation order only (max abs diff ~3e-6 on ViT-B/32, as ONNX
Runtime fp32). The copy is for inference (no autograd); training always runs the reference modules.
Whether the exact fp32 mode uses it on a machine is measured once there (engine.runtime.fp32_kernels).

QuickGELU, x * sigmoid(1.702 x), is 1.702^-1 * swish(1.702 x). oneDNN's fused swish has no slope
parameter, so the copy's c_fc computes 1.702 x W^T and its c_proj takes W / 1.702 (rounding of the
scaled weights only, within the summation-order differences above).
"""

from __future__ import annotations

import copy
import itertools
import time

import torch
from torch import nn

from cliplab.engine.features import model_fingerprint
from cliplab.engine.model import Attention, QuickGELU, ResidualAttentionBlock

QUICK_GELU_SLOPE = 1.702
PACKING_ROWS = 32 * 50  # the row count oneDNN's weight layout is chosen for: a ViT-B/32 batch of 32 images


def available() -> bool:
    """Whether this PyTorch build has oneDNN's fused linear kernel."""
    return torch.backends.mkldnn.is_available() and all(
        hasattr(torch.ops.mkldnn, op) for op in ("_linear_pointwise", "_reorder_linear_weight"))


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, post_op: str = "none",
           algorithm: str = "") -> torch.Tensor:
    """F.linear through oneDNN, with an optional fused activation ('swish', or 'gelu' with algorithm
    'none' (erf) or 'tanh')."""
    shape = x.shape
    out = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, shape[-1]), weight, bias, post_op, [], algorithm)
    return out.view(*shape[:-1], out.shape[-1])


class OneDnnLinear(nn.Module):
    """A linear layer (and the activation after it, if any) as one oneDNN call, its weight held in
    oneDNN's blocked layout (reordered once here instead of on every call)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, post_op: str = "none",
                 algorithm: str = ""):
        super().__init__()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PACKING_ROWS)
        self.bias = None if bias is None else bias.detach()
        self.post_op, self.algorithm = post_op, algorithm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.packed, self.bias, self.post_op, self.algorithm)


class OneDnnAttention(Attention):
    """Attention with the projections through oneDNN (nn.MultiheadAttention's fused path calls MKL)."""

    fused_fast_path = False
    packed_in: OneDnnLinear  # set by inference_copy

    def project_in(self, x: torch.Tensor) -> torch.Tensor:
        return self.packed_in(x)


def _fuse_mlp(block: ResidualAttentionBlock) -> None:
    fc, act, proj = block.mlp.c_fc, block.mlp.gelu, block.mlp.c_proj
    if isinstance(act, QuickGELU):
        block.mlp.c_fc = OneDnnLinear(fc.weight * QUICK_GELU_SLOPE, fc.bias * QUICK_GELU_SLOPE, "swish")
        block.mlp.c_proj = OneDnnLinear(proj.weight / QUICK_GELU_SLOPE, proj.bias)
    elif isinstance(act, nn.GELU):
        block.mlp.c_fc = OneDnnLinear(fc.weight, fc.bias, "gelu", act.approximate)
    else:
        return  # any other activation runs as its own module after an unfused linear
    block.mlp.gelu = nn.Identity()


@torch.no_grad()
def inference_copy(model: nn.Module) -> nn.Module:
    """A copy of an fp32 model for inference whose linear layers run through oneDNN (module docstring).
    Their weights are held reordered (a copy); every other parameter and buffer is `model`'s own."""
    shared = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    fingerprint = model_fingerprint(model)  # the reference's: caches and the catalog know the weights by it
    fast = copy.deepcopy(model, shared)  # the module tree anew; the memo hands back every tensor itself
    fast.fingerprint, fast.kernels = fingerprint, "onednn"
    for block in fast.modules():
        if isinstance(block, ResidualAttentionBlock):
            _fuse_mlp(block)
    for module in list(fast.modules()):
        if isinstance(module, Attention):
            module.__class__ = OneDnnAttention
            module.packed_in = OneDnnLinear(module.in_proj_weight, module.in_proj_bias)
        for name, child in module.named_children():
            if isinstance(child, nn.Linear):
                setattr(module, name, OneDnnLinear(child.weight, child.bias))
    return fast.eval()


def time_block(width: int = 768, heads: int = 12, tokens: int = 16 * 50, rounds: int = 7) -> dict[str, float]:
    """Fastest seconds of one ViT-B-sized residual block (QuickGELU) on `tokens` tokens through PyTorch's
    reference modules (default BLAS) and through this module's copy (oneDNN, activation fused),
    alternating so that load from other processes hits both. A whole block, not one product: the
    fused activation is part of what oneDNN wins (an AVX2-capped run: one product 1.13x, the model 1.31x)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        block = ResidualAttentionBlock(width, heads).eval()
        x = torch.randn(tokens // 50, 50, width)
    calls = {"blas": block, "onednn": inference_copy(block)}
    best = dict.fromkeys(calls, float("inf"))
    with torch.inference_mode():
        for call in calls.values():
            call(x)  # warm-up: oneDNN builds its kernels on the first call
        for _ in range(rounds):
            for name, call in calls.items():
                start = time.perf_counter()
                call(x)
                best[name] = min(best[name], time.perf_counter() - start)
    return best
