"""Small models and a tokenizer shared by the zero-shot, probe and eval tests."""

from __future__ import annotations

import zlib

import torch

from cliplab.engine.model import CLIP


def small_clip(seed: int = 0, embed_dim: int = 32) -> CLIP:
    """A tiny random ViT CLIP (32 px, 2+2 layers) with the official vocabulary size."""
    torch.manual_seed(seed)
    return CLIP(embed_dim=embed_dim, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=8,
                transformer_width=64, transformer_layers=2).eval()


class WordHashTokenizer:
    """Stand-in used only while engine.tokenizer is absent: one id per word (crc32), SOT/EOT as
    the official ids, padded to 77 — the same tensor contract as the real tokenizer."""

    def __call__(self, texts, context_length: int = 77, truncate: bool = False) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else texts
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = [49406] + [1 + zlib.crc32(w.encode()) % 49000 for w in text.lower().split()][:context_length - 2]
            ids.append(49407)
            out[i, :len(ids)] = torch.tensor(ids)
        return out


def tokenizer():
    try:
        from cliplab.engine.tokenizer import Tokenizer
    except ImportError:
        return WordHashTokenizer()
    return Tokenizer()


class CountingModel(torch.nn.Module):
    """Wraps a model and counts the texts its text encoder sees (to test the cache by work done)."""

    def __init__(self, model: CLIP):
        super().__init__()
        self.inner = model
        self.texts_encoded = 0

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        self.texts_encoded += tokens.shape[0]
        return self.inner.encode_text(tokens)

    def encode_image(self, images: torch.Tensor, project: bool = True) -> torch.Tensor:
        return self.inner.encode_image(images, project=project)

    @property
    def embed_dim(self) -> int:
        return self.inner.embed_dim

    @property
    def logit_scale(self) -> torch.nn.Parameter:
        return self.inner.logit_scale
