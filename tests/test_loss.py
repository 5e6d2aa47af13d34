"""The contrastive loss, the temperature clamp and the weight-decay split."""

from __future__ import annotations

import math

import numpy as np
import torch

from cliplab.engine.model import CLIP
from cliplab.trainer.loss import MAX_LOGIT_SCALE, clamp_logit_scale, clip_loss, contrastive_loss
from cliplab.trainer.optim import build_optimizer, build_scheduler, parameter_groups


def _reference_loss(image: np.ndarray, text: np.ndarray, t: float) -> float:
    """The paper's figure 3 written out in float64 numpy, with explicit log-sum-exp loops."""
    image = image / np.linalg.norm(image, axis=1, keepdims=True)
    text = text / np.linalg.norm(text, axis=1, keepdims=True)
    logits = image @ text.T * math.exp(t)
    n = len(logits)
    loss_rows = -sum(logits[i, i] - math.log(sum(math.exp(logits[i, j]) for j in range(n))) for i in range(n)) / n
    loss_cols = -sum(logits[j, j] - math.log(sum(math.exp(logits[i, j]) for i in range(n))) for j in range(n)) / n
    return (loss_rows + loss_cols) / 2


def test_loss_equals_independent_computation_on_fixed_example():
    image = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.3, 0.9], [0.5, -0.5, 0.5]])
    text = np.array([[0.9, 0.1, 0.0], [0.0, 1.0, 0.2], [0.1, 0.0, 1.0], [-0.2, 0.4, 0.7]])
    t = math.log(1 / 0.07)
    expected = _reference_loss(image, text, t)
    img = torch.nn.functional.normalize(torch.tensor(image, dtype=torch.float32), dim=-1)
    txt = torch.nn.functional.normalize(torch.tensor(text, dtype=torch.float32), dim=-1)
    got = clip_loss(img, txt, torch.tensor(t))
    assert abs(got.item() - expected) < 1e-5
    # An asymmetric example: swapping the modalities transposes the matrix; the loss is symmetric.
    assert abs(clip_loss(txt, img, torch.tensor(t)).item() - expected) < 1e-5
    # A perfect, confident alignment drives the loss towards 0; a wrong pairing raises it.
    eye = torch.eye(4, 3 + 1)[:, :4]
    assert clip_loss(eye, eye, torch.tensor(MAX_LOGIT_SCALE)).item() < 1e-6
    assert clip_loss(img, txt.roll(1, 0), torch.tensor(t)).item() > got.item()


def test_sharded_rows_average_to_the_full_loss():
    torch.manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(8, 5), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(8, 5), dim=-1)
    scale = torch.tensor(2.0)
    full = clip_loss(img, txt, scale)
    shards = [contrastive_loss(img[i:i + 2], txt[i:i + 2], img, txt, scale, offset=i) for i in range(0, 8, 2)]
    assert torch.allclose(torch.stack(shards).mean(), full, atol=1e-6)


def test_logit_scale_clamp_holds_after_steps():
    model = CLIP(embed_dim=16, image_resolution=16, vision_layers=1, vision_width=64, vision_patch_size=8,
                 context_length=8, vocab_size=40, transformer_width=64, transformer_layers=1)
    assert abs(model.logit_scale.item() - math.log(1 / 0.07)) < 1e-6
    optimizer = torch.optim.SGD([model.logit_scale], lr=10.0)
    for _ in range(3):
        optimizer.zero_grad()
        (-model.logit_scale * 10).backward()  # pushes the scale up hard
        optimizer.step()
        clamp_logit_scale(model)
        assert model.logit_scale.item() <= MAX_LOGIT_SCALE + 1e-7
        assert model.logit_scale.exp().item() <= 100.0 + 1e-4
    assert abs(model.logit_scale.item() - MAX_LOGIT_SCALE) < 1e-6


def _names(model, group) -> set[str]:
    ids = {id(p) for p in group["params"]}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def test_weight_decay_only_on_weight_matrices_vit():
    model = CLIP(embed_dim=16, image_resolution=16, vision_layers=1, vision_width=64, vision_patch_size=8,
                 context_length=8, vocab_size=40, transformer_width=64, transformer_layers=1)
    decay, no_decay = (_names(model, g) for g in parameter_groups(model, 0.2))
    assert decay | no_decay == {n for n, _ in model.named_parameters()} and not decay & no_decay
    assert decay == {
        "visual.conv1.weight", "visual.proj", "text_projection",
        "visual.transformer.resblocks.0.attn.in_proj_weight", "visual.transformer.resblocks.0.attn.out_proj.weight",
        "visual.transformer.resblocks.0.mlp.c_fc.weight", "visual.transformer.resblocks.0.mlp.c_proj.weight",
        "transformer.resblocks.0.attn.in_proj_weight", "transformer.resblocks.0.attn.out_proj.weight",
        "transformer.resblocks.0.mlp.c_fc.weight", "transformer.resblocks.0.mlp.c_proj.weight",
    }
    for name in ("logit_scale", "token_embedding.weight", "positional_embedding", "visual.class_embedding",
                 "visual.positional_embedding", "ln_final.weight", "ln_final.bias", "visual.ln_pre.weight",
                 "transformer.resblocks.0.attn.in_proj_bias", "transformer.resblocks.0.mlp.c_fc.bias"):
        assert name in no_decay
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.2)
    assert optimizer.defaults["betas"] == (0.9, 0.98) and optimizer.defaults["eps"] == 1e-6
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.2, 0.0]


def test_weight_decay_split_resnet_and_decay_really_applies():
    model = CLIP(embed_dim=16, image_resolution=32, vision_layers=(1, 1, 1, 1), vision_width=8,
                 context_length=8, vocab_size=40, transformer_width=64, transformer_layers=1)
    decay, no_decay = (_names(model, g) for g in parameter_groups(model, 0.2))
    assert all(n.endswith("weight") or n == "text_projection" for n in decay)
    assert all(".bn" not in n and ".downsample.1" not in n for n in decay)
    assert "visual.attnpool.positional_embedding" in no_decay and "visual.layer1.0.bn1.weight" in no_decay
    assert "visual.attnpool.c_proj.weight" in decay and "visual.layer1.0.conv2.weight" in decay
    optimizer = build_optimizer(model, lr=0.1, weight_decay=0.5)
    assert optimizer.defaults["betas"] == (0.9, 0.999) and optimizer.defaults["eps"] == 1e-8
    # With zero gradients only the decayed tensors move (AdamW's decoupled decay).
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n]) and before[n].abs().sum() > 0}
    assert moved == {n for n in decay if before[n].abs().sum() > 0}


def test_warmup_then_cosine():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1.0)
    scheduler = build_scheduler(optimizer, warmup_steps=4, total_steps=12)
    lrs = []
    for _ in range(12):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:])) and lrs[-1] < 0.05
    assert abs(lrs[8] - 0.5) < 1e-9  # half-way through the cosine
