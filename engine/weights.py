"""Reading and writing CLIP weights: every supported checkpoint format to official-key tensors and
the complete architecture (engine.config.ModelConfig) they belong to.

Formats: official TorchScript archives (only with an official hash, or when the caller opts in),
plain state dicts and open_clip training checkpoints (`torch.load(weights_only=True)` only, so an
untrusted pickle cannot run code), open_clip's published folders (`open_clip_config.json` +
`open_clip_model.safetensors` / `open_clip_pytorch_model.bin`), Hugging Face CLIP folders (or a
weights file inside one), and our own format: a folder with `model.safetensors`, `config.json`
(the ModelConfig plus name, fingerprint, preprocessing, description) and an optional BPE merges
file, so that each model brings its own vocabulary.

Where each file keeps what shapes cannot say (activation, head width, eps, EOT id) is in
`_facts`; a file that keeps it nowhere and matches no known release is refused with a sentence
that says how to name the architecture (`arch=` / `--arch`).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cliplab.engine.config import (
    ARCHITECTURES,
    OPENAI_EXTRAS,
    SHAPE_FIELDS,
    Facts,
    ModelConfig,
    hf_facts,
    matching_architectures,
    named_architectures,
    open_clip_config,
    refuse,
    resolve_arch,
    same_shapes,
    shape_config,
)
from cliplab.engine.errors import CliplabError
from cliplab.engine.model import CLIP, explain_misfit, load_state_dict_checked

# SHA-256 of the nine official release files (also the path segment of their download URLs).
OFFICIAL_SHA256: dict[str, str] = {
    "RN50": "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762",
    "RN101": "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599",
    "RN50x4": "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd",
    "RN50x16": "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa",
    "RN50x64": "be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c",
    "ViT-B/32": "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
    "ViT-B/16": "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
    "ViT-L/14": "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
    "ViT-L/14@336px": "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02",
}
TORCHSCRIPT_EXTRAS = OPENAI_EXTRAS
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
MERGES_FILES = ("bpe.txt.gz", "bpe.txt")
TOKENIZER_FOLDER = "tokenizer"  # a Hugging Face tokenizer's files, for a text tower that is not CLIP's BPE (config.text_tokenizer)
PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode", "resize_size")  # Preprocess options
FORMAT_VERSION = 2  # 2: the full ModelConfig and the preprocessing; 1 held the paper's fields only
OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
CLIP_VOCAB = 49408
OPENAI_FACTS = Facts("quick_gelu", source="OpenAI's release")
# Buffers some exporters keep beside the weights: values any model rebuilds, never learned.
_NOT_WEIGHTS = ("attn_mask", "position_ids")
ARCH_HINT = ("name it with --arch NAME in the CLI (e.g. --arch ViT-B-32 for GELU, --arch ViT-B-32-quickgelu for "
             "QuickGELU, or --arch gelu / quickgelu to take every shape from the file with heads 64 wide; or convert "
             "it once: cliplab convert PATH --arch NAME), with arch= in engine.load, or with the Architecture "
             "choice in the Models tab")


@dataclass
class Checkpoint:
    """What a checkpoint holds: official-key tensors, the complete architecture, how images are prepared
    for it, and what our own format records beside them."""

    state_dict: dict[str, torch.Tensor]
    format: str  # cliplab, torchscript, state_dict, open_clip, huggingface
    weights_file: Path
    merges_path: Path | None = None
    meta: dict = field(default_factory=dict)
    config: ModelConfig | None = None
    preprocess: dict = field(default_factory=dict)  # engine.images.Preprocess options (mean, std, resize_mode, ...)
    config_source: str = ""  # where the facts shapes cannot say came from
    tokenizer_path: Path | None = None  # the Hugging Face tokenizer's folder, for config.text_tokenizer


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def short_fingerprint(sha256: str) -> str:
    return sha256[:32]


@dataclass
class _Raw:
    """A file's tensors before the architecture is settled, and what the file says about it."""

    sd: dict[str, torch.Tensor]
    format: str
    weights_file: Path
    facts: Facts | None = None
    config: ModelConfig | None = None  # a complete config the file carries (ours, open_clip's)
    config_file: Path | None = None  # the file that config was read from
    preprocess: dict = field(default_factory=dict)
    merges_path: Path | None = None
    meta: dict = field(default_factory=dict)
    arch_name: str | None = None  # a named architecture the file records (open_clip training runs)
    openai_extras: bool = False  # the three entries only OpenAI's own state dicts have
    tokenizer_path: Path | None = None


