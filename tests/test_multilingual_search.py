"""Pairing a multilingual text tower with the image tower a library was indexed with: the library is
searched (and photos classified) in any language without re-embedding a photo, and gives the ranking of
the reference computation (multilingual-clip's text embedding against the image tower's embeddings); a
tower made for another image tower, long and empty texts are sentences or notes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_support import run_cli
from library_fixtures import write_image
from text_tower_fixtures import mclip_folder

from cliplab.engine import weights
from cliplab.engine.errors import CliplabError
from cliplab.engine.handle import ModelBundle
from cliplab.engine.images import Preprocess, load_image
from cliplab.engine.model import CLIP

MODULES = ["library", "classify"]
QUERY = "ein Foto von einem Hund"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small image model saved as a folder, photos, and an M-CLIP tower recorded as its pair."""
    root = tmp_path_factory.mktemp("multilingual")
    torch.manual_seed(3)
    model = CLIP(embed_dim=16, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=16,
                 context_length=77, vocab_size=49408, transformer_width=32, transformer_layers=1).eval()
    image_folder = weights.save_model(model, root / "image-model")
    fingerprint = json.loads((image_folder / "config.json").read_text())["fingerprint"]
    tower = mclip_folder(root, pairs_with=[{"fingerprint": fingerprint}], name="mclip-paired")
    other = mclip_folder(root, pairs_with=[{"name": "ViT-L/14"}], name="mclip-other", seed=5)
    photos = root / "photos"
    for i in range(10):
        write_image(photos / f"{i}.png", 40 + i, size=(40 + 3 * i, 36), fmt="PNG")
    return {"image": image_folder, "tower": tower, "other": other, "photos": photos, "model": model}


def reference_ranking(world, text: str) -> tuple[list[str], np.ndarray]:
    """multilingual-clip's text embedding against the image tower's fp32 embeddings of the photos."""
    from multilingual_clip.Config_MCLIP import MCLIPConfig
    from multilingual_clip.pt_multilingual_clip import MultilingualCLIP
    from transformers import AutoTokenizer

    config = json.loads((world["tower"] / "config.json").read_text())
    reference = MultilingualCLIP(MCLIPConfig(modelBase=config["modelBase"], transformerDimSize=config[
        "transformerDimensions"], imageDimSize=config["numDims"])).eval()
    state = torch.load(world["tower"] / "pytorch_model.bin", weights_only=True)
    reference.LinearTransformation.load_state_dict(
        {k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("LinearTransformation.")})
    paths = sorted(world["photos"].glob("*.png"))
    preprocess = Preprocess(32)
    with torch.no_grad():
        text = reference([text], AutoTokenizer.from_pretrained(world["tower"]))[0]
        pixels = torch.stack([torch.from_numpy(np.array(preprocess(load_image(p)))) for p in paths])
        images = world["model"].encode_image(pixels)
    scores = torch.nn.functional.normalize(images, dim=-1) @ torch.nn.functional.normalize(text, dim=0)
    order = torch.argsort(-scores, stable=True)
    return [paths[i].name for i in order], scores[order].numpy()


def test_a_paired_tower_searches_the_library_as_the_reference_ranks_it(world, capsys):
    code, _, err = run_cli(capsys, "index", world["photos"], "--model", world["image"], "--precision", "fp32",
                           "--workers", "0", modules=MODULES)
    assert code == 0, err
    code, out, err = run_cli(capsys, "search", QUERY, "--model", world["image"], "--text-model", world["tower"],
                             "--json", modules=MODULES)
    assert code == 0, err
    results = json.loads(out)
    names, scores = reference_ranking(world, QUERY)
    assert [r["path"].rsplit("/", 1)[-1] for r in results] == names
    np.testing.assert_allclose([r["score"] for r in results], scores, atol=1e-4)


def test_a_tower_made_for_another_image_tower_is_refused_with_a_sentence(world):
    bundle = ModelBundle.load(world["image"], device="cpu")
    with pytest.raises(CliplabError, match="trained for the image space of ViT-L/14, not of image-model"):
        bundle.with_text_model(world["other"])
    paired = bundle.with_text_model(world["tower"])
    assert paired.fingerprint == bundle.fingerprint  # the library's key
    # cached prompt and caption vectors are keyed by the text tower too: never the model's own tower's
    from cliplab.engine.features import numerics_key
    assert numerics_key(paired.inference_model) != numerics_key(bundle.inference_model)
    assert numerics_key(paired.using("onnx-fp32").encoder) != numerics_key(bundle.using("onnx-fp32").encoder)


def test_classify_in_any_script_with_a_language_template_set(world, capsys):
    classes = "狗,قطة,कुत्ता,🐶"
    code, out, err = run_cli(capsys, "classify", world["photos"] / "0.png", world["photos"] / "1.png",
                             "--classes", classes, "--templates", "default-de", "--model", world["image"],
                             "--text-model", world["tower"], modules=MODULES)
    assert code == 0, err
    assert "狗" in out and "قطة" in out and "कुत्ता" in out and "🐶" in out


def test_long_texts_are_cut_with_a_note_and_empty_ones_refused(world, capsys):
    bundle = ModelBundle.load(world["image"], device="cpu").with_text_model(world["tower"])
    long_text = " ".join(["Hund"] * 200)
    with pytest.raises(CliplabError, match="more than the text tower's limit of 64"):
        bundle.tokenizer([long_text])
    assert bundle.encode_texts([long_text]).shape == (1, 16)  # cut to fit, keeping the end token
    with pytest.raises(CliplabError, match="A text is empty"):
        bundle.encode_texts(["   "])
    run_cli(capsys, "index", world["photos"], "--model", world["image"], "--precision", "fp32", "--workers", "0",
            modules=MODULES)
    code, out, err = run_cli(capsys, "search", long_text, "--model", world["image"], "--text-model",
                             world["tower"], modules=MODULES)
    assert code == 0, err
    assert "note: The text \"Hund Hund" in out and "longer than the 64 tokens the text tower reads" in out


def test_the_apps_text_tower_choice_searches_through_the_one_search_path(world, capsys):
    from cliplab.app.services import search
    from cliplab.app.services.app_state import AppState
    from cliplab.app.services.models import fitting_text_towers
    from cliplab.indexes.catalog import open_catalog

    run_cli(capsys, "index", world["photos"], "--model", world["image"], "--precision", "fp32", "--workers", "0",
            modules=MODULES)
    state = AppState(bundle=ModelBundle.load(world["image"], device="cpu"), catalog=open_catalog())
    paired = state.with_text_model(str(world["tower"]), search=True)
    assert state.with_text_model(str(world["tower"]), search=True) is paired  # the tower is loaded once
    view = search.search(state.catalog, paired, [search.text_term(QUERY)], per_page=10)
    names, _ = reference_ranking(world, QUERY)
    assert [r.path.rsplit("/", 1)[-1] for r in view.results] == names
    with pytest.raises(CliplabError, match="Choose a text tower made for this image model"):
        state.with_text_model(str(world["other"]))
    ready, note = fitting_text_towers("ViT-B/32")
    assert ready == [] and "download M-CLIP/XLM-Roberta-Large-Vit-B-32 in the Models tab" in note
