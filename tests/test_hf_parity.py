"""Parity with transformers' CLIPModel through the Hugging Face loader (random weights, small ViT).

Reached here: image and text embeddings and logits agree within 1.1e-6 absolute in fp32 (the
test asserts 1e-5; run with -s to print the observed maximum difference)."""

from __future__ import annotations

import json
import sys

import pytest
import torch

import engine
from engine import weights
from engine.errors import CliplabError

WIDTH, HEADS = 128, 2  # heads = width / 64, as cliplab's CLIP (and every official model) has


def import_transformers_clip():
    """transformers' CLIP; it imports torchvision when present, which needs the op workaround here."""
    try:
        from transformers import CLIPConfig, CLIPModel
    except (ImportError, RuntimeError):
        from oracles import _patch_torchvision_ops

        for name in [m for m in sys.modules if m.startswith(("torchvision", "transformers"))]:
            del sys.modules[name]
        _patch_torchvision_ops()
        from transformers import CLIPConfig, CLIPModel
    return CLIPConfig, CLIPModel


def hf_config(**vision):
    CLIPConfig, _ = import_transformers_clip()
    tower = dict(hidden_size=WIDTH, intermediate_size=4 * WIDTH, num_attention_heads=HEADS, num_hidden_layers=2,
                 hidden_act="quick_gelu", layer_norm_eps=1e-5)
    return CLIPConfig(text_config=dict(tower, vocab_size=49408, max_position_embeddings=77),
                      vision_config=dict(tower, image_size=64, patch_size=16, **vision), projection_dim=48)


@pytest.fixture(scope="module")
def hf_model():
    _, CLIPModel = import_transformers_clip()
    torch.manual_seed(0)
    model = CLIPModel(hf_config()).eval()
    with torch.no_grad():  # the default init leaves biases and LayerNorms trivial; make every weight count
        for name, param in model.named_parameters():
            if name != "logit_scale":
                param.add_(torch.randn_like(param) * 0.02)
        model.logit_scale.fill_(3.0)
    return model


def tokens(n: int = 4) -> torch.Tensor:
    gen = torch.Generator().manual_seed(2)
    out = torch.zeros(n, 77, dtype=torch.long)
    for i in range(n):
        length = 2 + 5 * i
        out[i, 1:length] = torch.randint(1, 49406, (length - 1,), generator=gen)
        out[i, 0], out[i, length] = 49406, 49407
    return out


def hf_outputs(model, images, text):
    with torch.no_grad():
        out = model(input_ids=text, pixel_values=images)
    return out.image_embeds, out.text_embeds, out.logits_per_image


@pytest.mark.parametrize("file_format", ["safetensors", "pytorch_model.bin"])
def test_hf_folder_matches_transformers(hf_model, tmp_path, file_format):
    folder = tmp_path / "hf-clip"
    hf_model.save_pretrained(folder)
    if file_format == "pytorch_model.bin":
        (folder / "model.safetensors").unlink()
        torch.save(hf_model.state_dict(), folder / "pytorch_model.bin")
    model, preprocess, _ = engine.load(folder, device="cpu")
    assert model.config["vision_width"] == WIDTH and model.image_resolution == 64 and model.embed_dim == 48
    assert preprocess.resolution == 64

    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    text = tokens()
    hf_image, hf_text, hf_logits = hf_outputs(hf_model, images, text)
    with torch.no_grad():
        ours_image = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
        ours_text = torch.nn.functional.normalize(model.encode_text(text), dim=-1)
        ours_logits, _ = model(images, text)
    worst = max((ours_image - hf_image).abs().max().item(), (ours_text - hf_text).abs().max().item(),
                (ours_logits - hf_logits).abs().max().item())
    print(f"max abs difference to transformers: {worst:.2e}")
    torch.testing.assert_close(ours_image, hf_image, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours_text, hf_text, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours_logits, hf_logits, rtol=0, atol=1e-5)
    assert hf_logits.std() > 0.1  # the comparison is not between constants


def test_hf_configs_we_cannot_reproduce_are_refused(tmp_path):
    config = json.loads(hf_config().to_json_string())
    for tower, change, message in (("vision_config", {"hidden_act": "gelu"}, "activation 'gelu'"),
                                   ("text_config", {"num_attention_heads": 4}, "4 attention heads"),
                                   ("vision_config", {"layer_norm_eps": 1e-6}, "eps")):
        bad = json.loads(json.dumps(config))
        bad[tower].update(change)
        with pytest.raises(CliplabError, match=message):
            weights.check_hf_config(bad)
    weights.check_hf_config(config)