def read_checkpoint(path: str | Path, allow_torchscript: bool = False,
                    arch: str | ModelConfig | Facts | None = None) -> Checkpoint:
    """Read any supported checkpoint (file or folder) into official-key tensors and its architecture.
    arch: the caller's architecture (a name, 'gelu' / 'quickgelu', a ModelConfig or Facts); it takes
    precedence over what the file says."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CliplabError(f"No checkpoint at {path}: give a model name (`cliplab models` lists them), 'demo', "
                           "or the path of a checkpoint file or folder.")
    raw = _read_folder(path) if path.is_dir() else _read_file(path, allow_torchscript)
    raw.openai_extras = all(key in raw.sd for key in OPENAI_EXTRAS)
    raw.sd = _official_keys(raw.sd, path)
    config, source = _architecture(raw, path, arch)
    if raw.format != "cliplab" and raw.merges_path is None and config.vocab_size != CLIP_VOCAB \
            and config.text_tokenizer is None:
        raise refuse(f"a CLIP with a vocabulary of {config.vocab_size} tokens and no vocabulary file of its own",
                     f"cliplab tokenizes with CLIP's byte-level BPE of {CLIP_VOCAB} tokens unless the model "
                     "brings its merges, as cliplab's own format does, or names its Hugging Face tokenizer")
    return Checkpoint(raw.sd, raw.format, raw.weights_file, raw.merges_path, raw.meta, config, raw.preprocess, source,
                      raw.tokenizer_path)


def _tokenizer_folder(*candidates: Path) -> Path | None:
    """The first folder that holds a Hugging Face tokenizer (its tokenizer.json)."""
    return next((folder for folder in candidates if (folder / "tokenizer.json").is_file()), None)


def checkpoint_tokenizer(checkpoint: Checkpoint, context_length: int):
    """The tokenizer the checkpoint's text tower was trained with: CLIP's BPE from the model's merges file
    (the official one when it has none), or the Hugging Face tokenizer its config names, read from the
    model's folder and checked against the weights (a tokenizer that does not belong would give ids the
    embedding does not have, or an end token the tower does not pool at)."""
    from cliplab.engine.tokenizer import Tokenizer

    config = checkpoint.config
    if config is None or config.text_tokenizer is None:
        return Tokenizer(checkpoint.merges_path, context_length=context_length)
    from cliplab.engine.hf_tokenizer import HFTokenizer

    if checkpoint.tokenizer_path is None:
        home = checkpoint.weights_file.parent
        raise CliplabError(f"{checkpoint.weights_file} is a CLIP whose text tower reads the tokenizer "
                           f"{config.text_tokenizer}, and its files (tokenizer.json) are not in {home} nor in "
                           f"{home / TOKENIZER_FOLDER}. Download the model by name (`cliplab models` lists it), "
                           f"or put the tokenizer's files in {home / TOKENIZER_FOLDER}.")
    tokenizer = HFTokenizer(checkpoint.tokenizer_path, context_length=context_length)
    where = f"The tokenizer in {checkpoint.tokenizer_path}"
    if tokenizer.vocab_size > config.vocab_size:
        raise CliplabError(f"{where} has {tokenizer.vocab_size} tokens, more than the {config.vocab_size} rows of "
                           f"the text tower's embedding in {checkpoint.weights_file}: they do not belong together. "
                           f"Put the tokenizer files of {config.text_tokenizer} there.")
    eos = config.text_eos_id
    if eos is not None and tokenizer.eot_token != eos:
        raise CliplabError(f"{where} ends a text with token {tokenizer.eot_token}, but the text tower pools at "
                           f"token {eos}: it is not the tokenizer of {config.text_tokenizer}. Put that "
                           "tokenizer's files there.")
    return tokenizer


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CliplabError(f"{path} is not valid JSON ({error}).") from error


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    return _load_safetensors(path) if path.suffix == ".safetensors" else _state_dict_of(_torch_load(path), path)[0]


def _read_folder(folder: Path) -> _Raw:
    config_path = folder / CONFIG_FILE
    if (folder / OPEN_CLIP_CONFIG).is_file() and not config_path.is_file():
        weights = next((folder / n for n in OPEN_CLIP_WEIGHTS if (folder / n).is_file()), None)
        if weights is None:
            raise CliplabError(f"{folder} has {OPEN_CLIP_CONFIG} but neither {' nor '.join(OPEN_CLIP_WEIGHTS)}.")
        return _open_clip_raw(weights, folder / OPEN_CLIP_CONFIG)
    if not config_path.is_file():
        raise CliplabError(f"{folder} is not a model folder: it has no {CONFIG_FILE} and no {OPEN_CLIP_CONFIG}. "
                           f"A cliplab model folder holds {WEIGHTS_FILE} and {CONFIG_FILE}; a Hugging Face CLIP folder "
                           f"holds {CONFIG_FILE} and model.safetensors or pytorch_model.bin; open_clip's published "
                           f"folder holds {OPEN_CLIP_CONFIG} and {OPEN_CLIP_WEIGHTS[0]}.")
    config = _read_json(config_path)
    if "cliplab_format" in config:
        weights = folder / WEIGHTS_FILE
        if not weights.is_file():
            raise CliplabError(f"{folder} has a cliplab {CONFIG_FILE} but no {WEIGHTS_FILE}.")
        merges = next((folder / name for name in MERGES_FILES if (folder / name).is_file()), None)
        try:
            model_config = ModelConfig.from_dict(config)
        except TypeError as error:
            raise CliplabError(f"{config_path} is a cliplab config without the architecture ({error}).") from error
        except CliplabError as error:
            raise CliplabError(f"{config_path}: {error}") from None
        return _Raw(_load_safetensors(weights), "cliplab", weights, config=model_config, config_file=config_path,
                    preprocess=config.get("preprocess") or {}, merges_path=merges, meta=config,
                    tokenizer_path=_tokenizer_folder(folder / TOKENIZER_FOLDER))
    if "text_config" in config or "vision_config" in config or "model_type" in config:
        weights = _hf_weights_file(folder)
        return _hf_raw(weights, config, folder)
    raise CliplabError(f"{config_path} is neither a cliplab model config nor a Hugging Face CLIP config.")


def _read_file(path: Path, allow_torchscript: bool) -> _Raw:
    beside = path.parent
    if path.name in OPEN_CLIP_WEIGHTS and (beside / OPEN_CLIP_CONFIG).is_file():
        return _open_clip_raw(path, beside / OPEN_CLIP_CONFIG)  # the file of a published folder
    if path.suffix == ".safetensors":
        sd, kind, extra = _load_safetensors(path), "state_dict", {}
    elif _is_torchscript(path):
        return _read_torchscript(path, allow_torchscript)
    else:
        sd, kind, extra = _read_pickle(path)
    if _is_hf(sd):
        config_path = beside / CONFIG_FILE
        config = _read_json(config_path) if config_path.is_file() else None
        if config is not None and "cliplab_format" not in config:
            return _hf_raw(path, config, beside, sd)  # a weights file inside a Hugging Face folder
        return _Raw(hf_to_official(sd), "huggingface", path)
    raw = _Raw(sd, kind, path)
    if kind == "open_clip":
        raw.arch_name = _open_clip_run_arch(path, extra)
    return raw


def _open_clip_raw(weights: Path, config_path: Path) -> _Raw:
    config = _read_json(config_path)
    model_cfg = config.get("model_cfg", config)
    if "embed_dim" not in model_cfg:
        raise CliplabError(f"{config_path} has no model_cfg with embed_dim: it is not open_clip's model config.")
    try:
        model_config = open_clip_config(model_cfg)
    except CliplabError as error:
        raise CliplabError(f"{config_path}: {error}") from None
    except (TypeError, ValueError) as error:  # a size that is not a number (mlp_ratio "x", image_size [])
        raise CliplabError(f"{config_path}: its model_cfg holds a value that is not a size ({error}).") from None
    preprocess = {k: v for k, v in (config.get("preprocess_cfg") or {}).items()
                  if k in PREPROCESS_KEYS}
    folder = config_path.parent  # open_clip's local-dir: the tokenizer's files beside its config
    return _Raw(_read_weights(weights), "open_clip", weights, config=model_config, config_file=config_path,
                preprocess=preprocess, meta={"name": folder.name},
                tokenizer_path=_tokenizer_folder(folder, folder / TOKENIZER_FOLDER))


def _hf_raw(weights: Path, config: dict, folder: Path, sd: dict | None = None) -> _Raw:
    facts = hf_facts(config)
    sd = sd if sd is not None else _read_weights(weights)
    return _Raw(hf_to_official(sd), "huggingface", weights, facts=facts, preprocess=_hf_preprocess(folder),
                meta={"name": folder.name}, tokenizer_path=_tokenizer_folder(folder, folder / TOKENIZER_FOLDER))


def _hf_preprocess(folder: Path) -> dict:
    """The preprocessing a Hugging Face preprocessor_config.json states: mean/std, interpolation, and the
    shorter side's size before the center crop where it differs from the crop (size.shortest_edge 256,
    crop_size 224: engine.images.Preprocess's resize_size)."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return {}
    config = _read_json(path)
    out: dict = {}
    if config.get("image_mean") and config.get("image_std"):
        out.update(mean=list(config["image_mean"]), std=list(config["image_std"]))
    if config.get("resample") in (2, 3):  # PIL codes: 2 bilinear, 3 bicubic
        out["interpolation"] = "bilinear" if config["resample"] == 2 else "bicubic"
    shortest, crop = _hf_size(config.get("size"), "shortest_edge"), _hf_size(config.get("crop_size"), "height")
    if config.get("do_center_crop", True) and shortest and crop and shortest > crop:
        out["resize_size"] = shortest
    return out


