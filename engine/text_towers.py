"""Text towers built on a Hugging Face transformer: multilingual queries beside CLIP image towers.

Two families, one module (`MeanPoolTower`): a `transformers` XLM-RoBERTa or BERT model (built from its
config with AutoModel, not re-implemented), mean pooling of its last hidden states over the attention
mask, and a projection into an image tower's space.

- M-CLIP's text towers (`M-CLIP/XLM-Roberta-Large-Vit-B-32`, `-Vit-L-14`, `-Vit-B-16Plus`,
  `M-CLIP/LABSE-Vit-L-14`): text only, one linear map with a bias (`LinearTransformation`), trained to
  land on an unchanged image tower's embeddings (OpenAI's ViT-B/32 and ViT-L/14, open_clip's
  ViT-B-16-plus-240 laion400m_e31). Their folder holds config.json (model_type "M-CLIP": modelBase,
  transformerDimensions, numDims), pytorch_model.bin and the tokenizer's files; the transformer's own
  config is its base model's, kept beside as transformer_config.json (cliplab's download fetches it).
- open_clip's CLIPs with a Hugging Face text tower (`xlm-roberta-base-ViT-B-32`,
  `xlm-roberta-large-ViT-H-14`): open_clip_config.json whose text_cfg names hf_model_name, the mean
  pooler and a projection (open_clip's default "mlp": Linear, GELU, Linear, no biases), with CLIP's
  ViT as the image tower (`HFTextCLIP`).

A text tower searches a library embedded by an image tower it pairs with (`PairedCLIP`): the pairing is
recorded in the tower's folder (RELEASE_FILE: the image releases by name and source SHA-256, or image
weights by fingerprint) and checked against the image model before any query runs, so that a tower
trained for another image space is refused with a sentence instead of giving wrong results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from cliplab.engine.errors import CliplabError
from cliplab.engine.hf_tokenizer import HFTokenizer
from cliplab.engine.model import ImageSide

MCLIP_TYPE = "M-CLIP"
TRANSFORMER_CONFIG = "transformer_config.json"  # the base transformer's config.json, kept beside the weights
RELEASE_FILE = "cliplab_release.json"  # name, kind, pairs_with, languages (written by the download)
OPEN_CLIP_CONFIG = "open_clip_config.json"
MODEL_TYPES = ("xlm-roberta", "roberta", "bert")  # transformers models the towers are built on
PROJECTIONS = ("mlp", "linear", None)
# buffers and modules a tower does not compute with: position ids are rebuilt, the pooler is unused
_IGNORED = ("embeddings.position_ids", "embeddings.token_type_ids", "pooler.")


class MeanPoolTower(nn.Module):
    """tokens -> the transformer's last hidden states, averaged over the non-padding positions, projected."""

    def __init__(self, transformer: nn.Module, proj: nn.Module, pad_token_id: int, context_length: int) -> None:
        super().__init__()
        self.transformer = transformer
        self.proj = proj
        self.pad_token_id = int(pad_token_id)
        self.context_length = int(context_length)

    @property
    def embed_dim(self) -> int:
        last = [m for m in self.proj.modules() if isinstance(m, nn.Linear)]
        return last[-1].out_features if last else self.width

    @property
    def width(self) -> int:
        return int(self.transformer.config.hidden_size)

    @property
    def vocab_rows(self) -> int:
        return int(self.transformer.get_input_embeddings().num_embeddings)

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.get_input_embeddings().weight.dtype

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # padding is on the right and masked out: the batch is cut after its longest text
        tokens = tokens[:, :valid_length(tokens, self.pad_token_id)]
        return self.pooled(tokens, tokens != self.pad_token_id)

    def pooled(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.transformer(input_ids=tokens, attention_mask=mask.long()).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return self.proj((hidden * weights).sum(dim=1) / weights.sum(dim=1))


class TowerGraph(nn.Module):
    """The tower as one exportable graph on tokens already cut (the mask is computed inside)."""

    def __init__(self, tower: MeanPoolTower) -> None:
        super().__init__()
        self.tower = tower

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.tower.pooled(tokens, tokens != self.tower.pad_token_id)


@dataclass
class TextTower:
    """A loaded multilingual text tower: the module, its tokenizer and what it pairs with."""
    module: MeanPoolTower
    tokenizer: HFTokenizer
    name: str
    fingerprint: str
    family: str  # "M-CLIP" or "open_clip"
    pairs_with: list[dict] = field(default_factory=list)  # {"name", "sha256", "fingerprint"} (any of them)
    languages: str = ""

    @property
    def embed_dim(self) -> int:
        return self.module.embed_dim

    def fits(self, image_model: nn.Module) -> bool:
        """Whether this tower was trained for the image model's embedding space."""
        ids = image_identity(image_model)
        for entry in self.pairs_with:
            if entry.get("fingerprint") and entry["fingerprint"] == ids["fingerprint"]:
                return True
            # a downloaded release records the released file's SHA-256; a released file loaded as it is has
            # the short form of it as its fingerprint
            if entry.get("sha256") and entry["sha256"] in (ids["sha256"], None) or (
                    entry.get("sha256") and entry["sha256"][:32] == ids["fingerprint"]):
                return True
            if entry.get("name") and not entry.get("sha256") and _same_name(entry["name"], ids["name"]):
                return True
        return False

    def pairing_names(self) -> list[str]:
        return [entry.get("name") or f"weights {entry.get('fingerprint', '?')[:12]}" for entry in self.pairs_with]


def _same_name(a: str, b: str) -> bool:
    def norm(name: str) -> str:
        return name.replace("/", "-").replace("@", "-")
    return norm(a) == norm(b)


def image_identity(model: nn.Module) -> dict:
    """What identifies an image tower's weights: the name, the fingerprint of the file loaded and, for a
    downloaded release, the SHA-256 of the file it was converted from."""
    from cliplab.engine.features import model_fingerprint
    return {"name": str(getattr(model, "name", "") or ""), "fingerprint": model_fingerprint(model),
            "sha256": getattr(model, "source_sha256", None)}


# --- reading folders ----------------------------------------------------------------------------

def is_text_tower(path: str | Path) -> bool:
    """An M-CLIP text tower folder (config.json with model_type M-CLIP)."""
    config = Path(path) / "config.json"
    return config.is_file() and _json(config).get("model_type") == MCLIP_TYPE


def is_hf_text_clip(path: str | Path) -> bool:
    """An open_clip CLIP folder whose text tower is a Hugging Face transformer."""
    config = Path(path) / OPEN_CLIP_CONFIG
    if not (Path(path).is_dir() and config.is_file()):
        return False
    model_cfg = _json(config).get("model_cfg", {})
    return bool((model_cfg.get("text_cfg") or {}).get("hf_model_name"))


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise CliplabError(f"{path} is not valid JSON ({error}); download the release again.") from error


def _transformer_config(folder: Path, base: str | None):
    """The base transformer's config: transformer_config.json beside the weights, or a local folder the
    release's config names (modelBase / hf_model_name)."""
    from transformers import AutoConfig
    candidates = [folder / TRANSFORMER_CONFIG]
    if base and Path(base).is_dir():
        candidates.append(Path(base) / "config.json")
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        raise CliplabError(f"{folder} does not hold the configuration of its base transformer ({base}) as "
                           f"{TRANSFORMER_CONFIG}: download the release by name, or put that model's config.json "
                           f"there as {TRANSFORMER_CONFIG}.")
    values = _json(path)
    model_type = values.get("model_type")
    if model_type not in MODEL_TYPES:
        raise CliplabError(f"The text tower in {folder} is built on a {model_type!r} transformer; cliplab builds "
                           f"text towers on {', '.join(MODEL_TYPES)} models only.")
    return AutoConfig.for_model(**values)


def _weights(folder: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors",
                 "open_clip_pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    raise CliplabError(f"{folder} holds no weights file (pytorch_model.bin or model.safetensors); download the "
                       "release again.")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure is a damaged or foreign file
        raise CliplabError(f"{path} cannot be read as PyTorch weights ({error}); download it again.") from error
    return state.get("state_dict", state) if isinstance(state, dict) else state


def _tokenizer(folder: Path, config, context_length: int, source: str) -> HFTokenizer:
    from transformers import AutoTokenizer
    try:
        hf = AutoTokenizer.from_pretrained(str(folder), config=config, local_files_only=True)
    except (OSError, ValueError, TypeError) as error:
        raise CliplabError(f"The tokenizer files of {source} in {folder} cannot be read ({error}); download the "
                           "release again.") from error
    return HFTokenizer(hf, context_length=context_length)


def _auto_model():
    """transformers' AutoModel, or a sentence where its modeling code cannot be imported (it imports
    torchvision when installed, which fails beside a torch of another build)."""
    try:
        import transformers.modeling_utils  # noqa: F401
        from transformers import AutoModel
    except (RuntimeError, ImportError) as error:
        raise CliplabError(f"The transformers library cannot load its models here ({error}). This is usually a "
                           "torchvision that does not match the installed torch: `python scripts/check_torch_pair.py` "
                           "says how to repair it (or uninstall torchvision, which cliplab does not use).") from None
    return AutoModel


def _build_transformer(config) -> nn.Module:
    AutoModel = _auto_model()  # noqa: N806 - the class as transformers names it
    with torch.device("meta"):  # no random init of hundreds of millions of weights about to be replaced
        return AutoModel.from_config(config, add_pooling_layer=False)


def _assign(module: nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Put the checkpoint's tensors in place of the meta ones; buffers the file lacks are rebuilt."""
    own = module.state_dict()
    kept = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items() if k in own}
    missing = [k for k in own if k not in kept and not _ignored(k)]
    unexpected = [k for k in tensors if k not in own and not _ignored(k)]
    shapes = [f"{k}: {tuple(kept[k].shape)} in the file, {tuple(own[k].shape)} in the config"
              for k in kept if tuple(kept[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        said = "; ".join(filter(None, [f"missing {', '.join(missing[:4])}" if missing else "",
                                       f"unexpected {', '.join(unexpected[:4])}" if unexpected else "",
                                       ", ".join(shapes[:3])]))
        raise CliplabError(f"{source} does not fit its text tower's configuration ({said}). Download the release "
                           "again; its weights and config must come from the same model.")
    module.load_state_dict(kept, strict=False, assign=True)
    for name, buffer in list(module.named_buffers()):
        if buffer.is_meta:  # position ids / token type ids: rebuilt as transformers builds them
            owner = module.get_submodule(name.rsplit(".", 1)[0]) if "." in name else module
            leaf = name.rsplit(".", 1)[-1]
            length = buffer.shape[-1]
            value = torch.arange(length).expand((1, -1)) if "position" in leaf else torch.zeros(buffer.shape,
                                                                                                  dtype=torch.long)
            owner.register_buffer(leaf, value.to(buffer.dtype), persistent=False)


def _ignored(key: str) -> bool:
    return any(part in key for part in _IGNORED)


def _check_vocabulary(tokenizer: HFTokenizer, tower: MeanPoolTower, folder: Path) -> None:
    if tokenizer.vocab_size > tower.vocab_rows or tokenizer.pad_token_id >= tower.vocab_rows:
        raise CliplabError(f"The tokenizer in {folder} has {tokenizer.vocab_size} tokens but the text tower's "
                           f"weights embed only {tower.vocab_rows}: the tokenizer files are not the ones published "
                           "with these weights. Download the release again.")


def _context_length(config, tokenizer_limit: int | None, extra: int) -> int:
    """The longest text the transformer takes: its position table less the positions it never uses."""
    limit = int(config.max_position_embeddings) - extra
    if tokenizer_limit and 0 < tokenizer_limit < limit:
        limit = int(tokenizer_limit)
    return limit


def _record(folder: Path) -> dict:
    path = folder / RELEASE_FILE
    return _json(path) if path.is_file() else {}


def load_mclip(folder: str | Path) -> TextTower:
    """An M-CLIP text tower from its published folder (see the module docstring)."""
    from cliplab.engine.weights import sha256_file, short_fingerprint
    folder = Path(folder)
    config = _json(folder / "config.json")
    base = config.get("modelBase")
    transformer_config = _transformer_config(folder, base)
    width = int(config.get("transformerDimensions", config.get("transformerDimSize", 0)))
    dims = int(config.get("numDims", config.get("imageDimSize", 0)))
    if width != transformer_config.hidden_size or dims <= 0:
        raise CliplabError(f"{folder}/config.json says transformerDimensions {width} and numDims {dims}, which "
                           f"do not fit its transformer (width {transformer_config.hidden_size}); download the "
                           "release again.")
    path = _weights(folder)
    tensors = _read_state_dict(path)
    renamed = {("proj." + k[len("LinearTransformation."):] if k.startswith("LinearTransformation.") else k): v
               for k, v in tensors.items()}
    transformer = _build_transformer(transformer_config)
    with torch.device("meta"):
        proj = nn.Linear(width, dims)
    offset = 2 if transformer_config.model_type in ("xlm-roberta", "roberta") else 0
    tower = MeanPoolTower(transformer, proj, transformer_config.pad_token_id or 0,
                          _context_length(transformer_config, None, offset))
    _assign(tower, renamed, path)
    tokenizer = _tokenizer(folder, transformer_config, tower.context_length, "the M-CLIP text tower")
    tower.pad_token_id = tokenizer.pad_token_id
    _check_vocabulary(tokenizer, tower, folder)
    record = _record(folder)
    return TextTower(tower.eval(), tokenizer, record.get("name") or folder.name,
                     record.get("fingerprint") or short_fingerprint(sha256_file(path)), MCLIP_TYPE,
                     list(record.get("pairs_with") or []), record.get("languages", ""))


def _open_clip_projection(kind: str | None, width: int, embed_dim: int) -> nn.Module:
    """open_clip's HFTextEncoder projection: none where the widths agree, a matrix, or its MLP."""
    if kind not in PROJECTIONS:
        raise CliplabError(f"The text tower's projection {kind!r} is not one cliplab builds (mlp, linear).")
    with torch.device("meta"):
        if kind is None and width == embed_dim:
            return nn.Identity()
        if kind == "linear":
            return nn.Linear(width, embed_dim, bias=False)
        hidden = (width + embed_dim) // 2
        return nn.Sequential(nn.Linear(width, hidden, bias=False), nn.GELU(), nn.Linear(hidden, embed_dim, bias=False))


class HFTextCLIP(ImageSide, nn.Module):
    """open_clip's CLIP with a Hugging Face text tower: CLIP's image tower (visual) and a MeanPoolTower
    (text), with the surface of engine.model.CLIP that inference uses."""

    def __init__(self, visual: nn.Module, text: MeanPoolTower, logit_scale: torch.Tensor | None = None) -> None:
        super().__init__()
        self.visual = visual
        self.text = text
        self.logit_scale = nn.Parameter(logit_scale if logit_scale is not None else torch.tensor(0.0))
        self.context_length = text.context_length

    text_tower = property(lambda self: self.text)

    @property
    def embed_dim(self) -> int:
        return self.text.embed_dim

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text(tokens)


def load_hf_text_clip(folder: str | Path) -> tuple[HFTextCLIP, HFTokenizer]:
    """open_clip's published folder of a CLIP with a Hugging Face text tower (module docstring), with its
    name, fingerprint and preprocessing set as engine.weights.load_model sets them."""
    from cliplab.engine.config import open_clip_config, refuse
    from cliplab.engine.model import build_visual
    from cliplab.engine.weights import PREPROCESS_KEYS, sha256_file, short_fingerprint
    folder = Path(folder)
    config = _json(folder / OPEN_CLIP_CONFIG)
    model_cfg = config.get("model_cfg", config)
    text_cfg = dict(model_cfg.get("text_cfg") or {})
    pooler = text_cfg.get("hf_pooler_type", "mean_pooler")
    if pooler != "mean_pooler":
        raise refuse(f"a CLIP whose Hugging Face text tower pools with {pooler}", "cliplab's towers mean-pool")
    transformer_config = _transformer_config(folder, text_cfg["hf_model_name"])
    try:
        image_config = open_clip_config({**model_cfg, "text_cfg": {}})
    except (TypeError, ValueError) as error:
        raise CliplabError(f"{folder / OPEN_CLIP_CONFIG}: its vision_cfg holds a value that is not a size "
                           f"({error}).") from None
    path = _weights(folder)
    tensors = _read_state_dict(path)
    with torch.device("meta"):
        visual = build_visual(image_config)
    projection = _open_clip_projection(text_cfg.get("hf_proj_type", "mlp"), transformer_config.hidden_size,
                                       image_config.embed_dim)
    tower = MeanPoolTower(_build_transformer(transformer_config), projection, transformer_config.pad_token_id or 0,
                          int(text_cfg.get("context_length", 77)))
    with torch.device("meta"):
        model = HFTextCLIP(visual, tower)
    _assign(model, {k: v for k, v in tensors.items() if not k.startswith("logit_bias")}, path)
    tokenizer = _tokenizer(folder, transformer_config, tower.context_length, "the CLIP's text tower")
    if tokenizer.pad_token_id != tower.pad_token_id:
        raise CliplabError(f"The tokenizer in {folder} pads with id {tokenizer.pad_token_id}, but the text tower "
                           f"masks id {tower.pad_token_id}: the tokenizer files do not belong to these weights.")
    _check_vocabulary(tokenizer, tower, folder)
    model.name = _record(folder).get("name") or folder.name
    model.fingerprint = model.text_fingerprint = short_fingerprint(sha256_file(path))
    model.preprocess_cfg = {k: v for k, v in (config.get("preprocess_cfg") or {}).items() if k in PREPROCESS_KEYS}
    return model.eval(), tokenizer


def hf_text_tower(model: nn.Module) -> MeanPoolTower | None:
    """The Hugging Face text tower a model encodes texts with (None: CLIP's own text transformer)."""
    tower = getattr(model, "text_tower", None)
    return tower if isinstance(tower, MeanPoolTower) else None


def probe_tokens(tower: MeanPoolTower, count: int = 8, context: int = 32, seed: int = 0) -> torch.Tensor:
    """Token rows of several lengths from the tower's vocabulary, right-padded with its pad id (what the
    runtime measures a text tower's modes on)."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.full((count, context), tower.pad_token_id, dtype=torch.long)
    for row in range(count):
        length = 3 + row * (context - 3) // max(1, count - 1)
        ids = torch.randint(4, tower.vocab_rows, (length,), generator=generator)
        ids[ids == tower.pad_token_id] = 4
        tokens[row, :length] = ids
    return tokens


def valid_length(tokens: torch.Tensor, pad_token_id: int) -> int:
    """Columns up to the batch's longest text (padding is on the right)."""
    return max(1, int((tokens != pad_token_id).sum(dim=-1).max())) if tokens.numel() else 1


# --- pairing a text tower with an image model -----------------------------------------------------

class PairedCLIP(nn.Module):
    """An image model (any CLIP cliplab loads) whose texts go through a paired text tower. Its fingerprint,
    name and preprocessing are the image model's: its library is the image model's library."""

    def __init__(self, image_model: nn.Module, tower: TextTower) -> None:
        super().__init__()
        self.image_model = image_model
        self.text = tower.module
        self.tower = tower
        self.context_length = tower.module.context_length
        self.name = getattr(image_model, "name", "")
        from cliplab.engine.features import model_fingerprint
        self.fingerprint = model_fingerprint(image_model)
        self.preprocess_cfg = dict(getattr(image_model, "preprocess_cfg", None) or {})
        self.source_sha256 = getattr(image_model, "source_sha256", None)
        self.text_fingerprint = tower.fingerprint  # the image side's fingerprint is the library's key

    text_tower = property(lambda self: self.text)

    @property
    def visual(self) -> nn.Module:
        return self.image_model.visual

    @property
    def dtype(self) -> torch.dtype:
        return self.image_model.dtype

    @property
    def image_resolution(self) -> int:
        return self.image_model.image_resolution

    @property
    def embed_dim(self) -> int:
        return self.image_model.embed_dim

    def encode_image(self, image: torch.Tensor, project: bool = True) -> torch.Tensor:
        return self.image_model.encode_image(image, project=project)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text(tokens)


def pair(image_model: nn.Module, tower: TextTower) -> PairedCLIP:
    """The image model with the tower's texts, or a sentence when the tower was not trained for it."""
    image_name = getattr(image_model, "name", "") or "the image model"
    if getattr(image_model, "text_tower", None) is not None and not isinstance(image_model, HFTextCLIP):
        image_model = image_model.image_model  # already paired: pair its image model anew
    if tower.embed_dim != image_model.embed_dim or not tower.fits(image_model):
        fits = ", ".join(tower.pairing_names()) or "no image tower recorded in its folder"
        raise CliplabError(f"The text tower {tower.name} was trained for the image space of {fits}, not of "
                           f"{image_name} ({image_model.embed_dim}-d), so its queries would rank this library's "
                           "photos wrongly. Choose a text tower made for this image model, or search with the "
                           "model's own text tower.")
    return PairedCLIP(image_model, tower)


def load_text_tower(path: str | Path) -> TextTower:
    """A text tower from a folder: M-CLIP's, or the text tower of an open_clip CLIP with a Hugging Face
    text tower (which pairs with that CLIP's image tower)."""
    folder = Path(path)
    if is_text_tower(folder):
        return load_mclip(folder)
    if is_hf_text_clip(folder):
        model, tokenizer = load_hf_text_clip(folder)
        return TextTower(model.text, tokenizer, model.name, model.fingerprint, "open_clip",
                         [{"name": model.name, "fingerprint": model.fingerprint}])
    raise CliplabError(f"{folder} is not a text tower's folder: an M-CLIP folder holds config.json with "
                       f"model_type M-CLIP; an open_clip CLIP with a Hugging Face text tower holds "
                       f"{OPEN_CLIP_CONFIG}.")
