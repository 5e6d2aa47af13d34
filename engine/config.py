"""What a CLIP is: one config type for every architecture, and where each field comes from.

`ModelConfig` carries everything that changes the function: the shapes, the activation, the head
counts, the MLP widths, LayerNorm eps, the optional parts (ln_pre, layer scale, logit_bias) and the
text pooling rule. `CLIP(config)` builds it; our `config.json` stores it; the loaders fill it.

A state dict's shapes say most of it (`shape_config`). They cannot say the activation, the
attention head width, LayerNorm eps or the pooling token: those are `Facts`, which come from the
file's own config (open_clip's `model_cfg`, a Hugging Face `config.json`, ours), from a known
release (the OpenAI hashes), from a named architecture (`assets/models.json`), or from the caller
(`arch=`). They are never guessed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cache

from cliplab.assets import asset_path
from cliplab.engine.errors import CliplabError

ACTIVATIONS = ("quick_gelu", "gelu")
OPENAI_EXTRAS = ("input_resolution", "context_length", "vocab_size")  # in OpenAI's state dicts only
GENERIC_ARCHES = {"quickgelu": "quick_gelu", "gelu": "gelu"}


@dataclass(frozen=True)
class ModelConfig:
    """A CLIP architecture, complete. None for heads / MLP widths means the paper's rule
    (heads of 64 channels, MLP 4x the width) and is resolved when the config is made."""

    embed_dim: int
    image_resolution: int
    vision_layers: int | tuple[int, ...]  # a tuple of four stage depths: ModifiedResNet
    vision_width: int
    vision_patch_size: int | None = None
    context_length: int = 77
    vocab_size: int = 49408
    transformer_width: int = 512
    transformer_heads: int | None = None
    transformer_layers: int = 12
    vision_heads: int | None = None
    vision_mlp_width: int | None = None
    transformer_mlp_width: int | None = None
    activation: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    vision_ln_pre: bool = True
    vision_layer_scale: bool = False
    transformer_layer_scale: bool = False
    logit_bias: bool = False
    text_eos_id: int | None = None  # None: the EOT is the highest id, pool at argmax
    # None: CLIP's byte-level BPE (the model's merges file). Else the Hugging Face tokenizer the text tower
    # was trained with (open_clip's hf_tokenizer_name, e.g. facebook/xlm-v-base for MetaCLIP 2 worldwide),
    # read from the tokenizer files in the model's folder: the ids mean nothing with another vocabulary.
    text_tokenizer: str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: resolve the defaults once, here
        if isinstance(self.vision_layers, list):
            set_(self, "vision_layers", tuple(self.vision_layers))
        if self.activation not in ACTIVATIONS:
            raise CliplabError(f"Unknown activation {self.activation!r}: cliplab's CLIP runs "
                               f"{' or '.join(ACTIVATIONS)}.")
        self._check_sizes()
        given = [name for name in ("vision_heads", "transformer_heads") if getattr(self, name) is not None]
        if self.vision_heads is None:
            tower = self.vision_width * 32 if self.is_resnet else self.vision_width
            set_(self, "vision_heads", max(1, tower // 64))
        if self.transformer_heads is None:
            set_(self, "transformer_heads", max(1, self.transformer_width // 64))
        if self.vision_mlp_width is None:
            set_(self, "vision_mlp_width", 4 * self.vision_width)
        if self.transformer_mlp_width is None:
            set_(self, "transformer_mlp_width", 4 * self.transformer_width)
        self._check_heads(given)  # defaulted heads are placeholders until with_facts sets the real ones

    def _check_sizes(self) -> None:
        """Every size a whole number in range, before anything is computed from it: a config file
        may say anything (a CliplabError naming the field; the loaders add the file)."""
        positive = ["embed_dim", "image_resolution", "vision_width", "context_length", "vocab_size",
                    "transformer_width"]
        optional = ["transformer_heads", "vision_heads", "vision_mlp_width", "transformer_mlp_width"]
        if not self.is_resnet:
            optional.append("vision_patch_size")
        for name in positive + [n for n in optional if getattr(self, n) is not None]:
            _check_whole(name, getattr(self, name), minimum=1)
        _check_whole("transformer_layers", self.transformer_layers, minimum=0)
        if self.is_resnet:
            if len(self.vision_layers) != 4:
                raise CliplabError(f"vision_layers is {list(self.vision_layers)}: a ModifiedResNet has four stages, "
                                   "so it must be four whole numbers, each at least 1 (or one number for a ViT).")
            for depth in self.vision_layers:
                _check_whole("vision_layers", depth, minimum=1, shown=list(self.vision_layers))
        else:
            _check_whole("vision_layers", self.vision_layers, minimum=0)
        if not isinstance(self.layer_norm_eps, (int, float)) or isinstance(self.layer_norm_eps, bool) \
                or not 0 < self.layer_norm_eps < 1:
            raise CliplabError(f"layer_norm_eps is {self.layer_norm_eps!r}: it must be a small positive number "
                               "such as 1e-05.")
        if self.text_eos_id is not None:
            _check_whole("text_eos_id", self.text_eos_id, minimum=0)
        if self.text_tokenizer is not None and (not isinstance(self.text_tokenizer, str) or not self.text_tokenizer):
            raise CliplabError(f"text_tokenizer is {self.text_tokenizer!r}: it must be a tokenizer's name such as "
                               "facebook/xlm-v-base, or null for CLIP's BPE.")

    def _check_heads(self, names: list[str]) -> None:
        """The attention heads given must split their tower's width (nn.MultiheadAttention asserts it)."""
        towers = [("transformer_heads", "transformer_width", self.transformer_width),
                  ("vision_heads", "vision_width" + (" x 32" if self.is_resnet else ""),
                   self.vision_width * 32 if self.is_resnet else self.vision_width)]
        for name, width_name, width in towers:
            if name not in names:
                continue
            heads = getattr(self, name)
            if width % heads:
                raise CliplabError(f"{name} is {heads}, which does not divide {width_name} ({width}): "
                                   "the heads must split the width evenly.")

    @property
    def is_resnet(self) -> bool:
        return isinstance(self.vision_layers, tuple)

    def to_dict(self) -> dict:
        record = asdict(self)
        if self.is_resnet:
            record["vision_layers"] = list(self.vision_layers)
        return record

    @classmethod
    def from_dict(cls, record: dict) -> ModelConfig:
        """From our config.json (or any mapping): known fields only; missing new fields keep their
        defaults, which are what format version 1 (QuickGELU, 64-wide heads, eps 1e-5) always meant."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})

    def with_facts(self, facts: Facts) -> ModelConfig:
        """The shapes of this config with the facts shapes cannot say."""
        vision_tower = self.vision_width * 32 if self.is_resnet else self.vision_width
        return replace(self, activation=facts.activation, layer_norm_eps=facts.layer_norm_eps,
                       vision_heads=_heads(vision_tower, facts.vision_head_width, "image"),
                       transformer_heads=_heads(self.transformer_width, facts.text_head_width, "text"),
                       text_eos_id=facts.text_eos_id, text_tokenizer=facts.text_tokenizer)

    def describe(self) -> str:
        tower = (f"ResNet {'-'.join(map(str, self.vision_layers))} width {self.vision_width}" if self.is_resnet
                 else f"ViT {self.vision_layers}x{self.vision_width}/{self.vision_patch_size}")
        return (f"{tower} at {self.image_resolution} px, text {self.transformer_layers}x{self.transformer_width}, "
                f"embed {self.embed_dim}, {self.activation}")


def _check_whole(name: str, value, minimum: int, shown=None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        shown = value if shown is None else shown
        least = "positive" if minimum == 1 else "0 or more"
        raise CliplabError(f"{name} is {shown!r}: it must be a whole number, {least}.")


@dataclass(frozen=True)
class Facts:
    """What a state dict's shapes cannot say, and where it was read (`source`, for messages)."""

    activation: str
    vision_head_width: int = 64
    text_head_width: int = 64
    layer_norm_eps: float = 1e-5
    text_eos_id: int | None = None
    text_tokenizer: str | None = None
    source: str = field(default="", compare=False, kw_only=True)


