"""Training data pipelines: every format yields what was written, bad samples are skipped and counted."""

from __future__ import annotations

import csv
from collections import Counter

import numpy as np
import pytest
import torch

from cliplab.engine.errors import CliplabError
from cliplab.engine.images import Preprocess
from cliplab.trainer.data import Batches, CsvDataset, RandomSquareCrop, build_dataset
from cliplab.trainer.demo.world import World, write_dataset


def _captions(path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        return [row["caption"] for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    world = World(seed=1)
    paths = {fmt: write_dataset(world, root / fmt, 24, fmt, seed=0, shard_size=8)
             for fmt in ("csv", "folder", "webdataset")}
    return paths, _captions(paths["csv"])


@pytest.mark.parametrize("fmt", ["csv", "folder", "webdataset"])
def test_each_format_yields_the_written_samples(written, fmt):
    paths, captions = written
    ds = build_dataset(str(paths[fmt]), Preprocess(64), train=False)
    items = list(ds)
    assert sorted(c for _, c in items) == sorted(captions)
    assert all(image.shape == (3, 64, 64) and image.dtype == torch.float32 for image, _ in items)
    assert not ds.skipped
    if fmt != "webdataset":  # unshuffled eval order: the reference transform of the written image
        from cliplab.engine.images import load_image
        first = ds._get(0, None)
        assert torch.equal(first[0], Preprocess(64)(load_image(ds.items[0][0] if fmt == "csv" else ds.items[0])))


def test_sharding_covers_each_sample_once_per_epoch(written):
    paths, captions = written
    seen = []
    for rank in range(2):
        ds = build_dataset(str(paths["csv"]), Preprocess(64), train=True, seed=0, rank=rank, world_size=2)
        ds.set_epoch(3)
        seen.append([c for _, c in ds])
    assert len(seen[0]) == len(seen[1]) == 12
    assert sorted(seen[0] + seen[1]) == sorted(captions)
    ds = build_dataset(str(paths["csv"]), Preprocess(64), train=True, seed=0, rank=0, world_size=2)
    ds.set_epoch(4)
    assert [c for _, c in ds] != seen[0]  # reshuffled per epoch


def test_bad_samples_skipped_and_counted_across_workers(tmp_path):
    world = World(seed=2)
    csv_path = write_dataset(world, tmp_path, 12, "csv")
    images = sorted((tmp_path / "images").iterdir())
    images[0].unlink()  # missing
    data = images[1].read_bytes()
    images[1].write_bytes(data[: len(data) // 3])  # truncated JPEG
    images[2].write_bytes(b"")  # zero bytes
    rows = list(csv.reader(csv_path.read_text().splitlines()))
    rows[4][1] = "   "  # empty caption (row 4 = sample 3)
    with csv_path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    ds = build_dataset(str(csv_path), Preprocess(64), train=True)
    batches = Batches(ds, batch_size=4, num_workers=2)
    got = list(batches.epoch(0))
    assert len(got) == 2 and all(b[0].shape == (4, 3, 64, 64) and len(b[1]) == 4 for b in got)
    assert sum(ds.skipped.values()) == 4
    assert ds.skipped["not found"] == 1 and ds.skipped["empty caption"] == 1 and ds.skipped["empty file"] == 1
    assert ds.skipped["truncated"] + ds.skipped["corrupt"] == 1
    # Iterating without workers counts the same.
    direct = build_dataset(str(csv_path), Preprocess(64), train=True)
    assert len(list(direct)) == 8 and direct.skipped == ds.skipped


def test_webdataset_bad_sample_and_tsv_columns(tmp_path):
    import tarfile
    from io import BytesIO

    shard = tmp_path / "bad.tar"
    with tarfile.open(shard, "w") as tar:
        for name, data in (("a.jpg", b"not a jpeg"), ("a.txt", b"x"), ("b.txt", b"caption only"),
                           ("c.png", b""), ("c.txt", b"y")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, BytesIO(data))
    ds = build_dataset(str(shard), Preprocess(32), train=False)
    assert list(ds) == []
    assert ds.skipped == Counter({"not an image": 1, "no image in sample": 1, "empty file": 1})

    world = World(seed=3)
    sample = world.sample(1)[0]
    sample.image.save(tmp_path / "one.png")
    (tmp_path / "pairs.tsv").write_text("Title\tImage\n" + sample.caption + "\tone.png\n")
    items = list(build_dataset(str(tmp_path / "pairs.tsv"), Preprocess(32), train=True))
    assert [c for _, c in items] == [sample.caption] and items[0][0].shape == (3, 32, 32)
    (tmp_path / "semi.csv").write_text("url;text\none.png;" + sample.caption + "\n")
    items = list(CsvDataset(tmp_path / "semi.csv", Preprocess(32), image_key="url", train=False))
    assert [c for _, c in items] == [sample.caption]
    with pytest.raises(CliplabError, match="no image path column"):
        CsvDataset(tmp_path / "semi.csv", Preprocess(32))
    with pytest.raises(CliplabError):
        build_dataset(str(tmp_path / "nothing.bin"), Preprocess(32))


def test_random_square_crop_is_the_papers_augmentation():
    from PIL import Image

    pixels = np.arange(96 * 64 * 3, dtype=np.uint32).reshape(64, 96, 3) % 251
    image = Image.fromarray(pixels.astype(np.uint8))
    crop = RandomSquareCrop(Preprocess(64))
    seen = {crop(image, np.random.default_rng(i))[0, 0, 0].item() for i in range(20)}
    assert len(seen) > 3  # the crop moves along the long side; no rescaling of the short side
    assert torch.equal(crop(image, None), Preprocess(64)(image))
    out = crop(Image.new("RGB", (200, 100)), np.random.default_rng(0))
    assert out.shape == (3, 64, 64)


def test_a_releases_preprocessing_reaches_training_and_its_evaluation(tmp_path):
    """Fine-tuning a release trains and evaluates on its own preprocessing: the eval transform is the
    release's (squash, mean/std 0.5), the training crop is normalised with its mean/std, and a model
    resized for another resolution keeps it (the resize size scaled with the crop)."""
    from PIL import Image
    from zeroshot_support import small_clip

    from cliplab.engine import model_preprocess
    from cliplab.trainer.train import _at_resolution

    image = Image.fromarray((np.arange(80 * 48 * 3) % 253).astype(np.uint8).reshape(48, 80, 3))
    release = Preprocess(32, mean=(0.5,) * 3, std=(0.5,) * 3, resize_mode="squash")
    crop = RandomSquareCrop(release)
    assert torch.equal(crop(image, None), release(image)) and not torch.equal(release(image), Preprocess(32)(image))
    trained = crop(image, np.random.default_rng(0))
    assert trained.min() >= -1.0 and trained.max() <= 1.0 and trained.min() < -0.9  # (x - 0.5) / 0.5
    write_pairs = tmp_path / "pairs.csv"
    image.save(tmp_path / "a.png")
    write_pairs.write_text("filepath,title\na.png,a picture\n")
    sample, _caption = next(iter(build_dataset(str(write_pairs), release, train=False)))
    assert torch.equal(sample, release(image))
    model = small_clip()
    model.preprocess_cfg = {**release.options(), "resize_mode": "shortest", "resize_size": 40}
    resized = _at_resolution(model, 64)
    assert model_preprocess(resized) == Preprocess(64, mean=(0.5,) * 3, std=(0.5,) * 3, resize_size=80)


def test_synthetic_stream_tokenised_and_rank_disjoint(tmp_path):
    from cliplab.engine.tokenizer import Tokenizer
    from cliplab.trainer.bpe import train_vocabulary

    world = World(seed=0)
    path = train_vocabulary(world.caption_corpus(300), 200, tmp_path / "merges.txt")
    tokenizer = Tokenizer(path)
    ds = build_dataset("synthetic", Preprocess(32), seed=0, world=world, epoch_size=40)
    images, tokens = next(iter(Batches(ds, 8, tokenizer=tokenizer, context_length=32)))
    assert images.shape == (8, 3, 32, 32) and tokens.shape == (8, 32)
    assert (tokens.argmax(-1) > 0).all() and tokens.max() == tokenizer.eot_token
    caps = []
    for rank in range(2):
        ds = build_dataset("synthetic", Preprocess(32), seed=0, rank=rank, world_size=2, world=world, epoch_size=20)
        caps.append([c for _, c in ds])
    assert len(caps[0]) == len(caps[1]) == 10
    again = build_dataset("synthetic", Preprocess(32), seed=0, rank=0, world_size=2, world=world, epoch_size=20)
    assert [c for _, c in again] == caps[0]
