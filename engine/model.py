"""The CLIP model: text transformer, VisionTransformer and ModifiedResNet image towers.

Parameter names follow the official checkpoints exactly, so an official state dict loads as it is.
The architecture is an engine.config.ModelConfig: the paper's models, and the variants open_clip's
CLIP class holds (GELU, other head widths and MLP ratios, layer scale, no ln_pre, logit_bias, another
EOT id). Tensors are batch-first inside (the official code is sequence-first); the weights are the same.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from cliplab.engine.config import ARCHITECTURES, ModelConfig, named_architectures, shape_config

__all__ = ["ARCHITECTURES", "CLIP", "ModelConfig"]

class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 whatever the input dtype (as the reference does for fp16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Attention(nn.MultiheadAttention):
    """Multi-head self-attention, batch first, with nn.MultiheadAttention's parameters (in_proj, out_proj).
    Non-causal inference goes through nn.MultiheadAttention's fused fast path; causal attention and
    training use scaled_dot_product_attention, which lets the text encoder slice its mask for free."""

    fused_fast_path = True  # engine.onednn's inference copy turns it off to run its own projections

    def __init__(self, width: int, heads: int):
        super().__init__(width, heads, batch_first=True)

    def project_in(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.in_proj_weight, self.in_proj_bias)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        if self.fused_fast_path and not causal and not self.training and not torch.is_grad_enabled():
            return super().forward(x, x, x, need_weights=False)[0]
        n, length, width = x.shape
        q, k, v = self.project_in(x).chunk(3, dim=-1)
        q, k, v = (t.reshape(n, length, self.num_heads, -1).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(out.transpose(1, 2).reshape(n, length, width))


def building_on_meta() -> bool:
    """Whether modules are being made under `with torch.device("meta")` (to receive a checkpoint's tensors)."""
    return torch.empty(()).is_meta


def scaled_randn(*shape: int, scale: float = 1.0, divisor: float = 1.0) -> torch.Tensor:
    """The reference's `scale * torch.randn(shape) / divisor`, bit for bit; on the meta device just an
    empty tensor, since arithmetic there imports torch's compiler stack (~5 s on the first call)."""
    if building_on_meta():
        return torch.empty(shape)
    values = torch.randn(shape)
    return values / divisor if divisor != 1.0 else scale * values


class LayerScale(nn.Module):
    """A learned per-channel gain on a residual branch (open_clip's ls_init_value)."""

    def __init__(self, width: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


def activation_layer(name: str) -> nn.Module:
    return QuickGELU() if name == "quick_gelu" else nn.GELU()


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_width: int | None = None, activation: str = "quick_gelu",
                 eps: float = 1e-5, layer_scale: bool = False):
        super().__init__()
        mlp_width = mlp_width or 4 * width
        self.attn = Attention(width, heads)
        self.ln_1 = LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, mlp_width)),
            ("gelu", activation_layer(activation)),
            ("c_proj", nn.Linear(mlp_width, width)),
        ]))
        self.ln_2 = LayerNorm(width, eps=eps)
        self.ls_1 = LayerScale(width) if layer_scale else nn.Identity()
        self.ls_2 = LayerScale(width) if layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        x = x + self.ls_1(self.attn(self.ln_1(x), causal))
        return x + self.ls_2(self.mlp(self.ln_2(x)))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_width: int | None = None,
                 activation: str = "quick_gelu", eps: float = 1e-5, layer_scale: bool = False):
        super().__init__()
        self.width, self.layers = width, layers
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, mlp_width, activation, eps, layer_scale)
                                         for _ in range(layers)])
        self.grad_checkpointing = False  # trade compute for memory in training, per residual block

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        for block in self.resblocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, causal, use_reentrant=False)
            else:
                x = block(x, causal)
        return x