def _heads(width: int, head_width: int, tower: str) -> int:
    if width % head_width:
        raise CliplabError(f"The {tower} tower is {width} wide, which does not split into attention heads "
                           f"{head_width} wide: the architecture given does not fit this checkpoint.")
    return width // head_width


def facts_of(config: ModelConfig, source: str = "") -> Facts:
    vision_tower = config.vision_width * 32 if config.is_resnet else config.vision_width
    return Facts(config.activation, vision_tower // config.vision_heads,
                 config.transformer_width // config.transformer_heads, config.layer_norm_eps,
                 config.text_eos_id, config.text_tokenizer, source=source)


# --- Shapes -------------------------------------------------------------------------------------

def _count(sd: dict, prefix: str, index: int) -> int:
    return len({k.split(".")[index] for k in sd if k.startswith(prefix)})


def shape_config(sd: dict) -> ModelConfig:
    """Every field that tensor shapes determine (official key names); facts are the OpenAI ones
    until with_facts replaces them. A KeyError means the state dict is not a CLIP's."""
    if "visual.proj" in sd:
        vision_width = sd["visual.conv1.weight"].shape[0]
        vision_layers = _count(sd, "visual.transformer.resblocks.", 3)
        vision_patch_size = sd["visual.conv1.weight"].shape[-1]
        grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        image_resolution = vision_patch_size * grid
        vision_mlp_width = sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] if vision_layers else None
    else:
        vision_layers = tuple(_count(sd, f"visual.layer{b}.", 2) for b in (1, 2, 3, 4))
        vision_width = sd["visual.layer1.0.conv1.weight"].shape[0]
        vision_patch_size, vision_mlp_width = None, None
        image_resolution = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5) * 32
    width = sd["ln_final.weight"].shape[0]
    layers = _count(sd, "transformer.resblocks.", 2)
    return ModelConfig(
        embed_dim=sd["text_projection"].shape[1], image_resolution=image_resolution, vision_layers=vision_layers,
        vision_width=vision_width, vision_patch_size=vision_patch_size,
        context_length=sd["positional_embedding"].shape[0], vocab_size=sd["token_embedding.weight"].shape[0],
        transformer_width=width, transformer_layers=layers, vision_mlp_width=vision_mlp_width,
        transformer_mlp_width=sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] if layers else None,
        vision_ln_pre="visual.ln_pre.weight" in sd or vision_patch_size is None,
        vision_layer_scale="visual.transformer.resblocks.0.ls_1.gamma" in sd,
        transformer_layer_scale="transformer.resblocks.0.ls_1.gamma" in sd,
        logit_bias="logit_bias" in sd)


