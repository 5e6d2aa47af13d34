"""Model shapes for training (official names or a small custom shape) and named recipes (--preset).

A custom shape is a family and comma-separated fields, e.g.
  vit:width=192,layers=6,patch=8,res=64,text_width=192,text_layers=4,embed=128,ctx=32
  rn:layers=1-1-1-1,width=32,res=64,text_width=128,text_layers=3,embed=128,ctx=32
Fields left out take the defaults below; heads are width / 64 as in the paper.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType

from cliplab.engine.config import ModelConfig
from cliplab.engine.errors import CliplabError
from cliplab.engine.model import ARCHITECTURES, CLIP
from cliplab.trainer.demo.recipe import DEMO_RECIPE

_SHAPE_DEFAULTS = {
    "vit": dict(width=192, layers=6, patch=8, res=64, text_width=192, text_layers=4, embed=128, ctx=32),
    "rn": dict(layers="1-1-1-1", width=32, res=64, text_width=192, text_layers=4, embed=128, ctx=32),
}

# Named recipes (--preset): values for TrainOptions' fields.
PRESETS: Mapping[str, Mapping[str, object]] = MappingProxyType({"demo": DEMO_RECIPE})


def parse_shape(spec: str) -> tuple[str, dict]:
    family, _, body = spec.partition(":")
    family = family.strip().lower()
    if family not in _SHAPE_DEFAULTS:
        raise CliplabError(f"Unknown model {spec!r}: use an architecture name ({', '.join(ARCHITECTURES)}) "
                           "or a custom shape such as 'vit:width=192,layers=6,patch=8,res=64,text_width=192,"
                           "text_layers=4,embed=128,ctx=32'.")
    fields = dict(_SHAPE_DEFAULTS[family])
    for item in filter(None, (part.strip() for part in body.split(","))):
        key, _, value = item.partition("=")
        if key not in fields or not value:
            raise CliplabError(f"Bad field {item!r} in model shape {spec!r}; {family} shapes take "
                               f"{', '.join(f'{k}=...' for k in fields)}.")
        fields[key] = value
    try:
        parsed = {k: (tuple(int(x) for x in str(v).split("-")) if k == "layers" and family == "rn" else int(v))
                  for k, v in fields.items()}
    except ValueError:
        raise CliplabError(f"Model shape {spec!r}: every field is an integer (rn layers as 1-1-1-1).") from None
    return family, parsed


def check_resolution(config: ModelConfig, resolution: int) -> None:
    """Refuse an image size the tower's grid cannot take (a multiple of the patch, or of the ResNet's 32)."""
    stride = config.vision_patch_size or 32
    if resolution % stride:
        raise CliplabError(f"--resolution {resolution}: this model's image grid needs a multiple of {stride} "
                           f"(its {'patch size' if config.vision_patch_size else 'ResNet stride'}).")


def build_model(spec: str, vocab_size: int = 49408, context_length: int | None = None,
                image_resolution: int | None = None) -> CLIP:
    """A randomly initialised CLIP: an official architecture or a custom shape (image_resolution
    overrides its image size)."""
    if spec in ARCHITECTURES:
        model = CLIP.from_name(spec, vocab_size=vocab_size, context_length=context_length or 77)
        if not image_resolution or image_resolution == model.image_resolution:
            return model
        check_resolution(model.config, image_resolution)
        return CLIP(replace(model.config, image_resolution=image_resolution))
    family, f = parse_shape(spec)
    if image_resolution:
        f["res"] = image_resolution
    if family == "vit" and f["res"] % f["patch"]:
        raise CliplabError(f"Model shape {spec!r}: res ({f['res']}) must be a multiple of patch ({f['patch']}).")
    if family == "rn" and (f["res"] % 32 or len(f["layers"]) != 4):
        raise CliplabError(f"Model shape {spec!r}: rn needs four stage depths (layers=a-b-c-d) and res a multiple of 32.")
    if min(f["width"], f["text_width"]) % 64 and family == "vit":
        raise CliplabError(f"Model shape {spec!r}: widths must be multiples of 64 (attention heads are 64 wide).")
    common = dict(embed_dim=f["embed"], image_resolution=f["res"], context_length=context_length or f["ctx"],
                  vocab_size=vocab_size, transformer_width=f["text_width"], transformer_layers=f["text_layers"])
    if family == "vit":
        return CLIP(ModelConfig(vision_layers=f["layers"], vision_width=f["width"], vision_patch_size=f["patch"],
                                **common))
    return CLIP(ModelConfig(vision_layers=f["layers"], vision_width=f["width"], **common))
