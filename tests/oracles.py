"""The reference packages used as test oracles (never imported by cliplab itself).

open_clip imports torchvision at import time (its transforms), and so does transformers when
torchvision is installed. `make install-test` takes torch and torchvision as a matched CPU pair from
PyTorch's CPU index (constraints/cpu.txt), where plain imports work and nothing below is applied.
Where that index cannot be reached (an offline machine whose only torchvision 0.28.0 is PyPI's CUDA
build), `import torchvision` fails beside the CPU torch ("operator torchvision::nms does not exist")
and scripts/check_torch_pair.py says how to repair it; the tests then define the two op schemas first
so that the oracles import. This is applied only here, and only when the plain import fails.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
from pathlib import Path

import pytest

OFFICIAL_MERGES_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
_torchvision_patch = None


def _patch_torchvision_ops() -> None:
    global _torchvision_patch
    import torch

    if _torchvision_patch is None:
        _torchvision_patch = torch.library.Library("torchvision", "DEF")
        _torchvision_patch.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _torchvision_patch.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


def import_open_clip():
    """open_clip, importing torchvision with the op-schema workaround only if plain import fails."""
    try:
        import open_clip
    except (RuntimeError, ImportError) as error:
        if "torchvision" not in str(error) and "nms" not in str(error):
            pytest.skip(f"open_clip is not importable here: {error}")
        import sys

        for name in [m for m in sys.modules if m.startswith(("torchvision", "open_clip"))]:
            del sys.modules[name]
        _patch_torchvision_ops()
        import open_clip
    return open_clip


def import_transformers_models() -> None:
    """transformers' modeling code (AutoModel), which imports torchvision when it is installed: with the
    same op-schema workaround, only if the plain import fails."""
    try:
        import transformers.modeling_utils  # noqa: F401
    except (RuntimeError, ImportError):
        import sys

        for name in [m for m in sys.modules if m.startswith(("torchvision", "transformers.modeling_utils",
                                                             "transformers.loss", "transformers.image_"))]:
            del sys.modules[name]
        _patch_torchvision_ops()
        import transformers.modeling_utils  # noqa: F401


def import_torchvision_transforms():
    try:
        import torchvision.transforms as transforms
    except (RuntimeError, ImportError):
        import sys

        for name in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[name]
        _patch_torchvision_ops()
        import torchvision.transforms as transforms
    return transforms


def official_merges_file() -> Path:
    """The official BPE merges file shipped inside the installed open_clip (found without importing it)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("open_clip is not installed: the official merges file is not available")
    path = Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == OFFICIAL_MERGES_SHA256
    return path


def official_merges_lines() -> list[str]:
    with gzip.open(official_merges_file(), "rt", encoding="utf-8") as f:
        return f.read().split("\n")