FACT_FIELDS = ("activation", "layer_norm_eps", "vision_heads", "transformer_heads", "text_eos_id", "text_tokenizer")
SHAPE_FIELDS = tuple(f.name for f in fields(ModelConfig) if f.name not in FACT_FIELDS)


def same_shapes(a: ModelConfig, b: ModelConfig) -> bool:
    """Whether two configs describe the same tensors (facts aside)."""
    return all(getattr(a, name) == getattr(b, name) for name in SHAPE_FIELDS)


# --- open_clip's model_cfg --------------------------------------------------------------------

# open_clip options whose non-default value means a function cliplab's CLIP does not compute.
_VISION_UNSUPPORTED = {"attentional_pool": False, "pool_type": "tok", "final_ln_after_pool": False,
                       "pos_embed_type": "learnable", "qk_norm": False, "scaled_cosine_attn": False,
                       "scale_heads": False, "scale_attn_inner": False, "scale_attn": False, "scale_fc": False,
                       "act_kwargs": None, "output_tokens": False}
_TEXT_UNSUPPORTED = {"embed_cls": False, "no_causal_mask": False, "final_ln_after_pool": False,
                     "proj_bias": False, "proj_type": "linear", "qk_norm": False, "scaled_cosine_attn": False,
                     "scale_heads": False, "scale_attn_inner": False, "scale_attn": False, "scale_fc": False,
                     "act_kwargs": None, "output_tokens": False}


