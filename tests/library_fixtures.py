"""Shared pieces of the photo-library tests: a tiny random model and generated photos."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.images import Preprocess
from engine.model import CLIP
from engine.tokenizer import Tokenizer
from indexes.indexer import ModelBundle


def tiny_bundle(seed: int = 0, name: str = "tiny") -> ModelBundle:
    torch.manual_seed(seed)
    model = CLIP(embed_dim=64, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=16,
                 context_length=77, vocab_size=49408, transformer_width=64, transformer_layers=2).eval()
    return ModelBundle(model, Preprocess(32), Tokenizer(), name)


def write_image(path: Path, seed: int, size: tuple[int, int] = (48, 40), fmt: str | None = None, **save) -> Path:
    """A small picture with a distinct pattern per seed (so embeddings differ)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    image = Image.fromarray(base).resize(size, Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt, **save)
    return path


def set_mtime(path: Path, seconds: float) -> None:
    os.utime(path, (seconds, seconds))
