"""Small multilingual text towers laid out as their releases publish them: a tokenizer trained here (the
published vocabularies cannot be downloaded), a random transformers XLM-RoBERTa or BERT model from a
small config, an M-CLIP folder (config.json with model_type M-CLIP, pytorch_model.bin) and an open_clip
folder of a CLIP whose text tower is that transformer (open_clip_config.json, open_clip_pytorch_model.bin)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from cliplab.engine.text_towers import RELEASE_FILE, TRANSFORMER_CONFIG
from tests import oracles

oracles.import_transformers_models()  # transformers' modeling code imports torchvision (tests/oracles.py)

TEXTS = ["a photo of a dog", "ein Foto von einem Hund", "一张狗的照片", "صورة كلب", "कुत्ते की तस्वीर",
         "🐶 emoji", "a red car on the street", "une voiture rouge", "赤い車", "ένα κόκκινο αυτοκίνητο"]
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]  # ids 0-3: the transformer's config says the same


def save_tokenizer(folder: Path, vocab_size: int = 400) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordPiece(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator(TEXTS * 20, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIALS))
    raw.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", raw.token_to_id("<s>")), ("</s>", raw.token_to_id("</s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   sep_token="</s>", cls_token="<s>", unk_token="<unk>")
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)
    return folder


def transformer_config(kind: str = "xlm-roberta", vocab_size: int = 400, width: int = 32, layers: int = 2):
    from transformers import BertConfig, XLMRobertaConfig

    shape = dict(vocab_size=vocab_size, hidden_size=width, num_hidden_layers=layers, num_attention_heads=2,
                 intermediate_size=2 * width, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if kind == "bert":
        return BertConfig(max_position_embeddings=64, type_vocab_size=2, layer_norm_eps=1e-12, **shape)
    return XLMRobertaConfig(max_position_embeddings=66, type_vocab_size=1, layer_norm_eps=1e-5, **shape)


def perturb(module: torch.nn.Module, seed: int) -> None:
    """Random values everywhere (LayerNorms included), so that nothing agrees by being 0 or 1."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in module.parameters():
            tensor.add_(0.05 * torch.randn(tensor.shape, generator=generator))


def save_base(folder: Path, kind: str = "xlm-roberta", seed: int = 0, **shape) -> Path:
    """A random transformers model saved as a hub folder would hold it (config.json + weights)."""
    from transformers import AutoModel

    torch.manual_seed(seed)
    model = AutoModel.from_config(transformer_config(kind, **shape))
    perturb(model, seed)
    model.save_pretrained(folder)
    return folder


def mclip_folder(root: Path, kind: str = "xlm-roberta", image_dim: int = 16, seed: int = 0,
                 pairs_with: list[dict] | None = None, name: str = "mclip-test", vocab_size: int = 400) -> Path:
    """An M-CLIP folder: its base transformer (kept at root/base, which modelBase names, as the oracle
    loads it), the linear map, the tokenizer and transformer_config.json."""
    from transformers import AutoModel

    base = save_base(root / f"{name}-base", kind, seed, vocab_size=vocab_size)
    transformer = AutoModel.from_pretrained(base)
    width = transformer.config.hidden_size
    generator = torch.Generator().manual_seed(seed + 1)
    linear = {"LinearTransformation.weight": torch.randn(image_dim, width, generator=generator) * 0.2,
              "LinearTransformation.bias": torch.randn(image_dim, generator=generator) * 0.1}
    folder = root / name
    save_tokenizer(folder)
    state = {f"transformer.{k}": v for k, v in transformer.state_dict().items()} | linear
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps({
        "model_type": "M-CLIP", "modelBase": str(base), "transformerDimensions": width,
        "transformerDimSize": width, "numDims": image_dim, "imageDimSize": image_dim}))
    shutil.copyfile(base / "config.json", folder / TRANSFORMER_CONFIG)
    if pairs_with is not None:
        (folder / RELEASE_FILE).write_text(json.dumps({"name": name, "pairs_with": pairs_with,
                                                     "languages": "test"}))
    return folder


VISION = dict(image_size=32, layers=2, width=64, patch_size=16)


def open_clip_hf_folder(root: Path, open_clip, embed_dim: int = 24, proj: str = "mlp", seed: int = 0,
                        name: str = "xlmr-clip-test"):
    """open_clip's CustomTextCLIP with a Hugging Face text tower (the small base above), saved as open_clip
    publishes it. Returns (folder, the open_clip model)."""
    from open_clip.model import CustomTextCLIP

    base = save_base(root / f"{name}-base", "xlm-roberta", seed)
    text_cfg = {"hf_model_name": str(base), "hf_tokenizer_name": str(base), "hf_pooler_type": "mean_pooler",
                "hf_proj_type": proj, "hf_model_pretrained": False}
    torch.manual_seed(seed)
    model = CustomTextCLIP(embed_dim, VISION, text_cfg).eval()
    perturb(model, seed + 2)
    folder = root / name
    save_tokenizer(folder)
    published = {**text_cfg, "hf_model_name": "xlm-roberta-base", "hf_tokenizer_name": "xlm-roberta-base"}
    published.pop("hf_model_pretrained")
    (folder / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": {"embed_dim": embed_dim, "vision_cfg": VISION, "text_cfg": published},
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}}))
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    shutil.copyfile(base / "config.json", folder / TRANSFORMER_CONFIG)
    return folder, model