def _hf_size(value, key: str) -> int | None:
    """A size as preprocessor_config.json writes it: an int, or a dict (shortest_edge, or height/width)."""
    if isinstance(value, int):
        return value
    if isinstance(value, dict) and isinstance(value.get(key), int):
        return value[key]
    return None


def _open_clip_run_arch(path: Path, checkpoint: dict) -> str | None:
    """The model an open_clip training run used: its params.txt (logs/NAME/params.txt beside
    checkpoints/), else the run name open_clip makes by default (...-model_ViT-B-32-lr_...)."""
    params = path.parent.parent / "params.txt"
    if params.is_file():
        values = dict(line.split(": ", 1) for line in params.read_text().splitlines() if ": " in line)
        model = values.get("model", "").strip()
        if model:
            return model + ("-quickgelu" if values.get("force_quick_gelu", "").strip() == "True"
                            and not model.endswith("-quickgelu") else "")
    match = re.search(r"-model_(.+?)-lr_", str(checkpoint.get("name") or ""))
    return match.group(1) if match else None


def _architecture(raw: _Raw, path: Path, arch) -> tuple[ModelConfig, str]:
    """The complete config: the caller's arch, the file's own config, its facts with the shapes,
    a known release, or a refusal that says how to name it."""
    try:
        shapes = shape_config(raw.sd)
    except (KeyError, IndexError) as error:
        raise CliplabError(f"{raw.weights_file} is not a CLIP checkpoint: it lacks {error}, which a CLIP's "
                           "state dict has.") from error
    if arch is not None:
        named, facts = resolve_arch(arch)
        return (named if named is not None else shapes.with_facts(facts)), facts.source
    if raw.config is not None:
        return raw.config, f"its {raw.format} config ({raw.config_file})"
    if raw.facts is not None:
        return shapes.with_facts(raw.facts), raw.facts.source
    if raw.arch_name is not None:
        named = named_architectures().get(raw.arch_name)
        if named is None:
            raise CliplabError(f"{path} was trained by open_clip as {raw.arch_name!r}, an architecture cliplab does "
                               f"not know by name; {ARCH_HINT}.")
        return named, f"its open_clip run ({raw.arch_name})"
    if raw.openai_extras and any(shapes == ARCHITECTURES[n] for n in ARCHITECTURES):
        return shapes.with_facts(OPENAI_FACTS), OPENAI_FACTS.source  # only OpenAI's own state dicts have them
    raise CliplabError(_unknown_architecture(path, shapes))


