"""The paper's objective: symmetric cross-entropy over the scaled cosine-similarity matrix.

One function covers the single-process, sharded (distributed) and cached-accumulation cases:
the caller passes the rows it owns and every column of the global batch. Its value is the mean
over the owned rows, so averaging it over equal shards gives the loss of the whole batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MAX_LOGIT_SCALE = math.log(100.0)  # the paper's "maximum temperature" of 100


def contrastive_loss(image_rows: torch.Tensor, text_rows: torch.Tensor, all_images: torch.Tensor,
                     all_texts: torch.Tensor, logit_scale: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Mean over the owned rows of (CE image->text + CE text->image) / 2.

    image_rows/text_rows are the L2-normalised features of the pairs this caller owns; they are
    rows offset..offset+n of all_images/all_texts (the whole batch, gathered from every shard).
    logit_scale is the log-parameterised temperature: logits = exp(logit_scale) * cosine.
    """
    scale = logit_scale.exp()
    labels = torch.arange(offset, offset + image_rows.shape[0], device=image_rows.device)
    logits_per_image = scale * image_rows.float() @ all_texts.float().t()
    logits_per_text = scale * text_rows.float() @ all_images.float().t()
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """The loss of one whole batch held by one process (features already L2-normalised)."""
    return contrastive_loss(image_features, text_features, image_features, text_features, logit_scale)


@torch.no_grad()
def clamp_logit_scale(model: torch.nn.Module) -> None:
    """Keep exp(logit_scale) <= 100 (the paper clips the temperature after every step)."""
    model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
