"""Image-text retrieval recall (paper appendix E.1: Flickr30k / MSCOCO style, several captions per image).

Scores are cosine similarities (features are L2-normalised here, in float64).
- text -> image: a text query hits at K when its image's rank is <= K, where
  rank = 1 + the number of OTHER images scoring >= the correct image.
- image -> text: an image query hits at K when its best caption's rank is <= K, where
  rank = 1 + the number of texts that are not its captions scoring >= its best caption.
So a tie with the right item counts against it (conservative: constant features score 0, not
chance), and the image's other captions never push its best caption down.
Images without captions are left out of image -> text.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cliplab.engine.errors import CliplabError


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float64; all-zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def retrieval_ranks(image_features: np.ndarray, text_features: np.ndarray,
                    text_to_image: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(rank of each image's best caption [n_images with captions], rank of each text's image [n_texts]),
    1-based, by the rule in the module docstring."""
    owner = np.asarray(text_to_image, dtype=np.int64)
    n_images, n_texts = len(image_features), len(text_features)
    if owner.shape != (n_texts,):
        raise CliplabError(f"text_to_image needs one image index per text ({n_texts}), got {owner.shape[0]}.")
    if n_texts and (owner.min() < 0 or owner.max() >= n_images):
        raise CliplabError("text_to_image holds an image index outside the image list.")
    sim = unit_rows(image_features) @ unit_rows(text_features).T  # [n_images, n_texts]
    correct = sim[owner, np.arange(n_texts)]
    text_ranks = 1 + (sim >= correct[None, :]).sum(axis=0) - 1  # minus the correct image itself
    is_caption = np.zeros_like(sim, dtype=bool)
    is_caption[owner, np.arange(n_texts)] = True
    has_caption = is_caption.any(axis=1)
    best = np.where(is_caption, sim, -np.inf).max(axis=1)
    image_ranks = 1 + ((sim >= best[:, None]) & ~is_caption).sum(axis=1)
    return image_ranks[has_caption], text_ranks


def recall_at_k(image_features: np.ndarray, text_features: np.ndarray, text_to_image: Sequence[int],
                ks: Sequence[int] = (1, 5, 10)) -> dict:
    """{"image_to_text": {K: recall}, "text_to_image": {K: recall}, "n_images", "n_texts"};
    recall is a fraction in [0, 1]. Ties count against the right item (module docstring)."""
    image_ranks, text_ranks = retrieval_ranks(image_features, text_features, text_to_image)
    return dict(
        image_to_text={k: float(np.mean(image_ranks <= k)) if len(image_ranks) else 0.0 for k in ks},
        text_to_image={k: float(np.mean(text_ranks <= k)) if len(text_ranks) else 0.0 for k in ks},
        n_images=int(len(image_ranks)), n_texts=int(len(text_ranks)),
    )
