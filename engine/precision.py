"""Which numeric precision to run a model in, per device.

fp32 is the default on CPU; fp16 on CUDA as the reference does (LayerNorm stays fp32);
bf16 weights only where the CPU has native bf16 matmuls (AVX512-BF16 or AMX): on an
AVX2-only CPU bf16 is emulated and several times slower than fp32.
"""

from __future__ import annotations

import functools

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@functools.cache
def cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        flags = []
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def fastest_safe_precision(device: str | torch.device) -> str:
    """The quickest precision whose embeddings stay within cosine 0.999 of fp32."""
    kind = torch.device(device).type
    if kind == "cuda":
        return "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def resolve_precision(device: str | torch.device, precision: str | None) -> str:
    """Validate a requested precision ('fp32', 'fp16', 'bf16', 'auto' or None = the default)."""
    kind = torch.device(device).type
    if precision in (None, "default"):
        return "fp16" if kind == "cuda" else "fp32"
    if precision == "auto":
        return fastest_safe_precision(device)
    if precision not in DTYPES:
        raise ValueError(f"Unknown precision {precision!r}: use fp32, fp16, bf16 or auto.")
    if precision == "fp16" and kind == "cpu":
        raise ValueError("fp16 weights are for CUDA; on a CPU use fp32 (or bf16 where the CPU supports it).")
    return precision