class VisionTransformer(nn.Module):
    def __init__(self, input_resolution: int, patch_size: int, width: int, layers: int, heads: int,
                 output_dim: int, mlp_width: int | None = None, activation: str = "quick_gelu", eps: float = 1e-5,
                 layer_scale: bool = False, ln_pre: bool = True):
        super().__init__()
        self.input_resolution = input_resolution
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scaled_randn(width, scale=scale))
        grid = input_resolution // patch_size
        self.positional_embedding = nn.Parameter(scaled_randn(grid * grid + 1, width, scale=scale))
        self.ln_pre = LayerNorm(width, eps=eps) if ln_pre else nn.Identity()
        self.transformer = Transformer(width, layers, heads, mlp_width, activation, eps, layer_scale)
        self.ln_post = LayerNorm(width, eps=eps)
        self.proj = nn.Parameter(scaled_randn(width, output_dim, scale=scale))

    def forward(self, x: torch.Tensor, project: bool = True) -> torch.Tensor:
        x = self.conv1(x).flatten(2).transpose(1, 2)  # [n, grid*grid, width]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        x = self.ln_post(x[:, 0])
        return x @ self.proj if project else x


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        # All convolutions have stride 1; a stride > 1 is an avg-pool before the last 1x1 conv.
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu3 = nn.ReLU(inplace=True)
        self.downsample = None
        if stride > 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, stride=1, bias=False)),
                ("1", nn.BatchNorm2d(planes * self.expansion)),
            ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        return self.relu3(out + identity)


