"""MetaCLIP 2 worldwide: open_clip's plain CLIP towers (here with QuickGELU, as ViT-H-14-worldwide) whose
text tower reads XLM-V's tokenizer and pools at its end token (id 2), not at the highest id.

A small model of the same family is built with open_clip 3.3 from a model_cfg like the release's
(hf_tokenizer_name facebook/xlm-v-base, pool_type eos, eos_id 2) with a tokenizer built like XLM-V's
(sentencepiece unigram, <s>=0 <pad>=1 </s>=2 <unk>=3, "<s> text </s>") trained here, since the published
vocabulary cannot be downloaded. It is saved as open_clip saves a local-dir model (its config, weights and
the tokenizer's files in one folder) and, for the download, served like the hub serves the release's file
and facebook/xlm-v-base's tokenizer.json. Token ids are equal to open_clip's; embeddings agree within 1e-5.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from oracles import import_open_clip
from test_download import server  # noqa: F401  (the local hub)
from test_open_clip_families import build, compare, publish

from cliplab import engine
from cliplab.app.services import models as model_service
from cliplab.engine import download
from cliplab.engine.config import ModelConfig, named_architectures, open_clip_config
from cliplab.engine.errors import CliplabError
from cliplab.engine.hf_tokenizer import HFTokenizer

TEXTS = ["a photo of a dog", "ein Foto von einem Hund", "一张狗的照片", "صورة كلب", "कुत्ते की तस्वीर",
         "  spaced   &amp; out  ", "🐶 emoji", "una foto di un gatto"]
XLMV = "facebook/xlm-v-base"


def train_tokenizer(folder: Path, vocab_size: int, special: list[str], extra: int = 0) -> Path:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    raw = Tokenizer(models.Unigram())
    raw.normalizer = normalizers.NFKC()
    raw.pre_tokenizer = pre_tokenizers.Metaspace()
    raw.decoder = decoders.Metaspace()
    raw.train_from_iterator(TEXTS * 20, trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=special,
                                                                unk_token="<unk>"))
    raw.add_special_tokens(["<mask>"])
    raw.add_tokens([f"extra{i}" for i in range(extra)])
    bos, eos = raw.token_to_id("<s>"), raw.token_to_id("</s>")
    raw.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)])
    folder.mkdir(parents=True, exist_ok=True)
    raw.save(str(folder / "tokenizer.json"))
    # as the hub repository holds it: the model type says which tokenizer class reads tokenizer.json
    (folder / "config.json").write_text(json.dumps({"model_type": "xlm-roberta"}))
    return folder


@pytest.fixture(scope="module")
def open_clip():
    return import_open_clip()


@pytest.fixture(scope="module")
def xlmv_like(tmp_path_factory) -> Path:
    return train_tokenizer(tmp_path_factory.mktemp("xlm-v-base"), 160, ["<s>", "<pad>", "</s>", "<unk>"])


def worldwide_cfg(vocab_size: int) -> dict:
    return dict(embed_dim=64, quick_gelu=True,
                vision_cfg=dict(image_size=32, layers=2, width=160, head_width=80, patch_size=16),
                text_cfg=dict(hf_tokenizer_name=XLMV, pool_type="eos", eos_id=2, context_length=77,
                              vocab_size=vocab_size, width=128, heads=2, layers=2))


@pytest.fixture(scope="module")
def published(open_clip, xlmv_like, tmp_path_factory):
    """The reference model, and its folder as open_clip saves a local-dir model (tokenizer files beside it)."""
    from open_clip.tokenizer import HFTokenizer as Reference

    reference_tokenizer = Reference(str(xlmv_like))
    cfg = worldwide_cfg(len(reference_tokenizer.tokenizer))
    reference = build(open_clip, cfg)
    folder = publish(reference, cfg, tmp_path_factory.mktemp("worldwide") / "ViT-tiny-worldwide")
    reference_tokenizer.save_pretrained(folder)
    return reference, folder, cfg


def test_worldwide_folder_matches_open_clip(open_clip, published, tmp_path):
    reference, folder, cfg = published
    ids = open_clip.get_tokenizer(f"local-dir:{folder}")(TEXTS)  # open_clip's own choice of tokenizer
    ours, preprocess, tokenizer = engine.load(folder, device="cpu")
    assert isinstance(tokenizer, HFTokenizer) and torch.equal(tokenizer(TEXTS), ids)
    config = ours.config
    assert (config.text_tokenizer, config.text_eos_id, config.activation) == (XLMV, 2, "quick_gelu")
    end = (ids == 2).int().argmax(dim=-1)
    assert (ids.argmax(dim=-1) != end).all()  # pooling at the highest id would read other tokens
    worst = compare(reference, ours, preprocess.resolution, ids)
    print(f"MetaCLIP 2 worldwide (tiny): max abs difference to open_clip {worst:.1e}")
    # Converted once to cliplab's format (`cliplab convert`), the tokenizer travels in the model's folder.
    saved = model_service.import_checkpoint(folder, name="tiny-worldwide")
    assert (saved / "tokenizer" / "tokenizer.json").is_file() and not (saved / "bpe.txt.gz").exists()
    again, _, tokenizer = engine.load(saved, device="cpu")
    assert torch.equal(tokenizer(TEXTS), ids) and again.config == config
    compare(reference, again, preprocess.resolution, ids)


def test_a_missing_or_foreign_tokenizer_is_a_sentence(published, tmp_path):
    _, folder, cfg = published
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("open_clip_config.json", "open_clip_model.safetensors"):
        shutil.copy(folder / name, bare / name)
    with pytest.raises(CliplabError, match=f"reads the tokenizer {XLMV}.*not in .*bare"):
        engine.load(bare, device="cpu")
    # another tokenizer: its end token is not the one the tower pools at
    train_tokenizer(bare / "tokenizer", 120, ["<s>", "</s>", "<pad>", "<unk>"])
    (bare / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "XLMRobertaTokenizer"}))
    with pytest.raises(CliplabError, match="ends a text with token 1, but the text tower pools at token 2"):
        engine.load(bare, device="cpu")
    # more tokens than the embedding has rows
    shutil.rmtree(bare / "tokenizer")
    train_tokenizer(bare / "tokenizer", 160, ["<s>", "<pad>", "</s>", "<unk>"], extra=50)
    (bare / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "XLMRobertaTokenizer"}))
    with pytest.raises(CliplabError, match=r"has \d+ tokens, more than the \d+ rows"):
        engine.load(bare, device="cpu")
    # a cliplab config.json naming no tokenizer properly
    with pytest.raises(CliplabError, match="text_tokenizer is ''"):
        ModelConfig.from_dict({**open_clip_config(cfg).to_dict(), "text_tokenizer": ""})


def test_download_by_name_fetches_the_weights_and_the_tokenizer(server, published, xlmv_like,  # noqa: F811
                                                                 monkeypatch):
    from open_clip.tokenizer import HFTokenizer as Reference

    reference, folder, cfg = published
    buffer = io.BytesIO()  # the repository has no open_clip_model.safetensors: open_clip takes the .bin
    torch.save(reference.state_dict(), buffer)
    files = {"/timm/tiny.metaclip2_worldwide/resolve/main/open_clip_pytorch_model.bin": buffer.getvalue(),
             f"/{XLMV}/resolve/main/tokenizer.json": (xlmv_like / "tokenizer.json").read_bytes()}
    for i, (path, data) in enumerate(files.items()):
        server.files[f"/storage/{i}"] = data
        server.hub[path] = (f"{server.base}/storage/{i}", hashlib.sha256(data).hexdigest())
    monkeypatch.setenv("HF_ENDPOINT", server.base)
    monkeypatch.setitem(named_architectures(), "tiny-worldwide-quickgelu", open_clip_config(cfg))
    entry = download.Release(
        name="tiny-metaclip2-worldwide", arch="tiny-worldwide-quickgelu", family="MetaCLIP 2", data="none",
        url="https://huggingface.co/timm/tiny.metaclip2_worldwide/resolve/main/open_clip_model.safetensors",
        size_mb=1, params_m=0.1, imagenet_top1=None, open_clip="tiny-worldwide-quickgelu/metaclip2_worldwide",
        tokenizer={"url": f"https://huggingface.co/{XLMV}/resolve/main/tokenizer.json",
                   "tokenizer_class": "XLMRobertaTokenizer"})
    table = {**download.releases(), entry.name: entry}
    monkeypatch.setattr(download, "releases", lambda: table)

    target = download.download(entry.name, progress=False)
    asked = [path for path, how in server.requests if how == "HEAD"]
    assert asked[-1].endswith("open_clip_pytorch_model.bin") and asked[-2].endswith("open_clip_model.safetensors")
    assert (target / "tokenizer" / "tokenizer.json").read_bytes() == files[f"/{XLMV}/resolve/main/tokenizer.json"]
    record = json.loads((target / "config.json").read_text())
    assert record["text_tokenizer"] == XLMV and record["merges"] is None
    assert record["source_sha256"] == hashlib.sha256(buffer.getvalue()).hexdigest()
    assert not list((target.parent / "downloads").iterdir())  # nothing left behind

    ours, _, tokenizer = engine.load(entry.name, device="cpu")
    ids = Reference(str(xlmv_like))(TEXTS)  # open_clip's HFTokenizer on the repository as the hub has it
    assert torch.equal(tokenizer(TEXTS), ids)
    compare(reference, ours, 32, ids)
    assert download.is_downloaded(entry.name)


def test_onnx_modes_pool_at_the_end_token(published):
    """The ONNX text tower and its cut after the longest text follow the pooling rule, not the highest id."""
    from cliplab.engine.runtime import make_encoder

    _, folder, _ = published
    ours, _, tokenizer = engine.load(folder, device="cpu")
    ids = tokenizer(TEXTS)
    with torch.no_grad():
        expected = ours.encode_text(ids)
    encoder = make_encoder(ours, "onnx-fp32")
    torch.testing.assert_close(encoder.encode_text(ids), expected, rtol=0, atol=1e-4)


def test_hugging_face_metaclip2_folder_matches_transformers(xlmv_like, tmp_path):
    """Meta's Hugging Face release (model_type metaclip_2: CLIP's tensors, pooling at eos_token_id, the
    tokenizer's files in the folder) against transformers' MetaClip2Model."""
    from test_hf_parity import import_transformers_clip
    from transformers import AutoTokenizer

    import_transformers_clip()  # the torchvision op workaround, where needed
    from transformers import MetaClip2Config, MetaClip2Model

    hf_tokenizer = AutoTokenizer.from_pretrained(str(xlmv_like))
    tower = dict(hidden_size=128, intermediate_size=512, num_attention_heads=2, num_hidden_layers=2,
                 hidden_act="quick_gelu")
    config = MetaClip2Config(text_config=dict(tower, vocab_size=len(hf_tokenizer), max_position_embeddings=77,
                                              eos_token_id=2, bos_token_id=0, pad_token_id=1),
                             vision_config=dict(tower, image_size=32, patch_size=16), projection_dim=48)
    torch.manual_seed(0)
    reference = MetaClip2Model(config).eval()
    with torch.no_grad():
        for name, param in reference.named_parameters():
            if name != "logit_scale":
                param.add_(torch.randn_like(param) * 0.02)
    folder = tmp_path / "metaclip-2-worldwide-tiny"
    reference.save_pretrained(folder)
    hf_tokenizer.save_pretrained(folder)

    ours, _, tokenizer = engine.load(folder, device="cpu")
    ids = hf_tokenizer(TEXTS[:5], padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert torch.equal(tokenizer(TEXTS[:5]), ids) and ours.config.text_eos_id == 2
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected_text = reference.get_text_features(input_ids=ids)
        expected_image = reference.get_image_features(pixel_values=images)
        expected_text = getattr(expected_text, "pooler_output", expected_text)
        expected_image = getattr(expected_image, "pooler_output", expected_image)
        text, image = ours.encode_text(ids), ours.encode_image(images)
    torch.testing.assert_close(text, expected_text, rtol=0, atol=1e-5)
    torch.testing.assert_close(image, expected_image, rtol=0, atol=1e-5)
    worst = max((text - expected_text).abs().max().item(), (image - expected_image).abs().max().item())
    print(f"MetaCLIP 2 (Hugging Face format, tiny): max abs difference to transformers {worst:.1e}")
