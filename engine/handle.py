"""The one model handle and its one loader.

`ModelBundle.load(model, device, precision, purpose)` is how every command, service, worker, benchmark
and front end gets a model: the weights, the release's preprocessing (engine.images.Preprocess: resolution,
resize size, mean, std, resize mode, interpolation), the tokenizer, and the inference mode its embeddings
are computed in, with what provenance records about them. Decode workers, query images, the trainer's
data pipeline and every other image path take the handle's `preprocess`; none builds a default one.

The mode vocabulary (everywhere: the CLI's --precision, the app, the catalog, provenance) is
engine.precision's: fp32 (the exact mode), bf16, fp16, onnx-fp32, onnx-int8, or auto (the fastest safe
mode, measured once per machine and model)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cliplab.engine.errors import CliplabError
from cliplab.engine.features import encode_texts, model_fingerprint
from cliplab.engine.images import Preprocess
from cliplab.engine.precision import EXACT, MODES, PURPOSES, check_mode, fastest_safe_precision, for_purpose

log = logging.getLogger(__name__)


@dataclass
class ModelBundle:
    """The model handle. `mode` is a mode name or 'auto' (the fastest safe mode for this machine and
    model, measured once: engine.runtime.choose_mode); the weights stay in fp32, the reference, whatever
    mode encodes, except in a handle loaded for a reproducible result in bf16 or fp16 (converted once,
    and that is then its mode). `preprocess` is the release's own (engine.model_preprocess)."""
    model: torch.nn.Module
    preprocess: Preprocess
    tokenizer: Callable
    name: str
    mode: str = EXACT
    reason: str = "the exact mode (fp32 reference)"
    # mode -> encoder, shared by every handle `using` makes of this model: a search in a library's
    # recorded mode reuses the encoder (an ONNX session, a oneDNN copy) instead of building it per query
    _encoders: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.mode = check_mode(self.mode, self.device)
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

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @classmethod
    def load(cls, model: str | Path | None = None, device: str | None = None, precision: str | None = None,
             purpose: str = "reproducible", arch: str | None = None, allow_torchscript: bool = False,
             text_model: str | Path | None = None) -> ModelBundle:
        """The one loader. model: what engine.load accepts (default: $CLIPLAB_MODEL, else the demo model);
        device: cpu, cuda or cuda:N (default cuda when available); precision: a mode (fp32, bf16, fp16,
        onnx-fp32, onnx-int8) or auto, default the policy's for `purpose`: 'reproducible' (classifications,
        audits, evaluations: exact fp32; a PyTorch precision only, auto picking fp32/bf16/fp16 for the
        device, and bf16 or fp16 computing with weights converted to it) or 'index' (indexing and search:
        auto, any mode, the fp32 weights kept and encoded through the mode's encoder; a library's recorded
        mode wins, indexes.indexer.library_bundle).
        arch and allow_torchscript: engine.load's.
        text_model: a multilingual text tower (engine.text_towers) that embeds this handle's texts instead of
        the model's own text tower; refused with a sentence unless it was trained for this image model. The
        handle keeps the image model's name, fingerprint and preprocessing, so it searches that model's
        library without re-embedding a photo."""
        from cliplab import engine
        if purpose not in PURPOSES:
            raise ValueError(f"Unknown purpose {purpose!r}: use one of {', '.join(PURPOSES)}.")
        device = check_device(device) or engine.default_device()
        mode = precision or for_purpose(purpose)
        try:
            check_mode(mode, device)
        except ValueError as error:
            raise CliplabError(f"{error}") from None
        if purpose == "reproducible":  # computed with the weights themselves: a PyTorch precision
            if mode == "auto":
                mode = fastest_safe_precision(device)
            if MODES[mode].engine != "torch":
                raise CliplabError(f"Classifications, audits and evaluations compute with the model's weights in "
                                   f"fp32, bf16 or fp16; {mode} is for indexing and search.")
        converted = purpose == "reproducible" and mode in ("bf16", "fp16")
        name = str(model or engine.default_model())
        weights, preprocess, tokenizer = engine.load(name, device=device, precision=mode if converted else EXACT,
                                                     arch=arch, allow_torchscript=allow_torchscript)
        bundle = cls(weights, preprocess, tokenizer, getattr(weights, "name", None) or name, mode)
        return bundle.with_text_model(text_model) if text_model is not None and str(text_model).strip() else bundle

    def with_text_model(self, text_model) -> ModelBundle:
        """This handle with its texts embedded by a paired text tower (a name, a folder, or a loaded
        engine.text_towers.TextTower); the image weights are shared. A sentence when the tower was not
        trained for this image model (engine.text_towers.pair)."""
        from cliplab import engine
        from cliplab.engine.model import convert_weights
        from cliplab.engine.text_towers import TextTower, pair
        tower = text_model if isinstance(text_model, TextTower) else engine.load_text_tower(
            str(text_model).strip(), device=self.device)
        paired = pair(self.model, tower)
        if paired.dtype != torch.float32:  # weights loaded converted: the tower computes in the same precision
            convert_weights(paired, paired.dtype)
        return dataclasses.replace(self, model=paired, tokenizer=tower.tokenizer, _encoders={})

    @property
    def text_model(self) -> str | None:
        """The name of the paired text tower embedding this handle's texts (None: the model's own)."""
        tower = getattr(self.model, "tower", None)
        return tower.name if tower is not None else None

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
                "model": self.name, "fingerprint": self.fingerprint, **self.text_provenance()}

    def text_provenance(self) -> dict:
        """What a result records about a paired text tower (nothing for the model's own)."""
        tower = getattr(self.model, "tower", None)
        return {} if tower is None else {"text_model": tower.name, "text_fingerprint": tower.fingerprint}

    def register(self, catalog) -> int:
        return catalog.model(self.name, self.fingerprint, self.model.embed_dim)


def check_device(device: str | torch.device | None) -> str | None:
    """The device as given (None when not given), or a sentence when this machine does not have it
    (torch would assert)."""
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


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("cliplab")
    except PackageNotFoundError:
        return "unknown"