class AttentionPool2d(nn.Module):
    """One multi-head attention layer whose single query is the mean of the spatial tokens."""

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads: int, output_dim: int):
        super().__init__()
        self.positional_embedding = nn.Parameter(scaled_randn(spacial_dim ** 2 + 1, embed_dim,
                                                                 divisor=embed_dim ** 0.5))
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.num_heads = num_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2).transpose(1, 2)  # [n, hw, c]
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1) + self.positional_embedding.to(x.dtype)
        n, length, c = x.shape
        heads = self.num_heads
        q = self.q_proj(x[:, :1]).reshape(n, 1, heads, -1).transpose(1, 2)
        k = self.k_proj(x).reshape(n, length, heads, -1).transpose(1, 2)
        v = self.v_proj(x).reshape(n, length, heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # only the mean token's query is needed
        return self.c_proj(out.transpose(1, 2).reshape(n, c))


class ModifiedResNet(nn.Module):
    """ResNet with a 3-conv stem, anti-aliased strided blocks and attention pooling."""

    def __init__(self, layers: tuple[int, int, int, int], output_dim: int, heads: int,
                 input_resolution: int = 224, width: int = 64):
        super().__init__()
        self.input_resolution = input_resolution
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)

        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)
        self.attnpool = AttentionPool2d(input_resolution // 32, width * 32, heads, output_dim)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, project: bool = True) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.avgpool(self.relu3(self.bn3(self.conv3(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        # The attention pool's output layer is the projection; there is no separate one to skip.
        return self.attnpool(x)


def build_visual(c: ModelConfig) -> nn.Module:
    """The image tower a config describes (also the image side of a CLIP whose text tower is not CLIP's:
    engine.text_towers)."""
    if c.is_resnet:
        return ModifiedResNet(c.vision_layers, c.embed_dim, heads=c.vision_heads,
                              input_resolution=c.image_resolution, width=c.vision_width)
    return VisionTransformer(c.image_resolution, c.vision_patch_size, c.vision_width, c.vision_layers,
                             c.vision_heads, c.embed_dim, c.vision_mlp_width, c.activation,
                             c.layer_norm_eps, c.vision_layer_scale, c.vision_ln_pre)


class ImageSide:
    """What a CLIP answers from its image tower `self.visual` (CLIP's ViT or ModifiedResNet): shared by CLIP and
    the CLIPs with a Hugging Face text tower (engine.text_towers.HFTextCLIP)."""

    visual: nn.Module

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    @property
    def image_resolution(self) -> int:
        return self.visual.input_resolution

    def encode_image(self, image: torch.Tensor, project: bool = True) -> torch.Tensor:
        """Image features; project=False gives the features before the final projection."""
        return self.visual(image.to(self.dtype), project=project)


class CLIP(ImageSide, nn.Module):
    """CLIP(config) or CLIP(**config fields): see engine.config.ModelConfig for every field."""

    def __init__(self, config: ModelConfig | None = None, **fields):
        super().__init__()
        if config is None:
            config = ModelConfig(**fields)
        elif fields:
            raise TypeError("give either a ModelConfig or its fields, not both")
        self.config = c = config
        self.context_length = c.context_length
        self.visual = build_visual(c)
        self.transformer = Transformer(c.transformer_width, c.transformer_layers, c.transformer_heads,
                                       c.transformer_mlp_width, c.activation, c.layer_norm_eps,
                                       c.transformer_layer_scale)
        self.vocab_size = c.vocab_size
        # On meta, skip Embedding's own normal_ init: it would import torch's compiler stack (~5 s)
        self.token_embedding = nn.Embedding(c.vocab_size, c.transformer_width, _weight=torch.empty(
            c.vocab_size, c.transformer_width) if building_on_meta() else None)
        self.positional_embedding = nn.Parameter(torch.empty(c.context_length, c.transformer_width))
        self.ln_final = LayerNorm(c.transformer_width, eps=c.layer_norm_eps)
        self.text_projection = nn.Parameter(torch.empty(c.transformer_width, c.embed_dim))
        self.logit_scale = nn.Parameter(torch.full([], math.log(1 / 0.07)))
        # SigLIP-style bias on the logits; open_clip's CLIP class can hold one
        self.logit_bias = nn.Parameter(torch.zeros([])) if c.logit_bias else None
        self.initialize_parameters()

    def initialize_parameters(self) -> None:
        """The reference initialisation, so that training can start from scratch."""
        if building_on_meta() or self.text_projection.is_meta:
            return  # built on the meta device to receive a checkpoint's tensors (normal_ there costs seconds)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        if isinstance(self.visual, ModifiedResNet):
            pool = self.visual.attnpool
            std = pool.c_proj.in_features ** -0.5
            for proj in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
                nn.init.normal_(proj.weight, std=std)
            for stage in (self.visual.layer1, self.visual.layer2, self.visual.layer3, self.visual.layer4):
                for block in stage:
                    nn.init.zeros_(block.bn3.weight)  # each residual branch starts as identity
        width, layers = self.transformer.width, self.transformer.layers
        proj_std = width ** -0.5 * (2 * max(layers, 1)) ** -0.5
        attn_std = width ** -0.5
        fc_std = (2 * width) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width ** -0.5)

    @property
    def embed_dim(self) -> int:
        return self.text_projection.shape[1]

    def eot_positions(self, text: torch.Tensor) -> torch.Tensor:
        """Where each sequence's EOT is: the highest id (argmax), or the first config.text_eos_id."""
        eos = self.config.text_eos_id
        return text.argmax(dim=-1) if eos is None else (text == eos).int().argmax(dim=-1)

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        # Causal attention: positions after the longest sequence's EOT never influence earlier
        # ones, so the batch is cut there instead of running all positions (padding ids never matter).
        eot = self.eot_positions(text)
        length = int(eot.max()) + 1 if text.numel() else 1
        dtype = self.text_projection.dtype
        x = self.token_embedding(text[:, :length]).to(dtype) + self.positional_embedding[:length].to(dtype)
        x = self.ln_final(self.transformer(x, causal=True))
        return x[torch.arange(x.shape[0], device=x.device), eot] @ self.text_projection

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image_features = F.normalize(self.encode_image(image).float(), dim=-1)
        text_features = F.normalize(self.encode_text(text).float(), dim=-1)
        logits_per_image = self.logit_scale.exp().float() * image_features @ text_features.t()
        if self.logit_bias is not None:
            logits_per_image = logits_per_image + self.logit_bias.float()
        return logits_per_image, logits_per_image.t()

    @classmethod
    def from_name(cls, name: str, **overrides) -> CLIP:
        """A randomly initialised model of a named architecture (the paper's nine, or open_clip's names)."""
        named = named_architectures()
        if name not in named:
            raise KeyError(f"Unknown architecture {name!r}; known: {', '.join(named)}")
        return cls(replace(named[name], **overrides))

    @staticmethod
    def config_from_state_dict(sd: dict[str, torch.Tensor]) -> ModelConfig:
        """Every field tensor shapes determine; the activation and head widths are the paper's
        (see engine.config: loaders replace them with the file's own facts)."""
        return shape_config(sd)

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], config: ModelConfig | None = None,
                        strict: bool = True) -> CLIP:
        """Build the architecture (config, or the shapes with the paper's facts) and load it (fp32, eval mode)."""
        sd = {k: v for k, v in sd.items() if k not in ("input_resolution", "context_length", "vocab_size")}
        model = cls(config or shape_config(sd))
        load_state_dict_checked(model, sd, strict=strict)
        return model.eval()


_FIELD_NAMES = {
    "vision_layers": "image layers", "vision_width": "image width", "vision_patch_size": "patch size",
    "image_resolution": "image resolution", "embed_dim": "embedding size", "context_length": "context length",
    "vocab_size": "vocabulary size", "transformer_width": "text width", "transformer_layers": "text layers",
    "vision_ln_pre": "ln_pre before the image transformer", "vision_layer_scale": "layer scale in the image tower",
    "transformer_layer_scale": "layer scale in the text tower", "logit_bias": "a logit_bias",
}


