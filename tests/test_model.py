"""The model against open_clip's (quick_gelu) with the same random weights, plus its own invariants.

Parity figure reached: image/text embeddings and logits agree within 1e-5 absolute in fp32
(ViT-B/32 ~2e-6, RN50 ~3e-8, text exact or ~1e-6); the tests assert 1e-5.
"""

from __future__ import annotations

import math

import pytest
import torch
from oracles import import_open_clip

from cliplab.engine.model import ARCHITECTURES, CLIP, convert_weights, resize_positional_embedding

ATOL = 1e-5


def random_tokens(n: int, lengths: list[int], vocab: int = 49408, seed: int = 0) -> torch.Tensor:
    """SOT + random ids + EOT (the highest id) + zero padding, like a real tokenizer's output."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(n, 77, dtype=torch.long)
    for i, length in enumerate(lengths):
        tokens[i, 0] = vocab - 2
        tokens[i, 1:length] = torch.randint(1, vocab - 2, (length - 1,), generator=g)
        tokens[i, length] = vocab - 1
    return tokens


def assert_parity(reference, ours: CLIP, resolution: int, vocab: int = 49408) -> None:
    torch.manual_seed(1)
    images = torch.randn(2, 3, resolution, resolution)
    text = random_tokens(3, [3, 17, 76], vocab)
    with torch.no_grad():
        ref_image, our_image = reference.encode_image(images), ours.encode_image(images)
        ref_text, our_text = reference.encode_text(text), ours.encode_text(text)
        ref_logits = reference(images, text)
        our_logits, our_logits_t = ours(images, text)
    torch.testing.assert_close(our_image, ref_image, atol=ATOL, rtol=0)
    torch.testing.assert_close(our_text, ref_text, atol=ATOL, rtol=0)
    # open_clip's forward returns normalised features and the scale; build its logits from them.
    ref_img_f, ref_txt_f, ref_scale = ref_logits[:3] if isinstance(ref_logits, tuple) else (
        ref_logits["image_features"], ref_logits["text_features"], ref_logits["logit_scale"])
    torch.testing.assert_close(our_logits, ref_scale * ref_img_f @ ref_txt_f.t(), atol=ATOL * 100, rtol=1e-6)
    torch.testing.assert_close(our_logits_t, our_logits.t())


@pytest.fixture(scope="module")
def open_clip():
    return import_open_clip()


@pytest.mark.parametrize("name,ours_name", [("ViT-B-32-quickgelu", "ViT-B/32"), ("RN50-quickgelu", "RN50")])
def test_parity_with_open_clip_official_architectures(open_clip, name, ours_name):
    torch.manual_seed(0)
    reference = open_clip.create_model(name, pretrained=None).eval()
    sd = reference.state_dict()
    ours = CLIP.from_state_dict(sd)
    assert CLIP.config_from_state_dict(sd) == ARCHITECTURES[ours_name]  # shapes alone give the paper's model
    assert_parity(reference, ours, 224)


def small_open_clip(open_clip, vision: dict, text_width: int = 128, embed_dim: int = 96, vocab: int = 1000,
                    context: int = 40):
    from open_clip.model import CLIP as OpenCLIP
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    return OpenCLIP(embed_dim, CLIPVisionCfg(**vision),
                    CLIPTextCfg(context_length=context, vocab_size=vocab, width=text_width, heads=text_width // 64,
                                layers=3), quick_gelu=True).eval()


@pytest.mark.parametrize("vision,resolution", [
    (dict(layers=3, width=192, patch_size=8, image_size=48, head_width=64), 48),
    (dict(layers=(1, 2, 1, 1), width=32, image_size=64, head_width=64), 64),
], ids=["small-vit", "small-resnet"])
def test_parity_with_open_clip_custom_shapes_inferred_from_state_dict(open_clip, vision, resolution):
    reference = small_open_clip(open_clip, vision)
    sd = reference.state_dict()
    ours = CLIP.from_state_dict(sd)
    config = CLIP.config_from_state_dict(sd)
    assert (config.context_length, config.vocab_size, config.embed_dim) == (40, 1000, 96)
    assert config.image_resolution == resolution and config.transformer_layers == 3
    text = random_tokens(3, [3, 17, 39], vocab=1000)[:, :40]
    with torch.no_grad():
        torch.testing.assert_close(ours.encode_text(text), reference.encode_text(text), atol=ATOL, rtol=0)
        images = torch.randn(2, 3, resolution, resolution)
        torch.testing.assert_close(ours.encode_image(images), reference.encode_image(images), atol=ATOL, rtol=0)


def tiny(**overrides) -> CLIP:
    torch.manual_seed(0)
    shape = dict(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=8,
                 context_length=20, vocab_size=300, transformer_width=64, transformer_layers=2)
    return CLIP(**{**shape, **overrides}).eval()


def test_text_encoding_cut_at_longest_sequence_equals_full_length():
    model = tiny()
    text = random_tokens(4, [2, 5, 9, 4], vocab=300)[:, :20]
    with torch.no_grad():
        cut = model.encode_text(text)
        # The full-length computation, written out: all 20 positions with a causal mask.
        x = model.token_embedding(text) + model.positional_embedding
        x = model.ln_final(model.transformer(x, causal=True))
        full = x[torch.arange(4), text.argmax(-1)] @ model.text_projection
    torch.testing.assert_close(cut, full, atol=ATOL, rtol=0)  # differs only by float summation order


def test_reference_initialisation():
    model = CLIP.from_name("ViT-B/32")
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert model.token_embedding.weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert model.positional_embedding.std().item() == pytest.approx(0.01, rel=0.05)
    width, layers = 512, 12
    block = model.transformer.resblocks[0]
    assert block.attn.in_proj_weight.std().item() == pytest.approx(width ** -0.5, rel=0.02)
    assert block.mlp.c_fc.weight.std().item() == pytest.approx((2 * width) ** -0.5, rel=0.02)
    assert block.mlp.c_proj.weight.std().item() == pytest.approx(width ** -0.5 * (2 * layers) ** -0.5, rel=0.02)
    assert model.text_projection.std().item() == pytest.approx(width ** -0.5, rel=0.02)


def test_resnet_initialisation_zeroes_last_batchnorm_gain():
    model = CLIP(embed_dim=32, image_resolution=64, vision_layers=(1, 1, 1, 1), vision_width=16,
                 context_length=8, vocab_size=100, transformer_width=64, transformer_layers=1)
    assert all(float(block.bn3.weight.detach().abs().sum()) == 0 for block in model.visual.layer1)
    std = model.visual.attnpool.c_proj.in_features ** -0.5
    assert model.visual.attnpool.q_proj.weight.std().item() == pytest.approx(std, rel=0.1)


def test_gradient_checkpointing_gives_the_same_gradients():
    images, text = torch.randn(2, 3, 32, 32), random_tokens(2, [4, 7], vocab=300)[:, :20]
    grads = []
    for checkpointing in (False, True):
        model = tiny().train()
        model.transformer.grad_checkpointing = checkpointing
        model.visual.transformer.grad_checkpointing = checkpointing
        logits, _ = model(images, text)
        logits.sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16])
def test_low_precision_weights_keep_layernorm_fp32_and_agree(dtype):
    model = tiny()
    images, text = torch.randn(4, 3, 32, 32), random_tokens(4, [3, 5, 7, 9], vocab=300)[:, :20]
    with torch.no_grad():
        ref_image, ref_text = model.encode_image(images), model.encode_text(text)
        convert_weights(model, dtype)
        assert model.dtype == dtype and model.ln_final.weight.dtype == torch.float32
        assert model.visual.transformer.resblocks[0].attn.in_proj_weight.dtype == dtype
        low_image, low_text = model.encode_image(images), model.encode_text(text)
    assert torch.nn.functional.cosine_similarity(low_image.float(), ref_image).min() > 0.999
    assert torch.nn.functional.cosine_similarity(low_text.float(), ref_text).min() > 0.999


def test_positional_embedding_resize_for_another_resolution():
    model = tiny()
    sd = model.state_dict()
    assert resize_positional_embedding(sd, 32) is sd
    bigger = resize_positional_embedding(sd, 64)
    assert bigger["visual.positional_embedding"].shape == (1 + 8 * 8, 64)
    torch.testing.assert_close(bigger["visual.positional_embedding"][0], sd["visual.positional_embedding"][0])
    model64 = CLIP.from_state_dict(bigger)
    assert model64.image_resolution == 64
    assert model64.encode_image(torch.randn(1, 3, 64, 64)).shape == (1, 32)


def test_checkpoint_that_does_not_fit_names_keys_and_shapes():
    sd = tiny().state_dict()
    del sd["ln_final.bias"]
    sd["bogus.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing keys: ln_final.bias.*unexpected keys: bogus.weight"):
        CLIP.from_state_dict(sd)
    sd = tiny().state_dict()
    sd["logit_scale"] = torch.zeros(2)
    with pytest.raises(ValueError, match="shape mismatches: logit_scale"):
        CLIP.from_state_dict(sd)


def test_from_name_rejects_unknown_architecture():
    with pytest.raises(KeyError, match="Unknown architecture 'ViT-X/99'"):
        CLIP.from_name("ViT-X/99")