def refuse(what: str, why: str) -> CliplabError:
    return CliplabError(f"This checkpoint is {what}; cliplab does not run it ({why}). "
                        "docs/models.md lists the families cliplab loads.")


def open_clip_config(model_cfg: dict, quick_gelu: bool | None = None) -> ModelConfig:
    """open_clip's model_cfg (`open_clip_config.json`, its named configs) as a ModelConfig, or a
    refusal that names the part cliplab does not build."""
    vision, text = model_cfg.get("vision_cfg") or {}, model_cfg.get("text_cfg") or {}
    if "multimodal_cfg" in model_cfg:
        raise refuse("a CoCa model (a captioning decoder beside the contrastive towers)", "no text decoder")
    if vision.get("timm_model_name"):
        raise refuse(f"a CLIP with a timm image tower ({vision['timm_model_name']}: SigLIP, EVA, ConvNeXt, ViTamin "
                     "and MobileCLIP are built this way)", "cliplab builds only the ViT and ModifiedResNet towers")
    if text.get("hf_model_name"):
        raise refuse(f"a CLIP with a Hugging Face text tower ({text['hf_model_name']}) read as a CLIP",
                     "such a CLIP loads from its published folder (engine.text_towers), with its tokenizer's files")
    for tower, options, unsupported in (("image", vision, _VISION_UNSUPPORTED), ("text", text, _TEXT_UNSUPPORTED)):
        for key, default in unsupported.items():
            if options.get(key, default) != default:
                raise refuse(f"a CLIP whose {tower} tower sets {key}={options[key]!r}",
                             "that changes the function, and cliplab's CLIP does not compute it")
    pool = text.get("pool_type", "argmax")
    if pool not in ("argmax", "eos"):
        raise refuse(f"a CLIP whose text tower pools at the {pool!r} token", "cliplab pools at the EOT token")
    if text.get("hf_tokenizer_name") and (text.get("tokenizer_mode") or text.get("tokenizer_kwargs")):
        raise refuse(f"a CLIP whose tokenizer {text['hf_tokenizer_name']} runs with the options "
                     f"{ {k: text[k] for k in ('tokenizer_mode', 'tokenizer_kwargs') if text.get(k)} }",
                     "cliplab runs a Hugging Face tokenizer as open_clip does by default, without options")
    eps = {(options.get("norm_kwargs") or {}).get("eps", 1e-5) for options in (vision, text)}
    if len(eps) > 1:
        raise refuse("a CLIP with a different LayerNorm eps in each tower", "cliplab uses one eps for both")
    image_size = vision.get("image_size", 224)
    if isinstance(image_size, (list, tuple)):
        if len(set(image_size)) > 1:
            raise refuse(f"a CLIP for non-square images ({image_size})", "cliplab's towers take square images")
        image_size = image_size[0]
    layers, width = vision.get("layers", 12), vision.get("width", 768)
    head_width = vision.get("head_width", 64)
    text_width = text.get("width", 512)
    resnet = isinstance(layers, (list, tuple))
    if quick_gelu is None:
        quick_gelu = bool(model_cfg.get("quick_gelu", False))
    return ModelConfig(
        embed_dim=model_cfg["embed_dim"], image_resolution=image_size, vision_layers=tuple(layers) if resnet else layers,
        vision_width=width, vision_patch_size=None if resnet else vision.get("patch_size", 16),
        context_length=text.get("context_length", 77), vocab_size=text.get("vocab_size", 49408),
        transformer_width=text_width, transformer_heads=text.get("heads", 8), transformer_layers=text.get("layers", 12),
        vision_heads=(width * 32 if resnet else width) // head_width,
        vision_mlp_width=None if resnet else int(width * vision.get("mlp_ratio", 4.0)),
        transformer_mlp_width=int(text_width * text.get("mlp_ratio", 4.0)),
        activation="quick_gelu" if quick_gelu else "gelu", layer_norm_eps=eps.pop(),
        vision_ln_pre=not vision.get("no_ln_pre", False),
        vision_layer_scale=vision.get("ls_init_value") is not None,
        transformer_layer_scale=text.get("ls_init_value") is not None,
        logit_bias=model_cfg.get("init_logit_bias") is not None,
        text_eos_id=text.get("eos_id", 2) if pool == "eos" else None,
        text_tokenizer=text.get("hf_tokenizer_name") or None)


