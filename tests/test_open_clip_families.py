"""open_clip's CLIP families against cliplab, saved exactly as open_clip publishes them.

Each family is built with open_clip 3.3 from a model_cfg that keeps its distinctive features (GELU,
head width 80, MLP ratios 4.3637 / 4.9231, layer scale, no ln_pre, logit_bias, another EOT id, eps
1e-6) with tiny widths and layer counts; random weights are perturbed so nothing is zero or one;
the folder is `open_clip_config.json` + `open_clip_model.safetensors` (or `open_clip_pytorch_model.bin`),
as on the Hugging Face hub; engine.load reads it. Reached: image and text embeddings agree within
about 1e-6 absolute in fp32 (the tests assert 1e-5; run with -s to see each family's figure).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from oracles import import_open_clip
from PIL import Image
from safetensors.torch import save_file

from cliplab import engine
from cliplab.engine import weights
from cliplab.engine.errors import CliplabError

ATOL = 1e-5
TEXT = dict(context_length=77, vocab_size=49408, width=128, heads=2, layers=2)
VIT = dict(image_size=32, layers=2, width=128, patch_size=16)

FAMILIES = {
    # LAION-2B / DataComp: open_clip's default activation is GELU
    "gelu": dict(embed_dim=64, vision_cfg=VIT, text_cfg=TEXT),
    # ViT-H-14: heads 80 wide (width / 64 would give the wrong head count)
    "head-width-80": dict(embed_dim=64, vision_cfg={**VIT, "width": 160, "head_width": 80}, text_cfg=TEXT),
    # ViT-g-14: MLP 4.3637x, heads 88 wide; width 192 makes int(192 * 4.3637) = 837, not round()'s 838
    "vit-g-mlp": dict(embed_dim=64, vision_cfg={**VIT, "width": 176, "head_width": 88, "mlp_ratio": 4.3637},
                      text_cfg={**TEXT, "width": 192, "heads": 3, "mlp_ratio": 4.3637}),
    # ViT-bigG-14: MLP 4.9231x, heads 104 wide
    "vit-bigG-mlp": dict(embed_dim=64, vision_cfg={**VIT, "width": 208, "head_width": 104, "mlp_ratio": 4.9231},
                         text_cfg=TEXT, quick_gelu=True),
    "layer-scale": dict(embed_dim=64, vision_cfg={**VIT, "ls_init_value": 0.1},
                        text_cfg={**TEXT, "ls_init_value": 0.1}),
    "no-ln-pre": dict(embed_dim=64, vision_cfg={**VIT, "no_ln_pre": True}, text_cfg=TEXT),
    "logit-bias": dict(embed_dim=64, vision_cfg=VIT, text_cfg=TEXT, init_logit_bias=-10.0),
    "eos-id": dict(embed_dim=64, vision_cfg=VIT, text_cfg={**TEXT, "pool_type": "eos", "eos_id": 7, "pad_id": 1}),
    "eps-1e-6": dict(embed_dim=64, vision_cfg={**VIT, "norm_kwargs": {"eps": 1e-6}},
                     text_cfg={**TEXT, "norm_kwargs": {"eps": 1e-6}}),
    "resnet-gelu-text": dict(embed_dim=64, vision_cfg=dict(image_size=64, layers=[1, 1, 1, 1], width=32),
                             text_cfg=TEXT),
}


@pytest.fixture(scope="module")
def open_clip():
    return import_open_clip()


def build(open_clip, model_cfg: dict, seed: int = 0):
    from open_clip.model import CLIP as OpenCLIP

    torch.manual_seed(seed)
    model = OpenCLIP(**model_cfg).eval()
    with torch.no_grad():  # the default init leaves biases, gains and layer scales trivial
        for name, param in model.named_parameters():
            if name == "logit_scale":
                param.fill_(2.5)
            elif name != "logit_bias":
                param.add_(torch.randn_like(param) * 0.02)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model


def publish(model, model_cfg: dict, folder: Path, weights_name: str = "open_clip_model.safetensors",
            preprocess_cfg: dict | None = None) -> Path:
    """What open_clip's push_to_hf_hub writes: the config with model_cfg + preprocess_cfg, and the weights."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": model_cfg,
              "preprocess_cfg": preprocess_cfg or {"mean": [0.48145466, 0.4578275, 0.40821073],
                                                   "std": [0.26862954, 0.26130258, 0.27577711]}}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    if weights_name.endswith(".safetensors"):
        save_file(tensors, str(folder / weights_name))
    else:
        torch.save(tensors, folder / weights_name)
    return folder


