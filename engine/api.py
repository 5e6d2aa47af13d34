"""The public entry point: engine.load(name or path) -> (model, preprocess, tokenizer)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from cliplab.assets import asset_path
from cliplab.engine import download as downloads
from cliplab.engine import text_towers
from cliplab.engine.config import ModelConfig
from cliplab.engine.errors import CliplabError
from cliplab.engine.hf_tokenizer import HFTokenizer
from cliplab.engine.images import Preprocess
from cliplab.engine.model import CLIP, convert_weights
from cliplab.engine.precision import DTYPES, default_device, resolve_precision
from cliplab.engine.tokenizer import Tokenizer
from cliplab.engine.weights import CONFIG_FILE, WEIGHTS_FILE, checkpoint_tokenizer, load_model

DEMO = "demo"


def default_model() -> str:
    """The model every command and front end loads when none is named: $CLIPLAB_MODEL, else the demo."""
    return os.environ.get("CLIPLAB_MODEL") or DEMO


def demo_folder() -> Path:
    return asset_path(DEMO)


def _demo_available() -> bool:
    return (demo_folder() / WEIGHTS_FILE).is_file() and (demo_folder() / CONFIG_FILE).is_file()


def resolve(name_or_path: str | Path) -> tuple[Path, str | None]:
    """The checkpoint path and model name for an official name, "demo", or a path (name None).
    Never touches the network: an official model must have been downloaded."""
    text = str(name_or_path)
    if text == DEMO:
        if not _demo_available():
            raise CliplabError(f"The demo model is not built in this installation ({demo_folder()} holds no "
                               f"{WEIGHTS_FILE}). Download an official model instead: `cliplab download ViT-B/32`.")
        return demo_folder(), DEMO
    path = Path(text).expanduser()
    if path.exists():
        return path, None
    name = _official_name(text)
    if name is None:
        raise CliplabError(f"{text!r} is neither a model name ({', '.join(available_models())}) nor an "
                           "existing checkpoint file or folder.")
    if not downloads.is_downloaded(name):
        raise CliplabError(f"The model {name} is not downloaded yet. Download it once first "
                           f"(the Models tab, or `cliplab download {name}`).")
    return downloads.model_folder(name), name


def _official_name(text: str) -> str | None:
    try:
        return downloads.resolve_name(text)
    except CliplabError:
        return None


def load(name_or_path: str | Path, device: str | torch.device | None = None, precision: str | None = None,
         allow_torchscript: bool = False,
         arch: str | ModelConfig | None = None) -> tuple[CLIP, Preprocess, Tokenizer | HFTokenizer]:
    """A model ready for inference (eval mode) with its image preprocessing and its own tokenizer.

    name_or_path: a release name from `cliplab models` (downloaded beforehand), "demo", or a checkpoint
    path in any supported format (docs/models.md). device: default cuda when available, else cpu.
    precision: the weights' dtype, fp32 / fp16 / bf16 / auto, default fp16 on CUDA and fp32 on CPU
    (engine.precision.resolve_precision). The model handle's loader (engine.handle.ModelBundle.load), which
    every command and front end uses, asks for fp32 weights unless a reproducible result runs in bf16/fp16.
    allow_torchscript: load a TorchScript archive that is not an official release (it runs code).
    arch: the architecture, for a file that does not say its activation and head width: a name
    (`ViT-B-32` is GELU, `ViT-B-32-quickgelu` QuickGELU, `ViT-B/32` OpenAI's), 'gelu' / 'quickgelu'
    (shapes from the file, heads 64 wide; 'gelu,head_width=80'), or a ModelConfig.
    """
    device = torch.device(device or default_device())
    try:
        precision = resolve_precision(device, precision)
    except ValueError as error:
        raise CliplabError(str(error)) from error
    path, name = resolve(name_or_path)
    if text_towers.is_text_tower(path):
        raise CliplabError(f"{name or path} is a text tower without an image tower: load an image model it pairs "
                           "with, then choose this tower as that model's text tower.")
    if text_towers.is_hf_text_clip(path):  # open_clip's CLIP with a Hugging Face text tower
        model, tokenizer = text_towers.load_hf_text_clip(path)
    else:
        model, checkpoint = load_model(path, allow_torchscript=allow_torchscript, arch=arch)
        # Each model brings its vocabulary (the demo's is its own; MetaCLIP 2's a Hugging Face tokenizer's
        # folder); otherwise the official one.
        tokenizer = checkpoint_tokenizer(checkpoint, model.context_length)
    model.name = name or model.name
    if precision != "fp32":
        convert_weights(model, DTYPES[precision])
    return model.to(device).eval(), model_preprocess(model), tokenizer


def load_text_tower(name_or_path: str | Path, device: str | torch.device | None = None) -> text_towers.TextTower:
    """A multilingual text tower (engine.text_towers) by release name (downloaded beforehand) or folder;
    the text tower of an open_clip CLIP with a Hugging Face text tower is one too."""
    path, name = resolve(name_or_path)
    if not path.is_dir():
        raise CliplabError(f"{name_or_path} is not a text tower: give a text tower's name (`cliplab models` lists "
                           "them) or the folder of an M-CLIP release.")
    tower = text_towers.load_text_tower(path)
    tower.name = name or tower.name
    tower.module.to(torch.device(device or default_device())).eval()
    return tower


def model_preprocess(model: CLIP) -> Preprocess:
    """A model's own image preprocessing: its release's (the options load_model read from its files into
    `model.preprocess_cfg`, which a saved checkpoint carries on), else the reference transform at its
    resolution (a model built from scratch). The handle, the trainer and every image path take this."""
    return Preprocess(model.image_resolution, **(getattr(model, "preprocess_cfg", None) or {}))


def available_models() -> dict[str, bool]:
    """Every name load() accepts -> whether it can be loaded now (downloaded / built)."""
    status = {name: downloads.is_downloaded(name) for name in downloads.releases()}
    status[DEMO] = _demo_available()
    return status
