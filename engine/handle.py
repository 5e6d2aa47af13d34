"""The one model handle: the fp32 model, its preprocessing and tokenizer, and the inference mode
(engine.precision) its embeddings are computed in, with what provenance records about them."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from cliplab.engine.features import encode_texts, model_fingerprint
from cliplab.engine.precision import EXACT, MODES, check_mode, for_purpose

log = logging.getLogger(__name__)


@dataclass
class ModelBundle:
    """What the library needs from a model. `mode` is a mode name or 'auto' (the fastest safe mode
    for this machine and model, measured once: engine.runtime.choose_mode); the model itself stays
    in fp32, the reference, whatever mode encodes."""
    model: torch.nn.Module
    preprocess: Callable
    tokenizer: Callable
    name: str
    mode: str = EXACT
    reason: str = "the exact mode (fp32 reference)"
    # mode -> encoder, shared by every handle `using` makes of this model: a search in a library's
    # recorded mode reuses the encoder (an ONNX session, a oneDNN copy) instead of building it per query
    _encoders: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        device = next(self.model.parameters()).device
        self.mode = check_mode(self.mode, device)
        if self.model.dtype != torch.float32:  # weights loaded converted: that is the mode they run in
            self.mode = {torch.bfloat16: "bf16", torch.float16: "fp16"}[self.model.dtype]
            self.reason = "the weights were loaded in this precision"

    @property
    def fingerprint(self) -> str:
        return model_fingerprint(self.model)

    @property
    def resolution(self) -> int:
        return self.model.image_resolution

    @property
    def embed_dim(self) -> int:
        return self.model.embed_dim

    @classmethod
    def load(cls, name: str, device: str | None = None, precision: str | None = None,
             purpose: str = "index", **options) -> ModelBundle:
        """engine.load in fp32; the mode is `precision` when given (a mode name, or 'auto'), else the
        policy's for `purpose` ('index': the fastest safe mode; 'reproducible': exact fp32).
        options: engine.load's arch= and allow_torchscript=."""
        from cliplab import engine
        model, preprocess, tokenizer = engine.load(name, device=device, precision="fp32", **options)
        mode = precision if precision not in (None, "default") else for_purpose(purpose)
        return cls(model, preprocess, tokenizer, getattr(model, "name", None) or str(name), mode)

    def resolve(self) -> str:
        """The concrete mode (measuring the choice once per machine and model when 'auto')."""
        if self.mode == "auto":
            from cliplab.engine.runtime import choose_mode
            choice = choose_mode(self.model)
            self.mode, self.reason = choice.mode, choice.reason
        return self.mode

    @property
    def encoder(self):
        mode = self.resolve()
        if mode not in self._encoders:
            from cliplab.engine.runtime import make_encoder
            self._encoders[mode] = make_encoder(self.model, mode)
        encoder = self._encoders[mode]
        if encoder.mode != mode:  # fell back (ONNX Runtime missing)
            self.mode, self.reason = encoder.mode, f"{mode} unavailable: ONNX Runtime is not installed"
        return encoder

    @property
    def inference_model(self) -> torch.nn.Module:
        """The model that results meant to be reproduced are computed with (classifications, audits,
        evaluations): these fp32 weights through the matrix kernels measured fastest on this machine
        (engine.runtime.fp32_kernels), i.e. the reference modules or engine.onednn's copy sharing their
        weights; the weights as loaded where they are not fp32 on a CPU. For inference only: training
        uses `model`."""
        if self.model.dtype != torch.float32 or next(self.model.parameters()).device.type != "cpu":
            return self.model
        if EXACT not in self._encoders:
            from cliplab.engine.runtime import TorchEncoder
            self._encoders[EXACT] = TorchEncoder(self.model, EXACT)
        return self._encoders[EXACT].model

    def using(self, mode: str, reason: str = "") -> ModelBundle:
        """The same model in another mode, e.g. the mode an index was built in: the handle shares the fp32
        weights; a bf16 or ONNX mode's encoder builds its own converted copy when first used."""
        if mode == self.mode:
            return self
        return dataclasses.replace(self, mode=mode, reason=reason or f"{mode} as requested")

    def encode_pixels(self, pixels: torch.Tensor, normalize: bool = True) -> np.ndarray:
        """Embeddings [n, d] float32 of preprocessed images [n, 3, r, r], in this handle's mode."""
        features = self.encoder.encode_image(pixels).float()
        return (F.normalize(features, dim=-1) if normalize else features).cpu().numpy()

    def encode_texts(self, texts: Sequence[str], normalize: bool = True, truncate: bool = True) -> np.ndarray:
        return encode_texts(self.encoder, self.tokenizer, texts, normalize=normalize, truncate=truncate)

    def provenance(self) -> dict:
        """What a saved result records about how its embeddings were computed."""
        from cliplab.engine.runtime import mode_kernels
        mode = MODES[self.resolve()]
        versions = {"torch": torch.__version__}
        if mode.engine == "onnxruntime":
            import onnxruntime
            versions["onnxruntime"] = onnxruntime.__version__
        return {"mode": mode.name, "engine": mode.engine, "precision": mode.precision,
                "kernels": mode_kernels(mode.name, next(self.model.parameters()).device, self.model.dtype),
                "cliplab": _package_version(), "versions": versions,
                "model": self.name, "fingerprint": self.fingerprint}

    def register(self, catalog) -> int:
        return catalog.model(self.name, self.fingerprint, self.model.embed_dim)


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("cliplab")
    except PackageNotFoundError:
        return "unknown"
