"""Every command that loads a model declares the same options once (--model, --device, --precision,
--arch, --allow-torchscript) with one default model ($CLIPLAB_MODEL, else demo), and loads through the
one loader: a checkpoint that needs --arch (or --allow-torchscript) is indexed and searched as
`classify` loads it."""

from __future__ import annotations

import pytest
import torch
from library_fixtures import write_image
from safetensors.torch import save_file

from cliplab.app.cli import build_parser, main
from cliplab.app.services.loading import MODE_NAMES
from cliplab.engine.errors import CliplabError
from cliplab.engine.handle import ModelBundle
from cliplab.engine.model import CLIP

COMMANDS = {  # each command that loads a model, with the least it needs to parse
    "classify": ["classify", "x.png"], "captions": ["captions", "--collection", "c.csv", "--image", "x.png"],
    "eval zeroshot": ["eval", "zeroshot", "data"], "eval probe": ["eval", "probe", "data"],
    "eval fewshot": ["eval", "fewshot", "data"], "eval retrieval": ["eval", "retrieval", "c.csv"],
    "audit": ["audit"], "index": ["index"], "search": ["search", "dog"], "overlap": ["overlap", "e", "r"],
    "export": ["export", "out.npz"], "texts": ["texts", "search", "name", "x.png"], "app": ["app"],
}
INDEXING = {"index", "search", "export"}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_model_command_has_the_same_options_and_one_default(command, monkeypatch):
    monkeypatch.delenv("CLIPLAB_MODEL", raising=False)
    args = build_parser().parse_args(COMMANDS[command])
    assert (args.model, args.device, args.precision, args.arch, args.allow_torchscript) == (
        "demo", None, None, None, False)
    monkeypatch.setenv("CLIPLAB_MODEL", "ViT-B/32")
    argv = [*COMMANDS[command], "--device", "cpu", "--precision", "fp32", "--arch", "quickgelu",
            "--allow-torchscript"]
    args = build_parser().parse_args(argv)
    assert (args.model, args.device, args.precision, args.arch, args.allow_torchscript) == (
        "ViT-B/32", "cpu", "fp32", "quickgelu", True)
    assert args.model_purpose == ("index" if command in INDEXING else "reproducible")


def test_one_mode_vocabulary_and_the_loader_refuses_what_a_purpose_cannot_use(monkeypatch):
    assert MODE_NAMES == ("auto", "fp32", "bf16", "fp16", "onnx-fp32", "onnx-int8")
    with pytest.raises(SystemExit):  # the reproducible commands offer only the PyTorch precisions
        build_parser().parse_args(["classify", "x.png", "--precision", "onnx-int8"])
    assert build_parser().parse_args(["index", "--precision", "onnx-int8"]).precision == "onnx-int8"
    with pytest.raises(CliplabError, match="indexing and search"):
        ModelBundle.load("demo", "cpu", "onnx-int8", purpose="reproducible")
    with pytest.raises(CliplabError, match="does not run on cpu"):
        ModelBundle.load("demo", "cpu", "fp16", purpose="index")
    with pytest.raises(CliplabError, match="no CUDA GPU|does not exist"):
        ModelBundle.load("demo", "cuda:99")
    monkeypatch.setenv("CLIPLAB_MODEL", "no-such-model")
    with pytest.raises(CliplabError, match="no-such-model"):
        ModelBundle.load()  # the default rule is the loader's too


def test_index_and_search_load_a_checkpoint_that_needs_arch(tmp_path, capsys):
    torch.manual_seed(0)
    model = CLIP(embed_dim=64, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=16,
                 context_length=77, vocab_size=49408, transformer_width=64, transformer_layers=2).eval()
    plain = tmp_path / "plain.safetensors"  # a state dict alone: its activation must be named
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(plain))
    for i in range(3):
        write_image(tmp_path / "photos" / f"{i}.png", i, fmt="PNG")
    index = ["index", str(tmp_path / "photos"), "--model", str(plain), "--device", "cpu", "--workers", "0"]
    assert main(index) != 0
    assert "--arch" in capsys.readouterr().err
    assert main([*index, "--arch", "quickgelu"]) == 0
    assert "embedded 3" in capsys.readouterr().out
    assert main(["search", "a photo", "--model", str(plain), "--arch", "quickgelu", "--json"]) == 0
    assert capsys.readouterr().out.count('"path"') == 3