def _unknown_architecture(path: Path, shapes: ModelConfig) -> str:
    matches = matching_architectures(shapes)
    what = f"{path} holds a CLIP ({shapes.describe().rsplit(', ', 1)[0]})"
    why = "but its file does not say the activation or the attention head width, which shapes cannot tell"
    if matches:
        names = " or ".join(f"--arch {name}" for name in matches)
        return f"{what} {why}: say which architecture it is ({names}); {ARCH_HINT}."
    return f"{what} that matches no known architecture, {why}; {ARCH_HINT}."


def _official_keys(sd: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Refuse the families cliplab does not build, by name; drop buffers that are not weights; map
    open_clip's CustomTextCLIP text tower (text.*) onto CLIP's keys."""
    keys = list(sd)

    def has(*prefixes: str) -> bool:
        return any(k.startswith(prefixes) for k in keys)

    if has("text_decoder.") or has("visual.attn_pool."):
        raise refuse("a CoCa model (a captioning decoder and attentional pooling)", "no text decoder")
    if has("visual.trunk."):
        raise refuse("a CLIP with a timm image tower (SigLIP, EVA, ConvNeXt, ViTamin and MobileCLIP are built this "
                     "way)", "cliplab builds only the ViT and ModifiedResNet towers")
    if has("text.transformer.embeddings.", "text.transformer.encoder.", "text.transformer.layer."):
        raise refuse("a weights file of a CLIP with a Hugging Face text tower such as (XLM-)RoBERTa",
                     "such a CLIP loads from its published folder, which holds open_clip_config.json and the "
                     "tokenizer's files beside the weights; `cliplab download` fetches the supported ones")
    if has("image_encoder.", "text_encoder."):
        raise refuse("a MobileCLIP model", "its towers are not CLIP's")
    if has("visual.blocks.", "visual.patch_embed."):
        raise refuse("an EVA-CLIP model", "its image tower is not CLIP's ViT")
    if has("vision_model.head.", "vision_model.embeddings.patch_embedding.bias"):
        raise refuse("a SigLIP model", "its image tower pools with attention and its loss is sigmoid")
    if has("text.cls_emb"):
        raise refuse("a CLIP whose text tower has a class token (embed_cls)", "cliplab pools at the EOT token")
    if has("text."):  # CustomTextCLIP with open_clip's own text transformer: the same tensors under text.
        sd = {(k[len("text."):] if k.startswith("text.") else k): v for k, v in sd.items()}
        if "text_projection.weight" in sd:
            raise refuse("a CLIP whose text projection has a bias (as SigLIP's)", "cliplab's projection is a matrix")
    return {k: v for k, v in sd.items() if k.rsplit(".", 1)[-1] not in _NOT_WEIGHTS and k not in OPENAI_EXTRAS}


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise CliplabError(f"Cannot read {path} as safetensors ({error}); the file may be truncated.") from error


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist())


def _read_torchscript(path: Path, allow_torchscript: bool) -> _Raw:
    digest = sha256_file(path)
    official = digest in OFFICIAL_SHA256.values()
    if not official and not allow_torchscript:
        raise CliplabError(
            f"{path} is a TorchScript archive that is not one of the official CLIP releases (its SHA-256 is "
            f"{digest[:16]}...). A TorchScript archive contains a program that runs when it is loaded, so "
            "cliplab loads only the official ones. If you trust this file, opt in: --allow-torchscript in the "
            "CLI, the TorchScript box in the Models tab, or allow_torchscript=True in Python; better, save its "
            "state dict with safetensors and load that.")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as error:
        raise CliplabError(f"Cannot load the TorchScript archive {path} ({error}).") from error
    sd = dict(module.state_dict())
    return _Raw(sd, "torchscript", path, facts=OPENAI_FACTS if official else _scripted_facts(module))


def _scripted_facts(module) -> Facts | None:
    """The activation and head counts a scripted or traced CLIP keeps in its module tree."""
    try:
        text_block = getattr(module.transformer.resblocks, "0")
        names = {text_block.mlp.gelu.original_name}
        text_heads = text_block.attn.num_heads
        width = module.ln_final.weight.shape[0]
        visual = module.visual
        if hasattr(visual, "attnpool"):
            vision_heads, vision_width = visual.attnpool.num_heads, visual.attnpool.k_proj.weight.shape[0]
        else:
            vision_block = getattr(visual.transformer.resblocks, "0")
            names.add(vision_block.mlp.gelu.original_name)
            vision_heads, vision_width = vision_block.attn.num_heads, visual.conv1.weight.shape[0]
    except (AttributeError, RuntimeError):
        return None
    activations = {"QuickGELU": "quick_gelu", "GELU": "gelu"}
    if len(names) != 1 or next(iter(names)) not in activations:
        return None
    return Facts(activations[names.pop()], vision_width // vision_heads, width // text_heads,
                 source="the TorchScript archive's modules")


IMAGE_SIGNATURES = {b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"BM": "BMP", b"II*\x00": "TIFF",
                    b"MM\x00*": "TIFF"}


def _refuse_images(path: Path) -> None:
    """A picture given where a checkpoint belongs gets a sentence of its own, not the pickle one."""
    with open(path, "rb") as f:
        head = f.read(16)
    kind = next((name for magic, name in IMAGE_SIGNATURES.items() if head.startswith(magic)), None)
    if kind is None and head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"avif"):
        kind = "HEIC/AVIF"
    if kind is None and head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        kind = "WebP"
    if kind is not None:
        raise CliplabError(f"{path} is a {kind} image, not a model checkpoint: give a checkpoint file (.pt, .bin, "
                           ".safetensors) or a model folder.")


def _torch_load(path: Path):
    _refuse_images(path)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CliplabError(
            f"{path} holds Python objects besides tensors, and cliplab loads pickles only with "
            "weights_only=True because an arbitrary pickle can run code. Save a plain state dict "
            "(torch.save(model.state_dict(), path)) or safetensors instead.") from error
    except Exception as error:  # arbitrary bytes fail the unpickler in arbitrary ways
        raise CliplabError(f"Cannot read {path} as a PyTorch checkpoint ({error}); it may be truncated "
                           "or not a checkpoint.") from error


def _state_dict_of(obj, path: Path) -> tuple[dict[str, torch.Tensor], str, dict]:
    kind, wrapper = "state_dict", {}
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        wrapper, obj, kind = obj, obj["state_dict"], "open_clip"
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CliplabError(f"{path} is not a state dict (a mapping of names to tensors), nor a checkpoint "
                           "with one under 'state_dict'.")
    return {k.removeprefix("module."): v for k, v in obj.items()}, kind, wrapper


def _read_pickle(path: Path) -> tuple[dict[str, torch.Tensor], str, dict]:
    return _state_dict_of(_torch_load(path), path)


# --- Hugging Face CLIP ---------------------------------------------------------------------------

_HF_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}
_HF_RENAMES = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
    "vision_model.embeddings.class_embedding": "visual.class_embedding",
    "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
    "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
    "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",  # sic: HF's name has this typo
    "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
    "vision_model.post_layernorm.weight": "visual.ln_post.weight",
    "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    "logit_scale": "logit_scale",
}
_HF_TRANSPOSED = {"text_projection.weight": "text_projection", "visual_projection.weight": "visual.proj"}
_HF_TOWERS = {"text_model.encoder.layers.": "transformer.resblocks.",
              "vision_model.encoder.layers.": "visual.transformer.resblocks."}


def _is_hf(sd: dict) -> bool:
    return any(k.startswith(("text_model.", "vision_model.")) for k in sd)


def _hf_weights_file(folder: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    raise CliplabError(f"{folder} has a Hugging Face config.json but neither model.safetensors nor "
                       "pytorch_model.bin (sharded checkpoints are not supported: merge them first).")


def hf_to_official(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face CLIPModel names to the official ones: q/k/v joined into in_proj, projections
    transposed. Names it does not know are kept, so the fit check reports them."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        if key.endswith("embeddings.position_ids"):
            continue  # a buffer of 0..n-1, not a weight
        if key in _HF_RENAMES:
            out[_HF_RENAMES[key]] = value
        elif key in _HF_TRANSPOSED:
            out[_HF_TRANSPOSED[key]] = value.t().contiguous()
        elif prefix := next((p for p in _HF_TOWERS if key.startswith(p)), None):
            index, rest = key[len(prefix):].split(".", 1)
            base = f"{_HF_TOWERS[prefix]}{index}."
            module, param = rest.rsplit(".", 1)
            if module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                qkv.setdefault(f"{base}attn.in_proj_{param}", {})[module[-6]] = value
            else:
                out[base + _HF_LAYER.get(module, module) + "." + param] = value
        else:
            out[key] = value
    for key, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise CliplabError(f"The Hugging Face checkpoint lacks some of q/k/v for {key}: has {sorted(parts)}.")
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


# --- Building models and writing our format --------------------------------------------------------

def model_from_checkpoint(checkpoint: Checkpoint) -> CLIP:
    """A CLIP (fp32, eval mode) holding the checkpoint's weights; an error says what a misfit means.
    The modules are made on the meta device (no memory, no random init, no global state touched)
    and the checkpoint's tensors are assigned in place of the empty ones."""
    config = checkpoint.config or shape_config(checkpoint.state_dict)
    _check_fit(checkpoint, config)
    with torch.device("meta"):
        model = CLIP(config)
    own = model.state_dict()
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in checkpoint.state_dict.items()}
    for key in own:
        if key.endswith("num_batches_tracked") and key not in tensors:
            tensors[key] = torch.zeros((), dtype=torch.long)
    try:
        model.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError:
        try:  # a misfit: this says what it means and names every missing or unexpected key and shape mismatch
            load_state_dict_checked(model, checkpoint.state_dict)
        except ValueError as error:
            raise CliplabError(f"{checkpoint.weights_file}: {error} (architecture from "
                               f"{checkpoint.config_source or 'its shapes'}).") from error
        raise
    return model.eval()


