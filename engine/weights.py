"""Reading and writing CLIP weights: every supported checkpoint format to one official-key state dict.

Formats: official TorchScript archives (only with an official hash, or when the caller opts in),
plain official state dicts and open_clip checkpoints (`torch.load(weights_only=True)` only, so an
untrusted pickle cannot run code), Hugging Face CLIP folders, and our own format: a folder with
`model.safetensors`, `config.json` (CLIP.config plus name, fingerprint, description) and an
optional BPE merges file, so that each model brings its own vocabulary.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from engine.errors import CliplabError
from engine.model import CLIP, load_state_dict_checked

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
TORCHSCRIPT_EXTRAS = ("input_resolution", "context_length", "vocab_size")
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
MERGES_FILES = ("bpe.txt.gz", "bpe.txt")
FORMAT_VERSION = 1
# Constructor arguments of CLIP, as stored in CLIP.config.
_CONFIG_KEYS = ("embed_dim", "image_resolution", "vision_layers", "vision_width", "vision_patch_size",
                "context_length", "vocab_size", "transformer_width", "transformer_heads", "transformer_layers")


@dataclass
class Checkpoint:
    """What a checkpoint holds: official-key tensors, plus what our own format records beside them."""

    state_dict: dict[str, torch.Tensor]
    format: str  # cliplab, torchscript, state_dict, open_clip, huggingface
    weights_file: Path
    merges_path: Path | None = None
    meta: dict = field(default_factory=dict)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def short_fingerprint(sha256: str) -> str:
    return sha256[:32]


def read_checkpoint(path: str | Path, allow_torchscript: bool = False) -> Checkpoint:
    """Read any supported checkpoint (file or folder) into official-key tensors."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CliplabError(f"No checkpoint at {path}: give one of the official model names, 'demo', "
                           "or the path of a checkpoint file or folder.")
    if path.is_dir():
        return _read_folder(path)
    if path.suffix == ".safetensors":
        sd = _load_safetensors(path)
        if _is_hf(sd):
            return Checkpoint(hf_to_official(sd), "huggingface", path)
        return Checkpoint(sd, "state_dict", path)
    if _is_torchscript(path):
        return Checkpoint(_read_torchscript(path, allow_torchscript), "torchscript", path)
    return _read_pickle(path)


def _read_folder(folder: Path) -> Checkpoint:
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise CliplabError(f"{folder} is not a model folder: it has no {CONFIG_FILE}. A cliplab model folder "
                           f"holds {WEIGHTS_FILE} and {CONFIG_FILE}; a Hugging Face CLIP folder holds {CONFIG_FILE} "
                           "and model.safetensors or pytorch_model.bin.")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CliplabError(f"{config_path} is not valid JSON ({error}).") from error
    if "cliplab_format" in config:
        weights = folder / WEIGHTS_FILE
        if not weights.is_file():
            raise CliplabError(f"{folder} has a cliplab {CONFIG_FILE} but no {WEIGHTS_FILE}.")
        merges = next((folder / name for name in MERGES_FILES if (folder / name).is_file()), None)
        return Checkpoint(_load_safetensors(weights), "cliplab", weights, merges, config)
    if "text_config" in config or "vision_config" in config:
        check_hf_config(config)
        weights = _hf_weights_file(folder)
        sd = _load_safetensors(weights) if weights.suffix == ".safetensors" else _torch_load(weights)
        return Checkpoint(hf_to_official(sd), "huggingface", weights, meta={"name": folder.name})
    raise CliplabError(f"{config_path} is neither a cliplab model config nor a Hugging Face CLIP config.")


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


def _read_torchscript(path: Path, allow_torchscript: bool) -> dict[str, torch.Tensor]:
    if not allow_torchscript:
        digest = sha256_file(path)
        if digest not in OFFICIAL_SHA256.values():
            raise CliplabError(
                f"{path} is a TorchScript archive that is not one of the official CLIP releases (its SHA-256 is "
                f"{digest[:16]}...). A TorchScript archive contains a program that runs when it is loaded, so "
                "cliplab loads only the official ones. If you trust this file, pass allow_torchscript=True; "
                "better, save its state dict with torch.save or safetensors and load that.")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as error:
        raise CliplabError(f"Cannot load the TorchScript archive {path} ({error}).") from error
    return {k: v for k, v in module.state_dict().items() if k not in TORCHSCRIPT_EXTRAS}


def _torch_load(path: Path):
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


def _read_pickle(path: Path) -> Checkpoint:
    obj = _torch_load(path)
    kind = "state_dict"
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj, kind = obj["state_dict"], "open_clip"
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CliplabError(f"{path} is not a state dict (a mapping of names to tensors), nor a checkpoint "
                           "with one under 'state_dict'.")
    sd = {k.removeprefix("module."): v for k, v in obj.items()}
    if _is_hf(sd):
        return Checkpoint(hf_to_official(sd), "huggingface", path)
    return Checkpoint({k: v for k, v in sd.items() if k not in TORCHSCRIPT_EXTRAS}, kind, path)


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


