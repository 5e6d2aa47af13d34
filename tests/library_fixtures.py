"""Shared pieces of the photo-library tests: a tiny random model and generated photos."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cliplab.engine.images import Preprocess
from cliplab.engine.model import CLIP
from cliplab.engine.tokenizer import Tokenizer
from cliplab.indexes.indexer import ModelBundle


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


@contextmanager
def without_root_privileges():
    """Run the block as an unprivileged user when the tests run as root (who reads any file, so
    `chmod 000` would not stop it): effective uid/gid `nobody` until the block ends."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def open_tree(tmp_path: Path) -> Path:
    """A folder every user may enter (tmp_path's parents are private to root), for the tests that
    scan as an unprivileged user."""
    base = Path(tempfile.mkdtemp(dir=tmp_path.anchor + "tmp", prefix="cliplab-open-"))
    base.chmod(0o777)
    return base


@contextmanager
def disk_elsewhere(tmp_path: Path, name: str) -> Iterator[Path]:
    """A folder path on another file system than tmp_path (a plugged-in disk: its own st_dev), removed
    afterwards; the test is skipped where /dev/shm is not another file system."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another file system than the temporary folder")
    disk = Path(tempfile.mkdtemp(dir=shm)) / name
    try:
        yield disk
    finally:
        shutil.rmtree(disk.parent)