def tokens(eos: int = 49407, n: int = 4, pad: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(2)
    out = torch.full((n, 77), pad, dtype=torch.long)
    for i in range(n):
        length = 2 + 6 * i
        out[i, 1:length] = torch.randint(10, 49406, (length - 1,), generator=gen)
        out[i, 0], out[i, length] = 49406, eos
    return out


def compare(reference, ours, resolution: int, text: torch.Tensor) -> float:
    images = torch.randn(3, 3, resolution, resolution, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref_image, ref_text = reference.encode_image(images), reference.encode_text(text)
        our_image, our_text = ours.encode_image(images), ours.encode_text(text)
        ref_logits, _ = reference.get_logits(images, text)
        our_logits, _ = ours(images, text)
    worst = max((ref_image - our_image).abs().max().item(), (ref_text - our_text).abs().max().item())
    torch.testing.assert_close(our_image, ref_image, rtol=0, atol=ATOL)
    torch.testing.assert_close(our_text, ref_text, rtol=0, atol=ATOL)
    torch.testing.assert_close(our_logits, ref_logits, rtol=1e-5, atol=1e-4)
    assert ref_text.std() > 0.01 and ref_image.std() > 0.01  # not a comparison of constants
    return worst


@pytest.mark.parametrize("family", list(FAMILIES))
def test_published_open_clip_folder_matches_open_clip(open_clip, tmp_path, family):
    model_cfg = FAMILIES[family]
    reference = build(open_clip, model_cfg)
    folder = publish(reference, model_cfg, tmp_path / family)
    ours, preprocess, tokenizer = engine.load(folder, device="cpu")
    config = ours.config
    assert config.activation == ("quick_gelu" if model_cfg.get("quick_gelu") else "gelu")
    assert preprocess.resolution == model_cfg["vision_cfg"]["image_size"]
    eos = model_cfg["text_cfg"].get("eos_id", 49407) if model_cfg["text_cfg"].get("pool_type") == "eos" else 49407
    worst = compare(reference, ours, preprocess.resolution, tokens(eos, pad=model_cfg["text_cfg"].get("pad_id", 0)))
    print(f"{family}: max abs difference to open_clip {worst:.1e}")


def test_head_width_and_mlp_ratio_come_from_the_config(open_clip, tmp_path):
    cfg = FAMILIES["vit-g-mlp"]
    folder = publish(build(open_clip, cfg), cfg, tmp_path / "g")
    config = engine.load(folder, device="cpu")[0].config
    assert (config.vision_heads, config.vision_mlp_width) == (2, int(176 * 4.3637))
    assert (config.transformer_heads, config.transformer_mlp_width) == (3, 837)
    cfg = FAMILIES["head-width-80"]
    folder = publish(build(open_clip, cfg), cfg, tmp_path / "h")
    assert engine.load(folder, device="cpu")[0].config.vision_heads == 2  # 160 / 80, not 160 / 64


@pytest.mark.parametrize("weights_name", ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"])
def test_the_weights_file_alone_reads_the_config_beside_it(open_clip, tmp_path, weights_name):
    cfg = FAMILIES["gelu"]
    reference = build(open_clip, cfg)
    folder = publish(reference, cfg, tmp_path / "hub", weights_name)
    ours, _, _ = engine.load(folder / weights_name, device="cpu")
    compare(reference, ours, 32, tokens())
    # Copied away from its config, the same file says nothing about its activation: refused, with the fix.
    alone = tmp_path / "alone" / weights_name
    alone.parent.mkdir()
    alone.write_bytes((folder / weights_name).read_bytes())
    with pytest.raises(CliplabError, match="does not say the activation.*arch="):
        engine.load(alone, device="cpu")
    ours, _, _ = engine.load(alone, device="cpu", arch="gelu")
    compare(reference, ours, 32, tokens())


def test_open_clip_training_checkpoint_names_its_model(open_clip, tmp_path):
    """open_clip's trainer writes logs/RUN/checkpoints/epoch_N.pt and logs/RUN/params.txt (model, force_quick_gelu)."""
    cfg = FAMILIES["gelu"]
    reference = build(open_clip, cfg)
    run = tmp_path / "logs" / "2024_01_01-00_00_00-model_ViT-B-32-lr_0.0005-b_256-j_8-p_amp"
    (run / "checkpoints").mkdir(parents=True)
    path = run / "checkpoints" / "epoch_2.pt"
    torch.save({"epoch": 2, "name": run.name, "state_dict": {f"module.{k}": v for k, v in
                                                             reference.state_dict().items()}}, path)
    # The run trained open_clip's ViT-B-32 (GELU): the tiny tensors here do not fit it, and the error says so.
    with pytest.raises(CliplabError, match="image width is 128, the architecture's 768"):
        engine.load(path, device="cpu")
    (run / "params.txt").write_text("batch_size: 256\nforce_quick_gelu: True\nmodel: ViT-B-32\n")
    with pytest.raises(CliplabError, match=r"ViT-B-32-quickgelu"):
        engine.load(path, device="cpu")
    ours, _, _ = engine.load(path, device="cpu", arch="gelu")
    compare(reference, ours, 32, tokens())


def test_release_preprocessing_is_applied(open_clip, tmp_path):
    """DFN's squash resize, LAION ViT-L-14's mean/std 0.5, bilinear: as open_clip's own transform."""
    from open_clip.transform import image_transform

    cfg = FAMILIES["gelu"]
    image = Image.fromarray(torch.randint(0, 256, (45, 70, 3), dtype=torch.uint8).numpy())
    for pp in ({"mean": [0.5] * 3, "std": [0.5] * 3, "resize_mode": "squash", "interpolation": "bicubic"},
               {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "resize_mode": "shortest",
                "interpolation": "bilinear"},
               {"mean": [0.5] * 3, "std": [0.5] * 3, "resize_mode": "longest", "interpolation": "bicubic"}):
        folder = publish(build(open_clip, cfg), cfg, tmp_path / pp["resize_mode"], preprocess_cfg=pp)
        _, preprocess, _ = engine.load(folder, device="cpu")
        reference = image_transform(32, is_train=False, mean=pp["mean"], std=pp["std"],
                                    resize_mode=pp["resize_mode"], interpolation=pp["interpolation"])
        torch.testing.assert_close(preprocess(image), reference(image), rtol=0, atol=1e-6)
        # Converted to cliplab's format, the model keeps its preprocessing.
        model, _ = weights.load_model(folder)
        saved = weights.save_model(model, tmp_path / f"ours-{pp['resize_mode']}")
        assert engine.load(saved, device="cpu")[1].options() == preprocess.options()


def test_scripted_open_clip_model_loads_when_allowed(open_clip, tmp_path):
    """A TorchScript open_clip model (its attn_mask buffer is not a weight) loads once the user opts in;
    a scripted module keeps its activation and head counts, so nothing needs to be said."""
    cfg = FAMILIES["head-width-80"]
    reference = build(open_clip, cfg)
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(reference), str(path))
    with pytest.raises(CliplabError, match="--allow-torchscript"):
        engine.load(path, device="cpu")
    ours, _, _ = engine.load(path, device="cpu", allow_torchscript=True)
    assert ours.config.activation == "gelu" and ours.config.vision_heads == 2
    compare(reference, ours, 32, tokens())


MODEL_CONFIGS = Path(import_open_clip().__file__).parent / "model_configs"


@pytest.mark.parametrize("name,message", [
    ("ViT-B-16-SigLIP", "timm image tower"),
    ("EVA02-B-16", "timm image tower"),
    ("convnext_base", "timm image tower"),
    ("MobileCLIP-S1", "timm image tower"),
    ("coca_ViT-B-32", "CoCa"),
    ("ViT-H-14-CLIPA", "whose image tower sets pool_type='avg'"),
])
def test_families_cliplab_does_not_build_are_refused_by_name(tmp_path, name, message):
    folder = tmp_path / name
    folder.mkdir()
    model_cfg = json.loads((MODEL_CONFIGS / f"{name}.json").read_text())
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    save_file({"logit_scale": torch.zeros(())}, str(folder / "open_clip_model.safetensors"))
    with pytest.raises(CliplabError, match=f"This checkpoint is .*{message}.*cliplab does not run it"):
        engine.load(folder, device="cpu")


@pytest.mark.parametrize("key,message", [
    ("visual.trunk.blocks.0.attn.qkv.weight", "timm image tower"),
    ("text.transformer.embeddings.word_embeddings.weight", "Hugging Face text tower"),
    ("text_decoder.resblocks.0.attn.in_proj_weight", "CoCa"),
    ("image_encoder.model.stem.weight", "MobileCLIP"),
    ("visual.blocks.0.attn.qkv.weight", "EVA-CLIP"),
    ("vision_model.head.probe", "SigLIP"),
])
def test_state_dicts_of_other_families_are_refused_by_name(tmp_path, key, message):
    path = tmp_path / "model.safetensors"
    save_file({key: torch.zeros(2), "logit_scale": torch.zeros(())}, str(path))
    with pytest.raises(CliplabError, match=f"This checkpoint is .*{message}"):
        engine.load(path, device="cpu")


def test_a_shape_mismatch_says_what_it_means(open_clip, tmp_path):
    """ViT-g's MLP under an architecture of ratio 4: the error names the ratio, not only tensors."""
    cfg = FAMILIES["vit-g-mlp"]
    folder = publish(build(open_clip, cfg), cfg, tmp_path / "g")
    as_published = weights.read_checkpoint(folder).config
    ratio_4 = replace(as_published, vision_mlp_width=4 * 176)
    with pytest.raises(CliplabError, match=r"the checkpoint's image MLP is 4\.364x its width \(768\), "
                                           r"the architecture's 4x \(704\)"):
        engine.load(folder, device="cpu", arch=ratio_4)