# --- Hugging Face CLIPConfig ------------------------------------------------------------------

_HF_ACTIVATIONS = {"quick_gelu": "quick_gelu", "gelu": "gelu"}
_HF_FAMILIES = {"siglip": "a SigLIP model", "siglip2": "a SigLIP 2 model", "chinese_clip": "a Chinese-CLIP model",
                "altclip": "an AltCLIP model (XLM-RoBERTa text tower)",
                "clipseg": "a CLIPSeg segmentation model", "owlvit": "an OWL-ViT detector",
                "owlv2": "an OWLv2 detector", "x_clip": "an X-CLIP video model", "blip": "a BLIP model",
                "clap": "a CLAP audio model"}


def hf_facts(config: dict) -> Facts:
    """The facts in a Hugging Face CLIP config.json, or a refusal naming what the file is."""
    model_type = config.get("model_type", "clip")
    if model_type not in ("clip", "metaclip_2"):  # MetaCLIP 2: CLIP's towers, the tensors named as CLIP's
        what = _HF_FAMILIES.get(model_type, f"a Hugging Face {model_type!r} model")
        raise refuse(what, "not CLIP's architecture")
    towers = {name: config.get(name) or {} for name in ("text_config", "vision_config")}
    acts = {tower.get("hidden_act", "quick_gelu") for tower in towers.values()}
    for act in acts:
        if act not in _HF_ACTIVATIONS:
            raise refuse(f"a Hugging Face CLIP with the activation {act!r}",
                         "cliplab's CLIP runs QuickGELU or exact GELU")
    if len(acts) > 1:
        raise refuse("a Hugging Face CLIP with a different activation in each tower", "cliplab uses one for both")
    eps = {tower.get("layer_norm_eps", 1e-5) for tower in towers.values()}
    if len(eps) > 1:
        raise refuse("a Hugging Face CLIP with a different LayerNorm eps in each tower", "cliplab uses one for both")
    text, vision = towers["text_config"], towers["vision_config"]
    vocab = text.get("vocab_size", 49408)
    metaclip_2 = model_type == "metaclip_2"
    if vocab != 49408 and not metaclip_2:
        raise refuse(f"a Hugging Face CLIP with a vocabulary of {vocab} tokens",
                     "cliplab tokenizes with CLIP's byte-level BPE of 49408 tokens")
    eos = text.get("eos_token_id", 2 if metaclip_2 else 49407)
    eos = eos[0] if isinstance(eos, list) else eos
    if not metaclip_2 and eos in (2, vocab - 1):
        eos = None  # eos 2 is transformers' legacy marker for CLIP's argmax pooling; the last id pools the same way
    return Facts(_HF_ACTIVATIONS[acts.pop()],
                 vision.get("hidden_size", 768) // vision.get("num_attention_heads", 12),
                 text.get("hidden_size", 512) // text.get("num_attention_heads", 8), eps.pop(), eos,
                 # MetaCLIP 2 pools at its end token always, and reads the tokenizer files in its folder (XLM-V's)
                 text_tokenizer=METACLIP2_TOKENIZER if metaclip_2 else None, source="its config.json")