def _check_fit(checkpoint: Checkpoint, config: ModelConfig) -> None:
    """Refuse a config whose shapes are not the tensors' before any module is made: modules cost memory
    even on the meta device (a million layers named in a config.json take gigabytes), and the tensors
    already say every shape. The sentence names the fields that differ and the files."""
    found = shape_config(checkpoint.state_dict)
    if same_shapes(found, config):
        return
    fields_differ = [name for name in SHAPE_FIELDS if getattr(found, name) != getattr(config, name)]
    meaning = explain_misfit(config, checkpoint.state_dict)
    said = "; ".join(f"{name} is {_shown(getattr(config, name))} there, {_shown(getattr(found, name))} in the weights"
                     for name in fields_differ)
    raise CliplabError(f"{checkpoint.weights_file} does not fit the architecture from "
                       f"{checkpoint.config_source or 'the architecture given'}: {said}"
                       + (f" ({'; '.join(meaning)})" if meaning else "")
                       + ". Fix that config, or give the architecture that matches the weights.")


def _shown(value) -> str:
    return str(list(value)) if isinstance(value, tuple) else str(value)


def checkpoint_fingerprint(checkpoint: Checkpoint) -> str:
    """The weights file's SHA-256, shortened; read from our config when it still matches the file size."""
    meta = checkpoint.meta
    if meta.get("fingerprint") and meta.get("weights_bytes") == checkpoint.weights_file.stat().st_size:
        return meta["fingerprint"]
    return short_fingerprint(sha256_file(checkpoint.weights_file))


