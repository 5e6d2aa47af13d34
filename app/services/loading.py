"""The precision policy's names and what a saved result records about its model (engine.precision;
docs/architecture.md, "One model handle, one precision policy").

Every front end loads its model with the one loader, engine.handle.ModelBundle.load: a result meant to
be reproduced (a classification, an audit, an evaluation, a saved classifier) in the EXACT mode (fp32 on
every device) unless asked otherwise; indexing and search in SEARCH ('auto', the fastest safe mode),
where the library's recorded mode wins. The CLI and the app load the same way, so the same input gives
the same number in both.
"""

from __future__ import annotations

import importlib.metadata

import torch

from cliplab.engine import default_model
from cliplab.engine.handle import ModelBundle, check_device
from cliplab.engine.precision import MODES, for_purpose
from cliplab.engine.runtime import mode_kernels

# front ends reach the one loader (ModelBundle.load) and its vocabulary through here
__all__ = ["EXACT", "MODE_NAMES", "SEARCH", "ModelBundle", "check_device", "default_model", "device_of",
           "engine_tuple", "precision_of", "provenance"]

EXACT = for_purpose("reproducible")  # the fp32 reference, on every device
SEARCH = for_purpose("index")  # "auto": the fastest safe mode, measured once per machine and model
MODE_NAMES = ("auto", *MODES)  # the one mode vocabulary: auto, fp32 (exact), bf16, fp16, onnx-fp32, onnx-int8
PRECISION_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


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
            "device": device_of(bundle), "engine": "cliplab", "cliplab_version": cliplab_version(),
            **bundle.text_provenance()}


def engine_tuple(bundle: ModelBundle) -> tuple:
    """(model, preprocess, tokenizer): the shape engine-level functions (engine.audit) take."""
    return bundle.inference_model, bundle.preprocess, bundle.tokenizer
