"""Held-out evaluation during and after training: zero-shot accuracy and image-text retrieval.

Zero-shot class weights are the paper's ensemble: every template filled with the class name,
each embedding L2-normalised, averaged per class, re-normalised. Computed here from the live
weights each time (no on-disk prompt cache: the weights change between evaluations).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from cliplab.engine.features import encode_image_tensors, encode_texts
from cliplab.engine.retrieval import recall_at_k
from cliplab.engine.zeroshot import fill


@dataclass
class ZeroShotSet:
    """A labelled held-out set: images [n, 3, r, r] (preprocessed), integer labels into classnames."""

    classnames: list[str]
    prompt: str                       # the single template, e.g. "a photo of a {}."
    ensemble: list[str]               # the prompt ensemble
    images: torch.Tensor
    labels: np.ndarray


@dataclass
class RetrievalSet:
    """Held-out pairs: images [n, 3, r, r] and captions; text i describes image text_to_image[i]."""

    images: torch.Tensor
    captions: list[str]
    text_to_image: list[int] = field(default_factory=list)


def class_weights(model, tokenizer, classnames: list[str], templates: list[str]) -> np.ndarray:
    """[C, d] zero-shot weights: filled templates embedded, normalised, averaged, re-normalised."""
    prompts = [fill(t, name) for name in classnames for t in templates]
    embeddings = encode_texts(model, tokenizer, prompts, truncate=True).reshape(len(classnames), len(templates), -1)
    mean = embeddings.mean(axis=1)
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


def image_features(model, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    return np.concatenate([encode_image_tensors(model, images[i:i + batch_size])
                           for i in range(0, len(images), batch_size)])


@torch.no_grad()
def evaluate(model, tokenizer, zero_shot: dict[str, ZeroShotSet], retrieval: RetrievalSet | None) -> dict:
    """{"zeroshot/<task>": acc, "zeroshot/<task>/ensemble": acc, "retrieval/<dir>@K": recall}."""
    was_training = model.training
    model.eval()
    results: dict[str, float] = {}
    try:
        for name, task in zero_shot.items():
            features = image_features(model, task.images)
            for suffix, templates in (("", [task.prompt]), ("/ensemble", task.ensemble)):
                weights = class_weights(model, tokenizer, task.classnames, templates)
                predicted = (features @ weights.T).argmax(axis=1)
                results[f"zeroshot/{name}{suffix}"] = float(np.mean(predicted == task.labels))
        if retrieval is not None and len(retrieval.captions):
            owner = retrieval.text_to_image or list(range(len(retrieval.captions)))
            recall = recall_at_k(image_features(model, retrieval.images),
                                 encode_texts(model, tokenizer, retrieval.captions, truncate=True), owner)
            for direction, short in (("image_to_text", "i2t"), ("text_to_image", "t2i")):
                for k, value in recall[direction].items():
                    results[f"retrieval/{short}@{k}"] = value
    finally:
        model.train(was_training)
    return results
