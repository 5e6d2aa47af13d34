"""Which numeric precision and inference engine a model runs in, per device and per purpose.

The policy (docs/architecture.md, "One model handle, one precision policy"):
- a result meant to be reproduced (audit, evaluation, a saved or exported classification) runs in
  the exact mode, `fp32` (PyTorch fp32, the reference), and records the mode in its provenance;
- indexing and search may run in the fastest *safe* mode, chosen per machine and model by
  measurement (engine.runtime.choose_mode) and recorded per index, so a query is embedded the same
  way as the library it searches.

Modes (what an encoder handle runs; see MODES for each one's stated tolerance against fp32):
  fp32       PyTorch fp32: the reference and the training engine
  bf16       PyTorch bf16 weights: only where the CPU has native bf16 matmuls (AVX512-BF16 or AMX);
             on an AVX2-only CPU it is emulated and several times slower than fp32
  fp16       PyTorch fp16 weights on CUDA (LayerNorm stays fp32), as the reference does
  onnx-fp32  ONNX Runtime, fp32: the same function through ONNX Runtime's own kernels
  onnx-int8  ONNX Runtime with int8 dynamic quantization of the image tower's linear layers (the
             text tower stays fp32 there: see engine.runtime)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
EXACT = "fp32"
PURPOSES = ("reproducible", "index")


@dataclass(frozen=True)
class Mode:
    name: str
    engine: str          # "torch" or "onnxruntime"
    precision: str       # the arithmetic: fp32, bf16, fp16, int8
    min_cosine: float    # stated tolerance: every embedding's cosine to fp32 is at least this
    devices: tuple[str, ...]


MODES = {
    "fp32": Mode("fp32", "torch", "fp32", 1.0, ("cpu", "cuda")),
    "bf16": Mode("bf16", "torch", "bf16", 0.999, ("cpu", "cuda")),
    "fp16": Mode("fp16", "torch", "fp16", 0.999, ("cuda",)),
    "onnx-fp32": Mode("onnx-fp32", "onnxruntime", "fp32", 0.99999, ("cpu",)),
    "onnx-int8": Mode("onnx-int8", "onnxruntime", "int8", 0.999, ("cpu",)),
}


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as the kernel reports them (empty where /proc/cpuinfo is missing)."""
    try:
        with open("/proc/cpuinfo") as f:
            line = next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        line = ""
    return frozenset(line.partition(":")[2].split())


def cpu_features() -> dict[str, bool]:
    """The features that decide the fast paths, detected at run time (never assumed)."""
    flags = cpu_flags()
    capability = ""
    try:
        capability = torch.backends.cpu.get_cpu_capability()  # "AVX2", "AVX512", ... where /proc is absent
    except (AttributeError, RuntimeError):
        pass
    return {
        "avx2": "avx2" in flags or capability in ("AVX2", "AVX512"),
        "avx512": "avx512f" in flags or capability == "AVX512",
        "avx512_bf16": "avx512_bf16" in flags,
        "avx512_vnni": "avx512_vnni" in flags,
        "avx_vnni": "avx_vnni" in flags,
        "amx": bool({"amx_bf16", "amx_int8", "amx_tile"} & flags),
    }


def cpu_summary() -> str:
    """The detected features as one short line, e.g. 'avx2' or 'avx2 avx512 avx512_bf16 avx512_vnni'."""
    return " ".join(name for name, present in cpu_features().items() if present) or "no SIMD flags detected"


def cpu_has_native_bf16() -> bool:
    features = cpu_features()
    return features["avx512_bf16"] or features["amx"]


def cpu_has_vnni() -> bool:
    """int8 dot products without saturation (VNNI / AMX); without them u8 x s8 products must use 7-bit weights."""
    features = cpu_features()
    return features["avx512_vnni"] or features["avx_vnni"] or features["amx"]


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def fastest_safe_precision(device: str | torch.device) -> str:
    """The quickest PyTorch precision whose embeddings stay within cosine 0.999 of fp32
    (the training engine's choice; inference also weighs ONNX Runtime, see engine.runtime)."""
    kind = torch.device(device).type
    if kind == "cuda":
        return "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def for_purpose(purpose: str) -> str:
    """The mode a purpose runs in: 'reproducible' -> the exact fp32 mode; 'index' -> 'auto' (the
    fastest safe mode, measured per machine and model by engine.runtime.choose_mode)."""
    if purpose == "reproducible":
        return EXACT
    if purpose == "index":
        return "auto"
    raise ValueError(f"Unknown purpose {purpose!r}: use one of {', '.join(PURPOSES)}.")


def check_mode(mode: str, device: str | torch.device) -> str:
    """Validate a mode name for a device; 'auto' passes (resolved later by measurement)."""
    if mode == "auto":
        return mode
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}: use auto or one of {', '.join(MODES)}.")
    kind = torch.device(device).type
    if kind not in MODES[mode].devices:
        raise ValueError(f"The mode {mode} does not run on {kind}: use fp32"
                         f"{' or fp16' if kind == 'cuda' else ', onnx-fp32 or onnx-int8'} there.")
    return mode


def resolve_precision(device: str | torch.device, precision: str | None) -> str:
    """Validate a requested PyTorch precision ('fp32', 'fp16', 'bf16', 'auto' or None = the default)."""
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