METACLIP2_TOKENIZER = "facebook/xlm-v-base"


# --- Named architectures ----------------------------------------------------------------------

# The paper's nine (OpenAI's releases): QuickGELU, 64-wide heads, MLP 4x.
ARCHITECTURES: dict[str, ModelConfig] = {
    "RN50": ModelConfig(1024, 224, (3, 4, 6, 3), 64, transformer_width=512),
    "RN101": ModelConfig(512, 224, (3, 4, 23, 3), 64, transformer_width=512),
    "RN50x4": ModelConfig(640, 288, (4, 6, 10, 6), 80, transformer_width=640),
    "RN50x16": ModelConfig(768, 384, (6, 8, 18, 8), 96, transformer_width=768),
    "RN50x64": ModelConfig(1024, 448, (3, 15, 36, 10), 128, transformer_width=1024),
    "ViT-B/32": ModelConfig(512, 224, 12, 768, 32, transformer_width=512),
    "ViT-B/16": ModelConfig(512, 224, 12, 768, 16, transformer_width=512),
    "ViT-L/14": ModelConfig(768, 224, 24, 1024, 14, transformer_width=768),
    "ViT-L/14@336px": ModelConfig(768, 336, 24, 1024, 14, transformer_width=768),
}


@cache
def model_table() -> dict:
    """assets/models.json: open_clip's named architectures and the release table."""
    return json.loads(asset_path("models.json").read_text())


@cache
def named_architectures() -> dict[str, ModelConfig]:
    """Every architecture name --arch accepts: the paper's nine (ViT-B/32 ..., RN50 ...: QuickGELU) and
    open_clip's names (ViT-B-32 is GELU as in open_clip, ViT-B-32-quickgelu is QuickGELU). Where open_clip's
    GELU name is one of the paper's (RN50 ...), the GELU one is called RN50-gelu."""
    named = dict(ARCHITECTURES)
    for name, cfg in model_table()["architectures"].items():
        named[f"{name}-gelu" if name in ARCHITECTURES else name] = open_clip_config(cfg, quick_gelu=False)
        named[f"{name}-quickgelu"] = open_clip_config(cfg, quick_gelu=True)
    return named


def resolve_arch(arch: str | ModelConfig | Facts) -> tuple[ModelConfig | None, Facts]:
    """The caller's architecture: a name, `quickgelu` / `gelu` (64-wide heads, optionally
    `gelu,head_width=80`), a ModelConfig or Facts. Returns (named config or None, facts)."""
    if isinstance(arch, Facts):
        return None, arch
    if isinstance(arch, ModelConfig):
        return arch, facts_of(arch, "the architecture given")
    text = str(arch).strip()
    named = named_architectures()
    if text in named:
        return named[text], facts_of(named[text], f"--arch {text}")
    base, _, options = text.partition(",")
    if base.strip().lower() in GENERIC_ARCHES:
        widths = {"head_width": 64}
        for item in filter(None, (part.strip() for part in options.split(","))):
            key, _, value = item.partition("=")
            if key.strip() != "head_width" or not value.strip().isdigit():
                raise CliplabError(f"Bad option {item!r} in --arch {text!r}: the only option is head_width=N, "
                                   "e.g. 'gelu,head_width=80'.")
            widths["head_width"] = int(value)
        return None, Facts(GENERIC_ARCHES[base.strip().lower()], widths["head_width"], widths["head_width"],
                           source=f"--arch {text}")
    raise CliplabError(f"Unknown architecture {text!r}. Give an architecture name ({', '.join(sorted(named))}), "
                       "or 'quickgelu' / 'gelu' to take every shape from the file with heads 64 wide "
                       "(e.g. 'gelu,head_width=80').")


def matching_architectures(shapes: ModelConfig) -> list[str]:
    """Named architectures whose tensors are exactly the checkpoint's (facts aside)."""
    return [name for name, config in named_architectures().items() if same_shapes(shapes, config)]