def explain_misfit(expected: ModelConfig, sd: dict[str, torch.Tensor]) -> list[str]:
    """What a shape mismatch means, as phrases: "the checkpoint's image MLP is 4.36x its width; ..."."""
    try:
        found = shape_config(sd)
    except (KeyError, IndexError):
        return []
    notes = []
    if found.is_resnet != expected.is_resnet:
        kinds = ("a ModifiedResNet", "a ViT")
        return [f"the checkpoint's image tower is {kinds[not found.is_resnet]}, the architecture's "
                f"{kinds[not expected.is_resnet]}"]
    for tower, width, mlp in (("image", "vision_width", "vision_mlp_width"),
                              ("text", "transformer_width", "transformer_mlp_width")):
        if tower == "image" and found.is_resnet:
            continue
        a, b = getattr(found, mlp) / getattr(found, width), getattr(expected, mlp) / getattr(expected, width)
        if getattr(found, mlp) != getattr(expected, mlp) and getattr(found, width) == getattr(expected, width):
            notes.append(f"the checkpoint's {tower} MLP is {a:.4g}x its width ({getattr(found, mlp)}), the "
                         f"architecture's {b:.4g}x ({getattr(expected, mlp)})")
    for key, label in _FIELD_NAMES.items():
        mine, theirs = getattr(found, key), getattr(expected, key)
        if mine != theirs:
            if isinstance(mine, bool):
                notes.append(f"the checkpoint {'has' if mine else 'has no'} {label}, the architecture "
                             f"{'has' if theirs else 'has none'}")
            else:
                notes.append(f"the checkpoint's {label} is {mine}, the architecture's {theirs}")
    return notes


def load_state_dict_checked(model: nn.Module, sd: dict[str, torch.Tensor], strict: bool = True) -> None:
    """load_state_dict that says what a misfit means, then names every missing or unexpected key
    and every shape mismatch."""
    own = model.state_dict()
    problems = []
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sd if k in own and sd[k].shape != own[k].shape]
    if missing and strict:
        problems.append(f"missing keys: {', '.join(missing[:20])}" + (" ..." if len(missing) > 20 else ""))
    if unexpected and strict:
        problems.append(f"unexpected keys: {', '.join(unexpected[:20])}" + (" ..." if len(unexpected) > 20 else ""))
    if shapes:
        problems.append(f"shape mismatches: {'; '.join(shapes[:20])}")
    if problems:
        meaning = explain_misfit(model.config, sd) if isinstance(getattr(model, "config", None), ModelConfig) else []
        lead = f"{'; '.join(meaning)}. " if meaning else ""
        raise ValueError(f"The checkpoint does not fit this model: {lead}" + " | ".join(problems))
    sd = {k: v.to(own[k].dtype) if v.is_floating_point() else v for k, v in sd.items() if k in own}
    model.load_state_dict(sd, strict=False)


def convert_weights(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast matmul and conv weights to dtype (fp16/bf16) as the reference does; LayerNorm stays fp32. A
    Hugging Face text tower (engine.text_towers) is cast whole, as transformers runs it in half precision."""
    tower = getattr(model, "text_tower", None)
    inside_tower = {id(m) for m in tower.modules()} if tower is not None else set()
    if tower is not None:
        tower.to(dtype)
    for module in model.modules():
        if id(module) in inside_tower:
            continue
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d, Attention)):
            for tensor in (*module.parameters(recurse=False), *module.buffers(recurse=False)):
                if tensor.is_floating_point():
                    tensor.data = tensor.data.to(dtype)
    for name in ("text_projection", "proj"):
        for module in model.modules():
            param = getattr(module, name, None)
            if isinstance(param, nn.Parameter):
                param.data = param.data.to(dtype)
    return model


def resize_positional_embedding(sd: dict[str, torch.Tensor], image_resolution: int) -> dict[str, torch.Tensor]:
    """Bicubic resize of the image positional embedding (ViT grid or ResNet attention pool)
    so a checkpoint can be fine-tuned or run at another resolution."""
    key = "visual.positional_embedding" if "visual.proj" in sd else "visual.attnpool.positional_embedding"
    pos = sd[key]
    stride = sd["visual.conv1.weight"].shape[-1] if "visual.proj" in sd else 32
    old_grid, new_grid = round((pos.shape[0] - 1) ** 0.5), image_resolution // stride
    if old_grid == new_grid:
        return sd
    cls_tok, grid = pos[:1], pos[1:].reshape(1, old_grid, old_grid, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(new_grid * new_grid, -1).to(pos.dtype)
    return {**sd, key: torch.cat([cls_tok, grid], dim=0)}
