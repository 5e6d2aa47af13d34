"""Multilingual text towers (engine.text_towers) against their reference implementations on random
weights from small configs: M-CLIP's towers against the multilingual-clip package (XLM-RoBERTa and
LaBSE's BERT), open_clip's CLIPs with a Hugging Face text tower against open_clip, both towers."""

from __future__ import annotations

import json

import pytest
import torch
from text_tower_fixtures import TEXTS, mclip_folder, open_clip_hf_folder

from cliplab import engine
from cliplab.engine import text_towers
from cliplab.engine.errors import CliplabError
from cliplab.engine.handle import ModelBundle
from tests import oracles

ATOL = 1e-5


@pytest.mark.parametrize("kind", ["xlm-roberta", "bert"])
def test_mclip_tower_equals_multilingual_clip(tmp_path, kind):
    from multilingual_clip.Config_MCLIP import MCLIPConfig
    from multilingual_clip.pt_multilingual_clip import MultilingualCLIP
    from transformers import AutoTokenizer

    folder = mclip_folder(tmp_path, kind)
    config = json.loads((folder / "config.json").read_text())
    reference = MultilingualCLIP(MCLIPConfig(modelBase=config["modelBase"], transformerDimSize=config[
        "transformerDimensions"], imageDimSize=config["numDims"]))
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    reference.LinearTransformation.load_state_dict(
        {k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("LinearTransformation.")})
    reference.eval()
    with torch.no_grad():
        expected = reference(TEXTS, AutoTokenizer.from_pretrained(folder))

    tower = text_towers.load_mclip(folder)
    with torch.no_grad():
        ours = tower.module(tower.tokenizer(TEXTS))
    assert ours.shape == (len(TEXTS), 16)
    assert (ours - expected).abs().max() <= ATOL


def test_open_clip_hf_text_clip_equals_open_clip_in_both_towers(tmp_path):
    open_clip = oracles.import_open_clip()
    from open_clip.tokenizer import HFTokenizer as Reference

    folder, reference = open_clip_hf_folder(tmp_path, open_clip)
    model, _, tokenizer = engine.load(folder, device="cpu")  # the one loader reads open_clip's folder
    assert isinstance(model, text_towers.HFTextCLIP) and model.name == folder.name
    tokens = tokenizer(TEXTS)
    assert torch.equal(tokens, Reference(str(folder), context_length=77)(TEXTS))
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (model.encode_text(tokens) - reference.encode_text(tokens)).abs().max() <= ATOL
        assert (model.encode_image(images) - reference.encode_image(images)).abs().max() <= ATOL


def test_a_tokenizer_larger_than_the_embedding_table_is_refused(tmp_path):
    folder = mclip_folder(tmp_path, vocab_size=64)  # weights embedding 64 ids, a tokenizer of a few hundred
    with pytest.raises(CliplabError, match="embed only 64: the tokenizer files are not the ones published"):
        text_towers.load_mclip(folder)


def test_weights_of_another_shape_are_a_sentence(tmp_path):
    folder = mclip_folder(tmp_path)
    config = json.loads((folder / "transformer_config.json").read_text())
    (folder / "transformer_config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with pytest.raises(CliplabError, match="does not fit its text tower's configuration"):
        text_towers.load_mclip(folder)


def test_the_hf_text_tower_runs_in_the_onnx_modes_within_their_tolerance(tmp_path):
    open_clip = oracles.import_open_clip()
    folder, _ = open_clip_hf_folder(tmp_path, open_clip)
    exact = ModelBundle.load(folder, device="cpu")
    expected = exact.encode_texts(TEXTS)
    for mode, tolerance in (("onnx-fp32", 1e-5), ("onnx-int8", 1e-3)):
        got = ModelBundle.load(folder, device="cpu", precision=mode, purpose="index").encode_texts(TEXTS)
        assert (got * expected).sum(axis=1).min() >= 1 - tolerance, mode


def test_a_folder_without_its_transformers_config_is_a_sentence(tmp_path):
    open_clip = oracles.import_open_clip()
    folder, _ = open_clip_hf_folder(tmp_path, open_clip)
    with pytest.raises(CliplabError, match="neither a model name .* nor an existing checkpoint"):
        ModelBundle.load(folder, device="cpu", text_model="no-such-tower")
    (folder / "transformer_config.json").unlink()
    with pytest.raises(CliplabError, match="does not hold the configuration of its base transformer "
                                           "\\(xlm-roberta-base\\) as transformer_config.json"):
        engine.load(folder, device="cpu")
