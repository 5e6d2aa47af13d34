"""Indexing at the decode limit: the decode pool keeps the next batch in flight while the model
encodes one (so the slower of decoding and encoding bounds the rate), and draft decoding reduces
large JPEGs to the chosen multiple of the model's resolution."""

from __future__ import annotations

import numpy as np
from library_fixtures import write_image
from PIL import Image

from cliplab.engine.images import Preprocess, load_image
from cliplab.indexes.decode import DecodePool, overlap_window


def test_the_pool_decodes_the_next_batch_while_the_caller_is_busy(tmp_path):
    paths = [str(write_image(tmp_path / f"{i}.png", i, fmt="PNG")) for i in range(40)]
    pulled = []

    def items():
        for i, path in enumerate(paths):
            pulled.append(i)
            yield i, path

    ahead = overlap_window(batch_size=8, workers=2)
    assert ahead >= 2 * 8  # a whole batch beyond the one being encoded
    with DecodePool(Preprocess(32), workers=2, ahead=ahead) as pool:
        stream = pool.decode(items())
        first = next(stream)
        # while the caller holds the first result (encoding, say), `ahead` files are already queued
        assert first.file_id == 0 and len(pulled) >= ahead
        rest = list(stream)
    assert [d.file_id for d in [first, *rest]] == list(range(40))
    assert all(d.pixels is not None for d in rest)


def test_draft_factor_chooses_the_dct_reduction(tmp_path):
    path = tmp_path / "big.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)).resize(
        (4000, 3000)).save(path, quality=90)
    assert load_image(path, min_size=224).size == (1000, 750)  # >= 2 x 224: 1/4
    assert load_image(path, min_size=224, draft_factor=1).size == (500, 375)  # >= 224: 1/8
    assert load_image(path).size == (4000, 3000)
