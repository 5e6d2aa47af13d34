"""Loading a model for every front end, under one precision policy (engine.precision;
docs/architecture.md, "One model handle, one precision policy").

A result meant to be reproduced — a classification, an audit, an evaluation, a saved classifier —
runs in the EXACT mode: PyTorch fp32 on every device (CPU or CUDA), whatever the machine could do
faster. Indexing and search may run in the fastest safe mode (SEARCH), recorded per index. The CLI
and the app load through here, so the same input gives the same number in both.
"""

from __future__ import annotations

import importlib.metadata
import os

import torch

from cliplab import engine
from cliplab.engine.errors import CliplabError
from cliplab.engine.precision import for_purpose
from cliplab.engine.runtime import mode_kernels
from cliplab.indexes.indexer import ModelBundle

EXACT = for_purpose("reproducible")  # the fp32 reference, on every device
SEARCH = for_purpose("index")  # "auto": the fastest safe mode, measured once per machine and model
CONVERTED = ("bf16", "fp16")  # precisions a recorded result may name: loaded as converted weights
PRECISION_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def default_model() -> str:
    return os.environ.get("CLIPLAB_MODEL", "demo")


def check_device(device: str | None) -> str | None:
    """The device as given, or a sentence when this machine does not have it (torch would assert)."""
    if device is None or not str(device).strip():
        return None
    text = str(device).strip()
    try:
        kind = torch.device(text).type
    except RuntimeError:
        raise CliplabError(f"Unknown device {text!r}: use cpu, cuda or cuda:N.") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise CliplabError(f"--device {text} was asked for, but this machine has no CUDA GPU that PyTorch can use; "
                           "leave --device out or use --device cpu.")
    if kind == "cuda" and torch.device(text).index is not None and torch.device(text).index >= torch.cuda.device_count():
        raise CliplabError(f"--device {text} does not exist: this machine has {torch.cuda.device_count()} GPU(s), "
                           f"cuda:0 to cuda:{torch.cuda.device_count() - 1}.")
    if kind not in ("cpu", "cuda"):
        raise CliplabError(f"cliplab runs on cpu or cuda, not {text!r}.")
    return text


def load_bundle(model: str | None = None, device: str | None = None, precision: str | None = EXACT,
                **options) -> ModelBundle:
    """The one model handle the services take, in the EXACT mode unless a caller asks for SEARCH (or
    a recorded mode, e.g. to re-run a session). options: engine.load's arch= and allow_torchscript=
    (the CLI's --arch, --allow-torchscript)."""
    name, device = model or default_model(), check_device(device)
    if precision in CONVERTED:  # weights converted, so results computed from them are in that precision
        weights, preprocess, tokenizer = engine.load(name, device=device, precision=precision, **options)
        return ModelBundle(weights, preprocess, tokenizer, getattr(weights, "name", None) or name)
    return ModelBundle.load(name, device=device, precision=precision or EXACT, **options)


def precision_of(bundle: ModelBundle) -> str:
    """The precision of the bundle's weights (fp32, fp16 or bf16): what classifications, audits and
    evaluations compute in (they use the weights, never a fast encoder), what a saved result records
    and what a re-run loads again. Indexing and search record their own mode per library."""
    dtype = getattr(bundle.model, "dtype", torch.float32)
    return PRECISION_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def device_of(bundle: ModelBundle) -> str:
    parameter = next(bundle.model.parameters(), None)
    return parameter.device.type if parameter is not None else "cpu"


def cliplab_version() -> str:
    try:
        return importlib.metadata.version("cliplab")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def provenance(bundle: ModelBundle) -> dict:
    """What a saved result records about the model that made it: enough to load it the same way again."""
    return {"name": bundle.name, "fingerprint": bundle.fingerprint, "precision": precision_of(bundle),
            "kernels": mode_kernels(EXACT, device_of(bundle), getattr(bundle.model, "dtype", torch.float32)),
            "device": device_of(bundle), "engine": "cliplab", "cliplab_version": cliplab_version()}


def engine_tuple(bundle: ModelBundle) -> tuple:
    """(model, preprocess, tokenizer): the shape engine-level functions (engine.audit) take."""
    return bundle.inference_model, bundle.preprocess, bundle.tokenizer
