"""Parity with transformers' CLIPModel through the Hugging Face loader (random weights, small ViT).

Variants: the OpenAI-style config (QuickGELU, heads 64 wide), and one with exact GELU, heads 32 wide,
LayerNorm eps 1e-6 and another EOT id (pooling at its first occurrence); each saved as
save_pretrained writes it (safetensors or pytorch_model.bin), loaded as a folder and as the weights
file alone. Reached: image and text embeddings and logits agree within ~1.5e-6 absolute in fp32
(the test asserts 1e-5; run with -s to print the observed maximum difference)."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from cliplab import engine
from cliplab.engine.config import hf_facts
from cliplab.engine.errors import CliplabError

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


VARIANTS = {
    "openai-style": dict(hidden_act="quick_gelu", layer_norm_eps=1e-5, num_attention_heads=HEADS, eos=49407),
    "gelu-heads32-eps1e-6-eos": dict(hidden_act="gelu", layer_norm_eps=1e-6, num_attention_heads=4, eos=9),
}


def hf_config(hidden_act="quick_gelu", layer_norm_eps=1e-5, num_attention_heads=HEADS, eos=49407, **vision):
    CLIPConfig, _ = import_transformers_clip()
    tower = dict(hidden_size=WIDTH, intermediate_size=4 * WIDTH, num_attention_heads=num_attention_heads,
                 num_hidden_layers=2, hidden_act=hidden_act, layer_norm_eps=layer_norm_eps)
    return CLIPConfig(text_config=dict(tower, vocab_size=49408, max_position_embeddings=77, eos_token_id=eos),
                      vision_config=dict(tower, image_size=64, patch_size=16, **vision), projection_dim=48)


@pytest.fixture(scope="module", params=list(VARIANTS))
def hf_model(request):
    _, CLIPModel = import_transformers_clip()
    torch.manual_seed(0)
    model = CLIPModel(hf_config(**VARIANTS[request.param])).eval()
    model.eos = VARIANTS[request.param]["eos"]
    with torch.no_grad():  # the default init leaves biases and LayerNorms trivial; make every weight count
        for name, param in model.named_parameters():
            if name != "logit_scale":
                param.add_(torch.randn_like(param) * 0.02)
        model.logit_scale.fill_(3.0)
    return model


def tokens(n: int = 4, eos: int = 49407) -> torch.Tensor:
    gen = torch.Generator().manual_seed(2)
    out = torch.zeros(n, 77, dtype=torch.long)
    for i in range(n):
        length = 2 + 5 * i
        out[i, 1:length] = torch.randint(10, 49406, (length - 1,), generator=gen)
        out[i, 0], out[i, length] = 49406, eos
    return out


def hf_outputs(model, images, text):
    with torch.no_grad():
        out = model(input_ids=text, pixel_values=images)
    return out.image_embeds, out.text_embeds, out.logits_per_image


@pytest.mark.parametrize("file_format", ["safetensors", "pytorch_model.bin"])
@pytest.mark.parametrize("passed", ["folder", "weights file"])
def test_hf_folder_matches_transformers(hf_model, tmp_path, file_format, passed):
    folder = tmp_path / "hf-clip"
    hf_model.save_pretrained(folder)
    weights_file = folder / "model.safetensors"
    if file_format == "pytorch_model.bin":
        weights_file.unlink()
        weights_file = folder / "pytorch_model.bin"
        torch.save(hf_model.state_dict(), weights_file)
    model, preprocess, _ = engine.load(folder if passed == "folder" else weights_file, device="cpu")
    assert model.config.vision_width == WIDTH and model.image_resolution == 64 and model.embed_dim == 48
    assert preprocess.resolution == 64

    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    text = tokens(eos=hf_model.eos)
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


def test_a_weights_file_without_its_config_is_refused_with_the_fix(hf_model, tmp_path):
    hf_model.save_pretrained(tmp_path / "hf")
    alone = tmp_path / "alone.safetensors"
    alone.write_bytes((tmp_path / "hf" / "model.safetensors").read_bytes())
    with pytest.raises(CliplabError, match=r"does not say the activation or the attention head width.*arch="):
        engine.load(alone, device="cpu")


@pytest.mark.parametrize("change,message", [
    ({"model_type": "siglip"}, "SigLIP model"),
    ({"model_type": "chinese_clip"}, "Chinese-CLIP"),
    ({"vision_config": {"hidden_act": "gelu_pytorch_tanh"}}, "activation 'gelu_pytorch_tanh'"),
    ({"text_config": {"vocab_size": 250002}}, "vocabulary of 250002 tokens"),
])
def test_hf_configs_we_cannot_reproduce_are_refused_by_name(change, message):
    config = json.loads(hf_config().to_json_string())
    for key, value in change.items():
        if isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
    with pytest.raises(CliplabError, match=f"This checkpoint is .*{message}"):
        hf_facts(config)


def test_hf_facts_read_activation_heads_eps_and_eos():
    facts = hf_facts(json.loads(hf_config(**{k: v for k, v in VARIANTS["gelu-heads32-eps1e-6-eos"].items()})
                                .to_json_string()))
    assert (facts.activation, facts.vision_head_width, facts.text_head_width, facts.layer_norm_eps,
            facts.text_eos_id) == ("gelu", 32, 32, 1e-6, 9)
    legacy = json.loads(hf_config(eos=2).to_json_string())
    assert hf_facts(legacy).text_eos_id is None  # transformers' legacy marker: argmax pooling