def load_model(path: str | Path, allow_torchscript: bool = False,
               arch: str | ModelConfig | Facts | None = None) -> tuple[CLIP, Checkpoint]:
    """Read a checkpoint and build its model, with .name, .fingerprint and .preprocess_cfg set."""
    checkpoint = read_checkpoint(path, allow_torchscript=allow_torchscript, arch=arch)
    model = model_from_checkpoint(checkpoint)
    path = Path(path)
    model.name = checkpoint.meta.get("name") or (path.name if path.is_dir() else path.stem)
    model.fingerprint = checkpoint_fingerprint(checkpoint)
    model.preprocess_cfg = dict(checkpoint.preprocess)
    # the released file a downloaded model was converted from: what a paired text tower names it by
    model.source_sha256 = checkpoint.meta.get("source_sha256")
    return model, checkpoint


def replace_atomically(path: Path, write) -> Path:
    """write(temp) then rename it over path: readers see the old file or the new one, never a part.
    The temporary name carries the process id, so processes writing the same file do not collide."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temp)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path


def save_state_dict(sd: dict[str, torch.Tensor], config: ModelConfig | dict, folder: str | Path,
                    merges_path: str | Path | None = None, meta: dict | None = None,
                    tokenizer_path: str | Path | None = None) -> Path:
    """Write our format: weights, then the merges file or the Hugging Face tokenizer's folder
    (`tokenizer/`, for a config with text_tokenizer), then config.json last, each atomically.
    The config records the whole architecture and the weights' size and hash, so a mismatched pair is
    noticed on load. meta may add name, description, preprocess (engine.images.Preprocess options)..."""
    config = config if isinstance(config, ModelConfig) else ModelConfig.from_dict(config)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in sd.items()}
    weights = replace_atomically(folder / WEIGHTS_FILE, lambda p: save_file(tensors, str(p)))
    merges_name = None
    if merges_path is not None:
        merges_path = Path(merges_path)
        merges_name = MERGES_FILES[0] if merges_path.name.endswith(".gz") else MERGES_FILES[1]
        if merges_path.resolve() != (folder / merges_name).resolve():
            replace_atomically(folder / merges_name, lambda p: shutil.copyfile(merges_path, p))
        for other in MERGES_FILES:  # a stale vocabulary must not shadow the new one
            if other != merges_name:
                (folder / other).unlink(missing_ok=True)
    if tokenizer_path is not None and Path(tokenizer_path).resolve() != (folder / TOKENIZER_FOLDER).resolve():
        _copy_folder(Path(tokenizer_path), folder / TOKENIZER_FOLDER)
    record = {
        "cliplab_format": FORMAT_VERSION,
        **config.to_dict(),
        "name": folder.name, "description": "",
        **(meta or {}),
        "fingerprint": short_fingerprint(sha256_file(weights)),
        "weights_bytes": weights.stat().st_size,
        "merges": merges_name,
    }
    replace_atomically(folder / CONFIG_FILE, lambda p: p.write_text(json.dumps(record, indent=2) + "\n"))
    return folder


def _copy_folder(source: Path, target: Path) -> None:
    """Copy a folder's files over target, which is replaced whole: never a mix of two tokenizers."""
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(temp, ignore_errors=True)
    try:
        shutil.copytree(source, temp)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(temp, target)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def save_model(model: CLIP, folder: str | Path, merges_path: str | Path | None = None,
               meta: dict | None = None, tokenizer_path: str | Path | None = None) -> Path:
    """Save a model in our format (a folder), keeping each tensor's dtype; meta adds name, description...;
    tokenizer_path: the Hugging Face tokenizer's folder of a model whose config names one."""
    meta = {**({"preprocess": model.preprocess_cfg} if getattr(model, "preprocess_cfg", None) else {}), **(meta or {})}
    return save_state_dict(model.state_dict(), model.config, folder, merges_path, meta, tokenizer_path)