def check_hf_config(config: dict) -> None:
    """Refuse Hugging Face configs our CLIP cannot reproduce, rather than loading them wrongly."""
    for tower in ("text_config", "vision_config"):
        sub = config.get(tower) or {}
        act = sub.get("hidden_act", "quick_gelu")
        if act != "quick_gelu":
            raise CliplabError(f"This Hugging Face CLIP uses the activation {act!r} in its {tower}; cliplab's CLIP "
                               "uses QuickGELU as the official models do, so it would compute something else.")
        width, heads = sub.get("hidden_size"), sub.get("num_attention_heads")
        if width and heads and heads != max(1, width // 64):
            raise CliplabError(f"This Hugging Face CLIP has {heads} attention heads for width {width} in its "
                               f"{tower}; cliplab's CLIP uses width / 64 heads ({max(1, width // 64)}), as the "
                               "official models do.")
        eps = sub.get("layer_norm_eps", 1e-5)
        if abs(eps - 1e-5) > 1e-12:
            raise CliplabError(f"This Hugging Face CLIP uses LayerNorm eps {eps} in its {tower}; cliplab uses 1e-5.")


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

@contextlib.contextmanager
def _skip_init() -> Iterator[None]:
    """Build modules without random initialisation (as transformers does when loading): every
    value is overwritten by the checkpoint, and initialising ViT-B/32 alone takes ~2 s here."""
    names = ("normal_", "uniform_", "kaiming_uniform_", "xavier_uniform_", "zeros_", "ones_", "trunc_normal_")
    saved = {name: getattr(torch.nn.init, name) for name in names}
    for name in names:
        setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.nn.init, name, fn)


def model_from_checkpoint(checkpoint: Checkpoint) -> CLIP:
    """A CLIP (fp32, eval mode) holding the checkpoint's weights; an error names every misfit."""
    sd = checkpoint.state_dict
    try:
        if checkpoint.format == "cliplab":
            config = {k: checkpoint.meta[k] for k in _CONFIG_KEYS}
        else:
            config = CLIP.config_from_state_dict(sd)
    except KeyError as error:
        raise CliplabError(f"{checkpoint.weights_file} is not a CLIP checkpoint: it lacks {error}, which "
                           "a CLIP's state dict or config has.") from error
    with _skip_init():
        model = CLIP(**config)
    own = model.state_dict()
    # Assign the loaded tensors instead of copying them into fresh memory: 1.5 s less for ViT-B/32.
    tensors = {k: v for k, v in own.items() if k.endswith("num_batches_tracked")}
    tensors.update({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    try:
        model.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError:
        try:  # a misfit: this names every missing or unexpected key and every shape mismatch
            load_state_dict_checked(model, sd)
        except ValueError as error:
            raise CliplabError(f"{checkpoint.weights_file}: {error}") from error
    return model.eval()


def checkpoint_fingerprint(checkpoint: Checkpoint) -> str:
    """The weights file's SHA-256, shortened; read from our config when it still matches the file size."""
    meta = checkpoint.meta
    if meta.get("fingerprint") and meta.get("weights_bytes") == checkpoint.weights_file.stat().st_size:
        return meta["fingerprint"]
    return short_fingerprint(sha256_file(checkpoint.weights_file))


def load_model(path: str | Path, allow_torchscript: bool = False) -> tuple[CLIP, Checkpoint]:
    """Read a checkpoint and build its model, with .name and .fingerprint set."""
    checkpoint = read_checkpoint(path, allow_torchscript=allow_torchscript)
    model = model_from_checkpoint(checkpoint)
    path = Path(path)
    model.name = checkpoint.meta.get("name") or (path.name if path.is_dir() else path.stem)
    model.fingerprint = checkpoint_fingerprint(checkpoint)
    return model, checkpoint


def _replace_atomically(folder: Path, name: str, write) -> Path:
    target = folder / name
    temp = folder / f".{name}.tmp"
    try:
        write(temp)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    return target


def save_state_dict(sd: dict[str, torch.Tensor], config: dict, folder: str | Path,
                    merges_path: str | Path | None = None, meta: dict | None = None) -> Path:
    """Write our format: weights, then the merges file, then config.json last, each atomically.
    The config records the weights' size and hash, so a mismatched pair is noticed on load."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in sd.items()}
    weights = _replace_atomically(folder, WEIGHTS_FILE, lambda p: save_file(tensors, str(p)))
    merges_name = None
    if merges_path is not None:
        merges_path = Path(merges_path)
        merges_name = MERGES_FILES[0] if merges_path.name.endswith(".gz") else MERGES_FILES[1]
        if merges_path.resolve() != (folder / merges_name).resolve():
            _replace_atomically(folder, merges_name, lambda p: shutil.copyfile(merges_path, p))
        for other in MERGES_FILES:  # a stale vocabulary must not shadow the new one
            if other != merges_name:
                (folder / other).unlink(missing_ok=True)
    record = {
        "cliplab_format": FORMAT_VERSION,
        **{k: config[k] for k in _CONFIG_KEYS},
        "name": folder.name, "description": "",
        **(meta or {}),
        "fingerprint": short_fingerprint(sha256_file(weights)),
        "weights_bytes": weights.stat().st_size,
        "merges": merges_name,
    }
    _replace_atomically(folder, CONFIG_FILE, lambda p: p.write_text(json.dumps(record, indent=2) + "\n"))
    return folder


def save_model(model: CLIP, folder: str | Path, merges_path: str | Path | None = None,
               meta: dict | None = None) -> Path:
    """Save a model in our format (a folder), keeping each tensor's dtype; meta adds name, description..."""
    return save_state_dict(model.state_dict(), model.config, folder, merges_path, meta)
