"""Model shapes for training (official names or a small custom shape) and named recipes (--preset).

A custom shape is a family and comma-separated fields, e.g.
  vit:width=192,layers=6,patch=8,res=64,text_width=192,text_layers=4,embed=128,ctx=32
  rn:layers=1-1-1-1,width=32,res=64,text_width=128,text_layers=3,embed=128,ctx=32
Fields left out take the defaults below; heads are width / 64 as in the paper.
"""

from __future__ import annotations

from dataclasses import replace

from cliplab.engine.config import ModelConfig
from cliplab.engine.errors import CliplabError
from cliplab.engine.model import ARCHITECTURES, CLIP

_SHAPE_DEFAULTS = {
    "vit": dict(width=192, layers=6, patch=8, res=64, text_width=192, text_layers=4, embed=128, ctx=32),
    "rn": dict(layers="1-1-1-1", width=32, res=64, text_width=192, text_layers=4, embed=128, ctx=32),
}

# The demo model: a small ModifiedResNet image tower. Short runs on this 2-core CPU showed it learns
# count, position and written words several times faster per sample than a ViT of the same cost
# (which learned colour only in 700 steps), and lr 5e-4 beat 2e-3. Half the batch comes in contrast
# pairs (hard negatives; shape pairs are look-alike outlines): against the same run without them,
# held-out position rose from 79% to 99.5% at equal shape; half of the shape pairs fill the frame
# (trainer.synthetic.SHAPE_GROUP_FILLS: drawings shape 90.6% to 95.3%). 96 px, not 64: a circle and a
# hexagon differ by 13% of the radius, under a pixel for a small shape at 64 px; from nothing at 96 px
# held-out shape rose from 69.0% to 78.2% and held-out colour from 89.8% to 94.8%. Precision "auto"
# trains in bf16 autocast where the CPU has it natively (AVX512-BF16, AMX; 66 minutes on 2 cores) and
# in fp32 elsewhere (about 2.3x the compute of the 64 px preset). See assets/demo/MODEL_CARD.md.
DEMO_SHAPE = "rn:layers=1-1-1-1,width=32,res=96,text_width=128,text_layers=2,embed=128,ctx=32"
PRESETS: dict[str, dict] = {
    "demo": dict(
        data="synthetic", model=DEMO_SHAPE, vocab=1000, batch_size=128, accum=1, steps=4400, lr=5e-4,
        warmup=100, wd=0.1, grad_clip=1.0, precision="auto", eval_every=200, eval_samples=100, save_every=100,
        seed=0, workers=0, max_minutes=88, export="assets/demo", contrast_group=2,
    ),
}


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
