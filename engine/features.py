"""Batched, normalised embeddings from a loaded model: the one place features are computed."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


def model_device(model) -> torch.device:
    """The device of a model, or of an engine.runtime encoder (which says it as `.device`)."""
    device = getattr(model, "device", None)
    return device if isinstance(device, torch.device) else next(model.parameters()).device


def model_fingerprint(model: torch.nn.Module) -> str:
    """A stable id of the weights (set by engine.load from the file hash; else hashed once here)."""
    fingerprint = getattr(model, "fingerprint", None)
    if fingerprint:
        return fingerprint
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    model.fingerprint = digest.hexdigest()[:32]
    return model.fingerprint


def numerics_key(model) -> str:
    """What a cached embedding depends on besides its input: the weights, their precision and, for
    engine.onednn's copy, the kernel library (its sums are ordered differently from the BLAS's)."""
    kernels = getattr(model, "kernels", "blas")
    # a paired multilingual text tower (engine.text_towers) shares the image model's fingerprint: its texts
    # are keyed by its own weights too, so they never meet the model's own text tower's cached vectors
    text = getattr(model, "text_fingerprint", None)
    return (f"{model_fingerprint(model)}/{getattr(model, 'dtype', '')}" + ("" if kernels == "blas" else f"/{kernels}")
            + (f"/text:{text}" if text else ""))


@torch.no_grad()
def encode_texts(model, tokenizer: Callable[..., torch.Tensor], texts: Sequence[str], batch_size: int = 256,
                 normalize: bool = True, truncate: bool = False, progress: bool = False) -> np.ndarray:
    """Text embeddings [n, d] float32. Texts are batched by token length, so that short prompts
    never pay for long ones (the model cuts each batch at its longest sequence)."""
    if len(texts) == 0:
        return np.zeros((0, model.embed_dim), dtype=np.float32)
    tokens = tokenizer(list(texts), truncate=truncate)
    # by length: CLIP's EOT is its highest id; a Hugging Face tokenizer pads with its pad id (engine.hf_tokenizer)
    pad = getattr(tokenizer, "pad_token_id", None)
    order = torch.argsort(tokens.argmax(dim=-1) if pad is None else (tokens != pad).sum(dim=-1), stable=True)
    device = model_device(model)
    out = torch.empty(len(texts), model.embed_dim, dtype=torch.float32)
    for start in tqdm(range(0, len(texts), batch_size), disable=not progress, desc="encoding texts", unit="batch"):
        index = order[start:start + batch_size]
        features = model.encode_text(tokens[index].to(device)).float()
        out[index] = (F.normalize(features, dim=-1) if normalize else features).cpu()
    return out.numpy()


@torch.no_grad()
def encode_image_tensors(model, images: torch.Tensor, normalize: bool = True, project: bool = True) -> np.ndarray:
    """Embeddings [n, d] float32 of a batch of preprocessed images [n, 3, H, W]."""
    features = model.encode_image(images.to(model_device(model)), project=project).float()
    return (F.normalize(features, dim=-1) if normalize else features).cpu().numpy()


def encode_images(model, preprocess: Callable, images: Iterable, batch_size: int = 32, normalize: bool = True,
                  project: bool = True, progress: bool = False, total: int | None = None) -> np.ndarray:
    """Embeddings of PIL images (or anything preprocess accepts), batched."""
    batches, batch = [], []
    bar = tqdm(total=total, disable=not progress, desc="encoding images", unit="img")
    for image in images:
        batch.append(preprocess(image))
        if len(batch) == batch_size:
            batches.append(encode_image_tensors(model, torch.stack(batch), normalize, project))
            bar.update(len(batch))
            batch = []
    if batch:
        batches.append(encode_image_tensors(model, torch.stack(batch), normalize, project))
        bar.update(len(batch))
    bar.close()
    width = model.embed_dim if project else (batches[0].shape[1] if batches else model.embed_dim)
    return np.concatenate(batches) if batches else np.zeros((0, width), dtype=np.float32)
